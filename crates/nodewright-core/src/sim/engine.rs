//! Discrete events on a virtual clock, over one [`World`].
//!
//! The engine plays the trace and the passage of time; everything else is
//! the world's: the controllers decide, the simulated cluster binds pods
//! that fit (its kube-scheduler) and recreates stopped ones, the simulated
//! cloud boots, bills and reclaims instances. Metrics are read from the
//! world: the bill from the cloud, pod waits from the cluster's pod events.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::trace::{Trace, TraceEventKind};
use super::world::{EPOCH_OFFSET, SimClock, World, WorldSettings, drive};
use crate::cloud::{SPOT_WARNING, SimulatedCloudConfig};
use crate::cluster::PodEvent;
use crate::disruption::{DisruptionSettings, Reason};
use crate::interruption::{InterruptionKind, Outcome};
use crate::model::stream::{Stream, key, unit};
use crate::model::{CapacityType, Catalog, NodePool, PolicyRef};
use crate::policy::{PolicyRuntime, RuntimeConfig};
use crate::provisioning::{Batcher, BatcherSettings};

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct SimulationConfig {
    /// Seed of every random draw (boot latency, interruptions, spot prices,
    /// plugins); each kind of draw has its own stream.
    pub seed: u64,
    /// Node boot latency, drawn uniformly from this range.
    pub boot_latency: (Duration, Duration),
    /// Spot pools are reclaimed at the rates of their buckets.
    pub interruptions: bool,
    /// Multiplies every interruption rate (stress: "what if spot were ten
    /// times as volatile").
    pub interruption_scale: f64,
    /// Let spot discounts drift every 6 hours.
    pub spot_drift: bool,
    /// Spot pools have a capacity that moves hour by hour: a full pool
    /// refuses launches, a shrinking one reclaims its newest instances
    /// (see [`crate::cloud::SimulatedCloud::pool_capacity`]).
    pub spot_pools: bool,
    /// Time from a pod stopping (evicted, interrupted) until it is pending again.
    pub restart_delay: Duration,
    /// Provisioning batch windows.
    pub batcher: BatcherSettings,
    /// How often a sample is taken for the charts.
    pub sample_every: Duration,
    /// Where compiled components are cached.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Plugin limits (CPU deadlines, memory).
    pub limits: crate::policy::Limits,
    /// The disruption controller's knobs (spot-to-spot consolidation among them).
    pub disruption: DisruptionSettings,
    /// The interruption controller replaces a node on a rebalance
    /// recommendation, as on an interruption warning (off: it only records it).
    pub rebalance_actionable: bool,
    /// Savings Plans and Reserved Instances the bill applies.
    pub commitments: crate::model::Commitments,
}

