//! The Kubernetes side the controllers see: pending pods, nodes, NodePools,
//! NodeClaims. Controllers see only the [`Cluster`] trait; `simulated` is
//! the in-memory implementation the tests and the simulator use.

mod objects;
mod simulated;

use std::future::Future;

pub use objects::{NodePoolObject, NodePoolStatus, PluginMode, PluginRole, PluginStatus, PolicyPluginObject, RegisteredNode, Registration};
pub use simulated::{PodEvent, Scheduled, SimulatedCluster, StopCause};

use crate::cloud::Instance;
pub use crate::model::NodeClaim;
use crate::model::{BoundPods, NodePool, PdbStatus, Pod, PodSpec};
use crate::scheduling::ExistingNode;

/// What an eviction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// The pod is gone from the node (its controller recreates it).
    Evicted,
    /// A PodDisruptionBudget forbids it now (HTTP 429): try again later.
    Blocked {
        /// The budget.
        pdb: String,
    },
}

/// What creating a NodeClaim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The claim is recorded.
    Created,
    /// A claim of that name exists already (another process or replica made
    /// it, or a name was drawn twice): nothing was written; try another name.
    NameTaken,
    /// Its NodePool no longer exists (deleted since the pass read it):
    /// nothing was written; the claim must not be made.
    NodePoolGone,
}

/// What recording a launched instance on its NodeClaim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The instance is recorded on the claim.
    Recorded,
    /// The claim no longer exists (deleted, and released because it had
    /// recorded no instance, while its launch was in flight): nothing was
    /// written, and nothing else will end that instance but its launcher.
    ClaimGone,
}

/// What an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventObject {
    /// A pod (`namespace/name`).
    Pod(String),
    /// A NodeClaim.
    NodeClaim(String),
}

/// An Event for people to read (`kubectl describe`, `kubectl get events`):
/// what a controller did or could not do, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEvent {
    /// What it is about.
    pub object: EventObject,
    /// A Warning (something failed or is held back), or Normal.
    pub warning: bool,
    /// One CamelCase word: `Launched`, `LaunchFailed`, `Nominated`,
    /// `DisruptionBlocked`, `Disrupting`, `Terminated`.
    pub reason: &'static str,
    /// What happened, in a sentence.
    pub message: String,
}

/// Errors of cluster calls.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ClusterError(pub String);

