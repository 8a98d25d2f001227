//! The kube-rs layer against a scripted API server (`tower_test`): each
//! test answers the requests the controller makes and checks them.

#[path = "../../nodewright-core/tests/common/mod.rs"]
mod common;
mod support;

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::{Method, Request, Response};
use kube::client::Body;
use kube::Client;
use nodewright_core::cloud::{CloudProvider, SimulatedCloud, SimulatedCloudConfig};
use nodewright_kube::KubeCluster;
use nodewright_kube::lease::LeaderElector;
use nodewright_core::controllers::node_pool_status::NodePoolStatusController;
use nodewright_core::controllers::policy_plugins::{PluginOutcome, PolicyPluginController};
use nodewright_core::controllers::registration::RegistrationController;
use nodewright_core::cluster::{Cluster, Eviction};
use nodewright_core::model::{Catalog, NodePool};
use nodewright_core::policy::{PolicyRegistry, Role, SlotMode};
use nodewright_core::provisioning::{Provisioner, selection_slot};
use serde_json::{Value, json};

/// A request as the API server saw it: method, decoded path and query, body.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    body: Value,
}

fn decode(uri: &str) -> String {
    let bytes = uri.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&uri[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// A scripted API server: `answer(method, uri, body)` gives (status, JSON);
/// every request is recorded.
fn api_server(
    mut answer: impl FnMut(&Method, &str, &Value) -> (u16, Value) + Send + 'static,
) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let uri = decode(&request.uri().to_string());
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
            let (status, reply) = answer(&method, &uri, &body);
            log.lock().unwrap().push(Seen { method, uri, body });
            send.send_response(Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap());
        }
    });
    (Client::new(service, "default"), seen)
}

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> (u16, Value) {
    (200, json!({ "apiVersion": api_version, "kind": format!("{kind}List"), "metadata": { "resourceVersion": "1" }, "items": items }))
}

/// The answer to a request a scenario did not expect: 400, which the
/// adapter never takes for success (a 404 could pass for "already gone").
fn unexpected(method: &str, uri: &str) -> (u16, Value) {
    eprintln!("unexpected request: {method} {uri}");
    status(400, "BadRequest", &format!("unexpected {method} {uri}"))
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (code, json!({ "apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": message, "metadata": {} }))
}

fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog::bundled_types(60))
}

fn kube_cluster(client: Client, catalog: Arc<Catalog>) -> Arc<KubeCluster> {
    Arc::new(KubeCluster::new(client, "nodewright", Arc::new(move || catalog.clone())))
}

fn node_pool_object() -> Value {
    support::objects::node_pool()
}

fn pending_pod() -> Value {
    support::objects::pending_pod("web-1")
}

/// What a provisioning pass reads: one NodePool, one pending pod, nothing else.
fn provisioning_reads(uri: &str) -> (u16, Value) {
    match uri {
        u if u.starts_with("/apis/nodewright.io/v1alpha1/nodepools") => list("NodePool", "nodewright.io/v1alpha1", vec![node_pool_object()]),
        u if u.starts_with("/apis/apps/v1/daemonsets") => list("DaemonSet", "apps/v1", vec![]),
        u if u.starts_with("/api/v1/pods") && u.contains("fieldSelector=spec.nodeName=,status.phase=Pending") => {
            list("Pod", "v1", vec![pending_pod()])
        }
        u if u.starts_with("/api/v1/pods") => list("Pod", "v1", vec![]),
        u if u.starts_with("/api/v1/nodes") => list("Node", "v1", vec![]),
        u if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims") => list("NodeClaim", "nodewright.io/v1alpha1", vec![]),
        _ => unexpected("GET", uri),
    }
}

/// The API server's answer to a status patch of the NodeClaim in `uri`.
fn launch_recorded(uri: &str, body: &Value) -> (u16, Value) {
    let name = uri.trim_start_matches("/apis/nodewright.io/v1alpha1/nodeclaims/").split('/').next().unwrap_or_default();
    let mut claim = json!({ "apiVersion": "nodewright.io/v1alpha1", "kind": "NodeClaim", "metadata": { "name": name },
        "spec": { "nodePool": "default", "offerings": [], "cpuMillis": 0, "memoryBytes": 0 } });
    claim["status"] = body["status"].clone();
    (200, claim)
}

/// One provisioning pass over the API server behind `client`, launching
/// into a simulated cloud.
async fn provision_once(client: Client) -> (Arc<SimulatedCloud>, nodewright_core::provisioning::ProvisioningReport) {
    let catalog = catalog();
    let cluster = kube_cluster(client, catalog.clone());
    let cloud = Arc::new(SimulatedCloud::new(catalog, SimulatedCloudConfig::default(), Arc::new(|| Duration::ZERO)));
    let (runtime, _cache) = common::runtime();
    let provisioner = Provisioner::new(cloud.clone(), cluster, Arc::new(PolicyRegistry::new(runtime)));
    (cloud, provisioner.provision().await.unwrap())
}

