//! The sandboxed runtime: bundled plugins, hostile plugins, load errors,
//! rollback, shadow runs and the compiled-component cache.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use nodewright_core::model::{Arch, CapacityType::*, Catalog, InterruptionRate::*, Resources};
use nodewright_core::policy::{
    CallFailure, DecidedBy, Limits, Plugin, PluginError, PolicyRegistry, PolicyRuntime, Role, RuntimeConfig, SlotMode,
    World, cheapest_ranking, full_catalog, sample_snapshot,
};

#[test]
fn every_bundled_and_example_plugin_passes_conformance_in_its_world() {
    let (runtime, _cache) = runtime();
    for (name, world, contract) in [
        ("cheapest", World::InstanceSelector, "0.1.0"),
        ("spot-savvy", World::InstanceSelector, "0.1.0"),
        ("graviton-first", World::InstanceSelector, "0.1.0"),
        ("newest-first", World::InstanceSelector, "0.1.0"),
        ("on-demand-only", World::InstanceSelector, "0.1.0"),
        ("empty-only", World::Consolidator, "0.1.0"),
        ("utilization-threshold", World::Consolidator, "0.2.0"),
        ("savings-threshold", World::Consolidator, "0.2.0"),
        ("balanced", World::Consolidator, "0.2.0"),
    ] {
        let plugin = load(&runtime, name, "{}");
        assert_eq!(plugin.info().world, world, "{name}");
        assert_eq!(plugin.info().contract.as_str(), contract, "{name}");
        let report = plugin.check_conformance().unwrap_or_else(|e| panic!("{e}"));
        assert!(report.checks.len() >= 2, "{name}: {:?}", report.checks);
    }
}

#[test]
fn cheapest_plugin_ranks_exactly_like_the_native_policy() {
    let (runtime, _cache) = runtime();
    let plugin = load(&runtime, "cheapest", "{}");
    let catalog = full_catalog();
    let request = nodewright_core::policy::selection_request(catalog, vec![Resources::pod(1000, 2 << 30); 3]);
    let wasm = plugin.rank(catalog, &request).unwrap();
    assert_eq!(wasm, cheapest_ranking(catalog, &request));
    assert_eq!(wasm.best(60).len(), 60);
}

