//! Consolidation benchmark: 1000 nodes running 10,000 pods, one planning
//! pass — read the cluster, plan with the NodePool's consolidation policy
//! (a Wasm plugin, or the native `karpenter-like`), validate every action
//! against the host's scheduling simulation, budgets and PDBs.
//!
//! Run with `cargo bench -p nodewright-benches --bench consolidation`.
#![allow(missing_docs, reason = "criterion_group! and criterion_main! generate undocumented items")]

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nodewright_core::sim::ConsolidationPass;
use nodewright_core::model::{Catalog, NodePool};
use nodewright_core::policy::{PolicyRuntime, RuntimeConfig};

fn consolidate(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let runtime =
        PolicyRuntime::new(RuntimeConfig { cache_dir: Some(cache.path().to_path_buf()), ..RuntimeConfig::default() }).unwrap();
    let catalog = Arc::new(Catalog::bundled());
    let mut group = c.benchmark_group("consolidate");
    group.sample_size(10);
    for policy in ["karpenter-like", "utilization-threshold", "balanced"] {
        let pool = NodePool::new("default").consolidation(policy, "{}");
        let pass = ConsolidationPass::new(&runtime, catalog.clone(), pool, 1000, 10, 1).unwrap();
        futures::executor::block_on(pass.run()).unwrap();
        group.bench_with_input(BenchmarkId::new(policy, "1000x10"), &policy, |b, _| {
            b.iter(|| futures::executor::block_on(pass.run()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, consolidate);
criterion_main!(benches);
