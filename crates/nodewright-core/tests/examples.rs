//! The example files under `examples/` load.

mod common;

use common::read_example as read;
use nodewright_core::model::{Catalog, Discount, parse_commitments, parse_node_pools, parse_price_overrides};


#[test]
fn the_example_node_pools_load() {
    let (file, text) = read("examples/nodepools/default.yaml");
    let pools = parse_node_pools(&file, &text).unwrap();
    assert_eq!(pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["default", "gpu"]);
    assert_eq!(pools[0].selection.plugin, "spot-savvy");
    assert_eq!(pools[1].limits.gpus, Some(16));
}

#[test]
fn the_example_price_overrides_apply() {
    let (file, text) = read("examples/prices.yaml");
    let overrides = parse_price_overrides(&file, &text).unwrap();
    let catalog = Catalog::bundled();
    let changed = catalog.with_overrides(&overrides);
    let price = |c: &Catalog, t: &str| {
        c.offerings.iter().find(|o| o.instance_type == t && o.capacity_type == nodewright_core::model::CapacityType::OnDemand).unwrap().price_per_hour
    };
    assert_eq!(price(&changed, "r6i.2xlarge"), 0.36);
    assert!((price(&changed, "m7g.large") - price(&catalog, "m7g.large") * 0.72).abs() < 1e-12);
}

#[test]
fn the_example_commitments_load() {
    let (file, text) = read("examples/commitments.yaml");
    let commitments = parse_commitments(&file, &text).unwrap();
    assert_eq!(commitments.savings_plans.len(), 1);
    assert_eq!(commitments.savings_plans[0].discount, Discount::All(0.28));
    assert_eq!(commitments.savings_plans[0].hourly_commitment, 0.90);
    assert!(commitments.reserved_instances.is_empty());
}
