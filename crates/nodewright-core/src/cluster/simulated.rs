//! An in-memory cluster: what the simulator and the tests run controllers on.
//!
//! Besides the [`Cluster`] trait it plays the parts of the cluster that are
//! not nodewright's: the kubelet registering a launched node
//! ([`SimulatedCluster::register`]), the kube-scheduler binding pending pods
//! that fit ([`SimulatedCluster::schedule_pending`]), workload controllers
//! recreating an evicted pod after a restart delay, and the API server's
//! watch stream ([`SimulatedCluster::take_pod_events`]) that the simulator
//! derives its pod metrics from.

use std::collections::BTreeMap;

// Keyed by names the cluster itself gives out: a fast hash, no need for
// one that resists chosen keys.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Cluster, ClusterError, ClusterEvent, Created, Eviction, NodeClaim, NodePoolObject, NodePoolStatus, PluginStatus, PolicyPluginObject, RegisteredNode, Recorded, Registration};
use crate::cloud::Instance;
use crate::model::{BoundPods, Catalog, Clock, NodePool, PdbStatus, Pod, PodDisruptionBudget, PodSpec};
use crate::scheduling::{ExistingNode, Hints, SchedulingInput, schedule_in_order, zone_index};

/// Why a pod stopped running on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// Evicted through the Eviction API (a disruption).
    Evicted,
    /// Deleted without asking its PodDisruptionBudgets (an interruption, a
    /// forced drain).
    Drained,
    /// Its node went away under it.
    NodeGone,
}

/// A change to a pod, in the order the cluster saw it (a watch stream).
#[derive(Debug, Clone, PartialEq)]
pub enum PodEvent {
    /// Bound to `node`.
    Bound {
        /// The pod.
        pod: String,
        /// The node.
        node: String,
    },
    /// Stopped running on `node`; its controller recreates it, pending
    /// again at `restart_at`.
    Stopped {
        /// The pod.
        pod: String,
        /// The node it ran on.
        node: String,
        /// Why.
        cause: StopCause,
        /// When it is pending again (the cluster's clock).
        restart_at: Duration,
    },
}

/// What one round of the kube-scheduler stand-in did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scheduled {
    /// (pod, node) bound.
    pub bound: Vec<(String, String)>,
    /// Pods tried that fit nowhere.
    pub unplaced: usize,
}


#[derive(Default)]
struct State {
    pools: Vec<NodePool>,
    daemonsets: Vec<PodSpec>,
    /// The name of each of `daemonsets` (empty when added unnamed).
    daemonset_names: Vec<String>,
    pending: BTreeMap<String, Pod>,
    /// Pods stopped and not yet recreated: name → (pod, pending again at).
    restarting: BTreeMap<String, (Pod, Duration)>,
    /// Pending pods the scheduler has not tried since they became pending
    /// (tried in queue order, so kept in no order).
    fresh: HashSet<String>,
    /// When each pending pod joined the scheduler's queue (a sequence number).
    queued: HashMap<String, u64>,
    next_queued: u64,
    /// Registered nodes, in registration order (a node that goes takes the
    /// last one's place).
    nodes: Vec<ExistingNode>,
    node_index: HashMap<String, usize>,
    /// Beside `nodes`, in their order: the requests on each (daemonsets
    /// included) and the index of its zone in `zone_names`, kept as pods
    /// and nodes come and go, so the kube-scheduler stand-in does not add
    /// them up on every call.
    node_used: Vec<crate::model::Resources>,
    /// Pods on each node matching the selectors the pending pods ask for,
    /// kept from one scheduling round to the next.
    memo: crate::scheduling::NodeMemo,
    node_zone: Vec<Option<usize>>,
    /// The catalog's zones, then any only a node names.
    zone_names: Vec<String>,
    claims: BTreeMap<String, NodeClaim>,
    /// The annotations written on NodeClaims (`Cluster::write_claim_annotation`),
    /// by claim and key; kept after the claim ends, as a record.
    annotations: BTreeMap<String, BTreeMap<String, String>>,
    /// Bound pods: name → its node (listed sorted by name where listed).
    bound: HashMap<String, String>,
    /// Node → the pods bound to it, by name, each saying when it started
    /// ([`Pod::started`]) (kept by node: a disruption pass reads every
    /// node's pods).
    on_node: HashMap<String, BTreeMap<String, Pod>>,
    /// Node → its pods as last handed out ([`Cluster::bound_pods_by_node`]),
    /// dropped when they change.
    shared: HashMap<String, BoundPods>,
    /// Added to the cluster's clock to tell when a pod started, since the
    /// Unix epoch ([`Pod::started`]).
    epoch: Duration,
    /// (CPU millicores, memory bytes) requested by every bound pod
    /// (daemonsets excluded); 64 bits, as a cluster's total outgrows a pod's.
    bound_requests: (u64, u64),
    events: Vec<(String, String)>,
    /// Those of `events`, to tell a repeat.
    said_unschedulable: HashSet<(String, String)>,
    pdbs: Vec<PodDisruptionBudget>,
    journal: Option<Vec<PodEvent>>,
    restart_delay: Duration,
    /// Bumped by every change ([`Cluster::revision`]).
    revision: u64,
    /// Launched NodeClaims not yet registered as the scheduler sees them
    /// (what [`Cluster::nodes`] lists for them), by claim: (offering,
    /// `shape` when made, node). Kept from call to call, so such a node is
    /// one list of pods (which the scheduling memo knows by address).
    in_flight: HashMap<String, (u32, u64, ExistingNode)>,
    /// Bumped when the NodePools or daemonsets change, which decide what a
    /// launched node looks like.
    shape: u64,
    /// NodeClaims linked to their registered node.
    registered: HashSet<String>,
    /// NodePool statuses written.
    pool_status: HashMap<String, NodePoolStatus>,
    /// PolicyPlugin objects, with the component each points at.
    plugins: BTreeMap<String, (PolicyPluginObject, Vec<u8>)>,
    /// PolicyPlugin statuses written.
    plugin_status: HashMap<String, PluginStatus>,
    /// The last [`RECENT_EVENTS`] events recorded.
    recent_events: std::collections::VecDeque<ClusterEvent>,
    /// Events recorded, by reason.
    event_counts: BTreeMap<&'static str, u64>,
}

