//! Discrete events on a virtual clock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use super::trace::{Trace, TraceEventKind};
use crate::cloud::{CloudProvider, SimulatedCloud, SimulatedCloudConfig};
use crate::cluster::SimulatedCluster;
use crate::model::labels::{labels_match, tolerates_all};
use crate::model::{CapacityType, Catalog, NodePool, Pod, PodSpec, PolicyRef, Requirement, Resources};
use crate::disruption::{DisruptionController, DisruptionSettings, Reason, consolidation_slot};
use crate::policy::{PluginClock, PolicyRegistry, PolicyRuntime, Role, RuntimeConfig};
use crate::provisioning::{Batcher, BatcherSettings, LaunchedClaim, Provisioner, selection_slot};

/// The virtual clock: what plugins, the cloud and the batcher read.
#[derive(Debug, Clone, Default)]
pub struct SimClock(Arc<AtomicU64>);

impl SimClock {
    /// Now, from the start of the run.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, at: Duration) {
        self.0.store(at.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Virtual runs start at 2026-01-05T00:00:00Z (a Monday), so plugins see a plausible date.
const EPOCH_OFFSET: Duration = Duration::from_secs(1_767_571_200);

impl PluginClock for SimClock {
    fn wall_since_epoch(&self) -> Duration {
        EPOCH_OFFSET + self.now()
    }

    fn monotonic_nanos(&self) -> u64 {
        self.now().as_nanos() as u64
    }
}

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct SimulationConfig {
    /// Seed of every random draw (boot latency, interruptions, spot prices, plugins).
    pub seed: u64,
    /// Node boot latency, drawn uniformly from this range.
    pub boot_latency: (Duration, Duration),
    /// Draw spot interruptions from the offerings' buckets.
    pub interruptions: bool,
    /// Multiplies every interruption rate (stress: "what if spot were ten
    /// times as volatile").
    pub interruption_scale: f64,
    /// Let spot discounts drift every 6 hours.
    pub spot_drift: bool,
    /// Provisioning batch windows.
    pub batcher: BatcherSettings,
    /// How often a sample is taken for the charts.
    pub sample_every: Duration,
    /// Where compiled components are cached.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Plugin limits (CPU deadlines, memory).
    pub limits: crate::policy::Limits,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        SimulationConfig {
            seed: 1,
            boot_latency: (Duration::from_secs(30), Duration::from_secs(90)),
            interruptions: true,
            interruption_scale: 1.0,
            spot_drift: true,
            batcher: BatcherSettings::default(),
            sample_every: Duration::from_secs(300),
            cache_dir: crate::policy::RuntimeConfig::default().cache_dir,
            limits: crate::policy::Limits::default(),
        }
    }
}

/// A policy to run: its selection and consolidation plugins.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyUnderTest {
    /// Row name in reports.
    pub name: String,
    /// Selection plugin (bundled name, `karpenter-like`, or a file) and config.
    #[serde(skip)]
    pub selection: PolicyRef,
    /// Consolidation plugin and config.
    #[serde(skip)]
    pub consolidation: PolicyRef,
}

