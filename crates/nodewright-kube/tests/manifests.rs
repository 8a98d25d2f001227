//! The CRDs the chart installs (`charts/nodewright/crds/`) and the samples
//! under `examples/deploy/` are what the CRD types say.

#[path = "../../nodewright-core/tests/common/mod.rs"]
mod common;

use common::read_example as read;
use nodewright_core::model::parse_node_pools;

#[test]
fn the_committed_crds_are_what_nodewright_crds_prints() {
    let (file, text) = read("charts/nodewright/crds/crds.yaml");
    let printed = nodewright_kube::crd::crds_yaml();
    // `NODEWRIGHT_BLESS=1` rewrites the file (then review the diff).
    if std::env::var_os("NODEWRIGHT_BLESS").is_some() {
        std::fs::write(&file, &printed).unwrap();
        return;
    }
    assert!(
        text == printed,
        "{file} is stale: regenerate it with `cargo run -p nodewright --features controller -- crds > charts/nodewright/crds/crds.yaml` (or NODEWRIGHT_BLESS=1 scripts/test)"
    );
}

#[test]
fn the_sample_resources_are_valid_custom_resources() {
    use nodewright_kube::crd::{EC2NodeClass, NodePool, PluginMode, PolicyPlugin};
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