/// How many events the simulated cluster keeps (a week's run records
/// tens of thousands).
const RECENT_EVENTS: usize = 10_000;

impl State {
    /// Something changed: a controller that read before must read again.
    fn touch(&mut self) {
        self.revision = self.revision.wrapping_add(1);
    }

    /// The node of launched claim `claim` (bought as `offering`) as listed
    /// while in flight, taken from `kept` if made since anything that shapes
    /// it changed.
    fn kept_in_flight(kept: &mut HashMap<String, (u32, u64, ExistingNode)>, claim: &str, offering: u32, shape: u64) -> Option<ExistingNode> {
        kept.remove(claim).filter(|(o, s, _)| *o == offering && *s == shape).map(|(_, _, node)| node)
    }

    fn node_mut(&mut self, name: &str) -> Option<&mut ExistingNode> {
        let i = *self.node_index.get(name)?;
        self.nodes.get_mut(i)
    }

    fn insert_node(&mut self, node: ExistingNode) {
        self.touch();
        let (used, zone) = (node.used(), zone_index(&node, &mut self.zone_names));
        match self.node_index.get(&node.name) {
            Some(&i) => {
                self.nodes[i] = node;
                self.node_used[i] = used;
                self.node_zone[i] = zone;
            }
            None => {
                self.node_index.insert(node.name.clone(), self.nodes.len());
                self.nodes.push(node);
                self.node_used.push(used);
                self.node_zone.push(zone);
            }
        }
    }

    /// Node `name`'s pods changed: what they request, again.
    fn pods_changed(&mut self, name: &str) {
        if let Some(&i) = self.node_index.get(name)
            && let (Some(node), Some(used)) = (self.nodes.get(i), self.node_used.get_mut(i))
        {
            *used = node.used();
        }
    }

    /// Remove node `name`; its bound pods stop (their controllers recreate them).
    fn remove_node(&mut self, name: &str, now: Duration) -> Option<ExistingNode> {
        let on_it: Vec<String> = self.on_node.get(name).map(|pods| pods.keys().cloned().collect()).unwrap_or_default();
        for pod in on_it {
            self.stop(&pod, StopCause::NodeGone, now);
        }
        let i = self.node_index.remove(name)?;
        self.touch();
        let node = self.nodes.swap_remove(i);
        self.node_used.swap_remove(i);
        self.node_zone.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.node_index.insert(moved.name.clone(), i);
        }
        Some(node)
    }

    fn pending_again(&mut self, pod: Pod) {
        self.touch();
        self.fresh.insert(pod.name.to_string());
        self.next_queued += 1;
        self.queued.insert(pod.name.to_string(), self.next_queued);
        self.pending.insert(pod.name.to_string(), pod);
    }

    /// Take bound pod `pod` off its node; its controller recreates it after
    /// the restart delay.
    fn stop(&mut self, pod: &str, cause: StopCause, now: Duration) {
        let Some((node, p)) = self.unbind(pod) else { return };
        let restart_at = now.saturating_add(self.restart_delay);
        if let Some(journal) = &mut self.journal {
            journal.push(PodEvent::Stopped { pod: pod.into(), node, cause, restart_at });
        }
        if self.restart_delay.is_zero() {
            self.pending_again(p);
        } else {
            self.restarting.insert(pod.into(), (p, restart_at));
        }
    }

    /// The pods bound to `node`, by name.
    fn pods_on(&self, node: &str) -> Vec<Pod> {
        let Some(pods) = self.on_node.get(node) else { return Vec::new() };
        pods.values().cloned().collect()
    }

    /// Bound pod `pod`: its node and the pod.
    fn bound_pod(&self, pod: &str) -> Option<(&String, &Pod)> {
        let node = self.bound.get(pod)?;
        self.on_node.get(node)?.get(pod).map(|p| (node, p))
    }

    /// Take bound pod `pod` off its node; returns (node, pod).
    fn unbind(&mut self, pod: &str) -> Option<(String, Pod)> {
        let node = self.bound.remove(pod)?;
        let pods = self.on_node.get_mut(&node)?;
        let mut p = pods.remove(pod)?;
        if pods.is_empty() {
            self.on_node.remove(&node);
        }
        self.shared.remove(&node);
        p.started = None;
        self.touch();
        let r = p.spec.requests;
        self.bound_requests = (self.bound_requests.0.saturating_sub(r.cpu_millis.into()), self.bound_requests.1.saturating_sub(r.memory_bytes));
        if let Some(n) = self.node_mut(&node)
            && let Some(i) = n.pods.iter().position(|s| Arc::ptr_eq(s, &p.spec))
        {
            Arc::make_mut(&mut n.pods).swap_remove(i);
        }
        self.pods_changed(&node);
        Some((node, p))
    }

    fn bind(&mut self, pod: &str, node: &str, now: Duration) -> Result<(), ClusterError> {
        let spec = self.pending.get(pod).ok_or_else(|| ClusterError(format!("pod {pod} is not pending")))?.spec.clone();
        let target = self.node_mut(node).ok_or_else(|| ClusterError(format!("node {node} does not exist")))?;
        Arc::make_mut(&mut target.pods).push(spec);
        self.pods_changed(node);
        self.touch();
        if let Some(mut p) = self.pending.remove(pod) {
            p.started = Some(self.epoch.saturating_add(now));
            self.shared.remove(node);
            self.fresh.remove(pod);
            self.queued.remove(pod);
            let r = p.spec.requests;
            self.bound_requests = (self.bound_requests.0.saturating_add(r.cpu_millis.into()), self.bound_requests.1.saturating_add(r.memory_bytes));
            self.on_node.entry(node.into()).or_default().insert(pod.into(), p);
            self.bound.insert(pod.into(), node.into());
        }
        if let Some(journal) = &mut self.journal {
            journal.push(PodEvent::Bound { pod: pod.into(), node: node.into() });
        }
        Ok(())
    }

    /// `status.disruptionsAllowed` of `pdb`: bound pods are healthy, pending
    /// and restarting ones (evicted and not yet back) are expected but down.
    fn allowed(&self, pdb: &PodDisruptionBudget) -> u32 {
        let healthy = self.on_node.values().flat_map(BTreeMap::values).filter(|p| pdb.selector.matches(&p.spec.labels)).count() as u32;
        let down = self.pending.values().chain(self.restarting.values().map(|(p, _)| p)).filter(|p| pdb.selector.matches(&p.spec.labels)).count()
            as u32;
        pdb.disruptions_allowed(healthy, healthy + down)
    }
}

