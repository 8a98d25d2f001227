//! A real cluster's workload in: a `kubectl get pods,pdb,daemonsets -A -o
//! json` snapshot (a fixture written by hand in Kubernetes' own JSON:
//! a zone spread with hostname anti-affinity, pod affinity, a spread on a
//! custom node label, anti-affinity on the capacity type, a tainted GPU
//! pool and the toleration for it, PDBs, daemonsets) imported into a
//! version 2 trace and simulated: every pod lands where kube-scheduler
//! would let it.

use std::collections::BTreeSet;
use std::sync::Arc;

use nodewright_core::model::k8s::NAMESPACE;
use nodewright_core::model::{Catalog, ExistingNode, PolicyRef, Requirement, parse_node_pools, well_known};
use nodewright_core::sim::import::{ImportOptions, Imported, Input, Recorder, import};
use nodewright_core::sim::trace::TraceEventKind;
use nodewright_core::sim::{PolicyUnderTest, SimulationConfig, parse_trace, simulate};

const SNAPSHOT: &str = include_str!("fixtures/kubectl/cluster-snapshot.json");
const NODEPOOLS: &str = include_str!("fixtures/kubectl/nodepools.yaml");

fn snapshot(text: &str) -> Input {
    Input { file: "cluster-snapshot.json".into(), text: text.into(), taken_at: None }
}

fn options() -> ImportOptions {
    ImportOptions { name: "snapshot".into(), duration_s: 6.0 * 3600.0, ..ImportOptions::default() }
}

fn imported() -> Imported {
    import(&[snapshot(SNAPSHOT)], &options()).unwrap()
}

#[test]
fn a_kubectl_snapshot_imports_what_scheduling_reads_and_names_what_it_leaves_out() {
    let imported = imported();
    assert_eq!((imported.pods, imported.pdbs, imported.daemonsets), (10, 2, 2));
    assert_eq!(
        imported.notes,
        vec![
            "cluster-snapshot.json: items[9] (Pod tools/debug-shell): no container requests CPU or memory; imported requesting none (as the scheduler counts it)",
            "cluster-snapshot.json: items[10] (Pod ml/train-old): already Succeeded; skipped",
            "cluster-snapshot.json: items[17] (Service shop/web): kind Service is not imported (Pod, PodDisruptionBudget, DaemonSet are); skipped",
        ]
    );
    // Stripped to what scheduling reads: no images, no status, no per-pod annotations.
    assert!(!imported.text.contains("registry.example.com"), "{}", imported.text);
    assert!(!imported.text.contains("restartedAt"));
    assert!(!imported.text.contains("\"status\""));
    let trace = parse_trace("shop.jsonl", &imported.text).unwrap();
    assert!(trace.notes.is_empty(), "{:?}", trace.notes);
    assert_eq!(trace.duration_s, 6.0 * 3600.0);
    // Everything that ran before the snapshot is there from the start.
    assert!(trace.events.iter().all(|e| e.t == 0.0));
    let pdbs: Vec<_> = trace.events.iter().filter_map(|e| if let TraceEventKind::Pdb(p) = &e.kind { Some(p.clone()) } else { None }).collect();
    assert_eq!(pdbs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["shop/web", "data/db"]);
    // A budget selects the pods of its own namespace only.
    assert_eq!(pdbs[1].selector.requirements, vec![Requirement::is_in("app", &["db"]), Requirement::is_in(NAMESPACE, &["data"])]);
    let train = trace
        .events
        .iter()
        .find_map(|e| if let TraceEventKind::Add(p) = &e.kind { (&*p.name == "ml/train-0").then_some((p.clone(), e.job)) } else { None })
        .unwrap();
    assert!(train.1, "a Job's pod is a job");
    assert_eq!(train.0.spec.requests.gpus, 1);
    assert_eq!(train.0.spec.deletion_cost, 100);
    assert_eq!(train.0.spec.preferred_terms[0].weight, 50);
}