#[tokio::test]
async fn a_pending_pod_makes_the_provisioner_create_a_nodeclaim_and_record_its_launch() {
    let (client, seen) = api_server(|method, uri, body| match (method.as_str(), uri) {
        ("GET", _) => provisioning_reads(uri),
        ("POST", "/apis/nodewright.io/v1alpha1/nodeclaims?") => (201, body.clone()),
        ("PATCH", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims/") && u.contains("/status") => launch_recorded(u, body),
        // The decision, as an annotation.
        ("PATCH", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims/") => launch_recorded(u, body),
        ("POST", u) if u.ends_with("/events?") => (201, body.clone()),
        _ => unexpected(method.as_str(), uri),
    });
    let (_, report) = provision_once(client).await;
    assert_eq!(report.launched.len(), 1, "{report:?}");
    let seen = seen.lock().unwrap().clone();
    let create = seen.iter().find(|s| s.method == Method::POST).expect("a NodeClaim was created");
    assert_eq!(create.uri, "/apis/nodewright.io/v1alpha1/nodeclaims?");
    assert_eq!(create.body["spec"]["nodePool"], "default");
    assert_eq!(create.body["spec"]["pods"], json!(["shop/web-1"]));
    assert_eq!(create.body["metadata"]["finalizers"], json!(["nodewright.io/termination"]));
    // Owned by its NodePool: deleting it has the garbage collector delete the claim.
    assert_eq!(
        create.body["metadata"]["ownerReferences"],
        json!([{ "apiVersion": "nodewright.io/v1alpha1", "kind": "NodePool", "name": "default", "uid": "uid-default", "blockOwnerDeletion": true }])
    );
    assert_eq!(create.body["spec"]["cpuMillis"], 500);
    let offerings = create.body["spec"]["offerings"].as_array().unwrap();
    assert!(!offerings.is_empty() && offerings.iter().all(|o| o.as_str().unwrap().ends_with("/on-demand")), "{offerings:?}");
    assert!(create.body["spec"]["taints"].as_array().unwrap().contains(&json!("nodewright.io/starting=:NoSchedule")));
    let launched = seen.iter().find(|s| s.method == Method::PATCH && s.uri.contains("/status")).expect("the launch was recorded");
    assert!(launched.body["status"]["providerID"].as_str().unwrap().starts_with("aws:///us-east-1"), "{:?}", launched.body);
    assert_eq!(launched.body["status"]["conditions"][0]["type"], "Launched");
    // Events: the claim launched (in `default`, as for every cluster-scoped
    // object), the pod nominated to it (in its namespace).
    let events: Vec<(&str, &str, &str)> = seen
        .iter()
        .filter(|s| s.uri.ends_with("/events?"))
        .map(|s| (s.uri.as_str(), s.body["reason"].as_str().unwrap(), s.body["involvedObject"]["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(events, [("/api/v1/namespaces/default/events?", "Launched", "NodeClaim"), ("/api/v1/namespaces/shop/events?", "Nominated", "Pod")]);
    // Why it was bought as it was: a merge patch of one annotation.
    let decision = seen.iter().find(|s| s.method == Method::PATCH && !s.uri.contains("/status")).expect("the decision was written");
    assert_eq!(decision.body["metadata"].as_object().unwrap().len(), 1, "{:?}", decision.body);
    let text = decision.body["metadata"]["annotations"]["nodewright.io/decision"].as_str().unwrap();
    let explanation: nodewright_core::provisioning::explain::LaunchExplanation = serde_json::from_str(text).unwrap();
    assert_eq!((explanation.node_pool.as_str(), explanation.policy.plugin.as_str(), explanation.pods.as_slice()), ("default", "karpenter-like", &["shop/web-1".to_string()][..]));
    assert!(text.len() <= nodewright_core::provisioning::explain::MAX_EXPLANATION_BYTES);
    // Nothing else but reads, one create, the status patch and the decision.
    assert_eq!(seen.iter().filter(|s| s.method != Method::GET && !s.uri.ends_with("/events?")).count(), 3, "{seen:#?}");
}

#[tokio::test]
async fn a_claim_name_another_replica_took_is_drawn_again_and_one_instance_is_launched() {
    let posts = Arc::new(Mutex::new(0));
    let counter = posts.clone();
    let (client, seen) = api_server(move |method, uri, body| match (method.as_str(), uri) {
        ("GET", _) => provisioning_reads(uri),
        ("POST", "/apis/nodewright.io/v1alpha1/nodeclaims?") => {
            let mut n = counter.lock().unwrap();
            *n += 1;
            if *n == 1 {
                status(409, "AlreadyExists", "nodeclaims.nodewright.io already exists")
            } else {
                (201, body.clone())
            }
        }
        ("PATCH", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims/") && u.contains("/status") => launch_recorded(u, body),
        ("POST", u) if u.ends_with("/events?") => (201, body.clone()),
        _ => unexpected(method.as_str(), uri),
    });
    let (cloud, report) = provision_once(client).await;
    assert_eq!(report.launched.len(), 1, "{report:?}");
    assert_eq!(cloud.launch_requests().len(), 1, "one instance");
    let seen = seen.lock().unwrap().clone();
    let creates: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::POST && s.uri.contains("/nodeclaims")).collect();
    assert_eq!(creates.len(), 2, "{seen:#?}");
    let names: Vec<&str> = creates.iter().map(|c| c.body["metadata"]["name"].as_str().unwrap()).collect();
    assert_ne!(names[0], names[1]);
    assert!(names.iter().all(|n| n.starts_with("default-") && n.len() == "default-".len() + 5), "{names:?}");
    assert_eq!(report.launched[0].claim, names[1]);
    let patched = seen.iter().find(|s| s.method == Method::PATCH).unwrap();
    assert!(patched.uri.contains(&format!("nodeclaims/{}/status", names[1])), "{}", patched.uri);
}

/// Claims made without an owner get their NodePool as owner by a merge
/// patch that names the version read; owned, deleting and orphaned claims
/// are left alone, and one changed since the read is left for next time.
#[tokio::test]
async fn nodeclaims_without_an_owner_get_their_nodepool_and_the_rest_are_left_alone() {
    let claim = |name: &str, pool: &str, extra: Value| {
        let mut c = json!({ "apiVersion": "nodewright.io/v1alpha1", "kind": "NodeClaim",
            "metadata": { "name": name, "resourceVersion": "7" },
            "spec": { "nodePool": pool, "offerings": [], "cpuMillis": 0, "memoryBytes": 0 } });
        for (k, v) in extra.as_object().unwrap() {
            c["metadata"][k] = v.clone();
        }
        c
    };
    let owner = json!([{ "apiVersion": "nodewright.io/v1alpha1", "kind": "NodePool", "name": "default", "uid": "uid-default", "blockOwnerDeletion": true }]);
    let claims = vec![
        claim("default-old", "default", json!({})),
        claim("default-raced", "default", json!({})),
        claim("default-new", "default", json!({ "ownerReferences": owner.clone() })),
        claim("default-going", "default", json!({ "deletionTimestamp": "2026-12-03T00:00:00Z", "finalizers": ["nodewright.io/termination"] })),
        claim("gone-abcde", "gone", json!({})),
    ];
    let (client, seen) = api_server(move |method, uri, body| match (method.as_str(), uri) {
        ("GET", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodepools") => list("NodePool", "nodewright.io/v1alpha1", vec![node_pool_object()]),
        ("GET", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims") => list("NodeClaim", "nodewright.io/v1alpha1", claims.clone()),
        ("PATCH", "/apis/nodewright.io/v1alpha1/nodeclaims/default-raced?") => status(409, "Conflict", "the object has been modified"),
        ("PATCH", "/apis/nodewright.io/v1alpha1/nodeclaims/default-old?") => {
            let mut patched = claim("default-old", "default", json!({}));
            patched["metadata"]["ownerReferences"] = body["metadata"]["ownerReferences"].clone();
            (200, patched)
        }
        _ => unexpected(method.as_str(), uri),
    });
    let cluster = kube_cluster(client, catalog());
    assert_eq!(cluster.own_node_claims().await.unwrap(), vec!["default-old".to_string()]);
    let seen = seen.lock().unwrap().clone();
    let patches: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::PATCH).collect();
    assert_eq!(patches.len(), 2, "{seen:#?}");
    assert_eq!(patches[0].uri, "/apis/nodewright.io/v1alpha1/nodeclaims/default-old?");
    assert_eq!(patches[0].body, json!({ "metadata": { "resourceVersion": "7", "ownerReferences": owner } }));
    assert_eq!(patches[1].uri, "/apis/nodewright.io/v1alpha1/nodeclaims/default-raced?");
}

/// A pod no pass can place is said to be unschedulable every pass: the
/// API server gets one Event per pod and reason, not one per pass, and an
/// Event it refuses does not fail the pass.
#[tokio::test]
async fn a_pod_unschedulable_pass_after_pass_makes_one_event_and_a_refused_event_fails_nothing() {
    let refuse = Arc::new(Mutex::new(false));
    let refusing = refuse.clone();
    let (client, seen) = api_server(move |method, uri, body| match (method.as_str(), uri) {
        ("POST", u) if u.ends_with("/events?") => {
            if *refusing.lock().unwrap() { status(403, "Forbidden", "events is forbidden") } else { (201, body.clone()) }
        }
        _ => unexpected(method.as_str(), uri),
    });
    let cluster = kube_cluster(client, catalog());
    for _ in 0..5 {
        cluster.pod_unschedulable("shop/web-1", "no NodePool fits").await.unwrap();
    }
    cluster.pod_unschedulable("shop/web-1", "every offering is unavailable").await.unwrap();
    cluster.pod_unschedulable("shop/web-2", "no NodePool fits").await.unwrap();
    *refuse.lock().unwrap() = true;
    cluster.pod_unschedulable("shop/web-3", "no NodePool fits").await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let sent: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|s| (s.body["involvedObject"]["name"].as_str().unwrap(), s.body["reason"].as_str().unwrap(), s.body["message"].as_str().unwrap()))
        .collect();
    assert_eq!(
        sent,
        [
            ("web-1", "FailedProvisioning", "no NodePool fits"),
            ("web-1", "FailedProvisioning", "every offering is unavailable"),
            ("web-2", "FailedProvisioning", "no NodePool fits"),
            ("web-3", "FailedProvisioning", "no NodePool fits"),
        ]
    );
    assert!(seen.iter().all(|s| s.uri == "/api/v1/namespaces/shop/events?" && s.body["type"] == "Warning"), "{seen:#?}");
}

/// `kubectl delete nodepool` between the pass's read and its create: the
/// claim is not made, nothing is launched, the pass ends well and says why.
#[tokio::test]
async fn a_nodepool_deleted_after_the_pass_read_it_gets_no_nodeclaim_and_no_instance() {
    let counter = Arc::new(Mutex::new(0));
    let (client, seen) = api_server(move |method, uri, body| match (method.as_str(), uri) {
        ("GET", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodepools") => {
            let mut n = counter.lock().unwrap();
            *n += 1;
            // The pass lists it; by the create it is gone.
            let items = if *n == 1 { vec![node_pool_object()] } else { vec![] };
            list("NodePool", "nodewright.io/v1alpha1", items)
        }
        ("GET", _) => provisioning_reads(uri),
        ("POST", u) if u.ends_with("/events?") => (201, body.clone()),
        _ => unexpected(method.as_str(), uri),
    });
    let (cloud, report) = provision_once(client).await;
    assert!(report.launched.is_empty(), "{report:?}");
    assert_eq!(report.launch_failures.len(), 1, "{report:?}");
    assert!(report.launch_failures[0].0.starts_with("default-"), "{report:?}");
    assert_eq!(report.launch_failures[0].1, "NodePool default was deleted: no NodeClaim created, its pods stay pending");
    assert!(cloud.launch_requests().is_empty(), "no instance");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.method == Method::GET || s.uri.ends_with("/events?")), "only reads: {seen:#?}");
}

/// `kubectl delete nodeclaim` while its CreateFleet is in flight: the
/// termination path, finding no instance, releases the claim, so recording
/// the launch meets a 404. The instance is terminated there and then, the
/// pass ends well and says why; no Launched or Nominated Event is sent.
#[tokio::test]
async fn a_nodeclaim_deleted_while_its_instance_launched_has_that_instance_terminated() {
    let (client, seen) = api_server(|method, uri, body| match (method.as_str(), uri) {
        ("GET", _) => provisioning_reads(uri),
        ("POST", "/apis/nodewright.io/v1alpha1/nodeclaims?") => (201, body.clone()),
        ("PATCH", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims/") && u.contains("/status") => {
            status(404, "NotFound", "nodeclaims.nodewright.io not found")
        }
        ("POST", u) if u.ends_with("/events?") => (201, body.clone()),
        _ => unexpected(method.as_str(), uri),
    });
    let (cloud, report) = provision_once(client).await;
    assert!(report.launched.is_empty(), "{report:?}");
    let launches = cloud.launch_requests();
    assert_eq!(launches.len(), 1, "CreateFleet was sent once");
    assert_eq!(report.launch_failures.len(), 1, "{report:?}");
    let (claim, why) = &report.launch_failures[0];
    assert_eq!(claim, &launches[0].claim);
    assert!(why.starts_with(&format!("NodeClaim {claim} was deleted while its instance launched: instance i-")), "{why}");
    assert!(why.ends_with(" terminated, its pods stay pending"), "{why}");
    assert!(cloud.instances().await.unwrap().is_empty(), "nothing left running");
    let seen = seen.lock().unwrap().clone();
    let patches: Vec<&str> = seen.iter().filter(|s| s.method == Method::PATCH).map(|s| s.uri.as_str()).collect();
    assert_eq!(patches.len(), 1, "only the status write that met the 404: {patches:?}");
    let events: Vec<&str> = seen.iter().filter(|s| s.uri.ends_with("/events?")).map(|s| s.body["reason"].as_str().unwrap()).collect();
    assert!(!events.contains(&"Launched") && !events.contains(&"Nominated"), "{events:?}");
}

#[tokio::test]
async fn a_registered_ready_node_loses_its_startup_taint_and_its_claim_is_initialised() {
    let (client, seen) = api_server(|method, uri, body| match (method.as_str(), uri) {
        ("GET", u) if u.starts_with("/api/v1/nodes") => list("Node", "v1", vec![json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": "ip-10-0-0-1" },
            "spec": { "providerID": "aws:///us-east-1a/i-0abc", "taints": [
                { "key": "nodewright.io/starting", "effect": "NoSchedule" },
                { "key": "dedicated", "value": "gpu", "effect": "NoSchedule" } ] },
            "status": { "conditions": [{ "type": "Ready", "status": "True" }] }
        })]),
        ("GET", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims") => list("NodeClaim", "nodewright.io/v1alpha1", vec![json!({
            "apiVersion": "nodewright.io/v1alpha1", "kind": "NodeClaim",
            "metadata": { "name": "default-1" },
            "spec": { "nodePool": "default", "offerings": [], "cpuMillis": 500, "memoryBytes": 1073741824 },
            "status": { "providerID": "aws:///us-east-1a/i-0abc", "instanceID": "i-0abc",
                        "conditions": [{ "type": "Launched", "status": "True" }] }
        })]),
        ("GET", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodepools") => list("NodePool", "nodewright.io/v1alpha1", vec![node_pool_object()]),
        ("PATCH", "/api/v1/nodes/ip-10-0-0-1?&fieldManager=nodewright") => {
            (200, json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": "ip-10-0-0-1" }, "spec": body["spec"].clone() }))
        }
        ("PATCH", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims/default-1/status") => (200, json!({
            "apiVersion": "nodewright.io/v1alpha1", "kind": "NodeClaim", "metadata": { "name": "default-1" },
            "spec": { "nodePool": "default", "offerings": [], "cpuMillis": 500, "memoryBytes": 1073741824 },
            "status": body["status"].clone() })),
        _ => unexpected(method.as_str(), uri),
    });
    let cluster = kube_cluster(client, catalog());
    // The NodePool's startup taint is `nodewright.io/starting`.
    let report = RegistrationController::new(cluster.clone()).reconcile().await.unwrap();
    assert_eq!(report.initialized, vec!["default-1".to_string()]);
    assert!(report.registered.is_empty() && report.node_deleted.is_empty(), "{report:?}");
    let seen = seen.lock().unwrap().clone();
    let taints = seen.iter().find(|s| s.uri.starts_with("/api/v1/nodes/ip-10-0-0-1")).expect("the node was patched");
    assert_eq!(taints.method, Method::PATCH);
    assert_eq!(taints.body["spec"]["taints"], json!([{ "key": "dedicated", "value": "gpu", "effect": "NoSchedule" }]));
    let claim = seen.iter().find(|s| s.uri.contains("nodeclaims/default-1/status")).expect("the claim status was patched");
    assert_eq!(claim.body["status"]["nodeName"], "ip-10-0-0-1");
    let types: Vec<&str> = claim.body["status"]["conditions"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["Launched", "Registered", "Initialized", "Ready"]);
}

