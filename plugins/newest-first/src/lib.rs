//! Prefer the newest generation, then the price.
use nodewright_plugin::{Catalog, Ranking, SelectionRequest, Selector, score_each};

struct NewestFirst;

impl Selector for NewestFirst {
    fn rank(request: &SelectionRequest, catalog: &Catalog) -> Result<Ranking, String> {
        // Lower is preferred: each generation back costs 10 %.
        Ok(score_each(request, catalog, |o| {
            Some(o.price_per_hour * (1.0 + 0.1 * (8.0 - o.generation as f64).max(0.0)))
        }))
    }
}

nodewright_plugin::export!(NewestFirst);
