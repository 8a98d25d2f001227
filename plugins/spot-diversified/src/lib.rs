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
//! - its price trend (the host's `price-history`): a pool whose price rose
//!   over the last day is under pressure, × (1 + `trend_weight` × the rise).
//!
//! Nothing feasible is left out, so a launch always has somewhere to go.
//!
//! Config: `{"max_pool_share": 0.2, "min_nodes": 5, "over_share": 4.0,
//! "risk_weight": 2.0, "recent_weight": 1.0, "trend_weight": 2.0}`.

use std::sync::OnceLock;

use nodewright_plugin::{CapacityType, Catalog, InterruptionRate, Ranking, SelectionRequest, Selector, economics, fleet, score_each_indexed};

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
    /// Each offering's price rise over the last day, by catalog index (NaN:
    /// not read yet), for one catalog version (the history changes only
    /// with the catalog).
    static TRENDS: std::cell::RefCell<(u64, Vec<f64>)> = const { std::cell::RefCell::new((u64::MAX, Vec::new())) };
}

/// The rises of one catalog version read so far, taken out of `TRENDS`
/// for one call and put back when dropped.
struct Trends {
    version: u64,
    rises: Vec<f64>,
}

impl Trends {
    fn take(catalog_version: u64) -> Self {
        let (version, rises) = TRENDS.with(|t| std::mem::take(&mut *t.borrow_mut()));
        Trends { version: catalog_version, rises: if version == catalog_version { rises } else { Vec::new() } }
    }

    /// How much the price of `offering` rose over the day before its
    /// latest change (0 when it fell or did not move).
    fn rise(&mut self, offering: u32) -> Result<f64, String> {
        let i = offering as usize;
        if let Some(&r) = self.rises.get(i).filter(|r| !r.is_nan()) {
            return Ok(r);
        }
        let points = nodewright_plugin::price_history(offering)?;
        let r = match points.last() {
            Some(now) => {
                let day_ago = now.at_seconds.saturating_sub(86_400);
                let then = points.iter().rev().find(|p| p.at_seconds <= day_ago).or(points.first()).map_or(now.price_per_hour, |p| p.price_per_hour);
                if then > 0.0 { (now.price_per_hour / then - 1.0).max(0.0) } else { 0.0 }
            }
            None => 0.0,
        };
        if self.rises.len() <= i {
            self.rises.resize(i + 1, f64::NAN);
        }
        self.rises[i] = r;
        Ok(r)
    }
}

impl Drop for Trends {
    fn drop(&mut self) {
        TRENDS.with(|t| *t.borrow_mut() = (self.version, std::mem::take(&mut self.rises)));
    }
}

/// (offering, count) pairs summed per offering, sorted by offering: looked
/// up by binary search.
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

fn count_of(tally: &[(u32, u32)], offering: u32) -> u32 {
    tally.binary_search_by_key(&offering, |p| p.0).map_or(0, |i| tally[i].1)
}

struct SpotDiversified;

impl Selector for SpotDiversified {
    fn rank(request: &SelectionRequest, catalog: &Catalog) -> Result<Ranking, String> {
        let config = config()?;
        let fleet = fleet();
        // Nodes of this NodePool per offering, and what happened to each
        // pool lately: looked up once per spot offering below.
        let of_pool = tally(fleet.running.iter().filter(|c| c.node_pool == request.node_pool).map(|c| (c.offering, c.count)));
        let pool_nodes = of_pool.iter().fold(0u32, |n, c| n.saturating_add(c.1));
        let recent = tally(fleet.recent.iter().map(|h| (h.offering, h.launch_failures.saturating_add(h.interruptions))));
        let mut failure = None;
        let mut prices = economics::prices(catalog.version, &fleet);
        let mut trends = Trends::take(catalog.version);
        let ranking = score_each_indexed(request, catalog, |i, o| {
            let mut score = prices.of(i, o);
            if o.capacity_type == CapacityType::Spot {
                match trends.rise(i) {
                    Ok(r) => score *= 1.0 + config.trend_weight * r,
                    Err(e) => failure = Some(e),
                }
                score *= 1.0 + config.risk_weight * rate(o.interruption);
                let events = count_of(&recent, i);
                if events > 0 {
                    score *= 1.0 + config.recent_weight * f64::from(events);
                }
                let held = count_of(&of_pool, i);
                if pool_nodes >= config.min_nodes && f64::from(held) >= config.max_pool_share * f64::from(pool_nodes) {
                    score *= config.over_share;
                }
            }
            Some(score)
        });
        match failure {
            Some(e) => Err(format!("price-history: {e}")),
            None => Ok(ranking),
        }
    }
}

nodewright_plugin::export!(SpotDiversified);