#[test]
fn graviton_first_prefers_arm64_within_its_margin_unless_gpus_are_asked_for() {
    let (runtime, _cache) = runtime();
    let catalog = Catalog::new(vec![
        offering("m6i.xlarge", Arch::Amd64, OnDemand, 0.100, VeryLow),
        offering("m6g.xlarge", Arch::Arm64, OnDemand, 0.115, VeryLow),
    ]);
    let request = request_all(&catalog, "default");
    let default = load(&runtime, "graviton-first", "{}");
    assert_eq!(default.rank(&catalog, &request).unwrap().top(), Some(1), "15 % dearer arm64 is within 20 %");
    let strict = load(&runtime, "graviton-first", r#"{"within_percent": 10}"#);
    assert_eq!(strict.rank(&catalog, &request).unwrap().top(), Some(0), "15 % dearer arm64 is outside 10 %");
    let mut gpu = request.clone();
    gpu.total = gpu.total.with_gpus(1);
    assert_eq!(default.rank(&catalog, &gpu).unwrap().top(), Some(0), "GPU requests are not steered");
}

#[test]
fn spot_savvy_weighs_price_by_interruption_risk() {
    let (runtime, _cache) = runtime();
    let catalog = Catalog::new(vec![
        offering("m5.xlarge", Arch::Amd64, Spot, 0.050, VeryHigh),
        offering("m5.xlarge", Arch::Amd64, OnDemand, 0.090, VeryLow),
        offering("c5.xlarge", Arch::Amd64, Spot, 0.060, Low),
    ]);
    let request = request_all(&catalog, "default");
    let plugin = load(&runtime, "spot-savvy", "{}");
    let ranking = plugin.rank(&catalog, &request).unwrap();
    // 0.05 × (1 + 4 × 0.25) = 0.100; 0.09 × 1.1 = 0.099; 0.06 × 1.3 = 0.078
    assert_eq!(ranking.best(3).iter().map(|e| e.0).collect::<Vec<_>>(), vec![2, 1, 0]);
    let cautious = load(&runtime, "spot-savvy", r#"{"max_interruption": "low"}"#);
    let ranking = cautious.rank(&catalog, &request).unwrap();
    assert_eq!(ranking.entries().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2], "the very-high bucket is left out");
}

#[test]
fn a_plugin_config_error_is_reported_by_the_plugin_and_fails_conformance() {
    let (runtime, _cache) = runtime();
    let plugin = load(&runtime, "spot-savvy", r#"{"max_interruption": "sometimes"}"#);
    let err = plugin.check_conformance().unwrap_err().to_string();
    assert!(
        err.ends_with(
            "conformance check `rank: one small pod` failed: returned an error: invalid plugin config: max_interruption `sometimes` is not one of very-low, low, medium, high, very-high"
        ),
        "{err}"
    );
}

#[test]
fn empty_only_deletes_only_empty_disruptable_nodes() {
    let (runtime, _cache) = runtime();
    let plugin = load(&runtime, "empty-only", "{}");
    let catalog = full_catalog();
    let plan = plugin.plan(catalog, &sample_snapshot(catalog)).unwrap();
    assert_eq!(plan, vec![nodewright_core::policy::ConsolidationAction::Delete { nodes: vec![0] }]);
}

/// Each hostile fixture, the exact failure it must produce on the sample
/// request, and whether the failure throws the instance away.
fn hostile_cases(catalog: &Catalog, feasible: &[u32]) -> Vec<(&'static str, CallFailure)> {
    let first = feasible[0];
    vec![
        ("hostile-loop", CallFailure::Timeout { limit: Duration::from_millis(300), took: Duration::from_millis(300) }),
        ("hostile-memory-bomb", CallFailure::MemoryLimit { limit_bytes: 128 << 20, requested_bytes: 0 }),
        ("hostile-deep-recursion", CallFailure::StackOverflow),
        ("hostile-panic", CallFailure::Trap("wasm trap: wasm `unreachable` instruction executed".into())),
        ("hostile-nan-score", CallFailure::InvalidOutput(format!("score of offering {first} is NaN, scores must be finite"))),
        (
            "hostile-infinite-score",
            CallFailure::InvalidOutput(format!("score of offering {first} is inf, scores must be finite")),
        ),
        (
            "hostile-out-of-range",
            CallFailure::InvalidOutput(format!(
                "offering index {} is out of range (the catalog has {} offerings)",
                catalog.offerings.len() + 7,
                catalog.offerings.len()
            )),
        ),
        (
            "hostile-oversized",
            CallFailure::InvalidOutput(format!("oversized output: 100000 scores for {} feasible offerings", feasible.len())),
        ),
        (
            "hostile-file-and-socket",
            CallFailure::PluginError(
                "file: failed: No such file or directory (os error 44); socket: failed: Permission denied (os error 2); environment variables: 0"
                    .into(),
            ),
        ),
        (
            "hostile-catalog-reject",
            CallFailure::CatalogRejected {
                version: catalog.version,
                message: format!("refusing catalog version {}", catalog.version),
            },
        ),
    ]
}

/// `failure` with what varies from run to run checked and then fixed: a
/// timeout's measured time (at least its deadline, well under a second
/// more), a memory failure's requested total (above the limit).
fn normalized(failure: CallFailure) -> CallFailure {
    match failure {
        CallFailure::Timeout { limit, took } => {
            assert!(took >= limit && took < limit + Duration::from_secs(1), "took {took:?} for a {limit:?} deadline");
            CallFailure::Timeout { limit, took: limit }
        }
        CallFailure::MemoryLimit { limit_bytes, requested_bytes } => {
            assert!(requested_bytes > limit_bytes, "{requested_bytes} requested under a {limit_bytes} limit");
            CallFailure::MemoryLimit { limit_bytes, requested_bytes: 0 }
        }
        other => other,
    }
}

#[test]
fn every_hostile_selector_gets_its_exact_failure_and_the_builtin_answers() {
    let (runtime, _cache) = runtime_with(Limits { selection_timeout: Duration::from_millis(300), ..generous_limits() }, 7);
    let catalog = Catalog::bundled_sample(500);
    let request = nodewright_core::policy::selection_request(&catalog, vec![Resources::pod(500, 1 << 30)]);
    let registry = PolicyRegistry::new(runtime.clone());
    let good = registry.ensure_slot("good", Role::Selection);
    good.propose(load(&runtime, "cheapest", "{}"), SlotMode::Active).unwrap();
    for (name, expected) in hostile_cases(&catalog, &request.feasible) {
        let plugin = load(&runtime, name, "{}");
        assert_eq!(normalized(plugin.rank(&catalog, &request).unwrap_err()), expected, "{name}");
        // A second call fails the same way: the instance was replaced, not reused broken.
        assert_eq!(normalized(plugin.rank(&catalog, &request).unwrap_err()), expected, "{name}, second call");
        // The host keeps serving: another plugin in the same runtime answers.
        let decision = good.rank(&catalog, &request);
        assert!(matches!(decision.by, DecidedBy::Plugin(_)), "{name}: {:?}", decision.by);
        assert_eq!(decision.value, cheapest_ranking(&catalog, &request));
    }
    assert_eq!(good.stats().fallbacks, 0);
}

#[test]
fn a_hostile_plugin_rejected_as_candidate_leaves_the_slot_untouched_and_says_why() {
    // Default limits: the candidate is held to the 50 ms production deadline.
    let (runtime, _cache) = runtime_with(Limits::default(), 7);
    let registry = PolicyRegistry::new(runtime.clone());
    let slot = registry.ensure_slot("web", Role::Selection);
    let cheapest = load(&runtime, "cheapest", "{}");
    slot.propose(cheapest.clone(), SlotMode::Active).unwrap();
    let err = slot.propose(load(&runtime, "hostile-loop", "{}"), SlotMode::Active).unwrap_err();
    let path = component("hostile-loop").display().to_string();
    let message = err.to_string();
    let prefix = format!("{path}: conformance check `rank: one small pod` failed: timed out after ");
    assert!(message.starts_with(&prefix) && message.ends_with(" ms (deadline 50 ms)"), "{message}");
    let stats = slot.stats();
    assert_eq!(stats.active, format!("{} ({})", cheapest.info().name, cheapest.info().digest));
    assert_eq!((stats.swaps, stats.rejected), (1, 1));
    assert_eq!(stats.last_rejection, Some(err.to_string()));
}

#[test]
fn a_consolidation_plan_naming_missing_or_pinned_nodes_is_rejected_and_nothing_is_done() {
    let (runtime, _cache) = runtime();
    let catalog = full_catalog();
    let plugin = load(&runtime, "hostile-consolidation-liar", "{}");
    let failure = plugin.plan(catalog, &sample_snapshot(catalog)).unwrap_err();
    assert_eq!(failure, CallFailure::InvalidOutput("action 0 names node index 7, the snapshot has 4 nodes".into()));
    let registry = PolicyRegistry::new(runtime.clone());
    let slot = registry.ensure_slot("pool", Role::Consolidation);
    assert!(slot.propose(plugin, SlotMode::Active).is_err());
    let decision = slot.plan(catalog, &sample_snapshot(catalog));
    assert!(decision.value.is_empty());
    assert!(matches!(decision.by, DecidedBy::Builtin));
}

#[test]
fn a_selector_cannot_serve_a_consolidation_slot() {
    let (runtime, _cache) = runtime();
    let registry = PolicyRegistry::new(runtime.clone());
    let slot = registry.ensure_slot("pool", Role::Consolidation);
    let err = slot.propose(load(&runtime, "cheapest", "{}"), SlotMode::Active).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: is a instance-selector plugin, slot `pool` needs nodewright:policy/consolidation",
            component("cheapest").display()
        )
    );
}

