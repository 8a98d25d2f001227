//! The cloud behind the controllers: what can be bought, launch, terminate.
//! Controllers see only the [`CloudProvider`] trait; `simulated` is the
//! in-memory implementation the tests and the simulator use.

pub mod billing;
mod simulated;

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;

pub use crate::model::Instance;
pub use simulated::{Bill, MINIMUM_BILLED, POOL_DEPTH, POOL_LEVEL, POOL_VOLATILITY, REBALANCE_LEAD, REBALANCE_SHARE, SPOT_WARNING, SimulatedCloud, SimulatedCloudConfig};

use crate::model::{Catalog, Resources, Taint};

/// How long an offering that failed for lack of capacity is skipped
/// (Karpenter uses the same three minutes).
pub const UNAVAILABLE_FOR: std::time::Duration = std::time::Duration::from_secs(180);

/// A request to launch one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchRequest {
    /// The NodeClaim the instance will back (also the idempotency token).
    pub claim: String,
    /// Its NodePool.
    pub node_pool: String,
    /// Catalog indices to try, most preferred first (at most 60).
    pub offerings: Vec<u32>,
    /// What the pods on it request (plus daemonset overhead).
    pub requests: Resources,
    /// Taints the node starts with.
    pub taints: Vec<Taint>,
    /// How the cloud picks among the spot offerings.
    pub spot_strategy: SpotStrategy,
    /// The node class its NodePool names (`nodeClassRef`); `None`: the
    /// cloud's default.
    pub node_class: Option<String>,
    /// The version of the catalog `offerings` index. A cloud whose catalog
    /// has changed since (a node class's reservations or kubelet settings)
    /// refuses the launch rather than launch what another offering is now;
    /// `None`: the catalog it has.
    pub catalog_version: Option<u64>,
}

/// How a launch picks among its spot offerings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpotStrategy {
    /// In the order given (CreateFleet `capacity-optimized-prioritized`):
    /// the policy's ranking decides.
    #[default]
    Prioritized,
    /// The pools with the most spare capacity, then the cheapest of them
    /// (CreateFleet `price-capacity-optimized`, what Karpenter sends).
    PriceCapacityOptimized,
}

/// Why a launch failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LaunchError {
    /// Every offering was out of capacity or marked unavailable.
    #[error("no capacity for any of the {tried} offerings tried ({skipped} skipped as recently unavailable)")]
    InsufficientCapacity {
        /// Offerings tried and refused.
        tried: usize,
        /// Offerings skipped because they failed recently.
        skipped: usize,
    },
    /// Anything else the provider reports.
    #[error("launch failed: {0}")]
    Provider(String),
}

/// Errors of other cloud calls.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct CloudError(pub String);

/// What the controllers need from a cloud.
pub trait CloudProvider: Send + Sync + 'static {
    /// Every offering, with current prices.
    fn catalog(&self) -> Arc<Catalog>;

    /// Offerings marked unavailable after a recent capacity failure.
    fn unavailable(&self) -> std::collections::HashSet<u32>;

    /// Skip offering `index` for [`UNAVAILABLE_FOR`] (a spot interruption
    /// warning says its pool is short).
    fn mark_unavailable(&self, index: u32);

    /// Launch one instance for `request`, trying its offerings in order.
    fn launch(&self, request: &LaunchRequest) -> impl Future<Output = Result<Instance, LaunchError>> + Send;

    /// Terminate an instance this cluster owns.
    fn terminate(&self, instance_id: &str) -> impl Future<Output = Result<(), CloudError>> + Send;

    /// Instances this cluster owns.
    fn instances(&self) -> impl Future<Output = Result<Vec<Instance>, CloudError>> + Send;

    /// Changes when what instances drift from may have changed (a pass that
    /// found nothing to do is not skipped across a change).
    fn drift_generation(&self) -> u64 {
        0
    }

    /// Which of `instances` no longer match what their node class resolves
    /// to now, by instance id, with Karpenter's reason (`AMIDrift`,
    /// `SubnetDrift`, `SecurityGroupDrift`): the disruption controller's
    /// Drift method replaces them through the budgets. A cloud without node
    /// classes never drifts.
    fn drifted(&self, instances: &[&Instance]) -> impl Future<Output = Result<std::collections::HashMap<String, String>, CloudError>> + Send {
        let _ = instances;
        async { Ok(std::collections::HashMap::new()) }
    }
}
