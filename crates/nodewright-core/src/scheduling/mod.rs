//! The bin-packing simulation: which pending pods fit on existing and
//! in-flight nodes, and which new NodeClaims (each with every offering still
//! compatible with all its pods) would hold the rest.
//!
//! Pods are placed highest priority first, then largest first. For each pod
//! the scheduler tries existing nodes, then the NodeClaims opened so far,
//! then a new NodeClaim in the NodePools by weight. Every constraint of the
//! pod is honoured: node selector, required node affinity, tolerations,
//! topology spread on zone and hostname, pod affinity and anti-affinity,
//! NodePool requirements, taints and limits. Preferred node affinities (and
//! `ScheduleAnyway` spreads) are treated as required first and relaxed one
//! at a time, lightest first, when they block a pod.
//!
//! Identical pods (one shared `PodSpec`) only ever see targets fill up, so
//! the search for each group resumes where the previous pod of the group
//! stopped: the cost is linear in pods plus targets, not their product.

mod bitset;
mod labels;
mod memo;
pub mod requests;
mod solver;
pub mod workload;

use std::sync::Arc;

pub use crate::model::ExistingNode;
pub use labels::{launch_offerings, node_labels, offering_label};
pub use memo::NodeMemo;
pub(crate) use solver::Room;
pub use solver::{Hints, NodeCache, schedule, schedule_hinted, schedule_in_order, schedule_within, zone_index};

/// Catalog indices of the offerings a node of `pool` may be bought as
/// (its requirements only; pods add their own), ascending.
pub fn pool_offering_list(catalog: &Catalog, pool: &NodePool) -> Vec<u32> {
    labels::pool_offerings(catalog, pool).iter().collect()
}

use crate::model::{Catalog, NodePool, Pod, PodSpec, Resources};

impl ExistingNode {
    /// A node of `pool` bought as `offering` and called `name`, running the
    /// daemonsets that land on it and nothing else: a launched NodeClaim
    /// before its node registers, a node as it registers, or a replacement
    /// the disruption controller considers. The one place a new node's
    /// labels, taints and daemonset pods are decided.
    pub fn launched(name: &str, pool: &NodePool, offering: &crate::model::Offering, daemonsets: &[PodSpec]) -> Self {
        let labels = node_labels(offering, pool, name);
        let pods = crate::model::daemonsets_on(daemonsets, &labels, &pool.taints);
        ExistingNode {
            name: name.into(),
            node_pool: Some(pool.name.clone()),
            labels: Arc::new(labels),
            taints: pool.taints.clone(),
            allocatable: offering.allocatable,
            capacity: offering.capacity,
            pods: Arc::new(pods),
            schedulable: true,
        }
    }

}

/// What the scheduler works on.
#[derive(Debug, Clone, Copy)]
pub struct SchedulingInput<'a> {
    /// Every offering.
    pub catalog: &'a Catalog,
    /// NodePools (any order; weight decides).
    pub pools: &'a [NodePool],
    /// Daemonsets: the overhead every new node pays for those that run on it.
    pub daemonsets: &'a [PodSpec],
    /// Existing and in-flight nodes.
    pub nodes: &'a [ExistingNode],
    /// Pending pods.
    pub pods: &'a [Pod],
}

/// A new node the pods need.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedClaim {
    /// NodePool name.
    pub node_pool: String,
    /// Indices (into the input pods) of the pods it will hold.
    pub pods: Vec<usize>,
    /// Their requests plus daemonset overhead.
    pub requests: Resources,
    /// Catalog indices of every offering that can hold all of them, ascending.
    pub offerings: Vec<u32>,
}

/// The scheduler's answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SchedulingResult {
    /// (pod index, node index): pods that fit on existing or in-flight nodes.
    pub bindings: Vec<(usize, usize)>,
    /// New nodes to launch.
    pub claims: Vec<PlannedClaim>,
    /// (pod index, reason a human can act on).
    pub unschedulable: Vec<(usize, String)>,
    /// (pod index, preferences relaxed) for pods placed only after relaxing.
    pub relaxed: Vec<(usize, usize)>,
}
