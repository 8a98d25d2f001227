//! Plugin runtime benchmarks: rank latency (Rust guest vs native) at 10,
//! 100 and 1000 offerings, instantiation, cache loads and swaps.
//!
//! Run with `cargo bench -p nodewright-benches --bench policy`.
#![allow(missing_docs, reason = "criterion_group! and criterion_main! generate undocumented items")]

use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use nodewright_core::model::{Catalog, Resources};
use nodewright_core::policy::{
    Plugin, PolicyRegistry, PolicyRuntime, Role, RuntimeConfig, SelectionRequest, SlotMode, bundled, cheapest_ranking,
};

fn runtime_on(cache: &std::path::Path) -> PolicyRuntime {
    PolicyRuntime::new(RuntimeConfig { cache_dir: Some(cache.to_path_buf()), ..RuntimeConfig::default() }).unwrap()
}

fn request(catalog: &Catalog) -> SelectionRequest {
    SelectionRequest {
        node_pool: "bench".into(),
        pods: vec![Resources::pod(250, 512 << 20)],
        total: Resources::pod(250, 512 << 20),
        feasible: (0..catalog.offerings.len() as u32).collect(),
        ..SelectionRequest::default()
    }
}

fn rank(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime_on(cache.path());
    let plugin = Plugin::load(&runtime, "cheapest", bundled::CHEAPEST, "{}").unwrap();
    let mut group = c.benchmark_group("rank");
    for n in [10usize, 100, 1000] {
        let catalog = Catalog::bundled_sample(n);
        let request = request(&catalog);
        plugin.rank(&catalog, &request).unwrap();
        group.bench_with_input(BenchmarkId::new("wasm-cheapest", n), &n, |b, _| {
            b.iter(|| plugin.rank(&catalog, &request).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("native-cheapest", n), &n, |b, _| {
            b.iter(|| cheapest_ranking(&catalog, std::hint::black_box(&request)))
        });
    }
    group.finish();
}

fn lifecycle(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let runtime = runtime_on(cache.path());
    let plugin = Plugin::load(&runtime, "cheapest", bundled::CHEAPEST, "{}").unwrap();
    let mut group = c.benchmark_group("lifecycle");
    group.bench_function("instantiate", |b| b.iter(|| plugin.instantiate_fresh().unwrap()));
    group.bench_function("load-from-disk-cache", |b| {
        b.iter_batched(
            || runtime_on(cache.path()),
            |fresh| Plugin::load(&fresh, "cheapest", bundled::CHEAPEST, "{}").unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.sample_size(10);
    group.bench_function("compile-uncached", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                (runtime_on(dir.path()), dir)
            },
            |(fresh, _dir)| Plugin::load(&fresh, "cheapest", bundled::CHEAPEST, "{}").unwrap(),
            BatchSize::PerIteration,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("swap");
    let registry = PolicyRegistry::new(runtime.clone());
    let slot = registry.ensure_slot("web", Role::Selection);
    let a = Arc::new(Plugin::load(&runtime, "cheapest", bundled::CHEAPEST, "{}").unwrap());
    let b = Arc::new(Plugin::load(&runtime, "graviton-first", bundled::GRAVITON_FIRST, "{}").unwrap());
    slot.propose(a.clone(), SlotMode::Active).unwrap();
    slot.propose(b.clone(), SlotMode::Active).unwrap();
    let mut flip = false;
    group.bench_function("checked-candidate", |bench| {
        bench.iter(|| {
            flip = !flip;
            slot.propose(if flip { a.clone() } else { b.clone() }, SlotMode::Active).unwrap()
        })
    });
    group.sample_size(20);
    group.bench_function("cached-component-load-check-swap", |bench| {
        bench.iter(|| {
            let candidate = Plugin::load(&runtime, "cheapest", bundled::CHEAPEST, "{}").unwrap();
            slot.propose(Arc::new(candidate), SlotMode::Active).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, rank, lifecycle);
criterion_main!(benches);
