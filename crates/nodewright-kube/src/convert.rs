//! Kubernetes objects → the model the controllers work on.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1 as core;

use nodewright_core::model::labels::{Operator, Requirement, Taint, TaintEffect, Toleration};
use nodewright_core::model::quantity::{parse_bytes, parse_cpu_millis};
use nodewright_core::model::{
    LabelSelector, PodAffinityTerm, PodSpec, PreferredTerm, Resources, TopologyKey, TopologySpread, well_known,
};

/// Karpenter's do-not-disrupt annotation (nodewright honours both spellings).
pub const KARPENTER_DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// The annotation that says how much evicting a pod costs (ReplicaSets
/// remove pods with lower costs first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn quantity(map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, key: &str) -> Option<String> {
    map.and_then(|m| m.get(key)).map(|q| q.0.clone())
}

/// Requests of one container (or the pod overhead).
fn container_requests(resources: Option<&core::ResourceRequirements>) -> Resources {
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    // A request defaults to the limit when only the limit is set.
    let pick = |key: &str| quantity(requests, key).or_else(|| quantity(limits, key));
    Resources {
        cpu_millis: pick("cpu").and_then(|q| parse_cpu_millis(&q).ok()).unwrap_or(0).min(u32::MAX as u64) as u32,
        memory_bytes: pick("memory").and_then(|q| parse_bytes(&q).ok()).unwrap_or(0),
        pods: 0,
        gpus: pick("nvidia.com/gpu").and_then(|q| q.parse().ok()).unwrap_or(0),
        ephemeral_bytes: pick("ephemeral-storage").and_then(|q| parse_bytes(&q).ok()).unwrap_or(0),
    }
}

fn max(a: Resources, b: Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis.max(b.cpu_millis),
        memory_bytes: a.memory_bytes.max(b.memory_bytes),
        pods: a.pods.max(b.pods),
        gpus: a.gpus.max(b.gpus),
        ephemeral_bytes: a.ephemeral_bytes.max(b.ephemeral_bytes),
    }
}

fn requirement(r: &core::NodeSelectorRequirement) -> Option<Requirement> {
    let op = Operator::parse(&r.operator).ok()?;
    Requirement::new(&r.key, op, r.values.clone().unwrap_or_default()).ok()
}

fn label_selector(s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>) -> LabelSelector {
    let mut requirements = Vec::new();
    if let Some(s) = s {
        for (k, v) in s.match_labels.iter().flatten() {
            requirements.push(Requirement::is_in(k, &[v.as_str()]));
        }
        for e in s.match_expressions.iter().flatten() {
            if let Some(r) = Operator::parse(&e.operator).ok().and_then(|op| Requirement::new(&e.key, op, e.values.clone().unwrap_or_default()).ok()) {
                requirements.push(r);
            }
        }
    }
    LabelSelector { requirements }
}

fn topology(key: &str) -> Option<TopologyKey> {
    match key {
        well_known::ZONE => Some(TopologyKey::Zone),
        well_known::HOSTNAME => Some(TopologyKey::Hostname),
        _ => None,
    }
}

/// A taint as `key=value:Effect`.
pub fn taint_string(t: &Taint) -> String {
    format!("{}={}:{:?}", t.key, t.value, t.effect)
}

/// `key=value:Effect` (or `key:Effect`) → a taint.
pub fn parse_taint(text: &str) -> Option<Taint> {
    let (kv, effect) = text.rsplit_once(':')?;
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    Some(Taint { key: key.into(), value: value.into(), effect: TaintEffect::parse(effect).ok()? })
}

/// A Kubernetes taint → the model's.
pub fn taint(t: &core::Taint) -> Option<Taint> {
    Some(Taint { key: t.key.clone(), value: t.value.clone().unwrap_or_default(), effect: TaintEffect::parse(&t.effect).ok()? })
}