#[test]
fn components_that_cannot_be_plugins_are_rejected_at_load_with_the_reason() {
    let (runtime, _cache) = runtime();
    let cases = [
        (
            "imports-wasi-http.wat",
            "imports `wasi:http/outgoing-handler@0.2.0`, which the host does not provide (plugins may import nodewright:policy/host and WASI 0.2 cli, io, clocks, random, filesystem, sockets)",
        ),
        ("wrong-world.wat", "wrong world: exports neither nodewright:policy/instance-selection nor nodewright:policy/consolidation (found: run)"),
        (
            "future-contract.wat",
            "exports `nodewright:policy/instance-selection@9.0.0`: contract version 9.0.0 is not supported (this host supports 0.1.0, 0.2.0, 0.3.0)",
        ),
        (
            "other-revision.wat",
            "does not match the contract: its exports are not those of nodewright:policy@0.3.0 as this host defines it (no exported instance named `nodewright:policy/catalog@0.3.0`); rebuild it against this release's wit/v0.3.0 or plugin SDK",
        ),
        ("core-module.wat", "not a WebAssembly component: it is a core WebAssembly module in text form, not a component"),
        ("not-wasm.wasm", "not a WebAssembly component: the file does not start with the WebAssembly magic bytes"),
    ];
    for (file, reason) in cases {
        let path = fixture(file);
        let err = Plugin::from_file(&runtime, &path, "{}").unwrap_err();
        assert_eq!(err.to_string(), format!("{}: {reason}", path.display()), "{file}");
    }
    let core = wasmtime_core_module();
    let err = Plugin::load(&runtime, "core.wasm", &core, "{}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "core.wasm: not a WebAssembly component: it is a core WebAssembly module; wrap it with `wasm-tools component new`"
    );
    let missing = fixture("does-not-exist.wasm");
    let err = Plugin::from_file(&runtime, &missing, "{}").unwrap_err();
    assert!(matches!(err, PluginError::Read { .. }));
    assert!(err.to_string().starts_with(&format!("{}: cannot read: ", missing.display())));
}

