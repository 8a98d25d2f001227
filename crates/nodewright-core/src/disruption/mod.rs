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
pub mod explain;
mod fit;
mod karpenter;
mod methods;

use std::time::Duration;

use serde::Serialize;

pub use budget::allowed as budget_allows;
pub use controller::{DisruptionController, DisruptionCounts, DisruptionReport, consolidation_slot};
pub use controller::validation::RULES as VALIDATION_RULES;
pub use explain::{DisruptionExplanation, RuleResult};

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
    /// Its NodeClaim (or Node) was deleted: by a person (`kubectl delete
    /// nodeclaim`) or another controller. Not held by budgets; pods are
    /// evicted through their PDBs until `terminationGracePeriod`, as for
    /// expiry.
    Deleted,
}

impl Reason {
    /// Its name in counts and metrics (`expired`, `deleted`, …).
    pub fn label(self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::Underutilized => "underutilized",
            Reason::Drifted => "drifted",
            Reason::Expired => "expired",
            Reason::Deleted => "deleted",
        }
    }

    /// The name disruption budgets use (`reasons:`).
    pub fn budget_name(self) -> &'static str {
        match self {
            Reason::Empty => "Empty",
            Reason::Underutilized => "Underutilized",
            Reason::Drifted => "Drifted",
            Reason::Expired => "Expired",
            Reason::Deleted => "Deleted",
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
    /// The validation rule that rejected it (`budget`, `pdb`, `strands`, …).
    pub rule: &'static str,
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
    /// Replace spot nodes with a cheaper spot node (Karpenter's
    /// `SpotToSpotConsolidation`, off by default): a single node only when
    /// at least [`MIN_SPOT_TO_SPOT_TYPES`] cheaper spot instance types remain.
    pub spot_to_spot: bool,
    /// How often the controller decides new actions (Karpenter polls every
    /// 10 s); passes in between only move running disruptions on.
    pub poll_interval: Duration,
}

/// Cheaper spot instance types single-node spot-to-spot consolidation
/// needs, so the replacement keeps the flexibility spot needs (Karpenter's 15).
pub const MIN_SPOT_TO_SPOT_TYPES: usize = 15;

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
            spot_to_spot: false,
            poll_interval: Duration::from_secs(10),
        }
    }
}
