//! Simulation benchmark: one simulated day of the `mixed` workload at two
//! sizes (scale 1 and 4: about 1,000 and 4,000 pods), `cheapest` selection
//! with `karpenter-like` consolidation, so the growth of a run's cost with
//! the size of the cluster is visible.
//!
//! Run with `cargo bench -p nodewright-benches --bench simulation`.
#![allow(missing_docs, reason = "criterion_group! and criterion_main! generate undocumented items")]

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nodewright_core::model::{Catalog, NodePool, PolicyRef};
use nodewright_core::sim::{PolicyUnderTest, SimulationConfig, generate, parse_trace, simulate};

/// The first simulated day of a `mixed` trace at `scale`.
fn day(scale: f64) -> nodewright_core::sim::Trace {
    let mut trace = parse_trace("mixed", &generate("mixed", 1, scale).unwrap()).unwrap();
    trace.duration_s = 86_400.0;
    trace.events.retain(|e| e.t < 86_400.0);
    trace
}

fn simulate_a_day(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let config = SimulationConfig { cache_dir: Some(cache.path().to_path_buf()), ..SimulationConfig::default() };
    let catalog = Arc::new(Catalog::bundled());
    let mut pool = NodePool::new("default");
    pool.consolidate_after = Some(Duration::from_secs(60));
    let policy = PolicyUnderTest {
        name: "cheapest".into(),
        selection: PolicyRef { plugin: "cheapest".into(), config: "{}".into() },
        consolidation: PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
    };
    let mut group = c.benchmark_group("simulate-day");
    group.sample_size(10);
    for scale in [1.0, 4.0] {
        let trace = day(scale);
        let pods = trace.events.iter().filter(|e| matches!(e.kind, nodewright_core::sim::trace::TraceEventKind::Add(_))).count();
        group.bench_with_input(BenchmarkId::new("mixed", format!("{pods} pods")), &trace, |b, trace| {
            b.iter(|| simulate(trace, &policy, std::slice::from_ref(&pool), catalog.clone(), &config, |_| {}).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, simulate_a_day);
criterion_main!(benches);
