//! Kubernetes objects (as `k8s-openapi` reads them) → the model. One
//! translation serves the controller's view of a cluster, the version 2
//! trace format (whose events are Kubernetes objects) and `trace import`.
//!
//! Selectors are namespaced as Kubernetes scopes them: every pod carries
//! the label [`NAMESPACE`] with its namespace, and the selector of a
//! PodDisruptionBudget, a topology spread or a pod (anti-)affinity term
//! gets a requirement on it (the object's own namespace, the namespaces a
//! term lists, or none for a term whose `namespaceSelector` is `{}`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1::PodDisruptionBudget as K8sPdb;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as K8sSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{Operator, Requirement, Taint, TaintEffect, Toleration};
use super::quantity::{parse_bytes, parse_cpu_millis};
use super::{IntOrPercent, LabelSelector, PdbLimit, PodAffinityTerm, PodDisruptionBudget, PodSpec, PreferredTerm, Resources, TopologyKey, TopologySpread, well_known};

/// Karpenter's do-not-disrupt annotation (nodewright honours both spellings).
pub const KARPENTER_DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// The annotation that says how much evicting a pod costs (ReplicaSets
/// remove pods with lower costs first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// The label every pod carries in the model with its namespace, so that
/// namespaced selectors can say which namespaces they count.
pub const NAMESPACE: &str = "nodewright.io/namespace";
/// The extended resource the model counts as GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// What a translation could not keep, said with the object's field.
pub type Notes = Vec<String>;

fn quantity(map: Option<&BTreeMap<String, Quantity>>, key: &str) -> Option<String> {
    map.and_then(|m| m.get(key)).map(|q| q.0.clone())
}

