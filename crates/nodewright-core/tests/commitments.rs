//! The commitments file: what it accepts, and the exact error for each
//! mistake, naming the file and the field.

use nodewright_core::model::{Discount, parse_commitments};

fn error(text: &str) -> String {
    parse_commitments("commitments.yaml", text).expect_err("refused").to_string()
}

#[test]
fn the_documented_example_loads() {
    let text = "savingsPlans:\n  - hourlyCommitment: 2.5\n    discount: 0.28\n  - hourlyCommitment: 1\n    discounts:\n      m6i: 0.31\n      c6g: 0.34\nreservedInstances:\n  - instanceType: m5.xlarge\n    count: 3\n    hourlyRate: 0.121\n";
    let c = parse_commitments("commitments.yaml", text).unwrap();
    assert_eq!(c.savings_plans.len(), 2);
    assert_eq!(c.savings_plans[0].discount, Discount::All(0.28));
    assert_eq!(c.savings_plans[1].discount.for_family("c6g"), Some(0.34));
    assert_eq!(c.savings_plans[1].discount.for_family("m5"), None);
    assert_eq!((c.reserved_instances[0].instance_type.as_str(), c.reserved_instances[0].count), ("m5.xlarge", 3));
}

#[test]
fn each_mistake_names_the_file_and_the_field() {
    let plan = |body: &str| format!("savingsPlans:\n  - hourlyCommitment: 1\n{body}");
    assert_eq!(
        error(&plan("    discount: 1.2\n")),
        "commitments.yaml: savingsPlans[0].discount: 1.2 is not a discount from 0 (none) to below 1 (everything)"
    );
    assert_eq!(
        error(&plan("    discount: 0.2\n    discounts:\n      m5: 0.3\n")),
        "commitments.yaml: savingsPlans[0]: give exactly one of discount and discounts"
    );
    assert_eq!(error(&plan("")), "commitments.yaml: savingsPlans[0]: give exactly one of discount and discounts");
    assert_eq!(
        error(&plan("    discounts:\n      m5: -0.1\n")),
        "commitments.yaml: savingsPlans[0].discounts.m5: -0.1 is not a discount from 0 (none) to below 1 (everything)"
    );
    assert_eq!(
        error("savingsPlans:\n  - hourlyCommitment: -3\n    discount: 0.2\n"),
        "commitments.yaml: savingsPlans[0].hourlyCommitment: -3 is not an hourly amount from 0 to 1000000 $"
    );
    assert_eq!(
        error("reservedInstances:\n  - instanceType: m5.large\n    count: 0\n    hourlyRate: 0.05\n"),
        "commitments.yaml: reservedInstances[0].count: 0 is not from 1 to 100000"
    );
    assert_eq!(
        error("reservedInstances:\n  - instanceType: ' '\n    count: 1\n    hourlyRate: 0.05\n"),
        "commitments.yaml: reservedInstances[0].instanceType: is empty"
    );
    let unknown = error("savingsPlan:\n  - hourlyCommitment: 1\n");
    assert!(unknown.starts_with("commitments.yaml: "), "{unknown}");
    assert!(unknown.contains("savingsPlan"), "{unknown}");
}

mod capacity_reservations {
    use std::sync::Arc;

    use nodewright_core::model::{CapacityType, Catalog, NodePool, PolicyRef, parse_commitments};
    use nodewright_core::sim::{PolicyUnderTest, SimulationConfig, parse_trace, simulate};

    const RESERVATION: &str =
        "capacityReservations:\n  - instanceType: m5.xlarge\n    zone: us-east-1a\n    count: 2\n    hourlyRate: 0.192\n";

    /// Three 3-CPU / 8 GiB pods, one per node, for two hours; `selector`
    /// is added to each.
    fn trace(selector: &str) -> String {
        let mut text = String::from("{\"format\":\"nodewright-trace\",\"version\":1,\"name\":\"odcr\",\"seed\":1,\"duration_s\":7200.0}\n");
        for i in 0..3 {
            text.push_str(&format!(
                "{{\"t\":{}.0,\"add\":\"db-{i}\",\"workload\":\"db\",\"cpu_m\":3000,\"mem_mib\":8192,\"anti_affinity\":true{selector}}}\n",
                i + 1
            ));
        }
        text
    }

