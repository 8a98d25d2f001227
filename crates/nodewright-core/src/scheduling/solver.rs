//! The placement algorithm; see the module documentation.

// Keys are indices and pointers: a fast non-keyed hash (the maps are never
// iterated, so their order cannot reach a result).
use rustc_hash::FxHashMap as HashMap;
use std::borrow::Cow;
use std::sync::Arc;

use super::bitset::Bitset;
use super::labels::{Remembered, offering_label, offerings_for_terms, pool_offerings, remembered};
use super::{ExistingNode, PlannedClaim, SchedulingInput, SchedulingResult};
use crate::model::labels::{labels_match, tolerates_all};
use crate::model::{LabelSelector, NodePool, PodSpec, PoolLimits, Requirement, Resources, TopologyKey, well_known};

/// Place `input.pods`; see the module documentation.
pub fn schedule(input: SchedulingInput<'_>) -> SchedulingResult {
    Solver::new(input).run(false, None).unwrap_or_default()
}

/// What a caller that simulates many times over the same nodes already
/// knows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints<'a> {
    /// New NodeClaims consider these offerings only (largest first, as
    /// `Catalog::largest_first` orders them); `None`: every offering.
    pub buy: Option<&'a [u32]>,
    /// New NodeClaims consider only offerings priced below this ($/hour).
    pub below: Option<f64>,
    /// `buy`'s offerings again, cheapest first (ties by index): with
    /// `below`, only those under it are looked at when they are few.
    pub buy_by_price: Option<&'a [u32]>,
    /// The requests already on the first nodes of the input, in order (the
    /// nodes after them are summed here). What a node in `removed` or
    /// unschedulable holds is not read.
    pub node_used: Option<&'a [Resources]>,
    /// Indices of nodes of the input that are not there for this
    /// simulation (they go): no pod is placed on them and their pods count
    /// in no topology domain.
    pub removed: &'a [usize],
    /// What many simulations over the same first nodes of the input share.
    pub cache: Option<&'a NodeCache>,
    /// The zones known (the catalog's, in its order, then those only nodes
    /// name) and the index among them of the zone of each of the first
    /// nodes of the input, as [`zone_index`] finds it: kept by a caller
    /// whose nodes change a few at a time (the kube-scheduler stand-in).
    pub zones: Option<(&'a [String], &'a [Option<usize>])>,
    /// What the caller keeps from solve to solve about its nodes' pods
    /// (requests, pods matching each selector): read for the nodes
    /// `cache` does not cover, and for the requests when `node_used` is not given.
    pub memo: Option<&'a super::memo::NodeMemo>,
}

/// What many simulations over the first `len` nodes of a node list that
/// does not change (a disruption pass's) share, worked out once: each
/// node's zone, and per label selector the pods matching it on each node
/// (remembered as they are asked for: the simulations of a pass ask for
/// the same selectors over and over).
#[derive(Debug)]
pub struct NodeCache {
    len: usize,
    /// The catalog's zones, then those only nodes name; each node's.
    zones: std::sync::OnceLock<(Vec<String>, Vec<Option<usize>>)>,
    cache: std::sync::Mutex<HashMap<LabelSelector, Arc<[u32]>>>,
    memo: Option<Arc<super::memo::NodeMemo>>,
}

impl NodeCache {
    /// A cache for the first `len` nodes of the inputs it is handed.
    pub fn new(len: usize) -> Self {
        NodeCache { len, zones: std::sync::OnceLock::new(), cache: std::sync::Mutex::new(HashMap::default()), memo: None }
    }

    /// As [`NodeCache::new`], counting through `memo` (kept from pass to pass).
    pub fn with_memo(len: usize, memo: Arc<super::memo::NodeMemo>) -> Self {
        NodeCache { memo: Some(memo), ..Self::new(len) }
    }

    /// Zones and node zones for the first `len` of `nodes`.
    fn zones(&self, catalog: &crate::model::Catalog, nodes: &[ExistingNode]) -> &(Vec<String>, Vec<Option<usize>>) {
        self.zones.get_or_init(|| {
            let mut zones = catalog.zones.0.clone();
            let node_zone = nodes[..self.len.min(nodes.len())].iter().map(|n| zone_index(n, &mut zones)).collect();
            (zones, node_zone)
        })
    }

    /// Pods matching `selector` on each of the first `len` of `nodes`.
    fn counts(&self, nodes: &[ExistingNode], selector: &LabelSelector) -> Arc<[u32]> {
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(counts) = cache.get(selector) {
            return counts.clone();
        }
        let nodes = &nodes[..self.len.min(nodes.len())];
        let counts: Arc<[u32]> = match &self.memo {
            Some(memo) => {
                let mut counts = vec![0u32; nodes.len()];
                memo.read(nodes, std::slice::from_ref(selector), |_| true, None, &mut counts);
                counts.into()
            }
            None => {
                // Pods of a workload share one spec: its labels are matched once.
                let mut matches: HashMap<*const PodSpec, bool> = HashMap::default();
                nodes
                    .iter()
                    .map(|node| {
                        super::memo::count_matching(&node.pods, |spec| {
                            *matches.entry(Arc::as_ptr(spec)).or_insert_with(|| selector.matches(&spec.labels))
                        })
                    })
                    .collect()
            }
        };
        cache.insert(selector.clone(), counts.clone());
        counts
    }
}

/// Place `input.pods` as [`schedule`] does, using `hints`.
pub fn schedule_hinted(input: SchedulingInput<'_>, hints: Hints<'_>) -> SchedulingResult {
    Solver::new_with(input, &hints).run(false, None).unwrap_or_default()
}

/// Place `input.pods` as [`schedule`] does, if every pod fits on the nodes
/// plus at most `max_claims` new NodeClaims; `None` (found as soon as it is
/// certain) otherwise. What a consolidation check asks.
pub fn schedule_within(input: SchedulingInput<'_>, max_claims: usize, hints: Hints<'_>) -> Option<SchedulingResult> {
    Solver::new_with(input, &hints).run(false, Some(max_claims))
}

/// Place `input.pods` as the kube-scheduler's queue takes them: highest
/// priority first, then in the order given (the order they were queued),
/// rather than largest first; using `hints`. The pods left unplaced carry
/// no reason (an empty string): the scheduler binds, it does not explain.
pub fn schedule_in_order(input: SchedulingInput<'_>, hints: Hints<'_>) -> SchedulingResult {
    Solver::new_with(input, &hints).run(true, None).unwrap_or_default()
}

/// What a pod may ask of a node and still fit, as far as CPU and memory
/// tell: a test that turns away (soundly) most nodes that cannot take it,
/// read from a short list instead of the nodes themselves.
#[derive(Clone, Copy)]
pub(crate) struct Room {
    /// Takes pods: schedulable, and not among the nodes a simulation removes.
    pub usable: bool,
    /// CPU and memory left (allocatable less `used`).
    pub cpu_millis: u32,
    pub memory_bytes: u64,
}

impl Room {
    pub(crate) fn of(node: &ExistingNode, used: Resources, removed: bool) -> Self {
        Room {
            usable: node.schedulable && !removed,
            cpu_millis: node.allocatable.cpu_millis.saturating_sub(used.cpu_millis),
            memory_bytes: node.allocatable.memory_bytes.saturating_sub(used.memory_bytes),
        }
    }

    /// `false`: a pod requesting `requests` does not fit (`true`: it might;
    /// the node decides).
    fn admits(&self, requests: &Resources) -> bool {
        self.usable && requests.cpu_millis <= self.cpu_millis && requests.memory_bytes <= self.memory_bytes
    }
}

/// Where a pod goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Node(usize),
    Claim(usize),
}

/// A topology key as the solver counts it: zones and hostnames by index,
/// any other label by its index among the custom keys.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Key {
    Zone,
    Hostname,
    Custom(usize),
}

/// A target's domain for a custom key.
enum Domain {
    /// The node does not (will not) carry the label.
    Missing,
    Value(String),
    /// A NodeClaim whose offerings differ in the label: not decided yet.
    Open,
}

