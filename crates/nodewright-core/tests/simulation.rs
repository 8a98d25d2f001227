//! The simulator: determinism, cost, pod wait, bad traces.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nodewright_core::model::{Catalog, NodePool, PolicyRef};
use nodewright_core::sim::{PolicyUnderTest, Report, SimulationConfig, SimulationResult, generate, parse_trace, simulate};

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
    assert!(fast.metrics.first_wait_p95_s < 40.0, "{}", fast.metrics.first_wait_p95_s);
    assert!(slow.metrics.first_wait_p95_s > 240.0, "{}", slow.metrics.first_wait_p95_s);
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
    let turncoat = std::path::Path::new(nodewright_test_plugins::DIR).join("hostile-turncoat.wasm");
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

fn karpenter_like() -> PolicyUnderTest {
    PolicyUnderTest {
        name: "karpenter-like".into(),
        selection: PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
        consolidation: PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
    }
}

/// No node holds more pod requests than it has, at any sample; utilisation
/// (on billed node-seconds) stays at or below 100 %.
fn assert_no_overcommit(what: &str, result: &SimulationResult) {
    let m = &result.metrics;
    assert!(m.peak_node_cpu_request_ratio <= 1.0, "{what}: a node ran {:.1} % of its CPU", m.peak_node_cpu_request_ratio * 100.0);
    assert!(m.peak_node_memory_request_ratio <= 1.0, "{what}: a node ran {:.1} % of its memory", m.peak_node_memory_request_ratio * 100.0);
    assert!(m.cpu_utilisation <= 1.0 && m.memory_utilisation <= 1.0, "{what}: {m:?}");
    for s in &result.samples {
        assert!(s.cpu_utilisation <= 1.0 && s.memory_utilisation <= 1.0, "{what}: at hour {} the cluster requested more than it has: {s:?}", s.hour);
    }
}

#[test]
fn pods_nominated_to_a_booting_node_are_bound_only_where_they_fit() {
    // Three pods of 6, 6 and 8 CPU arrive together; a c6g.4xlarge has 15.89
    // allocatable and boots in 60 s. Two nodes are needed, and neither may
    // end up holding 20 CPU.
    let cache = tempfile::tempdir().unwrap();
    let text = [
        r#"{"format":"nodewright-trace","version":1,"name":"nominated","duration_s":3600}"#,
        r#"{"t":0,"add":"a","workload":"w","cpu_m":6000,"mem_mib":1024}"#,
        r#"{"t":0,"add":"b","workload":"w","cpu_m":6000,"mem_mib":1024}"#,
        r#"{"t":0,"add":"c","workload":"w","cpu_m":8000,"mem_mib":1024}"#,
    ]
    .join("\n");
    let trace = parse_trace("nominated", &text).unwrap();
    let mut pool = NodePool::new("default").require(nodewright_core::model::Requirement::is_in(
        nodewright_core::model::well_known::INSTANCE_TYPE,
        &["c6g.4xlarge"],
    ));
    pool.consolidate_after = Some(Duration::from_secs(60));
    let config = SimulationConfig { boot_latency: (Duration::from_secs(60), Duration::from_secs(60)), interruptions: false, ..config(&cache) };
    let result = simulate(&trace, &karpenter_like(), &[pool], catalog(), &config, |_| {}).unwrap();
    assert_no_overcommit("nominated", &result);
    let m = &result.metrics;
    assert_eq!((m.pods_pending_at_end, m.launches), (0, 2), "{m:?}");
    assert_eq!(m.first_wait_p99_s, 61.0, "every pod waits for the 1 s batch window and its node to boot, no longer: {m:?}");
    let last = result.samples.last().unwrap();
    assert_eq!(last.on_demand_nodes + last.spot_nodes, 2);
}

#[test]
fn on_every_bundled_trace_no_node_holds_more_than_it_has() {
    let cache = tempfile::tempdir().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/traces");
    let mut pool = NodePool::new("default");
    pool.consolidate_after = Some(Duration::from_secs(60));
    for name in ["batch-burst", "diurnal-web", "ml-gpu", "mixed"] {
        let path = dir.join(format!("{name}.jsonl"));
        let trace = parse_trace(name, &std::fs::read_to_string(&path).unwrap()).unwrap();
        let added = trace.events.iter().filter(|e| matches!(e.kind, nodewright_core::sim::trace::TraceEventKind::Add(_))).count() as u64;
        let result = simulate(&trace, &karpenter_like(), std::slice::from_ref(&pool), catalog(), &config(&cache), |_| {}).unwrap();
        assert_no_overcommit(name, &result);
        assert_eq!(result.metrics.pods, added, "{name}: every pod of the trace arrives");
        assert_eq!(result.metrics.pods_lost_to_reclaim, 0, "{name}: every interrupted node was drained before the reclaim");
    }
}

