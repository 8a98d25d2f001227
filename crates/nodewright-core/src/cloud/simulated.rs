//! An in-memory cloud: seeded, with capacity failures per offering, the
//! unavailable-offerings cache, spot capacity pools (a capacity that moves
//! hour by hour, insufficient-capacity errors when a pool is full, reclaims
//! when it shrinks below what runs, and reclaims at the pool's Spot
//! Instance Advisor rate), capacity reservations, and the bill, on the
//! clock it is given.
//!
//! Every random draw comes from its own keyed stream
//! ([`crate::model::stream`]): the n-th launch boots in the same time, and a
//! spot pool is reclaimed at the same moments, whatever was launched
//! before, so two policies run on the same seed face the same cloud.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::billing::HourlyUsage;
use super::{CloudError, CloudProvider, Instance, LaunchError, LaunchRequest, SpotStrategy, UNAVAILABLE_FOR};
use crate::model::Clock;
use crate::model::stream::{Stream, unit};
use crate::model::{CapacityType, Catalog, InterruptionRate, Offering};

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
    /// Spot pools have a capacity ([`SimulatedCloud::pool_capacity`]): a
    /// launch into a full pool fails, and a pool that shrinks below what
    /// runs in it reclaims the newest instances. Off: spot capacity is
    /// unlimited and only the Advisor-rate reclaims happen.
    pub spot_pools: bool,
}

impl Default for SimulatedCloudConfig {
    fn default() -> Self {
        SimulatedCloudConfig {
            seed: 1,
            capacity_failure: HashMap::new(),
            boot_latency: (Duration::from_secs(30), Duration::from_secs(60)),
            interruption_scale: 0.0,
            reserved_capacity: HashMap::new(),
            spot_pools: false,
        }
    }
}

/// Instances a spot pool of a 2-vCPU type holds at its usual level, by
/// Spot Instance Advisor bucket: pools that are interrupted less are deeper.
/// A modelled figure (AWS publishes no pool sizes), chosen so that a pool
/// holds a few dozen small nodes and a cluster of a hundred spreads over
/// several pools.
pub const POOL_DEPTH: [f64; 5] = [48.0, 32.0, 20.0, 12.0, 6.0];
/// How much a pool's level moves in an hour (standard deviation of its
/// logarithm), by bucket: pools that are interrupted more move more.
pub const POOL_VOLATILITY: [f64; 5] = [0.05, 0.08, 0.12, 0.16, 0.22];
/// The range of the factor a spot price's move puts on its pool's reclaim
/// rate: (price now / opening price)², within these bounds.
pub const PRICE_HAZARD: (f64, f64) = (0.25, 4.0);
/// The range a pool's level stays in, as a multiple of its depth.
pub const POOL_LEVEL: (f64, f64) = (0.2, 1.5);

