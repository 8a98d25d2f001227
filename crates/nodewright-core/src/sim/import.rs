//! `trace import`: a real cluster's workload into a version 2 trace.
//!
//! Two kinds of input, freely mixed:
//! - snapshots, `kubectl get pods,pdb,daemonsets -A -o json` (a `List`, or
//!   one object), taken over time: an object first seen in a snapshot was
//!   created at its `creationTimestamp`; one gone from the next snapshot
//!   ended when that snapshot was taken. A snapshot was taken at the time
//!   given with it, or else at the newest `creationTimestamp` it holds;
//! - Kubernetes audit logs (JSON Lines of `audit.k8s.io/v1` events):
//!   `create` and `delete` of pods, PodDisruptionBudgets and DaemonSets
//!   that completed, at their `stageTimestamp`, the object read from the
//!   response (or the request) body (audit level `RequestResponse` or
//!   `Request`).
//!
//! The trace starts at the first snapshot (or the first event): what ran
//! before it is there at `t = 0`. Pods are stripped to what scheduling
//! reads; pods of DaemonSets (the DaemonSet is imported instead), mirror
//! pods and pods already finished are left out. `anonymize` hashes names
//! and label values (well-known topology and instance keys excepted)
//! consistently, so selectors still select the same pods.
//!
//! Bad input never stops an import: an object that cannot be read, a
//! kind that is not imported, a truncated file each get a note naming the
//! file and the object, and the rest is imported.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec, ResourceRequirements};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::kube_trace::EventLine;
use super::trace::{Header, KUBE_TRACE_VERSION, MAX_TRACE_SECONDS};
use crate::model::k8s::{KARPENTER_DO_NOT_DISRUPT, POD_DELETION_COST, full_name};
use crate::model::well_known;

/// One input of an import.
#[derive(Debug, Clone)]
pub struct Input {
    /// Its file name (for notes).
    pub file: String,
    /// Its text.
    pub text: String,
    /// When a snapshot was taken, if known.
    pub taken_at: Option<Timestamp>,
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The trace's name.
    pub name: String,
    /// Its length when the inputs do not span one (a single snapshot).
    pub duration_s: f64,
    /// Hash names and label values.
    pub anonymize: bool,
    /// Annotations kept besides do-not-disrupt and pod-deletion-cost (those
    /// a NodePool's `spec.policy.podAnnotations` names).
    pub keep_annotations: BTreeSet<String>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions { name: "imported".into(), duration_s: 86_400.0, anonymize: false, keep_annotations: BTreeSet::new() }
    }
}

/// What an import made.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// The version 2 trace, JSON Lines.
    pub text: String,
    /// Pods, PodDisruptionBudgets and DaemonSets in it.
    pub pods: usize,
    /// PodDisruptionBudgets.
    pub pdbs: usize,
    /// DaemonSets.
    pub daemonsets: usize,
    /// What was left out or changed, each naming the file and object.
    pub notes: Vec<String>,
}

/// An object of a kind the trace carries, stripped.
#[derive(Debug, Clone)]
enum Object {
    Pod(Box<Pod>),
    Pdb(Box<PodDisruptionBudget>),
    DaemonSet(Box<DaemonSet>),
}

impl Object {
    fn key(&self) -> (&'static str, String) {
        match self {
            Object::Pod(p) => ("Pod", full_name(&p.metadata)),
            Object::Pdb(p) => ("PodDisruptionBudget", full_name(&p.metadata)),
            Object::DaemonSet(d) => ("DaemonSet", full_name(&d.metadata)),
        }
    }

    fn created(&self) -> Option<Timestamp> {
        let meta = match self {
            Object::Pod(p) => &p.metadata,
            Object::Pdb(p) => &p.metadata,
            Object::DaemonSet(d) => &d.metadata,
        };
        meta.creation_timestamp.as_ref().map(|t| t.0)
    }
}