#[tokio::test]
async fn an_eviction_a_pdb_refuses_with_429_is_blocked_then_retried_until_it_passes() {
    let attempts = Arc::new(Mutex::new(0));
    let count = attempts.clone();
    let (client, seen) = api_server(move |method, uri, body| match (method.as_str(), uri) {
        ("POST", "/api/v1/namespaces/shop/pods/web-1/eviction?") => {
            assert_eq!(body["metadata"]["name"], "web-1");
            let mut n = count.lock().unwrap();
            *n += 1;
            if *n == 1 {
                status(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.")
            } else {
                (201, json!({ "apiVersion": "v1", "kind": "Status", "status": "Success", "code": 201, "metadata": {} }))
            }
        }
        ("POST", "/api/v1/namespaces/shop/pods/gone/eviction?") => status(404, "NotFound", "pods \"gone\" not found"),
        _ => status(500, "InternalError", &format!("unexpected {method} {uri}")),
    });
    let cluster = kube_cluster(client, catalog());
    assert_eq!(
        cluster.evict("shop/web-1").await.unwrap(),
        Eviction::Blocked { pdb: "Cannot evict pod as it would violate the pod's disruption budget.".into() }
    );
    assert_eq!(cluster.evict("shop/web-1").await.unwrap(), Eviction::Evicted);
    // A pod that is already gone counts as evicted.
    assert_eq!(cluster.evict("shop/gone").await.unwrap(), Eviction::Evicted);
    assert_eq!(*attempts.lock().unwrap(), 2);
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_nodepool_with_a_bad_field_is_reported_in_its_status_and_left_out_while_the_others_serve() {
    let mut broken = node_pool_object();
    broken["metadata"]["name"] = json!("broken");
    broken["spec"]["template"]["spec"]["requirements"][0]["operator"] = json!("Sometimes");
    let claim = json!({ "apiVersion": "nodewright.io/v1alpha1", "kind": "NodeClaim", "metadata": { "name": "default-1" },
        "spec": { "nodePool": "default", "offerings": [], "cpuMillis": 0, "memoryBytes": 0 } });
    // The server keeps what is patched, so the second pass sees it.
    let statuses: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let kept = statuses.clone();
    let (client, seen) = api_server(move |method, uri, body| match (method.as_str(), uri) {
        ("GET", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodepools") => {
            let mut pools = vec![node_pool_object(), broken.clone()];
            for pool in &mut pools {
                if let Some(status) = kept.lock().unwrap().get(pool["metadata"]["name"].as_str().unwrap()) {
                    pool["status"] = status.clone();
                }
            }
            list("NodePool", "nodewright.io/v1alpha1", pools)
        }
        ("GET", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims") => list("NodeClaim", "nodewright.io/v1alpha1", vec![claim.clone()]),
        ("PATCH", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodepools/") && u.contains("/status") => {
            let name = u.trim_start_matches("/apis/nodewright.io/v1alpha1/nodepools/").split('/').next().unwrap().to_string();
            kept.lock().unwrap().insert(name, body["status"].clone());
            (200, node_pool_object())
        }
        _ => unexpected(method.as_str(), uri),
    });
    let cluster = kube_cluster(client, catalog());
    let pools = cluster.node_pools().await.unwrap();
    assert_eq!(pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["default"], "the broken one is left out");
    let status = NodePoolStatusController::new(Arc::new(SimulatedCloud::new(catalog(), SimulatedCloudConfig::default(), Arc::new(|| Duration::ZERO))), cluster.clone());
    assert_eq!(status.reconcile().await.unwrap(), ["default", "broken"]);
    let statuses = statuses.lock().unwrap().clone();
    let ready = |name: &str| {
        let c = &statuses[name]["conditions"][0];
        (c["type"].as_str().unwrap().to_string(), c["status"].as_str().unwrap().to_string(), c["reason"].as_str().unwrap().to_string(), c["message"].as_str().unwrap().to_string())
    };
    assert_eq!(ready("default"), ("Ready".into(), "True".into(), "Valid".into(), String::new()));
    assert_eq!(statuses["default"]["nodes"], 1);
    // Its claim has no instance yet: it holds no capacity.
    assert_eq!(
        statuses["default"]["resources"],
        json!({ "cpu": "0", "memory": "0", "pods": "0", "ephemeral-storage": "0", "nodes": "1" })
    );
    let (kind, state, reason, message) = ready("broken");
    assert_eq!((kind.as_str(), state.as_str(), reason.as_str()), ("Ready", "False", "InvalidSpec"));
    assert!(message.starts_with("spec.template.spec.requirements[0].operator: "), "{message}");
    assert!(message.contains("Sometimes"), "{message}");
    assert_eq!(statuses["broken"]["nodes"], 0);

    // Nothing changed: nothing is written again.
    let writes = seen.lock().unwrap().iter().filter(|s| s.method == Method::PATCH).count();
    assert!(status.reconcile().await.unwrap().is_empty());
    assert_eq!(seen.lock().unwrap().iter().filter(|s| s.method == Method::PATCH).count(), writes);
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A registry whose `default/selection` slot serves `spot-savvy` (the
/// version a candidate would replace), and its cache directory.
fn registry_serving_old_version() -> (Arc<PolicyRegistry>, tempfile::TempDir) {
    let (runtime, cache) = common::runtime();
    let registry = Arc::new(PolicyRegistry::new(runtime));
    let old = std::fs::read(common::component("spot-savvy")).unwrap();
    registry.load(&selection_slot("default"), Role::Selection, &old, "{}", SlotMode::Active).unwrap();
    (registry, cache)
}

fn policy_plugin(sha256: &str) -> Value {
    policy_plugin_from(json!({ "configMap": { "name": "team-cheapest", "key": "plugin.wasm" }, "sha256": sha256 }))
}

fn policy_plugin_from(source: Value) -> Value {
    json!({
        "apiVersion": "nodewright.io/v1alpha1", "kind": "PolicyPlugin",
        "metadata": { "name": "team-cheapest" },
        "spec": { "role": "selection", "mode": "active", "config": {}, "source": source }
    })
}

fn plugin_server(sha256: String, bytes: Vec<u8>) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    plugin_server_with(policy_plugin(&sha256), bytes)
}

/// An API server with one PolicyPlugin (and its ConfigMap holding `bytes`)
/// that takes status patches.
fn plugin_server_with(plugin: Value, bytes: Vec<u8>) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    api_server(move |method, uri, body| match (method.as_str(), uri) {
        ("GET", u) if u.starts_with("/apis/nodewright.io/v1alpha1/policyplugins") => {
            list("PolicyPlugin", "nodewright.io/v1alpha1", vec![plugin.clone()])
        }
        ("GET", "/api/v1/namespaces/nodewright/configmaps/team-cheapest") => (200, json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "team-cheapest", "namespace": "nodewright" },
            "binaryData": { "plugin.wasm": base64::engine::general_purpose::STANDARD.encode(&bytes) } })),
        ("PATCH", u) if u.starts_with("/apis/nodewright.io/v1alpha1/policyplugins/team-cheapest/status") => {
            let mut object = plugin.clone();
            object["status"] = body["status"].clone();
            (200, object)
        }
        _ => unexpected(method.as_str(), uri),
    })
}