impl Default for SimulationConfig {
    fn default() -> Self {
        SimulationConfig {
            seed: 1,
            boot_latency: (Duration::from_secs(30), Duration::from_secs(90)),
            interruptions: true,
            interruption_scale: 1.0,
            spot_drift: true,
            spot_pools: true,
            restart_delay: Duration::from_secs(10),
            batcher: BatcherSettings::default(),
            sample_every: Duration::from_secs(300),
            cache_dir: crate::policy::RuntimeConfig::default().cache_dir,
            limits: crate::policy::Limits::default(),
            // A pass a simulated minute (the controller in a cluster polls every 10 s).
            disruption: DisruptionSettings { poll_interval: Duration::from_secs(60), ..DisruptionSettings::default() },
            rebalance_actionable: false,
            commitments: crate::model::Commitments::default(),
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
    /// Total dollars: every instance billed per second from launch to
    /// termination, at least a minute each.
    pub cost_total: f64,
    /// Dollars on on-demand (and reserved) capacity.
    pub cost_on_demand: f64,
    /// Dollars on spot capacity.
    pub cost_spot: f64,
    /// With commitments: what the run costs once they are applied
    /// (commitment fees, uncovered on-demand, spot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_effective: Option<f64>,
    /// With commitments: the bill's parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commitments: Option<crate::cloud::billing::CommittedBill>,
    /// Instance-hours billed (booting instances included).
    pub node_hours: f64,
    /// CPU requested by bound pods / allocatable, over the billed node-seconds.
    pub cpu_utilisation: f64,
    /// Memory requested by bound pods / allocatable, over the billed node-seconds.
    pub memory_utilisation: f64,
    /// First scheduling: created → first bound, seconds; a pod deleted
    /// before it ran, or still pending at the end, counts the time it waited.
    pub first_wait_p50_s: f64,
    /// 95th percentile.
    pub first_wait_p95_s: f64,
    /// 99th percentile.
    pub first_wait_p99_s: f64,
    /// Rescheduling: stopped (evicted, interrupted) → bound again, seconds,
    /// restart delay included.
    pub reschedule_wait_p50_s: f64,
    /// 95th percentile.
    pub reschedule_wait_p95_s: f64,
    /// 99th percentile.
    pub reschedule_wait_p99_s: f64,
    /// Pods that arrived.
    pub pods: u64,
    /// Pods pending (or restarting) at the end.
    pub pods_pending_at_end: u64,
    /// Pods deleted (their work ended) before any node ran them.
    pub pods_never_scheduled: u64,
    /// Pods stopped by spot interruptions.
    pub pods_disrupted: u64,
    /// Pods evicted by disruption (consolidation, drift, expiry).
    pub pods_evicted: u64,
    /// Work of jobs lost to evictions and interruptions: pod-hours run
    /// before being stopped.
    pub lost_pod_hours: f64,
    /// What the node time that lost work used cost: for each lost stretch,
    /// its hours × the node's price × the pod's share of the node's CPU.
    pub lost_work_dollars: f64,
    /// Spot interruption warnings received for running instances.
    pub interruptions: u64,
    /// Rebalance recommendations received for running instances.
    pub rebalance_recommendations: u64,
    /// Replacement NodeClaims the interruption controller launched.
    pub interruption_replacements: u64,
    /// Pods still on an instance when AWS reclaimed it (the interruption
    /// controller did not drain it within the two-minute warning).
    pub pods_lost_to_reclaim: u64,
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
    /// Passes of the disruption controller run, and skipped because nothing
    /// had changed since a pass that found nothing.
    pub disruption_passes: u64,
    /// (See `disruption_passes`.)
    pub disruption_passes_skipped: u64,
    /// Successful launches.
    pub launches: u64,
    /// Failed launches (capacity).
    pub launch_failures: u64,
    /// Decisions asked of plugins (selection and consolidation).
    pub plugin_calls: u64,
    /// Failed plugin calls, answered by the built-in policy.
    pub plugin_failures: u64,
    /// Most instances at once.
    pub peak_nodes: u64,
    /// Highest CPU requested / allocatable of any node at any sample (≤ 1).
    pub peak_node_cpu_request_ratio: f64,
    /// Highest memory requested / allocatable of any node at any sample (≤ 1).
    pub peak_node_memory_request_ratio: f64,
}

/// One point of the time series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// Hours from the start.
    pub hour: f64,
    /// Dollars so far.
    pub cost: f64,
    /// On-demand instances.
    pub on_demand_nodes: u32,
    /// Spot instances.
    pub spot_nodes: u32,
    /// CPU requested / allocatable of every running instance now.
    pub cpu_utilisation: f64,
    /// Memory requested / allocatable of every running instance now.
    pub memory_utilisation: f64,
    /// Pods pending (or restarting) now.
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
    /// Launches and disruptions, with why.
    pub decisions: super::decisions::DecisionLog,
    /// The nodes every simulated hour (`timeline.json`, `nodewright top`).
    #[serde(skip)]
    pub timeline: Vec<super::timeline::Frame>,
    /// The cluster when the trace ended: its nodes (with their labels,
    /// taints and pods) and which node each running pod is bound to. Not
    /// in `report.json`.
    #[serde(skip)]
    pub end: EndState,
}

/// The cluster when a simulation ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndState {
    /// Registered nodes.
    pub nodes: Vec<crate::model::ExistingNode>,
    /// Running pod → its node.
    pub placements: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Trace(usize),
    Provision,
    /// The instance of this claim has booted: its node registers.
    NodeReady(String),
    /// Rebalance recommendation for (instance).
    Rebalance(String),
    /// Spot interruption warning for (instance).
    Warn(String),
    /// The end of the warning: AWS takes (instance, claim) back.
    Reclaim(String, String),
    Restart,
    Disrupt,
    Reprice,
    Sample,
    /// A job's pod may have done its work: it ends if it has run its
    /// work uninterrupted by now.
    JobDone(String),
    /// The top of an hour: spot pools move, and those that shrank below
    /// what runs in them reclaim the excess.
    PoolCheck,
}

/// What the engine knows of a pod to measure it.
struct PodLife {
    waiting_since: Option<Duration>,
    bound_at: Option<Duration>,
    ever_bound: bool,
    job: bool,
    /// A job's work: the time from its `add` to its `del` in the trace.
    work: Duration,
    /// The trace ended this job while its work was not done: it ends once
    /// it has run `work` uninterrupted.
    overdue: bool,
    /// Its CPU request, millicores.
    cpu_millis: u32,
    /// Its share of its node's price while bound, $ per hour: the node's
    /// price × its CPU request / the node's allocatable CPU.
    node_share_per_hour: f64,
}

/// Which step stopped pods (for the eviction counters).
#[derive(Clone, Copy)]
enum Step {
    Other,
    Interruption,
    Reclaim,
    Disruption,
}