/// The constraints of one distinct spec, resolved to selector ids.
struct SpecInfo {
    spec: Arc<PodSpec>,
    /// Selector ids this spec's labels match.
    matches: Vec<usize>,
    /// (selector, key, max skew, hard).
    spread: Vec<(usize, Key, u32, bool)>,
    affinity: Vec<(usize, Key)>,
    anti: Vec<(usize, Key)>,
    /// The custom keys its constraints name.
    custom: Vec<usize>,
    /// Preferred terms, heaviest first.
    preferred: Vec<Vec<Requirement>>,
    /// Relaxation levels: 0 = everything required, max = no preferences.
    max_level: usize,
    /// Identical pods only see NodeClaims fill up (no spread over zones or
    /// a custom key, no affinity).
    monotone: bool,
    /// Identical pods only see nodes fill up, for the same allowed zones
    /// (no affinity, no spread over a custom key).
    nodes_fill_up: bool,
    /// Placing it pins a claim's zone.
    zonal: bool,
}

impl SpecInfo {
    fn soft_spread_active(&self, level: usize) -> bool {
        level <= self.preferred.len()
    }

    /// Node-requirement terms at `level` (ORed; each ANDed).
    fn terms(&self, level: usize) -> Vec<Vec<Requirement>> {
        let mut common: Vec<Requirement> =
            self.spec.node_selector.iter().map(|(k, v)| Requirement::is_in(k, &[v.as_str()])).collect();
        let kept = self.preferred.len().saturating_sub(level);
        for term in &self.preferred[..kept] {
            common.extend(term.iter().cloned());
        }
        if self.spec.required_terms.is_empty() {
            return vec![common];
        }
        self.spec
            .required_terms
            .iter()
            .map(|t| t.iter().cloned().chain(common.iter().cloned()).collect())
            .collect()
    }
}

struct Claim {
    pool: usize,
    pods: Vec<usize>,
    requests: Resources,
    /// Every offering that meets the node requirements of its pods and their
    /// zone, largest first. Some may have become too small for `requests`:
    /// those are dropped when an offering is next filtered, and at the end.
    offerings: Vec<u32>,
    zone: Option<usize>,
    /// Smallest capacity among `offerings`, reserved against the pool's limits.
    reserved: Resources,
    /// The offering of smallest capacity among `offerings` when they were
    /// last filtered: with pool limits, the one `reserved` was taken from.
    /// While it still holds the claim's total, the claim can take a pod
    /// without filtering again (and, with limits, reserves the same).
    reserved_by: Option<u32>,
    /// Bounds of `offerings`, so that a full claim refuses a pod without
    /// looking at them.
    bounds: Bounds,
    /// (spec, level) pairs whose node requirements `offerings` already meet.
    filtered_for: Vec<(usize, usize)>,
}

/// The largest allocatable among a claim's offerings, component by
/// component, and the zones they are in (one bit per zone).
#[derive(Clone, Copy)]
struct Bounds {
    /// A total this does not cover fits none of the offerings.
    ceiling: Resources,
    zones: u64,
}

impl Bounds {
    /// The bounds of `offerings`, and their smallest capacity (by CPU,
    /// memory, GPUs: what limits count) with the offering it is, in one pass.
    fn of(catalog: &crate::model::Catalog, offering_zone: &[usize], offerings: &[u32]) -> (Self, (Resources, Option<u32>)) {
        let mut bounds = Bounds { ceiling: Resources::default(), zones: 0 };
        let mut smallest: (Resources, Option<u32>) = Default::default();
        let key = |c: &Resources| (c.cpu_millis, c.memory_bytes, c.gpus);
        for &o in offerings {
            let offering = &catalog.fit[o as usize];
            bounds.ceiling = bounds.ceiling.max_each(offering.allocatable);
            bounds.zones |= 1u64.checked_shl(offering_zone[o as usize] as u32).unwrap_or(0);
            if smallest.1.is_none() || key(&offering.capacity) < key(&smallest.0) {
                smallest = (offering.capacity, Some(o));
            }
        }
        (bounds, smallest)
    }
}

struct Solver<'a> {
    input: SchedulingInput<'a>,
    /// Pool indices by weight (heaviest first), then name.
    pool_order: Vec<usize>,
    /// Each pool's offerings ([`pool_offerings`]), looked up when first needed.
    pool_base: Vec<std::sync::OnceLock<Bitset>>,
    overhead: Vec<Resources>,
    usage: Vec<Resources>,
    /// Nodes and NodeClaims per pool, for `limits.nodes`.
    pool_nodes: Vec<u64>,
    zones: Cow<'a, [String]>,
    offering_zone: &'a [usize],
    node_zone: Cow<'a, [Option<usize>]>,
    /// Nodes not there for this simulation ([`Hints::removed`]).
    removed: Vec<bool>,
    selectors: Vec<LabelSelector>,
    /// [selector][zone] matching pods.
    zone_counts: Vec<Vec<u32>>,
    /// Matching pods anywhere, per selector.
    total_counts: Vec<u32>,
    /// [target][selector] matching pods.
    /// [node × selector] matching pods, one row of `selectors.len()` per node.
    node_counts: Vec<u32>,
    claim_counts: Vec<Vec<u32>>,
    node_used: Vec<Resources>,
    /// Per node, what a pod may ask of it and still fit, as far as CPU and
    /// memory tell: the scan for a node reads these alone until one has room.
    room: Vec<Room>,
    claims: Vec<Claim>,
    specs: Vec<SpecInfo>,
    spec_of_pod: Vec<usize>,
    compat: HashMap<(usize, usize, usize), Bitset>,
    node_fits_labels: HashMap<(usize, usize, usize), bool>,
    cursors: HashMap<(usize, usize, u64, bool), usize>,
    /// The most NodeClaims the caller accepts, and whether a pod needed one
    /// more: the run is over without looking at the catalog for it.
    max_claims: Option<usize>,
    over: bool,
    /// Offerings new NodeClaims may be bought as, largest first (`None`: any).
    buy: Option<&'a [u32]>,
    below: Option<f64>,
    buy_by_price: Option<&'a [u32]>,
    /// Topology keys other than zone and hostname, as named.
    custom_keys: Vec<String>,
    /// Per custom key: a label of the offering (its value comes with what is bought).
    offering_key: Vec<bool>,
    /// Per custom key: the domains known (values on nodes, NodePools, offerings).
    custom_domains: Vec<Vec<String>>,
    /// (selector, custom key, value) → matching pods in that domain.
    custom_counts: HashMap<(usize, usize, String), u32>,
    /// (selector, custom key) pairs some constraint counts.
    custom_pairs: Vec<(usize, usize)>,
}

impl<'a> Solver<'a> {
    fn new(input: SchedulingInput<'a>) -> Self {
        Self::new_with(input, &Hints::default())
    }

