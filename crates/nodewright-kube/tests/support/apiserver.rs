//! A stateful in-memory Kubernetes API server for tests, served to a real
//! `kube::Client` (as its tower service, through an axum router):
//! - objects of any kind as JSON, by collection path, namespace and name,
//!   with `resourceVersion`, `uid`, `creationTimestamp` and `generateName`;
//! - list with label and field selectors (`=`, `==`, `!=`, and label
//!   existence), get, create (409 AlreadyExists), replace and JSON merge
//!   patch (409 Conflict when the request names a stale
//!   `resourceVersion`), status subresource patches;
//! - delete with finalizers: a `deletionTimestamp` first, the object goes
//!   when a write removes its last finalizer; once an object is gone, the
//!   garbage collector deletes the objects whose `ownerReferences` name it;
//! - the Eviction subresource, refused with 429 while a
//!   PodDisruptionBudget selecting the pod allows no disruption
//!   (`status.disruptionsAllowed`, counted down by each eviction);
//! - watch (`?watch=true`) from a resourceVersion, with an event for every
//!   write.
//!
//! A request it does not understand is answered 400 and recorded in
//! `unexpected`, which tests assert empty.
//!
//! Shared by several test crates, each using part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body as AxumBody;
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

/// (collection path such as `/api/v1/pods`, namespace or "", name)
type Key = (String, String, String);

/// A write, as a watch sees it.
#[derive(Clone, Debug)]
struct Event {
    version: u64,
    collection: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    version: u64,
    uids: u64,
    events: Vec<Event>,
    unexpected: Vec<String>,
    /// Evictions: (`namespace/name`, accepted).
    evictions: Vec<(String, bool)>,
    /// Requests answered with an error instead: (method, path fragment,
    /// status code, times left).
    faults: Vec<(Method, String, u16, usize)>,
}

/// The server; clones share it.
#[derive(Clone)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    notify: tokio::sync::broadcast::Sender<Event>,
}

/// Where objects of `kind` live: (collection path, namespaced).
pub fn collection(kind: &str) -> (&'static str, bool) {
    match kind {
        "Pod" => ("/api/v1/pods", true),
        "Node" => ("/api/v1/nodes", false),
        "Event" => ("/api/v1/events", true),
        "ConfigMap" => ("/api/v1/configmaps", true),
        "DaemonSet" => ("/apis/apps/v1/daemonsets", true),
        "PodDisruptionBudget" => ("/apis/policy/v1/poddisruptionbudgets", true),
        "Lease" => ("/apis/coordination.k8s.io/v1/leases", true),
        "NodePool" => ("/apis/nodewright.io/v1alpha1/nodepools", false),
        "NodeClaim" => ("/apis/nodewright.io/v1alpha1/nodeclaims", false),
        "EC2NodeClass" => ("/apis/nodewright.io/v1alpha1/ec2nodeclasses", false),
        "PolicyPlugin" => ("/apis/nodewright.io/v1alpha1/policyplugins", true),
        other => panic!("the test API server does not know kind {other}"),
    }
}

/// A parsed request path.
struct Target {
    collection: String,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match *parts.first()? {
        "api" if parts.len() >= 2 => (format!("/api/{}", parts[1]), &parts[2..]),
        "apis" if parts.len() >= 3 => (format!("/apis/{}/{}", parts[1], parts[2]), &parts[3..]),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
        _ => (String::new(), rest),
    };
    let (plural, rest) = rest.split_first()?;
    Some(Target {
        collection: format!("{prefix}/{plural}"),
        namespace,
        name: rest.first().map(|s| s.to_string()),
        subresource: rest.get(1).map(|s| s.to_string()),
    })
}