#[test]
fn the_imported_snapshot_simulates_with_every_pod_placed_as_kube_scheduler_would() {
    let trace = parse_trace("shop.jsonl", &imported().text).unwrap();
    let pools = parse_node_pools("nodepools.yaml", NODEPOOLS).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let config = SimulationConfig { cache_dir: Some(cache.path().into()), interruptions: false, ..SimulationConfig::default() };
    let policy = PolicyUnderTest {
        name: "karpenter-like".into(),
        selection: PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
        consolidation: PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
    };
    let result = simulate(&trace, &policy, &pools, Arc::new(Catalog::bundled()), &config, |_| {}).unwrap();
    let end = &result.end;
    assert_eq!(result.metrics.pods_never_scheduled, 0);
    assert_eq!(end.placements.len(), 10, "every pod runs: {:?}", end.placements);
    let node = |pod: &str| -> &ExistingNode {
        let name = &end.placements[pod];
        end.nodes.iter().find(|n| &n.name == name).unwrap()
    };
    let label = |pod: &str, key: &str| node(pod).labels.get(key).cloned().unwrap_or_default();

    // Zone spread (maxSkew 1) of three replicas with one per node: three zones, three nodes.
    let web = ["shop/web-7d9f8c6b5-ax2k0", "shop/web-7d9f8c6b5-bx2k1", "shop/web-7d9f8c6b5-cx2k2"];
    assert_eq!(web.iter().map(|p| label(p, well_known::ZONE)).collect::<BTreeSet<_>>().len(), 3);
    assert_eq!(web.iter().map(|p| end.placements[*p].clone()).collect::<BTreeSet<_>>().len(), 3);
    // Pod affinity on the hostname: the cache runs beside a web replica.
    assert!(web.iter().any(|p| end.placements[*p] == end.placements["shop/web-cache-0"]));
    // The spread over the custom `example.com/rack` label: one database per rack.
    assert_eq!([label("data/db-0", "example.com/rack"), label("data/db-1", "example.com/rack")].into_iter().collect::<BTreeSet<_>>(), BTreeSet::from(["a".to_string(), "b".to_string()]));
    // Anti-affinity on the capacity type, within rack a (their node selector).
    let workers = ["batch/worker-0", "batch/worker-1"];
    assert!(workers.iter().all(|p| label(p, "example.com/rack") == "a"));
    assert_ne!(label(workers[0], well_known::CAPACITY_TYPE), label(workers[1], well_known::CAPACITY_TYPE));
    // The GPU job tolerates the GPU pool's taint and asks for it; nothing else lands there.
    assert_eq!(label("ml/train-0", "example.com/pool"), "gpu");
    assert!(node("ml/train-0").allocatable.gpus >= 1);
    for (pod, _) in end.placements.iter().filter(|(p, _)| p.as_str() != "ml/train-0") {
        assert_ne!(label(pod, "example.com/pool"), "gpu", "{pod} does not tolerate the GPU taint");
    }
    // Daemonsets: the agent on every node, the GPU plugin on GPU nodes only.
    for n in &end.nodes {
        let runs = |app: &str| n.pods.iter().any(|p| p.labels.get("app").map(String::as_str) == Some(app));
        assert!(runs("node-agent"), "{}", n.name);
        assert_eq!(runs("gpu-plugin"), n.labels.get("example.com/pool").map(String::as_str) == Some("gpu"), "{}", n.name);
        // No node holds more than it has.
        assert!(n.allocatable.covers(&n.used()), "{} holds {:?} of {:?}", n.name, n.used(), n.allocatable);
    }
}