/// Everything measured, for `report.json`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Metrics {
    /// Total dollars.
    pub cost_total: f64,
    /// Dollars on on-demand (and reserved) capacity.
    pub cost_on_demand: f64,
    /// Dollars on spot capacity.
    pub cost_spot: f64,
    /// Node-hours billed.
    pub node_hours: f64,
    /// Time-weighted CPU requested / allocatable on ready nodes.
    pub cpu_utilisation: f64,
    /// Time-weighted memory requested / allocatable on ready nodes.
    pub memory_utilisation: f64,
    /// Pod wait, pending → bound, seconds; a pod deleted while pending, or
    /// still pending at the end, counts the time it waited.
    pub pod_wait_p50_s: f64,
    /// 95th percentile.
    pub pod_wait_p95_s: f64,
    /// 99th percentile.
    pub pod_wait_p99_s: f64,
    /// Pods that arrived.
    pub pods: u64,
    /// Pods still pending at the end.
    pub pods_pending_at_end: u64,
    /// Pods deleted (their work ended) before any node ran them.
    pub pods_never_scheduled: u64,
    /// Pods evicted by spot interruptions.
    pub pods_disrupted: u64,
    /// Pods evicted by disruption (consolidation, drift, expiry).
    pub pods_evicted: u64,
    /// Spot interruptions.
    pub interruptions: u64,
    /// Nodes removed by consolidation (empty or under-used).
    pub consolidations: u64,
    /// Nodes removed because they were empty.
    pub disrupted_empty: u64,
    /// Nodes removed or replaced because they were under-used.
    pub disrupted_underutilized: u64,
    /// Nodes replaced because their NodePool changed.
    pub disrupted_drifted: u64,
    /// Nodes replaced because they reached `expireAfter`.
    pub disrupted_expired: u64,
    /// Consolidation replacements launched.
    pub replacements: u64,
    /// Disruption actions the host rejected (invalid, unsafe or over budget).
    pub disruptions_rejected: u64,
    /// Successful launches.
    pub launches: u64,
    /// Failed launches (capacity).
    pub launch_failures: u64,
    /// Decisions asked of plugins (selection and consolidation).
    pub plugin_calls: u64,
    /// Failed plugin calls, answered by the built-in policy.
    pub plugin_failures: u64,
    /// Most nodes at once.
    pub peak_nodes: u64,
}

/// One point of the time series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// Hours from the start.
    pub hour: f64,
    /// Dollars so far.
    pub cost: f64,
    /// On-demand nodes.
    pub on_demand_nodes: u32,
    /// Spot nodes.
    pub spot_nodes: u32,
    /// CPU requested / allocatable now.
    pub cpu_utilisation: f64,
    /// Memory requested / allocatable now.
    pub memory_utilisation: f64,
    /// Pods pending now.
    pub pending: u32,
}

/// The outcome of one run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SimulationResult {
    /// The policy.
    pub policy: PolicyUnderTest,
    /// Its metrics.
    pub metrics: Metrics,
    /// Its time series.
    pub samples: Vec<Sample>,
    /// Wall-clock milliseconds spent inside plugins (not deterministic; kept
    /// out of `report.json`).
    #[serde(skip)]
    pub plugin_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Trace(usize),
    Provision,
    NodeReady(u64),
    Interrupt(u64),
    Disrupt,
    Reprice,
    Sample,
}

struct SimNode {
    name: String,
    instance: String,
    spot: bool,
    offering: u32,
    ready: bool,
    pods: BTreeSet<String>,
    nominated: BTreeSet<String>,
    used: Resources,
    labels: BTreeMap<String, String>,
    taints: Vec<crate::model::Taint>,
    allocatable: Resources,
    schedulable: bool,
}

struct PodState {
    spec: Arc<PodSpec>,
    pending_since: Option<Duration>,
    node: Option<u64>,
    /// Bound to a node at least once.
    ever_bound: bool,
}

struct Totals {
    rate_on_demand: f64,
    rate_spot: f64,
    nodes: u64,
    used_cpu: f64,
    used_memory: f64,
    alloc_cpu: f64,
    alloc_memory: f64,
    cpu_time: f64,
    alloc_cpu_time: f64,
    memory_time: f64,
    alloc_memory_time: f64,
}

