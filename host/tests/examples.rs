//! The example files under `examples/` load.

use std::path::Path;

use nodewright::model::{Catalog, parse_node_pools, parse_price_overrides};

fn read(path: &str) -> (String, String) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    (full.display().to_string(), std::fs::read_to_string(&full).unwrap())
}

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
        c.offerings.iter().find(|o| o.instance_type == t && o.capacity_type == nodewright::model::CapacityType::OnDemand).unwrap().price_per_hour
    };
    assert_eq!(price(&changed, "r6i.2xlarge"), 0.36);
    assert!((price(&changed, "m7g.large") - price(&catalog, "m7g.large") * 0.72).abs() < 1e-12);
}

/// `client.some_operation()` calls in a source file, as IAM action names.
fn called_actions(source: &str, service: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(source)).unwrap();
    let mut actions = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices(".client") {
        let rest = text[i + ".client".len()..].trim_start();
        let Some(rest) = rest.strip_prefix('.') else { continue };
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.is_empty() || !rest[name.len()..].starts_with("()") {
            continue;
        }
        let camel: String = name
            .split('_')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
            })
            .collect();
        actions.insert(format!("{service}:{camel}"));
    }
    actions
}

#[test]
fn the_iam_policy_allows_every_aws_call_the_code_makes() {
    let (file, text) = read("examples/deploy/iam-policy.json");
    let policy: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut allowed = std::collections::BTreeSet::new();
    for statement in policy["Statement"].as_array().unwrap() {
        match &statement["Action"] {
            serde_json::Value::String(a) => {
                allowed.insert(a.clone());
            }
            serde_json::Value::Array(list) => allowed.extend(list.iter().map(|a| a.as_str().unwrap().to_string())),
            other => panic!("{other}"),
        }
    }
    let mut called = called_actions("src/cloud/ec2.rs", "ec2");
    called.extend(called_actions("src/interruption/sqs.rs", "sqs"));
    assert!(called.len() >= 10, "{called:?}");
    let missing: Vec<_> = called.difference(&allowed).collect();
    assert!(missing.is_empty(), "{file} does not allow {missing:?}");
}

#[test]
fn the_committed_crds_are_what_nodewright_crds_prints() {
    let (file, text) = read("examples/deploy/crds/crds.yaml");
    assert!(
        text == nodewright::cluster::kube::crd::crds_yaml(),
        "{file} is stale: regenerate it with `cargo run -p nodewright -- crds > examples/deploy/crds/crds.yaml`"
    );
}

#[test]
fn the_sample_resources_are_valid_custom_resources() {
    use nodewright::cluster::kube::crd::{EC2NodeClass, NodePool, PluginMode, PolicyPlugin};
    let (file, text) = read("examples/deploy/samples.yaml");
    let docs: Vec<serde_yaml_ng::Value> =
        serde_yaml_ng::Deserializer::from_str(&text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    assert_eq!(docs.len(), 3, "{file}");
    let class: EC2NodeClass = serde_yaml_ng::from_value(docs[0].clone()).unwrap();
    assert!(class.spec.ami.ssm_parameter.is_some());
    let pool: NodePool = serde_yaml_ng::from_value(docs[1].clone()).unwrap();
    let parsed = parse_node_pools(&file, &serde_yaml_ng::to_string(&docs[1]).unwrap()).unwrap();
    assert_eq!(parsed[0].selection.plugin, "team-policy");
    assert_eq!(parsed[0].startup_taints.len(), 1);
    assert!(pool.spec.spec.contains_key("policy"));
    let plugin: PolicyPlugin = serde_yaml_ng::from_value(docs[2].clone()).unwrap();
    assert_eq!(plugin.spec.mode, PluginMode::Shadow);
    assert_eq!(plugin.spec.source.sha256.len(), 64);
}