#[tokio::test]
async fn a_policy_plugin_with_a_bad_digest_is_rejected_in_its_status_and_the_old_version_keeps_serving() {
    let bytes = std::fs::read(common::component("cheapest")).unwrap();
    let (registry, _cache) = registry_serving_old_version();
    let serving = || registry.slots()[0].active_plugin().unwrap().info().digest.clone();
    let before = serving();
    let pool = NodePool::new("default").selection("team-cheapest", "{}");

    let wrong = "0".repeat(64);
    let (client, seen) = plugin_server(wrong.clone(), bytes.clone());
    let outcomes = PolicyPluginController::new(kube_cluster(client, catalog()), registry.clone()).reconcile_for(std::slice::from_ref(&pool)).await.unwrap();
    let actual = sha256(&bytes);
    let message = format!("spec.source.sha256 is {wrong} but the component's sha256 is {actual}; the previous version keeps serving");
    assert_eq!(outcomes, vec![PluginOutcome::Rejected { plugin: "team-cheapest".into(), reason: "DigestMismatch".into(), message: message.clone() }]);
    assert_eq!(serving(), before, "the old version keeps serving");
    let seen = seen.lock().unwrap().clone();
    let patch = seen.iter().find(|s| s.method == Method::PATCH).expect("status was written");
    let rejected = &patch.body["status"]["conditions"][0];
    assert_eq!((rejected["type"].as_str(), rejected["status"].as_str(), rejected["reason"].as_str()), (Some("Rejected"), Some("True"), Some("DigestMismatch")));
    assert_eq!(rejected["message"], message);
    assert!(patch.body["status"].get("loadedDigest").is_none());

    // The right digest swaps it in and says so.
    let (client, seen) = plugin_server(actual.clone(), bytes);
    let outcomes = PolicyPluginController::new(kube_cluster(client, catalog()), registry.clone()).reconcile_for(&[pool]).await.unwrap();
    assert_eq!(outcomes, vec![PluginOutcome::Loaded { plugin: "team-cheapest".into(), digest: actual.clone(), slots: vec!["default/selection".into()] }]);
    assert_eq!(serving(), format!("sha256:{actual}"));
    let seen = seen.lock().unwrap().clone();
    let patch = seen.iter().find(|s| s.method == Method::PATCH).unwrap();
    assert_eq!(patch.body["status"]["loadedDigest"], actual);
    assert!(patch.body["status"]["lastSwapTime"].is_string());
}