/// What the controllers need from a cluster.
pub trait Cluster: Send + Sync + 'static {
    /// NodePools.
    fn node_pools(&self) -> impl Future<Output = Result<Vec<NodePool>, ClusterError>> + Send;

    /// Daemonsets that run on every node they tolerate.
    fn daemonsets(&self) -> impl Future<Output = Result<Vec<PodSpec>, ClusterError>> + Send;

    /// Pods the kube-scheduler could not place.
    fn pending_pods(&self) -> impl Future<Output = Result<Vec<Pod>, ClusterError>> + Send;

    /// How many pods the kube-scheduler could not place.
    fn pending_count(&self) -> impl Future<Output = Result<usize, ClusterError>> + Send {
        async { Ok(self.pending_pods().await?.len()) }
    }

    /// Nodes, and launched NodeClaims not yet registered as nodes (with the
    /// pods already bound to them; pending nominated pods are not counted).
    fn nodes(&self) -> impl Future<Output = Result<Vec<ExistingNode>, ClusterError>> + Send;

    /// Record a new NodeClaim (before its launch); a name already taken is
    /// [`Created::NameTaken`], and a NodePool no longer there is
    /// [`Created::NodePoolGone`], not errors.
    fn create_node_claim(&self, claim: NodeClaim) -> impl Future<Output = Result<Created, ClusterError>> + Send;

    /// Record that `claim` is backed by `instance`; a claim no longer there
    /// is [`Recorded::ClaimGone`], not an error.
    fn claim_launched(&self, claim: &str, instance: Instance) -> impl Future<Output = Result<Recorded, ClusterError>> + Send;

    /// Remove a NodeClaim (whose launch failed, or whose instance is gone) and its node.
    fn delete_node_claim(&self, claim: &str) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Ask for NodeClaim `claim` to be deleted, as `kubectl delete
    /// nodeclaim` does: its finalizer keeps it, marked as being deleted,
    /// until the termination path has drained its node and terminated its
    /// instance; a process that restarts meanwhile sees the mark and
    /// finishes the work. `false`: no such claim.
    fn request_claim_deletion(&self, claim: &str) -> impl Future<Output = Result<bool, ClusterError>> + Send;

    /// Write NodeClaim `claim`'s disruption conditions (`Drifted`,
    /// `Consolidatable`, `Empty`, `DisruptionReason`). They inform; no
    /// decision reads them back, so writing them is not a change
    /// ([`Cluster::revision`]) that wakes a controller.
    fn write_claim_conditions(&self, claim: &str, conditions: &crate::model::ClaimConditions) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Write annotation `key` on NodeClaim `claim`: why it was bought as it
    /// was (`provisioning::explain::DECISION_ANNOTATION`), why it is being
    /// disrupted (`disruption::explain::DISRUPTION_ANNOTATION`), as bounded
    /// JSON that `nodewright explain` reads. Informational, like the
    /// conditions: no decision reads them back.
    fn write_claim_annotation(&self, claim: &str, key: &str, value: &str) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// NodeClaims, with their instances.
    fn node_claims(&self) -> impl Future<Output = Result<Vec<NodeClaim>, ClusterError>> + Send;

    /// NodeClaim `name`, if it exists.
    fn node_claim(&self, name: &str) -> impl Future<Output = Result<Option<NodeClaim>, ClusterError>> + Send {
        async move { Ok(self.node_claims().await?.into_iter().find(|c| c.name == name)) }
    }

    /// The pods bound to node `node`.
    fn pods_on(&self, node: &str) -> impl Future<Output = Result<Vec<Pod>, ClusterError>> + Send;

    /// Mark node `node` unschedulable (no-op if it is not registered).
    fn cordon(&self, node: &str) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Delete the pods of node `node` without asking their
    /// PodDisruptionBudgets (an interruption, or a drain past its grace
    /// period); their controllers recreate them as pending pods. Returns
    /// the pods removed.
    fn drain(&self, node: &str) -> impl Future<Output = Result<Vec<String>, ClusterError>> + Send;

    /// Every pod bound to a node, as (node, pod).
    fn bound_pods(&self) -> impl Future<Output = Result<Vec<(String, Pod)>, ClusterError>> + Send;

    /// [`Self::bound_pods`], by node, each node's pods by name.
    fn bound_pods_by_node(&self) -> impl Future<Output = Result<rustc_hash::FxHashMap<String, BoundPods>, ClusterError>> + Send {
        async {
            let mut by_node: rustc_hash::FxHashMap<String, Vec<Pod>> = rustc_hash::FxHashMap::default();
            for (node, pod) in self.bound_pods().await? {
                by_node.entry(node).or_default().push(pod);
            }
            Ok(by_node.into_iter().map(|(node, pods)| (node, BoundPods::new(pods))).collect())
        }
    }

    /// PodDisruptionBudgets with the evictions each allows now.
    fn pod_disruption_budgets(&self) -> impl Future<Output = Result<Vec<PdbStatus>, ClusterError>> + Send;

    /// Evict one pod through the Eviction API, which honours PodDisruptionBudgets.
    fn evict(&self, pod: &str) -> impl Future<Output = Result<Eviction, ClusterError>> + Send;

    /// Make node `node` schedulable again (an abandoned disruption).
    fn uncordon(&self, node: &str) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Record `event`. The same event again soon after is a repeat the
    /// cluster may drop.
    fn record_event(&self, event: ClusterEvent) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Tell the pod's owner why it cannot be scheduled (an Event in Kubernetes).
    fn pod_unschedulable(&self, pod: &str, reason: &str) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Launched NodeClaims and the Nodes their instances registered as.
    fn registrations(&self) -> impl Future<Output = Result<Vec<Registration>, ClusterError>> + Send;

    /// Record on NodeClaim `claim` that it registered as Node `node`, and
    /// whether it is now initialised (Ready, startup taints removed).
    fn mark_registration(&self, claim: &str, node: &str, initialized: bool) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// Remove the taints with these keys from Node `node` (the NodePool's
    /// startup taints, once the node is Ready).
    fn remove_node_taints(&self, node: &str, keys: &[String]) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// NodePool objects as written (the invalid ones too), with their status.
    fn node_pool_objects(&self) -> impl Future<Output = Result<Vec<NodePoolObject>, ClusterError>> + Send;

    /// Write NodePool `name`'s status.
    fn write_node_pool_status(&self, name: &str, status: &NodePoolStatus) -> impl Future<Output = Result<(), ClusterError>> + Send;

    /// PolicyPlugin objects (none where the cluster has no such kind).
    fn policy_plugins(&self) -> impl Future<Output = Result<Vec<PolicyPluginObject>, ClusterError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// The component PolicyPlugin `name` points at (a ConfigMap's key, a
    /// URL); the error names the field and the source.
    fn policy_plugin_component(&self, name: &str) -> impl Future<Output = Result<Vec<u8>, String>> + Send {
        let name = name.to_string();
        async move { Err(format!("PolicyPlugin {name} does not exist")) }
    }

    /// Report on PolicyPlugin `name`.
    fn write_policy_plugin_status(&self, name: &str, status: &PluginStatus) -> impl Future<Output = Result<(), ClusterError>> + Send {
        let _ = (name, status);
        async { Ok(()) }
    }

    /// A change counter: it differs between two calls whenever anything
    /// the reads above return may have changed in between (nodes,
    /// NodeClaims, pods, NodePools, daemonsets, PodDisruptionBudgets), like
    /// the consolidation state of Karpenter's cluster state. A controller
    /// that found nothing to do may skip its next pass while the counter
    /// holds. `None`: this cluster cannot tell, and every pass reads.
    fn revision(&self) -> Option<u64> {
        None
    }
}
