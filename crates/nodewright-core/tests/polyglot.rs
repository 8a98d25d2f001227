//! Policies written in Python (componentize-py) and JavaScript
//! (componentize-js), built from `plugins/python` and `plugins/js` by
//! `scripts/build-polyglot`, run in the same sandbox, conformance suite and
//! simulator as the Rust ones — and decide the same.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use common::generous_limits;
use nodewright_core::model::{Catalog, NodePool, PolicyRef, Resources};
use nodewright_core::policy::{ContractVersion, Plugin, PolicyRuntime, RuntimeConfig, World, full_catalog, sample_snapshot};
use nodewright_core::sim::{PolicyUnderTest, SimulationConfig, generate, parse_trace, simulate};

/// Build the components once per test run; their directory.
fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = std::process::Command::new(root.join("scripts/build-polyglot")).output().expect("run scripts/build-polyglot");
        assert!(out.status.success(), "scripts/build-polyglot failed:\n{}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

fn path(name: &str) -> PathBuf {
    built().join(format!("{name}.wasm"))
}

/// Compiling an 18 MB Python component takes a while: one cache for every
/// test of the run (and the next run).
fn runtime() -> PolicyRuntime {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/polyglot-cache");
    PolicyRuntime::new(RuntimeConfig { cache_dir: Some(cache), limits: generous_limits(), ..RuntimeConfig::default() }).unwrap()
}

fn load(runtime: &PolicyRuntime, name: &str, config: &str) -> Arc<Plugin> {
    Arc::new(Plugin::from_file(runtime, &path(name), config).unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn python_and_javascript_plugins_pass_the_conformance_suite_in_their_worlds() {
    let runtime = runtime();
    for (name, world) in [("cheapest-py", World::InstanceSelector), ("cheapest-js", World::InstanceSelector), ("empty-only-py", World::Consolidator)] {
        let plugin = load(&runtime, name, "{}");
        assert_eq!(plugin.info().world, world, "{name}");
        assert_eq!(plugin.info().contract, ContractVersion::V0_1_0, "{name}");
        let report = plugin.check_conformance().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(report.checks.len() >= 2, "{name}: {:?}", report.checks);
    }
}

#[test]
fn python_and_javascript_cheapest_rank_exactly_like_the_rust_plugin() {
    let (rust_runtime, _cache) = common::runtime();
    let rust = common::load(&rust_runtime, "cheapest", "{}");
    let runtime = runtime();
    let catalog = full_catalog();
    let requests = [
        nodewright_core::policy::selection_request(catalog, vec![Resources::pod(1000, 2 << 30); 3]),
        nodewright_core::policy::selection_request(catalog, vec![Resources::pod(250, 512 << 20)]),
        nodewright_core::policy::selection_request(catalog, vec![Resources::pod(4000, 16 << 30).with_gpus(1)]),
    ];
    for name in ["cheapest-py", "cheapest-js"] {
        let plugin = load(&runtime, name, "{}");
        for request in &requests {
            let expected = rust.rank(catalog, request).unwrap();
            let got = plugin.rank(catalog, request).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, expected, "{name} on {} feasible offerings", request.feasible.len());
        }
    }
}

#[test]
fn python_and_javascript_plugins_on_contract_0_3_0_pass_the_suite_and_rank_like_the_rust_one() {
    let (rust_runtime, _cache) = common::runtime();
    let rust = common::load(&rust_runtime, "commitment-aware", "{}");
    let runtime = runtime();
    for name in ["commitment-aware-py", "commitment-aware-js"] {
        let guest = load(&runtime, name, "{}");
        assert_eq!(guest.info().contract, ContractVersion::V0_3_0, "{name}");
        guest.check_conformance().unwrap_or_else(|e| panic!("{name}: {e}"));
        // The suite's fleet holds a Savings Plan half used, Reserved
        // Instances with one free and a full capacity reservation.
        let catalog = full_catalog();
        for pods in [vec![Resources::pod(1000, 2 << 30); 3], vec![Resources::pod(250, 512 << 20)]] {
            let request = nodewright_core::policy::selection_request(catalog, pods);
            let expected = rust.rank(catalog, &request).unwrap();
            let got = guest.rank(catalog, &request).unwrap();
            assert_eq!(got.best(20), expected.best(20), "{name}");
            assert_eq!(got.len(), expected.len(), "{name}");
        }
    }
}

#[test]
fn python_empty_only_plans_exactly_like_the_rust_plugin_and_reads_its_config() {
    let (rust_runtime, _cache) = common::runtime();
    let runtime = runtime();
    let catalog = full_catalog();
    let snapshot = sample_snapshot(catalog);
    for config in ["{}", r#"{"min_age_seconds": 5000}"#] {
        let rust = common::load(&rust_runtime, "empty-only", config).plan(catalog, &snapshot).unwrap();
        let python = load(&runtime, "empty-only-py", config).plan(catalog, &snapshot).unwrap();
        assert_eq!(python, rust, "config {config}");
    }
    // A bad config is the plugin's error, reported as such.
    let bad = load(&runtime, "empty-only-py", r#"{"min_age": 5}"#).plan(catalog, &snapshot).unwrap_err();
    assert_eq!(bad.to_string(), "returned an error: invalid plugin config: unknown field `min_age`");
}

#[test]
fn a_cached_python_component_loads_without_compiling() {
    let first = runtime();
    load(&first, "cheapest-py", "{}");
    // A new process with the same cache directory: read from disk.
    let second = runtime();
    let plugin = load(&second, "cheapest-py", "{}");
    assert!(!plugin.info().compiled);
    assert_eq!((second.cache_stats().compiled, second.cache_stats().disk_hits), (0, 1));
}

#[test]
fn the_simulator_runs_python_and_javascript_policies_to_the_same_result_as_rust() {
    let trace = parse_trace("burst", &generate("batch-burst", 3, 0.2).unwrap()).unwrap();
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/polyglot-cache");
    // JavaScript runs interpreted: a rank over the full catalog takes more
    // than the default 50 ms (`--selection-timeout-ms` on the command line).
    let config = SimulationConfig { cache_dir: Some(cache), limits: generous_limits(), ..SimulationConfig::default() };
    let mut pool = NodePool::new("default");
    pool.consolidate_after = Some(std::time::Duration::from_secs(60));
    let catalog = Arc::new(Catalog::bundled_types(200));
    let run = |selection: String, consolidation: String| {
        let policy = PolicyUnderTest {
            name: selection.clone(),
            selection: PolicyRef { plugin: selection, config: "{}".into() },
            consolidation: PolicyRef { plugin: consolidation, config: "{}".into() },
        };
        simulate(&trace, &policy, std::slice::from_ref(&pool), catalog.clone(), &config, |_| {}).unwrap().metrics
    };
    let rust = run("cheapest".into(), "empty-only".into());
    let file = |n: &str| path(n).display().to_string();
    assert_eq!(run(file("cheapest-py"), file("empty-only-py")), rust);
    assert_eq!(run(file("cheapest-js"), "empty-only".into()), rust);
}

#[test]
fn swapping_in_a_python_plugin_compiles_beside_the_decisions_which_go_on_with_the_old_version() {
    use nodewright_core::policy::{DecidedBy, PolicyRegistry, Role, SlotMode};
    use std::sync::atomic::{AtomicBool, Ordering};
    // An empty cache: the Python component compiles (seconds) during the swap.
    let (runtime, _cache) = common::runtime();
    let registry = Arc::new(PolicyRegistry::new(runtime.clone()));
    let old = common::load(&runtime, "cheapest", "{}");
    let slot = registry.ensure_slot("web", Role::Selection);
    slot.propose(old.clone(), SlotMode::Active).unwrap();
    let catalog = full_catalog();
    let request = nodewright_core::policy::selection_request(catalog, vec![Resources::pod(1000, 2 << 30)]);
    let expected = old.rank(catalog, &request).unwrap();
    let bytes = std::fs::read(path("cheapest-py")).unwrap();

    let loading = Arc::new(AtomicBool::new(true));
    let loader = {
        let (registry, loading) = (registry.clone(), loading.clone());
        std::thread::spawn(move || {
            let outcome = registry.load("web", Role::Selection, &bytes, "{}", SlotMode::Active);
            loading.store(false, Ordering::SeqCst);
            outcome
        })
    };
    // Decisions while the candidate compiles and is checked: every one is
    // answered by the old version, none waits for the load.
    let mut during = 0u64;
    while loading.load(Ordering::SeqCst) {
        let decision = slot.rank(catalog, &request);
        match decision.by {
            DecidedBy::Plugin(p) if Arc::ptr_eq(&p, &old) => {
                assert_eq!(decision.value, expected);
                during += 1;
            }
            // The swap has happened between this check and the last.
            DecidedBy::Plugin(_) if !loading.load(Ordering::SeqCst) || slot.stats().swaps == 2 => break,
            other => panic!("a decision during the load was not the old version's: {other:?}"),
        }
    }
    loader.join().unwrap().unwrap();
    eprintln!("{during} decisions by the old version while the Python candidate compiled and was checked");
    assert!(runtime.cache_stats().compiled >= 2, "the Python component was compiled during the swap");
    assert!(during >= 10, "only {during} decisions were made while the candidate loaded");
    let after = slot.rank(catalog, &request);
    assert!(matches!(&after.by, DecidedBy::Plugin(p) if p.info().digest != old.info().digest), "{:?}", after.by);
    assert_eq!(after.value, expected, "the Python version ranks like the Rust one");
    assert_eq!(slot.stats().swaps, 2);
}
