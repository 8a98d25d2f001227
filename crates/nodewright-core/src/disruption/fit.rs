//! The cluster as the disruption controller sees it, and the scheduling
//! simulation every action is checked with: would the pods of the nodes
//! that go fit on the nodes that stay (plus a replacement)?

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::NodeClaim;
use crate::model::{Catalog, NodePool, PdbStatus, Pod, PodSpec, Resources};
use crate::scheduling::{ExistingNode, Hints, SchedulingInput, SchedulingResult, NodeCache, NodeMemo, Room, schedule_hinted, schedule_within};

/// A node nodewright manages: a launched NodeClaim.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// Its NodeClaim.
    pub claim: NodeClaim,
    /// Catalog index of its offering.
    pub offering: u32,
    /// Pods bound to it (daemonsets excluded).
    pub pods: std::sync::Arc<[Pod]>,
    /// Time since its pods last changed.
    pub idle_for: Duration,
    /// Why the cloud says it drifted from its node class (`AMIDrift`, …).
    pub drift: Option<String>,
}

impl Member {
    pub fn name(&self) -> &str {
        &self.claim.name
    }

    pub fn pool(&self) -> &str {
        &self.claim.node_pool
    }
}

/// A digest of a set of offering indices that does not depend on the order
/// they come in (each mixed, then added): what a pass's caches are keyed
/// on, without sorting the set every time.
pub(crate) fn set_digest(items: impl IntoIterator<Item = u32>) -> u64 {
    items.into_iter().fold(0u64, |sum, o| {
        // SplitMix64's finaliser.
        let mut z = u64::from(o).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        sum.wrapping_add(z ^ (z >> 31))
    })
}

/// (CPU millicores, memory bytes).
type CpuMemory = (u64, u64);

/// What `nodes` hold: the requests on each, and (CPU millicores, memory
/// bytes) free on each that takes pods (0 on the others), with their sum.
pub(crate) fn free_capacity(nodes: &[ExistingNode], memo: &NodeMemo) -> (Vec<Resources>, Vec<CpuMemory>, CpuMemory) {
    let mut used: Vec<Resources> = Vec::with_capacity(nodes.len());
    memo.read(nodes, &[], |_| false, Some(&mut used), &mut []);
    let free: Vec<(u64, u64)> = nodes
        .iter()
        .zip(&used)
        .map(|(n, used)| {
            let room = Room::of(n, *used, false);
            if room.usable { (u64::from(room.cpu_millis), room.memory_bytes) } else { (0, 0) }
        })
        .collect();
    let total = free.iter().fold((0u64, 0u64), |(c, m), (fc, fm)| (c.saturating_add(*fc), m.saturating_add(*fm)));
    (used, free, total)
}

/// The offerings a simulated new node may be bought as: those of a list
/// priced below a bound.
#[derive(Clone, Copy)]
pub(crate) struct Buy<'a> {
    /// The list, largest first.
    pub largest_first: &'a [u32],
    /// The same offerings, cheapest first (ties by index).
    pub by_price: &'a [u32],
    /// $/hour every offering bought must cost less than.
    pub below: f64,
}

/// One consistent read of the cluster.
pub(crate) struct View {
    pub catalog: Arc<Catalog>,
    pub pools: Vec<NodePool>,
    /// Each NodePool's [`NodePool::drift_hash`] now, by name.
    pub drift_hashes: rustc_hash::FxHashMap<String, String>,
    pub daemonsets: Vec<PodSpec>,
    /// Every node (managed or not), as the scheduler sees them. A
    /// simulation appends the nodes it adds (replacements) and drops them
    /// after, so no copy is made; the nodes that go stay in place, named to
    /// the scheduler as removed.
    pub nodes: std::sync::Mutex<Vec<ExistingNode>>,
    /// Node name → index in `nodes`.
    pub index: rustc_hash::FxHashMap<String, usize>,
    /// Requests on each of `nodes`, by index: every simulation starts from
    /// them instead of summing the pods again.
    pub used: Vec<Resources>,
    /// What the simulations of a pass share about `nodes` (zones, pods
    /// matching each selector they ask for), worked out once.
    pub cache: NodeCache,
    /// (CPU millicores, memory bytes) free on each schedulable node (0 on
    /// the others), by index in `nodes`, and their sum.
    pub free: Vec<(u64, u64)>,
    pub free_total: (u64, u64),
    /// The managed ones, by name.
    pub members: Vec<Member>,
    /// NodeClaims whose deletion was asked for and that have no instance.
    pub deleting: Vec<String>,
    pub pdbs: Vec<PdbStatus>,
    pub unavailable: rustc_hash::FxHashSet<u32>,
    /// [`set_digest`] of `unavailable`.
    pub unavailable_digest: u64,
    /// Now, by the controllers' clock (since the Unix epoch).
    pub now: Duration,
    /// The fleet and commitments policies are told about.
    pub fleet: Arc<crate::policy::Fleet>,
    /// Pods waiting for a node.
    pub pending: u32,
}