/// The smallest binary core module: magic and version 1.
fn wasmtime_core_module() -> Vec<u8> {
    vec![0, b'a', b's', b'm', 1, 0, 0, 0]
}

#[test]
fn a_plugin_sees_the_host_clock_and_seeded_randomness_and_no_environment() {
    let limits = generous_limits();
    let probe = |seed: u64| {
        let dir = tempfile::tempdir().unwrap();
        let runtime = PolicyRuntime::new(RuntimeConfig {
            cache_dir: Some(dir.path().into()),
            limits,
            clock: Arc::new(FixedClock(Duration::from_secs(1_000_000))),
            seed,
        })
        .unwrap();
        let plugin = load(&runtime, "probe-environment", "{}");
        let catalog = Catalog::bundled_sample(10);
        match plugin.rank(&catalog, &request_all(&catalog, "probe")).unwrap_err() {
            CallFailure::PluginError(message) => message,
            other => panic!("{other:?}"),
        }
    };
    let first = probe(1);
    assert!(first.starts_with("wall=1000000 monotonic_elapsed_ns=0 random="), "{first}");
    assert!(first.ends_with(" args=0 vars=0 cwd=none (operation not supported on this platform)") || first.contains("cwd=/"), "{first}");
    assert_eq!(probe(1), first, "same seed, same clock: same answer");
    assert_ne!(probe(2), first, "another seed: other randomness");
}

#[test]
fn consecutive_failures_roll_the_slot_back_to_its_previous_version() {
    let (runtime, _cache) = runtime();
    let registry = PolicyRegistry::new(runtime.clone());
    let slot = registry.ensure_slot("web", Role::Selection);
    let v1 = load(&runtime, "cheapest", "{}");
    let v2 = load(&runtime, "hostile-turncoat", "{}");
    slot.propose(v1.clone(), SlotMode::Active).unwrap();
    slot.propose(v2.clone(), SlotMode::Active).unwrap();
    let catalog = Catalog::bundled_sample(300);
    let healthy = request_all(&catalog, "default");
    let poison = request_all(&catalog, "poison");
    assert!(matches!(slot.rank(&catalog, &healthy).by, DecidedBy::Plugin(p) if Arc::ptr_eq(&p, &v2)));
    for n in 1..=3 {
        let decision = slot.rank(&catalog, &poison);
        assert!(
            matches!(&decision.by, DecidedBy::Fallback { failure: CallFailure::PluginError(m), .. } if m == "poisoned request"),
            "call {n}: {:?}",
            decision.by
        );
        assert_eq!(decision.value, cheapest_ranking(&catalog, &poison), "the fallback answers with the native cheapest");
    }
    // The third failure rolled back to v1, which answers the same request.
    let decision = slot.rank(&catalog, &poison);
    assert!(matches!(decision.by, DecidedBy::Plugin(p) if Arc::ptr_eq(&p, &v1)));
    let stats = slot.stats();
    assert_eq!((stats.rollbacks, stats.fallbacks, stats.plugin_decisions, stats.calls), (1, 3, 2, 5));
    assert_eq!(stats.failures.get("plugin-error"), Some(&3));
    assert_eq!(stats.previous.as_deref(), Some("builtin"));
}

