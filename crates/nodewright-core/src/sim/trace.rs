//! Workload traces: a documented, versioned JSON Lines format of pod
//! arrivals and departures, and seeded generators.
//!
//! The first line is a header, every other line one event, times in
//! seconds from the start, non-decreasing:
//!
//! ```text
//! {"format":"nodewright-trace","version":1,"name":"mixed","seed":1,"duration_s":604800}
//! {"t":0,"add":"web-0","workload":"web","cpu_m":500,"mem_mib":1024}
//! {"t":12.5,"add":"train-3","workload":"train","cpu_m":8000,"mem_mib":32768,"gpus":1,"selector":{"karpenter.sh/capacity-type":"on-demand"}}
//! {"t":3600,"del":"web-0"}
//! ```
//!
//! An `add` line also takes `spread` (`"zone"` or `"hostname"`: a hard
//! topology spread of maxSkew 1 over the workload), `anti_affinity` (one pod
//! of the workload per node), `priority`, `do_not_disrupt` and `job` (a pod
//! that runs to completion: its work is the time from its `add` to its
//! `del`, and it ends once it has run that long uninterrupted — evicted or
//! interrupted, it loses the work done since it started and starts over;
//! started late, it ends late), and `annotations` (an object of strings:
//! those a NodePool's `spec.policy.podAnnotations` names reach its 0.3.0
//! policies). Pods of one workload with the same fields share one spec.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::model::{LabelSelector, Pod, PodSpec, Resources, TopologyKey, well_known};

/// The format version of generated traces (the simulator also reads
/// version 2, Kubernetes objects as events: [`super::kube_trace`]).
pub const TRACE_VERSION: u32 = 1;
/// The version `trace import` and `trace record` write.
pub const KUBE_TRACE_VERSION: u32 = 2;

/// A parsed trace.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Its name.
    pub name: String,
    /// Seed it was generated with (informational).
    pub seed: u64,
    /// How long it runs, in seconds.
    pub duration_s: f64,
    /// Events by time.
    pub events: Vec<TraceEvent>,
    /// What the reader could not keep (`file:line: field: note`); the
    /// rest of the trace is read.
    pub notes: Vec<String>,
}

/// One event.
#[derive(Debug, Clone)]
pub struct TraceEvent {
    /// Seconds from the start.
    pub t: f64,
    /// What happens.
    pub kind: TraceEventKind,
    /// An added pod runs to completion (a job): evicted, it loses its work.
    pub job: bool,
}

/// What happens at an event.
#[derive(Debug, Clone)]
pub enum TraceEventKind {
    /// A pod is created.
    Add(Pod),
    /// A pod ends (its name).
    Delete(String),
    /// A PodDisruptionBudget is added (or replaces one of its name).
    Pdb(crate::model::PodDisruptionBudget),
    /// A PodDisruptionBudget is removed (its name).
    DeletePdb(String),
    /// A DaemonSet (its name, its pod) is added or replaced.
    DaemonSet(String, Box<PodSpec>),
    /// A DaemonSet is removed (its name).
    DeleteDaemonSet(String),
}

/// A malformed trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct TraceError {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// Field (or `line` for the whole line).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The first line of a trace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// `nodewright-trace`.
    pub format: String,
    /// 1 or 2.
    pub version: u32,
    /// Its name.
    pub name: String,
    /// Seed it was generated with (informational).
    #[serde(default)]
    pub seed: u64,
    /// How long it runs, in seconds.
    pub duration_s: f64,
    /// Where it came from (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// One line of a trace, as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TraceLine {
    /// Seconds from the start.
    pub t: f64,
    /// Name of a pod created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<String>,
    /// Name of a pod that ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub del: Option<String>,
    /// Workload of an added pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// CPU request in millicores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_m: Option<u32>,
    /// Memory request in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_mib: Option<u64>,
    /// GPUs.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gpus: u32,
    /// Node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// `zone` or `hostname` spread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<String>,
    /// One pod of the workload per node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub anti_affinity: bool,
    /// Priority.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub priority: i32,
    /// `nodewright.io/do-not-disrupt`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_disrupt: bool,
    /// Runs to completion (a Job's pod).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub job: bool,
    /// Annotations (those a NodePool's `spec.policy.podAnnotations` names
    /// reach its 0.3.0 policies).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// The longest trace accepted: 366 days of simulated time.
