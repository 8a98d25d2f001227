//! An in-memory cloud: seeded, with capacity failures per offering, the
//! unavailable-offerings cache, spot reclaims per capacity pool, and the
//! bill, on the clock it is given.
//!
//! Every random draw comes from its own keyed stream
//! ([`crate::model::stream`]): the n-th launch boots in the same time, and a
//! spot pool is reclaimed at the same moments, whatever was launched
//! before, so two policies run on the same seed face the same cloud.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::billing::HourlyUsage;
use super::{CloudError, CloudProvider, Instance, LaunchError, LaunchRequest, UNAVAILABLE_FOR};
use crate::model::Clock;
use crate::model::stream::{Stream, unit};
use crate::model::{CapacityType, Catalog};

/// Settings of a [`SimulatedCloud`].
#[derive(Debug, Clone)]
pub struct SimulatedCloudConfig {
    /// Seed of its randomness.
    pub seed: u64,
    /// Probability that a launch of a given offering fails for lack of
    /// capacity, by catalog index (absent: never).
    pub capacity_failure: HashMap<u32, f64>,
    /// Time from launch until the node is ready, drawn uniformly from this
    /// range for each launch.
    pub boot_latency: (Duration, Duration),
    /// Multiplies the spot reclaim rate of every pool (its Spot Instance
    /// Advisor bucket); 0: spot is never reclaimed.
    pub interruption_scale: f64,
    /// Instances each `reserved` offering (a capacity reservation) holds,
    /// by catalog index; a launch into a full reservation fails for lack
    /// of capacity, and one into a reserved offering not listed always does.
    pub reserved_capacity: HashMap<u32, u32>,
}

impl Default for SimulatedCloudConfig {
    fn default() -> Self {
        SimulatedCloudConfig {
            seed: 1,
            capacity_failure: HashMap::new(),
            boot_latency: (Duration::from_secs(30), Duration::from_secs(60)),
            interruption_scale: 0.0,
            reserved_capacity: HashMap::new(),
        }
    }
}

/// AWS bills Linux instances per second with a one-minute minimum.
pub const MINIMUM_BILLED: Duration = Duration::from_secs(60);
/// A spot interruption warning comes this long before the reclaim.
pub const SPOT_WARNING: Duration = Duration::from_secs(120);
/// Share of spot reclaims a rebalance recommendation precedes.
pub const REBALANCE_SHARE: f64 = 0.5;
/// How long before the interruption warning a rebalance recommendation
/// comes: drawn uniformly from this range.
pub const REBALANCE_LEAD: (Duration, Duration) = (Duration::from_secs(5 * 60), Duration::from_secs(30 * 60));

/// What the instances have cost so far, billed per second from launch to
/// termination with a one-minute minimum.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bill {
    /// Dollars of on-demand (and reserved) capacity.
    pub on_demand: f64,
    /// Dollars of spot capacity.
    pub spot: f64,
    /// Instance-seconds billed.
    pub instance_seconds: f64,
    /// Allocatable CPU (millicores) × seconds billed: the denominator of utilisation.
    pub cpu_millis_seconds: f64,
    /// Allocatable memory (bytes) × seconds billed.
    pub memory_byte_seconds: f64,
}

struct Running {
    instance: Instance,
    launched_at: Duration,
    price: f64,
    spot: bool,
}

#[derive(Default)]
struct Rates {
    on_demand: f64,
    spot: f64,
    instances: f64,
    spot_instances: f64,
    cpu_millis: f64,
    memory_bytes: f64,
}

struct State {
    next_id: u64,
    instances: BTreeMap<String, Running>,
    unavailable_until: HashMap<u32, Duration>,
    launches: u64,
    capacity_failures: u64,
    attempts: u64,
    requests: Vec<LaunchRequest>,
    ready_at: HashMap<String, Duration>,
    launched: Vec<Instance>,
    bill: Bill,
    billed_until: Duration,
    rates: Rates,
    /// Running on-demand instances by offering: (count, $ per hour).
    on_demand: BTreeMap<u32, (u32, f64)>,
    /// On-demand usage by clock hour and offering, for commitments.
    usage: HourlyUsage,
}