/// A change at an instant.
enum Change {
    Create(Object),
    Delete(&'static str, String),
}

/// Import `inputs` into a version 2 trace.
pub fn import(inputs: &[Input], options: &ImportOptions) -> Result<Imported, String> {
    if !(options.duration_s.is_finite() && options.duration_s > 0.0 && options.duration_s <= MAX_TRACE_SECONDS) {
        return Err(format!("duration {} s must be positive and at most {MAX_TRACE_SECONDS} s (366 days)", options.duration_s));
    }
    let mut notes = Vec::new();
    // (time, order of arrival, change); snapshot times.
    let mut changes: Vec<(Timestamp, usize, Change)> = Vec::new();
    let mut snapshots: Vec<Timestamp> = Vec::new();
    let mut live: HashMap<(&'static str, String), ()> = HashMap::new();
    for input in inputs {
        if looks_like_audit_log(&input.text) {
            audit_log(input, options, &mut changes, &mut notes);
            continue;
        }
        let items = snapshot_items(input, &mut notes);
        let objects: Vec<Object> = items.into_iter().enumerate().filter_map(|(i, v)| object(&input.file, i, v, options, &mut notes)).collect();
        if objects.is_empty() && input.taken_at.is_none() {
            continue;
        }
        let newest = objects.iter().filter_map(Object::created).max();
        let previous = snapshots.last().copied();
        let Some(at) = input.taken_at.or(newest).or(previous) else {
            notes.push(format!("{}: no object says when it was created and no time was given; skipped", input.file));
            continue;
        };
        let at = previous.map_or(at, |p| at.max(p));
        let present: BTreeSet<(&'static str, String)> = objects.iter().map(Object::key).collect();
        for key in live.keys().filter(|k| !present.contains(*k)).cloned().collect::<Vec<_>>() {
            live.remove(&key);
            changes.push((at, changes.len(), Change::Delete(key.0, key.1)));
        }
        for object in objects {
            let key = object.key();
            if live.insert(key, ()).is_none() {
                // Seen first now: created after the previous snapshot at the earliest.
                let created = object.created().unwrap_or(at).min(at);
                let created = previous.map_or(created, |p| created.max(p));
                changes.push((created, changes.len(), Change::Create(object)));
            }
        }
        snapshots.push(at);
    }
    changes.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let Some(first_change) = changes.first().map(|c| c.0) else {
        return Err(if notes.is_empty() { "nothing to import".into() } else { format!("nothing to import:\n  {}", notes.join("\n  ")) });
    };
    let start = snapshots.first().copied().unwrap_or(first_change);
    let end = changes.iter().map(|c| c.0).chain(snapshots.iter().copied()).max().unwrap_or(start);
    let span = seconds_between(start, end);
    let duration = if span > 0.0 { span.max(1.0) } else { options.duration_s };
    if duration > MAX_TRACE_SECONDS {
        return Err(format!("the inputs span {duration} s, longer than the longest trace (366 days)"));
    }
    let hasher = Hasher { on: options.anonymize };
    let mut imported = Imported::default();
    let header = Header {
        format: "nodewright-trace".into(),
        version: KUBE_TRACE_VERSION,
        name: options.name.clone(),
        seed: 0,
        duration_s: duration,
        source: Some(format!("nodewright trace import ({} input{})", inputs.len(), if inputs.len() == 1 { "" } else { "s" })),
    };
    let mut out = serde_json::to_string(&header).map_err(|e| e.to_string())?;
    out.push('\n');
    // Within an instant, deletions first (a name may be reused).
    let mut created: HashMap<(&'static str, String), ()> = HashMap::new();
    let mut lines: Vec<(f64, bool, EventLine)> = Vec::new();
    for (at, _, change) in changes {
        let t = round_ms(seconds_between(start, at).max(0.0));
        match change {
            Change::Create(object) => {
                let key = object.key();
                if created.insert(key.clone(), ()).is_some() {
                    notes.push(format!("{} {}: created twice without a deletion between; the second is ignored", key.0, key.1));
                    continue;
                }
                match &object {
                    Object::Pod(_) => imported.pods += 1,
                    Object::Pdb(_) => imported.pdbs += 1,
                    Object::DaemonSet(_) => imported.daemonsets += 1,
                }
                lines.push((t, false, created_line(&hasher, t, object)));
            }
            Change::Delete(kind, name) => {
                if created.remove(&(kind, name.clone())).is_none() {
                    continue; // Created before anything we saw, or never: nothing to end.
                }
                lines.push((t, true, deleted_line(&hasher, t, kind, &name)));
            }
        }
    }
    // Stable: deletions before creations at one instant, else as they came.
    lines.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    for (_, _, line) in lines {
        out.push_str(&serde_json::to_string(&line).map_err(|e| e.to_string())?);
        out.push('\n');
    }
    imported.text = out;
    imported.notes = notes;
    Ok(imported)
}

fn seconds_between(a: Timestamp, b: Timestamp) -> f64 {
    let d = b.duration_since(a);
    d.as_secs_f64()
}

fn round_ms(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// Is `text` JSON Lines of audit events (rather than one JSON document)?
fn looks_like_audit_log(text: &str) -> bool {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str::<Value>(first).is_ok_and(|v| v.get("apiVersion").and_then(Value::as_str).is_some_and(|a| a.starts_with("audit.k8s.io/")))
}

/// The items of a snapshot; of a truncated one, those before the damage.
fn snapshot_items(input: &Input, notes: &mut Vec<String>) -> Vec<Value> {
    match serde_json::from_str::<Value>(&input.text) {
        Ok(Value::Object(mut map)) if map.get("kind").and_then(Value::as_str) == Some("List") || map.contains_key("items") => {
            match map.remove("items") {
                Some(Value::Array(items)) => items,
                _ => {
                    notes.push(format!("{}: items: not a list; nothing imported from it", input.file));
                    Vec::new()
                }
            }
        }
        Ok(value @ Value::Object(_)) => vec![value],
        Ok(_) => {
            notes.push(format!("{}: not a Kubernetes object or List; nothing imported from it", input.file));
            Vec::new()
        }
        Err(e) => {
            let mut items = Vec::new();
            let mut deserializer = serde_json::Deserializer::from_str(&input.text);
            let _ = ListSeed(&mut items).deserialize(&mut deserializer);
            notes.push(format!(
                "{}: truncated or malformed at line {} column {} ({e}); the {} object{} before it imported",
                input.file,
                e.line(),
                e.column(),
                items.len(),
                if items.len() == 1 { "" } else { "s" }
            ));
            items
        }
    }
}

/// Reads a List's `items` one by one into a vector, so that what came
/// before a truncation is kept.
struct ListSeed<'a>(&'a mut Vec<Value>);

impl<'de> DeserializeSeed<'de> for ListSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Kubernetes List")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "items" {
                map.next_value_seed(ItemsSeed(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct ItemsSeed<'a>(&'a mut Vec<Value>);

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of objects")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(v) = seq.next_element::<Value>()? {
            self.0.push(v);
        }
        Ok(())
    }
}

/// Item `i` of `file` as an object the trace carries, stripped; `None`
/// (with a note) for one that is left out.
fn object(file: &str, i: usize, value: Value, options: &ImportOptions, notes: &mut Vec<String>) -> Option<Object> {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
    let name = {
        let meta = value.get("metadata");
        let get = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str).unwrap_or("");
        format!("{}/{}", if get("namespace").is_empty() { "default" } else { get("namespace") }, get("name"))
    };
    let at = format!("{file}: items[{i}] ({} {name})", if kind.is_empty() { "object" } else { &kind });
    fn read<T: serde::de::DeserializeOwned>(value: Value, at: &str, notes: &mut Vec<String>) -> Option<T> {
        serde_path_to_error::deserialize::<_, T>(value)
            .map_err(|e| notes.push(format!("{at}: {}: {}; skipped", e.path(), e.inner())))
            .ok()
    }
    match kind.as_str() {
        "Pod" => {
            let pod: Pod = read(value, &at, notes)?;
            strip_pod(pod, &at, options, notes).map(|p| Object::Pod(Box::new(p)))
        }
        "PodDisruptionBudget" => read::<PodDisruptionBudget>(value, &at, notes).map(|p| Object::Pdb(Box::new(strip_pdb(p)))),
        "DaemonSet" => read::<DaemonSet>(value, &at, notes).map(|d| Object::DaemonSet(Box::new(strip_daemonset(d, options)))),
        "" => {
            notes.push(format!("{at}: no kind; skipped"));
            None
        }
        other => {
            notes.push(format!("{at}: kind {other} is not imported (Pod, PodDisruptionBudget, DaemonSet are); skipped"));
            None
        }
    }
}

/// Read the audit log `input` into `changes`.
fn audit_log(input: &Input, options: &ImportOptions, changes: &mut Vec<(Timestamp, usize, Change)>, notes: &mut Vec<String>) {
    for (n, line) in input.text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", input.file, n + 1);
        let event: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                notes.push(format!("{at}: not a JSON audit event ({e}); skipped"));
                continue;
            }
        };
        let get = |path: &[&str]| path.iter().try_fold(&event, |v, k| v.get(k)).and_then(Value::as_str).map(str::to_string);
        let verb = get(&["verb"]).unwrap_or_default();
        let resource = get(&["objectRef", "resource"]).unwrap_or_default();
        let subresource = get(&["objectRef", "subresource"]);
        let kind: &'static str = match resource.as_str() {
            "pods" => "Pod",
            "poddisruptionbudgets" => "PodDisruptionBudget",
            "daemonsets" => "DaemonSet",
            _ => continue,
        };
        if subresource.is_some() || !matches!(verb.as_str(), "create" | "delete") {
            continue;
        }
        if get(&["stage"]).is_some_and(|s| s != "ResponseComplete") {
            continue;
        }
        let code = event.get("responseStatus").and_then(|s| s.get("code")).and_then(Value::as_u64).unwrap_or(200);
        if code >= 300 {
            continue;
        }
        let Some(time) = get(&["stageTimestamp"]).or_else(|| get(&["requestReceivedTimestamp"])) else {
            notes.push(format!("{at}: no stageTimestamp; skipped"));
            continue;
        };
        let Ok(time) = time.parse::<Timestamp>() else {
            notes.push(format!("{at}: stageTimestamp `{time}` is not an RFC 3339 time; skipped"));
            continue;
        };
        if verb == "delete" {
            let namespace = get(&["objectRef", "namespace"]).unwrap_or_else(|| "default".into());
            let Some(name) = get(&["objectRef", "name"]) else {
                notes.push(format!("{at}: a delete without objectRef.name (a collection delete); skipped"));
                continue;
            };
            changes.push((time, changes.len(), Change::Delete(kind, format!("{namespace}/{name}"))));
            continue;
        }
        let body = event.get("responseObject").filter(|o| o.get("metadata").is_some()).or_else(|| event.get("requestObject")).cloned();
        let Some(mut body) = body else {
            notes.push(format!("{at}: {kind} create carries no object (audit level Metadata); skipped"));
            continue;
        };
        if let Some(obj) = body.as_object_mut() {
            obj.insert("kind".into(), Value::String(kind.into()));
            let meta = obj.entry("metadata").or_insert_with(|| Value::Object(Default::default()));
            if let Some(meta) = meta.as_object_mut() {
                if !meta.contains_key("namespace") && let Some(ns) = get(&["objectRef", "namespace"]) {
                    meta.insert("namespace".into(), Value::String(ns));
                }
                if !meta.contains_key("name") && let Some(name) = get(&["objectRef", "name"]) {
                    meta.insert("name".into(), Value::String(name));
                }
                // It was created when the event says.
                meta.insert("creationTimestamp".into(), Value::String(time.to_string()));
            }
        }
        if let Some(object) = object(&input.file, n, body, options, notes) {
            changes.push((time, changes.len(), Change::Create(object)));
        }
    }
}

