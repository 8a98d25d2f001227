//! `spot-diversified` (contract 0.3.0): no interruption wave takes most of
//! a NodePool, because no spot pool holds much of it.
//!
//! Each feasible offering starts from what one more node of it adds to the
//! bill ([`economics::marginal_price`]: commitments are filled first). A
//! spot offering is then weighed by its pool:
//! - its depth, read from its Spot Instance Advisor bucket (pools that are
//!   interrupted less are deeper): × (1 + `risk_weight` × the bucket's
//!   rate), as price-capacity-optimized prefers deep pools;
//! - what happened to it in the last hour: × (1 + `recent_weight`) per
//!   launch refused for capacity or interruption warning;
//! - its share of the NodePool: once the pool holds `max_pool_share` of the
//!   NodePool's nodes (and at least `min_nodes` nodes run), × `over_share`;
//! - its price trend (the host's `price-histories`): a pool whose price rose
//!   over the last day is under pressure, × (1 + `trend_weight` × the rise).
//!
//! Nothing feasible is left out, so a launch always has somewhere to go.
//!
//! Config: `{"max_pool_share": 0.2, "min_nodes": 5, "over_share": 4.0,
//! "risk_weight": 2.0, "recent_weight": 1.0, "trend_weight": 2.0}`.

use std::rc::Rc;
use std::sync::OnceLock;

use nodewright_plugin::{CapacityType, Catalog, InterruptionRate, KeptScores, OfferingPricePoint, Ranking, SelectionRequest, Selector, columns, economics, fleet, score_feasible_from};

#[derive(Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    max_pool_share: f64,
    min_nodes: u32,
    over_share: f64,
    risk_weight: f64,
    recent_weight: f64,
    trend_weight: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_pool_share: 0.2, min_nodes: 5, over_share: 4.0, risk_weight: 2.0, recent_weight: 1.0, trend_weight: 2.0 }
    }
}

fn config() -> Result<Config, String> {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let c: Config = nodewright_plugin::config()?;
            if !(c.max_pool_share > 0.0 && c.max_pool_share <= 1.0) {
                return Err(format!("invalid plugin config: max_pool_share {} must be above 0 and at most 1", c.max_pool_share));
            }
            for (name, v) in
                [("over_share", c.over_share), ("risk_weight", c.risk_weight), ("recent_weight", c.recent_weight), ("trend_weight", c.trend_weight)]
            {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!("invalid plugin config: {name} {v} must be a finite number >= 0"));
                }
            }
            Ok(c)
        })
        .clone()
}

/// The middle of the Advisor bucket, as a monthly fraction.
fn rate(r: InterruptionRate) -> f64 {
    match r {
        InterruptionRate::VeryLow => 0.025,
        InterruptionRate::Low => 0.075,
        InterruptionRate::Medium => 0.125,
        InterruptionRate::High => 0.175,
        InterruptionRate::VeryHigh => 0.25,
    }
}

std::thread_local! {
    /// What a pool weighs that changes only with the catalog (the price
    /// history changes only with it too): see [`Pools`].
    static POOLS: std::cell::RefCell<Option<Rc<Pools>>> = const { std::cell::RefCell::new(None) };
}

std::thread_local! {
    /// Weighed marginal prices with the commitments of the fleet version
    /// last seen.
    static SCORED: std::cell::RefCell<KeptScores> = std::cell::RefCell::new(KeptScores::default());
}

/// Each offering's price-trend factor and depth factor, packed by catalog
/// index, for one catalog version. Not spot: 1 and 1 (a score times 1 is
/// the score). `listed`: the list price times both factors, the score when
/// every offering costs its list price (no commitments).
struct Pools {
    version: u64,
    trend: Vec<f64>,
    depth: Vec<f64>,
    listed: Vec<f64>,
}

