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

use super::{DisruptionSettings, MIN_SPOT_TO_SPOT_TYPES, Reason};
use super::fit::{Buy, Member, View};
use crate::model::{CapacityType, ConsolidationPolicy, NodePool, Pod, Resources};
use crate::policy::ConsolidationAction;

/// Plan for `pool`, whose nodes are `members` (indices into
/// `view.members`, in snapshot order); `candidate[i]` says whether snapshot
/// node `i` may be disrupted; the NodePool's budgets leave room for
/// `budget(reason)` more nodes; a replacement is one of `choice.allowed`,
/// picked by the pool's selection policy. Actions use snapshot indices.
#[allow(clippy::too_many_arguments)]
pub(crate) fn karpenter_like(
    view: &View,
    pool: &NodePool,
    members: &[usize],
    candidate: &[bool],
    settings: &DisruptionSettings,
    budget: impl Fn(Reason) -> usize,
    choice: &Choice<'_>,
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
    // `pods` are those of the nodes of `prefix`.
    let try_prefix = |prefix: &[usize], pods: &[Pod]| -> Option<ConsolidationAction> {
        let chosen: Vec<&Member> = prefix.iter().map(|&i| node(i)).collect();
        consolidate(view, pool, &chosen, pods, settings, choice).map(|offering| {
            let nodes = prefix.iter().map(|&i| i as u32).collect();
            match offering {
                None => ConsolidationAction::Delete { nodes },
                Some(offering) => ConsolidationAction::Replace { nodes, offering },
            }
        })
    };
    // Multi-node: binary search for the largest prefix that consolidates.
    // The pods of every prefix are a prefix of the pods of `multi` in order.
    let multi = &order[..order.len().min(settings.max_multi_node_candidates).min(room)];
    let mut pods: Vec<Pod> = Vec::new();
    let mut ends = vec![0usize];
    if multi.len() >= 2 {
        for &i in multi {
            pods.extend(node(i).pods.iter().cloned());
            ends.push(pods.len());
        }
    }
    let (mut low, mut high, mut best) = (2usize, multi.len(), None);
    while low <= high {
        let mid = (low + high) / 2;
        match try_prefix(&multi[..mid], &pods[..ends[mid]]) {
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
    order.iter().take(settings.max_single_node_candidates).find_map(|&i| try_prefix(&[i], &node(i).pods)).into_iter().collect()
}

/// A selection policy's pick: the best of the offerings (the last
/// argument) for the pods, requesting the total.
pub(crate) type Choose<'a> = dyn Fn(&[Pod], Resources, Vec<u32>) -> Option<u32> + 'a;

/// Where a replacement may come from.
pub(crate) struct Choice<'a> {
    /// Offerings the pool may launch now that its selection policy accepts, ascending.
    pub allowed: &'a [u32],
    /// The same, cheapest first.
    pub by_price: &'a [u32],
    /// Along `by_price`: the most of each resource any offering up to
    /// there holds (empty: not known).
    pub reach: &'a [Resources],
    /// The same, largest first.
    pub largest_first: &'a [u32],
    /// No `reserved` offering is among them, and every on-demand one has a
    /// spot twin among them (its type and zone) at no higher price: a new
    /// node that could be bought on demand could be bought as spot too.
    pub spot_twins: bool,
    /// The pool's selection policy: the best of the offerings (the last
    /// argument) for the pods, requesting the total.
    pub choose: &'a Choose<'a>,
}

/// Can `nodes` (holding `pods`) go? `Some(None)`: their pods fit on the other nodes;
/// `Some(Some(o))`: they fit with one new node bought as `o`, the offering
/// the pool's selection policy ranks best among those that hold the pods and
/// cost less than `nodes` by the required margin; `None`: neither.
/// Spot nodes are replaced by a spot node only as Karpenter's
/// spot-to-spot rule allows.
fn consolidate(
    view: &View,
    pool: &NodePool,
    nodes: &[&Member],
    pods: &[Pod],
    settings: &DisruptionSettings,
    choice: &Choice<'_>,
) -> Option<Option<u32>> {
    let gone: BTreeSet<&str> = nodes.iter().map(|m| m.name()).collect();
    // Replace: only worth simulating when some offering big enough for the
    // pods' total requests is cheap enough.
    let current: f64 = nodes.iter().map(|m| view.price(m.offering)).sum();
    let ceiling = current * (1.0 - settings.min_savings_fraction);
    let need: Resources = pods.iter().map(|p| p.spec.requests).sum();
    // (The list is cheapest first: those under the ceiling are a prefix.
    // Read from the catalog's packed sizes and prices.)
    let fit = &view.catalog.fit;
    let under = &choice.by_price[..choice.by_price.partition_point(|&o| fit[o as usize].price_per_hour < ceiling)];
    // (When none of them holds as much of some resource as the pods need,
    // none is looked at; otherwise the dearest, most often the largest,
    // are looked at first.)
    let reachable = under.len().checked_sub(1).and_then(|last| choice.reach.get(last)).is_none_or(|most| most.covers(&need));
    let possible = reachable && under.iter().rev().any(|&o| fit[o as usize].allocatable.covers(&need));
    let spot = |o: u32| view.catalog.offerings.get(o as usize).is_some_and(|x| x.capacity_type == CapacityType::Spot);
    // Spot nodes with spot-to-spot consolidation off: any replacement the
    // simulation below could find would be refused, because whatever
    // on-demand offering it could be bought as, its spot twin could too
    // (nothing about the pods tells capacity types apart). Only deleting
    // them is left, which a simulation without a new node answers.
    let replacement_refused = !settings.spot_to_spot
        && choice.spot_twins
        && nodes.iter().all(|m| spot(m.offering))
        && pods.iter().all(|p| !p.spec.mentions_label(crate::model::well_known::CAPACITY_TYPE));
    // Delete: the pods fit on the nodes that stay (simulated only when
    // their free CPU and memory could hold them). A simulation that may
    // open one new node answers both questions: it places pods on the nodes
    // that stay exactly as one that may not, and opens a node only for the
    // first pod that fits on none of them.
    if !possible || replacement_refused {
        let delete = view.might_fit_without(pods, &gone) && view.simulate_within(pods, &gone, &[], 0, None).is_some();
        return delete.then_some(None);
    }
    // The new node is simulated among the offerings that could be chosen
    // (allowed, cheap enough) only: it takes every pod it would take among
    // all of them whenever one of those could hold the result.
    let result = view.simulate_within(pods, &gone, std::slice::from_ref(pool), 1, Some(Buy { largest_first: choice.largest_first, by_price: choice.by_price, below: ceiling }))?;
    let claim = match result.claims.as_slice() {
        [] => return Some(None),
        [claim] => claim,
        _ => return None,
    };
    let mut options: Vec<u32> = claim
        .offerings
        .iter()
        .copied()
        .filter(|o| view.price(*o) < ceiling && choice.allowed.binary_search(o).is_ok())
        .collect();
    if nodes.iter().all(|m| spot(m.offering)) && options.iter().any(|&o| spot(o)) {
        if !settings.spot_to_spot {
            return None;
        }
        if let [node] = nodes {
            options.retain(|&o| spot(o));
            let types: BTreeSet<&str> = options.iter().map(|&o| view.catalog.offerings[o as usize].instance_type.as_str()).collect();
            if types.len() < MIN_SPOT_TO_SPOT_TYPES {
                tracing::debug!(node = node.name(), types = types.len(), "spot-to-spot needs {MIN_SPOT_TO_SPOT_TYPES} cheaper spot types");
                return None;
            }
        }
    }
    if options.is_empty() {
        return None;
    }
    (choice.choose)(pods, claim.requests, options).map(Some)
}

/// [`Choice::spot_twins`] of `allowed` (ascending catalog indices).
pub(crate) fn spot_twins(catalog: &crate::model::Catalog, allowed: &[u32]) -> bool {
    let offering = |o: u32| &catalog.offerings[o as usize];
    // Catalogs list each type's spot offering in a zone right after its
    // on-demand one (one spot offering per type and zone a NodePool may
    // see): looked at first, then (for any other catalog) every allowed
    // spot offering, once.
    let mut by_place: Option<rustc_hash::FxHashMap<(&str, &str), u32>> = None;
    allowed.iter().enumerate().all(|(i, &o)| match offering(o).capacity_type {
        CapacityType::Spot => true,
        CapacityType::Reserved => false,
        CapacityType::OnDemand => {
            if let Some(next) = o.checked_add(1).filter(|&n| (n as usize) < catalog.offerings.len())
                && catalog.fit.get(o as usize).is_some_and(|f| f.spot_twin_next)
            {
                // The catalog's twin: allowed or not, there is no other.
                // (The list is ascending: if allowed, it comes next.)
                return allowed.get(i + 1) == Some(&next);
            }
            let places = by_place.get_or_insert_with(|| {
                allowed
                    .iter()
                    .filter(|&&s| offering(s).capacity_type == CapacityType::Spot)
                    .map(|&s| ((offering(s).instance_type.as_str(), offering(s).zone.as_str()), s))
                    .collect()
            });
            let a = offering(o);
            places.get(&(a.instance_type.as_str(), a.zone.as_str())).is_some_and(|&s| crate::model::is_spot_twin(a, offering(s)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Catalog;

    #[test]
    fn spot_twins_hold_when_every_on_demand_offering_can_be_bought_as_spot_too() {
        let catalog = Catalog::bundled();
        let of = |t: &str, c: CapacityType| {
            catalog.offerings.iter().position(|o| o.instance_type == t && o.zone == "us-east-1a" && o.capacity_type == c).unwrap() as u32
        };
        let (od, sp) = (of("m5.large", CapacityType::OnDemand), of("m5.large", CapacityType::Spot));
        let other = of("c5.large", CapacityType::Spot);
        let sorted = |mut v: Vec<u32>| {
            v.sort_unstable();
            v
        };
        assert!(spot_twins(&catalog, &sorted(vec![od, sp, other])));
        assert!(spot_twins(&catalog, &[other]), "spot only");
        assert!(!spot_twins(&catalog, &sorted(vec![od, other])), "m5.large has no spot twin here");
        let reserved = catalog.with_reservations(&[crate::model::CapacityReservation {
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            count: 1,
            hourly_rate: 0.096,
            id: None,
            node_classes: None,
        }]);
        let reserved = reserved.unwrap();
        let r = reserved.reserved_offering("m5.large", "us-east-1a").unwrap();
        assert!(!spot_twins(&reserved, &sorted(vec![od, sp, r])), "a reservation is bought as neither");
        // A catalog in another order: the twin is found all the same.
        let shuffled = Catalog::new(vec![catalog.offerings[sp as usize].clone(), catalog.offerings[other as usize].clone(), catalog.offerings[od as usize].clone()]);
        assert!(spot_twins(&shuffled, &[0, 1, 2]));
        assert!(!spot_twins(&shuffled, &[1, 2]));
    }

    #[test]
    fn a_pod_mentions_a_label_wherever_it_constrains_its_node_by_it() {
        use crate::model::{PodAffinityTerm, PodSpec, PreferredTerm, Requirement, TopologyKey, TopologySpread, well_known::CAPACITY_TYPE};
        let key = CAPACITY_TYPE;
        let plain = PodSpec::requesting(100, 1 << 20);
        assert!(!plain.mentions_label(key));
        let mut selector = plain.clone();
        selector.node_selector.insert(key.into(), "spot".into());
        let mut required = plain.clone();
        required.required_terms = vec![vec![Requirement::is_in(key, &["on-demand"])]];
        let mut preferred = plain.clone();
        preferred.preferred_terms = vec![PreferredTerm { weight: 1, requirements: vec![Requirement::is_in(key, &["on-demand"])] }];
        let mut spread = plain.clone();
        spread.spread = vec![TopologySpread { key: TopologyKey::Label(key.into()), max_skew: 1, hard: true, selector: Default::default() }];
        let mut anti = plain.clone();
        anti.anti_affinity = vec![PodAffinityTerm { key: TopologyKey::Label(key.into()), selector: Default::default() }];
        for (what, spec) in [("selector", selector), ("required", required), ("preferred", preferred), ("spread", spread), ("anti-affinity", anti)] {
            assert!(spec.mentions_label(key), "{what}");
        }
        let mut zone = plain.clone();
        zone.spread = vec![TopologySpread { key: TopologyKey::Zone, max_skew: 1, hard: true, selector: Default::default() }];
        assert!(!zone.mentions_label(key));
    }
}
