//! NodePools, read from YAML shaped like Karpenter's v1 `NodePool` (an
//! existing `karpenter.sh/v1` manifest loads as is; `policy` is
//! nodewright's addition). Every error names the file, the NodePool, the
//! field and the value.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::labels::{Operator, Requirement, Taint, TaintEffect, well_known};
use super::quantity::{parse_bytes, parse_cpu_millis, parse_duration};

/// Upper bounds on what a NodePool may launch (on capacity, not allocatable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolLimits {
    /// CPU in millicores.
    pub cpu_millis: Option<u64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// GPUs.
    pub gpus: Option<u64>,
    /// Pod slots (the instance types' max pods).
    pub pods: Option<u64>,
    /// Ephemeral storage in bytes.
    pub ephemeral_bytes: Option<u64>,
    /// Nodes (NodeClaims, launched or not).
    pub nodes: Option<u64>,
}

/// A policy a NodePool uses, with that policy's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// A bundled plugin name (`cheapest`, `spot-savvy`, …), a component
    /// file, or a `PolicyPlugin` resource name.
    pub plugin: String,
    /// The plugin's configuration as JSON.
    pub config: String,
}

/// When consolidation may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsolidationPolicy {
    /// Only nodes without pods.
    WhenEmpty,
    /// Empty and under-used nodes.
    WhenEmptyOrUnderutilized,
    /// As `WhenEmptyOrUnderutilized`, but a move goes ahead only if it
    /// saves enough for what it disrupts (Karpenter's `Balanced`): its
    /// savings as a fraction of the NodePool's $/hour, times `threshold`
    /// (`consolidationThreshold`, 1 to 3, default 2), must reach its
    /// disruption cost as a fraction of the NodePool's.
    Balanced {
        /// `consolidationThreshold`: 1 (cautious) to 3 (eager).
        threshold: u8,
    },
}

/// At least `count` distinct values of `key` among a NodeClaim's
/// offerings (a requirement's `minValues`), so that a launch keeps choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinValues {
    /// A well-known offering label (instance type, family, category, zone, …).
    pub key: String,
    /// Distinct values required.
    pub count: u32,
}

/// How many nodes may be disrupted at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// A count of nodes, or a percentage of the NodePool's nodes.
    pub nodes: BudgetNodes,
    /// Reasons it applies to (empty: all).
    pub reasons: Vec<String>,
    /// Cron schedule when the budget is active (with `duration`).
    pub schedule: Option<String>,
    /// How long it stays active after each schedule hit.
    pub duration: Option<Duration>,
}

/// `nodes` of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetNodes {
    /// At most this many nodes.
    Count(u32),
    /// At most this percentage of nodes (rounded up).
    Percent(u32),
}

/// A NodePool.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePool {
    /// Name.
    pub name: String,
    /// Higher weights are tried first.
    pub weight: i32,
    /// What its nodes may be.
    pub requirements: Vec<Requirement>,
    /// Labels put on its nodes.
    pub labels: BTreeMap<String, String>,
    /// Taints put on its nodes.
    pub taints: Vec<Taint>,
    /// Taints its nodes start with, removed once they are ready.
    pub startup_taints: Vec<Taint>,
    /// Limits.
    pub limits: PoolLimits,
    /// `minValues` of its requirements on offering labels.
    pub min_values: Vec<MinValues>,
    /// Node class name.
    pub node_class: Option<String>,
    /// Forceful expiry (default 720h; `None` for `Never`).
    pub expire_after: Option<Duration>,
    /// Longest a drain may take.
    pub termination_grace_period: Option<Duration>,
    /// Consolidation policy.
    pub consolidation_policy: ConsolidationPolicy,
    /// Wait after the last pod change before consolidating (`None` for `Never`).
    pub consolidate_after: Option<Duration>,
    /// Disruption budgets (default: 10 % of nodes).
    pub budgets: Vec<Budget>,
    /// Instance-selection policy.
    pub selection: PolicyRef,
    /// Consolidation policy plugin.
    pub consolidation: PolicyRef,
    /// Pod label keys its policies are told (`spec.policy.podLabels`).
    pub policy_labels: Vec<String>,
    /// Pod annotation keys its policies are told (`spec.policy.podAnnotations`).
    pub policy_annotations: Vec<String>,
}

