//! The sandbox holds whatever a plugin does: print, sleep, declare many
//! memories, flood the host's `what-if`, trap on the catalog, fail one call
//! in five. Each case asserts the exact behaviour, and that the host keeps
//! serving.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use nodewright_core::model::{Catalog, NodePool, PodSpec, PolicyRef, Resources};
use nodewright_core::policy::{
    CallFailure, DecidedBy, Limits, Plugin, PluginError, PolicyRegistry, Role, SlotMode,
    cheapest_ranking, full_catalog, sample_snapshot, selection_request,
};
use nodewright_core::sim::{SimClock, World, WorldSettings};

fn small_request(catalog: &Catalog) -> nodewright_core::policy::SelectionRequest {
    selection_request(catalog, vec![Resources::pod(500, 1 << 30)])
}

#[test]
fn a_plugin_that_prints_on_every_call_answers_from_inside_any_tokio_runtime() {
    let (runtime, _cache) = runtime();
    let plugin = load(&runtime, "hostile-printer", "{}");
    let catalog = Catalog::bundled_sample(300);
    let request = small_request(&catalog);
    let expected = cheapest_ranking(&catalog, &request);
    // Outside any runtime (plugin check, plugin bench).
    assert_eq!(plugin.rank(&catalog, &request).unwrap(), expected);
    // Inside a current-thread runtime (the simulator's executor).
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            current
                .block_on(async { plugin.rank(&catalog, &request) })
                .unwrap(),
            expected
        );
    }
    // Inside a multi-thread runtime, from a worker thread (`nodewright run`).
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (p, c, r) = (plugin.clone(), Arc::new(catalog.clone()), request.clone());
    let ranked =
        multi.block_on(async move { tokio::spawn(async move { p.rank(&c, &r) }).await.unwrap() });
    assert_eq!(ranked.unwrap(), expected);
    assert_eq!(plugin.call_stats().0, 5);
}

#[test]
fn a_printing_plugin_serves_the_provisioner_inside_a_multi_thread_runtime_as_run_does() {
    let (runtime, _cache) = runtime();
    let catalog = Arc::new(Catalog::bundled_types(400));
    let printer = component("hostile-printer").display().to_string();
    let pool = NodePool::new("default").selection(&printer, "{}");
    let world = World::new(&runtime, SimClock::default(), catalog, vec![pool], WorldSettings::default());
    let (cluster, registry, provisioner) = (world.cluster.clone(), world.registry.clone(), world.provisioner.clone());
    cluster.add_pods(PodSpec::requesting(1000, 2 << 30).pods("web", 4));
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = multi
        .block_on(async move {
            tokio::spawn(async move { provisioner.provision().await })
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(report.launched.len(), 1);
    let stats = registry
        .slot("default/selection")
        .map(|s| s.stats())
        .unwrap_or_else(|| {
            let names: Vec<String> = registry
                .slots()
                .iter()
                .map(|s| s.name().to_string())
                .collect();
            panic!("no selection slot among {names:?}")
        });
    assert_eq!(
        (stats.plugin_decisions, stats.fallbacks),
        (1, 0),
        "{stats:?}"
    );
}

#[test]
fn a_printing_plugin_runs_a_whole_simulation() {
    let cache = tempfile::tempdir().unwrap();
    let printer = component("hostile-printer").display().to_string();
    let trace = nodewright_core::sim::parse_trace(
        "generated",
        &nodewright_core::sim::generate("batch-burst", 1, 0.2).unwrap(),
    )
    .unwrap();
    let policy = nodewright_core::sim::PolicyUnderTest {
        name: "printer".into(),
        selection: PolicyRef {
            plugin: printer,
            config: "{}".into(),
        },
        consolidation: PolicyRef {
            plugin: "empty-only".into(),
            config: "{}".into(),
        },
    };
    let config = nodewright_core::sim::SimulationConfig {
        cache_dir: Some(cache.path().into()),
        ..Default::default()
    };
    let catalog = Arc::new(Catalog::bundled_types(400));
    let result = nodewright_core::sim::simulate(
        &trace,
        &policy,
        &[NodePool::new("default")],
        catalog,
        &config,
        |_| {},
    )
    .unwrap();
    assert!(result.metrics.launches > 0);
    assert_eq!(
        result.metrics.plugin_failures, 0,
        "every printing call answered"
    );
    assert_eq!(result.metrics.pods_pending_at_end, 0);
}

#[test]
fn a_plugin_that_sleeps_forever_times_out_within_twice_its_deadline_and_says_how_long_it_took() {
    let limit = Duration::from_millis(200);
    let (runtime, _cache) = runtime_with(
        Limits {
            selection_timeout: limit,
            ..generous_limits()
        },
        7,
    );
    let plugin = load(&runtime, "hostile-sleeper", "{}");
    let catalog = Catalog::bundled_sample(100);
    for call in 0..2 {
        match plugin.rank(&catalog, &small_request(&catalog)).unwrap_err() {
            CallFailure::Timeout {
                limit: reported,
                took,
            } => {
                assert_eq!(reported, limit, "call {call}");
                assert!(
                    took >= limit && took < 2 * limit,
                    "call {call}: took {took:?}"
                );
                let message = CallFailure::Timeout { limit, took }.to_string();
                assert_eq!(
                    message,
                    format!("timed out after {} ms (deadline 200 ms)", took.as_millis())
                );
            }
            other => panic!("call {call}: {other:?}"),
        }
    }
}

#[test]
fn the_memory_limit_holds_the_instance_total_across_many_memories() {
    let (runtime, _cache) = runtime_with(
        Limits {
            memory_bytes: 8 << 20,
            ..generous_limits()
        },
        7,
    );
    let path = fixture("many-memories.wat");
    let err = Plugin::from_file(&runtime, &path, "{}").unwrap_err();
    // Eight memories of 1 MiB fit; the ninth would make the instance hold 9 MiB.
    assert_eq!(
        err.to_string(),
        format!(
            "{}: does not match the contract: exceeded its memory limit of 8 MiB (its memories and tables would hold 9 MiB)",
            path.display()
        )
    );
    // With room for all twelve, the instance starts (and is then refused
    // for what it exports, which is not the contract).
    let (roomy, _cache) = runtime_with(
        Limits {
            memory_bytes: 16 << 20,
            ..generous_limits()
        },
        7,
    );
    let err = Plugin::from_file(&roomy, &path, "{}").unwrap_err();
    assert!(matches!(err, PluginError::Link { .. }), "{err}");
    assert!(!err.to_string().contains("memory limit"), "{err}");
}

#[test]
fn the_number_of_memories_an_instance_may_declare_is_capped() {
    let (runtime, _cache) = runtime();
    let path = fixture("too-many-memories.wat");
    let err = Plugin::from_file(&runtime, &path, "{}")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "{}: does not match the contract: trapped: resource limit exceeded: memory count too high at 40",
            path.display()
        )
    );
}