struct Sim<'a> {
    trace: &'a Trace,
    config: &'a SimulationConfig,
    clock: SimClock,
    rng: StdRng,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    cloud: Arc<SimulatedCloud>,
    cluster: Arc<SimulatedCluster>,
    registry: Arc<PolicyRegistry>,
    provisioner: Arc<Provisioner<SimulatedCloud, SimulatedCluster>>,
    disruption: DisruptionController<SimulatedCloud, SimulatedCluster>,
    disrupt_at: Duration,
    batcher: Batcher,
    provision_queued: bool,
    pools: Vec<NodePool>,
    policy: &'a PolicyUnderTest,
    base_catalog: Arc<Catalog>,
    family_drift: BTreeMap<String, f64>,
    nodes: BTreeMap<u64, SimNode>,
    node_ids: HashMap<String, u64>,
    next_node: u64,
    pods: HashMap<String, PodState>,
    waits: Vec<f64>,
    metrics: Metrics,
    totals: Totals,
    last: Duration,
    samples: Vec<Sample>,
}

/// Run `trace` under `policy` on `pools` (whose selection and consolidation
/// plugins `policy` replaces), buying from `catalog`. `progress` is told the
/// fraction of the trace done.
pub fn simulate(
    trace: &Trace,
    policy: &PolicyUnderTest,
    pools: &[NodePool],
    catalog: Arc<Catalog>,
    config: &SimulationConfig,
    mut progress: impl FnMut(f64),
) -> anyhow::Result<SimulationResult> {
    let clock = SimClock::default();
    let runtime = PolicyRuntime::new(RuntimeConfig {
        cache_dir: config.cache_dir.clone(),
        limits: config.limits,
        clock: Arc::new(clock.clone()),
        seed: config.seed,
    })?;
    let registry = Arc::new(PolicyRegistry::new(runtime));
    let pools: Vec<NodePool> = pools
        .iter()
        .map(|p| NodePool { selection: policy.selection.clone(), consolidation: policy.consolidation.clone(), ..p.clone() })
        .collect();
    for pool in &pools {
        for (slot, role, reference) in [
            (selection_slot(&pool.name), Role::Selection, &pool.selection),
            (consolidation_slot(&pool.name), Role::Consolidation, &pool.consolidation),
        ] {
            if let (_, Some(e)) = registry.configure(&slot, role, reference) {
                anyhow::bail!("policy {}: {e}", policy.name);
            }
        }
    }
    let now_clock = clock.clone();
    let cloud = Arc::new(SimulatedCloud::new(
        catalog.clone(),
        SimulatedCloudConfig { seed: config.seed, capacity_failure: HashMap::new(), boot_latency: config.boot_latency },
        Arc::new(move || now_clock.now()),
    ));
    let cluster = Arc::new(SimulatedCluster::new(catalog.clone(), pools.clone()));
    let wall_clock = clock.clone();
    let provisioner = Arc::new(
        Provisioner::new(cloud.clone(), cluster.clone(), registry.clone())
            .with_clock(Arc::new(move || EPOCH_OFFSET + wall_clock.now())),
    );
    let disruption = DisruptionController::new(provisioner.clone(), cluster.clone(), DisruptionSettings::default());
    let mut sim = Sim {
        trace,
        config,
        clock,
        rng: StdRng::seed_from_u64(config.seed ^ 0x5eed),
        queue: BinaryHeap::new(),
        seq: 0,
        cloud,
        cluster,
        registry,
        provisioner,
        disruption,
        disrupt_at: DISRUPT_EVERY,
        batcher: Batcher::new(config.batcher),
        provision_queued: false,
        pools,
        policy,
        base_catalog: catalog,
        family_drift: BTreeMap::new(),
        nodes: BTreeMap::new(),
        node_ids: HashMap::new(),
        next_node: 0,
        pods: HashMap::new(),
        waits: Vec::new(),
        metrics: Metrics::default(),
        totals: Totals {
            rate_on_demand: 0.0,
            rate_spot: 0.0,
            nodes: 0,
            used_cpu: 0.0,
            used_memory: 0.0,
            alloc_cpu: 0.0,
            alloc_memory: 0.0,
            cpu_time: 0.0,
            alloc_cpu_time: 0.0,
            memory_time: 0.0,
            alloc_memory_time: 0.0,
        },
        last: Duration::ZERO,
        samples: Vec::new(),
    };
    sim.run(&mut progress)?;
    Ok(sim.finish())
}

