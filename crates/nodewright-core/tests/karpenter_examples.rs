//! Karpenter's own v1 example manifests (`tests/fixtures/karpenter-v1`, see
//! its PROVENANCE.md), read unchanged: every file loads, simulates a small
//! trace, and the NodePools with `minValues` launch claims that keep them.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use nodewright_core::cloud::SimulatedCloudConfig;
use nodewright_core::model::{Catalog, PolicyRef, parse_node_pools_noting};
use nodewright_core::sim::{PolicyUnderTest, SimClock, SimulationConfig, WorldSettings, parse_trace, simulate};

/// The example files, by name.
fn examples() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/karpenter-v1");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// Twelve pods of 1 CPU and 2 GiB arriving together, gone after an hour.
fn trace() -> nodewright_core::sim::Trace {
    let mut text = String::from("{\"format\":\"nodewright-trace\",\"version\":1,\"name\":\"small\",\"seed\":1,\"duration_s\":7200}\n");
    for i in 0..12 {
        text.push_str(&format!("{{\"t\":0,\"add\":\"web-{i}\",\"workload\":\"web\",\"cpu_m\":1000,\"mem_mib\":2048}}\n"));
    }
    for i in 0..12 {
        text.push_str(&format!("{{\"t\":3600,\"del\":\"web-{i}\"}}\n"));
    }
    parse_trace("small", &text).unwrap()
}

/// The baseline, selecting and consolidating.
fn karpenter_like() -> PolicyUnderTest {
    PolicyUnderTest {
        name: "karpenter-like".into(),
        selection: PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
        consolidation: PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
    }
}

/// Files whose NodePool no modelled instance satisfies: Windows (the
/// catalog is Linux), and local NVMe size (not in the instance data).
const LAUNCH_NOTHING: [&str; 5] =
    ["instance-store-ephemeral-storage.yaml", "windows-2019.yaml", "windows-2022.yaml", "windows-2025.yaml", "windows-custom-userdata.yaml"];

#[test]
fn every_karpenter_v1_example_loads_unchanged_and_simulates_a_small_trace() {
    let files = examples();
    assert_eq!(files.len(), 22);
    let catalog = Arc::new(Catalog::bundled());
    let cache = tempfile::tempdir().unwrap();
    let config = SimulationConfig { cache_dir: Some(cache.path().into()), ..SimulationConfig::default() };
    let policy = karpenter_like();
    let trace = trace();
    for (name, text) in &files {
        let (pools, notes) = parse_node_pools_noting(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let documents = |kind: &str| text.lines().filter(|l| *l == format!("kind: {kind}")).count();
        assert!(!pools.is_empty(), "{name}");
        assert_eq!(pools.len(), documents("NodePool"), "{name}");
        assert_eq!(notes.len(), documents("EC2NodeClass"), "{name}: each EC2NodeClass is skipped with a note: {notes:?}");
        let result = simulate(&trace, &policy, &pools, catalog.clone(), &config, |_| {}).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let m = &result.metrics;
        assert_eq!(m.pods, 12, "{name}");
        if LAUNCH_NOTHING.contains(&name.as_str()) {
            assert_eq!((m.launches, m.pods_never_scheduled), (0, 12), "{name}");
        } else {
            assert!(m.launches >= 1, "{name}");
            assert_eq!(m.pods_never_scheduled, 0, "{name}: every pod runs");
        }
    }
}

#[test]
fn the_examples_with_min_values_launch_claims_that_keep_them() {
    let catalog = Arc::new(Catalog::bundled());
    let mut checked = 0;
    for (name, text) in examples() {
        let (pools, _) = parse_node_pools_noting(&name, &text).unwrap();
        let min_values = pools[0].min_values.clone();
        if min_values.is_empty() {
            continue;
        }
        checked += 1;
        let settings = WorldSettings {
            cloud: SimulatedCloudConfig { seed: 3, ..Default::default() },
            ..WorldSettings::default()
        };
        let world = common::test_world(SimClock::default(), catalog.clone(), pools, settings);
        // Pods of several sizes: small claims and large ones.
        for (i, cpu) in [500u32, 4000, 14000].into_iter().enumerate() {
            world.cluster.add_pods(nodewright_core::model::PodSpec::requesting(cpu, u64::from(cpu) << 21).pods(&format!("p{i}"), 4));
        }
        let report = tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(world.provisioner.provision()).unwrap();
        assert!(!report.launched.is_empty(), "{name}: {report:?}");
        assert!(report.unschedulable.is_empty(), "{name}: {:?}", report.unschedulable);
        for request in world.cloud.launch_requests() {
            for m in &min_values {
                let values: BTreeSet<String> = request
                    .offerings
                    .iter()
                    .filter_map(|&o| nodewright_core::scheduling::offering_label(&catalog.offerings[o as usize], &m.key))
                    .collect();
                assert!(values.len() >= m.count as usize, "{name}: {} distinct {} in a launch of {}, minValues {}", values.len(), m.key, request.offerings.len(), m.count);
            }
        }
    }
    assert_eq!(checked, 2, "min-values-family.yaml and min-values-multiple-keys.yaml");
}

/// A node class's kubelet `maxPods`, beside its NodePool in one file as
/// the examples ship them, caps the pods each of that pool's nodes holds in
/// a simulation; the same file without it packs the pods on fewer nodes.
#[test]
fn a_node_class_kubelet_max_pods_caps_the_pods_its_nodes_hold_in_a_simulation() {
    let (_, text) = examples().into_iter().find(|(name, _)| name == "general-purpose.yaml").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let config = SimulationConfig { cache_dir: Some(cache.path().into()), ..SimulationConfig::default() };
    let policy = karpenter_like();
    let run = |text: &str| {
        let file = nodewright_core::model::parse_node_pool_file("general-purpose.yaml", text).unwrap();
        let catalog = Catalog::bundled().with_kubelets(&nodewright_core::model::bundled_instance_types(), &Default::default(), &file.kubelets);
        let result = simulate(&trace(), &policy, &file.pools, Arc::new(catalog), &config, |_| {}).unwrap();
        (result.metrics.launches, result.metrics.pods_never_scheduled)
    };
    let capped = text.replace("spec:\n  role:", "spec:\n  kubelet:\n    maxPods: 4\n  role:");
    assert_ne!(capped, text);
    let (free, never) = run(&text);
    assert_eq!(never, 0);
    let (launches, never) = run(&capped);
    assert_eq!(never, 0);
    assert!(launches >= 3, "twelve pods, at most four a node: {launches} launches");
    assert!(free < launches, "{free} launches without the cap");
}