#[test]
fn a_success_between_failures_resets_the_count() {
    let (runtime, _cache) = runtime();
    let registry = PolicyRegistry::new(runtime.clone());
    let slot = registry.ensure_slot("web", Role::Selection);
    slot.propose(load(&runtime, "hostile-turncoat", "{}"), SlotMode::Active).unwrap();
    let catalog = Catalog::bundled_sample(100);
    for node_pool in ["poison", "trap", "default", "poison", "trap", "default"] {
        slot.rank(&catalog, &request_all(&catalog, node_pool));
    }
    let stats = slot.stats();
    assert_eq!(stats.rollbacks, 0);
    assert_eq!(stats.failures.get("plugin-error"), Some(&2));
    assert_eq!(stats.failures.get("trap"), Some(&2));
    // With no previous plugin version, the third failure in a row rolls back to the built-in policy.
    for _ in 0..3 {
        slot.rank(&catalog, &request_all(&catalog, "trap"));
    }
    assert_eq!(slot.stats().active, "builtin");
    assert!(matches!(slot.rank(&catalog, &request_all(&catalog, "trap")).by, DecidedBy::Builtin));
}

#[test]
fn a_shadow_sees_every_input_is_compared_and_never_acted_on() {
    let (runtime, _cache) = runtime();
    let registry = PolicyRegistry::new(runtime.clone());
    let slot = registry.ensure_slot("web", Role::Selection);
    let active = load(&runtime, "cheapest", "{}");
    slot.propose(active.clone(), SlotMode::Active).unwrap();
    slot.propose(load(&runtime, "graviton-first", r#"{"within_percent": 50}"#), SlotMode::Shadow).unwrap();
    let catalog = Catalog::new(vec![
        offering("m6i.xlarge", Arch::Amd64, OnDemand, 0.100, VeryLow),
        offering("m6g.xlarge", Arch::Arm64, OnDemand, 0.130, VeryLow),
    ]);
    let decision = slot.rank(&catalog, &request_all(&catalog, "default"));
    assert!(matches!(&decision.by, DecidedBy::Plugin(p) if Arc::ptr_eq(p, &active)));
    assert_eq!(decision.value.top(), Some(0), "the active choice is executed");
    let stats = slot.stats();
    assert_eq!((stats.shadow_calls, stats.shadow_divergences, stats.shadow_failures), (1, 1, 0));
    // A failing shadow is counted and harms nothing.
    slot.propose(load(&runtime, "hostile-turncoat", "{}"), SlotMode::Shadow).unwrap();
    let decision = slot.rank(&catalog, &request_all(&catalog, "poison"));
    assert!(matches!(&decision.by, DecidedBy::Plugin(_)));
    let stats = slot.stats();
    assert_eq!((stats.shadow_calls, stats.shadow_failures, stats.fallbacks, stats.rollbacks), (2, 1, 0, 0));
}

#[test]
fn the_second_load_of_a_component_does_not_compile() {
    let cache = tempfile::tempdir().unwrap();
    let config = || RuntimeConfig { cache_dir: Some(cache.path().into()), limits: generous_limits(), ..RuntimeConfig::default() };
    let first = PolicyRuntime::new(config()).unwrap();
    let plugin = load(&first, "cheapest", "{}");
    assert!(plugin.info().compiled);
    assert_eq!((first.cache_stats().compiled, first.cache_stats().writes), (1, 1));
    // Same process: found in memory.
    assert!(!load(&first, "cheapest", "{}").info().compiled);
    assert_eq!(first.cache_stats().memory_hits, 1);
    // A new process (new runtime, same cache directory): read from disk.
    let second = PolicyRuntime::new(config()).unwrap();
    let plugin = load(&second, "cheapest", "{}");
    assert!(!plugin.info().compiled);
    assert_eq!((second.cache_stats().compiled, second.cache_stats().disk_hits), (0, 1));
    plugin.check_conformance().unwrap();
}

#[test]
fn a_damaged_cache_entry_is_discarded_and_the_component_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let config = || RuntimeConfig { cache_dir: Some(cache.path().into()), limits: generous_limits(), ..RuntimeConfig::default() };
    load(&PolicyRuntime::new(config()).unwrap(), "cheapest", "{}");
    let artefact = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let mut bytes = std::fs::read(&artefact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artefact, bytes).unwrap();
    let runtime = PolicyRuntime::new(config()).unwrap();
    let plugin = load(&runtime, "cheapest", "{}");
    assert!(plugin.info().compiled);
    let stats = runtime.cache_stats();
    assert_eq!((stats.discarded, stats.compiled, stats.writes), (1, 1, 1));
    plugin.check_conformance().unwrap();
}

#[test]
fn a_new_default_slot_runs_the_bundled_component_with_the_native_policy_behind_it() {
    let (runtime, _cache) = runtime();
    let registry = PolicyRegistry::new(runtime.clone());
    let web = registry.ensure_default_slot("web", Role::Selection).unwrap();
    let batch = registry.ensure_default_slot("batch", Role::Selection).unwrap();
    let pool = registry.ensure_default_slot("pool", Role::Consolidation).unwrap();
    let cheapest = web.active_plugin().unwrap();
    assert_eq!(cheapest.info().name, "cheapest");
    assert!(Arc::ptr_eq(&cheapest, &batch.active_plugin().unwrap()), "one compiled default shared by slots");
    assert_eq!(pool.active_plugin().unwrap().info().name, "empty-only");
    assert_eq!(web.stats().previous.as_deref(), Some("builtin"));
    assert_eq!(runtime.cache_stats().compiled, 2);
}

/// A `tracing` writer that keeps everything written to it.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn plugin_stdout_and_stderr_reach_the_log_tagged_with_the_plugin_name() {
    let (runtime, _cache) = runtime();
    let plugin = load(&runtime, "probe-environment", "{}");
    let catalog = Catalog::bundled_sample(10);
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let _ = plugin.rank(&catalog, &request_all(&catalog, "probe"));
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let name = component("probe-environment").display().to_string();
    assert!(
        log.lines().any(|l| l.contains(" INFO nodewright::plugin: probe says hello on stdout") && l.contains(&format!("plugin=\"{name}\""))),
        "{log}"
    );
    assert!(log.lines().any(|l| l.contains(" WARN nodewright::plugin: probe says hello on stderr")), "{log}");
}

