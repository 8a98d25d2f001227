//! `spot-savvy`: price weighted by the chance of losing the node.
//!
//! score = price per hour × (1 + `risk_weight` × interruption rate), where the
//! rate is the middle of the offering's Spot Advisor bucket (2.5 % … 25 %).
//! With the default weight of 4, a spot offering in the over-20 % bucket is
//! treated as twice its price. Offerings in a bucket above `max_interruption`
//! are left out.
//!
//! Config: `{"risk_weight": 4.0, "max_interruption": "very-high"}`.

use std::sync::OnceLock;

use nodewright_plugin::{
    Catalog, InterruptionRate, Level, Ranking, SelectionRequest, Selector, score_each,
};

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    risk_weight: f64,
    max_interruption: String,
}

impl Default for Config {
    fn default() -> Self {
        Config { risk_weight: 4.0, max_interruption: "very-high".into() }
    }
}

fn rank_of(rate: InterruptionRate) -> (u8, f64) {
    match rate {
        InterruptionRate::VeryLow => (0, 0.025),
        InterruptionRate::Low => (1, 0.075),
        InterruptionRate::Medium => (2, 0.125),
        InterruptionRate::High => (3, 0.175),
        InterruptionRate::VeryHigh => (4, 0.25),
    }
}

fn settings() -> Result<&'static (f64, u8), String> {
    static SETTINGS: OnceLock<Result<(f64, u8), String>> = OnceLock::new();
    SETTINGS
        .get_or_init(|| {
            let config: Config = nodewright_plugin::config()?;
            let max = match config.max_interruption.as_str() {
                "very-low" => 0,
                "low" => 1,
                "medium" => 2,
                "high" => 3,
                "very-high" => 4,
                other => return Err(format!("invalid plugin config: max_interruption `{other}` is not one of very-low, low, medium, high, very-high")),
            };
            if !config.risk_weight.is_finite() || config.risk_weight < 0.0 {
                return Err(format!("invalid plugin config: risk_weight {} must be a finite number >= 0", config.risk_weight));
            }
            nodewright_plugin::log(Level::Debug, &format!("risk_weight={} max_interruption={}", config.risk_weight, config.max_interruption));
            Ok((config.risk_weight, max))
        })
        .as_ref()
        .map_err(Clone::clone)
}

struct SpotSavvy;

impl Selector for SpotSavvy {
    fn rank(request: &SelectionRequest, catalog: &Catalog) -> Result<Ranking, String> {
        let &(weight, max) = settings()?;
        Ok(score_each(request, catalog, |offering| {
            let (bucket, rate) = rank_of(offering.interruption);
            (bucket <= max).then(|| offering.price_per_hour * (1.0 + weight * rate))
        }))
    }
}

nodewright_plugin::export!(SpotSavvy);