/// Watch events for the watch of a path.
type Delivery = (&'static str, Vec<Value>);

/// A scripted API server for watch caches. A list is answered by `answer`;
/// the first watch of each path is answered with the events the test
/// delivers for it (then its stream ends, as a watch's does on timeout);
/// later watches stay open and silent.
fn watch_server(
    mut answer: impl FnMut(&Method, &str, &Value) -> (u16, Value) + Send + 'static,
) -> (Client, Arc<Mutex<Vec<Seen>>>, tokio::sync::mpsc::UnboundedSender<Delivery>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (deliver, mut deliveries) = tokio::sync::mpsc::unbounded_channel::<Delivery>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut handle = pin!(handle);
        // Held watch requests and undelivered events, by path.
        let mut watches: HashMap<String, Vec<tower_test::mock::SendResponse<Response<Body>>>> = HashMap::new();
        let mut events: HashMap<String, Vec<Vec<Value>>> = HashMap::new();
        let mut idle = Vec::new();
        let reply = |send: tower_test::mock::SendResponse<Response<Body>>, batch: Vec<Value>| {
            let lines: Vec<String> = batch.iter().map(|e| e.to_string()).collect();
            send.send_response(Response::builder().status(200).body(Body::from(lines.join("\n").into_bytes())).unwrap());
        };
        loop {
            tokio::select! {
                request = handle.next_request() => {
                    let Some((request, send)) = request else { break };
                    let method = request.method().clone();
                    let uri = decode(&request.uri().to_string());
                    let bytes = request.into_body().collect_bytes().await.unwrap();
                    let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
                    log.lock().unwrap().push(Seen { method: method.clone(), uri: uri.clone(), body: body.clone() });
                    if uri.contains("watch=true") {
                        let path = uri.split('?').next().unwrap().to_string();
                        match events.get_mut(&path).and_then(|e| e.pop()) {
                            Some(batch) => reply(send, batch),
                            None if !watches.contains_key(&path) => { watches.entry(path).or_default().push(send); }
                            None => idle.push(send),
                        }
                        continue;
                    }
                    let (status, answer) = answer(&method, &uri, &body);
                    send.send_response(Response::builder().status(status).body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap());
                }
                Some((path, batch)) = deliveries.recv() => {
                    match watches.get_mut(path).and_then(|w| w.pop()) {
                        Some(send) => reply(send, batch),
                        None => events.entry(path.to_string()).or_default().insert(0, batch),
                    }
                }
            }
        }
    });
    (Client::new(service, "default"), seen, deliver)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test]
