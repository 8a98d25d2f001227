//! The native policies the host falls back to when a plugin call fails.

use super::request::{ConsolidationAction, Ranking, SelectionRequest};
use crate::model::Catalog;

/// Selection fallback, the choice Karpenter makes: every feasible offering
/// scored by its price per hour. All of them hold the whole request, so the
/// cheapest per hour is also the cheapest per unit of requested resources.
pub fn cheapest_ranking(catalog: &Catalog, request: &SelectionRequest) -> Ranking {
    Ranking {
        entries: request
            .feasible
            .iter()
            .filter_map(|&i| catalog.offerings.get(i as usize).map(|o| (i, o.price_per_hour)))
            .collect(),
    }
}

/// Consolidation fallback: leave every node alone.
pub fn no_consolidation() -> Vec<ConsolidationAction> {
    Vec::new()
}
