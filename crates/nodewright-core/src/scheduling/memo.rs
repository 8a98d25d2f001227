//! What solves over nodes that change a few pods at a time keep from one
//! solve to the next: for each node's list of pods, the requests on it and
//! how many of its pods match each label selector asked for.
//!
//! A node's pods are shared between listings ([`ExistingNode::pods`]) until
//! one of them changes, which gives the list a new allocation. So a list is
//! known by its address, held by a [`Weak`]: while the memo holds it, the
//! address is not reused, and a list with a weak reference is never changed
//! in place (`Arc::make_mut` moves it out first). The provisioner, the
//! kube-scheduler stand-in and the disruption controller each keep one: the
//! kube-scheduler stand-in solves every few simulated seconds over nodes of
//! which a handful changed, and counting every pod of every node for each
//! selector was most of a solve's set-up.

use std::sync::{Arc, Mutex, Weak};

use rustc_hash::FxHashMap as HashMap;

use crate::model::{ExistingNode, LabelSelector, PodSpec, Resources};

/// Past this many selectors the memo starts over (workloads come and go).
const MAX_SELECTORS: usize = 1024;

/// A count not worked out yet.
const UNKNOWN: u32 = u32::MAX;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct NodeMemo {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each selector asked for, by its id (index into an entry's counts).
    selectors: HashMap<LabelSelector, usize>,
    /// Pod lists by address.
    lists: HashMap<usize, Entry>,
    /// Reads so far: an entry not read in the last one may be dropped.
    reads: u64,
}

#[derive(Debug)]
struct Entry {
    /// Keeps the address from being reused.
    list: Weak<Vec<Arc<PodSpec>>>,
    used: Resources,
    /// Pods matching each selector, by id ([`UNKNOWN`]: not asked yet).
    counts: Vec<u32>,
    read: u64,
}

impl NodeMemo {
    /// An empty memo.
    pub fn new() -> Self {
        Self::default()
    }

    /// For each of `nodes` that `wanted` says (by index): the requests on
    /// it into `used` (when given; every node), and the pods on it
    /// matching each of `selectors` into row `n` of `counts` (one row of
    /// `selectors.len()` per node; rows of nodes not wanted are left as
    /// they are).
    pub(crate) fn read(
        &self,
        nodes: &[ExistingNode],
        selectors: &[LabelSelector],
        wanted: impl Fn(usize) -> bool,
        mut used: Option<&mut Vec<Resources>>,
        counts: &mut [u32],
    ) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.selectors.len().saturating_add(selectors.len()) > MAX_SELECTORS {
            *inner = Inner::default();
        }
        let ids: Vec<usize> = selectors
            .iter()
            .map(|s| {
                let next = inner.selectors.len();
                *inner.selectors.entry(s.clone()).or_insert(next)
            })
            .collect();
        let width = inner.selectors.len();
        inner.reads = inner.reads.wrapping_add(1);
        let read = inner.reads;
        // Pods of a workload share one spec: its labels are matched once a read.
        let mut matches: HashMap<(*const PodSpec, usize), bool> = HashMap::default();
        let n_sel = selectors.len();
        for (n, node) in nodes.iter().enumerate() {
            let key = Arc::as_ptr(&node.pods) as usize;
            let entry = inner.lists.entry(key).or_insert_with(|| Entry {
                list: Arc::downgrade(&node.pods),
                used: node.used(),
                counts: Vec::new(),
                read,
            });
            entry.read = read;
            if let Some(used) = used.as_deref_mut() {
                used.push(entry.used);
            }
            if n_sel == 0 || !wanted(n) {
                continue;
            }
            if entry.counts.len() < width {
                entry.counts.resize(width, UNKNOWN);
            }
            let row = &mut counts[n * n_sel..(n + 1) * n_sel];
            for ((slot, &id), selector) in row.iter_mut().zip(&ids).zip(selectors) {
                if entry.counts[id] == UNKNOWN {
                    entry.counts[id] = count_matching(&node.pods, |spec| {
                        *matches.entry((Arc::as_ptr(spec), id)).or_insert_with(|| selector.matches(&spec.labels))
                    });
                }
                *slot = entry.counts[id];
            }
        }
        // Lists no node holds any more go, once they outnumber the nodes.
        if inner.lists.len() > nodes.len().saturating_mul(2).saturating_add(256) {
            inner.lists.retain(|_, e| e.read == read && e.list.strong_count() > 0);
        }
    }
}

