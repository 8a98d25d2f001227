//! `empty-only`: delete nodes that run no pods, and nothing else.
//!
//! Config: `{"min_age_seconds": 30}`: a node younger than this is left alone,
//! so a node that has just booted is not deleted before pods land on it.

use std::sync::OnceLock;

use nodewright_plugin::{Action, Catalog, Consolidator, Snapshot};

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    min_age_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { min_age_seconds: 30 }
    }
}

fn min_age() -> Result<u64, String> {
    static MIN_AGE: OnceLock<Result<u64, String>> = OnceLock::new();
    MIN_AGE.get_or_init(|| nodewright_plugin::config::<Config>().map(|c| c.min_age_seconds)).clone()
}

struct EmptyOnly;

impl Consolidator for EmptyOnly {
    fn plan(snapshot: &Snapshot, _catalog: &Catalog) -> Result<Vec<Action>, String> {
        let min_age = min_age()?;
        Ok(snapshot
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.disruptable && node.pods.is_empty() && node.age_seconds >= min_age)
            .map(|(index, _)| Action::Delete(vec![index as u32]))
            .collect())
    }
}

nodewright_plugin::export!(EmptyOnly);
