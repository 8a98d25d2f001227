//! `graviton-first`: buy arm64 unless it costs more than `within_percent`
//! over the cheapest, and never steer GPU requests.
//!
//! An arm64 offering is scored at its price divided by (1 + within_percent/100),
//! so it wins against any amd64 offering it is within that margin of.
//!
//! Config: `{"within_percent": 20}`.

use std::sync::OnceLock;

use nodewright_plugin::{Arch, Catalog, Ranking, SelectionRequest, Selector, score_each};

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    within_percent: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config { within_percent: 20.0 }
    }
}

fn arm_discount() -> Result<f64, String> {
    static DISCOUNT: OnceLock<Result<f64, String>> = OnceLock::new();
    DISCOUNT
        .get_or_init(|| {
            let config: Config = nodewright_plugin::config()?;
            if !(0.0..=1000.0).contains(&config.within_percent) {
                return Err(format!("invalid plugin config: within_percent {} must be between 0 and 1000", config.within_percent));
            }
            Ok(1.0 + config.within_percent / 100.0)
        })
        .clone()
}

struct GravitonFirst;

impl Selector for GravitonFirst {
    fn rank(request: &SelectionRequest, catalog: &Catalog) -> Result<Ranking, String> {
        let discount = if request.total.gpus > 0 { 1.0 } else { arm_discount()? };
        Ok(score_each(request, catalog, |offering| {
            Some(match offering.arch {
                Arch::Arm64 => offering.price_per_hour / discount,
                Arch::Amd64 => offering.price_per_hour,
            })
        }))
    }
}

nodewright_plugin::export!(GravitonFirst);
