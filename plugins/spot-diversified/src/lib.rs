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
    /// Each offering's price rise over the last day, per catalog version
    /// (the history changes only with the catalog).
    static TRENDS: std::cell::RefCell<(u64, std::collections::HashMap<u32, f64>)> =
        std::cell::RefCell::new((u64::MAX, std::collections::HashMap::new()));
}

/// How much the price of `offering` rose over the day before its latest
/// change (0 when it fell or did not move).
fn rise(offering: u32, catalog_version: u64) -> Result<f64, String> {
    if let Some(r) = TRENDS.with(|t| {
        let t = t.borrow();
        if t.0 == catalog_version { t.1.get(&offering).copied() } else { None }
    }) {
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
    TRENDS.with(|t| {
        let mut t = t.borrow_mut();
        if t.0 != catalog_version {
            *t = (catalog_version, std::collections::HashMap::new());
        }
        t.1.insert(offering, r);
    });
    Ok(r)
}

struct SpotDiversified;

impl Selector for SpotDiversified {
    fn rank(request: &SelectionRequest, catalog: &Catalog) -> Result<Ranking, String> {
        let config = config()?;
        let fleet = fleet();
        let pool_nodes = fleet.running.iter().filter(|c| c.node_pool == request.node_pool).fold(0u32, |n, c| n.saturating_add(c.count));
        let mut failure = None;
        let ranking = score_each_indexed(request, catalog, |i, o| {
            let mut score = economics::marginal_price_at(i, o, catalog.version, &fleet);
            if o.capacity_type == CapacityType::Spot {
                match rise(i, catalog.version) {
                    Ok(r) => score *= 1.0 + config.trend_weight * r,
                    Err(e) => failure = Some(e),
                }
                score *= 1.0 + config.risk_weight * rate(o.interruption);
                if let Some(h) = fleet.recent.iter().find(|h| h.offering == i) {
                    score *= 1.0 + config.recent_weight * f64::from(h.launch_failures.saturating_add(h.interruptions));
                }
                let (of_pool, _) = economics::pool_share(&fleet, &request.node_pool, i);
                if pool_nodes >= config.min_nodes && f64::from(of_pool) >= config.max_pool_share * f64::from(pool_nodes) {
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