/// What the scheduler needs of a pod spec (or a daemonset's template).
/// Its annotations are kept when `keep` names them (the others, often one
/// value per pod, would keep a workload's pods from sharing a spec).
pub fn pod_spec(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: &core::PodSpec,
    keep: &std::collections::BTreeSet<String>,
) -> PodSpec {
    let mut requests = spec.containers.iter().map(|c| container_requests(c.resources.as_ref())).sum::<Resources>();
    // Init containers run one at a time before the others.
    for init in spec.init_containers.iter().flatten() {
        requests = max(requests, container_requests(init.resources.as_ref()));
    }
    if let Some(overhead) = &spec.overhead {
        let extra = container_requests(Some(&core::ResourceRequirements { requests: Some(overhead.clone()), ..Default::default() }));
        requests = requests.saturating_add(extra);
    }
    requests.pods = 1;
    let affinity = spec.affinity.as_ref();
    let node_affinity = affinity.and_then(|a| a.node_affinity.as_ref());
    let required_terms = node_affinity
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|r| r.node_selector_terms.iter().map(|t| t.match_expressions.iter().flatten().filter_map(requirement).collect()).collect())
        .unwrap_or_default();
    let preferred_terms = node_affinity
        .and_then(|n| n.preferred_during_scheduling_ignored_during_execution.as_ref())
        .map(|p| {
            p.iter()
                .map(|t| PreferredTerm {
                    weight: t.weight,
                    requirements: t.preference.match_expressions.iter().flatten().filter_map(requirement).collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    let terms = |terms: Option<&Vec<core::PodAffinityTerm>>| -> Vec<PodAffinityTerm> {
        terms
            .into_iter()
            .flatten()
            .filter_map(|t| Some(PodAffinityTerm { key: topology(&t.topology_key)?, selector: label_selector(t.label_selector.as_ref()) }))
            .collect()
    };
    let annotations = meta.annotations.clone().unwrap_or_default();
    PodSpec {
        labels: meta.labels.clone().unwrap_or_default(),
        requests,
        priority: spec.priority.unwrap_or(0),
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        required_terms,
        preferred_terms,
        tolerations: spec
            .tolerations
            .iter()
            .flatten()
            .map(|t| Toleration {
                key: t.key.clone().filter(|k| !k.is_empty()),
                exists: t.operator.as_deref() == Some("Exists"),
                value: t.value.clone().unwrap_or_default(),
                effect: t.effect.as_deref().and_then(|e| TaintEffect::parse(e).ok()),
            })
            .collect(),
        spread: spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .filter_map(|c| {
                Some(TopologySpread {
                    key: topology(&c.topology_key)?,
                    max_skew: c.max_skew.max(1) as u32,
                    hard: c.when_unsatisfiable == "DoNotSchedule",
                    selector: label_selector(c.label_selector.as_ref()),
                })
            })
            .collect(),
        affinity: terms(affinity.and_then(|a| a.pod_affinity.as_ref()).and_then(|p| p.required_during_scheduling_ignored_during_execution.as_ref())),
        anti_affinity: terms(
            affinity.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|p| p.required_during_scheduling_ignored_during_execution.as_ref()),
        ),
        do_not_disrupt: [well_known::DO_NOT_DISRUPT, KARPENTER_DO_NOT_DISRUPT]
            .iter()
            .any(|k| annotations.get(*k).is_some_and(|v| v == "true")),
        deletion_cost: annotations.get(POD_DELETION_COST).and_then(|v| v.trim().parse().ok()).unwrap_or(0),
        job: meta.owner_references.iter().flatten().any(|o| o.kind == "Job"),
        annotations: annotations.into_iter().filter(|(k, _)| keep.contains(k)).collect(),
    }
}

/// `namespace/name` of an object.
pub fn full_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!("{}/{}", meta.namespace.as_deref().unwrap_or("default"), meta.name.as_deref().unwrap_or(""))
}

/// A pod → the model's pod (its spec shared by identical pods via `specs`).
pub fn pod(
    p: &core::Pod,
    specs: &mut std::collections::HashMap<PodSpec, Arc<PodSpec>>,
    keep: &std::collections::BTreeSet<String>,
) -> nodewright_core::model::Pod {
    let spec = pod_spec(&p.metadata, p.spec.as_ref().unwrap_or(&core::PodSpec::default()), keep);
    let spec = specs.entry(spec.clone()).or_insert_with(|| Arc::new(spec)).clone();
    let mut pod = nodewright_core::model::Pod::new(full_name(&p.metadata), spec);
    // How long it has run: since `status.startTime`, by the system clock.
    pod.running_for = p.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        std::time::Duration::from_secs(now.saturating_sub(t.0.as_second()).max(0) as u64)
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

/// Is the pod owned by a DaemonSet (it goes with its node)?
pub fn is_daemon_pod(p: &core::Pod) -> bool {
    p.metadata.owner_references.iter().flatten().any(|o| o.kind == "DaemonSet")
}

/// Resources of a node's allocatable or capacity map.
pub fn node_resources(map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> Resources {
    Resources {
        cpu_millis: quantity(map, "cpu").and_then(|q| parse_cpu_millis(&q).ok()).unwrap_or(0).min(u32::MAX as u64) as u32,
        memory_bytes: quantity(map, "memory").and_then(|q| parse_bytes(&q).ok()).unwrap_or(0),
        pods: quantity(map, "pods").and_then(|q| q.parse().ok()).unwrap_or(110),
        gpus: quantity(map, "nvidia.com/gpu").and_then(|q| q.parse().ok()).unwrap_or(0),
        ephemeral_bytes: quantity(map, "ephemeral-storage").and_then(|q| parse_bytes(&q).ok()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_spec_keeps_requests_selectors_tolerations_spreads_and_do_not_disrupt() {
        let pod: core::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"app": "web"},
                         "annotations": {"karpenter.sh/do-not-disrupt": "true", "example.com/cost-centre": "cc-7",
                                         "cni.projectcalico.org/podIP": "10.0.3.7/32"}},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "512Mi"}}}
                ],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}}],
                "nodeSelector": {"kubernetes.io/arch": "arm64"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]}]}]}}}
            }
        }))
        .unwrap();
        let mut specs = std::collections::HashMap::new();
        let keep = std::collections::BTreeSet::from(["example.com/cost-centre".to_string()]);
        let p = super::pod(&pod, &mut specs, &keep);
        assert_eq!(p.name, "shop/web-1");
        assert_eq!(p.spec.requests, Resources { cpu_millis: 2000, memory_bytes: (1 << 30) + (512 << 20), pods: 1, gpus: 0, ephemeral_bytes: 0 });
        assert_eq!(p.spec.node_selector["kubernetes.io/arch"], "arm64");
        assert!(p.spec.tolerations[0].exists);
        assert_eq!(p.spec.spread[0].key, TopologyKey::Zone);
        assert!(p.spec.spread[0].hard);
        assert_eq!(p.spec.required_terms[0][0], Requirement::is_in("karpenter.sh/capacity-type", &["on-demand"]));
        assert!(p.spec.do_not_disrupt);
        // Only the annotations a NodePool names are kept.
        assert_eq!(p.spec.annotations, BTreeMap::from([("example.com/cost-centre".to_string(), "cc-7".to_string())]));
        assert!(super::pod(&pod, &mut specs, &Default::default()).spec.annotations.is_empty());
    }

    #[test]
    fn taints_round_trip_as_strings() {
        let t = Taint { key: "nodewright.io/starting".into(), value: "true".into(), effect: TaintEffect::NoSchedule };
        assert_eq!(parse_taint(&taint_string(&t)), Some(t));
        assert_eq!(parse_taint("dedicated:NoExecute").unwrap().value, "");
        assert_eq!(parse_taint("bad"), None);
    }
}
