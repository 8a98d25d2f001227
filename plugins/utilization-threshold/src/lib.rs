//! `utilization-threshold` (contract 0.2.0): consolidate nodes whose busiest
//! resource (CPU or memory requests over allocatable) is under a threshold.
//! Empty nodes are deleted; of the under-used ones, the least used whose pods
//! fit on the other nodes is deleted, or else replaced by the cheapest
//! cheaper offering that holds its pods. One under-used node per plan, so
//! every step is taken on a fresh snapshot.
//!
//! Config: `{"threshold_percent": 50, "max_candidates": 32}`.

use std::sync::OnceLock;

use nodewright_plugin::consolidate::{cheapest_replacement, fits_elsewhere, price, utilisation};
use nodewright_plugin::{Action, Catalog, Consolidator, Replacement, Snapshot};

#[derive(Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    threshold_percent: f64,
    max_candidates: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { threshold_percent: 50.0, max_candidates: 32 }
    }
}

fn config() -> Result<Config, String> {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let c = nodewright_plugin::config::<Config>()?;
            if !(0.0..=100.0).contains(&c.threshold_percent) {
                return Err(format!("threshold_percent {} is not between 0 and 100", c.threshold_percent));
            }
            Ok(c)
        })
        .clone()
}

struct UtilizationThreshold;

impl Consolidator for UtilizationThreshold {
    fn plan(snapshot: &Snapshot, catalog: &Catalog) -> Result<Vec<Action>, String> {
        let config = config()?;
        let nodes = &snapshot.nodes;
        let mut actions: Vec<Action> = (0..nodes.len())
            .filter(|&i| nodes[i].disruptable && nodes[i].pods.is_empty())
            .map(|i| Action::Delete(vec![i as u32]))
            .collect();
        if !actions.is_empty() {
            return Ok(actions);
        }
        let threshold = config.threshold_percent / 100.0;
        let mut under: Vec<(f64, usize)> = (0..nodes.len())
            .filter(|&i| nodes[i].disruptable)
            .map(|i| (utilisation(&nodes[i], catalog), i))
            .filter(|(u, _)| *u < threshold)
            .collect();
        under.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(_, i) in under.iter().take(config.max_candidates) {
            if fits_elsewhere(snapshot, &[i])? {
                actions.push(Action::Delete(vec![i as u32]));
                break;
            }
            if let Some(offering) = cheapest_replacement(snapshot, catalog, &[i], price(&nodes[i], catalog), 8)? {
                actions.push(Action::Replace(Replacement { nodes: vec![i as u32], offering }));
                break;
            }
        }
        Ok(actions)
    }
}

nodewright_plugin::export!(UtilizationThreshold);