#[test]
fn a_what_if_naming_a_node_again_and_again_is_refused_at_once() {
    let (runtime, _cache) = runtime_with(
        Limits {
            consolidation_timeout: Duration::from_millis(500),
            ..generous_limits()
        },
        7,
    );
    let plugin = load(&runtime, "hostile-what-if-flood", "{}");
    let catalog = full_catalog();
    let snapshot = sample_snapshot(catalog);
    // The first call also hands over the catalog; time the second alone.
    plugin.plan(catalog, &snapshot).unwrap_err();
    let started = std::time::Instant::now();
    let failure = plugin.plan(catalog, &snapshot).unwrap_err();
    assert_eq!(
        failure,
        CallFailure::PluginError(format!(
            "what-if names 100000 nodes, the snapshot has {}; each node may be named once",
            snapshot.nodes.len()
        ))
    );
    // Refused before any simulation: far from the 500 ms deadline.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_trap_while_receiving_the_catalog_is_counted_logged_and_weighs_toward_rollback() {
    let (runtime, _cache) = runtime();
    let registry = PolicyRegistry::new(runtime.clone());
    let slot = registry.ensure_slot("web", Role::Selection);
    // It takes the conformance suite's large catalogs, and traps on small ones.
    let plugin = load(&runtime, "hostile-catalog-trap", "{}");
    slot.propose(plugin.clone(), SlotMode::Active).unwrap();
    let small = Catalog::bundled_sample(100);
    slot.prepare(&small);
    let stats = slot.stats();
    assert_eq!(stats.failures.get("trap"), Some(&1), "{stats:?}");
    assert_eq!((stats.consecutive_failures, stats.rollbacks), (1, 0));
    // The decision that follows meets the same trap, is answered by the built-in, and counted.
    let decision = slot.rank(&small, &request_all(&small, "default"));
    match &decision.by {
        DecidedBy::Fallback {
            failure: CallFailure::Trap(message),
            ..
        } => {
            assert!(
                message.ends_with("(while receiving the catalog)"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        decision.value,
        cheapest_ranking(&small, &request_all(&small, "default"))
    );
    // A third failure in a row, in the hand-over again, rolls the slot back.
    slot.prepare(&small);
    let stats = slot.stats();
    assert_eq!(stats.failures.get("trap"), Some(&3));
    assert_eq!((stats.rollbacks, stats.active.as_str()), (1, "builtin"));
}

#[test]
fn a_rejected_catalog_is_reported_by_prepare() {
    let (runtime, _cache) = runtime();
    let catalog = Catalog::bundled_sample(100);
    let rejecting = load(&runtime, "hostile-catalog-reject", "{}");
    assert_eq!(
        rejecting.prepare(&catalog).unwrap_err(),
        CallFailure::CatalogRejected {
            version: catalog.version,
            message: format!("refusing catalog version {}", catalog.version)
        }
    );
}

#[test]
fn a_plugin_failing_one_call_in_five_is_rolled_back_by_the_failure_rate() {
    let limits = Limits {
        rollback_window: 20,
        rollback_failure_percent: 10,
        ..generous_limits()
    };
    let (runtime, _cache) = runtime_with(limits, 7);
    let registry = PolicyRegistry::new(runtime.clone());
    let slot = registry.ensure_slot("web", Role::Selection);
    let cheapest = load(&runtime, "cheapest", "{}");
    let flaky = load(&runtime, "hostile-turncoat", "{}");
    slot.propose(cheapest.clone(), SlotMode::Active).unwrap();
    slot.propose(flaky.clone(), SlotMode::Active).unwrap();
    let catalog = Catalog::bundled_sample(100);
    let pool = |call: usize| if call % 5 == 4 { "poison" } else { "default" };
    for call in 0..19 {
        slot.rank(&catalog, &request_all(&catalog, pool(call)));
    }
    let stats = slot.stats();
    assert_eq!(
        (stats.rollbacks, stats.consecutive_failures),
        (0, 0),
        "never two failures in a row"
    );
    assert_eq!(stats.failures.get("plugin-error"), Some(&3));
    // The twentieth call fills the window: 4 of 20 failed, more than 10 %.
    let decision = slot.rank(&catalog, &request_all(&catalog, pool(19)));
    assert!(matches!(decision.by, DecidedBy::Fallback { .. }));
    let stats = slot.stats();
    assert_eq!(stats.rollbacks, 1);
    assert_eq!(
        stats.active,
        format!("{} ({})", cheapest.info().name, cheapest.info().digest)
    );
}
