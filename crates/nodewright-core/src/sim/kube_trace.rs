//! Trace format version 2: Kubernetes objects as events.
//!
//! The header is version 1's with `"version":2` (and an optional
//! `source`, informational). Each event line has a time `t` and exactly
//! one of:
//!
//! | field | meaning |
//! |---|---|
//! | `pod` | a Pod object in Kubernetes' JSON (`kubectl get pod -o json`); every scheduling-relevant field is honoured: requests of containers, init containers and overhead (CPU, memory, ephemeral storage, `nvidia.com/gpu`), `nodeSelector`, required and preferred node affinity, required pod affinity and anti-affinity on any topology key (namespaced as Kubernetes scopes them), tolerations, topology spread on any key with `whenUnsatisfiable`, `priority`, the do-not-disrupt (`karpenter.sh/`, `nodewright.io/`) and `controller.kubernetes.io/pod-deletion-cost` annotations, the owner (a `Job` owner makes it a job) |
//! | `del` | `namespace/name` of a pod that ends; a job's work is the time from its `pod` to its `del`, and it ends once it has run that long uninterrupted |
//! | `pdb` | a PodDisruptionBudget (`policy/v1`), added or replacing one of the same name |
//! | `del_pdb` | `namespace/name` of a budget removed |
//! | `daemonset` | a DaemonSet (`apps/v1`): its pod runs on every node it selects and tolerates, launched from then on |
//! | `del_daemonset` | `namespace/name` of a DaemonSet removed |
//!
//! A `pod` line may also say `"job": true` (or `false`) to override what
//! its owner says. `nodewright trace import` and `trace record` write this
//! version; the simulator reads both.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod as K8sPod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget as K8sPdb;
use serde::{Deserialize, Serialize};

use super::trace::{TraceError, TraceEvent, TraceEventKind};
use crate::model::k8s;
use crate::model::{Pod, PodSpec};

/// One event line of a version 2 trace.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    /// Seconds from the start.
    pub t: f64,
    /// A pod created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Box<K8sPod>>,
    /// Overrides whether the pod runs to completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<bool>,
    /// A pod that ends (`namespace/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub del: Option<String>,
    /// A PodDisruptionBudget added or replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pdb: Option<Box<K8sPdb>>,
    /// A PodDisruptionBudget removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub del_pdb: Option<String>,
    /// A DaemonSet added or replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemonset: Option<Box<DaemonSet>>,
    /// A DaemonSet removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub del_daemonset: Option<String>,
}

/// Reads the event lines of one version 2 trace, keeping what must be
/// consistent between them (live pods, shared specs).
#[derive(Default)]
pub(crate) struct Reader {
    live: HashSet<String>,
    specs: HashMap<PodSpec, Arc<PodSpec>>,
    /// What could not be kept, as `file:line: field: note`.
    pub notes: Vec<String>,
}

impl Reader {
    /// The event of `line` (1-based `n`) of `file`.
    pub fn event(&mut self, file: &str, n: usize, line: EventLine) -> Result<TraceEvent, TraceError> {
        let fail = |field: &str, message: String| TraceError { file: file.into(), line: n, field: field.into(), message };
        let given = [line.pod.is_some(), line.del.is_some(), line.pdb.is_some(), line.del_pdb.is_some(), line.daemonset.is_some(), line.del_daemonset.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(fail("line", "give exactly one of `pod`, `del`, `pdb`, `del_pdb`, `daemonset`, `del_daemonset`".into()));
        }
        if line.job.is_some() && line.pod.is_none() {
            return Err(fail("job", "only a `pod` line says whether it is a job".into()));
        }
        let mut notes = Vec::new();
        let (kind, prefix) = if let Some(pod) = line.pod {
            if pod.metadata.name.as_deref().is_none_or(str::is_empty) {
                return Err(fail("pod.metadata.name", "a pod needs its name".into()));
            }
            let name = k8s::full_name(&pod.metadata);
            if !self.live.insert(name.clone()) {
                return Err(fail("pod.metadata.name", format!("pod `{name}` already exists")));
            }
            let Some(spec) = pod.spec.as_ref() else { return Err(fail("pod.spec", format!("pod `{name}` has no spec"))) };
            let keep: BTreeSet<String> = pod.metadata.annotations.iter().flatten().map(|(k, _)| k.clone()).collect();
            let mut spec = k8s::pod_spec_noting(&pod.metadata, spec, &keep, &mut notes);
            if let Some(job) = line.job {
                spec.job = job;
            }
            let spec = self.specs.entry(spec.clone()).or_insert_with(|| Arc::new(spec)).clone();
            let job = spec.job;
            self.note(file, n, "pod", &notes);
            return Ok(TraceEvent { t: line.t, kind: TraceEventKind::Add(Pod::new(name, spec)), job });
        } else if let Some(name) = line.del {
            if !self.live.remove(&name) {
                return Err(fail("del", format!("pod `{name}` does not exist")));
            }
            (TraceEventKind::Delete(name), "")
        } else if let Some(pdb) = line.pdb {
            let budget = k8s::pdb(&pdb, &mut notes).map_err(|e| fail("pdb", format!("{}: {e}", k8s::full_name(&pdb.metadata))))?;
            (TraceEventKind::Pdb(budget), "pdb")
        } else if let Some(name) = line.del_pdb {
            (TraceEventKind::DeletePdb(name), "")
        } else if let Some(ds) = line.daemonset {
            let name = k8s::full_name(&ds.metadata);
            let spec = k8s::daemonset_spec(&ds, &mut notes).ok_or_else(|| fail("daemonset.spec.template.spec", format!("DaemonSet `{name}` has no pod spec")))?;
            (TraceEventKind::DaemonSet(name, Box::new(spec)), "daemonset")
        } else {
            (TraceEventKind::DeleteDaemonSet(line.del_daemonset.unwrap_or_default()), "")
        };
        self.note(file, n, prefix, &notes);
        Ok(TraceEvent { t: line.t, kind, job: false })
    }

    fn note(&mut self, file: &str, n: usize, prefix: &str, notes: &[String]) {
        for note in notes {
            let dot = if prefix.is_empty() { "" } else { "." };
            self.notes.push(format!("{file}:{n}: {prefix}{dot}{note}"));
        }
    }
}