/// Disruption passes run this often, and sooner when the controller asks.
const DISRUPT_EVERY: Duration = Duration::from_secs(60);
const REPRICE_EVERY: Duration = Duration::from_secs(6 * 3600);
const MONTH_SECONDS: f64 = 30.0 * 86_400.0;

impl Sim<'_> {
    fn at(&mut self, when: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((when.as_nanos() as u64, self.seq, event)));
    }

    fn run(&mut self, progress: &mut impl FnMut(f64)) -> anyhow::Result<()> {
        let end = Duration::from_secs_f64(self.trace.duration_s);
        for (i, event) in self.trace.events.iter().enumerate() {
            if i == 0 || event.t != self.trace.events[i - 1].t {
                self.at(Duration::from_secs_f64(event.t), Event::Trace(i));
            }
        }
        self.at(Duration::ZERO, Event::Sample);
        self.at(DISRUPT_EVERY, Event::Disrupt);
        if self.config.spot_drift {
            self.at(REPRICE_EVERY, Event::Reprice);
        }
        let mut reported = 0.0;
        while let Some(Reverse((nanos, _, event))) = self.queue.pop() {
            let when = Duration::from_nanos(nanos);
            if when > end {
                break;
            }
            self.advance(when);
            match event {
                Event::Trace(first) => self.trace_events(first),
                Event::Provision => self.provision()?,
                Event::NodeReady(id) => self.node_ready(id),
                Event::Interrupt(id) => self.interrupt(id),
                Event::Disrupt if when == self.disrupt_at => {
                    let next = self.disrupt()?.map_or(when + DISRUPT_EVERY, |w| w.min(when + DISRUPT_EVERY));
                    self.disrupt_at = next.max(when + Duration::from_secs(1));
                    self.at(self.disrupt_at, Event::Disrupt);
                }
                Event::Disrupt => {}
                Event::Reprice => {
                    self.reprice();
                    self.at(when + REPRICE_EVERY, Event::Reprice);
                }
                Event::Sample => {
                    self.sample();
                    self.at(when + self.config.sample_every, Event::Sample);
                }
            }
            let done = when.as_secs_f64() / self.trace.duration_s;
            if done - reported >= 0.01 {
                reported = done;
                progress(done.min(1.0));
            }
        }
        self.advance(end);
        self.sample();
        progress(1.0);
        Ok(())
    }

    /// Integrate cost, node-hours and utilisation up to `to`.
    fn advance(&mut self, to: Duration) {
        let dt = to.saturating_sub(self.last).as_secs_f64();
        self.last = to.max(self.last);
        self.clock.set(self.last);
        if dt == 0.0 {
            return;
        }
        let hours = dt / 3600.0;
        let t = &mut self.totals;
        self.metrics.cost_on_demand += t.rate_on_demand * hours;
        self.metrics.cost_spot += t.rate_spot * hours;
        self.metrics.node_hours += t.nodes as f64 * hours;
        t.cpu_time += t.used_cpu * dt;
        t.alloc_cpu_time += t.alloc_cpu * dt;
        t.memory_time += t.used_memory * dt;
        t.alloc_memory_time += t.alloc_memory * dt;
    }

    fn trace_events(&mut self, first: usize) {
        let t = self.trace.events[first].t;
        let mut added = false;
        for event in self.trace.events[first..].iter().take_while(|e| e.t == t) {
            match &event.kind {
                TraceEventKind::Add(pod) => {
                    self.metrics.pods += 1;
                    self.pods.insert(pod.name.clone(), PodState { spec: pod.spec.clone(), pending_since: Some(self.last), node: None, ever_bound: false });
                    self.cluster.add_pods([pod.clone()]);
                    if !self.bind_anywhere(&pod.name) {
                        added = true;
                    }
                }
                TraceEventKind::Delete(name) => self.delete_pod(name),
            }
        }
        if added {
            self.batcher.arrival(self.last);
            self.queue_provision();
        }
    }

    fn queue_provision(&mut self) {
        if !self.provision_queued && let Some(due) = self.batcher.due() {
            self.provision_queued = true;
            self.at(due.max(self.last), Event::Provision);
        }
    }

    /// The kube-scheduler stand-in: bind a pod without topology constraints
    /// to the first ready node it fits (resources, labels, taints). Pods with
    /// spreads or (anti-)affinities wait for the provisioner's placement.
    fn bind_anywhere(&mut self, pod: &str) -> bool {
        let spec = self.pods[pod].spec.clone();
        if !spec.spread.is_empty() || !spec.affinity.is_empty() || !spec.anti_affinity.is_empty() {
            return false;
        }
        let selector: Vec<Requirement> = spec.node_selector.iter().map(|(k, v)| Requirement::is_in(k, &[v.as_str()])).collect();
        let target = self.nodes.iter().find(|(_, n)| {
            n.ready
                && n.schedulable
                && n.allocatable.covers(&n.used.saturating_add(spec.requests))
                && labels_match(&selector, &n.labels)
                && (spec.required_terms.is_empty() || spec.required_terms.iter().any(|t| labels_match(t, &n.labels)))
                && tolerates_all(&spec.tolerations, &n.taints)
        });
        match target.map(|(id, _)| *id) {
            Some(id) => {
                self.bind(pod, id);
                true
            }
            None => false,
        }
    }

    fn bind(&mut self, pod: &str, id: u64) {
        let Some(state) = self.pods.get_mut(pod) else { return };
        if state.node.is_some() {
            return;
        }
        let node = self.nodes.get_mut(&id).expect("binding to a known node");
        if self.cluster.bind(pod, &node.name).is_err() {
            return;
        }
        if let Some(since) = state.pending_since.take() {
            self.waits.push(self.last.saturating_sub(since).as_secs_f64());
        }
        state.node = Some(id);
        state.ever_bound = true;
        node.pods.insert(pod.into());
        node.nominated.remove(pod);
        node.used = node.used.saturating_add(state.spec.requests);
        self.totals.used_cpu += state.spec.requests.cpu_millis as f64;
        self.totals.used_memory += state.spec.requests.memory_bytes as f64;
    }

    fn delete_pod(&mut self, name: &str) {
        let Some(state) = self.pods.remove(name) else { return };
        match state.node {
            None => {
                // A pod that ends while pending waited all that time, and a
                // policy that never places it must not look fast for it.
                if let Some(since) = state.pending_since {
                    self.waits.push(self.last.saturating_sub(since).as_secs_f64());
                }
                if !state.ever_bound {
                    self.metrics.pods_never_scheduled += 1;
                }
                self.cluster.remove_pending(name);
                for node in self.nodes.values_mut() {
                    node.nominated.remove(name);
                }
            }
            Some(id) => {
                let node = self.nodes.get(&id).expect("bound to a known node");
                self.cluster.unbind(name, &node.name, &state.spec);
                self.take_off(name, id, state.spec.requests);
            }
        }
    }

    /// Pod `name` (requesting `requests`) no longer runs on node `id`.
    fn take_off(&mut self, name: &str, id: u64, requests: Resources) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.pods.remove(name);
            node.used = node.used.saturating_sub(requests);
        }
        self.totals.used_cpu -= requests.cpu_millis as f64;
        self.totals.used_memory -= requests.memory_bytes as f64;
    }

    fn provision(&mut self) -> anyhow::Result<()> {
        self.provision_queued = false;
        if !self.batcher.take(self.last) {
            self.queue_provision();
            return Ok(());
        }
        let report = drive(self.provisioner.provision())?;
        self.metrics.launch_failures += report.launch_failures.len() as u64;
        for launched in &report.launched {
            self.add_launched(launched);
        }
        for (pod, node) in &report.bindings {
            let Some(&id) = self.node_ids.get(node) else { continue };
            if self.nodes[&id].ready {
                self.bind(pod, id);
            } else if let Some(n) = self.nodes.get_mut(&id) {
                n.nominated.insert(pod.clone());
            }
        }
        Ok(())
    }

    /// A NodeClaim was launched: its node starts booting, and costs.
    fn add_launched(&mut self, launched: &LaunchedClaim) {
        let catalog = self.cloud.catalog();
        self.metrics.launches += 1;
        let offering = &catalog.offerings[launched.offering as usize];
        let id = self.next_node;
        self.next_node += 1;
        let spot = offering.capacity_type == CapacityType::Spot;
        let pool = self.pools.iter().find(|p| p.name == launched.node_pool).expect("launched for a known pool");
        self.nodes.insert(
            id,
            SimNode {
                name: launched.claim.clone(),
                instance: launched.instance.clone(),
                spot,
                offering: launched.offering,
                ready: false,
                pods: BTreeSet::new(),
                nominated: launched.pods.iter().filter(|p| self.pods.get(*p).is_some_and(|s| s.node.is_none())).cloned().collect(),
                used: Resources::default(),
                labels: crate::scheduling::node_labels(offering, pool, &launched.claim),
                taints: pool.taints.clone(),
                allocatable: offering.allocatable,
                schedulable: true,
            },
        );
        self.node_ids.insert(launched.claim.clone(), id);
        self.totals.nodes += 1;
        self.metrics.peak_nodes = self.metrics.peak_nodes.max(self.totals.nodes);
        if spot {
            self.totals.rate_spot += offering.price_per_hour;
        } else {
            self.totals.rate_on_demand += offering.price_per_hour;
        }
        let ready = self.cloud.ready_at(&launched.instance).unwrap_or(self.last);
        self.at(ready, Event::NodeReady(id));
        if spot && self.config.interruptions && self.config.interruption_scale > 0.0 {
            let monthly = offering.interruption.monthly_fraction();
            let rate = -(1.0 - monthly).ln() / MONTH_SECONDS * self.config.interruption_scale;
            let draw: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
            let after = -draw.ln() / rate;
            if after < self.trace.duration_s {
                self.at(self.last + Duration::from_secs_f64(after), Event::Interrupt(id));
            }
        }
    }

    fn node_ready(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        if self.cluster.register(&node.name).is_err() {
            return;
        }
        node.ready = true;
        self.totals.alloc_cpu += node.allocatable.cpu_millis as f64;
        self.totals.alloc_memory += node.allocatable.memory_bytes as f64;
        let nominated: Vec<String> = node.nominated.iter().cloned().collect();
        for pod in nominated {
            self.bind(&pod, id);
        }
        if let Some(node) = self.nodes.get_mut(&id) {
            node.nominated.clear();
        }
        // Pods that arrived while it booted may fit now.
        let pending = self.cluster.pending_names();
        let mut still = false;
        for pod in pending {
            if self.pods.get(&pod).is_some_and(|p| p.node.is_none()) && !self.bind_anywhere(&pod) {
                still = true;
            }
        }
        if still {
            self.batcher.arrival(self.last);
            self.queue_provision();
        }
    }

    /// Stop paying for node `id` and forget it; returns it.
    fn forget_node(&mut self, id: u64) -> Option<SimNode> {
        let node = self.nodes.remove(&id)?;
        self.node_ids.remove(&node.name);
        let price = self.cloud.catalog().offerings[node.offering as usize].price_per_hour;
        if node.spot {
            self.totals.rate_spot -= price;
        } else {
            self.totals.rate_on_demand -= price;
        }
        self.totals.nodes -= 1;
        if node.ready {
            self.totals.alloc_cpu -= node.allocatable.cpu_millis as f64;
            self.totals.alloc_memory -= node.allocatable.memory_bytes as f64;
        }
        self.totals.used_cpu -= node.used.cpu_millis as f64;
        self.totals.used_memory -= node.used.memory_bytes as f64;
        Some(node)
    }

    /// Remove a node (its instance is gone): its bound pods go back to pending.
    fn remove_node(&mut self, id: u64) -> u64 {
        let Some(node) = self.forget_node(id) else { return 0 };
        self.cluster.remove_node(&node.name);
        let _ = drive(self.cloud.terminate(&node.instance));
        let mut evicted = 0;
        let requeue: Vec<Pod> = node
            .pods
            .iter()
            .filter_map(|name| {
                let state = self.pods.get_mut(name)?;
                state.node = None;
                state.pending_since = Some(self.last);
                evicted += 1;
                Some(crate::model::Pod::new(name.clone(), state.spec.clone()))
            })
            .collect();
        let any = !requeue.is_empty() || !node.nominated.is_empty();
        self.cluster.add_pods(requeue);
        if any {
            self.batcher.arrival(self.last);
            self.queue_provision();
        }
        evicted
    }

    fn interrupt(&mut self, id: u64) {
        if !self.nodes.contains_key(&id) {
            return;
        }
        self.metrics.interruptions += 1;
        let evicted = self.remove_node(id);
        self.metrics.pods_disrupted += evicted;
    }

    /// One pass of the disruption controller, mirrored into the model:
    /// replacements start booting, cordoned nodes take no pods, evicted pods
    /// go back to pending, terminated nodes stop costing. Returns when the
    /// controller wants its next pass.
    fn disrupt(&mut self) -> anyhow::Result<Option<Duration>> {
        let report = drive(self.disruption.reconcile())?;
        for launched in &report.launched {
            self.add_launched(launched);
        }
        self.metrics.replacements += report.launched.len() as u64;
        self.metrics.disruptions_rejected += report.rejected.len() as u64;
        for (name, schedulable) in
            report.cordoned.iter().map(|n| (n, false)).chain(report.uncordoned.iter().map(|n| (n, true)))
        {
            if let Some(node) = self.node_ids.get(name).and_then(|id| self.nodes.get_mut(id)) {
                node.schedulable = schedulable;
            }
        }
        let mut evicted = Vec::new();
        for (pod, _) in &report.evicted {
            let Some(state) = self.pods.get_mut(pod) else { continue };
            let Some(id) = state.node.take() else { continue };
            state.pending_since = Some(self.last);
            let requests = state.spec.requests;
            self.take_off(pod, id, requests);
            self.metrics.pods_evicted += 1;
            evicted.push(pod.clone());
        }
        for (name, reason) in &report.terminated {
            if let Some(id) = self.node_ids.get(name).copied() {
                self.forget_node(id);
            }
            let counter = match reason {
                Reason::Empty => &mut self.metrics.disrupted_empty,
                Reason::Underutilized => &mut self.metrics.disrupted_underutilized,
                Reason::Drifted => &mut self.metrics.disrupted_drifted,
                Reason::Expired => &mut self.metrics.disrupted_expired,
            };
            *counter += 1;
            if matches!(reason, Reason::Empty | Reason::Underutilized) {
                self.metrics.consolidations += 1;
            }
        }
        let mut waiting = false;
        for pod in evicted {
            if !self.bind_anywhere(&pod) {
                waiting = true;
            }
        }
        if waiting {
            self.batcher.arrival(self.last);
            self.queue_provision();
        }
        Ok(report.next_wakeup.map(|at| at.saturating_sub(EPOCH_OFFSET)))
    }

    /// Let each family's spot discount drift by a seeded random walk.
    fn reprice(&mut self) {
        let mut offerings = self.base_catalog.offerings.clone();
        let families: BTreeSet<String> = offerings.iter().map(|o| o.family.clone()).collect();
        for family in families {
            let step = self.rng.random_range(-0.05..0.05);
            let drift = self.family_drift.entry(family).or_insert(1.0);
            *drift = (*drift * (1.0 + step)).clamp(0.7, 1.4);
        }
        for o in &mut offerings {
            if o.capacity_type == CapacityType::Spot {
                o.price_per_hour = (o.price_per_hour * self.family_drift[&o.family] * 1e6).round() / 1e6;
            }
        }
        let catalog = Arc::new(Catalog::new(offerings));
        let old = self.cloud.catalog();
        for node in self.nodes.values() {
            if node.spot {
                let i = node.offering as usize;
                self.totals.rate_spot += catalog.offerings[i].price_per_hour - old.offerings[i].price_per_hour;
            }
        }
        self.cloud.set_catalog(catalog);
    }

    fn sample(&mut self) {
        let (mut on_demand, mut spot) = (0, 0);
        for node in self.nodes.values() {
            if node.spot {
                spot += 1;
            } else {
                on_demand += 1;
            }
        }
        let t = &self.totals;
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        self.samples.push(Sample {
            hour: round(self.last.as_secs_f64() / 3600.0, 4),
            cost: round(self.metrics.cost_on_demand + self.metrics.cost_spot, 4),
            on_demand_nodes: on_demand,
            spot_nodes: spot,
            cpu_utilisation: round(ratio(t.used_cpu, t.alloc_cpu), 4),
            memory_utilisation: round(ratio(t.used_memory, t.alloc_memory), 4),
            pending: self.pods.values().filter(|p| p.node.is_none()).count() as u32,
        });
    }

    fn finish(mut self) -> SimulationResult {
        let mut plugin_ms = 0.0;
        for slot in self.registry.slots() {
            let stats = slot.stats();
            self.metrics.plugin_calls += stats.calls;
            self.metrics.plugin_failures += stats.failures.values().sum::<u64>();
            if let Some(plugin) = slot.active_plugin() {
                plugin_ms += plugin.call_stats().1 as f64 / 1e6;
            }
        }
        let m = &mut self.metrics;
        m.cost_total = m.cost_on_demand + m.cost_spot;
        let t = &self.totals;
        m.cpu_utilisation = if t.alloc_cpu_time > 0.0 { t.cpu_time / t.alloc_cpu_time } else { 0.0 };
        m.memory_utilisation = if t.alloc_memory_time > 0.0 { t.memory_time / t.alloc_memory_time } else { 0.0 };
        // Pods still pending at the end have waited until the end (at least).
        let still_waiting: Vec<f64> = self
            .pods
            .values()
            .filter(|p| p.node.is_none())
            .filter_map(|p| p.pending_since)
            .map(|since| self.last.saturating_sub(since).as_secs_f64())
            .collect();
        self.waits.extend(still_waiting);
        self.waits.sort_by(f64::total_cmp);
        let pct = |q: f64| -> f64 {
            if self.waits.is_empty() {
                return 0.0;
            }
            self.waits[((self.waits.len() - 1) as f64 * q).round() as usize]
        };
        m.pod_wait_p50_s = pct(0.50);
        m.pod_wait_p95_s = pct(0.95);
        m.pod_wait_p99_s = pct(0.99);
        m.pods_pending_at_end = self.pods.values().filter(|p| p.node.is_none()).count() as u64;
        for value in [
            &mut m.cost_total,
            &mut m.cost_on_demand,
            &mut m.cost_spot,
            &mut m.node_hours,
            &mut m.cpu_utilisation,
            &mut m.memory_utilisation,
            &mut m.pod_wait_p50_s,
            &mut m.pod_wait_p95_s,
            &mut m.pod_wait_p99_s,
        ] {
            *value = round(*value, 4);
        }
        SimulationResult { policy: self.policy.clone(), metrics: self.metrics, samples: self.samples, plugin_ms }
    }
}


fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// Run a controller's future to completion. The simulated cloud and cluster
/// never wait on I/O or timers, so a plain executor drives them, outside any
/// tokio runtime: plugin calls then run on this thread rather than being
/// handed to the runtime's call threads.
fn drive<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}
