//! Kubernetes objects → the model the controllers work on. The
//! translation of pods, daemonsets, taints and budgets is the core's
//! (`model::k8s`, shared with the trace format); what is here needs the
//! live cluster (the system clock, pod status).

use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;

use nodewright_core::model::PodSpec;
pub use nodewright_core::model::k8s::{
    KARPENTER_DO_NOT_DISRUPT, POD_DELETION_COST, full_name, is_daemon_pod, node_resources, parse_taint, pod_spec, taint, taint_string,
};

/// A pod → the model's pod (its spec shared by identical pods via `specs`).
pub fn pod(
    p: &core::Pod,
    specs: &mut std::collections::HashMap<PodSpec, Arc<PodSpec>>,
    keep: &std::collections::BTreeSet<String>,
) -> nodewright_core::model::Pod {
    let spec = pod_spec(&p.metadata, p.spec.as_ref().unwrap_or(&core::PodSpec::default()), keep);
    let spec = specs.entry(spec.clone()).or_insert_with(|| Arc::new(spec)).clone();
    let mut pod = nodewright_core::model::Pod::new(full_name(&p.metadata), spec);
    // When it started: `status.startTime` (the controllers read the
    // system clock, since the Unix epoch, too).
    pod.started = p.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| {
        std::time::Duration::from_secs(u64::try_from(t.0.as_second()).unwrap_or(0))
    });
    pod
}

/// Is this pod waiting because the scheduler found no node
/// (`PodScheduled=False`, reason `Unschedulable`)?
pub fn is_unschedulable(p: &core::Pod) -> bool {
    p.spec.as_ref().is_some_and(|s| s.node_name.is_none())
        && p.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| {
            c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
        })
}
