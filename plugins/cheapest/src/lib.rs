//! `cheapest`: every feasible offering scored by its price per hour.
//!
//! Every feasible offering can hold the whole request, so the lowest price
//! per hour is also the lowest price per unit of requested resources. This
//! is the choice Karpenter makes, and the host's built-in fallback.

use nodewright_plugin::{Catalog, Ranking, SelectionRequest, Selector, columns, score_feasible_from};

struct Cheapest;

impl Selector for Cheapest {
    fn rank(request: &SelectionRequest, _catalog: &Catalog) -> Result<Ranking, String> {
        Ok(score_feasible_from(request, &columns().price_per_hour))
    }
}

nodewright_plugin::export!(Cheapest);