async fn with_watch_caches_a_pass_lists_nothing_and_a_claim_it_created_is_not_created_again_before_the_watch_delivers_it() {
    let created: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
    let record = created.clone();
    let (client, seen, deliver) = watch_server(move |method, uri, body| match (method.as_str(), uri) {
        ("GET", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodepools") => list("NodePool", "nodewright.io/v1alpha1", vec![node_pool_object()]),
        ("GET", u) if u.starts_with("/apis/apps/v1/daemonsets") => list("DaemonSet", "apps/v1", vec![]),
        ("GET", u) if u.starts_with("/apis/policy/v1/poddisruptionbudgets") => list("PodDisruptionBudget", "policy/v1", vec![]),
        ("GET", u) if u.starts_with("/api/v1/pods") => list("Pod", "v1", vec![]),
        ("GET", u) if u.starts_with("/api/v1/nodes") => list("Node", "v1", vec![]),
        ("GET", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims") => list("NodeClaim", "nodewright.io/v1alpha1", vec![]),
        ("POST", "/apis/nodewright.io/v1alpha1/nodeclaims?") => {
            let mut claim = body.clone();
            claim["metadata"]["resourceVersion"] = json!("3");
            *record.lock().unwrap() = Some(claim.clone());
            (201, claim)
        }
        ("PATCH", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims/") && u.contains("/status") => {
            let mut claim = record.lock().unwrap().clone().expect("patched after created");
            claim["status"] = body["status"].clone();
            claim["metadata"]["resourceVersion"] = json!("4");
            *record.lock().unwrap() = Some(claim.clone());
            (200, claim)
        }
        ("PATCH", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims/") => {
            let mut claim = record.lock().unwrap().clone().expect("annotated after created");
            claim["metadata"]["annotations"] = body["metadata"]["annotations"].clone();
            claim["metadata"]["resourceVersion"] = json!("5");
            *record.lock().unwrap() = Some(claim.clone());
            (200, claim)
        }
        ("POST", u) if u.ends_with("/events?") => (201, body.clone()),
        _ => unexpected(method.as_str(), uri),
    });
    let catalog = catalog();
    let cache = nodewright_kube::cache::KubeCache::start(&client);
    tokio::time::timeout(Duration::from_secs(5), cache.wait_until_ready()).await.expect("every kind listed");
    let cluster = Arc::new(KubeCluster::new(client, "nodewright", Arc::new({
        let catalog = catalog.clone();
        move || catalog.clone()
    })).with_cache(cache));
    let cloud = Arc::new(SimulatedCloud::new(catalog, SimulatedCloudConfig::default(), Arc::new(|| Duration::ZERO)));
    let (runtime, _cache) = common::runtime();
    let provisioner = Provisioner::new(cloud, cluster.clone(), Arc::new(PolicyRegistry::new(runtime)));
    let lists = |seen: &Arc<Mutex<Vec<Seen>>>| seen.lock().unwrap().iter().filter(|s| s.method == Method::GET && !s.uri.contains("watch=true")).count();
    assert_eq!(lists(&seen), 6, "one list per kind");

    // The pending pod arrives by a watch event, not a list.
    let mut pod = pending_pod();
    pod["metadata"]["resourceVersion"] = json!("2");
    deliver.send(("/api/v1/pods", vec![json!({ "type": "ADDED", "object": pod })])).unwrap();
    eventually("the pod reaching the cache", || cluster.cache().unwrap().pods.state().len() == 1).await;
    let before = cluster.revision().expect("a cluster with watch caches has a change counter");
    let report = provisioner.provision().await.unwrap();
    assert_eq!(report.launched.len(), 1, "{report:?}");
    assert_eq!(cluster.revision(), None, "the controller's own writes are laid over the cache: no counter to trust");
    let writes = |seen: &Arc<Mutex<Vec<Seen>>>| seen.lock().unwrap().iter().filter(|s| s.method != Method::GET && !s.uri.ends_with("/events?")).map(|s| s.method.to_string()).collect::<Vec<_>>();
    assert_eq!(writes(&seen), ["POST", "PATCH", "PATCH"], "created, its launch, its decision");

    // The watch has not delivered the claim: the pod still looks pending in
    // the cache, but the claim the controller wrote holds it.
    assert!(cluster.cache().unwrap().node_claims.state().is_empty());
    assert_eq!(cluster.pending_pods().await.unwrap().len(), 1);
    assert_eq!(cluster.node_claims().await.unwrap().len(), 1);
    let report = provisioner.provision().await.unwrap();
    assert!(report.launched.is_empty(), "{report:?}");
    assert_eq!(writes(&seen), ["POST", "PATCH", "PATCH"], "no second claim");

    // The watch catches up; the cache is read as it is.
    let claim = created.lock().unwrap().clone().unwrap();
    deliver.send(("/apis/nodewright.io/v1alpha1/nodeclaims", vec![json!({ "type": "ADDED", "object": claim })])).unwrap();
    eventually("the claim reaching the cache", || cluster.cache().unwrap().node_claims.state().len() == 1).await;
    let claims = cluster.node_claims().await.unwrap();
    assert_eq!(claims.len(), 1);
    assert!(claims[0].instance.is_some(), "the cached copy has the launch status");
    let after = cluster.revision().expect("the watch has caught up with the writes");
    assert!(after > before, "{before} → {after}: the claim's watch event counts as a change");
    assert!(provisioner.provision().await.unwrap().launched.is_empty());
    assert_eq!(lists(&seen), 6, "no pass listed anything");
}

/// A loopback web server for components: `/plugin.wasm` serves `bytes`,
/// `/latest` redirects there, `/slow` answers after 30 s, anything else is
/// a 404. Returns its base URL.
async fn component_server(bytes: Vec<u8>) -> String {
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/plugin.wasm", get(move || async move { bytes.clone() }))
        .route("/latest", get(|| async { Redirect::temporary("/plugin.wasm") }))
        .route("/slow", get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late".into_response()
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn a_policy_plugin_fetched_by_url_is_verified_and_loaded_and_a_failed_fetch_is_rejected_with_the_url() {
    let bytes = std::fs::read(common::component("cheapest")).unwrap();
    let digest = sha256(&bytes);
    let base = component_server(bytes.clone()).await;
    let (registry, _cache) = registry_serving_old_version();
    let serving = || registry.slots()[0].active_plugin().unwrap().info().digest.clone();
    let before = serving();
    let pool = NodePool::new("default").selection("team-cheapest", "{}");
    let reconcile = |source: Value| {
        let registry = registry.clone();
        let pool = pool.clone();
        async move {
            let (client, seen) = plugin_server_with(policy_plugin_from(source), Vec::new());
            let catalog = catalog();
            let cluster = KubeCluster::new(client, "nodewright", Arc::new(move || catalog.clone())).with_fetch_timeout(Duration::from_millis(500));
            let outcomes = PolicyPluginController::new(Arc::new(cluster), registry).reconcile_for(&[pool]).await.unwrap();
            let patches: Vec<Value> = seen.lock().unwrap().iter().filter(|s| s.method == Method::PATCH).map(|s| s.body["status"].clone()).collect();
            (outcomes, patches)
        }
    };
    let rejected = |reason: &str, message: String| vec![PluginOutcome::Rejected { plugin: "team-cheapest".into(), reason: reason.into(), message }];

    // A 404, a server too slow for the deadline, a scheme that is not HTTP,
    // and both sources at once: rejected, saying why, old version serving.
    let url = format!("{base}/missing");
    let (outcomes, patches) = reconcile(json!({ "url": url, "sha256": digest })).await;
    assert_eq!(outcomes, rejected("FetchFailed", format!("spec.source.url `{url}`: GET {url}: HTTP 404 Not Found")));
    assert_eq!(patches[0]["conditions"][0]["reason"], "FetchFailed");
    assert_eq!(patches[0]["conditions"][0]["status"], "True");
    let url = format!("{base}/slow");
    let (outcomes, _) = reconcile(json!({ "url": url, "sha256": digest })).await;
    assert_eq!(outcomes, rejected("FetchFailed", format!("spec.source.url `{url}`: no complete answer within 0.5 s")));
    let (outcomes, _) = reconcile(json!({ "url": "file:///etc/passwd", "sha256": digest })).await;
    assert_eq!(outcomes, rejected("FetchFailed", "spec.source.url `file:///etc/passwd`: scheme `file` is not http or https".into()));
    let (outcomes, _) = reconcile(json!({ "url": format!("{base}/plugin.wasm"), "configMap": { "name": "team-cheapest" }, "sha256": digest })).await;
    assert_eq!(outcomes, rejected("FetchFailed", "spec.source: configMap and url are both set; set one".into()));
    assert_eq!(serving(), before);

    // Served through a redirect with the right digest: loaded and reported.
    let (outcomes, patches) = reconcile(json!({ "url": format!("{base}/latest"), "sha256": digest })).await;
    assert_eq!(outcomes, vec![PluginOutcome::Loaded { plugin: "team-cheapest".into(), digest: digest.clone(), slots: vec!["default/selection".into()] }]);
    assert_eq!(serving(), format!("sha256:{digest}"));
    assert_eq!(patches[0]["loadedDigest"], digest);
}

/// An API server holding one Lease, with optimistic concurrency.
fn lease_server() -> Client {
    let store: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
    let (client, _seen) = api_server(move |method, uri, body| {
        let mut lease = store.lock().unwrap();
        let path = "/apis/coordination.k8s.io/v1/namespaces/nodewright/leases";
        match method.as_str() {
            "GET" if uri.starts_with(&format!("{path}/leader")) => match lease.as_ref() {
                Some(l) => (200, l.clone()),
                None => status(404, "NotFound", "leases \"leader\" not found"),
            },
            "POST" if uri.starts_with(path) => {
                if lease.is_some() {
                    return status(409, "AlreadyExists", "exists");
                }
                let mut l = body.clone();
                l["metadata"]["resourceVersion"] = json!("1");
                *lease = Some(l.clone());
                (201, l)
            }
            "PUT" if uri.starts_with(&format!("{path}/leader")) => {
                let current = lease.as_ref().map(|l| l["metadata"]["resourceVersion"].as_str().unwrap().to_string());
                if body["metadata"]["resourceVersion"].as_str().map(String::from) != current {
                    return status(409, "Conflict", "the object has been modified");
                }
                let next: u64 = current.unwrap().parse::<u64>().unwrap() + 1;
                let mut l = body.clone();
                l["metadata"]["resourceVersion"] = json!(next.to_string());
                *lease = Some(l.clone());
                (200, l)
            }
            _ => unexpected(method.as_str(), uri),
        }
    });
    client
}

#[tokio::test]
async fn leadership_passes_to_the_standby_when_the_leader_stops_renewing_and_back_after_release() {
    let client = lease_server();
    let clock = Arc::new(Mutex::new(k8s_openapi::jiff::Timestamp::from_second(1_767_571_200).unwrap()));
    let elector = |identity: &str| {
        let clock = clock.clone();
        LeaderElector::new(client.clone(), "nodewright", "leader", identity, Duration::from_secs(15)).with_clock(move || *clock.lock().unwrap())
    };
    let advance = |seconds: i64| {
        let mut now = clock.lock().unwrap();
        *now = now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds)).unwrap();
    };
    let (a, b) = (elector("replica-a"), elector("replica-b"));
    assert!(a.try_acquire_or_renew().await.unwrap(), "a takes the free lease");
    assert!(!b.try_acquire_or_renew().await.unwrap(), "b waits while a renews");
    advance(10);
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
    advance(10);
    assert!(!b.try_acquire_or_renew().await.unwrap(), "renewed 10 s ago: still a's");
    // a stops renewing (it hangs or dies).
    advance(16);
    assert!(b.try_acquire_or_renew().await.unwrap(), "b takes over the expired lease");
    assert!(!a.try_acquire_or_renew().await.unwrap(), "a finds b holding it and stands by");
    b.release().await.unwrap();
    assert!(a.try_acquire_or_renew().await.unwrap(), "after b's release a takes it at once");
    let _ = HashMap::<(), ()>::new();
}

#[tokio::test]
async fn a_nodeclaim_with_a_deletion_timestamp_reads_as_being_deleted() {
    let claim = |name: &str, deleting: bool| {
        let mut claim = json!({ "apiVersion": "nodewright.io/v1alpha1", "kind": "NodeClaim",
            "metadata": { "name": name, "finalizers": ["nodewright.io/termination"] },
            "spec": { "nodePool": "default", "offerings": [], "cpuMillis": 0, "memoryBytes": 0 } });
        if deleting {
            claim["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
        }
        claim
    };
    let items = vec![claim("default-bcdfg", true), claim("default-hjklm", false)];
    let (client, _seen) = api_server(move |method, uri, _| match (method.as_str(), uri) {
        ("GET", u) if u.starts_with("/apis/nodewright.io/v1alpha1/nodeclaims") => list("NodeClaim", "nodewright.io/v1alpha1", items.clone()),
        _ => unexpected(method.as_str(), uri),
    });
    let cluster = kube_cluster(client, catalog());
    let claims = cluster.node_claims().await.unwrap();
    let deleting: Vec<(&str, bool)> = claims.iter().map(|c| (c.name.as_str(), c.deleting)).collect();
    assert_eq!(deleting, vec![("default-bcdfg", true), ("default-hjklm", false)]);
}
