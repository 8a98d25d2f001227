//! The native policies the host falls back to when a plugin call fails.

use super::request::{ConsolidationAction, Ranking, SelectionRequest};
use crate::model::Catalog;

/// Selection fallback, the choice Karpenter makes: every feasible offering
/// scored by its price per hour. All of them hold the whole request, so the
/// cheapest per hour is also the cheapest per unit of requested resources.
pub fn cheapest_ranking(catalog: &Catalog, request: &SelectionRequest) -> Ranking {
    let mut offerings = Vec::with_capacity(request.feasible.len());
    let mut scores = Vec::with_capacity(request.feasible.len());
    for &i in &request.feasible {
        if let Some(offering) = catalog.offerings.get(i as usize) {
            offerings.push(i);
            scores.push(offering.price_per_hour);
        }
    }
    Ranking::trusted(offerings, scores)
}

/// Consolidation fallback: leave every node alone.
pub fn no_consolidation() -> Vec<ConsolidationAction> {
    Vec::new()
}
