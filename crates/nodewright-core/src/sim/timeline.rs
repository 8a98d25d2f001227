//! What `nodewright top` shows, as data: the cluster's nodes at one
//! moment (a frame). The simulator keeps a frame every simulated hour
//! (`timeline.json` beside the report); the live view builds one from a
//! cluster.

use serde::{Deserialize, Serialize};

/// One node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    /// Name.
    pub name: String,
    /// NodePool.
    pub node_pool: String,
    /// Instance type.
    pub instance_type: String,
    /// `spot`, `on-demand`, `reserved`.
    pub capacity_type: String,
    /// Zone.
    pub zone: String,
    /// $/h.
    pub price_per_hour: f64,
    /// CPU requested (millicores), daemonsets included.
    pub cpu_requested_m: u64,
    /// CPU allocatable (millicores).
    pub cpu_allocatable_m: u64,
    /// Memory requested (MiB).
    pub memory_requested_mib: u64,
    /// Memory allocatable (MiB).
    pub memory_allocatable_mib: u64,
    /// Pods on it.
    pub pods: u32,
}

/// The cluster at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Hours from the start (of the run, or of the live view).
    pub hour: f64,
    /// Pods waiting for a node.
    pub pending: u32,
    /// Nodes, by name.
    pub nodes: Vec<NodeRow>,
}

impl Frame {
    /// The cluster's $/h.
    pub fn dollars_per_hour(&self) -> f64 {
        self.nodes.iter().map(|n| n.price_per_hour).sum()
    }
}

/// A run's frames, for `timeline.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The policy.
    pub policy: String,
    /// Its selection plugin.
    pub selection: String,
    /// Its consolidation plugin.
    pub consolidation: String,
    /// A frame every simulated hour.
    pub frames: Vec<Frame>,
}
