//! The native `karpenter-like` consolidator: Karpenter's consolidation,
//! run in the host. It is the baseline in `compare` and what a NodePool gets
//! when its consolidation plugin fails.
//!
//! In Karpenter's order, stopping at the first method that finds something:
//! 1. empty nodes are deleted;
//! 2. multi-node: the largest prefix (of the cheapest-to-disrupt candidates,
//!    at most [`DisruptionSettings::max_multi_node_candidates`]) whose pods
//!    fit on the other nodes plus at most one new, cheaper node, found by
//!    binary search;
//! 3. single-node: the first candidate (of the cheapest-to-disrupt
//!    [`DisruptionSettings::max_single_node_candidates`]) whose pods fit
//!    elsewhere (delete) or on one cheaper node (replace).
//!
//! Under `WhenEmpty` only the first applies.

use std::collections::BTreeSet;

use super::{DisruptionSettings, Reason};
use super::fit::{Member, View};
use crate::model::{ConsolidationPolicy, NodePool, Pod, Resources};
use crate::policy::ConsolidationAction;

/// Plan for `pool`, whose nodes are `members` (indices into
/// `view.members`, in snapshot order); `candidate[i]` says whether snapshot
/// node `i` may be disrupted; the NodePool's budgets leave room for
/// `budget(reason)` more nodes. Actions use snapshot indices.
pub(crate) fn karpenter_like(
    view: &View,
    pool: &NodePool,
    members: &[usize],
    candidate: &[bool],
    settings: &DisruptionSettings,
    budget: impl Fn(Reason) -> usize,
) -> Vec<ConsolidationAction> {
    let node = |i: usize| -> &Member { &view.members[members[i]] };
    let candidates: Vec<usize> = (0..members.len()).filter(|&i| candidate[i]).collect();
    let empty: Vec<ConsolidationAction> = candidates
        .iter()
        .filter(|&&i| node(i).pods.is_empty())
        .take(budget(Reason::Empty))
        .map(|&i| ConsolidationAction::Delete { nodes: vec![i as u32] })
        .collect();
    let room = budget(Reason::Underutilized);
    if !empty.is_empty() || pool.consolidation_policy == ConsolidationPolicy::WhenEmpty || room == 0 {
        return empty;
    }
    // Cheapest to disrupt first: fewest pods, then the dearest node.
    let mut order = candidates;
    order.sort_by(|&a, &b| {
        let (a, b) = (node(a), node(b));
        a.pods.len().cmp(&b.pods.len()).then(view.price(b.offering).total_cmp(&view.price(a.offering))).then(a.name().cmp(b.name()))
    });
    // Offerings the pool may launch, cheapest first, for the quick bound
    // (built on first use: most plans find a node to delete before).
    let replacements = std::cell::OnceCell::new();
    let replacements = || -> &Vec<u32> {
        replacements.get_or_init(|| {
            let allowed = crate::scheduling::pool_offering_set(&view.catalog, pool);
            by_price(&view.catalog).iter().copied().filter(|&o| allowed.contains(o) && !view.unavailable.contains(&o)).collect()
        })
    };
    let try_prefix = |prefix: &[usize]| -> Option<ConsolidationAction> {
        let chosen: Vec<&Member> = prefix.iter().map(|&i| node(i)).collect();
        consolidate(view, pool, &chosen, &replacements, settings).map(|offering| {
            let nodes = prefix.iter().map(|&i| i as u32).collect();
            match offering {
                None => ConsolidationAction::Delete { nodes },
                Some(offering) => ConsolidationAction::Replace { nodes, offering },
            }
        })
    };
    // Multi-node: binary search for the largest prefix that consolidates.
    let multi = &order[..order.len().min(settings.max_multi_node_candidates).min(room)];
    let (mut low, mut high, mut best) = (2usize, multi.len(), None);
    while low <= high {
        let mid = (low + high) / 2;
        match try_prefix(&multi[..mid]) {
            Some(action) => {
                best = Some(action);
                low = mid + 1;
            }
            None => high = mid - 1,
        }
    }
    if let Some(action) = best {
        return vec![action];
    }
    // Single node: the first that can go.
    order.iter().take(settings.max_single_node_candidates).find_map(|&i| try_prefix(&[i])).into_iter().collect()
}

/// Can `nodes` go? `Some(None)`: their pods fit on the other nodes;
/// `Some(Some(o))`: they fit with one new node bought as `o`, the cheapest
/// offering that holds the rest, cheaper than `nodes` by the required
/// margin; `None`: neither.
fn consolidate<'a>(
    view: &View,
    pool: &NodePool,
    nodes: &[&Member],
    replacements_by_price: &dyn Fn() -> &'a Vec<u32>,
    settings: &DisruptionSettings,
) -> Option<Option<u32>> {
    let gone: BTreeSet<&str> = nodes.iter().map(|m| m.name()).collect();
    let pods: Vec<Pod> = nodes.iter().flat_map(|m| m.pods.iter().cloned()).collect();
    // Delete: the pods fit on the nodes that stay.
    if view.simulate(&pods, &gone, Vec::new(), &[]).unschedulable.is_empty() {
        return Some(None);
    }
    // Replace: only worth simulating when some offering big enough for the
    // pods' total requests is cheap enough.
    let current: f64 = nodes.iter().map(|m| view.price(m.offering)).sum();
    let ceiling = current * (1.0 - settings.min_savings_fraction);
    let need: Resources = pods.iter().map(|p| p.spec.requests).sum();
    let possible = replacements_by_price()
        .iter()
        .map(|&o| &view.catalog.offerings[o as usize])
        .take_while(|o| o.price_per_hour < ceiling)
        .any(|o| o.allocatable.covers(&need));
    if !possible {
        return None;
    }
    let result = view.simulate(&pods, &gone, Vec::new(), std::slice::from_ref(pool));
    if !result.unschedulable.is_empty() {
        return None;
    }
    match result.claims.as_slice() {
        [] => Some(None),
        [claim] => claim
            .offerings
            .iter()
            .copied()
            .filter(|o| !view.unavailable.contains(o))
            .min_by(|&a, &b| view.price(a).total_cmp(&view.price(b)).then(a.cmp(&b)))
            .filter(|&o| view.price(o) < ceiling)
            .map(Some),
        _ => None,
    }
}

/// Catalog indices by ascending price, remembered per catalog version.
fn by_price(catalog: &crate::model::Catalog) -> std::sync::Arc<Vec<u32>> {
    use std::sync::{Arc, Mutex};
    static CACHE: Mutex<Option<(u64, Arc<Vec<u32>>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().expect("price order cache");
    if let Some((version, order)) = cache.as_ref()
        && *version == catalog.version
    {
        return order.clone();
    }
    let mut order: Vec<u32> = (0..catalog.offerings.len() as u32).collect();
    let price = |i: u32| catalog.offerings[i as usize].price_per_hour;
    order.sort_by(|&a, &b| price(a).total_cmp(&price(b)).then(a.cmp(&b)));
    let order = Arc::new(order);
    *cache = Some((catalog.version, order.clone()));
    order
}