pub const MAX_TRACE_SECONDS: f64 = 366.0 * 24.0 * 3600.0;

/// Parse trace `text` read from `file`.
pub fn parse_trace(file: &str, text: &str) -> Result<Trace, TraceError> {
    let fail = |line: usize, field: &str, message: String| TraceError { file: file.into(), line, field: field.into(), message };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, first) = lines.next().ok_or_else(|| fail(1, "line", "empty trace: the first line must be the header".into()))?;
    let header: Header = from_json(first).map_err(|(f, m)| fail(1, &f, m))?;
    if header.format != "nodewright-trace" {
        return Err(fail(1, "format", format!("`{}` is not nodewright-trace", header.format)));
    }
    if header.version != TRACE_VERSION && header.version != KUBE_TRACE_VERSION {
        return Err(fail(
            1,
            "version",
            format!("{} is not supported (this build reads versions {TRACE_VERSION} and {KUBE_TRACE_VERSION})", header.version),
        ));
    }
    if !(header.duration_s.is_finite() && header.duration_s > 0.0) {
        return Err(fail(1, "duration_s", format!("{} must be a positive number of seconds", header.duration_s)));
    }
    if header.duration_s > MAX_TRACE_SECONDS {
        return Err(fail(
            1,
            "duration_s",
            format!("{} is longer than the longest trace the simulator runs ({MAX_TRACE_SECONDS} s, 366 days)", header.duration_s),
        ));
    }
    let mut events = Vec::new();
    let mut live: HashSet<String> = HashSet::new();
    let mut specs: HashMap<TraceLine, Arc<PodSpec>> = HashMap::new();
    let mut last_t = 0.0;
    let check_t = |n: usize, t: f64, last_t: f64| {
        if !(t.is_finite() && t >= last_t) {
            return Err(fail(n, "t", format!("{t} is before the previous event ({last_t})")));
        }
        if t > header.duration_s {
            return Err(fail(n, "t", format!("{t} is after the end of the trace ({})", header.duration_s)));
        }
        Ok(())
    };
    if header.version == KUBE_TRACE_VERSION {
        let mut reader = super::kube_trace::Reader::default();
        for (index, text) in lines {
            let n = index + 1;
            let line: super::kube_trace::EventLine = from_json(text).map_err(|(f, m)| fail(n, &f, m))?;
            check_t(n, line.t, last_t)?;
            last_t = line.t;
            events.push(reader.event(file, n, line)?);
        }
        return Ok(Trace { name: header.name, seed: header.seed, duration_s: header.duration_s, events, notes: reader.notes });
    }
    for (index, text) in lines {
        let n = index + 1;
        let line: TraceLine = from_json(text).map_err(|(f, m)| fail(n, &f, m))?;
        check_t(n, line.t, last_t)?;
        last_t = line.t;
        let kind = match (&line.add, &line.del) {
            (Some(name), None) => {
                if !live.insert(name.clone()) {
                    return Err(fail(n, "add", format!("pod `{name}` already exists")));
                }
                let spec = spec_of(&line).map_err(|(f, m)| fail(n, f, m))?;
                let key = TraceLine { t: 0.0, add: None, ..line.clone() };
                let spec = specs.entry(key).or_insert_with(|| Arc::new(spec)).clone();
                TraceEventKind::Add(Pod::new(name.clone(), spec))
            }
            (None, Some(name)) => {
                if !live.remove(name) {
                    return Err(fail(n, "del", format!("pod `{name}` does not exist")));
                }
                TraceEventKind::Delete(name.clone())
            }
            _ => return Err(fail(n, "line", "give exactly one of `add` and `del`".into())),
        };
        events.push(TraceEvent { t: line.t, kind, job: line.job });
    }
    Ok(Trace { name: header.name, seed: header.seed, duration_s: header.duration_s, events, notes: Vec::new() })
}

impl Eq for TraceLine {}

impl std::hash::Hash for TraceLine {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.workload.hash(state);
        self.cpu_m.hash(state);
        self.mem_mib.hash(state);
        self.gpus.hash(state);
        self.selector.hash(state);
        self.spread.hash(state);
        self.anti_affinity.hash(state);
        self.priority.hash(state);
        self.do_not_disrupt.hash(state);
    }
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        (if path == "." { "line".into() } else { path }, e.into_inner().to_string())
    })
}