struct Sim<'a> {
    trace: &'a Trace,
    config: &'a SimulationConfig,
    world: World,
    /// Events to come, by time, then in the order they were queued.
    queue: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    /// The trace's instants (when, index of its first event), by time, and
    /// the next to play: they come before whatever is queued for the same
    /// time, as if queued first, and stay out of the queue, which holds
    /// only what the run itself schedules.
    instants: Vec<(Duration, usize)>,
    next_instant: usize,
    seq: u64,
    disrupt_at: Duration,
    batcher: Batcher,
    provision_queued: bool,
    restart_queued: Option<Duration>,
    policy: &'a PolicyUnderTest,
    base_catalog: Arc<Catalog>,
    family_drift: BTreeMap<String, f64>,
    reprice_step: u64,
    /// Instances warned of their reclaim (each is warned once).
    warned: std::collections::HashSet<String>,
    pods: rustc_hash::FxHashMap<String, PodLife>,
    /// The work of each job's `add` event (by event index): the time to its `del`.
    work: Vec<Option<Duration>>,
    first_waits: Vec<f64>,
    re_waits: Vec<f64>,
    metrics: Metrics,
    cpu_time: f64,
    memory_time: f64,
    last: Duration,
    end: Duration,
    samples: Vec<Sample>,
    /// Room was freed or a node came: the scheduler retries every pending pod.
    retry_all: bool,
    decisions: super::decisions::DecisionLog,
    timeline: Vec<super::timeline::Frame>,
    /// Rejections already logged (method, nodes, rule): a repeat is not.
    rejections_logged: std::collections::HashSet<String>,
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
    let pools: Vec<NodePool> = pools
        .iter()
        .map(|p| NodePool { selection: policy.selection.clone(), consolidation: policy.consolidation.clone(), ..p.clone() })
        .collect();
    let settings = WorldSettings {
        cloud: SimulatedCloudConfig {
            seed: config.seed,
            capacity_failure: HashMap::new(),
            boot_latency: config.boot_latency,
            interruption_scale: if config.interruptions { config.interruption_scale } else { 0.0 },
            spot_pools: config.spot_pools,
            reserved_capacity: config
                .commitments
                .capacity_reservations
                .iter()
                .filter_map(|r| catalog.reserved_offering(&r.instance_type, &r.zone).map(|o| (o, r.count)))
                .collect(),
        },
        restart_delay: config.restart_delay,
        disruption: config.disruption.clone(),
        rebalance_actionable: config.rebalance_actionable,
        commitments: config.commitments.clone(),
    };
    let world = World::new(&runtime, clock, catalog.clone(), pools, settings);
    if let Err(e) = world.configure_policies() {
        anyhow::bail!("policy {}: {e}", policy.name);
    }
    let end = crate::model::quantity::checked_seconds(trace.duration_s).map_err(anyhow::Error::msg)?;
    let mut sim = Sim {
        trace,
        config,
        world,
        queue: BinaryHeap::new(),
        instants: Vec::new(),
        next_instant: 0,
        seq: 0,
        disrupt_at: Duration::ZERO, // the first is set by `run`
        batcher: Batcher::new(config.batcher),
        provision_queued: false,
        restart_queued: None,
        policy,
        base_catalog: catalog,
        family_drift: BTreeMap::new(),
        reprice_step: 0,
        warned: Default::default(),
        pods: rustc_hash::FxHashMap::default(),
        work: job_work(trace),
        first_waits: Vec::new(),
        re_waits: Vec::new(),
        metrics: Metrics::default(),
        cpu_time: 0.0,
        memory_time: 0.0,
        last: Duration::ZERO,
        end,
        samples: Vec::new(),
        retry_all: false,
        decisions: Default::default(),
        timeline: Vec::new(),
        rejections_logged: Default::default(),
    };
    sim.run(&mut progress)?;
    Ok(sim.finish())
}

const REPRICE_EVERY: Duration = Duration::from_secs(6 * 3600);
/// Spot pools move at the top of every hour.
const POOL_CHECK_EVERY: Duration = Duration::from_secs(3600);