    fn new_with(input: SchedulingInput<'a>, hints: &Hints<'a>) -> Self {
        let known_used = hints.node_used.filter(|u| u.len() <= input.nodes.len());
        let mut removed = vec![false; input.nodes.len()];
        for &n in hints.removed {
            if let Some(r) = removed.get_mut(n) {
                *r = true;
            }
        }
        let catalog = input.catalog;
        let mut pool_order: Vec<usize> = (0..input.pools.len()).collect();
        pool_order.sort_by(|&a, &b| {
            input.pools[b].weight.cmp(&input.pools[a].weight).then(input.pools[a].name.cmp(&input.pools[b].name))
        });
        let pool_base: Vec<std::sync::OnceLock<Bitset>> = input.pools.iter().map(|_| std::sync::OnceLock::new()).collect();
        let overhead = input.pools.iter().map(|p| daemon_overhead(p, input.daemonsets)).collect();
        let mut usage = vec![Resources::default(); input.pools.len()];
        let mut pool_nodes = vec![0u64; input.pools.len()];
        for node in input.nodes {
            if let Some(p) = node.node_pool.as_ref().and_then(|n| input.pools.iter().position(|p| &p.name == n)) {
                usage[p] = usage[p].saturating_add(node.capacity);
                pool_nodes[p] = pool_nodes[p].saturating_add(1);
            }
        }
        let offering_zone = catalog.zones.1.as_slice();
        // Borrowed from what the caller keeps, copied only when a node it
        // does not know of is added.
        let (mut zones, mut node_zone): (Cow<'a, [String]>, Cow<'a, [Option<usize>]>) = match (hints.zones, hints.cache) {
            (Some((zones, node_zone)), _) if zones.starts_with(&catalog.zones.0) => (Cow::Borrowed(zones), Cow::Borrowed(node_zone)),
            (_, Some(cache)) => {
                let (zones, node_zone) = cache.zones(catalog, input.nodes);
                (Cow::Borrowed(zones.as_slice()), Cow::Borrowed(node_zone.as_slice()))
            }
            _ => (Cow::Borrowed(catalog.zones.0.as_slice()), Cow::Borrowed(&[][..])),
        };
        if let Cow::Borrowed(known) = node_zone {
            node_zone = Cow::Borrowed(&known[..known.len().min(input.nodes.len())]);
        }
        for n in &input.nodes[node_zone.len()..] {
            let zone = zone_in(n, &mut zones);
            node_zone.to_mut().push(zone);
        }

        // Distinct specs, and the selectors their constraints use.
        let mut selectors: Vec<LabelSelector> = Vec::new();
        let mut zonal_selector: Vec<bool> = Vec::new();
        let mut custom_keys: Vec<String> = Vec::new();
        let mut key_of = |key: &TopologyKey| match key {
            TopologyKey::Zone => Key::Zone,
            TopologyKey::Hostname => Key::Hostname,
            TopologyKey::Label(name) => Key::Custom(match custom_keys.iter().position(|k| k == name) {
                Some(i) => i,
                None => {
                    custom_keys.push(name.clone());
                    custom_keys.len() - 1
                }
            }),
        };
        let intern = |s: &LabelSelector, key: Key, selectors: &mut Vec<LabelSelector>, zonal: &mut Vec<bool>| {
            let id = match selectors.iter().position(|x| x == s) {
                Some(i) => i,
                None => {
                    selectors.push(s.clone());
                    zonal.push(false);
                    selectors.len() - 1
                }
            };
            zonal[id] |= key == Key::Zone;
            id
        };
        let mut spec_index: HashMap<*const PodSpec, usize> = HashMap::default();
        let mut raw_specs: Vec<Arc<PodSpec>> = Vec::new();
        let spec_of_pod: Vec<usize> = input
            .pods
            .iter()
            .map(|pod| {
                *spec_index.entry(Arc::as_ptr(&pod.spec)).or_insert_with(|| {
                    raw_specs.push(pod.spec.clone());
                    raw_specs.len() - 1
                })
            })
            .collect();
        let mut specs: Vec<SpecInfo> = raw_specs
            .into_iter()
            .map(|spec| {
                let spread = spec
                    .spread
                    .iter()
                    .map(|s| {
                        let key = key_of(&s.key);
                        (intern(&s.selector, key, &mut selectors, &mut zonal_selector), key, s.max_skew.max(1), s.hard)
                    })
                    .collect::<Vec<_>>();
                let mut terms = |terms: &[crate::model::PodAffinityTerm]| {
                    terms
                        .iter()
                        .map(|a| {
                            let key = key_of(&a.key);
                            (intern(&a.selector, key, &mut selectors, &mut zonal_selector), key)
                        })
                        .collect::<Vec<_>>()
                };
                let affinity = terms(&spec.affinity);
                let anti = terms(&spec.anti_affinity);
                let mut custom: Vec<usize> = spread
                    .iter()
                    .map(|s| s.1)
                    .chain(affinity.iter().chain(&anti).map(|a| a.1))
                    .filter_map(|k| if let Key::Custom(i) = k { Some(i) } else { None })
                    .collect();
                custom.sort_unstable();
                custom.dedup();
                let mut preferred = spec.preferred_terms.clone();
                preferred.sort_by_key(|p| std::cmp::Reverse(p.weight));
                let preferred: Vec<Vec<Requirement>> = preferred.into_iter().map(|p| p.requirements).collect();
                let soft = spread.iter().any(|s| !s.3);
                let max_level = preferred.len() + usize::from(soft);
                // A spread over a custom key may let a target in again once
                // other domains fill up. One over zones only changes which
                // zones are allowed, and a search is resumed only for the
                // same zones: a node it passed stays full, or counts
                // more of the spread's pods, or is in a zone left out. (A
                // NodeClaim may still take its zone from how full the zones
                // are: for claims, a zone spread ends the resuming.)
                let nodes_fill_up = affinity.is_empty() && !spread.iter().any(|s| matches!(s.1, Key::Custom(_)));
                let monotone = nodes_fill_up && !spread.iter().any(|s| s.1 == Key::Zone);
                SpecInfo { spec, matches: Vec::new(), spread, affinity, anti, custom, preferred, max_level, monotone, nodes_fill_up, zonal: false }
            })
            .collect();
        for info in &mut specs {
            info.matches = (0..selectors.len()).filter(|&s| selectors[s].matches(&info.spec.labels)).collect();
            info.zonal = info.matches.iter().any(|&s| zonal_selector[s])
                || info.spread.iter().any(|s| s.1 == Key::Zone)
                || info.affinity.iter().chain(&info.anti).any(|a| a.1 == Key::Zone);
        }
        let mut custom_pairs: Vec<(usize, usize)> = specs
            .iter()
            .flat_map(|i| i.spread.iter().map(|s| (s.0, s.1)).chain(i.affinity.iter().chain(&i.anti).copied()))
            .filter_map(|(sel, k)| if let Key::Custom(k) = k { Some((sel, k)) } else { None })
            .collect();
        custom_pairs.sort_unstable();
        custom_pairs.dedup();
        let offering_key: Vec<bool> =
            custom_keys.iter().map(|k| catalog.offerings.first().is_some_and(|o| offering_label(o, k).is_some())).collect();
        let custom_domains: Vec<Vec<String>> = custom_keys
            .iter()
            .zip(&offering_key)
            .map(|(key, &of_offering)| {
                let mut values: Vec<String> = input.nodes.iter().filter_map(|n| n.labels.get(key).cloned()).collect();
                values.extend(input.pools.iter().filter_map(|p| p.labels.get(key).cloned()));
                if of_offering {
                    for (p, pool) in input.pools.iter().enumerate() {
                        if pool.labels.contains_key(key) {
                            continue;
                        }
                        let base = pool_base[p].get_or_init(|| pool_offerings(catalog, pool));
                        values.extend(base.iter().filter_map(|o| offering_label(&catalog.offerings[o as usize], key)));
                    }
                }
                values.sort_unstable();
                values.dedup();
                values
            })
            .collect();
        let mut custom_counts: HashMap<(usize, usize, String), u32> = HashMap::default();
        let n_sel = selectors.len();
        let mut zone_counts = vec![vec![0u32; zones.len()]; n_sel];
        let mut total_counts = vec![0u32; n_sel];
        let columns: Vec<Arc<[u32]>> = match hints.cache {
            Some(cache) if n_sel > 0 => selectors.iter().map(|s| cache.counts(input.nodes, s)).collect(),
            _ => Vec::new(),
        };
        // [node × selector], one row per node: those the cache covers from
        // it, the rest from the memo or counted here. Removed nodes' rows
        // stay 0.
        let mut node_counts = vec![0u32; input.nodes.len() * n_sel];
        let covered = columns.first().map_or(0, |c| c.len().min(input.nodes.len()));
        for (n, row) in node_counts.chunks_exact_mut(n_sel.max(1)).take(covered).enumerate() {
            if !removed[n] {
                for (slot, column) in row.iter_mut().zip(&columns) {
                    *slot = column[n];
                }
            }
        }
        let rest = &input.nodes[covered..];
        let mut memo_used: Option<Vec<Resources>> = None;
        match hints.memo {
            Some(memo) if n_sel > 0 || (known_used.is_none() && covered == 0) => {
                let want_used = known_used.is_none() && covered == 0;
                let mut used = want_used.then(|| Vec::with_capacity(rest.len()));
                memo.read(rest, &selectors, |i| !removed[covered + i], used.as_mut(), &mut node_counts[covered * n_sel..]);
                memo_used = used;
            }
            _ if n_sel > 0 => {
                // Pods of a workload share one spec: its labels are matched
                // once per selector.
                let mut matches: HashMap<(*const PodSpec, usize), bool> = HashMap::default();
                for (i, (node, row)) in rest.iter().zip(node_counts[covered * n_sel..].chunks_exact_mut(n_sel)).enumerate() {
                    if removed[covered + i] {
                        continue;
                    }
                    for (s, slot) in row.iter_mut().enumerate() {
                        *slot = super::memo::count_matching(&node.pods, |spec| {
                            *matches.entry((Arc::as_ptr(spec), s)).or_insert_with(|| selectors[s].matches(&spec.labels))
                        });
                    }
                }
            }
            _ => {}
        }
        if n_sel > 0 {
            for ((n, node), counts) in input.nodes.iter().enumerate().zip(node_counts.chunks_exact(n_sel)) {
                if removed[n] {
                    continue;
                }
                let zone = node_zone[n];
                for (s, &count) in counts.iter().enumerate() {
                    if count == 0 {
                        continue;
                    }
                    total_counts[s] += count;
                    if let Some(z) = zone {
                        zone_counts[s][z] += count;
                    }
                    for &(_, k) in custom_pairs.iter().filter(|p| p.0 == s) {
                        if let Some(v) = node.labels.get(&custom_keys[k]) {
                            *custom_counts.entry((s, k, v.clone())).or_default() += count;
                        }
                    }
                }
            }
        }
        let node_used: Vec<Resources> = match (known_used, memo_used) {
            (Some(known), _) => known.iter().copied().chain(input.nodes[known.len()..].iter().map(ExistingNode::used)).collect(),
            (None, Some(used)) => used,
            (None, None) => input.nodes.iter().map(ExistingNode::used).collect(),
        };
        let room = input.nodes.iter().zip(&node_used).zip(&removed).map(|((node, used), &removed)| Room::of(node, *used, removed)).collect();
        Solver {
            node_used,
            room,
            input,
            pool_order,
            pool_base,
            overhead,
            usage,
            pool_nodes,
            zones,
            offering_zone,
            node_zone,
            removed,
            selectors,
            zone_counts,
            total_counts,
            node_counts,
            claim_counts: Vec::new(),
            claims: Vec::new(),
            specs,
            spec_of_pod,
            compat: HashMap::default(),
            node_fits_labels: HashMap::default(),
            cursors: HashMap::default(),
            max_claims: None,
            over: false,
            buy: hints.buy,
            below: hints.below,
            buy_by_price: hints.buy_by_price,
            custom_keys,
            offering_key,
            custom_domains,
            custom_counts,
            custom_pairs,
        }
    }

