//! What contract 0.3.0 tells a policy beyond the catalog: the pods as
//! more than requests, and the fleet — running nodes per NodePool and
//! offering, the commitments and how much of them the fleet uses now, the
//! recent launch failures and interruptions per capacity pool. Host-side
//! and independent of the contract version; the glue converts.

use std::sync::Arc;

use crate::model::{PodSpec, well_known};

/// What a policy learns about a pod besides its requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodFacts {
    /// The workload (its `app` label); empty when unknown.
    pub workload: Arc<str>,
    /// Priority.
    pub priority: i32,
    /// `controller.kubernetes.io/pod-deletion-cost`.
    pub deletion_cost: i32,
    /// Must not be disrupted.
    pub do_not_disrupt: bool,
    /// May run on spot capacity.
    pub tolerates_spot: bool,
    /// Runs to completion.
    pub job: bool,
    /// Evictions its PodDisruptionBudgets allow now (`None`: no budget).
    pub pdb_headroom: Option<u32>,
}

impl PodFacts {
    /// The facts `spec` gives (no PDB headroom: the caller knows the budgets).
    pub fn of(spec: &PodSpec) -> Self {
        PodFacts {
            workload: spec.labels.get("app").map_or_else(|| Arc::from(""), |w| Arc::from(w.as_str())),
            priority: spec.priority,
            deletion_cost: spec.deletion_cost,
            do_not_disrupt: spec.do_not_disrupt,
            tolerates_spot: tolerates_spot(spec),
            job: spec.job,
            pdb_headroom: None,
        }
    }
}

/// Whether nothing in `spec` keeps it off spot capacity: its node selector
/// and at least one of its required node-affinity terms allow
/// `karpenter.sh/capacity-type: spot`.
pub fn tolerates_spot(spec: &PodSpec) -> bool {
    let spot = "spot";
    spec.node_selector.get(well_known::CAPACITY_TYPE).is_none_or(|v| v == spot)
        && (spec.required_terms.is_empty()
            || spec.required_terms.iter().any(|term| {
                term.iter().filter(|r| r.key == well_known::CAPACITY_TYPE).all(|r| r.matches(Some(spot)))
            }))
}

/// Nodes of a NodePool running (or launching as) an offering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCount {
    /// NodePool.
    pub node_pool: String,
    /// Catalog index.
    pub offering: u32,
    /// Nodes (never 0).
    pub count: u32,
}

/// A Savings Plan and how much of it the running fleet uses now.
#[derive(Debug, Clone, PartialEq)]
pub struct SavingsPlanUse {
    /// $ per hour committed.
    pub hourly_commitment: f64,
    /// $ per hour of it the running on-demand fleet uses now.
    pub used_per_hour: f64,
    /// Fraction off for every family (when `family_discounts` is empty).
    pub discount: f64,
    /// Fraction off per family; families not named are not covered.
    pub family_discounts: Vec<(String, f64)>,
}

/// Reserved Instances (zone empty) or a capacity reservation, and their use.
#[derive(Debug, Clone, PartialEq)]
pub struct ReservationUse {
    /// Instance type.
    pub instance_type: String,
    /// Zone, empty for regional Reserved Instances.
    pub zone: String,
    /// Instances reserved.
    pub count: u32,
    /// Instances of the fleet using them now.
    pub used: u32,
    /// $ per instance-hour, paid whether used or not.
    pub hourly_rate: f64,
}

/// Launch failures and interruptions of a pool over the last hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolHistory {
    /// Catalog index.
    pub offering: u32,
    /// Launches refused for lack of capacity.
    pub launch_failures: u32,
    /// Spot interruption warnings.
    pub interruptions: u32,
}

/// The fleet and the commitments, under a version that changes whenever
/// any of it does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fleet {
    /// Version (0: nothing observed yet).
    pub version: u64,
    /// Catalog version the offering indices refer to.
    pub catalog_version: u64,
    /// Running and launching nodes, by NodePool then offering.
    pub running: Vec<FleetCount>,
    /// Savings Plans.
    pub savings_plans: Vec<SavingsPlanUse>,
    /// Regional Reserved Instances.
    pub reserved_instances: Vec<ReservationUse>,
    /// On-demand capacity reservations.
    pub capacity_reservations: Vec<ReservationUse>,
    /// Pools with something to report over the last hour.
    pub recent: Vec<PoolHistory>,
}

impl Fleet {
    /// The same content as `other`, versions aside.
    pub fn same_as(&self, other: &Fleet) -> bool {
        self.catalog_version == other.catalog_version
            && self.running == other.running
            && self.savings_plans == other.savings_plans
            && self.reserved_instances == other.reserved_instances
            && self.capacity_reservations == other.capacity_reservations
            && self.recent == other.recent
    }

    /// Nodes of `node_pool` (running and launching).
    pub fn pool_nodes(&self, node_pool: &str) -> u32 {
        self.running.iter().filter(|c| c.node_pool == node_pool).fold(0u32, |n, c| n.saturating_add(c.count))
    }
}