impl State {
    /// Bill everything running up to `now`.
    fn accrue(&mut self, now: Duration) {
        let dt = now.saturating_sub(self.billed_until).as_secs_f64();
        self.billed_until = self.billed_until.max(now);
        if dt == 0.0 {
            return;
        }
        self.record_usage(now, dt);
        let b = &mut self.bill;
        b.on_demand += self.rates.on_demand * dt / 3600.0;
        b.spot += self.rates.spot * dt / 3600.0;
        b.instance_seconds += self.rates.instances * dt;
        b.cpu_millis_seconds += self.rates.cpu_millis * dt;
        b.memory_byte_seconds += self.rates.memory_bytes * dt;
    }

    /// Add the on-demand usage of the `dt` seconds before `now` to the
    /// clock hours they fall in.
    fn record_usage(&mut self, now: Duration, dt: f64) {
        if self.on_demand.is_empty() {
            return;
        }
        let mut end = now.as_secs_f64();
        let mut left = dt;
        while left > 0.0 {
            let hour = ((end - 1e-9).max(0.0) / 3600.0).floor();
            let piece = left.min(end - hour * 3600.0).max(0.0);
            let bucket = self.usage.entry(hour as u64).or_default();
            for (&offering, &(count, per_hour)) in &self.on_demand {
                let u = bucket.entry(offering).or_default();
                u.seconds += f64::from(count) * piece;
                u.dollars += per_hour * piece / 3600.0;
            }
            if piece <= 0.0 {
                break;
            }
            left -= piece;
            end -= piece;
        }
    }

    /// Add (`sign` 1) or remove (-1) a running instance's rates.
    fn rate(&mut self, running: &Running, catalog: &Catalog, sign: f64) {
        let r = &mut self.rates;
        if running.spot {
            r.spot += sign * running.price;
            r.spot_instances += sign;
        } else {
            r.on_demand += sign * running.price;
            let entry = self.on_demand.entry(running.instance.offering).or_insert((0, 0.0));
            if sign > 0.0 {
                *entry = (entry.0.saturating_add(1), entry.1 + running.price);
            } else {
                *entry = (entry.0.saturating_sub(1), entry.1 - running.price);
            }
            if entry.0 == 0 {
                self.on_demand.remove(&running.instance.offering);
            }
        }
        let r = &mut self.rates;
        r.instances += sign;
        if let Some(o) = catalog.offerings.get(running.instance.offering as usize) {
            r.cpu_millis += sign * o.allocatable.cpu_millis as f64;
            r.memory_bytes += sign * o.allocatable.memory_bytes as f64;
        }
    }
}

/// An in-memory [`CloudProvider`].
pub struct SimulatedCloud {
    catalog: Mutex<Arc<Catalog>>,
    config: SimulatedCloudConfig,
    now: Clock,
    state: Mutex<State>,
}