    /// Place every pod. With `max_claims`, give up (`None`) at the first
    /// pod that fits nowhere or that needs more than that many NodeClaims.
    fn run(mut self, queued: bool, max_claims: Option<usize>) -> Option<SchedulingResult> {
        self.max_claims = max_claims;
        let pods = self.input.pods;
        // Higher priority first; then, unless the pods are placed in queue
        // order, larger first and pods of a spec together; ties end on the
        // index. Each pod's key is read once, and the order is total, so
        // an unstable sort of the keys gives the stable sort's order.
        // The key packed in two integers, compared whole: priority, CPU
        // and memory, each inverted (larger first); then spec and index.
        let mut keyed: Vec<(u128, u128)> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let spec = &pod.spec;
                let priority = u128::from(!((spec.priority as u32) ^ 0x8000_0000)) << 96;
                if queued {
                    (priority, i as u128)
                } else {
                    let size = u128::from(!spec.requests.cpu_millis) << 64 | u128::from(!spec.requests.memory_bytes);
                    (priority | size, (self.spec_of_pod[i] as u128) << 64 | i as u128)
                }
            })
            .collect();
        // (Pods handed over in queue order, of one priority, are in order already.)
        if !keyed.is_sorted() {
            keyed.sort_unstable();
        }
        let mut result = SchedulingResult::default();
        for pod in keyed.into_iter().map(|k| (k.1 & u128::from(u64::MAX)) as usize) {
            let spec = self.spec_of_pod[pod];
            let mut placed = None;
            for level in 0..=self.specs[spec].max_level {
                let target = self.place(pod, spec, level);
                if self.over {
                    return None;
                }
                if let Some(target) = target {
                    placed = Some(target);
                    if level > 0 {
                        result.relaxed.push((pod, level));
                    }
                    break;
                }
            }
            match placed {
                Some(Target::Node(n)) => result.bindings.push((pod, n)),
                Some(Target::Claim(_)) => {}
                None if max_claims.is_some() => return None,
                None => {
                    let reason = if queued { String::new() } else { self.explain(spec) };
                    result.unschedulable.push((pod, reason));
                }
            }
        }
        result.claims = self
            .claims
            .into_iter()
            .map(|c| {
                // Ascending, as the result promises: through a set, not a sort.
                let catalog = self.input.catalog;
                let mut set = Bitset::empty(catalog.offerings.len());
                for &o in &c.offerings {
                    if catalog.fit[o as usize].allocatable.covers(&c.requests) {
                        set.insert(o);
                    }
                }
                let offerings = set.iter().collect();
                PlannedClaim { node_pool: self.input.pools[c.pool].name.clone(), pods: c.pods, requests: c.requests, offerings }
            })
            .collect();
        Some(result)
    }

    /// Offerings of pool `pool` a pod of spec `spec` allows at `level`.
    fn compat(&mut self, pool: usize, spec: usize, level: usize) -> &Bitset {
        let key = (pool, spec, level);
        if !self.compat.contains_key(&key) {
            let terms = self.specs[spec].terms(level);
            let (catalog, node_pool) = (self.input.catalog, &self.input.pools[pool]);
            let base = self.pool_base[pool].get_or_init(|| pool_offerings(catalog, node_pool));
            let set = offerings_for_terms(catalog, node_pool, base, &terms);
            self.compat.insert(key, set);
        }
        &self.compat[&key]
    }

    /// `compat`, computed if needed, then borrowed with the rest of `self`
    /// (no copy of the set).
    fn with_compat<R>(&mut self, pool: usize, spec: usize, level: usize, f: impl FnOnce(&Self, &Bitset) -> R) -> R {
        self.compat(pool, spec, level);
        f(self, &self.compat[&(pool, spec, level)])
    }

    /// Every zone known, as a bit mask (all ones without any, or past 64).
    fn known_zones(&self) -> u64 {
        // Without known zones (nodes with no zone label) there is nothing to restrict.
        if self.zones.is_empty() || self.zones.len() >= 64 { u64::MAX } else { (1u64 << self.zones.len()) - 1 }
    }

    /// Zones a pod of `spec` may go to now, as a bit mask (all ones: any).
    fn allowed_zones(&self, spec: usize, level: usize) -> u64 {
        let info = &self.specs[spec];
        let all = self.known_zones();
        let mut mask = all;
        for &(sel, key, max_skew, hard) in &info.spread {
            if key != Key::Zone || (!hard && !info.soft_spread_active(level)) {
                continue;
            }
            let counts = &self.zone_counts[sel];
            let min = counts.iter().copied().min().unwrap_or(0);
            for (z, &count) in counts.iter().enumerate() {
                if count + 1 > min + max_skew {
                    mask &= !(1 << z);
                }
            }
        }
        for &(sel, key) in &info.affinity {
            if key != Key::Zone {
                continue;
            }
            if self.total_counts[sel] == 0 && info.matches.contains(&sel) {
                continue; // The first pod of a self-affine group goes anywhere.
            }
            let with: u64 = self.zone_counts[sel].iter().enumerate().filter(|(_, c)| **c > 0).fold(0, |m, (z, _)| m | 1 << z);
            mask &= with;
        }
        for &(sel, key) in &info.anti {
            if key == Key::Zone {
                for (z, &count) in self.zone_counts[sel].iter().enumerate() {
                    if count > 0 {
                        mask &= !(1 << z);
                    }
                }
            }
        }
        mask
    }

    /// Does the hostname-level topology of target `counts` allow the pod?
    fn host_allows(&self, spec: usize, level: usize, counts: &[u32]) -> bool {
        let info = &self.specs[spec];
        info.spread.iter().all(|&(sel, key, max_skew, hard)| {
            key != Key::Hostname || (!hard && !info.soft_spread_active(level)) || counts[sel] < max_skew
        }) && info.anti.iter().all(|&(sel, key)| key != Key::Hostname || counts[sel] == 0)
            && info.affinity.iter().all(|&(sel, key)| {
                key != Key::Hostname
                    || counts[sel] > 0
                    || (self.total_counts[sel] == 0 && info.matches.contains(&sel))
            })
    }

    /// Pods matching `sel` in domain `value` of custom key `k`.
    fn custom_count(&self, sel: usize, k: usize, value: &str) -> u32 {
        // A lookup with a borrowed value would need the key's parts apart;
        // the maps are small (domains × selectors).
        self.custom_counts.get(&(sel, k, value.to_string())).copied().unwrap_or(0)
    }

    /// May a pod of `spec` go to a target in domain `value` of custom key
    /// `k` (`None`: the target does not carry the label)? As the
    /// kube-scheduler filters: a hard spread needs the label and a skew
    /// within bounds over the known domains, affinity a matching pod in the
    /// domain (or none anywhere for the first of a self-affine group),
    /// anti-affinity none.
    fn custom_allows(&self, spec: usize, level: usize, k: usize, value: Option<&str>) -> bool {
        let info = &self.specs[spec];
        info.spread.iter().all(|&(sel, key, max_skew, hard)| {
            key != Key::Custom(k)
                || (!hard && !info.soft_spread_active(level))
                || value.is_some_and(|v| {
                    let min = self.custom_domains[k].iter().map(|d| self.custom_count(sel, k, d)).min().unwrap_or(0);
                    self.custom_count(sel, k, v) < min.saturating_add(max_skew)
                })
        }) && info.anti.iter().all(|&(sel, key)| key != Key::Custom(k) || value.is_none_or(|v| self.custom_count(sel, k, v) == 0))
            && info.affinity.iter().all(|&(sel, key)| {
                key != Key::Custom(k)
                    || (self.total_counts[sel] == 0 && info.matches.contains(&sel))
                    || value.is_some_and(|v| self.custom_count(sel, k, v) > 0)
            })
    }

    /// The domain of custom key `k` a NodeClaim of `pool` bought as one of
    /// `offerings` is in.
    fn claim_domain(&self, pool: usize, offerings: &[u32], k: usize) -> Domain {
        let key = &self.custom_keys[k];
        if let Some(v) = self.input.pools[pool].labels.get(key) {
            return Domain::Value(v.clone());
        }
        if !self.offering_key[k] {
            return Domain::Missing;
        }
        let catalog = self.input.catalog;
        let mut values = offerings.iter().filter_map(|&o| offering_label(&catalog.offerings[o as usize], key));
        match values.next() {
            None => Domain::Missing,
            Some(first) if values.all(|v| v == first) => Domain::Value(first),
            Some(_) => Domain::Open,
        }
    }

    /// Keep, of `offerings` (a NodeClaim's of `pool`), those whose domains
    /// of the custom keys `spec` names allow its pod, and for a key the
    /// offering decides, those of one domain: the emptiest for the spec's
    /// spreads, then the first offered. `false` if none is left.
    fn pin_custom(&self, spec: usize, level: usize, pool: usize, offerings: &mut Vec<u32>) -> bool {
        let catalog = self.input.catalog;
        for &k in &self.specs[spec].custom {
            match self.claim_domain(pool, offerings, k) {
                Domain::Missing => {
                    if !self.custom_allows(spec, level, k, None) {
                        return false;
                    }
                }
                Domain::Value(v) => {
                    if !self.custom_allows(spec, level, k, Some(&v)) {
                        return false;
                    }
                }
                Domain::Open => {
                    let key = &self.custom_keys[k];
                    let value = |o: u32| offering_label(&catalog.offerings[o as usize], key);
                    let spreads: Vec<usize> = self.specs[spec].spread.iter().filter(|s| s.1 == Key::Custom(k)).map(|s| s.0).collect();
                    let mut best: Option<(u32, String)> = None;
                    for &o in offerings.iter() {
                        let Some(v) = value(o) else { continue };
                        if best.as_ref().is_some_and(|b| b.1 == v) || !self.custom_allows(spec, level, k, Some(&v)) {
                            continue;
                        }
                        let load = spreads.iter().map(|&sel| self.custom_count(sel, k, &v)).sum::<u32>();
                        if best.as_ref().is_none_or(|b| load < b.0) {
                            best = Some((load, v));
                        }
                    }
                    let Some((_, chosen)) = best else { return false };
                    offerings.retain(|&o| value(o).as_deref() == Some(chosen.as_str()));
                }
            }
        }
        !offerings.is_empty()
    }

    fn place(&mut self, pod: usize, spec: usize, level: usize) -> Option<Target> {
        let zones = self.allowed_zones(spec, level);
        if zones == 0 {
            return None;
        }
        let requests = self.specs[spec].spec.requests;

        // 1. Existing and in-flight nodes, 2. NodeClaims opened so far.
        for claims in [false, true] {
            if let Some(target) = self.first_fit(spec, level, zones, requests, claims) {
                self.commit(pod, spec, target);
                return Some(target);
            }
        }

        // 3. A new NodeClaim, NodePools by weight. When the caller accepts
        // no more, knowing that one would open is enough.
        let at_most = self.max_claims.is_some_and(|max| self.claims.len() >= max);
        let counts = vec![0u32; self.selectors.len()];
        if !self.host_allows(spec, level, &counts) {
            return None;
        }
        for &pool in &self.pool_order.clone() {
            if !tolerates_all(&self.specs[spec].spec.tolerations, &self.input.pools[pool].taints) {
                continue;
            }
            let total = self.overhead[pool].saturating_add(requests);
            let zone_order = self.zone_preference(spec, zones);
            let catalog = self.input.catalog;
            let limits = self.input.pools[pool].limits;
            let usage = self.usage[pool];
            let nodes = self.pool_nodes[pool].saturating_add(1);
            let offering_zone = self.offering_zone;
            let buy = self.buy;
            let below = self.below;
            // Offerings under the price bound, when they are fewer than the
            // list: looked at alone, then put largest first.
            // Largest first is by CPU first: the offerings with CPU enough
            // for the total are a prefix of the list, and only they can fit.
            let list = buy.unwrap_or(&catalog.largest_first);
            let list = &list[..list.partition_point(|&o| catalog.fit[o as usize].allocatable.cpu_millis >= total.cpu_millis)];
            let cheap = match (self.buy_by_price, below) {
                (Some(by_price), Some(bound)) => {
                    let under = &by_price[..by_price.partition_point(|&o| catalog.fit[o as usize].price_per_hour < bound)];
                    (under.len() < list.len()).then_some(under)
                }
                _ => None,
            };
            // Knowing a claim would open takes its whole list when the pool
            // keeps minValues (the list must have them).
            let at_most = at_most && self.input.pools[pool].min_values.is_empty();
            // A pod that puts its NodeClaim in one zone: when nothing but
            // the zone's offerings is asked of the list (no custom domain
            // pins it, no minValues counts it), only the first zone in
            // preference order with an offering that fits is collected.
            let one_zone = self.specs[spec].zonal
                && self.specs[spec].custom.is_empty()
                && self.input.pools[pool].min_values.is_empty()
                && !at_most;
            // Tests every offering would pass, left out.
            let limited = limits != PoolLimits::default();
            let known = self.known_zones();
            let any_zone = zones & known == known;
            // Provisioning's lists (every offering the pool and the pod
            // allow, no price bound, no limits) are the same for every pod
            // of a shape, pass after pass: remembered by what decides them.
            let key = (buy.is_none() && below.is_none() && !limited && !at_most).then(|| {
                let terms = self.specs[spec].terms(level);
                let zone_key: (&[usize], u64) = if one_zone { (&zone_order, 0) } else { (&[], if any_zone { u64::MAX } else { zones }) };
                super::labels::pool_key(catalog, &self.input.pools[pool], (terms, zone_key, total))
            });
            // Largest first: the order a claim keeps its offerings in.
            let compute = |solver: &mut Self| solver.with_compat(pool, spec, level, |_, compat| {
                let collect = |zone: Option<usize>| -> Vec<u32> {
                    let fits = |&o: &u32| {
                        let offering = &catalog.fit[o as usize];
                        offering.allocatable.covers(&total)
                            && compat.contains(o)
                            && below.is_none_or(|b| offering.price_per_hour < b)
                            && match zone {
                                Some(z) => offering_zone[o as usize] == z,
                                None => any_zone || zones & (1 << offering_zone[o as usize]) != 0,
                            }
                            && (!limited || within_limits(usage.saturating_add(offering.capacity), nodes, limits))
                    };
                    if let Some(under) = cheap {
                        // Put largest first through a set of their ranks
                        // (each offering has its own): linear, not a sort.
                        let mut ranks = Bitset::empty(catalog.largest_first.len());
                        for o in under.iter().copied().filter(fits) {
                            let rank = catalog.fit[o as usize].largest_rank;
                            if (rank as usize) < catalog.largest_first.len() {
                                ranks.insert(rank);
                            }
                        }
                        let mut all: Vec<u32> = ranks.iter().filter_map(|r| catalog.largest_first.get(r as usize).copied()).collect();
                        if at_most {
                            all.truncate(1);
                        }
                        return all;
                    }
                    let mut all = list.iter().copied().filter(fits);
                    if at_most { all.next().into_iter().collect() } else { all.collect() }
                };
                if one_zone {
                    zone_order.iter().map(|&z| (collect(Some(z)), Some(z))).find(|(f, _)| !f.is_empty()).unwrap_or_default()
                } else {
                    (collect(None), None)
                }
            });
            // (With the bounds of the list, for when it is the claim's.)
            type NewClaim = (Vec<u32>, Option<usize>, (Bounds, (Resources, Option<u32>)));
            let (fitting, chosen, bounds) = match key {
                Some(key) => {
                    static NEW_CLAIM: Remembered<Arc<NewClaim>> = std::sync::Mutex::new(None);
                    let remembered = remembered(&NEW_CLAIM, key, 512, || {
                        let (fitting, chosen) = compute(self);
                        let bounds = Bounds::of(catalog, offering_zone, &fitting);
                        Arc::new((fitting, chosen, bounds))
                    });
                    (remembered.0.clone(), remembered.1, Some(remembered.2))
                }
                None => {
                    let (fitting, chosen) = compute(self);
                    (fitting, chosen, None)
                }
            };
            if at_most && !fitting.is_empty() {
                self.over = true;
                return None;
            }
            let mut fitting = fitting;
            if !self.specs[spec].custom.is_empty() && !self.pin_custom(spec, level, pool, &mut fitting) {
                continue;
            }
            if fitting.is_empty() || !self.keeps_min_values(pool, &fitting) {
                continue;
            }
            if self.max_claims.is_some_and(|max| self.claims.len() >= max) {
                self.over = true;
                return None;
            }
            let (offerings, zone) = if chosen.is_some() {
                (fitting, chosen)
            } else if self.specs[spec].zonal {
                let zone = zone_order
                    .into_iter()
                    .find(|&z| fitting.iter().any(|&o| self.offering_zone[o as usize] == z))
                    .expect("a fitting offering has an allowed zone");
                (fitting.into_iter().filter(|&o| self.offering_zone[o as usize] == zone).collect(), Some(zone))
            } else {
                (fitting, None)
            };
            // The list is the claim's as remembered unless a custom domain
            // pinned it or one zone was taken from it here.
            let bounds = bounds.filter(|_| self.specs[spec].custom.is_empty() && (chosen.is_some() || !self.specs[spec].zonal));
            let (bounds, (reserved, reserved_by)) = bounds.unwrap_or_else(|| Bounds::of(catalog, self.offering_zone, &offerings));
            self.usage[pool] = self.usage[pool].saturating_add(reserved);
            self.pool_nodes[pool] = nodes;
            let filtered_for = vec![(spec, level)];
            let requests = self.overhead[pool];
            self.claims.push(Claim { pool, pods: Vec::new(), requests, offerings, zone, reserved, reserved_by, bounds, filtered_for });
            self.claim_counts.push(vec![0; self.selectors.len()]);
            let c = self.claims.len() - 1;
            self.commit(pod, spec, Target::Claim(c));
            return Some(Target::Claim(c));
        }
        None
    }

    /// Do `offerings` keep the `minValues` of `pool`?
    fn keeps_min_values(&self, pool: usize, offerings: &[u32]) -> bool {
        let min_values = &self.input.pools[pool].min_values;
        min_values.is_empty() || super::labels::min_values_short(self.input.catalog, min_values, offerings).is_none()
    }

    /// The first node (or, with `claims`, NodeClaim) that accepts a pod of
    /// `spec`. For specs whose targets only fill up, the search resumes where
    /// the previous pod of the spec stopped.
    fn first_fit(&mut self, spec: usize, level: usize, zones: u64, requests: Resources, claims: bool) -> Option<Target> {
        let len = if claims { self.claims.len() } else { self.input.nodes.len() };
        let key = (spec, level, zones, claims);
        let monotone = if claims { self.specs[spec].monotone } else { self.specs[spec].nodes_fill_up };
        #[cfg(test)]
        let monotone = monotone && !tests::FROM_THE_START.with(std::cell::Cell::get);
        let start = if monotone { self.cursors.get(&key).copied().unwrap_or(0) } else { 0 };
        for i in start..len {
            let accepts = if claims {
                self.claim_accepts(i, spec, level, zones, requests)
            } else {
                self.node_accepts(i, spec, level, zones, requests)
            };
            if accepts {
                if monotone {
                    self.cursors.insert(key, i);
                }
                return Some(if claims { Target::Claim(i) } else { Target::Node(i) });
            }
        }
        if monotone {
            self.cursors.insert(key, len);
        }
        None
    }

    /// Allowed zones, emptiest first for the spec's zone spreads.
    fn zone_preference(&self, spec: usize, zones: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.zones.len()).filter(|z| zones & (1 << z) != 0).collect();
        let spreads: Vec<usize> =
            self.specs[spec].spread.iter().filter(|s| s.1 == Key::Zone).map(|s| s.0).collect();
        order.sort_by_key(|&z| (spreads.iter().map(|&s| self.zone_counts[s][z]).sum::<u32>(), z));
        order
    }

    fn node_accepts(&mut self, n: usize, spec: usize, level: usize, zones: u64, requests: Resources) -> bool {
        // (Not usable: unschedulable or removed.)
        if !self.room[n].admits(&requests) {
            return false;
        }
        let node = &self.input.nodes[n];
        if let Some(z) = self.node_zone[n]
            && zones & (1 << z) == 0
        {
            return false;
        }
        if !node.allocatable.covers(&self.node_used[n].saturating_add(requests)) {
            return false;
        }
        let n_sel = self.selectors.len();
        if !self.host_allows(spec, level, &self.node_counts[n * n_sel..(n + 1) * n_sel]) {
            return false;
        }
        // Custom-key domains change as pods are placed: checked every time.
        let custom = &self.specs[spec].custom;
        if !custom.iter().all(|&k| self.custom_allows(spec, level, k, node.labels.get(&self.custom_keys[k]).map(String::as_str))) {
            return false;
        }
        let key = (n, spec, level);
        if let Some(&ok) = self.node_fits_labels.get(&key) {
            return ok;
        }
        let info = &self.specs[spec];
        let ok = tolerates_all(&info.spec.tolerations, &node.taints)
            && info.terms(level).iter().any(|term| labels_match(term, &node.labels));
        self.node_fits_labels.insert(key, ok);
        ok
    }

    fn claim_accepts(&mut self, c: usize, spec: usize, level: usize, zones: u64, requests: Resources) -> bool {
        let pool = self.claims[c].pool;
        if let Some(z) = self.claims[c].zone
            && zones & (1 << z) == 0
        {
            return false;
        }
        if !self.host_allows(spec, level, &self.claim_counts[c]) {
            return false;
        }
        if !tolerates_all(&self.specs[spec].spec.tolerations, &self.input.pools[pool].taints) {
            return false;
        }
        let total = self.claims[c].requests.saturating_add(requests);
        let catalog = self.input.catalog;
        let limits = self.input.pools[pool].limits;
        // Most pods are refused because the claim is full (its largest
        // offering is too small), or accepted because an offering holds the
        // new total and nothing else about the claim changes: its offerings
        // already meet this pod's requirements and zones, and what it
        // reserves stays the same (no limits, or the offering it reserves
        // for still holds the total). The offerings too small now are left
        // in place (see `Claim::offerings`).
        let claim = &self.claims[c];
        if !claim.bounds.ceiling.covers(&total) {
            return false;
        }
        let zonal = self.specs[spec].zonal && claim.zone.is_none();
        let holds = |o: u32| catalog.fit[o as usize].allocatable.covers(&total);
        // A claim keeps its offerings largest first (by CPU first): those
        // with CPU enough for the total are a prefix.
        let enough = claim.offerings.partition_point(|&o| catalog.fit[o as usize].allocatable.cpu_millis >= total.cpu_millis);
        let custom = !self.specs[spec].custom.is_empty();
        if !zonal && !custom && claim.bounds.zones & !zones == 0 && claim.filtered_for.contains(&(spec, level)) {
            if claim.reserved_by.is_some_and(holds) && self.input.pools[pool].min_values.is_empty() {
                return true;
            }
            if limits == PoolLimits::default() && self.input.pools[pool].min_values.is_empty() {
                return claim.offerings[..enough].iter().any(|&o| holds(o));
            }
        }
        let mut kept: Vec<u32> = self.with_compat(pool, spec, level, |solver, compat| {
            let offering_zone = solver.offering_zone;
            solver.claims[c].offerings[..enough]
                .iter()
                .copied()
                .filter(|&o| {
                    compat.contains(o)
                        && zones & (1 << offering_zone[o as usize]) != 0
                        && catalog.fit[o as usize].allocatable.covers(&total)
                })
                .collect()
        });
        if custom && !self.pin_custom(spec, level, pool, &mut kept) {
            return false;
        }
        if kept.is_empty() {
            return false;
        }
        let mut zone = self.claims[c].zone;
        if zonal {
            let chosen = self
                .zone_preference(spec, zones)
                .into_iter()
                .find(|&z| kept.iter().any(|&o| self.offering_zone[o as usize] == z))
                .expect("kept offerings have allowed zones");
            kept.retain(|&o| self.offering_zone[o as usize] == chosen);
            zone = Some(chosen);
        }
        if !self.keeps_min_values(pool, &kept) {
            return false;
        }
        let (bounds, (smallest, reserved_by)) = Bounds::of(catalog, self.offering_zone, &kept);
        let reserved = if limits == PoolLimits::default() { self.claims[c].reserved } else { smallest };
        let usage = self.usage[pool].saturating_sub(self.claims[c].reserved).saturating_add(reserved);
        if !within_limits(usage, self.pool_nodes[pool], limits) {
            return false;
        }
        self.usage[pool] = usage;
        let claim = &mut self.claims[c];
        claim.bounds = bounds;
        if !claim.filtered_for.contains(&(spec, level)) {
            claim.filtered_for.push((spec, level));
        }
        claim.offerings = kept;
        claim.zone = zone;
        claim.reserved = reserved;
        claim.reserved_by = reserved_by;
        true
    }

    /// Record pod `pod` on `target`.
    fn commit(&mut self, pod: usize, spec: usize, target: Target) {
        let requests = self.specs[spec].spec.requests;
        // The target's domain of every custom key counted for a selector the pod matches.
        let mut custom: Vec<(usize, usize, String)> = Vec::new();
        for &(sel, k) in &self.custom_pairs {
            if !self.specs[spec].matches.contains(&sel) {
                continue;
            }
            let value = match target {
                Target::Node(n) => self.input.nodes[n].labels.get(&self.custom_keys[k]).cloned(),
                Target::Claim(c) => match self.claim_domain(self.claims[c].pool, &self.claims[c].offerings, k) {
                    Domain::Value(v) => Some(v),
                    Domain::Missing | Domain::Open => None,
                },
            };
            if let Some(v) = value {
                custom.push((sel, k, v));
            }
        }
        for key in custom {
            *self.custom_counts.entry(key).or_default() += 1;
        }
        let (counts, zone) = match target {
            Target::Node(n) => {
                self.node_used[n] = self.node_used[n].saturating_add(requests);
                self.room[n] = Room::of(&self.input.nodes[n], self.node_used[n], self.removed[n]);
                let n_sel = self.selectors.len();
                (&mut self.node_counts[n * n_sel..(n + 1) * n_sel], self.node_zone[n])
            }
            Target::Claim(c) => {
                let claim = &mut self.claims[c];
                claim.pods.push(pod);
                claim.requests = claim.requests.saturating_add(requests);
                (self.claim_counts[c].as_mut_slice(), claim.zone)
            }
        };
        for &sel in &self.specs[spec].matches {
            counts[sel] += 1;
            self.total_counts[sel] += 1;
            if let Some(z) = zone {
                self.zone_counts[sel][z] += 1;
            }
        }
    }

    /// Why a pod of `spec` fits nowhere, NodePool by NodePool.
    fn explain(&mut self, spec: usize) -> String {
        let level = self.specs[spec].max_level;
        let requests = self.specs[spec].spec.requests;
        let mut reasons = Vec::new();
        if self.allowed_zones(spec, level) == 0 {
            reasons.push("its topology constraints leave no zone it may go to".to_string());
        }
        if self.input.pools.is_empty() {
            reasons.push("there is no NodePool".into());
        }
        for &pool in &self.pool_order.clone() {
            let p = &self.input.pools[pool];
            let name = p.name.clone();
            if let Some(taint) = p.taints.iter().find(|t| !tolerates_all(&self.specs[spec].spec.tolerations, std::slice::from_ref(t))) {
                reasons.push(format!(
                    "NodePool {name} has taint {}={}:{:?}, which the pod does not tolerate",
                    taint.key, taint.value, taint.effect
                ));
                continue;
            }
            let total = self.overhead[pool].saturating_add(requests);
            let limits = p.limits;
            let usage = self.usage[pool];
            let nodes = self.pool_nodes[pool].saturating_add(1);
            let terms = self.specs[spec].terms(level);
            let compat = self.compat(pool, spec, level).clone();
            let catalog = self.input.catalog;
            let constraint = describe_terms(&terms);
            let pool_name = match p.requirements.is_empty() {
                true => name.clone(),
                false => format!("{name} ({})", describe_terms(std::slice::from_ref(&p.requirements))),
            };
            if compat.is_empty() {
                reasons.push(format!("no offering in NodePool {pool_name} satisfies {constraint}"));
                continue;
            }
            let fitting: Vec<u32> = compat.iter().filter(|&o| catalog.offerings[o as usize].allocatable.covers(&total)).collect();
            if fitting.is_empty() {
                reasons.push(format!("no offering in NodePool {pool_name} has {}{}", total.describe(), with(&constraint)));
                continue;
            }
            if !fitting.iter().any(|&o| within_limits(usage.saturating_add(catalog.offerings[o as usize].capacity), nodes, limits)) {
                reasons.push(format!("NodePool {name} would exceed its limits ({})", describe_limits(&limits)));
                continue;
            }
            if let Some(short) = super::labels::min_values_short(catalog, &p.min_values, &fitting) {
                reasons.push(format!("NodePool {name} requires {short} (minValues) among the offerings that hold the pod"));
                continue;
            }
            reasons.push(format!("NodePool {name}: its topology constraints (spread, affinity, anti-affinity) cannot be met"));
        }
        reasons.join("; ")
    }
}