    fn run(selector: &str) -> nodewright_core::cloud::billing::CommittedBill {
        let commitments = parse_commitments("c.yaml", RESERVATION).unwrap();
        let catalog = Catalog::bundled().with_reservations(&commitments.capacity_reservations).unwrap();
        let reserved = catalog.reserved_offering("m5.xlarge", "us-east-1a").unwrap();
        assert_eq!(catalog.offerings[reserved as usize].capacity_type, CapacityType::Reserved);
        assert_eq!(catalog.offerings[reserved as usize].price_per_hour, 0.0);
        let trace = parse_trace("odcr.jsonl", &trace(selector)).unwrap();
        let baseline = PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() };
        let policy = PolicyUnderTest { name: "karpenter-like".into(), selection: baseline.clone(), consolidation: baseline };
        let config = SimulationConfig { commitments, interruptions: false, ..SimulationConfig::default() };
        // The simulator's default NodePool: every offering, consolidation after a minute.
        let mut pool = NodePool::new("default");
        pool.consolidate_after = Some(std::time::Duration::from_secs(60));
        let result = simulate(&trace, &policy, &[pool], Arc::new(catalog), &config, |_| {}).unwrap();
        result.metrics.commitments.expect("commitments were given")
    }

    #[test]
    fn the_baseline_launches_into_a_capacity_reservation_first_and_pays_it_whether_used_or_not() {
        let bill = run("");
        // Two of the three nodes run in the reservation from their launch
        // (within the first two minutes) to the end; the third is bought elsewhere.
        assert!(bill.reservation_hours_used > 3.8 && bill.reservation_hours_used <= 4.0, "{bill:?}");
        assert!((bill.reservation_hours_used + bill.reservation_hours_unused - 4.0).abs() < 1e-9, "{bill:?}");
        // 2 instances × $0.192 × 2 h, paid whatever runs.
        assert!((bill.commitment_fees - 0.768).abs() < 1e-9, "{bill:?}");
        assert!(bill.spot > 0.0, "the third node is the cheapest other offering, spot: {bill:?}");
        // Pods that must run on spot leave the reservation empty: it is paid all the same.
        let bill = run(",\"selector\":{\"karpenter.sh/capacity-type\":\"spot\"}");
        assert_eq!(bill.reservation_hours_used, 0.0);
        assert!((bill.reservation_hours_unused - 4.0).abs() < 1e-9, "{bill:?}");
        assert!((bill.commitment_fees - 0.768).abs() < 1e-9, "{bill:?}");
    }

    #[test]
    fn a_reservation_of_a_type_not_sold_in_its_zone_is_refused_by_its_index() {
        let commitments = parse_commitments(
            "c.yaml",
            "capacityReservations:\n  - instanceType: m5.xlarge\n    zone: us-east-1a\n    count: 1\n    hourlyRate: 0.192\n  - instanceType: m5.xlarge\n    zone: mars-1a\n    count: 1\n    hourlyRate: 0.192\n",
        )
        .unwrap();
        let refused = Catalog::bundled().with_reservations(&commitments.capacity_reservations).unwrap_err();
        assert_eq!(refused, (1, "m5.xlarge is not sold on demand in mars-1a".to_string()));
        let twice = parse_commitments("c.yaml", &format!("{RESERVATION}  - instanceType: m5.xlarge\n    zone: us-east-1a\n    count: 1\n    hourlyRate: 0.1\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            twice,
            "c.yaml: capacityReservations[1]: m5.xlarge in us-east-1a is already reserved by capacityReservations[0]; give one entry per type and zone"
        );
        let empty = parse_commitments("c.yaml", "capacityReservations:\n  - instanceType: m5.xlarge\n    zone: ' '\n    count: 1\n    hourlyRate: 0.1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(empty, "c.yaml: capacityReservations[0].zone: is empty");
    }

    #[test]
    fn a_reservation_id_is_read_checked_and_unique() {
        let entry = |zone: &str, id: &str| format!("  - instanceType: m5.xlarge\n    zone: {zone}\n    count: 1\n    hourlyRate: 0.192\n    id: {id}\n");
        let read = parse_commitments("c.yaml", &format!("capacityReservations:\n{}", entry("us-east-1a", "cr-0a1b2c3d4e5f60718"))).unwrap();
        assert_eq!(read.capacity_reservations[0].id.as_deref(), Some("cr-0a1b2c3d4e5f60718"));
        let error = |text: String| parse_commitments("c.yaml", &text).unwrap_err().to_string();
        assert_eq!(
            error(format!("capacityReservations:\n{}", entry("us-east-1a", "odcr-1"))),
            "c.yaml: capacityReservations[0].id: \"odcr-1\" is not a capacity reservation id (cr- and 8 to 17 hexadecimal digits)"
        );
        assert_eq!(
            error(format!("capacityReservations:\n{}{}", entry("us-east-1a", "cr-0a1b2c3d"), entry("us-east-1b", "cr-0a1b2c3d"))),
            "c.yaml: capacityReservations[1].id: cr-0a1b2c3d is already capacityReservations[0]"
        );
    }
}
