//! API objects the kube-rs tests start from.
#![allow(dead_code)]

use serde_json::{Value, json};

/// A `nodewright.io/v1alpha1` NodePool `default`: on-demand, a startup
/// taint, the native selection.
pub fn node_pool() -> Value {
    json!({
        "apiVersion": "nodewright.io/v1alpha1", "kind": "NodePool",
        "metadata": { "name": "default", "uid": "uid-default" },
        "spec": {
            "template": { "spec": {
                "requirements": [{ "key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"] }],
                "startupTaints": [{ "key": "nodewright.io/starting", "effect": "NoSchedule" }]
            }},
            "policy": { "selection": { "plugin": "karpenter-like" } }
        }
    })
}

/// Pod `shop/NAME` of workload `web` (500m, 1 GiB), pending and marked
/// unschedulable by the scheduler.
pub fn pending_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": "shop", "labels": { "app": "web" } },
        "spec": { "containers": [{ "name": "web", "resources": { "requests": { "cpu": "500m", "memory": "1Gi" } } }] },
        "status": { "phase": "Pending", "conditions": [{ "type": "PodScheduled", "status": "False", "reason": "Unschedulable" }] }
    })
}