fn bucket(rate: InterruptionRate) -> usize {
    match rate {
        InterruptionRate::VeryLow => 0,
        InterruptionRate::Low => 1,
        InterruptionRate::Medium => 2,
        InterruptionRate::High => 3,
        InterruptionRate::VeryHigh => 4,
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
    /// The image release it was launched from.
    image: u64,
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
    /// Each spot pool's level: (hour, multiple of its depth).
    levels: HashMap<u32, (u64, f64)>,
    /// The current image release new instances get (see `release_image`).
    image: u64,
}

impl State {
    /// Instances of `offering` running now (a reservation's or a spot pool's load).
    fn held(&self, offering: u32) -> usize {
        self.instances.values().filter(|r| r.instance.offering == offering).count()
    }

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
    /// Each offering's price when the cloud opened: a spot pool whose price
    /// rose is reclaimed more often.
    opening_prices: Vec<f64>,
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
            levels: HashMap::new(),
            image: 0,
        };
        let opening_prices = catalog.offerings.iter().map(|o| o.price_per_hour).collect();
        SimulatedCloud { catalog: Mutex::new(catalog), opening_prices, config, now, state: Mutex::new(state) }
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

    /// A new image release (the node class's AMI alias now resolves to a
    /// newer AMI): instances launched before it report `AMIDrift`.
    pub fn release_image(&self) {
        self.state().image += 1;
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

    /// Instances the spot pool of `offering` holds in clock hour `hour`:
    /// its depth ([`POOL_DEPTH`] by bucket, less for larger types: × √(2 /
    /// vCPUs)) times its level, a seeded random walk per pool that moves
    /// each hour ([`POOL_VOLATILITY`]) within [`POOL_LEVEL`]. `None` when
    /// `offering` is not a spot pool or pools are off.
    pub fn pool_capacity(&self, offering: u32, hour: u64) -> Option<u32> {
        if !self.config.spot_pools {
            return None;
        }
        let catalog = self.catalog();
        let o = catalog.offerings.get(offering as usize).filter(|o| o.capacity_type == CapacityType::Spot)?;
        Some(self.capacity_in(&mut self.state(), o, offering, hour))
    }

    fn capacity_in(&self, state: &mut State, o: &Offering, offering: u32, hour: u64) -> u32 {
        let b = bucket(o.interruption);
        let (mut at, mut level) = match state.levels.get(&offering) {
            Some(&(at, level)) if at <= hour => (at, level),
            _ => (0, 1.0),
        };
        while at < hour {
            at += 1;
            // A uniform draw of unit variance: √12 × (u − ½).
            let z = (unit(self.config.seed, Stream::SpotCapacity, offering as u64, at) - 0.5) * 12f64.sqrt();
            level = (level * (POOL_VOLATILITY[b] * z).exp()).clamp(POOL_LEVEL.0, POOL_LEVEL.1);
        }
        state.levels.insert(offering, (at, level));
        let vcpus = (o.capacity.cpu_millis as f64 / 1000.0).max(2.0);
        (POOL_DEPTH[b] * (2.0 / vcpus).sqrt() * level).floor() as u32
    }

    /// The spot instances to reclaim now because their pool shrank below
    /// what runs in it: the newest first, the excess of each pool.
    pub fn pool_shortfalls(&self) -> Vec<String> {
        if !self.config.spot_pools {
            return Vec::new();
        }
        let hour = (self.now)().as_secs() / 3600;
        let catalog = self.catalog();
        let mut state = self.state();
        let mut by_pool: BTreeMap<u32, Vec<(Duration, String)>> = BTreeMap::new();
        for (id, r) in &state.instances {
            if r.spot {
                by_pool.entry(r.instance.offering).or_default().push((r.launched_at, id.clone()));
            }
        }
        let mut out = Vec::new();
        for (offering, mut running) in by_pool {
            let Some(o) = catalog.offerings.get(offering as usize) else { continue };
            let capacity = self.capacity_in(&mut state, o, offering, hour) as usize;
            if running.len() > capacity {
                running.sort();
                let excess = running.len() - capacity;
                out.extend(running.into_iter().rev().take(excess).map(|(_, id)| id));
            }
        }
        out
    }

    /// When the spot pool of `offering` is next reclaimed at or after
    /// `after` and before `until`, if it is. Each (pool, hour) is reclaimed
    /// with the probability its Spot Instance Advisor bucket gives an
    /// instance per hour (times the configured scale), times the square of
    /// its price now over its opening price (a pool whose price rose is
    /// under pressure: [`PRICE_HAZARD`] bounds the factor), at a moment
    /// within the hour; every instance of the pool running then is reclaimed.
    pub fn next_reclaim(&self, offering: u32, after: Duration, until: Duration) -> Option<Duration> {
        let catalog = self.catalog();
        let o = catalog.offerings.get(offering as usize)?;
        if o.capacity_type != CapacityType::Spot || self.config.interruption_scale <= 0.0 {
            return None;
        }
        let opening = self.opening_prices.get(offering as usize).copied().filter(|p| *p > 0.0).unwrap_or(o.price_per_hour);
        let pressure = if opening > 0.0 { (o.price_per_hour / opening).powi(2).clamp(PRICE_HAZARD.0, PRICE_HAZARD.1) } else { 1.0 };
        let per_hour = -(1.0 - o.interruption.monthly_fraction()).ln() / (30.0 * 24.0) * self.config.interruption_scale * pressure;
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
        let order = match request.spot_strategy {
            SpotStrategy::Prioritized => request.offerings.clone(),
            SpotStrategy::PriceCapacityOptimized => self.price_capacity_order(&mut state, &catalog, request, now),
        };
        let (mut tried, mut skipped) = (0, 0);
        for &offering in &order {
            let Some(o) = catalog.offerings.get(offering as usize) else {
                return Err(LaunchError::Provider(format!("offering index {offering} is not in the catalog")));
            };
            if state.unavailable_until.get(&offering).is_some_and(|&until| until > now) {
                skipped += 1;
                continue;
            }
            tried += 1;
            state.attempts += 1;
            let full = match o.capacity_type {
                CapacityType::Reserved => {
                    state.held(offering) >= self.config.reserved_capacity.get(&offering).copied().unwrap_or(0) as usize
                }
                CapacityType::Spot if self.config.spot_pools => {
                    state.held(offering) >= self.capacity_in(&mut state, o, offering, now.as_secs() / 3600) as usize
                }
                _ => false,
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
            let running =
                Running { instance: instance.clone(), image: state.image, launched_at: now, price: o.price_per_hour, spot: o.capacity_type == CapacityType::Spot };
            state.rate(&running, &catalog, 1.0);
            state.instances.insert(id, running);
            state.launched.push(instance.clone());
            return Ok(instance);
        }
        Err(LaunchError::InsufficientCapacity { tried, skipped })
    }
}

impl SimulatedCloud {
    /// The order CreateFleet's `price-capacity-optimized` tries a request's
    /// offerings in: reserved capacity as given, then the spot pools with
    /// the most spare capacity — at least half the spare capacity of the
    /// deepest one offered — cheapest first, then the other spot pools
    /// cheapest first, then on-demand as given. Without pools, spot is
    /// cheapest first.
    fn price_capacity_order(&self, state: &mut State, catalog: &Catalog, request: &LaunchRequest, now: Duration) -> Vec<u32> {
        let hour = now.as_secs() / 3600;
        let kind = |o: u32| catalog.offerings.get(o as usize).map(|x| x.capacity_type);
        let mut spot: Vec<(u32, f64, i64)> = Vec::new();
        for &o in &request.offerings {
            let Some(offering) = catalog.offerings.get(o as usize).filter(|x| x.capacity_type == CapacityType::Spot) else { continue };
            let spare = if self.config.spot_pools {
                i64::from(self.capacity_in(state, offering, o, hour)) - state.held(o) as i64
            } else {
                0
            };
            spot.push((o, offering.price_per_hour, spare));
        }
        let deepest = spot.iter().map(|s| s.2).max().unwrap_or(0);
        let high = |s: &(u32, f64, i64)| s.2 > 0 && s.2 * 2 >= deepest;
        spot.sort_by(|a, b| high(b).cmp(&high(a)).then(a.1.total_cmp(&b.1)).then(a.0.cmp(&b.0)));
        let mut order: Vec<u32> = request.offerings.iter().copied().filter(|&o| kind(o) == Some(CapacityType::Reserved)).collect();
        order.extend(spot.iter().map(|s| s.0));
        order.extend(request.offerings.iter().copied().filter(|&o| kind(o) == Some(CapacityType::OnDemand)));
        order
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

    fn drift_generation(&self) -> u64 {
        self.state().image
    }

    async fn drifted(&self, instances: &[&Instance]) -> Result<HashMap<String, String>, CloudError> {
        let state = self.state();
        Ok(instances
            .iter()
            .filter(|i| state.instances.get(&i.id).is_some_and(|r| r.image < state.image))
            .map(|i| (i.id.clone(), "AMIDrift".to_string()))
            .collect())
    }
}