#[test]
fn consolidation_never_buys_what_the_selection_policy_excludes() {
    let cache = tempfile::tempdir().unwrap();
    let trace = parse_trace("burst", &generate("batch-burst", 3, 0.5).unwrap()).unwrap();
    let mut pool = NodePool::new("default");
    pool.consolidate_after = Some(Duration::from_secs(60));
    let policy = PolicyUnderTest {
        name: "on-demand-only".into(),
        selection: PolicyRef { plugin: "on-demand-only".into(), config: "{}".into() },
        consolidation: PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
    };
    let result = simulate(&trace, &policy, &[pool], catalog(), &config(&cache), |_| {}).unwrap();
    let m = &result.metrics;
    assert!(m.consolidations > 0 && m.launches > 0, "{m:?}");
    assert_eq!((m.cost_spot, m.interruptions), (0.0, 0), "{m:?}");
    assert!(result.samples.iter().all(|s| s.spot_nodes == 0));
}

#[test]
fn a_spot_interruption_in_a_simulation_goes_through_the_interruption_controller_and_costs_work() {
    let cache = tempfile::tempdir().unwrap();
    let volatile = SimulationConfig { interruption_scale: 50.0, ..config(&cache) };
    let result = run("mixed", 0.3, "cheapest", &volatile);
    let m = &result.metrics;
    assert!(m.interruptions > 0, "{m:?}");
    // The controller cordoned, launched replacements before draining, and
    // drained every node within the warning: nothing was left for the reclaim.
    assert!(m.interruption_replacements > 0, "{m:?}");
    assert!(m.pods_disrupted > 0, "{m:?}");
    assert_eq!(m.pods_lost_to_reclaim, 0, "{m:?}");
    // A stopped pod runs again only after its restart delay, and is
    // measured apart from first scheduling; batch pods are jobs and lose
    // the work done before they were stopped.
    assert!(m.reschedule_wait_p50_s >= volatile.restart_delay.as_secs_f64(), "{m:?}");
    assert!(m.lost_pod_hours > 0.0, "{m:?}");
    assert_eq!(m.pods_pending_at_end, 0, "every stopped pod runs again: {m:?}");
    let calm = run("mixed", 0.3, "cheapest", &SimulationConfig { interruptions: false, ..volatile });
    assert_eq!((calm.metrics.interruptions, calm.metrics.pods_disrupted), (0, 0), "{:?}", calm.metrics);
}

#[test]
fn rebalance_recommendations_precede_reclaims_and_act_only_when_actionable() {
    let cache = tempfile::tempdir().unwrap();
    let volatile = SimulationConfig { interruption_scale: 50.0, ..config(&cache) };
    let recorded = run("mixed", 0.3, "cheapest", &volatile);
    let acted = run("mixed", 0.3, "cheapest", &SimulationConfig { rebalance_actionable: true, ..volatile });
    let (r, a) = (&recorded.metrics, &acted.metrics);
    assert!(r.rebalance_recommendations > 0, "{r:?}");
    // Acted on: the node is replaced at the recommendation, so fewer
    // instances are still running when their warning comes.
    assert!(a.rebalance_recommendations > 0, "{a:?}");
    assert!(a.interruptions < r.interruptions, "acted on {a:?}, recorded {r:?}");
    assert!(a.interruption_replacements > 0, "{a:?}");
    assert_eq!((r.pods_lost_to_reclaim, a.pods_lost_to_reclaim), (0, 0));
}

#[test]
fn a_policy_run_alone_or_after_another_gives_the_same_result() {
    let cache = tempfile::tempdir().unwrap();
    let config = config(&cache);
    let alone = run("batch-burst", 0.5, "cheapest", &config);
    let _other = run("batch-burst", 0.5, "spot-savvy", &config);
    let after = run("batch-burst", 0.5, "cheapest", &config);
    assert_eq!((alone.metrics, alone.samples), (after.metrics, after.samples));
}

