//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nodewright_core::model::{Arch, CapacityType, Catalog, InterruptionRate, NodePool, Offering, Resources};
use nodewright_core::policy::{Limits, Plugin, PluginClock, PolicyRuntime, RuntimeConfig, SelectionRequest};
use nodewright_core::sim::{SimClock, WorldSettings};

pub mod interruption;

/// The simulated world of [`nodewright_core::sim::World::new`], with the
/// directory of compiled components its runtime uses kept as long as it is.
pub struct TestWorld {
    world: nodewright_core::sim::World,
    _cache: tempfile::TempDir,
}

impl std::ops::Deref for TestWorld {
    type Target = nodewright_core::sim::World;
    fn deref(&self) -> &Self::Target {
        &self.world
    }
}

impl std::ops::DerefMut for TestWorld {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.world
    }
}

/// A world on a runtime of its own (see [`runtime`]).
pub fn test_world(clock: SimClock, catalog: Arc<Catalog>, pools: Vec<NodePool>, settings: WorldSettings) -> TestWorld {
    let (runtime, cache) = runtime();
    TestWorld { world: nodewright_core::sim::World::new(&runtime, clock, catalog, pools, settings), _cache: cache }
}

/// A component built from `plugins/` (bundled, example or fixture), by name.
pub fn component(name: &str) -> PathBuf {
    let file = format!("{name}.wasm");
    let test = Path::new(nodewright_test_plugins::DIR).join(&file);
    if test.exists() { test } else { Path::new(nodewright_core::policy::BUILT_PLUGIN_DIR).join(file) }
}

/// A file under `crates/nodewright-core/tests/fixtures/` (this module serves
/// the tests of every crate under `crates/`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../nodewright-core/tests/fixtures").join(name)
}

/// A file of the repository by its path from the root (`examples/...`):
/// the path as shown in messages, and the text.
pub fn read_example(path: &str) -> (String, String) {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
    (full.display().to_string(), std::fs::read_to_string(&full).unwrap())
}

/// Deadlines far above what any well-behaved plugin needs, so a loaded CI
/// machine cannot turn a slow call into a timeout. Tests of timeouts set
/// their own.
pub fn generous_limits() -> Limits {
    Limits {
        selection_timeout: Duration::from_secs(5),
        consolidation_timeout: Duration::from_secs(10),
        ..Limits::default()
    }
}

/// A runtime with its own cache directory (kept alive by the returned guard).
pub fn runtime() -> (PolicyRuntime, tempfile::TempDir) {
    runtime_with(generous_limits(), 7)
}

/// A runtime with `limits` and random seed `seed`.
pub fn runtime_with(limits: Limits, seed: u64) -> (PolicyRuntime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = PolicyRuntime::new(RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        limits,
        seed,
        ..RuntimeConfig::default()
    })
    .unwrap();
    (runtime, dir)
}

/// Load component `name` with `config`.
pub fn load(runtime: &PolicyRuntime, name: &str, config: &str) -> Arc<Plugin> {
    Arc::new(Plugin::from_file(runtime, &component(name), config).unwrap_or_else(|e| panic!("{e}")))
}

/// An offering with the facts a test cares about.
pub fn offering(instance_type: &str, arch: Arch, capacity_type: CapacityType, price: f64, interruption: InterruptionRate) -> Offering {
    Offering {
        instance_type: instance_type.into(),
        family: instance_type.split('.').next().unwrap().into(),
        generation: 6,
        arch,
        zone: "us-east-1a".into(),
        capacity_type,
        price_per_hour: price,
        allocatable: Resources { cpu_millis: 3920, memory_bytes: 14 << 30, pods: 58, gpus: 0, ephemeral_bytes: 17 << 30 },
        capacity: Resources { cpu_millis: 4000, memory_bytes: 16 << 30, pods: 58, gpus: 0, ephemeral_bytes: 20 << 30 },
        interruption,
        node_classes: None,
    }
}

/// A request for one small pod with every offering of `catalog` feasible.
pub fn request_all(catalog: &Catalog, node_pool: &str) -> SelectionRequest {
    SelectionRequest {
        node_pool: node_pool.into(),
        pods: vec![Resources::pod(500, 1 << 30)],
        total: Resources::pod(500, 1 << 30),
        feasible: (0..catalog.offerings.len() as u32).collect(),
        ..SelectionRequest::default()
    }
}

/// A clock stopped at a fixed instant, like the simulator's between events.
pub struct FixedClock(pub Duration);

impl PluginClock for FixedClock {
    fn wall_since_epoch(&self) -> Duration {
        self.0
    }
    fn monotonic_nanos(&self) -> u64 {
        self.0.as_nanos() as u64
    }
}
