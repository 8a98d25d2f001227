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