#[test]
fn anonymized_names_and_label_values_are_hashed_consistently_and_shapes_kept() {
    let plain = imported();
    let hidden = import(&[snapshot(SNAPSHOT)], &ImportOptions { anonymize: true, ..options() }).unwrap();
    for secret in ["shop", "web-cache", "debug-shell", "\"db\"", "worker-5c4"] {
        assert!(!hidden.text.contains(secret), "{secret} is still in the trace");
    }
    // Well-known keys keep their values; shapes (requests, spreads) are unchanged.
    assert!(hidden.text.contains("\"topologyKey\":\"topology.kubernetes.io/zone\""));
    assert!(hidden.text.contains("\"karpenter.sh/capacity-type\""));
    let (a, b) = (parse_trace("a", &plain.text).unwrap(), parse_trace("b", &hidden.text).unwrap());
    assert_eq!(a.events.len(), b.events.len());
    for (x, y) in a.events.iter().zip(&b.events) {
        if let (TraceEventKind::Add(p), TraceEventKind::Add(q)) = (&x.kind, &y.kind) {
            assert_ne!(p.name, q.name);
            assert_eq!(p.spec.requests, q.spec.requests);
            assert_eq!(p.spec.spread.len(), q.spec.spread.len());
            // A selector still selects its own pods: the web spread matches web's (hashed) labels.
            for s in &q.spec.spread {
                assert!(s.selector.matches(&q.spec.labels), "{}", q.name);
            }
        }
    }
}

#[test]
fn a_truncated_snapshot_keeps_the_objects_before_the_damage_and_says_where() {
    let cut = &SNAPSHOT[..SNAPSHOT.find("\"name\": \"db-1\"").unwrap()];
    let imported = import(&[snapshot(cut)], &options()).unwrap();
    assert_eq!(imported.pods, 5, "the three web pods, the cache and db-0");
    let note = imported.notes.last().unwrap();
    assert!(note.starts_with("cluster-snapshot.json: truncated or malformed at line "), "{note}");
    assert!(note.ends_with("the 5 objects before it imported"), "{note}");
    // An object that does not read is named and skipped, the rest imported.
    let bad = SNAPSHOT.replacen("\"priority\": 0", "\"priority\": \"high\"", 1);
    let imported = import(&[snapshot(&bad)], &options()).unwrap();
    assert_eq!(imported.pods, 9);
    assert!(
        imported.notes[0].starts_with("cluster-snapshot.json: items[0] (Pod shop/web-7d9f8c6b5-ax2k0): spec.priority: invalid type: string \"high\""),
        "{:?}",
        imported.notes
    );
    assert_eq!(import(&[snapshot("[1, 2]")], &options()).unwrap_err(), "nothing to import:\n  cluster-snapshot.json: not a Kubernetes object or List; nothing imported from it");
}

