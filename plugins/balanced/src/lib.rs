//! `balanced` (contract 0.2.0): savings weighed against disruption. Each
//! candidate action — delete one node, replace one node, or merge the two
//! least-used nodes onto one cheaper node — scores its monthly saving minus
//! `dollars_per_pod` for every pod it evicts; the best positive score wins.
//! Empty nodes cost nothing to remove and are always proposed.
//!
//! Config: `{"dollars_per_pod": 5.0, "max_candidates": 24}`.

use std::sync::OnceLock;

use nodewright_plugin::consolidate::{HOURS_PER_MONTH, cheapest_replacement, fits_elsewhere, price, utilisation};
use nodewright_plugin::{Action, Catalog, Consolidator, Replacement, Snapshot};

#[derive(Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    dollars_per_pod: f64,
    max_candidates: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { dollars_per_pod: 5.0, max_candidates: 24 }
    }
}

fn config() -> Result<Config, String> {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    CONFIG.get_or_init(nodewright_plugin::config::<Config>).clone()
}

struct Balanced;

impl Consolidator for Balanced {
    fn plan(snapshot: &Snapshot, catalog: &Catalog) -> Result<Vec<Action>, String> {
        let config = config()?;
        let nodes = &snapshot.nodes;
        let empty: Vec<Action> = (0..nodes.len())
            .filter(|&i| nodes[i].disruptable && nodes[i].pods.is_empty())
            .map(|i| Action::Delete(vec![i as u32]))
            .collect();
        if !empty.is_empty() {
            return Ok(empty);
        }
        let mut candidates: Vec<(f64, usize)> =
            (0..nodes.len()).filter(|&i| nodes[i].disruptable).map(|i| (utilisation(&nodes[i], catalog), i)).collect();
        candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        candidates.truncate(config.max_candidates);
        let score = |saving_per_hour: f64, chosen: &[usize]| {
            let pods: usize = chosen.iter().map(|&i| nodes[i].pods.len()).sum();
            saving_per_hour * HOURS_PER_MONTH - config.dollars_per_pod * pods as f64
        };
        let mut best: Option<(f64, Action)> = None;
        fn consider(best: &mut Option<(f64, Action)>, value: f64, action: Action) {
            if value > 0.0 && best.as_ref().is_none_or(|(b, _)| value > *b) {
                *best = Some((value, action));
            }
        }
        // Merge the two least-used nodes.
        if let [(_, a), (_, b), ..] = candidates[..] {
            let current = price(&nodes[a], catalog) + price(&nodes[b], catalog);
            if let Some(offering) = cheapest_replacement(snapshot, catalog, &[a, b], current, 4)? {
                let saving = current - catalog.offerings[offering as usize].price_per_hour;
                consider(&mut best, score(saving, &[a, b]), Action::Replace(Replacement { nodes: vec![a as u32, b as u32], offering }));
            }
        }
        for &(_, i) in &candidates {
            let current = price(&nodes[i], catalog);
            if score(current, &[i]) <= best.as_ref().map_or(0.0, |(b, _)| *b) {
                continue;
            }
            if fits_elsewhere(snapshot, &[i])? {
                consider(&mut best, score(current, &[i]), Action::Delete(vec![i as u32]));
            } else if let Some(offering) = cheapest_replacement(snapshot, catalog, &[i], current, 4)? {
                let saving = current - catalog.offerings[offering as usize].price_per_hour;
                consider(&mut best, score(saving, &[i]), Action::Replace(Replacement { nodes: vec![i as u32], offering }));
            }
        }
        Ok(best.map(|(_, action)| action).into_iter().collect())
    }
}

nodewright_plugin::export!(Balanced);
