//! `savings-threshold` (contract 0.2.0): act only when an action saves at
//! least `min_monthly_savings` dollars a month. Among the disruptable nodes
//! it finds, for each, what deleting it (its pods fit on the others) or
//! replacing it with the cheapest cheaper offering would save, and proposes
//! the single largest saving above the threshold.
//!
//! Config: `{"min_monthly_savings": 20.0, "max_candidates": 32}`.

use std::sync::OnceLock;

use nodewright_plugin::consolidate::{HOURS_PER_MONTH, cheapest_replacement, fits_elsewhere, price};
use nodewright_plugin::{Action, Catalog, Consolidator, Replacement, Snapshot};

#[derive(Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    min_monthly_savings: f64,
    max_candidates: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { min_monthly_savings: 20.0, max_candidates: 32 }
    }
}

fn config() -> Result<Config, String> {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    CONFIG.get_or_init(nodewright_plugin::config::<Config>).clone()
}

struct SavingsThreshold;

impl Consolidator for SavingsThreshold {
    fn plan(snapshot: &Snapshot, catalog: &Catalog) -> Result<Vec<Action>, String> {
        let config = config()?;
        let nodes = &snapshot.nodes;
        // Dearest nodes first: they can save the most.
        let mut candidates: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].disruptable).collect();
        candidates.sort_by(|&a, &b| price(&nodes[b], catalog).total_cmp(&price(&nodes[a], catalog)).then(a.cmp(&b)));
        let mut best: Option<(f64, Action)> = None;
        for &i in candidates.iter().take(config.max_candidates) {
            let current = price(&nodes[i], catalog);
            if best.as_ref().is_some_and(|(saving, _)| current * HOURS_PER_MONTH <= *saving) {
                continue;
            }
            let option = if fits_elsewhere(snapshot, &[i])? {
                Some((current * HOURS_PER_MONTH, Action::Delete(vec![i as u32])))
            } else {
                cheapest_replacement(snapshot, catalog, &[i], current, 4)?.map(|offering| {
                    let saving = (current - catalog.offerings[offering as usize].price_per_hour) * HOURS_PER_MONTH;
                    (saving, Action::Replace(Replacement { nodes: vec![i as u32], offering }))
                })
            };
            if let Some((saving, action)) = option
                && saving >= config.min_monthly_savings
                && best.as_ref().is_none_or(|(b, _)| saving > *b)
            {
                best = Some((saving, action));
            }
        }
        Ok(best.map(|(_, action)| action).into_iter().collect())
    }
}

nodewright_plugin::export!(SavingsThreshold);