mod what_if {
    use super::*;
    use nodewright_core::model::{CapacityType, Resources};
    use nodewright_core::policy::{
        ConsolidationAction, ConsolidationSnapshot, ContractVersion, Fleet, FleetCount, PoolHistory, PriceHistory, ReservationUse, SavingsPlanUse, SelectionRequest,
        SnapshotNode, cheapest_ranking,
    };

    fn offering_index(catalog: &Catalog, instance_type: &str) -> u32 {
        catalog
            .offerings
            .iter()
            .position(|o| o.instance_type == instance_type && o.capacity_type == CapacityType::OnDemand)
            .unwrap() as u32
    }

    fn snapshot(catalog: &Catalog, big_node_pods: usize) -> ConsolidationSnapshot {
        let pod = Resources::pod(500, 1 << 30);
        let node = |name: &str, instance_type: &str, pods: usize| SnapshotNode {
            name: name.into(),
            offering: offering_index(catalog, instance_type),
            age_seconds: 3600,
            pods: vec![pod; pods],
            disruptable: true,
            ..SnapshotNode::default()
        };
        ConsolidationSnapshot {
            node_pool: "default".into(),
            nodes: vec![node("small", "m5.large", 2), node("big", "m5.2xlarge", big_node_pods)],
            replacements: vec![],
            ..ConsolidationSnapshot::default()
        }
    }

    #[test]
    fn contract_versions_0_1_0_and_0_2_0_load_side_by_side() {
        let (runtime, _cache) = runtime();
        let old = load(&runtime, "cheapest", "{}");
        let new = load(&runtime, "fit-aware", "{}");
        assert_eq!(old.info().contract, ContractVersion::V0_1_0);
        assert_eq!(new.info().contract, ContractVersion::V0_2_0);
        assert!(new.info().imports.iter().any(|i| i == "nodewright:policy/host@0.2.0"), "{:?}", new.info().imports);
        old.check_conformance().unwrap();
        new.check_conformance().unwrap();
    }

    #[test]
    fn contract_0_3_0_loads_beside_0_1_0_and_0_2_0_and_passes_conformance() {
        let (runtime, _cache) = runtime();
        let selector = load(&runtime, "commitment-aware", "{}");
        let consolidator = load(&runtime, "disruption-aware", "{}");
        for plugin in [&selector, &consolidator] {
            assert_eq!(plugin.info().contract, ContractVersion::V0_3_0);
            assert!(plugin.info().imports.iter().any(|i| i == "nodewright:policy/host@0.3.0"), "{:?}", plugin.info().imports);
            plugin.check_conformance().unwrap();
        }
    }

