//! `on-demand-only`: the cheapest on-demand (or reserved) offering; spot is
//! never bought. The baseline a spot-friendly policy is measured against.

use nodewright_plugin::{CapacityType, Catalog, Ranking, SelectionRequest, Selector, score_each};

struct OnDemandOnly;

impl Selector for OnDemandOnly {
    fn rank(request: &SelectionRequest, catalog: &Catalog) -> Result<Ranking, String> {
        Ok(score_each(request, catalog, |o| (o.capacity_type != CapacityType::Spot).then_some(o.price_per_hour)))
    }
}

nodewright_plugin::export!(OnDemandOnly);