impl Pools {
    /// The pools of `catalog`: the first call of a catalog version reads
    /// every spot pool's price history from the host in one call, later
    /// calls of that version reuse them.
    fn of(catalog: &Catalog, config: &Config) -> Result<Rc<Pools>, String> {
        if let Some(pools) = POOLS.with(|p| p.borrow().clone()).filter(|p| p.version == catalog.version) {
            return Ok(pools);
        }
        let spot: Vec<u32> = (0u32..).zip(&catalog.offerings).filter(|(_, o)| o.capacity_type == CapacityType::Spot).map(|(i, _)| i).collect();
        let points = nodewright_plugin::price_histories(&spot).map_err(|e| format!("price-histories: {e}"))?;
        let n = catalog.offerings.len();
        let mut pools = Pools { version: catalog.version, trend: vec![1.0; n], depth: vec![1.0; n], listed: Vec::with_capacity(n) };
        for history in points.chunk_by(|a, b| a.offering == b.offering) {
            if let Some(t) = pools.trend.get_mut(history[0].offering as usize) {
                *t = 1.0 + config.trend_weight * price_rise(history);
            }
        }
        for (i, o) in catalog.offerings.iter().enumerate() {
            if o.capacity_type == CapacityType::Spot {
                pools.depth[i] = 1.0 + config.risk_weight * rate(o.interruption);
            }
            pools.listed.push(o.price_per_hour * pools.trend[i] * pools.depth[i]);
        }
        let pools = Rc::new(pools);
        POOLS.with(|p| *p.borrow_mut() = Some(pools.clone()));
        Ok(pools)
    }
}

/// How much an offering's price rose over the day before its latest change
/// (0 when it fell or did not move), from its points, oldest first.
fn price_rise(points: &[OfferingPricePoint]) -> f64 {
    match points.last() {
        Some(now) => {
            let day_ago = now.at_seconds.saturating_sub(86_400);
            let then = points.iter().rev().find(|p| p.at_seconds <= day_ago).or(points.first()).map_or(now.price_per_hour, |p| p.price_per_hour);
            if then > 0.0 { (now.price_per_hour / then - 1.0).max(0.0) } else { 0.0 }
        }
        None => 0.0,
    }
}

/// (offering, count) pairs summed per offering, sorted by offering.
fn tally(pairs: impl Iterator<Item = (u32, u32)>) -> Vec<(u32, u32)> {
    let mut all: Vec<(u32, u32)> = pairs.collect();
    all.sort_unstable_by_key(|p| p.0);
    all.dedup_by(|b, a| {
        let same = a.0 == b.0;
        if same {
            a.1 = a.1.saturating_add(b.1);
        }
        same
    });
    all
}

struct SpotDiversified;

impl Selector for SpotDiversified {
    fn rank(request: &SelectionRequest, catalog: &Catalog) -> Result<Ranking, String> {
        let config = config()?;
        let fleet = fleet();
        let pools = Pools::of(catalog, &config)?;
        let mut prices = economics::prices(catalog.version, &fleet);
        // What one more node adds to the bill, weighed by the pool's trend
        // and depth (1 and 1 unless spot).
        let mut ranking = if prices.dense().is_some() {
            // Every offering costs its list price: the weighed price of
            // each is kept for the catalog version.
            score_feasible_from(request, &pools.listed)
        } else {
            // Kept per fleet version: calls naming the same fleet read one
            // value per offering.
            let factor = |i: u32, of: &[f64]| of.get(i as usize).copied().unwrap_or(1.0);
            SCORED.with(|kept| kept.borrow_mut().rank(request, catalog, |i| prices.at(i) * factor(i, &pools.trend) * factor(i, &pools.depth)))
        };
        drop(prices);
        // Then what happened to a spot pool lately, and its share of the
        // NodePool: few pools have either, so each is found in the
        // feasible list (ascending, as the contract has it) by search.
        let spot = columns();
        let mut weigh = |offering: u32, by: f64| {
            if spot.is_spot(offering)
                && let Ok(k) = request.feasible.binary_search(&offering)
            {
                ranking.scores[k] *= by;
            }
        };
        let recent = tally(fleet.recent.iter().map(|h| (h.offering, h.launch_failures.saturating_add(h.interruptions))));
        for &(offering, events) in recent.iter().filter(|e| e.1 > 0) {
            weigh(offering, 1.0 + config.recent_weight * f64::from(events));
        }
        let me = economics::node_pool_index(&fleet, &request.node_pool);
        let of_pool = tally(fleet.counts().filter(|c| Some(c.node_pool) == me).map(|c| (c.offering, c.count)));
        let pool_nodes = of_pool.iter().fold(0u32, |n, c| n.saturating_add(c.1));
        let crowded = |held: u32| pool_nodes >= config.min_nodes && f64::from(held) >= config.max_pool_share * f64::from(pool_nodes);
        if crowded(0) {
            // Every spot pool counts as crowded (no node runs and
            // `min_nodes` is 0).
            for &offering in &request.feasible {
                weigh(offering, config.over_share);
            }
        } else {
            for &(offering, _) in of_pool.iter().filter(|c| crowded(c.1)) {
                weigh(offering, config.over_share);
            }
        }
        Ok(ranking)
    }
}

nodewright_plugin::export!(SpotDiversified);