/// The index of `node`'s zone among `zones` (added if new).
pub fn zone_index(node: &ExistingNode, zones: &mut Vec<String>) -> Option<usize> {
    let mut list = Cow::Owned(std::mem::take(zones));
    let zone = zone_in(node, &mut list);
    *zones = list.into_owned();
    zone
}

/// [`zone_index`] over a list that stays borrowed unless a zone is added.
fn zone_in(node: &ExistingNode, zones: &mut Cow<'_, [String]>) -> Option<usize> {
    let zone = node.labels.get(well_known::ZONE)?;
    Some(match zones.iter().position(|z| z == zone) {
        Some(i) => i,
        None => {
            let zones = zones.to_mut();
            zones.push(zone.to_string());
            zones.len() - 1
        }
    })
}

/// Is a pool using `usage` with `nodes` nodes within `limits`?
fn within_limits(usage: Resources, nodes: u64, limits: PoolLimits) -> bool {
    limits.cpu_millis.is_none_or(|l| u64::from(usage.cpu_millis) <= l)
        && limits.memory_bytes.is_none_or(|l| usage.memory_bytes <= l)
        && limits.gpus.is_none_or(|l| u64::from(usage.gpus) <= l)
        && limits.pods.is_none_or(|l| u64::from(usage.pods) <= l)
        && limits.ephemeral_bytes.is_none_or(|l| usage.ephemeral_bytes <= l)
        && limits.nodes.is_none_or(|l| nodes <= l)
}