fn spec_of(line: &TraceLine) -> Result<PodSpec, (&'static str, String)> {
    let workload = line.workload.clone().ok_or(("workload", "an `add` needs its workload".to_string()))?;
    let cpu = line.cpu_m.ok_or(("cpu_m", "an `add` needs a CPU request".to_string()))?;
    let memory = line.mem_mib.ok_or(("mem_mib", "an `add` needs a memory request".to_string()))?;
    let memory = memory
        .checked_mul(1 << 20)
        .filter(|bytes| *bytes <= crate::model::quantity::MAX_BYTES)
        .ok_or(("mem_mib", format!("{memory} MiB is more than the largest accepted request (1 EiB)")))?;
    let mut spec = PodSpec {
        requests: Resources { cpu_millis: cpu, memory_bytes: memory, pods: 1, gpus: line.gpus, ephemeral_bytes: 0 },
        priority: line.priority,
        node_selector: line.selector.clone(),
        do_not_disrupt: line.do_not_disrupt,
        job: line.job,
        annotations: line.annotations.clone(),
        ..PodSpec::default()
    }
    .label("app", &workload);
    let own = LabelSelector::label("app", &workload);
    match line.spread.as_deref() {
        None => {}
        Some("zone") => spec = spec.spread(TopologyKey::Zone, 1, true, own.clone()),
        Some("hostname") => spec = spec.spread(TopologyKey::Hostname, 1, true, own.clone()),
        Some(other) => return Err(("spread", format!("`{other}` is not zone or hostname"))),
    }
    if line.anti_affinity {
        spec = spec.anti_affinity(TopologyKey::Hostname, own);
    }
    Ok(spec)
}

/// Kinds of generated traces.
pub const KINDS: [&str; 6] = ["diurnal-web", "batch-burst", "ml-gpu", "mixed", "saas-week", "batch-week"];

const DAY: f64 = 86_400.0;

/// The largest `scale` a generated trace accepts: a hundred times the
/// bundled traces, which keeps the trace in memory well under the machine's.
pub const MAX_SCALE: f64 = 100.0;

