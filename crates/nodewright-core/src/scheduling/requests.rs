//! The scheduler's answer for pods that request resources and carry nothing
//! else, on nodes with no labels, taints or daemonsets: the question a
//! plugin's `what-if` asks. Without constraints, [`schedule`](super::schedule)
//! is first-fit in its own order — larger first (CPU, then memory), the pods
//! of one request together in the order that request first appears, then by
//! index — over the nodes in order; this is that, without building the
//! general solver for it.

use crate::model::Resources;

/// The indices of the `pods` (each its requests) that fit on none of
/// `nodes` (each its allocatable and the requests already on it), ascending:
/// what [`schedule`](super::schedule) leaves unschedulable for such pods on
/// such nodes.
pub fn unplaced(pods: &[Resources], nodes: &[(Resources, Resources)]) -> Vec<u32> {
    // Each pod's group: the order its request first appears (the
    // scheduler numbers the pods' shared specs that way).
    let mut groups: rustc_hash::FxHashMap<Resources, u32> = rustc_hash::FxHashMap::default();
    let mut order: Vec<Order> = pods
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let next = groups.len() as u32;
            let group = *groups.entry(*r).or_insert(next);
            (std::cmp::Reverse((r.cpu_millis, r.memory_bytes)), group, i as u32)
        })
        .collect();
    order.sort_unstable();
    let mut used: Vec<Resources> = nodes.iter().map(|&(_, used)| used).collect();
    let mut unplaced = Vec::new();
    // Nodes only fill up: the pods of a group resume the search where the
    // previous one of the group stopped.
    let mut cursor: Option<(u32, usize)> = None;
    for (_, group, i) in order {
        let requests = pods[i as usize];
        let start = match cursor {
            Some((g, at)) if g == group => at,
            _ => 0,
        };
        let found = (start..nodes.len()).find(|&n| fits(nodes[n].0, used[n], requests));
        match found {
            Some(n) => used[n] = used[n].saturating_add(requests),
            None => unplaced.push(i),
        }
        cursor = Some((group, found.unwrap_or(nodes.len())));
    }
    unplaced.sort_unstable();
    unplaced
}

/// Where a pod comes in the scheduler's order: larger first (CPU, then
/// memory), then its group, then its index.
type Order = (std::cmp::Reverse<(u32, u64)>, u32, u32);

/// Does a pod requesting `requests` fit on a node of `allocatable` that
/// runs `used`? The scheduler's two checks: CPU and memory left, then
/// every resource of the total.
fn fits(allocatable: Resources, used: Resources, requests: Resources) -> bool {
    requests.cpu_millis <= allocatable.cpu_millis.saturating_sub(used.cpu_millis)
        && requests.memory_bytes <= allocatable.memory_bytes.saturating_sub(used.memory_bytes)
        && allocatable.covers(&used.saturating_add(requests))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{Catalog, ExistingNode, Pod, PodSpec};

    /// What the general scheduler answers for the same question.
    fn by_the_scheduler(pods: &[Resources], nodes: &[(Resources, Resources)]) -> Vec<u32> {
        let mut specs: std::collections::HashMap<Resources, Arc<PodSpec>> = Default::default();
        let pods: Vec<Pod> = pods
            .iter()
            .map(|&requests| {
                let spec = specs.entry(requests).or_insert_with(|| Arc::new(PodSpec { requests, ..Default::default() }));
                Pod::new(String::new(), spec.clone())
            })
            .collect();
        let nodes: Vec<ExistingNode> = nodes
            .iter()
            .map(|&(allocatable, used)| ExistingNode {
                name: String::new(),
                node_pool: None,
                labels: Default::default(),
                taints: Vec::new(),
                allocatable,
                capacity: allocatable,
                pods: Arc::new(if used == Resources::default() { Vec::new() } else { vec![Arc::new(PodSpec { requests: used, ..Default::default() })] }),
                schedulable: true,
            })
            .collect();
        let empty = Catalog::new(Vec::new());
        let result = super::super::schedule(super::super::SchedulingInput { catalog: &empty, pools: &[], daemonsets: &[], nodes: &nodes, pods: &pods });
        let mut unplaced: Vec<u32> = result.unschedulable.iter().map(|(p, _)| *p as u32).collect();
        unplaced.sort_unstable();
        unplaced
    }

    /// Requests drawn from a few values each, so that pods share requests,
    /// tie on CPU and memory while differing elsewhere, and fill nodes exactly.
    fn requests() -> impl Strategy<Value = Resources> {
        (0u32..5, 0u64..5, 0u32..3, 0u32..2, 0u64..3).prop_map(|(cpu, memory, pods, gpus, disk)| Resources {
            cpu_millis: cpu * 500,
            memory_bytes: memory << 30,
            pods,
            gpus,
            ephemeral_bytes: disk << 30,
        })
    }

    fn node() -> impl Strategy<Value = (Resources, Resources)> {
        let allocatable = (1u32..9, 1u64..9, 1u32..8, 0u32..3, 0u64..6).prop_map(|(cpu, memory, pods, gpus, disk)| Resources {
            cpu_millis: cpu * 500,
            memory_bytes: memory << 30,
            pods,
            gpus,
            ephemeral_bytes: disk << 30,
        });
        // Some nodes already run more than they hold.
        (allocatable, requests(), requests()).prop_map(|(a, u, v)| (a, u.saturating_add(v)))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn first_fit_answers_as_the_scheduler_does(pods in prop::collection::vec(requests(), 0..24), nodes in prop::collection::vec(node(), 0..6)) {
            prop_assert_eq!(unplaced(&pods, &nodes), by_the_scheduler(&pods, &nodes));
        }
    }

    #[test]
    fn the_larger_pod_is_placed_first_and_the_one_left_over_is_named() {
        let gib = 1u64 << 30;
        let node = (Resources { pods: 110, ..Resources::pod(5000, 8 * gib) }, Resources::default());
        let pods = [Resources::pod(1000, gib), Resources::pod(3500, gib), Resources::pod(1000, gib)];
        // 3.5 CPU first, then the first 1-CPU pod; the second of them (same
        // request, later index) no longer fits.
        assert_eq!(unplaced(&pods, &[node]), vec![2]);
        assert_eq!(unplaced(&pods, &[]), vec![0, 1, 2]);
    }
}
