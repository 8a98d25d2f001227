//! What the lifecycle controllers (registration, NodePool status, the
//! PolicyPlugin reconciler) read from and write to a cluster, in the
//! model's terms: the adapter turns them into Kubernetes objects and back.

use crate::model::Resources;
/// Which decision a PolicyPlugin makes (the registry's role).
pub use crate::policy::Role as PluginRole;
/// Whether a PolicyPlugin decides or shadows (the registry's slot mode).
pub use crate::policy::SlotMode as PluginMode;
use crate::policy::{Role, SlotMode};

/// A NodeClaim with an instance, and the Node that instance registered as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The NodeClaim.
    pub claim: String,
    /// Its NodePool.
    pub node_pool: String,
    /// The Node its instance registered as (linked by providerID), if any.
    pub node: Option<RegisteredNode>,
    /// The Node it was linked to is gone: deleted by hand, so the NodeClaim
    /// goes too.
    pub node_deleted: bool,
    /// Its status says it is registered (linked to its Node).
    pub registered: bool,
    /// Its status says it is initialised (Ready, startup taints gone).
    pub initialized: bool,
    /// It is being deleted.
    pub deleting: bool,
}

/// A registered Node, as registration needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredNode {
    /// Its name (EC2 names it: `ip-…`).
    pub name: String,
    /// Its kubelet reports Ready.
    pub ready: bool,
    /// The keys of its taints.
    pub taints: Vec<String>,
}

/// A NodePool object as written, for its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePoolObject {
    /// Its name.
    pub name: String,
    /// Why its spec is refused (the field and the error); `None`: valid.
    pub invalid: Option<String>,
    /// The status written last (`None`: never written).
    pub status: Option<NodePoolStatus>,
}

/// What the controller says of a NodePool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePoolStatus {
    /// `None`: its spec is valid; otherwise why not, naming the field (it
    /// is left out of every decision until fixed).
    pub invalid: Option<String>,
    /// NodeClaims it has (launched or in flight).
    pub nodes: u32,
    /// The capacity of its launched nodes, summed (Karpenter's
    /// `status.resources`).
    pub resources: Resources,
}

/// A PolicyPlugin object as the reconciler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPluginObject {
    /// Its name: NodePools name it in `selection.plugin` or
    /// `consolidation.plugin`.
    pub name: String,
    /// Which decision it makes.
    pub role: Role,
    /// Active or shadow.
    pub mode: SlotMode,
    /// The sha256 the component must have (hex, as written).
    pub sha256: String,
    /// The JSON handed to the plugin.
    pub config: String,
    /// The digest its status says serves now.
    pub loaded_digest: Option<String>,
}

/// What the reconciler reports on a PolicyPlugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginStatus {
    /// This digest serves `slots` NodePool slots since now.
    Loaded {
        /// sha256 (hex).
        digest: String,
        /// Slots it serves.
        slots: usize,
    },
    /// The candidate was refused; the previous version keeps serving.
    Rejected {
        /// `FetchFailed`, `DigestMismatch`, `LoadFailed`.
        reason: String,
        /// Why, naming the field.
        message: String,
    },
}
