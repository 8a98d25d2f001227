//! Property tests: every parser of user, cluster or plugin input answers a
//! value or an error, never a panic, whatever it is given — arbitrary text,
//! and valid documents with their numbers and durations replaced by
//! arbitrary (often absurd) ones.

use proptest::prelude::*;

use nodewright_core::interruption::parse_message;
use nodewright_core::model::quantity::{parse_bytes, parse_cpu_millis, parse_duration, parse_quantity};
use nodewright_core::model::{parse_commitments, parse_node_pools, parse_price_overrides};
use nodewright_core::sim::parse_trace;

#[path = "common/numbers.rs"]
mod numbers;
use numbers::number_text;

/// Durations in Go's notation, valid or not.
fn duration_text() -> impl Strategy<Value = String> {
    (
        number_text(),
        prop_oneof![
            Just(""),
            Just("h"),
            Just("m"),
            Just("s"),
            Just("ms"),
            Just("ns"),
            Just("d"),
            Just("µs")
        ],
        number_text(),
        prop_oneof![Just(""), Just("h"), Just("s")],
    )
        .prop_map(|(a, u, b, v)| format!("{a}{u}{b}{v}"))
}

/// Quantities in Kubernetes notation, valid or not.
fn quantity_text() -> impl Strategy<Value = String> {
    (
        number_text(),
        prop_oneof![
            Just(""),
            Just("m"),
            Just("k"),
            Just("Mi"),
            Just("Gi"),
            Just("Ti"),
            Just("Ei"),
            Just("E"),
            Just("Qi")
        ],
    )
        .prop_map(|(n, s)| format!("{n}{s}"))
}

const NODE_POOL: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: default
spec:
  weight: WEIGHT
  template:
    spec:
      requirements:
        - key: karpenter.k8s.aws/instance-generation
          operator: Gt
          values: ["GEN"]
      expireAfter: EXPIRE
      terminationGracePeriod: GRACE
  limits:
    cpu: CPU
    memory: MEMORY
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: AFTER
    budgets:
      - nodes: "BUDGET"