/// Writes a version 2 trace line by line as a cluster changes (`trace
/// record`), stripping and hashing as an import does. Each method returns
/// the line an observation makes, if any, ending in a newline.
pub struct Recorder {
    options: ImportOptions,
    hasher: Hasher,
    live: HashSet<(&'static str, String)>,
    /// The last line written for each PDB and DaemonSet: a status update
    /// (they come often) changes nothing the trace carries and writes nothing.
    written: HashMap<(&'static str, String), String>,
    /// What was left out, each naming the object.
    pub notes: Vec<String>,
}

impl Recorder {
    /// A recorder importing as `options` say.
    pub fn new(options: &ImportOptions) -> Self {
        Recorder { options: options.clone(), hasher: Hasher { on: options.anonymize }, live: HashSet::new(), written: HashMap::new(), notes: Vec::new() }
    }

    /// The header of a trace of `duration_s`, padded with spaces to
    /// `width` bytes (before its newline) so that it can be rewritten in
    /// place with the duration actually recorded.
    pub fn header(&self, duration_s: f64, width: usize) -> String {
        let header = Header {
            format: "nodewright-trace".into(),
            version: KUBE_TRACE_VERSION,
            name: self.options.name.clone(),
            seed: 0,
            duration_s,
            source: Some("nodewright trace record".into()),
        };
        let text = serde_json::to_string(&header).unwrap_or_default();
        format!("{text:width$}\n")
    }

    /// Objects live now, by kind and `namespace/name` (unhashed).
    pub fn live(&self) -> Vec<(&'static str, String)> {
        self.live.iter().cloned().collect()
    }

    fn line(line: &EventLine) -> Option<String> {
        serde_json::to_string(line).ok().map(|mut s| {
            s.push('\n');
            s
        })
    }

    /// A pod seen at `t` (created, changed or listed): a line when it is
    /// new, or when it has finished (its end).
    pub fn pod(&mut self, t: f64, pod: Pod) -> Option<String> {
        let name = full_name(&pod.metadata);
        let key = ("Pod", name.clone());
        let finished = pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed");
        if finished || pod.metadata.deletion_timestamp.is_some() {
            return if self.live.remove(&key) { Self::line(&deleted_line(&self.hasher, round_ms(t), "Pod", &name)) } else { None };
        }
        if self.live.contains(&key) {
            return None;
        }
        let pod = strip_pod(pod, &format!("Pod {name}"), &self.options, &mut self.notes)?;
        self.live.insert(key);
        Self::line(&created_line(&self.hasher, round_ms(t), Object::Pod(Box::new(pod))))
    }

    /// A PodDisruptionBudget seen at `t`: added, or replaced when what
    /// the trace carries of it changed.
    pub fn pdb(&mut self, t: f64, pdb: PodDisruptionBudget) -> Option<String> {
        let key = ("PodDisruptionBudget", full_name(&pdb.metadata));
        self.changed(key, t, Object::Pdb(Box::new(strip_pdb(pdb))))
    }

    /// A DaemonSet seen at `t`: added, or replaced when what the trace
    /// carries of it changed.
    pub fn daemonset(&mut self, t: f64, ds: DaemonSet) -> Option<String> {
        let key = ("DaemonSet", full_name(&ds.metadata));
        self.changed(key, t, Object::DaemonSet(Box::new(strip_daemonset(ds, &self.options))))
    }

    fn changed(&mut self, key: (&'static str, String), t: f64, object: Object) -> Option<String> {
        let mut line = created_line(&self.hasher, 0.0, object);
        let shape = serde_json::to_string(&line).ok()?;
        if self.live.contains(&key) && self.written.get(&key) == Some(&shape) {
            return None;
        }
        self.live.insert(key.clone());
        self.written.insert(key, shape);
        line.t = round_ms(t);
        Self::line(&line)
    }

    /// Object `name` of `kind` (`Pod`, `PodDisruptionBudget`, `DaemonSet`)
    /// deleted at `t`.
    pub fn deleted(&mut self, t: f64, kind: &'static str, name: &str) -> Option<String> {
        let key = (kind, name.to_string());
        if !self.live.remove(&key) {
            return None;
        }
        self.written.remove(&key);
        Self::line(&deleted_line(&self.hasher, round_ms(t), kind, name))
    }
}

/// The line of a (stripped) object created at `t`: its creation time
/// dropped (`t` says it), hashed when anonymizing.
fn created_line(hasher: &Hasher, t: f64, object: Object) -> EventLine {
    match object {
        Object::Pod(mut p) => {
            p.metadata.creation_timestamp = None;
            hasher.pod(&mut p);
            EventLine { t, pod: Some(p), ..EventLine::default() }
        }
        Object::Pdb(mut p) => {
            p.metadata.creation_timestamp = None;
            hasher.pdb(&mut p);
            EventLine { t, pdb: Some(p), ..EventLine::default() }
        }
        Object::DaemonSet(mut d) => {
            d.metadata.creation_timestamp = None;
            hasher.daemonset(&mut d);
            EventLine { t, daemonset: Some(d), ..EventLine::default() }
        }
    }
}

/// The line of object `name` of `kind` deleted at `t`.
fn deleted_line(hasher: &Hasher, t: f64, kind: &str, name: &str) -> EventLine {
    let name = hasher.full_name(name);
    match kind {
        "Pod" => EventLine { t, del: Some(name), ..EventLine::default() },
        "PodDisruptionBudget" => EventLine { t, del_pdb: Some(name), ..EventLine::default() },
        _ => EventLine { t, del_daemonset: Some(name), ..EventLine::default() },
    }
}

/// Annotations that change scheduling or disruption, always kept.
const KEPT_ANNOTATIONS: [&str; 3] = [KARPENTER_DO_NOT_DISRUPT, well_known::DO_NOT_DISRUPT, POD_DELETION_COST];

fn strip_meta(meta: ObjectMeta, keep: &BTreeSet<String>) -> ObjectMeta {
    let annotations: BTreeMap<String, String> =
        meta.annotations.unwrap_or_default().into_iter().filter(|(k, _)| KEPT_ANNOTATIONS.contains(&k.as_str()) || keep.contains(k)).collect();
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        // Read for the arrival time, then dropped (the trace's `t` says it).
        creation_timestamp: meta.creation_timestamp,
        labels: meta.labels.filter(|l| !l.is_empty()),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: meta.owner_references.map(|owners| {
            owners
                .into_iter()
                .map(|o| OwnerReference { api_version: o.api_version, kind: o.kind, name: o.name, controller: o.controller, ..OwnerReference::default() })
                .collect()
        }),
        ..ObjectMeta::default()
    }
}

fn strip_containers(containers: Vec<Container>) -> Vec<Container> {
    containers
        .into_iter()
        .map(|c| Container {
            name: c.name,
            resources: c.resources.map(|r| ResourceRequirements { requests: r.requests, limits: r.limits, ..Default::default() }),
            ..Container::default()
        })
        .collect()
}

fn strip_spec(spec: PodSpec) -> PodSpec {
    PodSpec {
        containers: strip_containers(spec.containers),
        init_containers: spec.init_containers.map(strip_containers),
        overhead: spec.overhead,
        node_selector: spec.node_selector,
        affinity: spec.affinity,
        tolerations: spec.tolerations,
        topology_spread_constraints: spec.topology_spread_constraints,
        priority: spec.priority,
        ..PodSpec::default()
    }
}

fn strip_pod(pod: Pod, at: &str, options: &ImportOptions, notes: &mut Vec<String>) -> Option<Pod> {
    // A DaemonSet's pod comes with its node; a mirror pod with its kubelet.
    if pod.metadata.owner_references.iter().flatten().any(|o| o.kind == "DaemonSet" || o.kind == "Node") {
        return None;
    }
    if let Some(phase) = pod.status.as_ref().and_then(|s| s.phase.as_deref()).filter(|p| *p == "Succeeded" || *p == "Failed") {
        notes.push(format!("{at}: already {phase}; skipped"));
        return None;
    }
    let Some(spec) = pod.spec else {
        notes.push(format!("{at}: no spec; skipped"));
        return None;
    };
    if spec.scheduler_name.as_deref().is_some_and(|s| s != "default-scheduler") {
        notes.push(format!("{at}: scheduled by `{}`, read as the default scheduler's", spec.scheduler_name.as_deref().unwrap_or("")));
    }
    let requests_something = spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| {
        c.resources.as_ref().is_some_and(|r| {
            [&r.requests, &r.limits].into_iter().flatten().any(|m| m.contains_key("cpu") || m.contains_key("memory"))
        })
    });
    if !requests_something {
        notes.push(format!("{at}: no container requests CPU or memory; imported requesting none (as the scheduler counts it)"));
    }
    Some(Pod { metadata: strip_meta(pod.metadata, &options.keep_annotations), spec: Some(strip_spec(spec)), status: None })
}

fn strip_pdb(pdb: PodDisruptionBudget) -> PodDisruptionBudget {
    let spec = pdb.spec.map(|s| PodDisruptionBudgetSpec { min_available: s.min_available, max_unavailable: s.max_unavailable, selector: s.selector, ..Default::default() });
    PodDisruptionBudget { metadata: strip_meta(pdb.metadata, &BTreeSet::new()), spec, status: None }
}

fn strip_daemonset(ds: DaemonSet, options: &ImportOptions) -> DaemonSet {
    let template = ds.spec.template;
    DaemonSet {
        metadata: strip_meta(ds.metadata, &BTreeSet::new()),
        spec: DaemonSetSpec {
            selector: ds.spec.selector,
            template: PodTemplateSpec {
                metadata: template.metadata.map(|m| strip_meta(m, &options.keep_annotations)),
                spec: template.spec.map(strip_spec),
            },
            ..Default::default()
        },
        status: None,
    }
}

/// Hashes names and label values when anonymizing; the same input always
/// gives the same output, so selectors keep selecting what they did.
struct Hasher {
    on: bool,
}

/// Label keys whose values say where a node is or what it is: kept.
fn well_known_key(key: &str) -> bool {
    let (prefix, _) = key.rsplit_once('/').unwrap_or(("", key));
    matches!(prefix, "topology.kubernetes.io" | "kubernetes.io" | "node.kubernetes.io" | "karpenter.sh" | "karpenter.k8s.aws" | "nodewright.io" | "beta.kubernetes.io" | "failure-domain.beta.kubernetes.io")
        || key == "app.kubernetes.io/component"
}

impl Hasher {
    fn hash(&self, value: &str) -> String {
        if !self.on || value.is_empty() {
            return value.to_string();
        }
        let digest = Sha256::digest(value.as_bytes());
        format!("h{}", &hex::encode(digest)[..10])
    }