/// An in-memory [`Cluster`].
pub struct SimulatedCluster {
    catalog: Arc<Catalog>,
    now: Clock,
    state: Mutex<State>,
}

impl SimulatedCluster {
    /// A cluster with `pools` whose nodes are bought from `catalog`; an
    /// evicted pod is pending again at once.
    pub fn new(catalog: Arc<Catalog>, pools: Vec<NodePool>) -> Self {
        let zone_names = catalog.zones.0.clone();
        SimulatedCluster { catalog, now: Arc::new(|| Duration::ZERO), state: Mutex::new(State { pools, zone_names, ..State::default() }) }
    }

    /// Read time from `now`; a pod that stops is recreated (pending again)
    /// `restart_delay` later.
    pub fn with_restarts(mut self, now: Clock, restart_delay: Duration) -> Self {
        self.now = now;
        self.state().restart_delay = restart_delay;
        self
    }

    /// Tell when a pod started as `epoch` plus the cluster's clock (the
    /// controllers' clock, when theirs runs from `epoch`).
    pub fn with_epoch(self, epoch: Duration) -> Self {
        self.state().epoch = epoch;
        self
    }

    /// Keep a journal of pod changes for [`SimulatedCluster::take_pod_events`].
    pub fn with_pod_events(self) -> Self {
        self.state().journal = Some(Vec::new());
        self
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave the state half
        // changed in a way later calls depend on; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a daemonset.
    pub fn add_daemonset(&self, spec: PodSpec) {
        self.put_daemonset("", spec);
    }

    /// Add daemonset `name`, or replace the one of that name. Its pod runs
    /// on the nodes launched from now on.
    pub fn put_daemonset(&self, name: &str, spec: PodSpec) {
        let mut state = self.state();
        match state.daemonset_names.iter().position(|n| !name.is_empty() && n == name) {
            Some(i) => state.daemonsets[i] = spec,
            None => {
                state.daemonsets.push(spec);
                state.daemonset_names.push(name.into());
            }
        }
        state.shape = state.shape.wrapping_add(1);
        state.touch();
    }

    /// Remove daemonset `name` (nodes launched from now on run none of it).
    pub fn remove_daemonset(&self, name: &str) {
        let mut state = self.state();
        if let Some(i) = state.daemonset_names.iter().position(|n| n == name) {
            state.daemonsets.remove(i);
            state.daemonset_names.remove(i);
            state.shape = state.shape.wrapping_add(1);
            state.touch();
        }
    }

    /// Add a PodDisruptionBudget, or replace the one of its name.
    pub fn add_pdb(&self, pdb: PodDisruptionBudget) {
        let mut state = self.state();
        match state.pdbs.iter().position(|b| b.name == pdb.name) {
            Some(i) => state.pdbs[i] = pdb,
            None => state.pdbs.push(pdb),
        }
        state.touch();
    }

    /// Annotation `key` as last written on NodeClaim `claim`.
    pub fn claim_annotation(&self, claim: &str, key: &str) -> Option<String> {
        self.state().annotations.get(claim).and_then(|a| a.get(key)).cloned()
    }

    /// Every bound pod → the node it is bound to.
    pub fn placements(&self) -> BTreeMap<String, String> {
        self.state().bound.iter().map(|(pod, node)| (pod.clone(), node.clone())).collect()
    }

    /// Remove PodDisruptionBudget `name`.
    pub fn remove_pdb(&self, name: &str) {
        let mut state = self.state();
        state.pdbs.retain(|b| b.name != name);
        state.touch();
    }

    /// Replace the NodePools (an edit: nodes made under the old ones
    /// drift). The NodeClaims of a NodePool no longer there are deleted, as
    /// the API server's garbage collector deletes what a deleted NodePool
    /// owns: their finalizer keeps them until the controller has drained
    /// and terminated them.
    pub fn set_node_pools(&self, pools: Vec<NodePool>) {
        let mut state = self.state();
        for claim in state.claims.values_mut() {
            if !pools.iter().any(|p| p.name == claim.node_pool) {
                claim.deleting = true;
            }
        }
        state.pools = pools;
        state.shape = state.shape.wrapping_add(1);
        state.touch();
    }

    /// Add pending pods.
    pub fn add_pods(&self, pods: impl IntoIterator<Item = Pod>) {
        let mut state = self.state();
        for pod in pods {
            state.pending_again(pod);
        }
    }

    /// Add a node that already exists.
    pub fn add_node(&self, node: ExistingNode) {
        self.state().insert_node(node);
    }

    /// Bind pending pod `pod` to node `node` (no fit check: a test's
    /// setup; the kube-scheduler stand-in is [`SimulatedCluster::schedule_pending`]).
    pub fn bind(&self, pod: &str, node: &str) -> Result<(), ClusterError> {
        let now = (self.now)();
        self.state().bind(pod, node, now)
    }

    /// The kube-scheduler: bind the pending pods that fit on a registered,
    /// schedulable node — resources (counting every pod already bound),
    /// selectors, affinities, spreads, taints — using the same placement
    /// code as the provisioner, with no new nodes. `all`: try every pending
    /// pod (a node registered, room was freed); otherwise only those that
    /// became pending since the last call.
    pub fn schedule_pending(&self, all: bool) -> Scheduled {
        let now = (self.now)();
        let mut state = self.state();
        let fresh = std::mem::take(&mut state.fresh);
        let mut pods: Vec<Pod> = if all {
            state.pending.values().cloned().collect()
        } else {
            fresh.iter().filter_map(|name| state.pending.get(name).cloned()).collect()
        };
        // Each pod's queue position looked up once (a stable sort, as before).
        pods.sort_by_cached_key(|p| state.queued.get(&*p.name).copied().unwrap_or(u64::MAX));
        if pods.is_empty() || state.nodes.is_empty() {
            return Scheduled { bound: Vec::new(), unplaced: pods.len() };
        }
        let input = SchedulingInput { catalog: &self.catalog, pools: &[], daemonsets: &[], nodes: &state.nodes, pods: &pods };
        let hints = Hints {
            node_used: Some(&state.node_used),
            zones: Some((&state.zone_names, &state.node_zone)),
            memo: Some(&state.memo),
            ..Hints::default()
        };
        let result = schedule_in_order(input, hints);
        let bindings: Vec<(String, String)> =
            result.bindings.iter().map(|&(p, n)| (pods[p].name.to_string(), state.nodes[n].name.clone())).collect();
        for (pod, node) in &bindings {
            // Both exist: the pod is pending and the node registered, under this lock.
            let _ = state.bind(pod, node, now);
        }
        Scheduled { unplaced: pods.len() - bindings.len(), bound: bindings }
    }

    /// Recreate the stopped pods whose restart delay has passed; returns how many.
    pub fn restart_due(&self) -> usize {
        let now = (self.now)();
        let mut state = self.state();
        let due: Vec<String> = state.restarting.iter().filter(|(_, (_, at))| *at <= now).map(|(n, _)| n.clone()).collect();
        for name in &due {
            if let Some((pod, _)) = state.restarting.remove(name) {
                state.pending_again(pod);
            }
        }
        due.len()
    }

    /// Pod changes since the last call (empty unless [`SimulatedCluster::with_pod_events`]).
    pub fn take_pod_events(&self) -> Vec<PodEvent> {
        self.state().journal.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The kubelet of launched claim `claim` registers its node, Ready; the
    /// registration controller then initialises it. Registering again (a kubelet restart) keeps the node as it is,
    /// with the pods bound to it.
    pub fn register(&self, claim: &str) -> Result<(), ClusterError> {
        let mut guard = self.state();
        let state = &mut *guard;
        if state.node_index.contains_key(claim) {
            return Ok(());
        }
        let c = state.claims.get(claim).ok_or_else(|| ClusterError(format!("NodeClaim {claim} does not exist")))?;
        let instance = c.instance.clone().ok_or_else(|| ClusterError(format!("NodeClaim {claim} is not launched")))?;
        let pool = state
            .pools
            .iter()
            .find(|p| p.name == c.node_pool)
            .ok_or_else(|| ClusterError(format!("NodePool {} does not exist", c.node_pool)))?;
        let offering = self
            .catalog
            .offerings
            .get(instance.offering as usize)
            .ok_or_else(|| ClusterError(format!("NodeClaim {claim}: offering {} is not in the catalog", instance.offering)))?;
        // The node listed while it booted, if still as it would be made.
        let shape = state.shape;
        let kept = State::kept_in_flight(&mut state.in_flight, claim, instance.offering, shape);
        let mut node = kept.unwrap_or_else(|| ExistingNode::launched(claim, pool, offering, &state.daemonsets));
        // The kubelet registers with the NodePool's startup taints too;
        // registration removes them once the node is Ready.
        node.taints.extend(pool.startup_taints.iter().cloned());
        state.insert_node(node);
        state.touch();
        Ok(())
    }

    /// Add PolicyPlugin `object`, pointing at `component`.
    pub fn add_policy_plugin(&self, object: PolicyPluginObject, component: Vec<u8>) {
        let mut state = self.state();
        state.plugins.insert(object.name.clone(), (object, component));
    }

    /// The events recorded last (at most the last ten thousand), oldest first.
    pub fn recorded_events(&self) -> Vec<ClusterEvent> {
        self.state().recent_events.iter().cloned().collect()
    }

    /// How many events were recorded, by reason.
    pub fn event_counts(&self) -> BTreeMap<&'static str, u64> {
        self.state().event_counts.clone()
    }

    /// The status written last on PolicyPlugin `name`.
    pub fn policy_plugin_status(&self, name: &str) -> Option<PluginStatus> {
        self.state().plugin_status.get(name).cloned()
    }

    /// End pod `pod` (its work is done): pending, restarting or bound.
    /// Returns whether it was bound (room was freed).
    pub fn delete_pod(&self, pod: &str) -> bool {
        let mut state = self.state();
        state.fresh.remove(pod);
        state.queued.remove(pod);
        if state.pending.remove(pod).is_some() || state.restarting.remove(pod).is_some() {
            state.touch();
            return false;
        }
        state.unbind(pod).is_some()
    }

    /// The instance behind `claim` is gone (reclaimed): remove its node and
    /// NodeClaim; its pods stop.
    pub fn remove_node(&self, claim: &str) {
        let now = (self.now)();
        let mut state = self.state();
        state.remove_node(claim, now);
        if state.claims.remove(claim).is_some() {
            state.touch();
        }
    }

    /// `kubectl delete nodeclaim CLAIM` (or of its Node): the claim gets a
    /// deletion timestamp; its finalizer keeps it until the controller has
    /// drained the node and terminated the instance. Returns whether the
    /// claim exists.
    pub fn request_deletion(&self, claim: &str) -> bool {
        let mut state = self.state();
        let Some(c) = state.claims.get_mut(claim) else { return false };
        c.deleting = true;
        state.touch();
        true
    }

    /// The catalog offering NodeClaim `claim` was launched as.
    pub fn claim_offering(&self, claim: &str) -> Option<u32> {
        self.state().claims.get(claim).and_then(|c| c.instance.as_ref()).map(|i| i.offering)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<ExistingNode> {
        let state = self.state();
        state.node_index.get(name).map(|&i| state.nodes[i].clone())
    }

    /// Calls `f` with every registered node (no copy).
    pub fn with_nodes<T>(&self, f: impl FnOnce(&[ExistingNode]) -> T) -> T {
        f(&self.state().nodes)
    }

    /// (CPU millicores, memory bytes) requested by every bound pod (daemonsets excluded).
    pub fn bound_requests(&self) -> (u64, u64) {
        self.state().bound_requests
    }

    /// (pending, restarting) pod counts.
    pub fn waiting(&self) -> (usize, usize) {
        let state = self.state();
        (state.pending.len(), state.restarting.len())
    }

    /// NodeClaims, by name.
    pub fn node_claims(&self) -> Vec<NodeClaim> {
        self.state().claims.values().cloned().collect()
    }

    /// Names of pending pods.
    pub fn pending_names(&self) -> Vec<String> {
        self.state().pending.keys().cloned().collect()
    }

    /// (pod, reason) events recorded so far.
    pub fn events(&self) -> Vec<(String, String)> {
        self.state().events.clone()
    }
}

impl Cluster for SimulatedCluster {
    async fn node_pools(&self) -> Result<Vec<NodePool>, ClusterError> {
        Ok(self.state().pools.clone())
    }

    async fn daemonsets(&self) -> Result<Vec<PodSpec>, ClusterError> {
        Ok(self.state().daemonsets.clone())
    }

    async fn pending_pods(&self) -> Result<Vec<Pod>, ClusterError> {
        Ok(self.state().pending.values().cloned().collect())
    }

    async fn pending_count(&self) -> Result<usize, ClusterError> {
        Ok(self.state().pending.len())
    }

    async fn nodes(&self) -> Result<Vec<ExistingNode>, ClusterError> {
        let mut guard = self.state();
        let state = &mut *guard;
        let mut nodes = state.nodes.clone();
        // Made again only when the claim's offering or what shapes a node
        // changed; those no longer in flight are dropped.
        let mut kept = std::mem::take(&mut state.in_flight);
        for claim in state.claims.values() {
            if state.node_index.contains_key(&claim.name) {
                continue;
            }
            let Some(instance) = &claim.instance else { continue };
            let node = match State::kept_in_flight(&mut kept, &claim.name, instance.offering, state.shape) {
                Some(node) => node,
                None => {
                    let Some(pool) = state.pools.iter().find(|p| p.name == claim.node_pool) else { continue };
                    let Some(offering) = self.catalog.offerings.get(instance.offering as usize) else { continue };
                    ExistingNode::launched(&claim.name, pool, offering, &state.daemonsets)
                }
            };
            nodes.push(node.clone());
            state.in_flight.insert(claim.name.clone(), (instance.offering, state.shape, node));
        }
        Ok(nodes)
    }

    async fn create_node_claim(&self, claim: NodeClaim) -> Result<Created, ClusterError> {
        let mut state = self.state();
        if state.claims.contains_key(&claim.name) {
            return Ok(Created::NameTaken);
        }
        // As the API server's: a claim is owned by its NodePool, which must exist.
        if !state.pools.iter().any(|p| p.name == claim.node_pool) {
            return Ok(Created::NodePoolGone);
        }
        state.claims.insert(claim.name.clone(), claim);
        state.touch();
        Ok(Created::Created)
    }

    async fn claim_launched(&self, claim: &str, instance: Instance) -> Result<Recorded, ClusterError> {
        let mut state = self.state();
        let Some(c) = state.claims.get_mut(claim) else { return Ok(Recorded::ClaimGone) };
        c.instance = Some(instance);
        state.touch();
        Ok(Recorded::Recorded)
    }

    async fn delete_node_claim(&self, claim: &str) -> Result<(), ClusterError> {
        let now = (self.now)();
        let mut state = self.state();
        state.claims.remove(claim).ok_or_else(|| ClusterError(format!("NodeClaim {claim} does not exist")))?;
        state.touch();
        state.remove_node(claim, now);
        Ok(())
    }

    async fn node_claims(&self) -> Result<Vec<NodeClaim>, ClusterError> {
        Ok(self.state().claims.values().cloned().collect())
    }

    async fn node_claim(&self, name: &str) -> Result<Option<NodeClaim>, ClusterError> {
        Ok(self.state().claims.get(name).cloned())
    }

    async fn pods_on(&self, node: &str) -> Result<Vec<Pod>, ClusterError> {
        Ok(self.state().pods_on(node))
    }

    async fn cordon(&self, node: &str) -> Result<(), ClusterError> {
        let mut state = self.state();
        if let Some(n) = state.node_mut(node) {
            n.schedulable = false;
            state.touch();
        }
        Ok(())
    }

    async fn drain(&self, node: &str) -> Result<Vec<String>, ClusterError> {
        let now = (self.now)();
        let mut state = self.state();
        let evicted: Vec<String> = state.on_node.get(node).map(|pods| pods.keys().cloned().collect()).unwrap_or_default();
        for pod in &evicted {
            state.stop(pod, StopCause::Drained, now);
        }
        Ok(evicted)
    }

    async fn write_claim_conditions(&self, claim: &str, conditions: &crate::model::ClaimConditions) -> Result<(), ClusterError> {
        let mut state = self.state();
        let c = state.claims.get_mut(claim).ok_or_else(|| ClusterError(format!("NodeClaim {claim} does not exist")))?;
        c.conditions = conditions.clone();
        Ok(())
    }

    async fn request_claim_deletion(&self, claim: &str) -> Result<bool, ClusterError> {
        Ok(self.request_deletion(claim))
    }

    async fn write_claim_annotation(&self, claim: &str, key: &str, value: &str) -> Result<(), ClusterError> {
        let mut state = self.state();
        if !state.claims.contains_key(claim) {
            return Err(ClusterError(format!("NodeClaim {claim} does not exist")));
        }
        state.annotations.entry(claim.into()).or_default().insert(key.into(), value.into());
        Ok(())
    }

    async fn registrations(&self) -> Result<Vec<Registration>, ClusterError> {
        let state = self.state();
        Ok(state
            .claims
            .values()
            .filter(|c| c.instance.is_some())
            .map(|c| Registration {
                claim: c.name.clone(),
                node_pool: c.node_pool.clone(),
                node: state.node_index.get(&c.name).map(|&i| RegisteredNode {
                    name: c.name.clone(),
                    ready: true,
                    taints: state.nodes[i].taints.iter().map(|t| t.key.clone()).collect(),
                }),
                node_deleted: false,
                registered: state.registered.contains(&c.name),
                initialized: c.initialized,
                deleting: c.deleting,
            })
            .collect())
    }

    async fn mark_registration(&self, claim: &str, node: &str, initialized: bool) -> Result<(), ClusterError> {
        let mut state = self.state();
        let c = state.claims.get_mut(claim).ok_or_else(|| ClusterError(format!("NodeClaim {claim} does not exist")))?;
        c.initialized |= initialized;
        let _ = node; // named after its claim here
        state.registered.insert(claim.to_string());
        state.touch();
        Ok(())
    }

    async fn remove_node_taints(&self, node: &str, keys: &[String]) -> Result<(), ClusterError> {
        let mut state = self.state();
        let n = state.node_mut(node).ok_or_else(|| ClusterError(format!("Node {node} does not exist")))?;
        n.taints.retain(|t| !keys.contains(&t.key));
        state.touch();
        // Room came open: the scheduler tries every pending pod.
        let pending: Vec<String> = state.pending.keys().cloned().collect();
        state.fresh.extend(pending);
        Ok(())
    }

    async fn node_pool_objects(&self) -> Result<Vec<NodePoolObject>, ClusterError> {
        let state = self.state();
        Ok(state.pools.iter().map(|p| NodePoolObject { name: p.name.clone(), invalid: None, status: state.pool_status.get(&p.name).cloned() }).collect())
    }

    async fn write_node_pool_status(&self, name: &str, status: &NodePoolStatus) -> Result<(), ClusterError> {
        let mut state = self.state();
        if !state.pools.iter().any(|p| p.name == name) {
            return Err(ClusterError(format!("NodePool {name} does not exist")));
        }
        state.pool_status.insert(name.to_string(), status.clone());
        Ok(())
    }

    async fn policy_plugins(&self) -> Result<Vec<PolicyPluginObject>, ClusterError> {
        Ok(self.state().plugins.values().map(|(o, _)| o.clone()).collect())
    }

    async fn policy_plugin_component(&self, name: &str) -> Result<Vec<u8>, String> {
        self.state().plugins.get(name).map(|(_, bytes)| bytes.clone()).ok_or_else(|| format!("PolicyPlugin {name} does not exist"))
    }

    async fn write_policy_plugin_status(&self, name: &str, status: &PluginStatus) -> Result<(), ClusterError> {
        let mut state = self.state();
        if let (PluginStatus::Loaded { digest, .. }, Some((object, _))) = (status, state.plugins.get_mut(name)) {
            object.loaded_digest = Some(digest.clone());
        }
        state.plugin_status.insert(name.to_string(), status.clone());
        Ok(())
    }

    async fn bound_pods(&self) -> Result<Vec<(String, Pod)>, ClusterError> {
        let state = self.state();
        let mut names: Vec<&String> = state.bound.keys().collect();
        names.sort_unstable();
        Ok(names.into_iter().filter_map(|pod| state.bound_pod(pod)).map(|(n, p)| (n.clone(), p.clone())).collect())
    }

    async fn bound_pods_by_node(&self) -> Result<rustc_hash::FxHashMap<String, BoundPods>, ClusterError> {
        let mut state = self.state();
        let State { on_node, shared, .. } = &mut *state;
        // Each node's list is built once after its pods change, then shared.
        Ok(on_node
            .iter()
            .map(|(node, pods)| {
                let list = shared
                    .entry(node.clone())
                    .or_insert_with(|| BoundPods::new(pods.values().cloned().collect()));
                (node.clone(), list.clone())
            })
            .collect())
    }

    async fn pod_disruption_budgets(&self) -> Result<Vec<PdbStatus>, ClusterError> {
        let state = self.state();
        Ok(state.pdbs.iter().map(|pdb| PdbStatus { budget: pdb.clone(), disruptions_allowed: state.allowed(pdb) }).collect())
    }

    async fn evict(&self, pod: &str) -> Result<Eviction, ClusterError> {
        let now = (self.now)();
        let mut state = self.state();
        let (_, p) = state.bound_pod(pod).ok_or_else(|| ClusterError(format!("pod {pod} is not bound to a node")))?;
        let labels = p.spec.labels.clone();
        if let Some(pdb) = state.pdbs.iter().find(|b| b.selector.matches(&labels) && state.allowed(b) == 0) {
            return Ok(Eviction::Blocked { pdb: pdb.name.clone() });
        }
        state.stop(pod, StopCause::Evicted, now);
        Ok(Eviction::Evicted)
    }

    async fn uncordon(&self, node: &str) -> Result<(), ClusterError> {
        let mut state = self.state();
        if let Some(n) = state.node_mut(node) {
            n.schedulable = true;
            state.touch();
            // Room came back: the scheduler tries every pending pod.
            let pending: Vec<String> = state.pending.keys().cloned().collect();
            state.fresh.extend(pending);
        }
        Ok(())
    }

    fn revision(&self) -> Option<u64> {
        Some(self.state().revision)
    }

    async fn record_event(&self, event: ClusterEvent) -> Result<(), ClusterError> {
        let mut state = self.state();
        *state.event_counts.entry(event.reason).or_default() += 1;
        if state.recent_events.len() == RECENT_EVENTS {
            state.recent_events.pop_front();
        }
        state.recent_events.push_back(event);
        Ok(())
    }

    async fn pod_unschedulable(&self, pod: &str, reason: &str) -> Result<(), ClusterError> {
        // Said once per pod and reason, as the API server is told (a repeat
        // is dropped): a pod no pass can place does not grow the record
        // pass after pass.
        let mut state = self.state();
        let said = (pod.to_string(), reason.to_string());
        if state.said_unschedulable.insert(said.clone()) {
            state.events.push(said);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NodePool, PodSpec, Resources};

    /// What the kube-scheduler stand-in is handed beside the nodes must
    /// be what adding up their pods and reading their zone labels gives,
    /// whatever came and went.
    fn kept_matches_the_nodes(cluster: &SimulatedCluster) {
        // What a disruption pass is handed (kept from the last call where
        // nothing changed) is each node's pods now.
        let handed = futures::executor::block_on(cluster.bound_pods_by_node()).unwrap();
        let state = cluster.state();
        assert_eq!(handed.len(), state.on_node.len());
        for (node, list) in &handed {
            let names: Vec<&str> = list.pods.iter().map(|p| &*p.name).collect();
            let kept: Vec<&str> = state.on_node.get(node).map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
            assert_eq!(names, kept, "pods handed out for {node}");
            assert!(list.pods.iter().all(|p| p.started.is_some()), "{node}: a bound pod has a start");
        }
        assert_eq!(state.node_used.len(), state.nodes.len());
        assert_eq!(state.node_zone.len(), state.nodes.len());
        assert!(state.zone_names.starts_with(&cluster.catalog.zones.0));
        for (i, node) in state.nodes.iter().enumerate() {
            assert_eq!(state.node_used[i], node.used(), "requests on {}", node.name);
            let zone = node.labels.get(crate::model::well_known::ZONE).map(String::as_str);
            assert_eq!(state.node_zone[i].map(|z| state.zone_names[z].as_str()), zone, "zone of {}", node.name);
        }
        // The pods kept by node are the bound pods, each on its node.
        assert_eq!(state.on_node.values().map(BTreeMap::len).sum::<usize>(), state.bound.len());
        for (node, pods) in &state.on_node {
            assert!(!pods.is_empty(), "{node}");
            assert!(pods.keys().all(|pod| state.bound.get(pod) == Some(node)), "{node}: {:?}", pods.keys());
        }
    }

    #[test]
    fn the_requests_zone_and_pods_kept_per_node_follow_binds_stops_and_nodes_that_go() {
        let catalog = Arc::new(Catalog::bundled());
        let pool = NodePool::new("default");
        let cluster = SimulatedCluster::new(catalog.clone(), vec![pool.clone()]);
        let offering = |zone: &str| catalog.offerings.iter().find(|o| o.instance_type == "m5.xlarge" && o.zone == zone).unwrap();
        let daemon = PodSpec { requests: Resources { cpu_millis: 100, memory_bytes: 1 << 20, pods: 1, ..Resources::default() }, ..PodSpec::default() };
        let mut a = ExistingNode::launched("a", &pool, offering("us-east-1a"), std::slice::from_ref(&daemon));
        Arc::make_mut(&mut a.pods).push(Arc::new(PodSpec { requests: Resources { cpu_millis: 250, pods: 1, ..Resources::default() }, ..PodSpec::default() }));
        cluster.add_node(a);
        cluster.add_node(ExistingNode::launched("b", &pool, offering("us-east-1b"), &[]));
        let mut elsewhere = ExistingNode::launched("c", &pool, offering("us-east-1a"), &[]);
        Arc::make_mut(&mut elsewhere.labels).insert(crate::model::well_known::ZONE.into(), "on-prem-1".into());
        cluster.add_node(elsewhere);
        kept_matches_the_nodes(&cluster);

        let spec = Arc::new(PodSpec { requests: Resources { cpu_millis: 1000, memory_bytes: 1 << 30, pods: 1, ..Resources::default() }, ..PodSpec::default() });
        cluster.add_pods((0..6).map(|i| Pod::new(format!("p{i}"), spec.clone())));
        let scheduled = cluster.schedule_pending(true);
        assert_eq!(scheduled.bound.len(), 6, "{scheduled:?}");
        kept_matches_the_nodes(&cluster);

        // Evicted: off its node; a node that goes takes its pods with it.
        let (pod, _) = scheduled.bound[0].clone();
        let evicted = futures::executor::block_on(cluster.evict(&pod)).unwrap();
        assert_eq!(evicted, Eviction::Evicted);
        kept_matches_the_nodes(&cluster);
        cluster.remove_node("a");
        kept_matches_the_nodes(&cluster);
        assert_eq!(cluster.state().nodes.len(), 2);
    }

    /// A launched NodeClaim's node, as listed before it registers, is made
    /// once and listed again as it was (its pods one list, known to the
    /// scheduling memo by address) until what shapes it changes: its
    /// offering, the NodePools, the daemonsets.
    #[test]
    fn a_node_in_flight_is_listed_as_made_until_its_pool_or_daemonsets_change() {
        let catalog = Arc::new(Catalog::bundled());
        let pool = NodePool::new("default");
        let cluster = SimulatedCluster::new(catalog.clone(), vec![pool.clone()]);
        let offering = catalog.offerings.iter().position(|o| o.instance_type == "m5.xlarge" && o.zone == "us-east-1a").unwrap() as u32;
        let claim = NodeClaim { name: "default-abcde".into(), node_pool: "default".into(), offerings: Arc::from(vec![offering]), ..Default::default() };
        let nodes = || futures::executor::block_on(cluster.nodes()).unwrap();
        assert_eq!(futures::executor::block_on(cluster.create_node_claim(claim)).unwrap(), Created::Created);
        assert!(nodes().is_empty(), "not launched: not listed");
        let instance = Instance { id: "i-1".into(), claim: "default-abcde".into(), node_pool: "default".into(), offering };
        // A claim deleted while its instance launched is gone, not an error.
        assert_eq!(futures::executor::block_on(cluster.claim_launched("default-gone1", instance.clone())).unwrap(), Recorded::ClaimGone);
        assert_eq!(futures::executor::block_on(cluster.claim_launched("default-abcde", instance)).unwrap(), Recorded::Recorded);

        let first = nodes();
        let made = ExistingNode::launched("default-abcde", &pool, &catalog.offerings[offering as usize], &[]);
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].name.as_str(), &first[0].labels, first[0].allocatable, first[0].pods.len()), ("default-abcde", &made.labels, made.allocatable, 0));
        let again = nodes();
        assert!(Arc::ptr_eq(&first[0].pods, &again[0].pods), "listed again as made");
        assert!(Arc::ptr_eq(&first[0].labels, &again[0].labels));

        // A daemonset added: the node is made again, running it.
        let daemon = PodSpec { requests: Resources { cpu_millis: 100, memory_bytes: 1 << 20, pods: 1, ..Resources::default() }, ..PodSpec::default() };
        cluster.put_daemonset("agent", daemon);
        let with_daemon = nodes();
        assert_eq!(with_daemon[0].pods.len(), 1);
        assert_eq!(with_daemon[0].used().cpu_millis, 100);
        // The NodePool edited: its labels are the node's.
        let mut labelled = pool.clone();
        labelled.labels.insert("team".into(), "search".into());
        cluster.set_node_pools(vec![labelled]);
        let relabelled = nodes();
        assert_eq!(relabelled[0].labels.get("team").map(String::as_str), Some("search"));
        // Registered: the node listed in flight, no longer kept as such.
        cluster.register("default-abcde").unwrap();
        let registered = nodes();
        assert_eq!(registered.len(), 1);
        assert!(Arc::ptr_eq(&registered[0].pods, &relabelled[0].pods), "registered as listed while booting");
        assert_eq!(registered[0].labels, relabelled[0].labels);
        assert!(cluster.state().in_flight.is_empty());
    }

}