"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn quantities_and_durations_answer_a_value_or_an_error(q in quantity_text(), d in duration_text(), any_text in ".{0,40}") {
        for text in [&q, &any_text] {
            if let Ok(v) = parse_quantity(text) { prop_assert!(v.is_finite() && v >= 0.0); }
            if let Ok(m) = parse_cpu_millis(text) { prop_assert!(m <= nodewright_core::model::quantity::MAX_CPU_MILLIS); }
            if let Ok(b) = parse_bytes(text) { prop_assert!(b <= nodewright_core::model::quantity::MAX_BYTES); }
        }
        for text in [&d, &any_text] {
            if let Ok(duration) = parse_duration(text) {
                prop_assert!(duration.as_secs_f64() <= nodewright_core::model::quantity::MAX_DURATION_SECONDS);
            }
        }
    }

    #[test]
    fn node_pools_with_arbitrary_numbers_load_or_name_the_field(
        weight in number_text(), generation in number_text(), expire in duration_text(), grace in duration_text(),
        cpu in quantity_text(), memory in quantity_text(), after in duration_text(), budget in number_text(),
    ) {
        let text = NODE_POOL
            .replace("WEIGHT", &weight).replace("GEN", &generation).replace("EXPIRE", &expire).replace("GRACE", &grace)
            .replace("CPU", &cpu).replace("MEMORY", &memory).replace("AFTER", &after).replace("BUDGET", &format!("{budget}%"));
        match parse_node_pools("pools.yaml", &text) {
            Ok(pools) => prop_assert_eq!(pools.len(), 1),
            Err(e) => prop_assert!(e.to_string().starts_with("pools.yaml: "), "{}", e),
        }
    }

    #[test]
    fn arbitrary_yaml_text_never_panics_the_node_pool_or_price_parsers(text in ".{0,200}") {
        let _ = parse_node_pools("pools.yaml", &text);
        let _ = parse_price_overrides("prices.yaml", &text);
    }

    #[test]
    fn price_overrides_with_arbitrary_numbers_apply_or_name_the_field(price in number_text(), adjust in number_text()) {
        for text in [
            format!("overrides:\n  - instanceType: m6i.large\n    price: {price}\n"),
            format!("overrides:\n  - family: c6g\n    capacityType: spot\n    adjustPercent: {adjust}\n"),
        ] {
            match parse_price_overrides("prices.yaml", &text) {
                Ok(overrides) => {
                    let catalog = nodewright_core::model::Catalog::bundled_sample(50).with_overrides(&overrides);
                    prop_assert!(catalog.offerings.iter().all(|o| o.price_per_hour.is_finite() && o.price_per_hour >= 0.0));
                }
                Err(e) => prop_assert!(e.to_string().starts_with("prices.yaml: overrides[0]"), "{}", e),
            }
        }
    }

    #[test]
    fn commitments_with_arbitrary_numbers_load_or_name_the_field(
        commitment in number_text(), discount in number_text(), count in number_text(), rate in number_text(),
    ) {
        let text = format!(
            "savingsPlans:\n  - hourlyCommitment: {commitment}\n    discount: {discount}\nreservedInstances:\n  - instanceType: m5.large\n    count: {count}\n    hourlyRate: {rate}\n"
        );
        match parse_commitments("commitments.yaml", &text) {
            Ok(c) => {
                let plan = &c.savings_plans[0];
                prop_assert!(plan.hourly_commitment.is_finite() && plan.hourly_commitment >= 0.0);
                prop_assert!(c.reserved_instances[0].count >= 1 && c.reserved_instances[0].hourly_rate.is_finite());
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(
                    text.starts_with("commitments.yaml: savingsPlans[0]") || text.starts_with("commitments.yaml: reservedInstances[0]"),
                    "{}", text
                );
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_commitments_parser(text in ".{0,200}") {
        let _ = parse_commitments("commitments.yaml", &text);
    }

    #[test]
    fn traces_with_arbitrary_numbers_load_or_name_line_and_field(
        duration in number_text(), t in number_text(), cpu in number_text(), mem in number_text(), gpus in number_text(), priority in number_text(),
    ) {
        let text = format!(
            "{{\"format\":\"nodewright-trace\",\"version\":1,\"name\":\"p\",\"duration_s\":{duration}}}\n{{\"t\":{t},\"add\":\"a\",\"workload\":\"w\",\"cpu_m\":{cpu},\"mem_mib\":{mem},\"gpus\":{gpus},\"priority\":{priority}}}\n{{\"t\":{t},\"del\":\"a\"}}\n"
        );
        match parse_trace("t.jsonl", &text) {
            Ok(trace) => {
                prop_assert!(trace.duration_s <= nodewright_core::sim::trace::MAX_TRACE_SECONDS);
                prop_assert_eq!(trace.events.len(), 2);
            }
            Err(e) => prop_assert!(e.to_string().starts_with("t.jsonl:"), "{}", e),
        }
    }

    #[test]
    fn arbitrary_trace_text_never_panics(text in "(\\{.{0,60}\\}\n){0,4}") {
        let header = "{\"format\":\"nodewright-trace\",\"version\":1,\"name\":\"p\",\"duration_s\":100}\n";
        let _ = parse_trace("t.jsonl", &text);
        let _ = parse_trace("t.jsonl", &format!("{header}{text}"));
    }

    #[test]
    fn eventbridge_messages_parse_or_name_the_field(
        source in prop_oneof![Just("aws.ec2".to_string()), Just("aws.health".to_string()), ".{0,10}"],
        detail_type in prop_oneof![
            Just("EC2 Spot Instance Interruption Warning".to_string()),
            Just("EC2 Instance State-change Notification".to_string()),
            Just("AWS Health Event".to_string()),
            ".{0,20}",
        ],
        detail in prop_oneof![
            Just(serde_json::json!({"instance-id": "i-0abc", "state": "terminated"})),
            Just(serde_json::json!({"service": "EC2", "eventTypeCategory": "scheduledChange", "affectedEntities": [{"entityValue": 7}]})),
            Just(serde_json::json!({"instance-id": 12})),
            Just(serde_json::json!([1, 2])),
            Just(serde_json::json!(null)),
        ],
        garbage in ".{0,80}",
    ) {
        let body = serde_json::json!({"source": source, "detail-type": detail_type, "detail": detail}).to_string();
        for text in [body.as_str(), garbage.as_str()] {
            match parse_message("m-1", text) {
                Ok(_) => {}
                Err(e) => prop_assert!(e.to_string().contains("m-1"), "{}", e),
            }
        }
    }
}