#[test]
fn with_commitments_the_bill_splits_the_list_price_on_demand_exactly_and_adds_the_fees() {
    let cache = tempfile::tempdir().unwrap();
    let plain = run("batch-burst", 0.5, "on-demand-only", &config(&cache));
    let commitments = nodewright_core::model::parse_commitments(
        "c.yaml",
        "savingsPlans:\n  - hourlyCommitment: 0.5\n    discount: 0.3\nreservedInstances:\n  - instanceType: m6i.large\n    count: 2\n    hourlyRate: 0.06\n",
    )
    .unwrap();
    let committed = run("batch-burst", 0.5, "on-demand-only", &SimulationConfig { commitments, ..config(&cache) });
    // Commitments change the bill, not what ran.
    assert_eq!(committed.metrics.cost_total, plain.metrics.cost_total);
    assert!(plain.metrics.commitments.is_none() && plain.metrics.cost_effective.is_none());
    let bill = committed.metrics.commitments.expect("a bill with commitments");
    let m = &committed.metrics;
    assert!(
        // Every figure is rounded to 4 places.
        (bill.covered_on_demand + bill.uncovered_on_demand - m.cost_on_demand).abs() < 1e-3,
        "covered {} + uncovered {} != on-demand {}",
        bill.covered_on_demand,
        bill.uncovered_on_demand,
        m.cost_on_demand
    );
    assert!(bill.covered_on_demand > 0.0, "a $0.50/h plan covers some of an on-demand-only day: {bill:?}");
    let hours = 24.0;
    assert!((bill.commitment_fees - hours * (0.5 + 2.0 * 0.06)).abs() < 1e-3, "fees for every hour, used or not: {bill:?}");
    assert_eq!(m.cost_effective, Some(bill.effective));
    assert!((bill.effective - (bill.commitment_fees + bill.uncovered_on_demand + bill.spot)).abs() < 1e-3);
    assert!((bill.savings_plan_used + bill.savings_plan_unused - hours * 0.5).abs() < 1e-3, "{bill:?}");
    // A run without commitments writes no commitment fields.
    let json = Report { trace: "batch-burst".into(), seed: 1, hours, policies: vec![plain] }.to_json();
    assert!(!json.contains("cost_effective") && !json.contains("commitment_fees"));
}

#[test]
fn lost_job_work_is_priced_at_its_share_of_the_node_it_ran_on() {
    // One 2-CPU job on on-demand c6g.4xlarge nodes that expire after an
    // hour: each expiry evicts it and throws away the work since it was
    // bound. Lost work costs its hours × the node's price × 2 CPU / the
    // node's allocatable CPU.
    let cache = tempfile::tempdir().unwrap();
    let text = [
        r#"{"format":"nodewright-trace","version":1,"name":"job","duration_s":10800}"#,
        r#"{"t":0,"add":"j","workload":"batch","cpu_m":2000,"mem_mib":1024,"job":true}"#,
    ]
    .join("\n");
    let trace = parse_trace("job", &text).unwrap();
    let mut pool = NodePool::new("default")
        .require(nodewright_core::model::Requirement::is_in(nodewright_core::model::well_known::INSTANCE_TYPE, &["c6g.4xlarge"]))
        .require(nodewright_core::model::Requirement::is_in(nodewright_core::model::well_known::CAPACITY_TYPE, &["on-demand"]));
    pool.expire_after = Some(Duration::from_secs(3600));
    let config = SimulationConfig { interruptions: false, spot_drift: false, ..config(&cache) };
    let result = simulate(&trace, &karpenter_like(), &[pool], catalog(), &config, |_| {}).unwrap();
    let m = &result.metrics;
    assert!(m.disrupted_expired >= 2 && m.lost_pod_hours > 1.0, "{m:?}");
    let node = catalog()
        .offerings
        .iter()
        .find(|o| o.instance_type == "c6g.4xlarge" && o.capacity_type == nodewright_core::model::CapacityType::OnDemand)
        .cloned()
        .unwrap();
    let share = node.price_per_hour * 2000.0 / f64::from(node.allocatable.cpu_millis);
    // Both figures are rounded to 4 places in the report.
    assert!((m.lost_work_dollars - m.lost_pod_hours * share).abs() < 1e-3, "{} != {} × {share}", m.lost_work_dollars, m.lost_pod_hours);
}
