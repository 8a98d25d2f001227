//! Hot swap: atomic swaps under load, and the watched-directory source.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::*;
use nodewright_core::model::{Arch, CapacityType::*, Catalog, InterruptionRate::*};
use nodewright_core::policy::{DecidedBy, DirectoryWatch, PolicyRegistry, Role, SlotMode, WatchEvent};

#[test]
fn a_thousand_swaps_under_load_never_fail_a_call_and_every_answer_is_one_versions() {
    let (runtime, _cache) = runtime();
    let registry = PolicyRegistry::new(runtime.clone());
    let slot = registry.ensure_slot("web", Role::Selection);
    // Two versions that disagree on this catalog: cheapest picks amd64, graviton-first arm64.
    let catalog = Arc::new(Catalog::new(vec![
        offering("m6i.xlarge", Arch::Amd64, OnDemand, 0.100, VeryLow),
        offering("m6g.xlarge", Arch::Arm64, OnDemand, 0.110, VeryLow),
        offering("c6i.xlarge", Arch::Amd64, Spot, 0.120, Low),
    ]));
    let a = load(&runtime, "cheapest", "{}");
    let b = load(&runtime, "graviton-first", "{}");
    let request = request_all(&catalog, "default");
    let expected_a = a.rank(&catalog, &request).unwrap();
    let expected_b = b.rank(&catalog, &request).unwrap();
    assert_ne!(expected_a.top(), expected_b.top());
    slot.propose(a.clone(), SlotMode::Active).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (seen_a, seen_b) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let caller = {
        let (slot, catalog, stop) = (slot.clone(), catalog.clone(), stop.clone());
        let (a, b, seen_a, seen_b) = (a.clone(), b.clone(), seen_a.clone(), seen_b.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let decision = slot.rank(&catalog, &request);
                match decision.by {
                    DecidedBy::Plugin(p) if Arc::ptr_eq(&p, &a) => {
                        assert_eq!(decision.value, expected_a);
                        seen_a.fetch_add(1, Ordering::Relaxed);
                    }
                    DecidedBy::Plugin(p) if Arc::ptr_eq(&p, &b) => {
                        assert_eq!(decision.value, expected_b);
                        seen_b.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("a call was not answered by either version: {other:?}"),
                }
            }
        })
    };
    for i in 0..1000 {
        let next = if i % 2 == 0 { &b } else { &a };
        slot.propose(next.clone(), SlotMode::Active).unwrap();
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Let the caller see the last version too.
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    caller.join().expect("the calling thread saw only valid answers");
    let stats = slot.stats();
    assert_eq!(stats.swaps, 1001);
    assert_eq!((stats.fallbacks, stats.rollbacks, stats.rejected), (0, 0, 0));
    assert!(seen_a.load(Ordering::Relaxed) > 0 && seen_b.load(Ordering::Relaxed) > 0);
    assert_eq!(stats.calls, seen_a.load(Ordering::Relaxed) + seen_b.load(Ordering::Relaxed));
}

fn next_event(events: &mpsc::Receiver<WatchEvent>) -> WatchEvent {
    events.recv_timeout(Duration::from_secs(60)).expect("the watcher reports every load")
}

#[test]
fn a_watched_directory_swaps_written_components_in_and_keeps_serving_on_a_bad_one() {
    let (runtime, _cache) = runtime();
    let registry = Arc::new(PolicyRegistry::new(runtime.clone()));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(component("cheapest"), dir.path().join("web.wasm")).unwrap();
    let (tx, events) = mpsc::channel();
    let _watch = DirectoryWatch::start(dir.path(), registry.clone(), move |e| {
        let _ = tx.send(e);
    })
    .unwrap();
    let cheapest = load(&runtime, "cheapest", "{}");
    assert_eq!(next_event(&events), WatchEvent::Swapped { slot: "web".into(), digest: cheapest.info().digest.clone() });
    let slot = registry.slot("web").unwrap();
    assert_eq!(slot.role(), Role::Selection);

    // A new version with its config beside it.
    std::fs::write(dir.path().join("web.json"), r#"{"within_percent": 50}"#).unwrap();
    std::fs::copy(component("graviton-first"), dir.path().join("web.wasm")).unwrap();
    let graviton = load(&runtime, "graviton-first", "{}");
    assert_eq!(next_event(&events), WatchEvent::Swapped { slot: "web".into(), digest: graviton.info().digest.clone() });
    assert_eq!(slot.active_plugin().unwrap().config(), r#"{"within_percent": 50}"#);

    // A broken file is rejected, naming it; the slot keeps the last version.
    let path = dir.path().join("web.wasm");
    std::fs::write(&path, b"not a component").unwrap();
    assert_eq!(
        next_event(&events),
        WatchEvent::Rejected {
            slot: "web".into(),
            reason: format!("{}: not a WebAssembly component: the file does not start with the WebAssembly magic bytes", path.display()),
        }
    );
    assert_eq!(slot.active_plugin().unwrap().info().digest, graviton.info().digest);
    assert_eq!(slot.stats().rejected, 1);

    // Bad config JSON is rejected too, naming the config file.
    std::fs::copy(component("cheapest"), dir.path().join("batch.wasm")).unwrap();
    let config = dir.path().join("batch.json");
    std::fs::write(&config, "{not json").unwrap();
    loop {
        match next_event(&events) {
            WatchEvent::Rejected { slot, reason } if slot == "batch" && reason.starts_with(&format!("{}: invalid JSON: ", config.display())) => break,
            WatchEvent::Swapped { slot, .. } if slot == "batch" => continue, // written before the config landed
            other => panic!("unexpected {other:?}"),
        }
    }
}
