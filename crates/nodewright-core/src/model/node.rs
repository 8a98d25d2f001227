//! The things every layer shares about machines: an instance the cloud
//! runs, the NodeClaim that asked for it, and a node as the scheduler sees
//! it. The cloud, the cluster, the scheduler and the controllers all speak
//! of these; none of them owns them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{PodSpec, Resources, Taint};

/// A running (or starting) instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    /// Provider id, e.g. `i-0abc…`.
    pub id: String,
    /// The NodeClaim it backs.
    pub claim: String,
    /// Its NodePool.
    pub node_pool: String,
    /// Catalog index of the offering bought.
    pub offering: u32,
}

/// A request for a node, from the moment it is decided until its node is gone.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeClaim {
    /// Name (also the node's name once registered).
    pub name: String,
    /// Its NodePool.
    pub node_pool: String,
    /// Pods it was opened for (nominated to it while it starts).
    pub pods: Arc<[String]>,
    /// Their requests plus daemonset overhead.
    pub requests: Resources,
    /// Offerings the launch may use, most preferred first (shared: claims
    /// are read on every pass).
    pub offerings: Arc<[u32]>,
    /// Taints the node starts with (startup taints included).
    pub taints: Vec<Taint>,
    /// The instance, once launched.
    pub instance: Option<Instance>,
    /// When it was created (the controllers' clock).
    pub created_at: Duration,
    /// [`super::NodePool::drift_hash`] of its NodePool when it was created.
    pub pool_hash: String,
    /// Its node has registered and is ready for pods.
    pub initialized: bool,
    /// Its deletion was asked for (a `deletionTimestamp`: `kubectl delete
    /// nodeclaim`, or its Node deleted by hand); the finalizer holds it
    /// until the node is drained and the instance terminated.
    pub deleting: bool,
    /// What the disruption controller last said of it.
    pub conditions: ClaimConditions,
}

/// The conditions a NodeClaim carries about its disruption, as
/// Karpenter's: `Drifted` (with the drift reason), `Consolidatable`,
/// `Empty` and `DisruptionReason`, as the disruption controller last wrote
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClaimConditions {
    /// Drifted, and why: `NodePoolDrifted`, or the cloud's reason
    /// (`AMIDrift`, `SubnetDrift`, `SecurityGroupDrift`, `NodeClassDrift`).
    pub drifted: Option<String>,
    /// Its pods have not changed for the NodePool's `consolidateAfter`:
    /// consolidation may pick it.
    pub consolidatable: bool,
    /// It runs no pods (daemonsets aside).
    pub empty: bool,
    /// It is being disrupted, for this reason (`drifted`, `expired`,
    /// `underutilized`, `empty`, `deleted`, `interrupted`).
    pub disruption: Option<String>,
}

/// A node that exists (or has been launched and is on its way).
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingNode {
    /// Node (or NodeClaim) name.
    pub name: String,
    /// The NodePool that owns it, if any.
    pub node_pool: Option<String>,
    /// Its labels (zone, instance type, hostname, …), shared: nodes are
    /// listed on every pass.
    pub labels: Arc<BTreeMap<String, String>>,
    /// Its taints.
    pub taints: Vec<Taint>,
    /// What pods may use.
    pub allocatable: Resources,
    /// What the machine has (counted against NodePool limits).
    pub capacity: Resources,
    /// Specs of the pods on it (daemonsets included); shared, as nodes are
    /// listed on every pass (`Arc::make_mut` to change them).
    pub pods: Arc<Vec<Arc<PodSpec>>>,
    /// False when cordoned or being deleted.
    pub schedulable: bool,
}

impl ExistingNode {
    /// Requests of the pods on it.
    pub fn used(&self) -> Resources {
        self.pods.iter().map(|p| p.requests).sum()
    }
}