    fn full_name(&self, name: &str) -> String {
        match name.split_once('/') {
            Some((ns, n)) => format!("{}/{}", self.hash(ns), self.hash(n)),
            None => self.hash(name),
        }
    }

    fn value(&self, key: &str, value: &str) -> String {
        if well_known_key(key) { value.to_string() } else { self.hash(value) }
    }

    fn labels(&self, labels: &mut Option<BTreeMap<String, String>>) {
        for (k, v) in labels.iter_mut().flatten() {
            *v = self.value(k, v);
        }
    }

    fn selector(&self, s: &mut LabelSelector) {
        self.labels(&mut s.match_labels);
        for e in s.match_expressions.iter_mut().flatten() {
            let key = e.key.clone();
            for v in e.values.iter_mut().flatten() {
                *v = self.value(&key, v);
            }
        }
    }

    fn meta(&self, meta: &mut ObjectMeta) {
        if !self.on {
            return;
        }
        meta.name = meta.name.as_deref().map(|n| self.hash(n));
        meta.namespace = meta.namespace.as_deref().map(|n| self.hash(n));
        self.labels(&mut meta.labels);
        for (k, v) in meta.annotations.iter_mut().flatten() {
            if !KEPT_ANNOTATIONS.contains(&k.as_str()) {
                *v = self.hash(v);
            }
        }
        for o in meta.owner_references.iter_mut().flatten() {
            o.name = self.hash(&o.name);
        }
    }

