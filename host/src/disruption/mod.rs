//! Disruption: which nodes go, and how they go.
//!
//! Each [`DisruptionController::reconcile`] pass:
//! 1. moves on the disruptions already under way: once a replacement is
//!    ready, the old nodes are drained (evictions honour
//!    PodDisruptionBudgets and are retried with backoff; an expired node is
//!    forced once its `terminationGracePeriod` has passed), then their
//!    instances are terminated through the `CloudProvider` and their
//!    NodeClaims deleted;
//! 2. re-validates the actions decided on the previous pass, once they have
//!    waited [`DisruptionSettings::validation_delay`] (Karpenter's 15 s), and
//!    starts those still valid: cordon, launch the replacement, drain;
//! 3. decides new ones: expired nodes (forceful), drifted nodes, then the
//!    NodePool's consolidation plugin's plan — or the native `karpenter-like`
//!    consolidator when the pool asks for it or the plugin fails.
//!
//! The plan is the plugin's; the safety is the host's. Every proposed action
//! is checked against the host's own scheduling simulation (the evicted pods
//! must fit on the nodes that stay plus the replacement), do-not-disrupt
//! pods, PodDisruptionBudgets, the NodePool's disruption budgets and a
//! minimum saving. Each rejected action is logged and counted with its reason.

mod budget;
mod controller;
mod fit;
mod karpenter;

use std::time::Duration;

use serde::Serialize;

pub use budget::allowed as budget_allows;
pub use controller::{DisruptionController, DisruptionCounts, DisruptionReport, consolidation_slot};

/// Why a node is disrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// It runs no pods.
    Empty,
    /// Its pods fit elsewhere, or on a cheaper node.
    Underutilized,
    /// Its NodePool changed since it was launched.
    Drifted,
    /// It is older than its NodePool's `expireAfter`.
    Expired,
}

impl Reason {
    /// The name disruption budgets use (`reasons:`).
    pub fn budget_name(self) -> &'static str {
        match self {
            Reason::Empty => "Empty",
            Reason::Underutilized => "Underutilized",
            Reason::Drifted => "Drifted",
            Reason::Expired => "Expired",
        }
    }
}

/// What replaces the disrupted nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Replacement {
    /// Nothing: the pods fit on the nodes that stay.
    None,
    /// One node bought as this catalog offering.
    Offering(u32),
    /// Whatever the provisioner launches for the pods (expiry and drift).
    Provision,
}

/// A disruption the host has decided on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Command {
    /// Why.
    pub reason: Reason,
    /// The NodePool of the nodes.
    pub node_pool: String,
    /// Nodes (NodeClaim names) to remove.
    pub nodes: Vec<String>,
    /// What replaces them.
    pub replacement: Replacement,
    /// Dollars per hour saved (catalog prices when decided).
    pub savings_per_hour: f64,
}

/// Why an action was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectKind {
    /// A node is gone, not in the pool, or already being disrupted.
    UnknownNode,
    /// The node is not a candidate (do-not-disrupt pod, too recently changed, not ready).
    NotDisruptable,
    /// The NodePool's consolidation policy forbids it (`WhenEmpty`).
    Policy,
    /// The NodePool's disruption budget is spent.
    Budget,
    /// A PodDisruptionBudget allows fewer evictions.
    Pdb,
    /// Some evicted pods would fit nowhere.
    Strands,
    /// The replacement is not cheaper by the required margin.
    Savings,
}

/// An action that was not taken, with the reason a human can act on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejection {
    /// The action.
    pub command: Command,
    /// Category.
    pub kind: RejectKind,
    /// Why.
    pub message: String,
}

/// Knobs of the disruption controller.
#[derive(Debug, Clone)]
pub struct DisruptionSettings {
    /// Wait between deciding an action and re-validating it before acting.
    pub validation_delay: Duration,
    /// A replacement must cost less than the nodes it replaces by at least
    /// this fraction (0.0: strictly cheaper).
    pub min_savings_fraction: f64,
    /// Most candidates multi-node consolidation considers (Karpenter: 100).
    pub max_multi_node_candidates: usize,
    /// Most candidates single-node consolidation tries in one pass, cheapest
    /// to disrupt first (Karpenter bounds it with a 3-minute timeout).
    pub max_single_node_candidates: usize,
    /// First retry delay of an eviction a PodDisruptionBudget blocked; it
    /// doubles up to [`DisruptionSettings::max_eviction_backoff`].
    pub eviction_backoff: Duration,
    /// Longest retry delay of a blocked eviction.
    pub max_eviction_backoff: Duration,
    /// A replacement that is not ready by then is abandoned and the old
    /// nodes are uncordoned.
    pub replacement_timeout: Duration,
}

