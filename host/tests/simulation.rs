//! The simulator: determinism, cost, pod wait, bad traces.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nodewright::model::{Catalog, NodePool, PolicyRef};
use nodewright::sim::{PolicyUnderTest, Report, SimulationConfig, SimulationResult, generate, parse_trace, simulate};

fn catalog() -> Arc<Catalog> {
    static CATALOG: OnceLock<Arc<Catalog>> = OnceLock::new();
    CATALOG.get_or_init(|| Arc::new(Catalog::bundled())).clone()
}

fn policy(selection: &str) -> PolicyUnderTest {
    PolicyUnderTest {
        name: selection.into(),
        selection: PolicyRef { plugin: selection.into(), config: "{}".into() },
        consolidation: PolicyRef { plugin: "empty-only".into(), config: "{}".into() },
    }
}

fn run(kind: &str, scale: f64, selection: &str, config: &SimulationConfig) -> SimulationResult {
    let trace = parse_trace(kind, &generate(kind, 3, scale).unwrap()).unwrap();
    let mut pool = NodePool::new("default");
    pool.consolidate_after = Some(Duration::from_secs(60));
    simulate(&trace, &policy(selection), &[pool], catalog(), config, |_| {}).unwrap()
}

fn config(cache: &tempfile::TempDir) -> SimulationConfig {
    SimulationConfig { cache_dir: Some(cache.path().into()), ..SimulationConfig::default() }
}

#[test]
fn the_same_trace_policy_and_seed_give_a_byte_identical_report() {
    let cache = tempfile::tempdir().unwrap();
    let report = |seed: u64| {
        let config = SimulationConfig { seed, ..config(&cache) };
        let result = run("batch-burst", 0.5, "spot-savvy", &config);
        Report { trace: "batch-burst".into(), seed, hours: 24.0, policies: vec![result] }.to_json()
    };
    let first = report(5);
    assert_eq!(first, report(5));
    assert_ne!(first, report(6), "another seed draws other boot latencies and prices");
}

#[test]
fn a_policy_that_only_buys_on_demand_costs_more_than_cheapest_on_a_spot_friendly_trace() {
    let cache = tempfile::tempdir().unwrap();
    let config = config(&cache);
    let cheapest = run("diurnal-web", 0.3, "cheapest", &config);
    let on_demand = run("diurnal-web", 0.3, "on-demand-only", &config);
    assert_eq!(on_demand.metrics.cost_spot, 0.0);
    assert!(cheapest.metrics.cost_spot > 0.0);
    assert!(
        on_demand.metrics.cost_total > 1.3 * cheapest.metrics.cost_total,
        "on-demand ${} vs cheapest ${}",
        on_demand.metrics.cost_total,
        cheapest.metrics.cost_total
    );
    assert_eq!(cheapest.metrics.pods, on_demand.metrics.pods);
    assert_eq!((cheapest.metrics.pods_pending_at_end, on_demand.metrics.pods_pending_at_end), (0, 0));
}

#[test]
fn pod_wait_rises_when_boot_latency_rises() {
    let cache = tempfile::tempdir().unwrap();
    let fast = SimulationConfig { boot_latency: (Duration::from_secs(20), Duration::from_secs(30)), ..config(&cache) };
    let slow = SimulationConfig { boot_latency: (Duration::from_secs(240), Duration::from_secs(300)), ..config(&cache) };
    let fast = run("batch-burst", 0.5, "cheapest", &fast);
    let slow = run("batch-burst", 0.5, "cheapest", &slow);
    assert!(fast.metrics.pod_wait_p95_s < 40.0, "{}", fast.metrics.pod_wait_p95_s);
    assert!(slow.metrics.pod_wait_p95_s > 240.0, "{}", slow.metrics.pod_wait_p95_s);
}