fn query(uri: &http::Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The value at dotted `path` as a selector compares it ("" when absent).
fn field(object: &Value, path: &str) -> String {
    let mut v = object;
    for part in path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Does `object` pass `selector` (comma-separated `a=b`, `a==b`, `a!=b`;
/// with `labels`, also `a` and `!a`), reading values with `get`?
fn selects(selector: &str, get: impl Fn(&str) -> Option<String>) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            get(k.trim()).unwrap_or_default() != v.trim()
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            get(k.trim()).unwrap_or_default() == v.trim()
        } else if let Some(k) = term.strip_prefix('!') {
            get(k.trim()).is_none()
        } else {
            get(term.trim()).is_some()
        }
    })
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let map = target.as_object_mut().expect("an object");
            for (k, v) in fields {
                if v.is_null() {
                    map.remove(k);
                } else {
                    merge(map.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (code, json!({ "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": code, "reason": reason, "message": message }))
}

/// Now as RFC 3339 (UTC, seconds).
fn now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

impl ApiServer {
    /// A server with no objects, and a client of it.
    pub fn start() -> (kube::Client, ApiServer) {
        let (notify, _) = tokio::sync::broadcast::channel(4096);
        let server = ApiServer { state: Arc::default(), notify };
        (server.client(), server)
    }

    /// Another client of this server.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.router(), "default")
    }

    /// The server as a router (to serve it on a port).
    pub fn router(&self) -> axum::Router {
        let handler = self.clone();
        axum::Router::new().fallback(move |request: Request<AxumBody>| {
            let server = handler.clone();
            async move { server.serve(request).await }
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store `object` as a create would (its kind says where).
    pub fn put(&self, object: Value) -> Value {
        let kind = object["kind"].as_str().expect("an object with a kind").to_string();
        let (collection, namespaced) = match (object["apiVersion"].as_str(), kind.as_str()) {
            // Karpenter's own node class, beside nodewright's.
            (Some("karpenter.k8s.aws/v1"), "EC2NodeClass") => ("/apis/karpenter.k8s.aws/v1/ec2nodeclasses", false),
            _ => collection(&kind),
        };
        let namespace = if namespaced { object["metadata"]["namespace"].as_str().unwrap_or("default").to_string() } else { String::new() };
        let (code, reply) = self.create(collection, &namespace, object);
        assert_eq!(code, 201, "{reply}");
        reply
    }

    /// The object of `kind` named `name` (in `namespace` if namespaced).
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let (collection, namespaced) = collection(kind);
        let ns = if namespaced { namespace } else { "" };
        self.state().objects.get(&(collection.to_string(), ns.to_string(), name.to_string())).cloned()
    }

    /// The cluster-scoped object named `name` in collection `collection`
    /// (`/apis/GROUP/VERSION/PLURAL`), for kinds of another group than `get` knows.
    pub fn get_in(&self, collection: &str, name: &str) -> Option<Value> {
        self.state().objects.get(&(collection.to_string(), String::new(), name.to_string())).cloned()
    }

    /// Every object of `kind`.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let (collection, _) = collection(kind);
        self.state().objects.iter().filter(|((c, _, _), _)| c == collection).map(|(_, v)| v.clone()).collect()
    }

    /// Delete as `kubectl delete` does (finalizers honoured).
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> u16 {
        let (collection, namespaced) = collection(kind);
        let ns = if namespaced { namespace } else { "" };
        self.remove(collection, ns, name).0
    }

    /// Merge `patch` into an object, its status included (what the
    /// kubelet and the scheduler write).
    pub fn patch(&self, kind: &str, namespace: &str, name: &str, patch: &Value) -> u16 {
        let (collection, namespaced) = collection(kind);
        let ns = if namespaced { namespace } else { "" };
        let code = self.update(collection, ns, name, patch, true, true).0;
        if code == 200 {
            let mut rest = patch.clone();
            if let Some(p) = rest.as_object_mut() {
                p.remove("status");
            }
            return self.update(collection, ns, name, &rest, false, true).0;
        }
        code
    }

    /// Answer the next `times` requests of `method` whose path contains
    /// `fragment` with `code` (an Internal error, say), changing nothing.
    pub fn fail(&self, method: Method, fragment: &str, code: u16, times: usize) {
        self.state().faults.push((method, fragment.to_string(), code, times));
    }

    /// Evictions asked for: (`namespace/name`, accepted), in order.
    pub fn evictions(&self) -> Vec<(String, bool)> {
        self.state().evictions.clone()
    }

    /// Requests it could not serve.
    pub fn unexpected(&self) -> Vec<String> {
        self.state().unexpected.clone()
    }

    fn record(&self, state: &mut State, kind: &'static str, collection: &str, namespace: &str, object: &Value) {
        let event = Event { version: state.version, collection: collection.to_string(), namespace: namespace.to_string(), kind, object: object.clone() };
        state.events.push(event.clone());
        let _ = self.notify.send(event);
    }

    fn create(&self, collection: &str, namespace: &str, mut object: Value) -> (u16, Value) {
        let mut state = self.state();
        let meta = object["metadata"].as_object().cloned().unwrap_or_default();
        let name = match (meta.get("name").and_then(Value::as_str), meta.get("generateName").and_then(Value::as_str)) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(prefix)) => format!("{prefix}{:05x}", state.uids.wrapping_mul(2_654_435_761) % 0xfffff),
            _ => return status(422, "Invalid", "metadata.name: Required value"),
        };
        let key = (collection.to_string(), namespace.to_string(), name.clone());
        if state.objects.contains_key(&key) {
            let plural = collection.rsplit('/').next().unwrap_or_default();
            return status(409, "AlreadyExists", &format!("{plural} \"{name}\" already exists"));
        }
        state.version += 1;
        state.uids += 1;
        let meta = object["metadata"].as_object_mut().expect("metadata");
        meta.insert("name".into(), json!(name));
        if !namespace.is_empty() {
            meta.insert("namespace".into(), json!(namespace));
        }
        meta.insert("resourceVersion".into(), json!(state.version.to_string()));
        meta.insert("uid".into(), json!(format!("uid-{}", state.uids)));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.remove("deletionTimestamp");
        state.objects.insert(key, object.clone());
        self.record(&mut state, "ADDED", collection, namespace, &object);
        (201, object)
    }

    /// Merge `patch` (or, with `replace`, put `patch` in place) into the
    /// object; `status_only` takes only its status.
    fn update(&self, collection: &str, namespace: &str, name: &str, patch: &Value, status_only: bool, merge_patch: bool) -> (u16, Value) {
        let mut state = self.state();
        let key = (collection.to_string(), namespace.to_string(), name.to_string());
        let Some(current) = state.objects.get(&key).cloned() else {
            return status(404, "NotFound", &format!("\"{name}\" not found"));
        };
        let stored = current["metadata"]["resourceVersion"].clone();
        if let Some(asked) = patch["metadata"]["resourceVersion"].as_str()
            && Some(asked) != stored.as_str()
        {
            return status(409, "Conflict", &format!("Operation cannot be fulfilled on \"{name}\": the object has been modified; please apply your changes to the latest version and try again"));
        }
        let mut object = current.clone();
        if status_only {
            // A status write without a status changes none of it.
            if let Some(status) = patch.get("status") {
                merge(&mut object["status"], status);
            }
        } else if merge_patch {
            let mut patch = patch.clone();
            if let Some(p) = patch.as_object_mut() {
                p.remove("status");
            }
            merge(&mut object, &patch);
        } else {
            object = patch.clone();
            object["status"] = current["status"].clone();
        }
        // What the server owns stays.
        for k in ["uid", "creationTimestamp", "deletionTimestamp", "name", "namespace"] {
            match current["metadata"].get(k) {
                Some(v) => object["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = object["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        let finalizers_left = object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if object["metadata"].get("deletionTimestamp").is_some() && !finalizers_left {
            self.gone(state, &key, &object);
        } else {
            state.objects.insert(key, object.clone());
            self.record(&mut state, "MODIFIED", collection, namespace, &object);
        }
        (200, object)
    }

    /// `object`, at `key`, is gone: removed, its watchers told, then what
    /// it owned collected (with the lock released).
    fn gone(&self, mut state: std::sync::MutexGuard<'_, State>, key: &Key, object: &Value) {
        state.objects.remove(key);
        self.record(&mut state, "DELETED", &key.0, &key.1, object);
        drop(state);
        self.collect_garbage(object);
    }

    /// The garbage collector, after `owner` is gone (background
    /// propagation, `kubectl delete`'s default): every object whose
    /// `ownerReferences` name its uid is deleted in turn (finalizers
    /// honoured, its own dependents after it).
    fn collect_garbage(&self, owner: &Value) {
        let Some(uid) = owner["metadata"]["uid"].as_str() else { return };
        let dependents: Vec<(String, String, String)> = self
            .state()
            .objects
            .iter()
            .filter(|(_, object)| {
                object["metadata"]["ownerReferences"].as_array().is_some_and(|owners| owners.iter().any(|o| o["uid"].as_str() == Some(uid)))
            })
            .map(|(key, _)| key.clone())
            .collect();
        for (collection, namespace, name) in dependents {
            self.remove(&collection, &namespace, &name);
        }
    }

    fn remove(&self, collection: &str, namespace: &str, name: &str) -> (u16, Value) {
        let mut state = self.state();
        let key = (collection.to_string(), namespace.to_string(), name.to_string());
        let Some(mut object) = state.objects.get(&key).cloned() else {
            return status(404, "NotFound", &format!("\"{name}\" not found"));
        };
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        let finalizers = object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if finalizers {
            if object["metadata"].get("deletionTimestamp").is_none() {
                object["metadata"]["deletionTimestamp"] = json!(now());
            }
            state.objects.insert(key, object.clone());
            self.record(&mut state, "MODIFIED", collection, namespace, &object);
        } else {
            self.gone(state, &key, &object);
        }
        (200, object)
    }

    fn evict(&self, namespace: &str, name: &str) -> (u16, Value) {
        let pod = {
            let state = self.state();
            state.objects.get(&("/api/v1/pods".to_string(), namespace.to_string(), name.to_string())).cloned()
        };
        let Some(pod) = pod else { return status(404, "NotFound", &format!("pods \"{name}\" not found")) };
        let labels = pod["metadata"]["labels"].clone();
        let budgets: Vec<(String, i64)> = {
            let state = self.state();
            state
                .objects
                .iter()
                .filter(|((c, ns, _), _)| c == "/apis/policy/v1/poddisruptionbudgets" && ns == namespace)
                .filter(|(_, pdb)| {
                    pdb["spec"]["selector"]["matchLabels"]
                        .as_object()
                        .is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
                })
                .map(|((_, _, n), pdb)| (n.clone(), pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0)))
                .collect()
        };
        let refused = budgets.iter().find(|(_, allowed)| *allowed <= 0);
        self.state().evictions.push((format!("{namespace}/{name}"), refused.is_none()));
        if let Some((budget, _)) = refused {
            return status(429, "TooManyRequests", &format!("Cannot evict pod as it would violate the pod's disruption budget {budget}."));
        }
        for (budget, allowed) in budgets {
            let patch = json!({ "status": { "disruptionsAllowed": allowed - 1 } });
            self.update("/apis/policy/v1/poddisruptionbudgets", namespace, &budget, &patch, true, true);
        }
        self.remove("/api/v1/pods", namespace, name);
        (201, json!({ "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success", "code": 201 }))
    }

    fn list_of(&self, target: &Target, params: &BTreeMap<String, String>) -> (u16, Value) {
        let state = self.state();
        let labels = params.get("labelSelector").cloned().unwrap_or_default();
        let fields = params.get("fieldSelector").cloned().unwrap_or_default();
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|((c, ns, _), _)| *c == target.collection && (target.namespace.is_empty() || *ns == target.namespace))
            .map(|(_, o)| o)
            .filter(|o| selects(&fields, |k| Some(field(o, k))))
            .filter(|o| selects(&labels, |k| o["metadata"]["labels"].get(k).and_then(Value::as_str).map(String::from)))
            .cloned()
            .collect();
        (200, json!({ "apiVersion": "v1", "kind": "List", "metadata": { "resourceVersion": state.version.to_string() }, "items": items }))
    }

    async fn serve(&self, request: Request<AxumBody>) -> Response<AxumBody> {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let params = query(&uri);
        let bytes = axum::body::to_bytes(request.into_body(), 64 << 20).await.unwrap_or_default();
        let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        let fault = {
            let mut state = self.state();
            let hit = state.faults.iter_mut().find(|f| f.0 == method && uri.path().contains(&f.1) && f.3 > 0);
            hit.map(|f| {
                f.3 -= 1;
                f.2
            })
        };
        if let Some(code) = fault {
            let (code, reply) = status(code, "InternalError", &format!("injected failure of {method} {}", uri.path()));
            return Response::builder().status(code).body(AxumBody::from(serde_json::to_vec(&reply).unwrap_or_default())).expect("a response");
        }
        let Some(target) = parse_path(uri.path()) else {
            return self.refuse(&method, &uri);
        };
        if method == Method::GET && params.get("watch").is_some_and(|w| w == "true" || w == "1") {
            return self.watch(&target, &params);
        }
        let (code, reply) = match (&method, target.name.as_deref(), target.subresource.as_deref()) {
            (&Method::GET, None, None) => self.list_of(&target, &params),
            (&Method::GET, Some(name), None) => {
                match self.state().objects.get(&(target.collection.clone(), target.namespace.clone(), name.to_string())).cloned() {
                    Some(o) => (200, o),
                    None => status(404, "NotFound", &format!("\"{name}\" not found")),
                }
            }
            (&Method::POST, None, None) => self.create(&target.collection, &target.namespace, body),
            (&Method::POST, Some(name), Some("eviction")) if target.collection == "/api/v1/pods" => self.evict(&target.namespace, name),
            (&Method::PUT, Some(name), None) => self.update(&target.collection, &target.namespace, name, &body, false, false),
            (&Method::PATCH, Some(name), None) => self.update(&target.collection, &target.namespace, name, &body, false, true),
            (&Method::PATCH, Some(name), Some("status")) => self.update(&target.collection, &target.namespace, name, &body, true, true),
            (&Method::DELETE, Some(name), None) => self.remove(&target.collection, &target.namespace, name),
            _ => return self.refuse(&method, &uri),
        };
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header("content-type", "application/json")
            .body(AxumBody::from(serde_json::to_vec(&reply).unwrap_or_default()))
            .expect("a response")
    }

    fn refuse(&self, method: &Method, uri: &http::Uri) -> Response<AxumBody> {
        self.state().unexpected.push(format!("{method} {uri}"));
        let (code, reply) = status(400, "BadRequest", &format!("the test API server does not serve {method} {uri}"));
        Response::builder().status(code).body(AxumBody::from(serde_json::to_vec(&reply).unwrap_or_default())).expect("a response")
    }

    /// Events after the request's resourceVersion, then every new one.
    fn watch(&self, target: &Target, params: &BTreeMap<String, String>) -> Response<AxumBody> {
        let since: u64 = params.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let (collection, namespace) = (target.collection.clone(), target.namespace.clone());
        let fields = params.get("fieldSelector").cloned().unwrap_or_default();
        // Under the lock writes record under: each event is in the backlog
        // or reaches the receiver, never both.
        let (backlog, receiver) = {
            let state = self.state();
            (state.events.iter().filter(|e| e.version > since).cloned().collect::<Vec<Event>>(), self.notify.subscribe())
        };
        let wanted = move |e: &Event| {
            e.collection == collection && (namespace.is_empty() || e.namespace == namespace) && selects(&fields, |k| Some(field(&e.object, k)))
        };
        let line = |e: &Event| bytes::Bytes::from(format!("{}\n", json!({ "type": e.kind, "object": e.object })));
        let earlier: Vec<Result<bytes::Bytes, std::convert::Infallible>> = backlog.iter().filter(|e| wanted(e)).map(|e| Ok(line(e))).collect();
        let live = futures::stream::unfold((receiver, wanted), move |(mut receiver, wanted)| async move {
            loop {
                match receiver.recv().await {
                    Ok(e) if wanted(&e) => return Some((Ok(line(&e)), (receiver, wanted))),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        let stream = futures::StreamExt::chain(futures::stream::iter(earlier), live);
        Response::builder().status(200).header("content-type", "application/json").body(AxumBody::from_stream(stream)).expect("a response")
    }
}