    /// A fleet whose commitments are `reserved` m5.xlarge Reserved
    /// Instances (`used` of them in use) and a Savings Plan with `headroom`
    /// dollars per hour free.
    fn fleet(catalog: &Catalog, version: u64, reserved: u32, used: u32, headroom: f64) -> Arc<Fleet> {
        Arc::new(Fleet {
            version,
            catalog_version: catalog.version,
            reserved_instances: vec![ReservationUse {
                instance_type: "m5.xlarge".into(),
                zone: String::new(),
                count: reserved,
                used,
                hourly_rate: 0.121,
            }],
            savings_plans: vec![SavingsPlanUse { hourly_commitment: 1.0, used_per_hour: 1.0 - headroom, discount: 0.28, family_discounts: vec![] }],
            ..Fleet::default()
        })
    }

    #[test]
    fn a_0_3_0_plugin_reads_each_fleet_version_it_is_handed() {
        let (runtime, _cache) = runtime();
        let plugin = load(&runtime, "commitment-aware", "{}");
        let catalog = full_catalog();
        let m5 = offering_index(catalog, "m5.xlarge");
        let total = Resources::pod(2000, 4 << 30);
        let feasible = catalog.feasible_for(&total);
        let request = |fleet: Arc<Fleet>| SelectionRequest {
            node_pool: "default".into(),
            pods: vec![total],
            total,
            feasible: feasible.clone(),
            fleet,
            ..SelectionRequest::default()
        };
        // A free Reserved Instance: its type costs nothing more; the
        // cheapest of the m5.xlarge offerings (one per zone) wins.
        let ranking = plugin.rank(catalog, &request(fleet(catalog, 1, 2, 1, 0.0))).unwrap();
        let top = ranking.top().unwrap();
        assert_eq!(catalog.offerings[top as usize].instance_type, "m5.xlarge");
        assert!(ranking.entries().any(|(o, _)| o == m5));
        // Every Reserved Instance in use, no Savings Plan headroom: the
        // plugin holds the new fleet version and ranks like `cheapest`.
        let ranking = plugin.rank(catalog, &request(fleet(catalog, 2, 2, 2, 0.0))).unwrap();
        let cheapest = cheapest_ranking(catalog, &request(fleet(catalog, 2, 2, 2, 0.0)));
        assert_eq!(ranking.top(), cheapest.top());
        assert_eq!(catalog.offerings[ranking.top().unwrap() as usize].capacity_type, CapacityType::Spot);
        // Savings Plan headroom that covers a whole on-demand node: on-demand first.
        let ranking = plugin.rank(catalog, &request(fleet(catalog, 3, 2, 2, 0.5))).unwrap();
        assert_eq!(catalog.offerings[ranking.top().unwrap() as usize].capacity_type, CapacityType::OnDemand);
    }

    #[test]
    fn a_0_3_0_plugin_reads_the_price_history_through_the_host() {
        let (runtime, _cache) = runtime();
        let plugin = load(&runtime, "spot-diversified", "{}");
        let catalog = full_catalog();
        let total = Resources::pod(500, 1 << 30);
        let feasible: Vec<u32> =
            catalog.feasible_for(&total).into_iter().filter(|&i| catalog.offerings[i as usize].capacity_type == CapacityType::Spot).take(50).collect();
        let risen = feasible[7];
        let request = |version: u64, points: std::collections::HashMap<u32, Vec<(u64, f64)>>| SelectionRequest {
            node_pool: "default".into(),
            pods: vec![total],
            total,
            feasible: feasible.clone(),
            fleet: Arc::new(Fleet {
                version,
                catalog_version: catalog.version,
                prices: Arc::new(PriceHistory::from_points(catalog.version, points)),
                ..Fleet::default()
            }),
            ..SelectionRequest::default()
        };
        let flat = plugin.rank(catalog, &request(1, Default::default())).unwrap();
        // The same offering, its price up 50 % since a day ago.
        let now = catalog.offerings[risen as usize].price_per_hour;
        let history = std::collections::HashMap::from([(risen, vec![(1_000_000, now / 1.5), (1_000_000 + 86_400, now)])]);
        // The plugin remembers each trend per catalog version: a fresh load
        // reads the new history.
        let fresh = load(&runtime, "spot-diversified", "{}");
        let trended = fresh.rank(catalog, &request(2, history)).unwrap();
        let score = |r: &nodewright_core::policy::Ranking, o: u32| r.entries().find(|e| e.0 == o).unwrap().1;
        // × (1 + trend_weight 2 × the 50 % rise) = × 2.
        assert!((score(&trended, risen) / score(&flat, risen) - 2.0).abs() < 1e-9);
        let other = feasible[3];
        assert_eq!(score(&trended, other), score(&flat, other), "the others did not move");
    }