/// Pods of `pods` that `matches`, a run of pods of one spec asked about
/// once (below [`UNKNOWN`]).
pub(crate) fn count_matching(pods: &[Arc<PodSpec>], mut matches: impl FnMut(&Arc<PodSpec>) -> bool) -> u32 {
    let mut count = 0u32;
    let mut last: Option<(*const PodSpec, bool)> = None;
    for pod in pods {
        let ptr = Arc::as_ptr(pod);
        let matched = match last {
            Some((same, matched)) if same == ptr => matched,
            _ => {
                let matched = matches(pod);
                last = Some((ptr, matched));
                matched
            }
        };
        count = count.saturating_add(u32::from(matched));
    }
    count.min(UNKNOWN - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(app: &str, cpu: u32) -> Arc<PodSpec> {
        let mut spec = PodSpec::requesting(cpu, 1 << 20);
        spec.labels.insert("app".into(), app.into());
        Arc::new(spec)
    }

    fn node(pods: Vec<Arc<PodSpec>>) -> ExistingNode {
        ExistingNode {
            name: "n".into(),
            node_pool: None,
            labels: Arc::default(),
            taints: Vec::new(),
            allocatable: Resources::default(),
            capacity: Resources::default(),
            pods: Arc::new(pods),
            schedulable: true,
        }
    }

    /// Counts read through the memo, and counted afresh.
    fn both(memo: &NodeMemo, nodes: &[ExistingNode], selectors: &[LabelSelector]) -> ((Vec<Resources>, Vec<u32>), Vec<u32>) {
        let mut used = Vec::new();
        let mut counts = vec![0u32; nodes.len() * selectors.len()];
        memo.read(nodes, selectors, |_| true, Some(&mut used), &mut counts);
        let fresh = nodes
            .iter()
            .flat_map(|n| selectors.iter().map(|s| n.pods.iter().filter(|p| s.matches(&p.labels)).count() as u32))
            .collect();
        ((used, counts), fresh)
    }

    #[test]
    fn a_node_whose_pods_change_is_counted_again_and_one_that_keeps_them_is_not() {
        let (web, db) = (spec("web", 100), spec("db", 300));
        let mut nodes = vec![node(vec![web.clone(), web.clone(), db.clone(), web.clone()]), node(vec![db.clone()])];
        let selectors = [LabelSelector::label("app", "web"), LabelSelector::label("app", "db")];
        let memo = NodeMemo::new();
        let ((used, counts), fresh) = both(&memo, &nodes, &selectors);
        assert_eq!(counts, vec![3, 1, 0, 1]);
        assert_eq!(counts, fresh);
        assert_eq!(used.iter().map(|u| u.cpu_millis).collect::<Vec<_>>(), vec![600, 300]);

        // A pod leaves the first node (as the cluster changes a list: in
        // place unless shared); the second keeps its list.
        let kept = Arc::as_ptr(&nodes[1].pods);
        Arc::make_mut(&mut nodes[0].pods).swap_remove(0);
        Arc::make_mut(&mut nodes[0].pods).push(db.clone());
        assert_eq!(Arc::as_ptr(&nodes[1].pods), kept);
        let ((used, counts), fresh) = both(&memo, &nodes, &selectors);
        assert_eq!(counts, vec![2, 2, 0, 1]);
        assert_eq!(counts, fresh);
        assert_eq!(used[0].cpu_millis, 800);

        // A selector asked for later is counted on lists already known.
        let later = [LabelSelector::label("app", "db")];
        let mut counts = vec![0u32; 2];
        memo.read(&nodes, &later, |n| n == 1, None, &mut counts);
        assert_eq!(counts, vec![0, 1], "the row of a node not wanted is left as it was");
    }

    #[test]
    fn the_memo_forgets_lists_no_node_holds_once_they_outnumber_the_nodes() {
        let memo = NodeMemo::new();
        let selectors = [LabelSelector::label("app", "web")];
        for i in 0..600u32 {
            let nodes = vec![node(vec![spec("web", i + 1)])];
            let ((used, counts), fresh) = both(&memo, &nodes, &selectors);
            assert_eq!((used[0].cpu_millis, counts.clone()), (i + 1, fresh));
        }
        let lists = memo.inner.lock().unwrap().lists.len();
        assert!(lists <= 2 + 256 + 1, "{lists} lists kept for one node");
    }
}