#[test]
fn spot_interruptions_evict_pods_that_then_run_elsewhere() {
    let cache = tempfile::tempdir().unwrap();
    let volatile = SimulationConfig { interruption_scale: 50.0, ..config(&cache) };
    let result = run("mixed", 0.3, "cheapest", &volatile);
    assert!(result.metrics.interruptions > 0, "{:?}", result.metrics);
    assert!(result.metrics.pods_disrupted > 0);
    assert_eq!(result.metrics.pods_pending_at_end, 0);
    let quiet = run("mixed", 0.3, "cheapest", &SimulationConfig { interruptions: false, ..volatile });
    assert_eq!((quiet.metrics.interruptions, quiet.metrics.pods_disrupted), (0, 0));
}

#[test]
fn empty_nodes_are_consolidated_by_the_plugin_and_the_cluster_shrinks() {
    let cache = tempfile::tempdir().unwrap();
    let result = run("batch-burst", 0.5, "cheapest", &config(&cache));
    assert!(result.metrics.consolidations > 0);
    let last = result.samples.last().unwrap();
    assert!(last.on_demand_nodes + last.spot_nodes < result.metrics.peak_nodes as u32);
}

#[test]
fn a_selection_plugin_that_fails_mid_run_is_answered_by_the_builtin_and_the_run_completes() {
    let cache = tempfile::tempdir().unwrap();
    // The turncoat fails every request for NodePool `poison`; it passes conformance.
    let turncoat = std::path::Path::new(env!("NODEWRIGHT_PLUGIN_DIR")).join("hostile-turncoat.wasm");
    let trace = parse_trace("burst", &generate("batch-burst", 3, 0.3).unwrap()).unwrap();
    let mut pool = NodePool::new("poison");
    pool.consolidate_after = Some(Duration::from_secs(60));
    let policy = PolicyUnderTest {
        name: "turncoat".into(),
        selection: PolicyRef { plugin: turncoat.display().to_string(), config: "{}".into() },
        consolidation: PolicyRef { plugin: "empty-only".into(), config: "{}".into() },
    };
    let result = simulate(&trace, &policy, &[pool], catalog(), &config(&cache), |_| {}).unwrap();
    assert!(result.metrics.launches > 0);
    assert_eq!(result.metrics.pods_pending_at_end, 0);
    // Three failures in a row roll the slot back to the built-in policy; later decisions are native.
    assert_eq!(result.metrics.plugin_failures, 3);
}

#[test]
fn a_policy_that_cannot_be_loaded_stops_the_run_with_its_name() {
    let cache = tempfile::tempdir().unwrap();
    let trace = parse_trace("burst", &generate("batch-burst", 3, 0.1).unwrap()).unwrap();
    let err = simulate(&trace, &policy("/no/such/policy.wasm"), &[NodePool::new("default")], catalog(), &config(&cache), |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("policy /no/such/policy.wasm: /no/such/policy.wasm: cannot read: "), "{err}");
}

#[test]
fn expiry_and_consolidation_run_in_the_simulator_and_are_counted_by_reason() {
    let cache = tempfile::tempdir().unwrap();
    let trace = parse_trace("web", &generate("diurnal-web", 3, 0.3).unwrap()).unwrap();
    let mut pool = NodePool::new("default");
    pool.consolidate_after = Some(Duration::from_secs(60));
    pool.expire_after = Some(Duration::from_secs(6 * 3600));
    let policy = PolicyUnderTest {
        name: "cheapest+karpenter-like".into(),
        selection: PolicyRef { plugin: "cheapest".into(), config: "{}".into() },
        consolidation: PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
    };
    let result = simulate(&trace, &policy, &[pool], catalog(), &config(&cache), |_| {}).unwrap();
    let m = &result.metrics;
    assert!(m.disrupted_expired > 0, "{m:?}");
    assert!(m.disrupted_empty + m.disrupted_underutilized > 0, "{m:?}");
    assert_eq!(m.consolidations, m.disrupted_empty + m.disrupted_underutilized);
    assert!(m.pods_evicted > 0, "{m:?}");
    assert_eq!(m.pods_pending_at_end, 0, "every evicted pod runs again");
}
