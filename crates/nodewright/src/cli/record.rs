//! `nodewright trace record`: watch a cluster's pods, PodDisruptionBudgets
//! and DaemonSets and write a version 2 trace as they change.
//!
//! What exists when recording starts is at `t = 0`; every later creation
//! and deletion at the time it was seen. Each line is written whole and
//! flushed, so the file is a valid trace whenever the recording stops: the
//! header says the planned duration, and a recording stopped early (Ctrl-C,
//! or the duration reached) rewrites it in place with the time recorded.
//! A watch that breaks is restarted; what was deleted meanwhile ends when
//! the new listing no longer holds it.

use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;

use nodewright_core::model::k8s::full_name;
use nodewright_core::sim::import::Recorder;

/// The header is written this wide, so the recorded duration fits in place.
const HEADER_WIDTH: usize = 240;

/// One observation of any of the three kinds.
enum Seen {
    Pod(Event<Pod>),
    Pdb(Event<PodDisruptionBudget>),
    DaemonSet(Event<DaemonSet>),
}

/// What a recording wrote.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    /// Lines after the header.
    pub lines: usize,
    /// Seconds recorded (the trace's duration).
    pub seconds: f64,
}

/// The state of one kind's listing: whether it is the first (objects at
/// t = 0) and which objects a relisting has shown.
#[derive(Default)]
struct Listing {
    done_once: bool,
    seen: Option<HashSet<String>>,
}

/// Record from `client` into `out` for at most `duration`, or until `stop`
/// completes.
pub(crate) async fn record(
    client: kube::Client,
    mut recorder: Recorder,
    duration: Duration,
    out: &Path,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Recorded> {
    let mut file = std::fs::File::create(out).with_context(|| format!("{}: cannot create", out.display()))?;
    file.write_all(recorder.header(duration.as_secs_f64(), HEADER_WIDTH).as_bytes())
        .and_then(|()| file.flush())
        .with_context(|| format!("{}: cannot write", out.display()))?;
    let config = watcher::Config::default();
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), config.clone()).default_backoff().map(|e| e.map(Seen::Pod));
    let pdbs = watcher::watcher(Api::<PodDisruptionBudget>::all(client.clone()), config.clone()).default_backoff().map(|e| e.map(Seen::Pdb));
    let daemonsets = watcher::watcher(Api::<DaemonSet>::all(client), config).default_backoff().map(|e| e.map(Seen::DaemonSet));
    let mut events = futures::stream::select_all([pods.boxed(), pdbs.boxed(), daemonsets.boxed()]);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let mut listings: [Listing; 3] = Default::default();
    let mut recorded = Recorded::default();
    let mut last_t = 0.0f64;
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = tokio::time::sleep_until(deadline) => break,
            () = &mut stop => break,
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!("watch: {e}; retrying");
                continue;
            }
        };
        let now = started.elapsed().as_secs_f64().min(duration.as_secs_f64());
        let mut lines = Vec::new();
        match event {
            Seen::Pod(e) => observe(&mut recorder, &mut listings[0], "Pod", now, e, &mut lines, |r, t, p| r.pod(t, p)),
            Seen::Pdb(e) => observe(&mut recorder, &mut listings[1], "PodDisruptionBudget", now, e, &mut lines, |r, t, p| r.pdb(t, p)),
            Seen::DaemonSet(e) => observe(&mut recorder, &mut listings[2], "DaemonSet", now, e, &mut lines, |r, t, d| r.daemonset(t, d)),
        }
        for line in lines {
            file.write_all(line.as_bytes()).and_then(|()| file.flush()).with_context(|| format!("{}: cannot write", out.display()))?;
            recorded.lines += 1;
            last_t = last_t.max(now);
        }
        for note in recorder.notes.drain(..) {
            eprintln!("note: {note}");
        }
    }
    // The time recorded, at least as late as the last line (and positive).
    recorded.seconds = started.elapsed().as_secs_f64().min(duration.as_secs_f64()).max(last_t).max(0.001);
    let seconds = (recorded.seconds * 1000.0).ceil() / 1000.0;
    recorded.seconds = seconds;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.write_all(recorder.header(seconds, HEADER_WIDTH).as_bytes()))
        .and_then(|()| file.flush())
        .with_context(|| format!("{}: cannot write", out.display()))?;
    Ok(recorded)
}

