//! Scheduling benchmark shaped like Karpenter's: 400 instance types,
//! "diverse" pods in equal fifths (generic, zone spread, hostname spread,
//! zone affinity, hostname anti-affinity), one provisioning pass — schedule,
//! rank every new NodeClaim, launch on the simulated cloud — with the Wasm
//! `cheapest` plugin and with the native selector.
//!
//! Run with `cargo bench -p nodewright-benches --bench scheduling`.
#![allow(missing_docs, reason = "criterion_group! and criterion_main! generate undocumented items")]

use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nodewright_core::model::{Catalog, NodePool};
use nodewright_core::policy::{BUILTIN_SELECTION, PolicyRuntime, RuntimeConfig};
use nodewright_core::sim::SimulatedPass;
use nodewright_core::scheduling::workload::diverse_pods;

fn schedule(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let runtime =
        PolicyRuntime::new(RuntimeConfig { cache_dir: Some(cache.path().to_path_buf()), ..RuntimeConfig::default() }).unwrap();
    let catalog = Arc::new(Catalog::bundled_types(400));
    let mut group = c.benchmark_group("schedule");
    group.sample_size(10);
    for n in [1usize, 100, 1000, 5000, 20_000] {
        let pods = diverse_pods(n, 1);
        group.throughput(Throughput::Elements(n as u64));
        for (label, policy) in [("wasm-cheapest", "cheapest"), ("native", BUILTIN_SELECTION)] {
            group.bench_with_input(BenchmarkId::new(label, n), &n, |b, _| {
                b.iter_batched_ref(
                    || SimulatedPass::new(&runtime, catalog.clone(), NodePool::new("default").selection(policy, "{}"), &pods).unwrap(),
                    |pass| futures::executor::block_on(pass.run()).unwrap(),
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, schedule);
criterion_main!(benches);