    #[test]
    fn a_0_3_0_plugin_weighs_the_share_of_its_own_node_pool_and_recent_failures() {
        let (runtime, _cache) = runtime();
        let plugin = load(&runtime, "spot-diversified", "{}");
        let catalog = full_catalog();
        let total = Resources::pod(500, 1 << 30);
        let feasible: Vec<u32> = catalog.feasible_for(&total).into_iter().take(400).collect();
        let spot: Vec<u32> = feasible.iter().copied().filter(|&i| catalog.offerings[i as usize].capacity_type == CapacityType::Spot).collect();
        let on_demand = feasible.iter().copied().find(|&i| catalog.offerings[i as usize].capacity_type == CapacityType::OnDemand).unwrap();
        let (a, b, c, failed) = (spot[0], spot[5], spot[9], spot[12]);
        let count = |node_pool: &str, offering: u32, count: u32| FleetCount { node_pool: node_pool.into(), offering, count };
        let request = |node_pool: &str, version: u64, running: Vec<FleetCount>, recent: Vec<PoolHistory>| SelectionRequest {
            node_pool: node_pool.into(),
            pods: vec![total],
            total,
            feasible: feasible.clone(),
            fleet: Arc::new(Fleet { version, catalog_version: catalog.version, running, recent, ..Fleet::default() }),
            ..SelectionRequest::default()
        };
        let score = |r: &nodewright_core::policy::Ranking, o: u32| r.entries().find(|e| e.0 == o).unwrap().1;
        let alone = plugin.rank(catalog, &request("default", 1, vec![], vec![])).unwrap();
        // `default` runs 9 nodes of `a` and 1 of `b` (and an on-demand
        // node), `batch` 10 of `c`; `failed` was refused once for capacity.
        let running = vec![count("batch", c, 10), count("default", a, 9), count("default", b, 1), count("default", on_demand, 2)];
        let recent = vec![PoolHistory { offering: failed, launch_failures: 1, interruptions: 0 }];
        let ratio = |r: &nodewright_core::policy::Ranking, o: u32| score(r, o) / score(&alone, o);
        let default = plugin.rank(catalog, &request("default", 2, running.clone(), recent.clone())).unwrap();
        // 9 of default's 12 nodes: over the 20 % share, × over_share 4.
        assert!((ratio(&default, a) - 4.0).abs() < 1e-12, "{}", ratio(&default, a));
        // 1 of 12: under it.
        assert_eq!(ratio(&default, b), 1.0);
        // `batch`'s crowding is not `default`'s.
        assert_eq!(ratio(&default, c), 1.0);
        // One refused launch: × (1 + recent_weight 1).
        assert!((ratio(&default, failed) - 2.0).abs() < 1e-12);
        assert_eq!(ratio(&default, on_demand), 1.0, "on-demand is not weighed by pool");
        let batch = plugin.rank(catalog, &request("batch", 3, running, recent)).unwrap();
        assert!((ratio(&batch, c) - 4.0).abs() < 1e-12);
        assert_eq!(ratio(&batch, a), 1.0);
        assert_eq!(default.entries().count(), feasible.len(), "every feasible offering stays ranked");
    }

    #[test]
    fn a_plugin_asks_the_host_whether_pods_fit_on_other_nodes() {
        let (runtime, _cache) = runtime();
        let plugin = load(&runtime, "fit-aware", "{}");
        let catalog = full_catalog();
        // The big node has room for the small node's two pods: delete the small one.
        let plan = plugin.plan(catalog, &snapshot(catalog, 2)).unwrap();
        assert_eq!(plan, vec![ConsolidationAction::Delete { nodes: vec![0] }]);
        // Full big node (an m5.2xlarge holds 15 such pods): the small node's pods have nowhere to go,
        // and the big node's pods do not fit on the small one.
        let plan = plugin.plan(catalog, &snapshot(catalog, 15)).unwrap();
        assert_eq!(plan, vec![]);
    }
}