impl Default for DisruptionSettings {
    fn default() -> Self {
        DisruptionSettings {
            validation_delay: Duration::from_secs(15),
            min_savings_fraction: 0.0,
            max_multi_node_candidates: 100,
            max_single_node_candidates: 20,
            eviction_backoff: Duration::from_secs(5),
            max_eviction_backoff: Duration::from_secs(60),
            replacement_timeout: Duration::from_secs(600),
        }
    }
}

/// One consolidation planning pass over a large simulated cluster, set up
/// ahead so that only the pass is timed (the `bench consolidate` command and
/// the criterion benchmark): read the cluster, ask the NodePool's
/// consolidation policy for a plan, validate every action.
pub struct ConsolidationPass {
    provisioner: std::sync::Arc<crate::provisioning::Provisioner<crate::cloud::SimulatedCloud, crate::cluster::SimulatedCluster>>,
    cluster: std::sync::Arc<crate::cluster::SimulatedCluster>,
}

impl ConsolidationPass {
    /// `nodes` ready nodes of `pool` (m5/m6i/c5 on-demand, large to 2xlarge)
    /// running `pods_per_node` pods each, at utilisations spread from about
    /// 10 % to 70 % (seeded by `seed`).
    pub async fn new(
        runtime: &crate::policy::PolicyRuntime,
        catalog: std::sync::Arc<crate::model::Catalog>,
        mut pool: crate::model::NodePool,
        nodes: usize,
        pods_per_node: usize,
        seed: u64,
    ) -> Result<Self, crate::cluster::ClusterError> {
        use rand::{RngExt, SeedableRng};
        use std::sync::Arc;
        pool.consolidate_after = Some(Duration::ZERO);
        let registry = Arc::new(crate::policy::PolicyRegistry::new(runtime.clone()));
        let cluster = Arc::new(crate::cluster::SimulatedCluster::new(catalog.clone(), vec![pool.clone()]));
        let cloud = Arc::new(crate::cloud::SimulatedCloud::new(
            catalog.clone(),
            crate::cloud::SimulatedCloudConfig::default(),
            Arc::new(|| Duration::ZERO),
        ));
        let provisioner = Arc::new(crate::provisioning::Provisioner::new(cloud, cluster.clone(), registry));
        let types = ["m5.large", "m5.xlarge", "m5.2xlarge", "m6i.large", "m6i.xlarge", "c5.xlarge", "c5.2xlarge"];
        let offerings: Vec<u32> = types
            .iter()
            .filter_map(|t| {
                catalog.offerings.iter().position(|o| {
                    o.instance_type == *t && o.capacity_type == crate::model::CapacityType::OnDemand && o.zone == "us-east-1a"
                })
            })
            .map(|i| i as u32)
            .collect();
        if offerings.is_empty() {
            return Err(crate::cluster::ClusterError("the catalog has none of the m5/m6i/c5 types the pass uses".into()));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for n in 0..nodes {
            let offering = offerings[n % offerings.len()];
            let spec = crate::provisioning::ClaimSpec { pool: &pool, offerings: vec![offering], pods: vec![], requests: Default::default() };
            let claim = provisioner.launch_claim(spec).await?.map_err(|(c, e)| crate::cluster::ClusterError(format!("{c}: {e}")))?.claim;
            cluster.register(&claim)?;
            let allocatable = catalog.offerings[offering as usize].allocatable;
            let share: f64 = rng.random_range(0.10..0.70) / pods_per_node.max(1) as f64;
            let spec = Arc::new(crate::model::PodSpec::requesting(
                (allocatable.cpu_millis as f64 * share) as u32,
                (allocatable.memory_bytes as f64 * share) as u64,
            ));
            let pods: Vec<crate::model::Pod> =
                (0..pods_per_node).map(|i| crate::model::Pod::new(format!("{claim}-pod-{i}"), spec.clone())).collect();
            let names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
            cluster.add_pods(pods);
            for name in names {
                cluster.bind(&name, &claim)?;
            }
        }
        Ok(ConsolidationPass { provisioner, cluster })
    }

    /// One planning pass by a fresh controller (the plan is staged, not carried out).
    pub async fn run(&self) -> Result<DisruptionReport, crate::cluster::ClusterError> {
        DisruptionController::new(self.provisioner.clone(), self.cluster.clone(), DisruptionSettings::default()).reconcile().await
    }
}