impl Sim<'_> {
    /// Disruption passes run every poll interval (at least a second apart),
    /// and sooner when the controller asks.
    fn disrupt_every(&self) -> Duration {
        self.config.disruption.poll_interval.max(Duration::from_secs(1))
    }

    fn at(&mut self, when: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((when, self.seq, event)));
    }

    fn run(&mut self, progress: &mut impl FnMut(f64)) -> anyhow::Result<()> {
        for (i, event) in self.trace.events.iter().enumerate() {
            if i == 0 || event.t != self.trace.events[i - 1].t {
                self.instants.push((Duration::from_secs_f64(event.t), i));
            }
        }
        // (A trace read from a file is in order already; one made in
        // memory may not be. Stable: an instant's events keep their order.)
        self.instants.sort_by_key(|&(when, _)| when);
        self.at(Duration::ZERO, Event::Sample);
        self.disrupt_at = self.disrupt_every();
        self.at(self.disrupt_at, Event::Disrupt);
        if self.config.spot_drift {
            self.at(REPRICE_EVERY, Event::Reprice);
        }
        if self.config.spot_pools && self.config.interruptions {
            self.at(POOL_CHECK_EVERY, Event::PoolCheck);
        }
        let mut reported = 0.0;
        while let Some((when, event)) = self.next_event() {
            if when > self.end {
                break;
            }
            self.advance(when);
            let mut step = Step::Other;
            match event {
                Event::Trace(first) => self.trace_events(first),
                Event::Provision => self.provision()?,
                Event::NodeReady(claim) => {
                    if self.world.register(&claim).is_ok() {
                        self.retry_all = true;
                    }
                }
                Event::Rebalance(instance) => {
                    step = Step::Interruption;
                    self.rebalance(instance)?;
                }
                Event::Warn(instance) => {
                    step = Step::Interruption;
                    self.warn(instance)?;
                }
                Event::Reclaim(instance, claim) => {
                    step = Step::Reclaim;
                    if self.world.cloud.reclaim(&instance) {
                        self.world.cluster.remove_node(&claim);
                    }
                }
                Event::Restart => {
                    self.restart_queued = None;
                    self.world.cluster.restart_due();
                }
                Event::Disrupt if when == self.disrupt_at => {
                    step = Step::Disruption;
                    let every = self.disrupt_every();
                    let next = self.disrupt()?.map_or(when + every, |w| w.min(when + every));
                    self.disrupt_at = next.max(when + Duration::from_secs(1));
                    self.at(self.disrupt_at, Event::Disrupt);
                }
                Event::Disrupt => {}
                Event::Reprice => {
                    self.reprice();
                    self.at(when + REPRICE_EVERY, Event::Reprice);
                }
                Event::Sample => {
                    // The controllers `run` keeps on an interval: NodePool
                    // statuses, PolicyPlugins (none unless a test adds them).
                    drive(self.world.policy_plugins.reconcile())?;
                    drive(self.world.node_pool_status.reconcile())?;
                    self.sample();
                    self.at(when + self.config.sample_every, Event::Sample);
                }
                Event::JobDone(name) => {
                    let done = self.pods.get(&name).is_some_and(|l| l.bound_at.is_some_and(|b| self.last.saturating_sub(b) >= l.work));
                    if done {
                        self.delete_pod(&name);
                    }
                }
                Event::PoolCheck => {
                    step = Step::Interruption;
                    for instance in self.world.cloud.pool_shortfalls() {
                        self.warn(instance)?;
                    }
                    self.at(when + POOL_CHECK_EVERY, Event::PoolCheck);
                }
            }
            self.settle(step);
            let done = when.as_secs_f64() / self.trace.duration_s;
            if done - reported >= 0.01 {
                reported = done;
                progress(done.min(1.0));
            }
        }
        self.advance(self.end);
        self.sample();
        progress(1.0);
        Ok(())
    }

    /// The next event: the trace's next instant, unless something queued
    /// comes strictly before it.
    fn next_event(&mut self) -> Option<(Duration, Event)> {
        let queued = self.queue.peek().map(|Reverse((when, _, _))| *when);
        match self.instants.get(self.next_instant) {
            Some(&(when, first)) if queued.is_none_or(|q| when <= q) => {
                self.next_instant += 1;
                Some((when, Event::Trace(first)))
            }
            _ => self.queue.pop().map(|Reverse((when, _, event))| (when, event)),
        }
    }

    /// Integrate requested resources up to `to` and move the clock there.
    fn advance(&mut self, to: Duration) {
        let dt = to.saturating_sub(self.last).as_secs_f64();
        if dt > 0.0 {
            let bound = self.world.cluster.bound_requests();
            self.cpu_time += bound.0 as f64 * dt;
            self.memory_time += bound.1 as f64 * dt;
        }
        self.last = to.max(self.last);
        self.world.clock.set(self.last);
    }

    /// After a step: follow what it changed. New instances boot (and may be
    /// reclaimed), stopped pods come back after their restart delay, the
    /// scheduler binds what fits, and pods nothing holds start a batch.
    fn settle(&mut self, step: Step) {
        for instance in self.world.cloud.take_launched() {
            self.metrics.launches += 1;
            let ready = self.world.cloud.ready_at(&instance.id).unwrap_or(self.last);
            self.at(ready, Event::NodeReady(instance.claim.clone()));
            let reclaim = self.world.cloud.next_reclaim(instance.offering, self.last + SPOT_WARNING, self.end + SPOT_WARNING);
            if let Some(reclaim) = reclaim {
                self.at(reclaim - SPOT_WARNING, Event::Warn(instance.id.clone()));
                if let Some(at) = self.world.cloud.rebalance_before(instance.offering, reclaim)
                    && at >= self.last
                {
                    self.at(at, Event::Rebalance(instance.id.clone()));
                }
            }
        }
        let (on_demand, spot) = self.world.cloud.running();
        self.metrics.peak_nodes = self.metrics.peak_nodes.max(u64::from(on_demand + spot));
        self.follow_pods(step);
        let all = std::mem::take(&mut self.retry_all);
        let (pending_before, _) = self.world.cluster.waiting();
        if pending_before == 0 {
            return;
        }
        let unplaced = self.world.cluster.schedule_pending(all).unplaced;
        self.follow_pods(step);
        if unplaced > 0 {
            self.batcher.arrival(self.last);
            self.queue_provision();
        }
    }

    /// Read the cluster's pod events: waits, lost work, restarts to come.
    fn follow_pods(&mut self, step: Step) {
        let catalog = crate::cloud::CloudProvider::catalog(&*self.world.cloud);
        for event in self.world.cluster.take_pod_events() {
            match event {
                PodEvent::Bound { pod, node } => {
                    let Some(life) = self.pods.get_mut(&pod) else { continue };
                    life.node_share_per_hour = self
                        .world
                        .cluster
                        .claim_offering(&node)
                        .and_then(|o| catalog.offerings.get(o as usize))
                        .filter(|o| o.allocatable.cpu_millis > 0)
                        .map_or(0.0, |o| o.price_per_hour * f64::from(life.cpu_millis) / f64::from(o.allocatable.cpu_millis));
                    if let Some(since) = life.waiting_since.take() {
                        let wait = self.last.saturating_sub(since).as_secs_f64();
                        if life.ever_bound { self.re_waits.push(wait) } else { self.first_waits.push(wait) }
                    }
                    life.ever_bound = true;
                    life.bound_at = Some(self.last);
                    if life.overdue {
                        let done = self.last + life.work;
                        self.at(done, Event::JobDone(pod.clone()));
                    }
                }
                PodEvent::Stopped { pod, restart_at, .. } => {
                    match step {
                        Step::Interruption => self.metrics.pods_disrupted += 1,
                        Step::Reclaim => {
                            self.metrics.pods_disrupted += 1;
                            self.metrics.pods_lost_to_reclaim += 1;
                        }
                        Step::Disruption => self.metrics.pods_evicted += 1,
                        Step::Other => {}
                    }
                    if let Some(life) = self.pods.get_mut(&pod) {
                        if let Some(bound_at) = life.bound_at.take()
                            && life.job
                        {
                            let hours = self.last.saturating_sub(bound_at).as_secs_f64() / 3600.0;
                            self.metrics.lost_pod_hours += hours;
                            self.metrics.lost_work_dollars += hours * life.node_share_per_hour;
                        }
                        life.waiting_since = Some(self.last);
                    }
                    if self.restart_queued.is_none_or(|at| restart_at < at) {
                        self.restart_queued = Some(restart_at);
                        self.at(restart_at, Event::Restart);
                    }
                }
            }
        }
    }

    fn trace_events(&mut self, first: usize) {
        let t = self.trace.events[first].t;
        let mut added = Vec::new();
        for (index, event) in self.trace.events.iter().enumerate().skip(first).take_while(|(_, e)| e.t == t) {
            match &event.kind {
                TraceEventKind::Add(pod) => {
                    self.metrics.pods += 1;
                    self.pods.insert(
                        pod.name.to_string(),
                        PodLife {
                            waiting_since: Some(self.last),
                            bound_at: None,
                            ever_bound: false,
                            job: event.job,
                            work: self.work.get(index).copied().flatten().unwrap_or_default(),
                            overdue: false,
                            cpu_millis: pod.spec.requests.cpu_millis,
                            node_share_per_hour: 0.0,
                        },
                    );
                    added.push(pod.clone());
                }
                TraceEventKind::Delete(name) => {
                    // Pods added at this instant first, as the trace orders them.
                    self.world.cluster.add_pods(std::mem::take(&mut added));
                    // A job ends when its work is done: one that was
                    // evicted, or started late, runs on.
                    if let Some(life) = self.pods.get_mut(name.as_str())
                        && life.job
                        && life.bound_at.is_none_or(|b| self.last.saturating_sub(b) < life.work)
                    {
                        life.overdue = true;
                        if let Some(b) = life.bound_at {
                            let done = b + life.work;
                            self.at(done, Event::JobDone(name.clone()));
                        }
                        continue;
                    }
                    self.delete_pod(name);
                }
                TraceEventKind::Pdb(pdb) => self.world.cluster.add_pdb(pdb.clone()),
                TraceEventKind::DeletePdb(name) => self.world.cluster.remove_pdb(name),
                TraceEventKind::DaemonSet(name, spec) => self.world.cluster.put_daemonset(name, spec.as_ref().clone()),
                TraceEventKind::DeleteDaemonSet(name) => self.world.cluster.remove_daemonset(name),
            }
        }
        self.world.cluster.add_pods(added);
    }

    fn delete_pod(&mut self, name: &str) {
        if self.world.cluster.delete_pod(name) {
            self.retry_all = true;
        }
        let Some(life) = self.pods.remove(name) else { return };
        // A pod that ends while pending waited all that time, and a policy
        // that never places it must not look fast for it.
        if let Some(since) = life.waiting_since {
            let wait = self.last.saturating_sub(since).as_secs_f64();
            if life.ever_bound { self.re_waits.push(wait) } else { self.first_waits.push(wait) }
        }
        if !life.ever_bound {
            self.metrics.pods_never_scheduled += 1;
        }
    }

    fn queue_provision(&mut self) {
        if !self.provision_queued && let Some(due) = self.batcher.due() {
            self.provision_queued = true;
            self.at(due.max(self.last), Event::Provision);
        }
    }

    fn provision(&mut self) -> anyhow::Result<()> {
        self.provision_queued = false;
        if !self.batcher.take(self.last) {
            self.queue_provision();
            return Ok(());
        }
        let report = drive(self.world.provisioner.provision())?;
        self.metrics.launch_failures += report.launch_failures.len() as u64;
        self.log_launches(report.launched);
        Ok(())
    }

    fn hour(&self) -> f64 {
        round(self.last.as_secs_f64() / 3600.0, 4)
    }

    fn log_launches(&mut self, launched: Vec<crate::provisioning::LaunchedClaim>) {
        let hour = self.hour();
        for explanation in launched.into_iter().filter_map(|l| l.explanation) {
            self.decisions.push(super::decisions::Decision { hour, launch: Some(explanation), disruption: None });
        }
    }

    /// The cloud's spot interruption warning for `instance`, handed to the
    /// interruption controller as the queue consumer would; AWS reclaims the
    /// instance two minutes later whatever the controller did.
    fn warn(&mut self, instance: String) -> anyhow::Result<()> {
        let Some(claim) = self.world.cloud.claim_of(&instance) else {
            return Ok(()); // already gone
        };
        if !self.warned.insert(instance.clone()) {
            return Ok(()); // a pool that shrank warned it already
        }
        self.metrics.interruptions += 1;
        let id = format!("sim-{}-{}", instance, self.last.as_secs());
        self.notify(&id, InterruptionKind::SpotInterruption { instance: instance.clone() })?;
        self.at(self.last + SPOT_WARNING, Event::Reclaim(instance, claim));
        Ok(())
    }

    /// Hand event `id` of `kind` to the real interruption controller, as
    /// the SQS consumer would, and count the replacements it launched.
    fn notify(&mut self, id: &str, kind: InterruptionKind) -> anyhow::Result<()> {
        if let Outcome::Replaced { replacements, .. } = drive(self.world.interruption.handle_event(id, kind))? {
            self.metrics.interruption_replacements += replacements as u64;
        }
        Ok(())
    }

    /// A rebalance recommendation for `instance`, handed to the real
    /// interruption controller (which acts on it only when told to).
    fn rebalance(&mut self, instance: String) -> anyhow::Result<()> {
        if self.world.cloud.claim_of(&instance).is_none() {
            return Ok(()); // already gone
        }
        self.metrics.rebalance_recommendations += 1;
        let id = format!("sim-rebalance-{}-{}", instance, self.last.as_secs());
        self.notify(&id, InterruptionKind::Rebalance { instance })
    }

    /// One pass of the disruption controller. Returns when it wants its next pass.
    fn disrupt(&mut self) -> anyhow::Result<Option<Duration>> {
        let report = self.world.disrupt()?;
        self.metrics.replacements += report.launched.len() as u64;
        self.metrics.disruptions_rejected += report.rejected.len() as u64;
        let hour = self.hour();
        let catalog = crate::cloud::CloudProvider::catalog(&*self.world.cloud);
        let consolidation = self.policy.consolidation.plugin.clone();
        for command in &report.started {
            let what = crate::disruption::DisruptionExplanation::started(command, &consolidation, &catalog);
            self.decisions.push(super::decisions::Decision { hour, launch: None, disruption: Some(Box::new(what)) });
        }
        for rejection in &report.rejected {
            let key = format!("{:?} {:?} {}", rejection.command.reason, rejection.command.nodes, rejection.rule);
            if self.rejections_logged.insert(key) {
                let what = crate::disruption::DisruptionExplanation::rejected(rejection, &consolidation, &catalog);
                self.decisions.push(super::decisions::Decision { hour, launch: None, disruption: Some(Box::new(what)) });
            }
        }
        self.log_launches(report.launched.clone());
        if !report.uncordoned.is_empty() {
            self.retry_all = true;
        }
        for (_, reason) in &report.terminated {
            let counter = match reason {
                Reason::Empty => &mut self.metrics.disrupted_empty,
                Reason::Underutilized => &mut self.metrics.disrupted_underutilized,
                Reason::Drifted => &mut self.metrics.disrupted_drifted,
                // (The simulator deletes no NodeClaim by hand.)
                Reason::Expired | Reason::Deleted => &mut self.metrics.disrupted_expired,
            };
            *counter += 1;
            if matches!(reason, Reason::Empty | Reason::Underutilized) {
                self.metrics.consolidations += 1;
            }
        }
        Ok(report.next_wakeup.map(|at| at.saturating_sub(EPOCH_OFFSET)))
    }

    /// Let each family's spot discount drift by a seeded random walk (one
    /// stream per family and step).
    fn reprice(&mut self) {
        self.reprice_step += 1;
        let mut offerings = self.base_catalog.offerings.clone();
        let families: std::collections::BTreeSet<String> = offerings.iter().map(|o| o.family.clone()).collect();
        for family in families {
            let step = unit(self.config.seed, Stream::Price, key(&family), self.reprice_step) * 0.1 - 0.05;
            let drift = self.family_drift.entry(family).or_insert(1.0);
            *drift = (*drift * (1.0 + step)).clamp(0.7, 1.4);
        }
        for o in &mut offerings {
            if o.capacity_type == CapacityType::Spot {
                o.price_per_hour = (o.price_per_hour * self.family_drift[&o.family] * 1e6).round() / 1e6;
            }
        }
        self.world.cloud.set_catalog(Arc::new(self.base_catalog.repriced(offerings)));
    }

    fn sample(&mut self) {
        let bill = self.world.cloud.bill();
        let (on_demand, spot) = self.world.cloud.running();
        let allocatable = self.world.cloud.running_allocatable();
        let bound = self.world.cluster.bound_requests();
        let (pending, restarting) = self.world.cluster.waiting();
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let (node_cpu, node_memory) = self.world.cluster.with_nodes(|nodes| {
            nodes.iter().fold((0.0f64, 0.0f64), |(c, m), n| {
                let used = n.used();
                (
                    c.max(ratio(used.cpu_millis as f64, n.allocatable.cpu_millis as f64)),
                    m.max(ratio(used.memory_bytes as f64, n.allocatable.memory_bytes as f64)),
                )
            })
        });
        let m = &mut self.metrics;
        m.peak_node_cpu_request_ratio = m.peak_node_cpu_request_ratio.max(node_cpu);
        m.peak_node_memory_request_ratio = m.peak_node_memory_request_ratio.max(node_memory);
        self.samples.push(Sample {
            hour: self.hour(),
            cost: round(bill.on_demand + bill.spot, 4),
            on_demand_nodes: on_demand,
            spot_nodes: spot,
            cpu_utilisation: round(ratio(bound.0 as f64, allocatable.0), 4),
            memory_utilisation: round(ratio(bound.1 as f64, allocatable.1), 4),
            pending: (pending + restarting) as u32,
        });
        // A frame of the nodes every hour (the first sample of the hour).
        let hour = self.last.as_secs() / 3600;
        if self.timeline.last().is_none_or(|f| (f.hour as u64) < hour) {
            let frame = self.frame(u32::try_from(pending + restarting).unwrap_or(u32::MAX));
            self.timeline.push(frame);
        }
    }

    /// The nodes now, as `nodewright top` shows them.
    fn frame(&self, pending: u32) -> super::timeline::Frame {
        use crate::model::well_known;
        let catalog = crate::cloud::CloudProvider::catalog(&*self.world.cloud);
        // A copy: the price lookup reads the cluster's state again.
        let nodes = self.world.cluster.with_nodes(<[_]>::to_vec);
        let nodes = nodes
                .iter()
                .map(|n| {
                    let label = |k: &str| n.labels.get(k).cloned().unwrap_or_default();
                    let used = n.used();
                    let price = self.world.cluster.claim_offering(&n.name).and_then(|o| catalog.offerings.get(o as usize)).map_or(0.0, |o| o.price_per_hour);
                    super::timeline::NodeRow {
                        name: n.name.clone(),
                        node_pool: n.node_pool.clone().unwrap_or_default(),
                        instance_type: label(well_known::INSTANCE_TYPE),
                        capacity_type: label(well_known::CAPACITY_TYPE),
                        zone: label(well_known::ZONE),
                        price_per_hour: round(price, 4),
                        cpu_requested_m: used.cpu_millis.into(),
                        cpu_allocatable_m: n.allocatable.cpu_millis.into(),
                        memory_requested_mib: used.memory_bytes >> 20,
                        memory_allocatable_mib: n.allocatable.memory_bytes >> 20,
                        pods: u32::try_from(n.pods.len()).unwrap_or(u32::MAX),
                    }
                })
                .collect();
        super::timeline::Frame { hour: self.hour(), pending, nodes }
    }

    fn finish(mut self) -> SimulationResult {
        let end = EndState { nodes: self.world.cluster.with_nodes(<[_]>::to_vec), placements: self.world.cluster.placements() };
        let mut plugin_ms = 0.0;
        for slot in self.world.registry.slots() {
            let stats = slot.stats();
            self.metrics.plugin_calls += stats.calls;
            self.metrics.plugin_failures += stats.failures.values().sum::<u64>();
            if let Some(plugin) = slot.active_plugin() {
                plugin_ms += plugin.call_stats().1 as f64 / 1e6;
            }
        }
        let counts = self.world.disruption.counts();
        self.metrics.disruption_passes = counts.passes;
        self.metrics.disruption_passes_skipped = counts.passes_skipped;
        let bill = self.world.cloud.bill();
        let m = &mut self.metrics;
        m.cost_on_demand = bill.on_demand;
        m.cost_spot = bill.spot;
        m.cost_total = bill.on_demand + bill.spot;
        if !self.config.commitments.is_empty() {
            let usage = self.world.cloud.on_demand_usage();
            let hours = self.last.as_secs_f64() / 3600.0;
            let catalog = crate::cloud::CloudProvider::catalog(&*self.world.cloud);
            let mut committed = crate::cloud::billing::apply(&usage, hours, &catalog, &self.config.commitments, bill.spot);
            // Rounded as every figure of the report is.
            for value in [
                &mut committed.commitment_fees,
                &mut committed.covered_on_demand,
                &mut committed.uncovered_on_demand,
                &mut committed.spot,
                &mut committed.effective,
                &mut committed.savings_plan_used,
                &mut committed.savings_plan_unused,
                &mut committed.reserved_hours_used,
                &mut committed.reserved_hours_unused,
            ] {
                *value = round(*value, 4);
            }
            m.cost_effective = Some(committed.effective);
            m.commitments = Some(committed);
        }
        m.node_hours = bill.instance_seconds / 3600.0;
        m.cpu_utilisation = if bill.cpu_millis_seconds > 0.0 { self.cpu_time / bill.cpu_millis_seconds } else { 0.0 };
        m.memory_utilisation = if bill.memory_byte_seconds > 0.0 { self.memory_time / bill.memory_byte_seconds } else { 0.0 };
        // Pods still waiting at the end have waited until the end (at least).
        let mut names: Vec<&String> = self.pods.keys().collect();
        names.sort();
        for name in names {
            let life = &self.pods[name];
            if let Some(since) = life.waiting_since {
                let wait = self.last.saturating_sub(since).as_secs_f64();
                if life.ever_bound { self.re_waits.push(wait) } else { self.first_waits.push(wait) }
                m.pods_pending_at_end += 1;
            }
        }
        [m.first_wait_p50_s, m.first_wait_p95_s, m.first_wait_p99_s] = percentiles(&mut self.first_waits);
        [m.reschedule_wait_p50_s, m.reschedule_wait_p95_s, m.reschedule_wait_p99_s] = percentiles(&mut self.re_waits);
        for value in [
            &mut m.cost_total,
            &mut m.cost_on_demand,
            &mut m.cost_spot,
            &mut m.node_hours,
            &mut m.cpu_utilisation,
            &mut m.memory_utilisation,
            &mut m.first_wait_p50_s,
            &mut m.first_wait_p95_s,
            &mut m.first_wait_p99_s,
            &mut m.reschedule_wait_p50_s,
            &mut m.reschedule_wait_p95_s,
            &mut m.reschedule_wait_p99_s,
            &mut m.lost_pod_hours,
            &mut m.lost_work_dollars,
            &mut m.peak_node_cpu_request_ratio,
            &mut m.peak_node_memory_request_ratio,
        ] {
            *value = round(*value, 4);
        }
        SimulationResult { policy: self.policy.clone(), metrics: self.metrics, samples: self.samples, plugin_ms, decisions: self.decisions, timeline: self.timeline, end }
    }
}

/// p50, p95 and p99 of `values` (0 when empty).
fn percentiles(values: &mut [f64]) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    [0.50, 0.95, 0.99].map(|q| match values.len() {
        0 => 0.0,
        n => values[((n - 1) as f64 * q).round() as usize],
    })
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// The work of every job in `trace`, by the index of its `add` event: the
/// time from its `add` to its `del`.
fn job_work(trace: &Trace) -> Vec<Option<Duration>> {
    let mut work = vec![None; trace.events.len()];
    let mut added: HashMap<&str, usize> = HashMap::new();
    for (i, event) in trace.events.iter().enumerate() {
        match &event.kind {
            TraceEventKind::Add(pod) if event.job => {
                added.insert(&*pod.name, i);
            }
            TraceEventKind::Delete(name) => {
                if let Some(a) = added.remove(name.as_str()) {
                    work[a] = Some(Duration::from_secs_f64((event.t - trace.events[a].t).max(0.0)));
                }
            }
            _ => {}
        }
    }
    work
}