/// Generate trace `kind` with `seed`; `scale` multiplies the pod counts.
/// Returns the JSON Lines text.
pub fn generate(kind: &str, seed: u64, scale: f64) -> Result<String, String> {
    if !(scale.is_finite() && scale > 0.0 && scale <= MAX_SCALE) {
        return Err(format!("scale {scale} must be a positive number no larger than {MAX_SCALE}"));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (days, parts): (f64, &[&str]) = match kind {
        "diurnal-web" => (2.0, &["web"]),
        "batch-burst" => (1.0, &["batch"]),
        "ml-gpu" => (1.0, &["ml"]),
        "mixed" => (7.0, &["web", "batch", "ml"]),
        "saas-week" => (7.0, &["web", "stateful"]),
        "batch-week" => (7.0, &["long-jobs"]),
        other => return Err(format!("unknown trace kind `{other}` (one of {})", KINDS.join(", "))),
    };
    let duration = days * DAY;
    let mut lines: Vec<TraceLine> = Vec::new();
    for part in parts {
        match *part {
            "web" => web(&mut rng, duration, scale, &mut lines),
            "batch" => batch(&mut rng, duration, scale, &mut lines),
            "stateful" => stateful(duration, scale, &mut lines),
            "long-jobs" => long_jobs(&mut rng, duration, scale, &mut lines),
            _ => ml(&mut rng, duration, scale, &mut lines),
        }
    }
    lines.sort_by(|a, b| a.t.total_cmp(&b.t).then_with(|| a.del.is_some().cmp(&b.del.is_some()).reverse()));
    let header = Header { format: "nodewright-trace".into(), version: TRACE_VERSION, name: kind.into(), seed, duration_s: duration, source: None };
    let mut out = serde_json::to_string(&header).expect("header serialises");
    out.push('\n');
    for line in lines {
        out.push_str(&serde_json::to_string(&line).expect("line serialises"));
        out.push('\n');
    }
    Ok(out)
}

fn add(t: f64, name: String, workload: &str, cpu_m: u32, mem_mib: u64) -> TraceLine {
    TraceLine { t: round(t), add: Some(name), workload: Some(workload.into()), cpu_m: Some(cpu_m), mem_mib: Some(mem_mib), ..TraceLine::default() }
}

fn del(t: f64, name: String) -> TraceLine {
    TraceLine { t: round(t), del: Some(name), ..TraceLine::default() }
}

fn round(t: f64) -> f64 {
    (t * 1000.0).round() / 1000.0
}

/// Web tiers whose replicas follow a daily sine, adjusted every 5 minutes.
fn web(rng: &mut StdRng, duration: f64, scale: f64, lines: &mut Vec<TraceLine>) {
    let tiers = [("frontend", 250, 512, 30.0, Some("zone")), ("api", 500, 1024, 40.0, Some("zone")), ("worker", 1000, 2048, 20.0, None)];
    for (tier, cpu, mem, base, spread) in tiers {
        let mut running: Vec<String> = Vec::new();
        let mut next = 0usize;
        let phase = rng.random_range(0.0..1.0) * 0.5;
        let mut t = 0.0;
        while t < duration {
            let daily = (2.0 * std::f64::consts::PI * (t / DAY - phase)).sin();
            let target = ((base * scale) * (1.0 + 0.6 * daily) + rng.random_range(-1.0..1.0)).max(1.0).round() as usize;
            while running.len() < target {
                let name = format!("{tier}-{next}");
                next += 1;
                let mut line = add(t + rng.random_range(0.0..30.0), name.clone(), tier, cpu, mem);
                line.spread = spread.map(String::from);
                lines.push(line);
                running.push(name);
            }
            while running.len() > target {
                let name = running.pop().expect("non-empty");
                lines.push(del(t + rng.random_range(0.0..30.0), name));
            }
            t += 300.0;
        }
        for name in running {
            lines.push(del(duration, name));
        }
    }
}

/// A stateful tier (caches, queues) that runs all week on on-demand
/// capacity: one pod of 2 CPU / 8 GiB per unit of scale, one per node.
fn stateful(duration: f64, scale: f64, lines: &mut Vec<TraceLine>) {
    let count = scale.round().max(1.0) as usize;
    for n in 0..count {
        let name = format!("cache-{n}");
        let mut line = add(1.0 + n as f64, name.clone(), "cache", 2000, 8192);
        line.selector.insert(well_known::CAPACITY_TYPE.into(), "on-demand".into());
        line.priority = 1000;
        line.anti_affinity = true;
        lines.push(line);
        lines.push(del(duration, name));
    }
}

/// Waves of long jobs (two to eight hours, 4 to 16 CPU) every two to five
/// hours, as a data or rendering pipeline submits them: each a Job's pod
/// that loses its work when evicted.
fn long_jobs(rng: &mut StdRng, duration: f64, scale: f64, lines: &mut Vec<TraceLine>) {
    let mut t = rng.random_range(0.0..1800.0);
    let mut n = 0usize;
    while t < duration {
        let jobs = (rng.random_range(10.0..30.0) * scale).round() as usize;
        for _ in 0..jobs {
            let name = format!("job-{n}");
            n += 1;
            let cpu = [4000, 8000, 16_000][rng.random_range(0..3)];
            let start = t + rng.random_range(0.0..300.0);
            let end = (start + rng.random_range(7200.0..28_800.0)).min(duration);
            lines.push(TraceLine { job: true, ..add(start, name.clone(), "pipeline", cpu, cpu as u64 * 4) });
            lines.push(del(end, name));
        }
        t += rng.random_range(7200.0..18_000.0);
    }
}

/// Bursts of large short jobs every one to three hours.
fn batch(rng: &mut StdRng, duration: f64, scale: f64, lines: &mut Vec<TraceLine>) {
    let mut t = rng.random_range(0.0..3600.0);
    let mut n = 0usize;
    while t < duration {
        let jobs = ((rng.random_range(20.0..80.0)) * scale).round() as usize;
        for _ in 0..jobs {
            let name = format!("batch-{n}");
            n += 1;
            let cpu = [2000, 4000, 8000][rng.random_range(0..3)];
            let start = t + rng.random_range(0.0..60.0);
            let end = (start + rng.random_range(600.0..2400.0)).min(duration);
            lines.push(TraceLine { job: true, ..add(start, name.clone(), "batch", cpu, cpu as u64 * 2) });
            lines.push(del(end, name));
        }
        t += rng.random_range(3600.0..10_800.0);
    }
}

/// GPU training jobs of one to six hours, on on-demand capacity.
fn ml(rng: &mut StdRng, duration: f64, scale: f64, lines: &mut Vec<TraceLine>) {
    let mut t = rng.random_range(0.0..7200.0);
    let mut n = 0usize;
    let gap = 3.0 * 3600.0 / scale.max(0.01);
    while t < duration {
        let name = format!("train-{n}");
        n += 1;
        let gpus = [1, 1, 2, 4][rng.random_range(0..4)];
        let end = (t + rng.random_range(3600.0..21_600.0)).min(duration);
        let mut line = add(t, name.clone(), "train", 4000 * gpus, 16_384 * gpus as u64);
        line.gpus = gpus;
        line.selector.insert(well_known::CAPACITY_TYPE.into(), "on-demand".into());
        line.do_not_disrupt = true;
        line.job = true;
        lines.push(line);
        lines.push(del(end, name));
        t += rng.random_range(0.5..1.5) * gap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_generates_a_trace_that_parses() {
        for kind in KINDS {
            let text = generate(kind, 7, 0.2).unwrap();
            let trace = parse_trace("t.jsonl", &text).unwrap();
            assert!(!trace.events.is_empty(), "{kind}");
            assert_eq!(trace.name, kind);
        }
        assert_eq!(generate("mixed", 7, 0.2).unwrap(), generate("mixed", 7, 0.2).unwrap());
        assert_ne!(generate("mixed", 7, 0.2).unwrap(), generate("mixed", 8, 0.2).unwrap());
    }

    #[test]
    fn an_add_carries_its_annotations_and_a_bad_one_is_named() {
        let header = r#"{"format":"nodewright-trace","version":1,"name":"x","duration_s":100}"#;
        let line = r#"{"t":1,"add":"a","workload":"w","cpu_m":1,"mem_mib":1,"annotations":{"example.com/cost-centre":"cc-7"}}"#;
        let trace = parse_trace("w.jsonl", &format!("{header}\n{line}")).unwrap();
        let TraceEventKind::Add(pod) = &trace.events[0].kind else { panic!("an add") };
        assert_eq!(pod.spec.annotations.get("example.com/cost-centre").map(String::as_str), Some("cc-7"));
        let bad = r#"{"t":1,"add":"a","workload":"w","cpu_m":1,"mem_mib":1,"annotations":{"k":7}}"#;
        let err = parse_trace("w.jsonl", &format!("{header}\n{bad}")).unwrap_err().to_string();
        assert!(err.starts_with("w.jsonl:2: annotations.k: invalid type: integer `7`, expected a string"), "{err}");
    }

    #[test]
    fn a_malformed_trace_line_names_file_line_and_field() {
        let header = r#"{"format":"nodewright-trace","version":1,"name":"x","duration_s":100}"#;
        let err = |body: &str| parse_trace("w.jsonl", &format!("{header}\n{body}")).unwrap_err().to_string();
        assert_eq!(
            err("{\"t\":1,\"add\":\"a\",\"workload\":\"w\",\"cpu_m\":\"lots\",\"mem_mib\":1}"),
            "w.jsonl:2: cpu_m: invalid type: string \"lots\", expected u32 at line 1 column 46"
        );
        assert_eq!(err("{\"t\":1,\"add\":\"a\",\"workload\":\"w\",\"mem_mib\":1}"), "w.jsonl:2: cpu_m: an `add` needs a CPU request");
        assert_eq!(
            err("{\"t\":5,\"add\":\"a\",\"workload\":\"w\",\"cpu_m\":1,\"mem_mib\":1}\n{\"t\":4,\"del\":\"a\"}"),
            "w.jsonl:3: t: 4 is before the previous event (5)"
        );
        assert_eq!(err("{\"t\":1,\"del\":\"ghost\"}"), "w.jsonl:2: del: pod `ghost` does not exist");
        assert_eq!(
            err("{\"t\":1,\"add\":\"a\",\"workload\":\"w\",\"cpu_m\":1,\"mem_mib\":1,\"spread\":\"rack\"}"),
            "w.jsonl:2: spread: `rack` is not zone or hostname"
        );
        assert!(err("{\"t\":1,\"ad\":\"a\"}").starts_with("w.jsonl:2: ad: unknown field `ad`"));
        assert_eq!(
            parse_trace("w.jsonl", "{\"format\":\"nodewright-trace\",\"version\":3,\"name\":\"x\",\"duration_s\":1}").unwrap_err().to_string(),
            "w.jsonl:1: version: 3 is not supported (this build reads versions 1 and 2)"
        );
    }
}