impl View {
    /// What a 0.3.0 policy learns about `pod`, its PDB headroom included:
    /// the fewest evictions any budget selecting it allows.
    pub fn facts(&self, pod: &Pod, pool: &crate::model::NodePool) -> crate::policy::PodFacts {
        let mut facts = crate::policy::PodFacts::of(&pod.spec, pool);
        facts.running_seconds = pod.running_for(self.now).map_or(0, |d| d.as_secs());
        facts.pdb_headroom =
            self.pdbs.iter().filter(|p| p.budget.selector.matches(&pod.spec.labels)).map(|p| p.disruptions_allowed).min();
        facts
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name() == name)
    }

    pub fn pool(&self, name: &str) -> Option<&NodePool> {
        self.pools.iter().find(|p| p.name == name)
    }

    pub fn price(&self, offering: u32) -> f64 {
        self.catalog.offerings.get(offering as usize).map_or(0.0, |o| o.price_per_hour)
    }

    /// The pods of `names`.
    pub fn pods_of<'a>(&'a self, names: &'a [String]) -> impl Iterator<Item = &'a Pod> + 'a {
        names.iter().filter_map(|n| self.member(n)).flat_map(|m| m.pods.iter())
    }

    /// A node of `pool` bought as `offering`, with the daemonsets that would
    /// run on it: what a replacement looks like to the scheduler.
    pub fn new_node(&self, pool: &NodePool, offering: u32, name: &str) -> Option<ExistingNode> {
        let o = self.catalog.offerings.get(offering as usize)?;
        Some(ExistingNode::launched(name, pool, o, &self.daemonsets))
    }
    /// Schedule `pods` on every node but those in `gone`, plus `extra`; new
    /// nodes may be opened in `new_nodes_in` only.
    pub fn simulate(&self, pods: &[Pod], gone: &BTreeSet<&str>, extra: Vec<ExistingNode>, new_nodes_in: &[NodePool]) -> SchedulingResult {
        self.with_nodes(gone, extra, |nodes, removed| {
            let hints = Hints { node_used: Some(&self.used), removed, cache: Some(&self.cache), ..Hints::default() };
            schedule_hinted(SchedulingInput { catalog: &self.catalog, pools: new_nodes_in, daemonsets: &self.daemonsets, nodes, pods }, hints)
        })
    }

    /// As [`View::simulate`] with no extra nodes, if every pod fits with at
    /// most `max_claims` new nodes, bought as one of `buy`'s offerings
    /// (`None`: any offering); `None`, as soon as that is certain, if not.
    pub fn simulate_within(&self, pods: &[Pod], gone: &BTreeSet<&str>, new_nodes_in: &[NodePool], max_claims: usize, buy: Option<Buy<'_>>) -> Option<SchedulingResult> {
        self.with_nodes(gone, Vec::new(), |nodes, removed| {
            let hints = Hints {
                buy: buy.map(|b| b.largest_first),
                below: buy.map(|b| b.below),
                buy_by_price: buy.map(|b| b.by_price),
                node_used: Some(&self.used),
                removed,
                cache: Some(&self.cache),
                zones: None,
                memo: None,
            };
            schedule_within(SchedulingInput { catalog: &self.catalog, pools: new_nodes_in, daemonsets: &self.daemonsets, nodes, pods }, max_claims, hints)
        })
    }

    /// Run `f` on every node plus `extra`, with the indices of those in
    /// `gone` (which the scheduler treats as not there).
    fn with_nodes<R>(&self, gone: &BTreeSet<&str>, extra: Vec<ExistingNode>, f: impl FnOnce(&[ExistingNode], &[usize]) -> R) -> R {
        let mut nodes = self.nodes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = nodes.len();
        let removed: Vec<usize> = gone.iter().filter_map(|name| self.index.get(*name).copied()).collect();
        nodes.extend(extra);
        let result = f(&nodes, &removed);
        nodes.truncate(count);
        result
    }

    /// Could `pods` fit on the schedulable nodes but `gone`, counting only
    /// free CPU and memory? A necessary condition, cheap next to a
    /// scheduling simulation.
    pub fn might_fit_without(&self, pods: &[Pod], gone: &BTreeSet<&str>) -> bool {
        let (mut cpu, mut memory) = self.free_total;
        for name in gone {
            if let Some(&(c, m)) = self.index.get(*name).and_then(|&i| self.free.get(i)) {
                cpu = cpu.saturating_sub(c);
                memory = memory.saturating_sub(m);
            }
        }
        let need = pods.iter().fold((0u64, 0u64), |(c, m), p| (c + u64::from(p.spec.requests.cpu_millis), m + p.spec.requests.memory_bytes));
        need.0 <= cpu && need.1 <= memory
    }

    /// Catalog offerings `pool` may launch now, ascending.
    pub fn replacements(&self, pool: &NodePool) -> Vec<u32> {
        let mut list = crate::scheduling::pool_offering_list(&self.catalog, pool);
        if !self.unavailable.is_empty() {
            list.retain(|o| !self.unavailable.contains(o));
        }
        list
    }
}

/// "pod P would not fit: reason" for the first pod the simulation could not
/// place, with a count of the others.
pub(crate) fn describe_stranded(pods: &[Pod], result: &SchedulingResult) -> Option<String> {
    let (first, reason) = result.unschedulable.first()?;
    let more = result.unschedulable.len() - 1;
    let tail = if more > 0 { format!(" (and {more} more pods)") } else { String::new() };
    Some(format!("pod {} would fit nowhere: {reason}{tail}", pods[*first].name))
}