/// Requests of one container (or the pod overhead); `field` names it in notes.
fn container_requests(resources: Option<&core::ResourceRequirements>, field: &str, notes: &mut Notes) -> Resources {
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    // A request defaults to the limit when only the limit is set.
    let pick = |key: &str| quantity(requests, key).or_else(|| quantity(limits, key));
    let mut read = |key: &str, parse: fn(&str) -> Result<u64, String>| -> u64 {
        match pick(key).map(|q| parse(&q).map_err(|e| (q, e))) {
            None => 0,
            Some(Ok(v)) => v,
            Some(Err((_, e))) => {
                notes.push(format!("{field}.requests.{key}: {e}; counted as 0"));
                0
            }
        }
    };
    let cpu = read("cpu", parse_cpu_millis);
    let memory = read("memory", parse_bytes);
    let ephemeral = read("ephemeral-storage", parse_bytes);
    let gpus = read(GPU_RESOURCE, |q| q.trim().parse::<u64>().map_err(|_| format!("`{q}` is not a whole number")));
    for map in [requests, limits].into_iter().flatten() {
        for key in map.keys() {
            if !matches!(key.as_str(), "cpu" | "memory" | "ephemeral-storage" | GPU_RESOURCE) && !key.starts_with("hugepages-") {
                let note = format!("{field}.requests.{key}: extended resource not modelled (only {GPU_RESOURCE}); ignored");
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
        }
    }
    Resources {
        cpu_millis: u32::try_from(cpu).unwrap_or(u32::MAX),
        memory_bytes: memory,
        pods: 0,
        gpus: u32::try_from(gpus).unwrap_or(u32::MAX),
        ephemeral_bytes: ephemeral,
    }
}

fn requirement(r: &core::NodeSelectorRequirement, field: &str, notes: &mut Notes) -> Option<Requirement> {
    let made = Operator::parse(&r.operator).and_then(|op| Requirement::new(&r.key, op, r.values.clone().unwrap_or_default()));
    made.map_err(|e| notes.push(format!("{field}: {}: {e}; ignored", r.key))).ok()
}

/// A label selector in the model's terms; an expression it cannot read is
/// noted and dropped (the selector then selects more, never less).
pub fn label_selector(s: Option<&K8sSelector>, field: &str, notes: &mut Notes) -> LabelSelector {
    let mut requirements = Vec::new();
    if let Some(s) = s {
        for (k, v) in s.match_labels.iter().flatten() {
            requirements.push(Requirement::is_in(k, &[v.as_str()]));
        }
        for e in s.match_expressions.iter().flatten() {
            match Operator::parse(&e.operator).and_then(|op| Requirement::new(&e.key, op, e.values.clone().unwrap_or_default())) {
                Ok(r) => requirements.push(r),
                Err(err) => notes.push(format!("{field}.matchExpressions: {}: {err}; ignored", e.key)),
            }
        }
    }
    LabelSelector { requirements }
}

/// `selector` restricted to pods of `namespaces` (none: every namespace).
fn in_namespaces(mut selector: LabelSelector, namespaces: &[&str]) -> LabelSelector {
    if !namespaces.is_empty() {
        selector.requirements.push(Requirement::is_in(NAMESPACE, namespaces));
    }
    selector
}

/// The model's topology key for `key`.
pub fn topology(key: &str) -> TopologyKey {
    match key {
        well_known::ZONE => TopologyKey::Zone,
        well_known::HOSTNAME => TopologyKey::Hostname,
        other => TopologyKey::Label(other.to_string()),
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

/// `namespace/name` of an object.
pub fn full_name(meta: &ObjectMeta) -> String {
    format!("{}/{}", namespace(meta), meta.name.as_deref().unwrap_or(""))
}

fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or("default")
}

/// What the scheduler needs of a pod spec (or a daemonset's template).
/// Its annotations are kept when `keep` names them (the others, often one
/// value per pod, would keep a workload's pods from sharing a spec).
pub fn pod_spec(meta: &ObjectMeta, spec: &core::PodSpec, keep: &BTreeSet<String>) -> PodSpec {
    pod_spec_noting(meta, spec, keep, &mut Vec::new())
}

/// [`pod_spec`], noting in `notes` (by field) what it could not keep.
pub fn pod_spec_noting(meta: &ObjectMeta, spec: &core::PodSpec, keep: &BTreeSet<String>, notes: &mut Notes) -> PodSpec {
    let mut requests = Resources::default();
    for (i, c) in spec.containers.iter().enumerate() {
        requests = requests.saturating_add(container_requests(c.resources.as_ref(), &format!("spec.containers[{i}]"), notes));
    }
    // Init containers run one at a time before the others.
    for (i, init) in spec.init_containers.iter().flatten().enumerate() {
        requests = requests.max_each(container_requests(init.resources.as_ref(), &format!("spec.initContainers[{i}]"), notes));
    }
    if let Some(overhead) = &spec.overhead {
        let overhead = core::ResourceRequirements { requests: Some(overhead.clone()), ..Default::default() };
        requests = requests.saturating_add(container_requests(Some(&overhead), "spec.overhead", notes));
    }
    requests.pods = 1;
    let ns = namespace(meta);
    let affinity = spec.affinity.as_ref();
    let node_affinity = affinity.and_then(|a| a.node_affinity.as_ref());
    let field = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution";
    let required_terms = node_affinity
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|r| r.node_selector_terms.iter().map(|t| t.match_expressions.iter().flatten().filter_map(|r| requirement(r, field, notes)).collect()).collect())
        .unwrap_or_default();
    let field = "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution";
    let preferred_terms = node_affinity
        .and_then(|n| n.preferred_during_scheduling_ignored_during_execution.as_ref())
        .map(|p| {
            p.iter()
                .map(|t| PreferredTerm {
                    weight: t.weight,
                    requirements: t.preference.match_expressions.iter().flatten().filter_map(|r| requirement(r, field, notes)).collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut terms = |terms: Option<&Vec<core::PodAffinityTerm>>, field: &str| -> Vec<PodAffinityTerm> {
        terms
            .into_iter()
            .flatten()
            .map(|t| {
                let selector = label_selector(t.label_selector.as_ref(), field, notes);
                let listed: Vec<&str> = t.namespaces.iter().flatten().map(String::as_str).collect();
                let namespaces = match (&t.namespace_selector, listed.is_empty()) {
                    // `namespaceSelector: {}` selects every namespace.
                    (Some(s), _) if s.match_labels.as_ref().is_none_or(|m| m.is_empty()) && s.match_expressions.as_ref().is_none_or(|m| m.is_empty()) => vec![],
                    (Some(_), _) => {
                        notes.push(format!("{field}.namespaceSelector: namespaces chosen by their labels are not modelled; the pod's own namespace is used"));
                        if listed.is_empty() { vec![ns] } else { listed }
                    }
                    (None, true) => vec![ns],
                    (None, false) => listed,
                };
                PodAffinityTerm { key: topology(&t.topology_key), selector: in_namespaces(selector, &namespaces) }
            })
            .collect()
    };
    let affinity_terms = terms(
        affinity.and_then(|a| a.pod_affinity.as_ref()).and_then(|p| p.required_during_scheduling_ignored_during_execution.as_ref()),
        "spec.affinity.podAffinity",
    );
    let anti_terms = terms(
        affinity.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|p| p.required_during_scheduling_ignored_during_execution.as_ref()),
        "spec.affinity.podAntiAffinity",
    );
    let spread = spec
        .topology_spread_constraints
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let field = format!("spec.topologySpreadConstraints[{i}]");
            if c.when_unsatisfiable != "DoNotSchedule" && c.when_unsatisfiable != "ScheduleAnyway" {
                notes.push(format!("{field}.whenUnsatisfiable: `{}` is neither DoNotSchedule nor ScheduleAnyway; read as ScheduleAnyway", c.when_unsatisfiable));
            }
            TopologySpread {
                key: topology(&c.topology_key),
                max_skew: u32::try_from(c.max_skew).unwrap_or(1).max(1),
                hard: c.when_unsatisfiable == "DoNotSchedule",
                selector: in_namespaces(label_selector(c.label_selector.as_ref(), &field, notes), &[ns]),
            }
        })
        .collect();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let deletion_cost = match annotations.get(POD_DELETION_COST) {
        None => 0,
        Some(v) => v.trim().parse().unwrap_or_else(|_| {
            notes.push(format!("metadata.annotations.{POD_DELETION_COST}: `{v}` is not an integer; read as 0"));
            0
        }),
    };
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(NAMESPACE.into(), ns.into());
    PodSpec {
        labels,
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
        spread,
        affinity: affinity_terms,
        anti_affinity: anti_terms,
        do_not_disrupt: [well_known::DO_NOT_DISRUPT, KARPENTER_DO_NOT_DISRUPT].iter().any(|k| annotations.get(*k).is_some_and(|v| v == "true")),
        deletion_cost,
        job: meta.owner_references.iter().flatten().any(|o| o.kind == "Job"),
        annotations: annotations.into_iter().filter(|(k, _)| keep.contains(k)).collect(),
    }
}

/// Is the pod owned by a DaemonSet (it goes with its node)?
pub fn is_daemon_pod(p: &core::Pod) -> bool {
    p.metadata.owner_references.iter().flatten().any(|o| o.kind == "DaemonSet")
}

/// A DaemonSet's pod template → the spec of the pod it runs on each node.
pub fn daemonset_spec(d: &DaemonSet, notes: &mut Notes) -> Option<PodSpec> {
    let template = &d.spec.template;
    let mut meta = template.metadata.clone().unwrap_or_default();
    meta.namespace = d.metadata.namespace.clone();
    Some(pod_spec_noting(&meta, template.spec.as_ref()?, &BTreeSet::new(), notes))
}

/// A PodDisruptionBudget → the model's; `Err` names the field that makes
/// it unusable.
pub fn pdb(p: &K8sPdb, notes: &mut Notes) -> Result<PodDisruptionBudget, String> {
    let spec = p.spec.as_ref().ok_or("spec: missing")?;
    let amount = |v: &IntOrString, field: &str| -> Result<IntOrPercent, String> {
        match v {
            IntOrString::Int(i) => u32::try_from(*i).map(IntOrPercent::Count).map_err(|_| format!("{field}: {i} is negative")),
            IntOrString::String(s) => s
                .strip_suffix('%')
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|p| *p <= 100)
                .map(IntOrPercent::Percent)
                .ok_or_else(|| format!("{field}: `{s}` is neither a count nor a percentage from 0% to 100%")),
        }
    };
    let limit = match (&spec.min_available, &spec.max_unavailable) {
        (Some(_), Some(_)) => return Err("spec: minAvailable and maxUnavailable are both set".into()),
        (Some(m), None) => PdbLimit::MinAvailable(amount(m, "spec.minAvailable")?),
        (None, Some(m)) => PdbLimit::MaxUnavailable(amount(m, "spec.maxUnavailable")?),
        (None, None) => return Err("spec: neither minAvailable nor maxUnavailable is set".into()),
    };
    let selector = in_namespaces(label_selector(spec.selector.as_ref(), "spec.selector", notes), &[namespace(&p.metadata)]);
    Ok(PodDisruptionBudget { name: full_name(&p.metadata), selector, limit })
}

/// Resources of a node's allocatable or capacity map.
pub fn node_resources(map: Option<&BTreeMap<String, Quantity>>) -> Resources {
    Resources {
        cpu_millis: quantity(map, "cpu").and_then(|q| parse_cpu_millis(&q).ok()).unwrap_or(0).min(u64::from(u32::MAX)) as u32,
        memory_bytes: quantity(map, "memory").and_then(|q| parse_bytes(&q).ok()).unwrap_or(0),
        pods: quantity(map, "pods").and_then(|q| q.parse().ok()).unwrap_or(110),
        gpus: quantity(map, GPU_RESOURCE).and_then(|q| q.parse().ok()).unwrap_or(0),
        ephemeral_bytes: quantity(map, "ephemeral-storage").and_then(|q| parse_bytes(&q).ok()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> core::Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_pod_spec_keeps_requests_selectors_tolerations_spreads_and_do_not_disrupt() {
        let pod = pod(serde_json::json!({
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
        }));
        let keep = BTreeSet::from(["example.com/cost-centre".to_string()]);
        let spec = pod_spec(&pod.metadata, pod.spec.as_ref().unwrap(), &keep);
        assert_eq!(spec.requests, Resources { cpu_millis: 2000, memory_bytes: (1 << 30) + (512 << 20), pods: 1, gpus: 0, ephemeral_bytes: 0 });
        assert_eq!(spec.node_selector["kubernetes.io/arch"], "arm64");
        assert!(spec.tolerations[0].exists);
        assert_eq!(spec.spread[0].key, TopologyKey::Zone);
        assert!(spec.spread[0].hard);
        // The spread counts the pod's own namespace only.
        assert_eq!(spec.spread[0].selector.requirements, vec![Requirement::is_in("app", &["web"]), Requirement::is_in(NAMESPACE, &["shop"])]);
        assert_eq!(spec.labels[NAMESPACE], "shop");
        assert_eq!(spec.required_terms[0][0], Requirement::is_in("karpenter.sh/capacity-type", &["on-demand"]));
        assert!(spec.do_not_disrupt);
        // Only the annotations a NodePool names are kept.
        assert_eq!(spec.annotations, BTreeMap::from([("example.com/cost-centre".to_string(), "cc-7".to_string())]));
        assert!(pod_spec(&pod.metadata, pod.spec.as_ref().unwrap(), &BTreeSet::new()).annotations.is_empty());
    }

    #[test]
    fn custom_topology_keys_namespaced_terms_and_unreadable_fields_are_kept_or_noted() {
        let pod = pod(serde_json::json!({
            "metadata": {"name": "db-0", "namespace": "data", "labels": {"app": "db"},
                         "annotations": {"controller.kubernetes.io/pod-deletion-cost": "lots"}},
            "spec": {
                "containers": [{"name": "a", "resources": {"requests": {"cpu": "2x", "memory": "4Gi", "ephemeral-storage": "10Gi",
                                                                        "nvidia.com/gpu": "1", "example.com/dongle": "1"}}}],
                "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "example.com/rack", "whenUnsatisfiable": "ScheduleAnyway",
                                               "labelSelector": {"matchLabels": {"app": "db"}}}],
                "affinity": {
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "karpenter.sh/capacity-type", "labelSelector": {"matchLabels": {"app": "db"}}, "namespaces": ["data", "data-2"]}]},
                    "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "cache"}}, "namespaceSelector": {}}]}
                }
            }
        }));
        let mut notes = Vec::new();
        let spec = pod_spec_noting(&pod.metadata, pod.spec.as_ref().unwrap(), &BTreeSet::new(), &mut notes);
        assert_eq!(spec.requests.cpu_millis, 0);
        assert_eq!(spec.requests.memory_bytes, 4 << 30);
        assert_eq!(spec.requests.ephemeral_bytes, 10 << 30);
        assert_eq!(spec.requests.gpus, 1);
        assert_eq!(spec.spread[0].key, TopologyKey::Label("example.com/rack".into()));
        assert_eq!((spec.spread[0].max_skew, spec.spread[0].hard), (2, false));
        assert_eq!(spec.anti_affinity[0].key, TopologyKey::Label("karpenter.sh/capacity-type".into()));
        assert_eq!(spec.anti_affinity[0].selector.requirements[1], Requirement::is_in(NAMESPACE, &["data", "data-2"]));
        // `namespaceSelector: {}`: every namespace.
        assert_eq!(spec.affinity[0].selector.requirements, vec![Requirement::is_in("app", &["cache"])]);
        assert_eq!(
            notes,
            vec![
                "spec.containers[0].requests.cpu: `2x`: unknown suffix `x`; counted as 0".to_string(),
                "spec.containers[0].requests.example.com/dongle: extended resource not modelled (only nvidia.com/gpu); ignored".to_string(),
                "metadata.annotations.controller.kubernetes.io/pod-deletion-cost: `lots` is not an integer; read as 0".to_string(),
            ],
            "{notes:#?}"
        );
    }

    #[test]
    fn a_pdb_is_namespaced_and_a_bad_one_names_its_field() {
        let read = |spec: serde_json::Value| {
            let p: K8sPdb = serde_json::from_value(serde_json::json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": spec})).unwrap();
            pdb(&p, &mut Vec::new())
        };
        let ok = read(serde_json::json!({"maxUnavailable": "25%", "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}})).unwrap();
        assert_eq!(ok.name, "shop/web");
        assert_eq!(ok.limit, PdbLimit::MaxUnavailable(IntOrPercent::Percent(25)));
        assert_eq!(ok.selector.requirements, vec![Requirement::is_in("app", &["web"]), Requirement::is_in(NAMESPACE, &["shop"])]);
        assert_eq!(read(serde_json::json!({"minAvailable": "lots"})).unwrap_err(), "spec.minAvailable: `lots` is neither a count nor a percentage from 0% to 100%");
        assert_eq!(read(serde_json::json!({"minAvailable": -1})).unwrap_err(), "spec.minAvailable: -1 is negative");
        assert_eq!(read(serde_json::json!({})).unwrap_err(), "spec: neither minAvailable nor maxUnavailable is set");
    }

    #[test]
    fn taints_round_trip_as_strings() {
        let t = Taint { key: "nodewright.io/starting".into(), value: "true".into(), effect: TaintEffect::NoSchedule };
        assert_eq!(parse_taint(&taint_string(&t)), Some(t));
        assert_eq!(parse_taint("dedicated:NoExecute").unwrap().value, "");
        assert_eq!(parse_taint("bad"), None);
    }
}