    fn spec(&self, spec: &mut PodSpec) {
        if !self.on {
            return;
        }
        for (k, v) in spec.node_selector.iter_mut().flatten() {
            *v = self.value(k, v);
        }
        for t in spec.tolerations.iter_mut().flatten() {
            if let (Some(k), Some(v)) = (&t.key, &mut t.value) {
                *v = self.value(k, v);
            }
        }
        for c in spec.topology_spread_constraints.iter_mut().flatten() {
            if let Some(s) = &mut c.label_selector {
                self.selector(s);
            }
        }
        if let Some(a) = &mut spec.affinity {
            if let Some(n) = &mut a.node_affinity {
                let required = n.required_during_scheduling_ignored_during_execution.iter_mut().flat_map(|r| r.node_selector_terms.iter_mut());
                let preferred = n.preferred_during_scheduling_ignored_during_execution.iter_mut().flatten().map(|p| &mut p.preference);
                for term in required.chain(preferred) {
                    for e in term.match_expressions.iter_mut().flatten() {
                        let key = e.key.clone();
                        for v in e.values.iter_mut().flatten() {
                            *v = self.value(&key, v);
                        }
                    }
                }
            }
            let pod_terms = a
                .pod_affinity
                .iter_mut()
                .flat_map(|p| p.required_during_scheduling_ignored_during_execution.iter_mut().flatten())
                .chain(a.pod_anti_affinity.iter_mut().flat_map(|p| p.required_during_scheduling_ignored_during_execution.iter_mut().flatten()));
            for term in pod_terms {
                if let Some(s) = &mut term.label_selector {
                    self.selector(s);
                }
                for ns in term.namespaces.iter_mut().flatten() {
                    *ns = self.hash(ns);
                }
            }
        }
    }

    fn pod(&self, pod: &mut Pod) {
        self.meta(&mut pod.metadata);
        if let Some(spec) = &mut pod.spec {
            self.spec(spec);
        }
    }

    fn pdb(&self, pdb: &mut PodDisruptionBudget) {
        self.meta(&mut pdb.metadata);
        if self.on
            && let Some(s) = pdb.spec.as_mut().and_then(|s| s.selector.as_mut())
        {
            self.selector(s);
        }
    }

    fn daemonset(&self, ds: &mut DaemonSet) {
        self.meta(&mut ds.metadata);
        if self.on {
            self.selector(&mut ds.spec.selector);
        }
        if let Some(m) = &mut ds.spec.template.metadata {
            self.meta(m);
        }
        if let Some(s) = &mut ds.spec.template.spec {
            self.spec(s);
        }
    }
}