#[test]
fn snapshots_over_time_and_an_audit_log_become_arrivals_and_departures() {
    // Two snapshots an hour apart: web-c gone, a new pod come.
    let first = snapshot(SNAPSHOT);
    let mut doc: serde_json::Value = serde_json::from_str(SNAPSHOT).unwrap();
    let items = doc["items"].as_array_mut().unwrap();
    items.retain(|i| i["metadata"]["name"] != "web-7d9f8c6b5-cx2k2");
    let mut late = items[0].clone();
    late["metadata"]["name"] = "web-7d9f8c6b5-dx2k3".into();
    late["metadata"]["creationTimestamp"] = "2026-11-30T10:10:00Z".into();
    items.push(late);
    let second = Input { file: "later.json".into(), text: doc.to_string(), taken_at: Some("2026-11-30T10:40:00Z".parse().unwrap()) };
    // The audit log: a pod created and deleted after the snapshots.
    let audit = [
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","stage":"ResponseComplete","verb":"create","objectRef":{"resource":"pods","namespace":"shop","name":"probe","apiVersion":"v1"},"responseStatus":{"code":201},"requestObject":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"probe","namespace":"shop"},"spec":{"containers":[{"name":"p","resources":{"requests":{"cpu":"250m","memory":"256Mi"}}}]}},"stageTimestamp":"2026-11-30T10:50:00.000000Z"}"#,
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","stage":"ResponseComplete","verb":"create","objectRef":{"resource":"pods","namespace":"shop","name":"blind"},"responseStatus":{"code":201},"stageTimestamp":"2026-11-30T10:51:00Z"}"#,
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","stage":"ResponseComplete","verb":"delete","objectRef":{"resource":"pods","namespace":"shop","name":"probe"},"responseStatus":{"code":200},"stageTimestamp":"2026-11-30T11:00:00Z"}"#,
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","verb":"create","objectRef":{"resource":"po"#,
    ]
    .join("\n");
    let audit = Input { file: "audit.log".into(), text: audit, taken_at: None };
    let imported = import(&[first, second, audit], &options()).unwrap();
    let trace = parse_trace("t", &imported.text).unwrap();
    // The first snapshot was taken at its newest creation (09:40), the trace starts there.
    let at = |name: &str, add: bool| {
        trace
            .events
            .iter()
            .find(|e| match &e.kind {
                TraceEventKind::Add(p) => add && *p.name == *name,
                TraceEventKind::Delete(n) => !add && n == name,
                _ => false,
            })
            .map(|e| e.t)
    };
    assert_eq!(at("shop/web-7d9f8c6b5-dx2k3", true), Some(30.0 * 60.0));
    assert_eq!(at("shop/web-7d9f8c6b5-cx2k2", false), Some(60.0 * 60.0));
    assert_eq!(at("shop/probe", true), Some(70.0 * 60.0));
    assert_eq!(at("shop/probe", false), Some(80.0 * 60.0));
    assert_eq!(trace.duration_s, 80.0 * 60.0);
    assert!(imported.notes.contains(&"audit.log:2: Pod create carries no object (audit level Metadata); skipped".to_string()), "{:?}", imported.notes);
    assert!(imported.notes.iter().any(|n| n.starts_with("audit.log:4: not a JSON audit event")), "{:?}", imported.notes);
}

#[test]
fn a_recorder_writes_an_object_once_per_change_of_what_the_trace_carries() {
    let mut recorder = Recorder::new(&options());
    let pdb = |status: i32, max: i32| -> k8s_openapi::api::policy::v1::PodDisruptionBudget {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "web", "namespace": "shop"},
            "spec": {"maxUnavailable": max, "selector": {"matchLabels": {"app": "web"}}}, "status": {"disruptionsAllowed": status}}))
        .unwrap()
    };
    let first = recorder.pdb(0.0, pdb(1, 1)).unwrap();
    assert!(first.starts_with(r#"{"t":0.0,"pdb":{"apiVersion":"policy/v1","kind":"PodDisruptionBudget","metadata":{"name":"web","namespace":"shop"},"spec":{"maxUnavailable":1,"#), "{first}");
    // Its status moves (it does, with every pod): nothing to write.
    assert_eq!(recorder.pdb(5.0, pdb(0, 1)), None);
    // Its spec changes: the new budget replaces it.
    assert!(recorder.pdb(9.0, pdb(0, 2)).unwrap().starts_with(r#"{"t":9.0,"pdb":"#));
    assert_eq!(recorder.deleted(12.0, "PodDisruptionBudget", "shop/web").unwrap(), "{\"t\":12.0,\"del_pdb\":\"shop/web\"}\n");
    assert_eq!(recorder.deleted(13.0, "PodDisruptionBudget", "shop/web"), None, "gone once");
    // A pod is written when it comes, and ends when it finishes.
    let pod = |phase: &str| -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "job-1", "namespace": "batch"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}, "status": {"phase": phase}}))
        .unwrap()
    };
    assert!(recorder.pod(1.0, pod("Running")).is_some());
    assert_eq!(recorder.pod(2.0, pod("Running")), None);
    assert_eq!(recorder.pod(3.0, pod("Succeeded")).unwrap(), "{\"t\":3.0,\"del\":\"batch/job-1\"}\n");
}