impl SimulatedCloud {
    /// A cloud selling `catalog`, reading time from `now`.
    pub fn new(catalog: Arc<Catalog>, config: SimulatedCloudConfig, now: Clock) -> Self {
        let state = State {
            next_id: 1,
            instances: BTreeMap::new(),
            unavailable_until: HashMap::new(),
            launches: 0,
            capacity_failures: 0,
            attempts: 0,
            requests: Vec::new(),
            ready_at: HashMap::new(),
            launched: Vec::new(),
            bill: Bill::default(),
            billed_until: Duration::ZERO,
            on_demand: BTreeMap::new(),
            usage: HourlyUsage::new(),
            rates: Rates::default(),
        };
        SimulatedCloud { catalog: Mutex::new(catalog), config, now, state: Mutex::new(state) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sell `catalog` from now on (same offerings in the same order, new
    /// prices); running spot instances pay the new price from now.
    pub fn set_catalog(&self, catalog: Arc<Catalog>) {
        let now = (self.now)();
        let mut state = self.state();
        state.accrue(now);
        let mut spot = 0.0;
        for running in state.instances.values_mut() {
            if running.spot
                && let Some(o) = catalog.offerings.get(running.instance.offering as usize)
            {
                running.price = o.price_per_hour;
                spot += o.price_per_hour;
            }
        }
        state.rates.spot = spot;
        *self.catalog.lock().unwrap_or_else(|e| e.into_inner()) = catalog;
    }

    /// (successful launches, capacity failures) so far.
    pub fn counters(&self) -> (u64, u64) {
        let state = self.state();
        (state.launches, state.capacity_failures)
    }

    /// When instance `id` is (or was) ready to register as a node.
    pub fn ready_at(&self, id: &str) -> Option<Duration> {
        self.state().ready_at.get(id).copied()
    }

    /// Instances launched since the last call, in launch order.
    pub fn take_launched(&self) -> Vec<Instance> {
        std::mem::take(&mut self.state().launched)
    }

    /// Every launch request received, in order.
    pub fn launch_requests(&self) -> Vec<LaunchRequest> {
        self.state().requests.clone()
    }

    /// On-demand usage up to now, by clock hour and offering.
    pub fn on_demand_usage(&self) -> HourlyUsage {
        let now = (self.now)();
        let mut state = self.state();
        state.accrue(now);
        state.usage.clone()
    }

    /// The bill up to now.
    pub fn bill(&self) -> Bill {
        let now = (self.now)();
        let mut state = self.state();
        state.accrue(now);
        state.bill
    }

    /// Running instances: (on-demand, spot).
    pub fn running(&self) -> (u32, u32) {
        let state = self.state();
        let spot = state.rates.spot_instances.round() as u32;
        (state.instances.len() as u32 - spot, spot)
    }

    /// (CPU millicores, memory bytes) allocatable on every running instance
    /// (booting ones included).
    pub fn running_allocatable(&self) -> (f64, f64) {
        let state = self.state();
        (state.rates.cpu_millis.max(0.0), state.rates.memory_bytes.max(0.0))
    }

    /// The NodeClaim instance `id` backs, while it runs.
    pub fn claim_of(&self, id: &str) -> Option<String> {
        self.state().instances.get(id).map(|r| r.instance.claim.clone())
    }

    /// When the spot pool of `offering` is next reclaimed at or after
    /// `after` and before `until`, if it is. Each (pool, hour) is reclaimed
    /// with the probability its Spot Instance Advisor bucket gives an
    /// instance per hour (times the configured scale), at a moment within
    /// the hour; every instance of the pool running then is reclaimed.
    pub fn next_reclaim(&self, offering: u32, after: Duration, until: Duration) -> Option<Duration> {
        let catalog = self.catalog();
        let o = catalog.offerings.get(offering as usize)?;
        if o.capacity_type != CapacityType::Spot || self.config.interruption_scale <= 0.0 {
            return None;
        }
        let per_hour = -(1.0 - o.interruption.monthly_fraction()).ln() / (30.0 * 24.0) * self.config.interruption_scale;
        let p = 1.0 - (-per_hour).exp();
        let seed = self.config.seed;
        let first = after.as_secs() / 3600;
        let last = until.as_secs() / 3600;
        (first..=last).find_map(|hour| {
            if unit(seed, Stream::Interruption, offering as u64, hour) >= p {
                return None;
            }
            let at = Duration::from_secs(hour * 3600) + Duration::from_secs_f64(3600.0 * unit(seed, Stream::InterruptionAt, offering as u64, hour));
            (at >= after && at < until).then_some(at)
        })
    }

    /// When AWS recommends rebalancing an instance of `offering` that it
    /// reclaims at `reclaim` (a reclaim [`Self::next_reclaim`] gave):
    /// AWS sends the signal when a pool's interruption risk rises and does
    /// not guarantee it; here [`REBALANCE_SHARE`] of the reclaims get one,
    /// [`REBALANCE_LEAD`] before the warning. `None`: no recommendation.
    pub fn rebalance_before(&self, offering: u32, reclaim: Duration) -> Option<Duration> {
        let hour = reclaim.as_secs() / 3600;
        let seed = self.config.seed;
        if unit(seed, Stream::Rebalance, offering as u64, hour) >= REBALANCE_SHARE {
            return None;
        }
        let (low, high) = REBALANCE_LEAD;
        let lead = low + (high - low).mul_f64(unit(seed, Stream::RebalanceLead, offering as u64, hour));
        reclaim.checked_sub(SPOT_WARNING + lead)
    }

    /// AWS takes instance `id` back (the end of a spot interruption
    /// warning): true if it was still running.
    pub fn reclaim(&self, id: &str) -> bool {
        self.stop(id).is_ok()
    }

    fn stop(&self, id: &str) -> Result<(), CloudError> {
        let now = (self.now)();
        let catalog = self.catalog();
        let mut state = self.state();
        state.accrue(now);
        let running = state.instances.remove(id).ok_or_else(|| CloudError(format!("instance {id} does not exist")))?;
        state.rate(&running, &catalog, -1.0);
        // The first minute is billed whatever the instance ran.
        let short = MINIMUM_BILLED.saturating_sub(now.saturating_sub(running.launched_at)).as_secs_f64();
        if short > 0.0 {
            let state = &mut *state;
            let b = &mut state.bill;
            if running.spot {
                b.spot += running.price * short / 3600.0;
            } else {
                b.on_demand += running.price * short / 3600.0;
                // Billed in the hour the instance stopped.
                let hour = (now.as_secs_f64() / 3600.0).floor() as u64;
                let u = state.usage.entry(hour).or_default().entry(running.instance.offering).or_default();
                u.seconds += short;
                u.dollars += running.price * short / 3600.0;
            }
            b.instance_seconds += short;
            if let Some(o) = catalog.offerings.get(running.instance.offering as usize) {
                b.cpu_millis_seconds += o.allocatable.cpu_millis as f64 * short;
                b.memory_byte_seconds += o.allocatable.memory_bytes as f64 * short;
            }
        }
        Ok(())
    }

    fn launch_now(&self, request: &LaunchRequest) -> Result<Instance, LaunchError> {
        let now = (self.now)();
        let catalog = self.catalog();
        let mut state = self.state();
        state.requests.push(request.clone());
        if let Some(existing) = state.instances.values().find(|r| r.instance.claim == request.claim) {
            return Ok(existing.instance.clone()); // idempotent per claim, like a ClientToken
        }
        let (mut tried, mut skipped) = (0, 0);
        for &offering in &request.offerings {
            let Some(o) = catalog.offerings.get(offering as usize) else {
                return Err(LaunchError::Provider(format!("offering index {offering} is not in the catalog")));
            };
            if state.unavailable_until.get(&offering).is_some_and(|&until| until > now) {
                skipped += 1;
                continue;
            }
            tried += 1;
            state.attempts += 1;
            let full = o.capacity_type == CapacityType::Reserved && {
                let held = state.instances.values().filter(|r| r.instance.offering == offering).count();
                held >= self.config.reserved_capacity.get(&offering).copied().unwrap_or(0) as usize
            };
            let p = self.config.capacity_failure.get(&offering).copied().unwrap_or(0.0);
            if full || (p > 0.0 && unit(self.config.seed, Stream::Capacity, offering as u64, state.attempts) < p) {
                state.capacity_failures += 1;
                state.unavailable_until.insert(offering, now + UNAVAILABLE_FOR);
                continue;
            }
            let id = format!("i-{:017x}", state.next_id);
            state.next_id += 1;
            let index = state.launches;
            state.launches += 1;
            let (low, high) = self.config.boot_latency;
            let boot = if high > low { low + (high - low).mul_f64(unit(self.config.seed, Stream::Boot, index, 0)) } else { low };
            state.ready_at.insert(id.clone(), now + boot);
            let instance =
                Instance { id: id.clone(), claim: request.claim.clone(), node_pool: request.node_pool.clone(), offering };
            state.accrue(now);
            let running = Running { instance: instance.clone(), launched_at: now, price: o.price_per_hour, spot: o.capacity_type == CapacityType::Spot };
            state.rate(&running, &catalog, 1.0);
            state.instances.insert(id, running);
            state.launched.push(instance.clone());
            return Ok(instance);
        }
        Err(LaunchError::InsufficientCapacity { tried, skipped })
    }
}

impl CloudProvider for SimulatedCloud {
    fn catalog(&self) -> Arc<Catalog> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn mark_unavailable(&self, index: u32) {
        let until = (self.now)() + UNAVAILABLE_FOR;
        self.state().unavailable_until.insert(index, until);
    }

    fn unavailable(&self) -> std::collections::HashSet<u32> {
        let now = (self.now)();
        let state = self.state();
        state.unavailable_until.iter().filter(|(_, until)| **until > now).map(|(&o, _)| o).collect()
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Instance, LaunchError> {
        self.launch_now(request)
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), CloudError> {
        self.stop(instance_id)
    }

    async fn instances(&self) -> Result<Vec<Instance>, CloudError> {
        Ok(self.state().instances.values().map(|r| r.instance.clone()).collect())
    }
}