/// Turn one watch event of `kind` into trace lines.
fn observe<K: kube::Resource>(
    recorder: &mut Recorder,
    listing: &mut Listing,
    kind: &'static str,
    now: f64,
    event: Event<K>,
    lines: &mut Vec<String>,
    apply: impl Fn(&mut Recorder, f64, K) -> Option<String>,
) {
    let name = |object: &K| {
        let meta = object.meta();
        full_name(meta)
    };
    match event {
        Event::Init => listing.seen = Some(HashSet::new()),
        Event::InitApply(object) => {
            if let Some(seen) = &mut listing.seen {
                seen.insert(name(&object));
            }
            // The first listing is what ran before the recording began.
            let t = if listing.done_once { now } else { 0.0 };
            lines.extend(apply(recorder, t, object));
        }
        Event::InitDone => {
            // A relisting: what it no longer holds ended while the watch was down.
            if let Some(seen) = listing.seen.take()
                && listing.done_once
            {
                for (k, gone) in recorder.live().into_iter().filter(|(k, n)| *k == kind && !seen.contains(n)) {
                    lines.extend(recorder.deleted(now, k, &gone));
                }
            }
            listing.done_once = true;
        }
        Event::Apply(object) => lines.extend(apply(recorder, now, object)),
        Event::Delete(object) => lines.extend(recorder.deleted(now, kind, &name(&object))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_apiserver::ApiServer;
    use nodewright_core::sim::import::{ImportOptions, Input, import};
    use nodewright_core::sim::trace::TraceEventKind;
    use nodewright_core::sim::{PolicyUnderTest, SimulationConfig, parse_trace, simulate};

    const SNAPSHOT: &str = include_str!("../../../nodewright-core/tests/fixtures/kubectl/cluster-snapshot.json");
    const NODEPOOLS: &str = include_str!("../../../nodewright-core/tests/fixtures/kubectl/nodepools.yaml");

    fn placements(trace_text: &str) -> std::collections::BTreeMap<String, String> {
        let trace = parse_trace("t.jsonl", trace_text).unwrap();
        let pools = nodewright_core::model::parse_node_pools("nodepools.yaml", NODEPOOLS).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let config = SimulationConfig { cache_dir: Some(cache.path().into()), interruptions: false, ..SimulationConfig::default() };
        let policy = PolicyUnderTest {
            name: "karpenter-like".into(),
            selection: nodewright_core::model::PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
            consolidation: nodewright_core::model::PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
        };
        let catalog = std::sync::Arc::new(nodewright_core::model::Catalog::bundled());
        simulate(&trace, &policy, &pools, catalog, &config, |_| {}).unwrap().end.placements
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recording_of_a_cluster_simulates_to_the_placements_of_its_snapshot_and_sees_changes() {
        let (client, server) = ApiServer::start();
        let snapshot: serde_json::Value = serde_json::from_str(SNAPSHOT).unwrap();
        for item in snapshot["items"].as_array().unwrap() {
            if item["kind"] != "Service" {
                server.put(item.clone());
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("recorded.jsonl");
        let options = ImportOptions { name: "recorded".into(), duration_s: 3600.0, ..ImportOptions::default() };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let out = out.clone();
            tokio::spawn(async move {
                record(client, Recorder::new(&options), Duration::from_secs(3600), &out, async {
                    let _ = stop_rx.await;
                })
                .await
            })
        };
        // Once the listing is written, a pod comes and one goes.
        let lines = || std::fs::read_to_string(&out).unwrap_or_default().lines().count();
        for _ in 0..200 {
            if lines() > 14 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(lines(), 15, "the header and fourteen objects listed");
        let mut late = snapshot["items"][0].clone();
        late["metadata"]["name"] = "web-late".into();
        server.put(late);
        assert_eq!(server.delete("Pod", "tools", "debug-shell"), 200);
        for _ in 0..200 {
            if lines() > 16 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_tx.send(()).unwrap();
        let recorded = task.await.unwrap().unwrap();
        assert_eq!(recorded.lines, 16);
        let text = std::fs::read_to_string(&out).unwrap();
        let trace = parse_trace("recorded.jsonl", &text).unwrap();
        // The header was rewritten with the time recorded.
        assert_eq!(trace.duration_s, recorded.seconds);
        assert!(trace.duration_s < 60.0, "{}", trace.duration_s);
        let at = |f: &dyn Fn(&TraceEventKind) -> bool| trace.events.iter().find(|e| f(&e.kind)).map(|e| e.t);
        assert!(at(&|k| matches!(k, TraceEventKind::Add(p) if &*p.name == "shop/web-late")).unwrap() > 0.0);
        assert!(at(&|k| matches!(k, TraceEventKind::Delete(n) if n == "tools/debug-shell")).unwrap() > 0.0);

        // What was there at the start simulates as the snapshot's import does.
        let start: Vec<&str> = text.lines().take(15).collect();
        let header = r#"{"format":"nodewright-trace","version":2,"name":"recorded","duration_s":21600}"#;
        let recorded_start = std::iter::once(header).chain(start[1..].iter().copied()).collect::<Vec<_>>().join("\n");
        let options = ImportOptions { name: "snapshot".into(), duration_s: 21_600.0, ..ImportOptions::default() };
        let imported = import(&[Input { file: "snapshot.json".into(), text: SNAPSHOT.into(), taken_at: None }], &options).unwrap();
        let (a, b) = (placements(&recorded_start), placements(&imported.text));
        assert_eq!(a.len(), 10);
        assert_eq!(a, b);
    }
}