/// Requests of the daemonsets that would run on a node of `pool`.
fn daemon_overhead(pool: &NodePool, daemonsets: &[PodSpec]) -> Resources {
    daemonsets.iter().filter(|d| d.may_run_in(&pool.labels, &pool.taints)).map(|d| d.requests).sum()
}

fn describe_terms(terms: &[Vec<Requirement>]) -> String {
    let described: Vec<String> = terms
        .iter()
        .map(|t| t.iter().map(Requirement::describe).collect::<Vec<_>>().join(" and "))
        .filter(|t| !t.is_empty())
        .collect();
    described.join(" or ")
}

fn with(constraint: &str) -> String {
    if constraint.is_empty() { String::new() } else { format!(" and {constraint}") }
}


fn describe_limits(l: &PoolLimits) -> String {
    let mut parts = Vec::new();
    if let Some(c) = l.cpu_millis {
        parts.push(format!("cpu {}", c as f64 / 1000.0));
    }
    if let Some(m) = l.memory_bytes {
        parts.push(format!("memory {} GiB", m >> 30));
    }
    if let Some(g) = l.gpus {
        parts.push(format!("gpus {g}"));
    }
    if let Some(p) = l.pods {
        parts.push(format!("pods {p}"));
    }
    if let Some(e) = l.ephemeral_bytes {
        parts.push(format!("ephemeral-storage {} GiB", e >> 30));
    }
    if let Some(n) = l.nodes {
        parts.push(format!("nodes {n}"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::model::{Catalog, Pod, PodAffinityTerm, TopologySpread};

    thread_local! {
        /// Every search starts from the first target: what resuming must answer.
        pub(super) static FROM_THE_START: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// The specs pods are drawn from: zone spreads hard and soft, with and
    /// without a hostname anti-affinity, and one without constraints.
    fn specs() -> Vec<Arc<PodSpec>> {
        let gib = 1u64 << 30;
        let web = LabelSelector::label("app", "web");
        let api = LabelSelector::label("app", "api");
        let labelled = |app: &str, cpu: u32, memory: u64| PodSpec {
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            ..PodSpec::requesting(cpu, memory)
        };
        let spread = |key, max_skew, hard, selector: &LabelSelector| TopologySpread { key, max_skew, hard, selector: selector.clone() };
        vec![
            Arc::new(PodSpec { spread: vec![spread(TopologyKey::Zone, 1, true, &web)], ..labelled("web", 500, gib) }),
            Arc::new(PodSpec { spread: vec![spread(TopologyKey::Zone, 2, true, &web)], ..labelled("web", 1000, gib / 2) }),
            Arc::new(PodSpec {
                spread: vec![spread(TopologyKey::Zone, 1, false, &api)],
                anti_affinity: vec![PodAffinityTerm { key: TopologyKey::Hostname, selector: api.clone() }],
                ..labelled("api", 250, 2 * gib)
            }),
            Arc::new(PodSpec { spread: vec![spread(TopologyKey::Zone, 1, true, &api), spread(TopologyKey::Hostname, 2, true, &api)], ..labelled("api", 750, gib) }),
            Arc::new(PodSpec::requesting(1500, 3 * gib)),
        ]
    }

    /// A node drawn: its zone (of three, or none), CPU in half cores,
    /// memory in GiB, the specs of the pods it runs, schedulable or not.
    type NodeDraw = (Option<usize>, u32, u64, Vec<usize>, bool);

    fn node() -> impl Strategy<Value = NodeDraw> {
        (prop::option::weighted(0.9, 0usize..3), 1u32..9, 1u64..9, prop::collection::vec(0usize..5, 0..4), prop::bool::weighted(0.9))
    }

    fn answer(pods: &[usize], nodes: &[NodeDraw], queued: bool, from_the_start: bool) -> SchedulingResult {
        let specs = specs();
        let nodes: Vec<ExistingNode> = nodes
            .iter()
            .enumerate()
            .map(|(i, (zone, cpu, memory, running, schedulable))| {
                let mut labels = BTreeMap::from([(well_known::HOSTNAME.to_string(), format!("node-{i}"))]);
                if let Some(z) = zone {
                    labels.insert(well_known::ZONE.to_string(), crate::model::ZONES[*z].to_string());
                }
                let allocatable = Resources { pods: 110, ..Resources::pod(cpu * 500, memory << 30) };
                ExistingNode {
                    name: format!("node-{i}"),
                    node_pool: None,
                    labels: Arc::new(labels),
                    taints: Vec::new(),
                    allocatable,
                    capacity: allocatable,
                    pods: Arc::new(running.iter().map(|&s| specs[s].clone()).collect()),
                    schedulable: *schedulable,
                }
            })
            .collect();
        let pods: Vec<Pod> = pods.iter().enumerate().map(|(i, &s)| Pod::new(format!("pod-{i}"), specs[s].clone())).collect();
        let empty = Catalog::new(Vec::new());
        let input = SchedulingInput { catalog: &empty, pools: &[], daemonsets: &[], nodes: &nodes, pods: &pods };
        FROM_THE_START.with(|f| f.set(from_the_start));
        let result = if queued { schedule_in_order(input, Hints::default()) } else { schedule(input) };
        FROM_THE_START.with(|f| f.set(false));
        result
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
        /// Resuming a spec's search on nodes where the previous pod stopped
        /// (for the same allowed zones) places every pod where a search from
        /// the first node does, zone spreads included.
        #[test]
        fn resuming_the_search_places_pods_where_searching_from_the_start_does(
            pods in prop::collection::vec(0usize..5, 0..40),
            nodes in prop::collection::vec(node(), 0..10),
            queued in any::<bool>(),
        ) {
            let resumed = answer(&pods, &nodes, queued, false);
            let searched = answer(&pods, &nodes, queued, true);
            prop_assert_eq!(&resumed.bindings, &searched.bindings);
            prop_assert_eq!(&resumed.unschedulable, &searched.unschedulable);
            prop_assert_eq!(&resumed.relaxed, &searched.relaxed);
        }
    }
}