impl NodePool {
    /// A NodePool with Karpenter's defaults and no requirements.
    pub fn new(name: &str) -> Self {
        NodePool {
            name: name.into(),
            weight: 0,
            requirements: Vec::new(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            startup_taints: Vec::new(),
            limits: PoolLimits::default(),
            min_values: Vec::new(),
            node_class: None,
            expire_after: Some(Duration::from_secs(720 * 3600)),
            termination_grace_period: None,
            consolidation_policy: ConsolidationPolicy::WhenEmptyOrUnderutilized,
            consolidate_after: Some(Duration::ZERO),
            budgets: vec![Budget { nodes: BudgetNodes::Percent(10), reasons: vec![], schedule: None, duration: None }],
            selection: PolicyRef { plugin: "cheapest".into(), config: "{}".into() },
            consolidation: PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
            policy_labels: Vec::new(),
            policy_annotations: Vec::new(),
        }
    }

    /// With a requirement.
    pub fn require(mut self, requirement: Requirement) -> Self {
        self.requirements.push(requirement);
        self
    }

    /// With weight `weight`.
    pub fn weight(mut self, weight: i32) -> Self {
        self.weight = weight;
        self
    }

    /// With a taint.
    pub fn taint(mut self, taint: Taint) -> Self {
        self.taints.push(taint);
        self
    }

    /// With a node label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// With limits.
    pub fn limits(mut self, limits: PoolLimits) -> Self {
        self.limits = limits;
        self
    }

    /// A digest of what the NodePool makes its nodes from (requirements,
    /// labels, taints, startup taints, node class). A node launched under
    /// another digest has drifted.
    pub fn drift_hash(&self) -> String {
        use sha2::Digest;
        let text = format!(
            "{:?}|{:?}|{:?}|{:?}|{:?}",
            self.requirements, self.labels, self.taints, self.startup_taints, self.node_class
        );
        hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
    }

    /// With the consolidation plugin `plugin` configured by `config` (JSON).
    pub fn consolidation(mut self, plugin: &str, config: &str) -> Self {
        self.consolidation = PolicyRef { plugin: plugin.into(), config: config.into() };
        self
    }

    /// With the selection plugin `plugin` configured by `config` (JSON).
    pub fn selection(mut self, plugin: &str, config: &str) -> Self {
        self.selection = PolicyRef { plugin: plugin.into(), config: config.into() };
        self
    }
}

/// A NodePool file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {resource}: {field}: {message}")]
pub struct NodePoolError {
    /// The file.
    pub file: String,
    /// `NodePool NAME`, or `document N` before the name is known.
    pub resource: String,
    /// Path of the field, e.g. `spec.template.spec.requirements[0].operator`.
    pub field: String,
    /// What is wrong, with the value.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawNodePool {
    api_version: String,
    kind: String,
    metadata: RawMetadata,
    spec: RawSpec,
    /// Written by the controller; an object exported from a cluster carries it.
    #[serde(default)]
    #[allow(dead_code, reason = "accepted and ignored: the status is the controller's, not the user's")]
    status: Option<serde_yaml_ng::Value>,
}

/// Object metadata. The fields an API server sets (what `kubectl get -o
/// yaml` exports) are accepted and ignored, so an exported NodePool loads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code, reason = "the server-set fields are accepted and ignored")]
struct RawMetadata {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    generation: Option<i64>,
    #[serde(default)]
    creation_timestamp: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    deletion_timestamp: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    deletion_grace_period_seconds: Option<i64>,
    #[serde(default)]
    managed_fields: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    finalizers: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    owner_references: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    self_link: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSpec {
    template: RawTemplate,
    #[serde(default)]
    weight: Option<i32>,
    #[serde(default)]
    limits: BTreeMap<String, serde_yaml_ng::Value>,
    #[serde(default)]
    disruption: Option<RawDisruption>,
    #[serde(default)]
    policy: Option<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    #[serde(default)]
    metadata: Option<RawTemplateMetadata>,
    spec: RawTemplateSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplateMetadata {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTemplateSpec {
    #[serde(default)]
    requirements: Vec<RawRequirement>,
    #[serde(default)]
    taints: Vec<RawTaint>,
    #[serde(default)]
    startup_taints: Vec<RawTaint>,
    #[serde(default)]
    node_class_ref: Option<RawNodeClassRef>,
    #[serde(default)]
    expire_after: Option<String>,
    #[serde(default)]
    termination_grace_period: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRequirement {
    key: String,
    operator: String,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    min_values: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaint {
    key: String,
    #[serde(default)]
    value: String,
    effect: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNodeClassRef {
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for Karpenter compatibility")]
    group: Option<String>,
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for Karpenter compatibility")]
    kind: Option<String>,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDisruption {
    #[serde(default)]
    consolidation_policy: Option<String>,
    #[serde(default)]
    consolidation_threshold: Option<u8>,
    #[serde(default)]
    consolidate_after: Option<String>,
    #[serde(default)]
    budgets: Option<Vec<RawBudget>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    nodes: String,
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default)]
    duration: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    selection: Option<RawPolicyRef>,
    #[serde(default, rename = "podLabels")]
    pod_labels: Option<Vec<String>>,
    #[serde(default, rename = "podAnnotations")]
    pod_annotations: Option<Vec<String>>,
    #[serde(default)]
    consolidation: Option<RawPolicyRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicyRef {
    plugin: String,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// The most pod label keys `spec.policy.podLabels` may name, and the most
/// annotation keys `spec.policy.podAnnotations` may.
pub const MAX_POLICY_LABELS: usize = 32;

/// Keys `spec.policy.FIELD` names: at most [`MAX_POLICY_LABELS`], none
/// empty; else (field, why).
fn policy_keys(field: &str, keys: Vec<String>) -> Result<Vec<String>, (String, String)> {
    if keys.len() > MAX_POLICY_LABELS {
        return Err((format!("spec.policy.{field}"), format!("names {} keys, at most {MAX_POLICY_LABELS}", keys.len())));
    }
    if let Some(i) = keys.iter().position(|k| k.trim().is_empty()) {
        return Err((format!("spec.policy.{field}[{i}]"), "is empty".into()));
    }
    Ok(keys)
}

/// Parse every NodePool in `text` (YAML, one or more documents) read from `file`.
pub fn parse_node_pools(file: &str, text: &str) -> Result<Vec<NodePool>, NodePoolError> {
    parse_node_pools_noting(file, text).map(|(pools, _)| pools)
}

/// A document's kind, read before the document is parsed as a NodePool.
#[derive(Deserialize)]
struct Kind {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, rename = "apiVersion")]
    api_version: Option<String>,
}

/// [`parse_node_pools`], and a note for each document of another kind,
/// which is skipped (an `EC2NodeClass` is read for its kubelet settings:
/// [`parse_node_pool_file`]).
pub fn parse_node_pools_noting(file: &str, text: &str) -> Result<(Vec<NodePool>, Vec<String>), NodePoolError> {
    parse_node_pool_file(file, text).map(|f| (f.pools, f.notes))
}

/// What a NodePools file holds for the simulator.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodePoolFile {
    /// Its NodePools.
    pub pools: Vec<NodePool>,
    /// The kubelet settings of each Karpenter `EC2NodeClass` beside them
    /// (as Karpenter's examples ship them), by name: they size the nodes
    /// of the NodePools that name the class ([`super::Catalog::with_kubelets`]).
    pub kubelets: BTreeMap<String, super::KubeletConfig>,
    /// A note for each document read in part or skipped.
    pub notes: Vec<String>,
}

/// Karpenter's `EC2NodeClass`, as far as the simulator reads it.
#[derive(Deserialize)]
struct RawNodeClass {
    metadata: RawMetadata,
    #[serde(default)]
    spec: RawNodeClassSpec,
}

#[derive(Deserialize, Default)]
struct RawNodeClassSpec {
    #[serde(default)]
    kubelet: Option<super::KubeletSpec>,
}

/// Every NodePool in `text` (YAML, one or more documents) read from
/// `file`, and the kubelet settings of each `EC2NodeClass`
/// (`karpenter.k8s.aws/v1`; the rest of a class is `nodewright run`'s);
/// documents of other kinds are skipped with a note.
pub fn parse_node_pool_file(file: &str, text: &str) -> Result<NodePoolFile, NodePoolError> {
    // The kinds up to the first document that does not read (the parse
    // below stops there with its error; the document iterator would yield
    // that error again and again).
    let mut kinds: Vec<Option<Kind>> = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        match Kind::deserialize(document) {
            Ok(kind) => kinds.push(Some(kind)),
            Err(_) => break,
        }
    }
    let mut notes = Vec::new();
    let mut pools: Vec<NodePool> = Vec::new();
    let mut kubelets = BTreeMap::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let resource = format!("document {}", index + 1);
        if let Some(Some(Kind { kind: Some(kind), api_version })) = kinds.get(index)
            && kind != "NodePool"
        {
            let api = api_version.as_deref().unwrap_or("no apiVersion");
            if kind == "EC2NodeClass" && api == "karpenter.k8s.aws/v1" {
                let class: RawNodeClass = serde_path_to_error::deserialize(document).map_err(|e| {
                    let (field, message) = yaml_error(e);
                    NodePoolError { file: file.into(), resource: resource.clone(), field, message }
                })?;
                let name = class.metadata.name;
                let error = |field: String, message: String| NodePoolError { file: file.into(), resource: format!("EC2NodeClass {name}"), field, message };
                let kubelet = class.spec.kubelet.unwrap_or_default().config().map_err(|(field, m)| error(format!("spec.kubelet.{field}"), m))?;
                if kubelets.insert(name.clone(), kubelet).is_some() {
                    return Err(error("metadata.name".into(), format!("`{name}` is defined twice")));
                }
                notes.push(format!("{file}: {resource}: EC2NodeClass {name} ({api}): its kubelet settings size its NodePools' nodes; the rest is read by `nodewright run`"));
                continue;
            }
            notes.push(format!("{file}: {resource}: {kind} ({api}) skipped: only NodePools are read here"));
            continue;
        }
        let raw: RawNodePool = serde_path_to_error::deserialize(document).map_err(|e| {
            let (field, message) = yaml_error(e);
            NodePoolError { file: file.into(), resource: resource.clone(), field, message }
        })?;
        let pool = convert(raw).map_err(|(resource, field, message)| NodePoolError {
            file: file.into(),
            resource,
            field,
            message,
        })?;
        if pools.iter().any(|p| p.name == pool.name) {
            return Err(NodePoolError {
                file: file.into(),
                resource: format!("NodePool {}", pool.name),
                field: "metadata.name".into(),
                message: format!("`{}` is defined twice", pool.name),
            });
        }
        pools.push(pool);
    }
    Ok(NodePoolFile { pools, kubelets, notes })
}

/// The field path and message of a YAML error, without the parser
/// repeating the path at the front of its message.
pub fn yaml_error(e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> (String, String) {
    let path = e.path().to_string();
    let message = e.into_inner().to_string();
    let message = match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.contains(' ') && path.starts_with(prefix) => rest.to_string(),
        _ => message,
    };
    (if path == "." { "(document)".into() } else { path }, message)
}

type Failure = (String, String, String);

fn convert(raw: RawNodePool) -> Result<NodePool, Failure> {
    let resource = format!("NodePool {}", raw.metadata.name);
    let fail = |field: &str, message: String| (resource.clone(), field.to_string(), message);
    if !matches!(raw.api_version.as_str(), "nodewright.io/v1alpha1" | "karpenter.sh/v1") {
        return Err(fail("apiVersion", format!("`{}` is not nodewright.io/v1alpha1 or karpenter.sh/v1", raw.api_version)));
    }
    if raw.kind != "NodePool" {
        return Err(fail("kind", format!("`{}` is not NodePool", raw.kind)));
    }
    if raw.metadata.name.is_empty() {
        return Err(fail("metadata.name", "must not be empty".into()));
    }
    let _ = (&raw.metadata.labels, &raw.metadata.annotations);
    let mut pool = NodePool::new(&raw.metadata.name);
    let spec = raw.spec;
    if let Some(weight) = spec.weight {
        if !(0..=100).contains(&weight) {
            return Err(fail("spec.weight", format!("{weight} is not between 0 and 100")));
        }
        pool.weight = weight;
    }
    let template = spec.template.spec;
    for (i, r) in template.requirements.iter().enumerate() {
        let field = format!("spec.template.spec.requirements[{i}]");
        let operator = Operator::parse(&r.operator).map_err(|m| fail(&format!("{field}.operator"), m))?;
        let requirement =
            Requirement::new(&r.key, operator, r.values.clone()).map_err(|m| fail(&field, format!("{}: {m}", r.key)))?;
        if r.min_values.is_some_and(|m| m as usize > r.values.len() && operator == Operator::In) {
            return Err(fail(&format!("{field}.minValues"), format!("{} exceeds the {} values given", r.min_values.unwrap_or(0), r.values.len())));
        }
        if r.key == well_known::HOSTNAME {
            return Err(fail(&format!("{field}.key"), format!("`{}` cannot be required of a new node", r.key)));
        }
        // On an offering label, kept by every NodeClaim; on another key the
        // node carries one of the values given, checked above.
        if let Some(count) = r.min_values {
            if count == 0 {
                return Err(fail(&format!("{field}.minValues"), "must be at least 1".into()));
            }
            if well_known::OFFERING_KEYS.contains(&r.key.as_str()) {
                pool.min_values.retain(|m| m.key != r.key);
                pool.min_values.push(MinValues { key: r.key.clone(), count });
            }
        }
        pool.requirements.push(requirement);
    }
    if let Some(metadata) = spec.template.metadata {
        for key in metadata.labels.keys() {
            if well_known::OFFERING_KEYS.contains(&key.as_str()) || key == well_known::HOSTNAME {
                return Err(fail("spec.template.metadata.labels", format!("`{key}` is set by nodewright, use a requirement instead")));
            }
        }
        pool.labels = metadata.labels;
        let _ = metadata.annotations;
    }
    let taints = |list: &[RawTaint], field: &str| -> Result<Vec<Taint>, Failure> {
        list.iter()
            .enumerate()
            .map(|(i, t)| {
                let effect = TaintEffect::parse(&t.effect).map_err(|m| fail(&format!("{field}[{i}].effect"), m))?;
                if t.key.is_empty() {
                    return Err(fail(&format!("{field}[{i}].key"), "must not be empty".into()));
                }
                Ok(Taint { key: t.key.clone(), value: t.value.clone(), effect })
            })
            .collect()
    };
    pool.taints = taints(&template.taints, "spec.template.spec.taints")?;
    pool.startup_taints = taints(&template.startup_taints, "spec.template.spec.startupTaints")?;
    pool.node_class = template.node_class_ref.map(|r| r.name);
    let never_or = |value: &Option<String>, field: &str, default: Option<Duration>| -> Result<Option<Duration>, Failure> {
        match value.as_deref() {
            None => Ok(default),
            Some("Never") => Ok(None),
            Some(text) => parse_duration(text).map(Some).map_err(|m| fail(field, m)),
        }
    };
    pool.expire_after = never_or(&template.expire_after, "spec.template.spec.expireAfter", pool.expire_after)?;
    pool.termination_grace_period =
        never_or(&template.termination_grace_period, "spec.template.spec.terminationGracePeriod", None)?;
    for (key, value) in &spec.limits {
        let field = format!("spec.limits.{key}");
        let text = match value {
            serde_yaml_ng::Value::String(s) => s.clone(),
            serde_yaml_ng::Value::Number(n) => n.to_string(),
            other => return Err(fail(&field, format!("{other:?} is not a quantity"))),
        };
        let quantity = |text: &str| parse_bytes(text).map_err(|m| fail(&field, m));
        match key.as_str() {
            "cpu" => pool.limits.cpu_millis = Some(parse_cpu_millis(&text).map_err(|m| fail(&field, m))?),
            "memory" => pool.limits.memory_bytes = Some(quantity(&text)?),
            "nvidia.com/gpu" | "gpu" => pool.limits.gpus = Some(quantity(&text)?),
            "pods" => pool.limits.pods = Some(quantity(&text)?),
            "ephemeral-storage" => pool.limits.ephemeral_bytes = Some(quantity(&text)?),
            "nodes" => pool.limits.nodes = Some(quantity(&text)?),
            // Any other resource (`aws.amazon.com/neuron`, …): no modelled
            // instance type has it, so the NodePool's use of it stays 0,
            // within any limit; the quantity is still checked.
            _ => {
                quantity(&text)?;
            }
        }
    }
    if let Some(disruption) = spec.disruption {
        if let Some(policy) = disruption.consolidation_policy {
            pool.consolidation_policy = match policy.as_str() {
                "WhenEmpty" => ConsolidationPolicy::WhenEmpty,
                "WhenEmptyOrUnderutilized" => ConsolidationPolicy::WhenEmptyOrUnderutilized,
                "Balanced" => ConsolidationPolicy::Balanced { threshold: 2 },
                other => {
                    return Err(fail(
                        "spec.disruption.consolidationPolicy",
                        format!("`{other}` is not WhenEmpty, WhenEmptyOrUnderutilized or Balanced"),
                    ));
                }
            };
        }
        if let Some(threshold) = disruption.consolidation_threshold {
            let field = "spec.disruption.consolidationThreshold";
            if !(1..=3).contains(&threshold) {
                return Err(fail(field, format!("{threshold} is not 1, 2 or 3")));
            }
            match &mut pool.consolidation_policy {
                ConsolidationPolicy::Balanced { threshold: t } => *t = threshold,
                _ => return Err(fail(field, "applies to consolidationPolicy: Balanced only".into())),
            }
        }
        pool.consolidate_after =
            never_or(&disruption.consolidate_after, "spec.disruption.consolidateAfter", pool.consolidate_after)?;
        if let Some(budgets) = disruption.budgets {
            pool.budgets = budgets
                .iter()
                .enumerate()
                .map(|(i, b)| parse_budget(b).map_err(|(f, m)| fail(&format!("spec.disruption.budgets[{i}].{f}"), m)))
                .collect::<Result<_, _>>()?;
        }
    }
    if let Some(policy) = spec.policy {
        let convert = |r: RawPolicyRef| PolicyRef {
            plugin: r.plugin,
            config: r.config.map_or_else(|| "{}".into(), |c| c.to_string()),
        };
        if let Some(selection) = policy.selection {
            if selection.plugin.is_empty() {
                return Err(fail("spec.policy.selection.plugin", "must not be empty".into()));
            }
            pool.selection = convert(selection);
        }
        if let Some(consolidation) = policy.consolidation {
            if consolidation.plugin.is_empty() {
                return Err(fail("spec.policy.consolidation.plugin", "must not be empty".into()));
            }
            pool.consolidation = convert(consolidation);
        }
        if let Some(keys) = policy.pod_labels {
            pool.policy_labels = policy_keys("podLabels", keys).map_err(|(field, why)| fail(&field, why))?;
        }
        if let Some(keys) = policy.pod_annotations {
            pool.policy_annotations = policy_keys("podAnnotations", keys).map_err(|(field, why)| fail(&field, why))?;
        }
    }
    Ok(pool)
}

fn parse_budget(raw: &RawBudget) -> Result<Budget, (String, String)> {
    let nodes = match raw.nodes.strip_suffix('%') {
        Some(percent) => match percent.parse::<u32>() {
            Ok(p) if p <= 100 => BudgetNodes::Percent(p),
            _ => return Err(("nodes".into(), format!("`{}` is not a percentage from 0% to 100%", raw.nodes))),
        },
        None => BudgetNodes::Count(
            raw.nodes.parse().map_err(|_| ("nodes".to_string(), format!("`{}` is not a node count or a percentage", raw.nodes)))?,
        ),
    };
    for reason in &raw.reasons {
        if !matches!(reason.as_str(), "Underutilized" | "Empty" | "Drifted") {
            return Err(("reasons".into(), format!("`{reason}` is not one of Underutilized, Empty, Drifted")));
        }
    }
    if raw.schedule.is_some() != raw.duration.is_some() {
        return Err(("schedule".into(), "schedule and duration go together".into()));
    }
    if let Some(schedule) = &raw.schedule {
        let five_fields = schedule.split_whitespace().count() == 5 || schedule.starts_with('@');
        if let Err(e) = schedule.parse::<croner::Cron>().map_err(|e| e.to_string()).and_then(|c| {
            if five_fields { Ok(c) } else { Err("it needs five fields".into()) }
        }) {
            return Err(("schedule".into(), format!("`{schedule}` is not a five-field cron schedule: {e}")));
        }
    }
    let duration = raw.duration.as_deref().map(parse_duration).transpose().map_err(|m| ("duration".to_string(), m))?;
    Ok(Budget { nodes, reasons: raw.reasons.clone(), schedule: raw.schedule.clone(), duration })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KARPENTER: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: default
spec:
  template:
    metadata:
      labels:
        team: web
    spec:
      requirements:
        - key: kubernetes.io/arch
          operator: In
          values: ["amd64", "arm64"]
        - key: karpenter.sh/capacity-type
          operator: In
          values: ["spot", "on-demand"]
        - key: karpenter.k8s.aws/instance-generation
          operator: Gt
          values: ["2"]
      nodeClassRef:
        group: karpenter.k8s.aws
        kind: EC2NodeClass
        name: default
      expireAfter: 720h
  limits:
    cpu: 1000
    memory: 1000Gi
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: 1m
    budgets:
      - nodes: "10%"
      - nodes: "0"
        schedule: "0 9 * * mon-fri"
        duration: 8h
        reasons: ["Underutilized"]
"#;

    #[test]
    fn a_karpenter_v1_node_pool_loads_unchanged() {
        let pools = parse_node_pools("default.yaml", KARPENTER).unwrap();
        let pool = &pools[0];
        assert_eq!(pool.name, "default");
        assert_eq!(pool.requirements.len(), 3);
        assert_eq!(pool.labels.get("team").map(String::as_str), Some("web"));
        assert_eq!(pool.limits, PoolLimits { cpu_millis: Some(1_000_000), memory_bytes: Some(1000 << 30), ..PoolLimits::default() });
        assert_eq!(pool.consolidate_after, Some(Duration::from_secs(60)));
        assert_eq!(pool.budgets.len(), 2);
        assert_eq!(pool.budgets[1].nodes, BudgetNodes::Count(0));
        assert_eq!(pool.selection.plugin, "cheapest");
        assert_eq!(pool.node_class.as_deref(), Some("default"));
    }

    #[test]
    fn limits_on_nodes_pods_and_any_resource_and_min_values_and_balanced_load() {
        let text = KARPENTER
            .replace("    memory: 1000Gi\n", "    memory: 1000Gi\n    nodes: 20\n    pods: 500\n    ephemeral-storage: 2Ti\n    aws.amazon.com/neuron: 4\n")
            .replace("          values: [\"2\"]\n", "          values: [\"2\"]\n        - key: karpenter.k8s.aws/instance-family\n          operator: Exists\n          minValues: 5\n        - key: team\n          operator: In\n          values: [a, b]\n          minValues: 2\n")
            .replace("consolidationPolicy: WhenEmptyOrUnderutilized", "consolidationPolicy: Balanced");
        let pool = &parse_node_pools("p.yaml", &text).unwrap()[0];
        assert_eq!(pool.limits.nodes, Some(20));
        assert_eq!(pool.limits.pods, Some(500));
        assert_eq!(pool.limits.ephemeral_bytes, Some(2 << 40));
        // Offering labels only: a custom key's node gets one of its values.
        assert_eq!(pool.min_values, vec![MinValues { key: "karpenter.k8s.aws/instance-family".into(), count: 5 }]);
        assert_eq!(pool.consolidation_policy, ConsolidationPolicy::Balanced { threshold: 2 });
        let with_threshold = text.replace("consolidationPolicy: Balanced\n", "consolidationPolicy: Balanced\n    consolidationThreshold: 3\n");
        assert_eq!(parse_node_pools("p.yaml", &with_threshold).unwrap()[0].consolidation_policy, ConsolidationPolicy::Balanced { threshold: 3 });
        assert_eq!(
            error(&text.replace("consolidationPolicy: Balanced\n", "consolidationPolicy: Balanced\n    consolidationThreshold: 4\n")),
            "pools.yaml: NodePool default: spec.disruption.consolidationThreshold: 4 is not 1, 2 or 3"
        );
        assert_eq!(
            error(&KARPENTER.replace("consolidationPolicy: WhenEmptyOrUnderutilized\n", "consolidationPolicy: WhenEmpty\n    consolidationThreshold: 2\n")),
            "pools.yaml: NodePool default: spec.disruption.consolidationThreshold: applies to consolidationPolicy: Balanced only"
        );
        assert_eq!(
            error(&KARPENTER.replace("    memory: 1000Gi\n", "    memory: 1000Gi\n    nodes: lots\n")),
            "pools.yaml: NodePool default: spec.limits.nodes: `lots` is not a quantity"
        );
        assert_eq!(
            error(&text.replace("minValues: 5", "minValues: 0")),
            "pools.yaml: NodePool default: spec.template.spec.requirements[3].minValues: must be at least 1"
        );
    }

    #[test]
    fn the_policy_section_names_plugins_and_their_config() {
        let text = KARPENTER.replace("  limits:\n", "  policy:\n    selection:\n      plugin: spot-savvy\n      config:\n        risk_weight: 2\n  limits:\n");
        let pool = &parse_node_pools("p.yaml", &text).unwrap()[0];
        assert_eq!(pool.selection, PolicyRef { plugin: "spot-savvy".into(), config: r#"{"risk_weight":2}"#.into() });
    }

    fn error(text: &str) -> String {
        parse_node_pools("pools.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn pod_labels_name_the_keys_policies_are_told_and_bad_ones_are_refused() {
        let with = |keys: &str| KARPENTER.replace("  limits:\n", &format!("  policy:\n    podLabels: {keys}\n  limits:\n"));
        let pool = &parse_node_pools("p.yaml", &with("[team, tier]")).unwrap()[0];
        assert_eq!(pool.policy_labels, vec!["team".to_string(), "tier".to_string()]);
        assert_eq!(error(&with("[team, \"\"]")), "pools.yaml: NodePool default: spec.policy.podLabels[1]: is empty");
        let many = format!("[{}]", (0..33).map(|i| format!("k{i}")).collect::<Vec<_>>().join(", "));
        assert_eq!(error(&with(&many)), "pools.yaml: NodePool default: spec.policy.podLabels: names 33 keys, at most 32");
    }

    #[test]
    fn other_kinds_in_a_file_are_skipped_with_a_note_as_karpenter_ships_a_node_pool_with_its_node_class() {
        let node_class = "---\napiVersion: karpenter.k8s.aws/v1\nkind: EC2NodeClass\nmetadata:\n  name: default\nspec:\n  role: KarpenterNodeRole-my-cluster\n  amiSelectorTerms:\n    - alias: al2023@latest\n";
        let (pools, notes) = parse_node_pools_noting("example.yaml", &format!("{KARPENTER}{node_class}")).unwrap();
        assert_eq!(pools.len(), 1);
        assert_eq!(pools[0].name, "default");
        assert_eq!(notes, vec!["example.yaml: document 2: EC2NodeClass default (karpenter.k8s.aws/v1): its kubelet settings size its NodePools' nodes; the rest is read by `nodewright run`".to_string()]);
        // Skipped in the middle: the documents after it are read.
        let second = KARPENTER.replace("name: default", "name: second");
        let (pools, notes) = parse_node_pools_noting("example.yaml", &format!("{KARPENTER}{node_class}---\n{second}")).unwrap();
        assert_eq!(pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), vec!["default", "second"]);
        assert_eq!(notes.len(), 1);
        // A NodePool document with a mistake is still refused by its field.
        let bad = KARPENTER.replace("  limits:\n", "  limitz:\n");
        assert!(parse_node_pools_noting("example.yaml", &format!("{bad}{node_class}")).is_err());
    }

    #[test]
    fn a_node_class_beside_its_node_pools_is_read_for_its_kubelet_settings() {
        let class = |name: &str, kubelet: &str| {
            format!("---\napiVersion: karpenter.k8s.aws/v1\nkind: EC2NodeClass\nmetadata:\n  name: {name}\nspec:\n  role: Nodes\n  amiSelectorTerms:\n    - alias: al2023@latest\n{kubelet}")
        };
        let text = format!("{KARPENTER}{}{}", class("default", "  kubelet:\n    maxPods: 20\n    systemReserved:\n      cpu: 200m\n"), class("plain", ""));
        let file = parse_node_pool_file("example.yaml", &text).unwrap();
        assert_eq!(file.pools.len(), 1);
        let dense = super::super::KubeletConfig {
            max_pods: Some(20),
            system_reserved: super::super::Reserved { cpu_millis: Some(200), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(file.kubelets, BTreeMap::from([("default".to_string(), dense), ("plain".to_string(), Default::default())]));
        assert_eq!(file.notes.len(), 2);
        let refused = |kubelet: &str| parse_node_pool_file("f.yaml", &format!("{KARPENTER}{}", class("default", kubelet))).unwrap_err().to_string();
        assert_eq!(refused("  kubelet:\n    maxPods: 0\n"), "f.yaml: EC2NodeClass default: spec.kubelet.maxPods: must be at least 1");
        assert_eq!(refused("  kubelet:\n    kubeReserved:\n      memory: lots\n"), "f.yaml: EC2NodeClass default: spec.kubelet.kubeReserved.memory: `lots` is not a quantity");
        assert!(refused("  kubelet:\n    maxPod: 3\n").starts_with("f.yaml: document 2: spec.kubelet.maxPod: unknown field"), "{}", refused("  kubelet:\n    maxPod: 3\n"));
        let twice = format!("{KARPENTER}{}{}", class("default", ""), class("default", ""));
        assert_eq!(parse_node_pool_file("f.yaml", &twice).unwrap_err().to_string(), "f.yaml: EC2NodeClass default: metadata.name: `default` is defined twice");
    }

    #[test]
    fn pod_annotations_name_the_keys_policies_are_told_and_bad_ones_are_refused() {
        let with = |keys: &str| KARPENTER.replace("  limits:\n", &format!("  policy:\n    podAnnotations: {keys}\n  limits:\n"));
        let pool = &parse_node_pools("p.yaml", &with("[example.com/cost-centre]")).unwrap()[0];
        assert_eq!(pool.policy_annotations, vec!["example.com/cost-centre".to_string()]);
        assert!(pool.policy_labels.is_empty());
        assert_eq!(error(&with("[\" \"]")), "pools.yaml: NodePool default: spec.policy.podAnnotations[0]: is empty");
        let many = format!("[{}]", (0..33).map(|i| format!("k{i}")).collect::<Vec<_>>().join(", "));
        assert_eq!(error(&with(&many)), "pools.yaml: NodePool default: spec.policy.podAnnotations: names 33 keys, at most 32");
    }

    #[test]
    fn bad_node_pools_name_file_resource_field_and_value() {
        assert_eq!(
            error(&KARPENTER.replace("operator: Gt", "operator: Greater")),
            "pools.yaml: NodePool default: spec.template.spec.requirements[2].operator: `Greater` is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte, Lte"
        );
        assert_eq!(
            error(&KARPENTER.replace("values: [\"2\"]", "values: [\"two\"]")),
            "pools.yaml: NodePool default: spec.template.spec.requirements[2]: karpenter.k8s.aws/instance-generation: operator Gt needs exactly one integer value, got [\"two\"]"
        );
        assert_eq!(
            error(&KARPENTER.replace("memory: 1000Gi", "memory: 1000Qi")),
            "pools.yaml: NodePool default: spec.limits.memory: `1000Qi`: unknown suffix `Qi`"
        );
        assert_eq!(
            error(&KARPENTER.replace("nodes: \"10%\"", "nodes: \"110%\"")),
            "pools.yaml: NodePool default: spec.disruption.budgets[0].nodes: `110%` is not a percentage from 0% to 100%"
        );
        assert_eq!(
            error(&KARPENTER.replace("expireAfter: 720h", "expireAfter: 30d")),
            "pools.yaml: NodePool default: spec.template.spec.expireAfter: `30d` is not a duration like 30s, 15m or 720h"
        );
        let typo = error(&KARPENTER.replace("requirements:", "requirement:"));
        assert!(
            typo.starts_with("pools.yaml: document 1: spec.template.spec.requirement: unknown field `requirement`, expected one of `requirements`"),
            "{typo}"
        );
        assert!(typo.ends_with(" at line 12 column 7"), "{typo}");
        assert_eq!(
            error(&format!("{KARPENTER}---\n{KARPENTER}")),
            "pools.yaml: NodePool default: metadata.name: `default` is defined twice"
        );
    }

    #[test]
    fn durations_too_long_to_hold_are_an_error_naming_the_field() {
        let error = |text: &str| parse_node_pools("pools.yaml", text).unwrap_err().to_string();
        assert_eq!(
            error(&KARPENTER.replace("expireAfter: 720h", "expireAfter: 99999999999999999h")),
            "pools.yaml: NodePool default: spec.template.spec.expireAfter: `99999999999999999h` is longer than the longest accepted duration (2562047h)"
        );
        assert_eq!(
            error(&KARPENTER.replace("consolidateAfter: 1m", "consolidateAfter: 1000000000000h")),
            "pools.yaml: NodePool default: spec.disruption.consolidateAfter: `1000000000000h` is longer than the longest accepted duration (2562047h)"
        );
        assert_eq!(
            error(&KARPENTER.replace("cpu: 1000", "cpu: 99999999999")),
            "pools.yaml: NodePool default: spec.limits.cpu: `99999999999` is larger than the largest accepted quantity (1000000 cores)"
        );
    }

    #[test]
    fn a_node_pool_exported_from_a_cluster_loads_with_its_server_fields_ignored() {
        let exported = KARPENTER.replace(
            "metadata:\n  name: default\n",
            "metadata:\n  name: default\n  uid: 4b2f8a51-6e0c-4c47-9d7e-0f7a3c2b1d11\n  resourceVersion: \"918273\"\n  generation: 3\n  creationTimestamp: \"2026-11-02T09:14:07Z\"\n  annotations:\n    karpenter.sh/nodepool-hash: \"6821555240594823858\"\n    kubectl.kubernetes.io/last-applied-configuration: |\n      {\"apiVersion\":\"karpenter.sh/v1\"}\n  managedFields:\n    - manager: kubectl-client-side-apply\n      operation: Update\n      apiVersion: karpenter.sh/v1\n      fieldsType: FieldsV1\n      fieldsV1: {f:spec: {}}\n",
        ) + "status:\n  conditions:\n    - type: Ready\n      status: \"True\"\n      reason: Ready\n      lastTransitionTime: \"2026-11-02T09:14:09Z\"\n  resources:\n    cpu: \"16\"\n";
        assert!(exported.contains("managedFields"), "the fixture carries the server's fields");
        let exported_pools = parse_node_pools("exported.yaml", &exported).unwrap_or_else(|e| panic!("{e}"));
        let written = parse_node_pools("pools.yaml", KARPENTER).unwrap();
        assert_eq!(exported_pools.len(), 1);
        assert_eq!(exported_pools[0].drift_hash(), written[0].drift_hash(), "the server's fields change nothing");
        assert_eq!(exported_pools[0].expire_after, written[0].expire_after);
    }
}
