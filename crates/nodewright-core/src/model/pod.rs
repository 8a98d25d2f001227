//! Pods as the scheduler sees them: requests and every constraint on
//! placement. Pods of one workload share one [`PodSpec`] (an `Arc`), which
//! is also how the scheduler groups identical pods.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::labels::{Requirement, Taint, Toleration, labels_match, tolerates_all};
use super::Resources;

/// The node label whose values are a constraint's topology domains.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TopologyKey {
    /// `topology.kubernetes.io/zone`.
    Zone,
    /// `kubernetes.io/hostname`: each node is its own domain.
    Hostname,
    /// Any other node label: a node's domain is its value of the label (a
    /// node without it is in none). A new node's value comes from its
    /// NodePool's labels, or, for a label that describes the offering
    /// (`karpenter.sh/capacity-type`, the instance type…), from the
    /// offering it is bought as.
    Label(String),
}

/// Selects pods by their labels (`matchLabels` and `matchExpressions` together).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct LabelSelector {
    /// Requirements on pod labels (`matchLabels` become `In` with one value).
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Select pods whose label `key` is `value`.
    pub fn label(key: &str, value: &str) -> Self {
        LabelSelector { requirements: vec![Requirement::is_in(key, &[value])] }
    }

    /// Does a pod with `labels` match?
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        super::labels::labels_match(&self.requirements, labels)
    }
}

/// A topology spread constraint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopologySpread {
    /// The domain.
    pub key: TopologyKey,
    /// Most difference allowed between the fullest and the emptiest domain.
    pub max_skew: u32,
    /// `DoNotSchedule` (true) or `ScheduleAnyway` (false, a preference).
    pub hard: bool,
    /// Pods counted.
    pub selector: LabelSelector,
}

/// A required pod (anti-)affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodAffinityTerm {
    /// The domain.
    pub key: TopologyKey,
    /// Pods it refers to.
    pub selector: LabelSelector,
}

/// A preferred node-affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PreferredTerm {
    /// Weight 1–100; lighter preferences are relaxed first.
    pub weight: i32,
    /// What is preferred.
    pub requirements: Vec<Requirement>,
}

/// Everything about a pod except its name: shared by the pods of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct PodSpec {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Resource requests.
    pub requests: Resources,
    /// Priority (higher is placed first).
    pub priority: i32,
    /// `nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// Required node-affinity terms; any one must hold (empty: no constraint).
    pub required_terms: Vec<Vec<Requirement>>,
    /// Preferred node-affinity terms.
    pub preferred_terms: Vec<PreferredTerm>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Topology spread constraints.
    pub spread: Vec<TopologySpread>,
    /// Required pod affinity.
    pub affinity: Vec<PodAffinityTerm>,
    /// Required pod anti-affinity.
    pub anti_affinity: Vec<PodAffinityTerm>,
    /// `nodewright.io/do-not-disrupt: "true"`.
    pub do_not_disrupt: bool,
    /// `controller.kubernetes.io/pod-deletion-cost` (0 when absent).
    #[serde(default)]
    pub deletion_cost: i32,
    /// It runs to completion (a Job's pod): evicted, it loses its work.
    #[serde(default)]
    pub job: bool,
    /// Annotations a policy may be told of (those whose keys a NodePool
    /// names in `spec.policy.podAnnotations`; the others are not kept, so
    /// the pods of a workload keep sharing one spec).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    /// `namespace/name`.
    pub name: Arc<str>,
    /// Its spec, shared with identical pods.
    pub spec: Arc<PodSpec>,
    /// When it started running on its node, since the Unix epoch (a
    /// bound pod's `status.startTime`), when the cluster knows. Kept as an
    /// instant rather than a duration so a cluster can hand out the same
    /// pod, unchanged, pass after pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<std::time::Duration>,
}

impl Pod {
    /// A pod named `name` with `spec`.
    pub fn new(name: impl Into<Arc<str>>, spec: Arc<PodSpec>) -> Self {
        Pod { name: name.into(), spec, started: None }
    }

    /// How long it has run by `now` (since the Unix epoch), if the
    /// cluster said when it started.
    pub fn running_for(&self, now: std::time::Duration) -> Option<std::time::Duration> {
        self.started.map(|at| now.saturating_sub(at))
    }
}

/// The pods bound to one node, by name, shared: a cluster hands out the
/// same list until the node's pods change, so a controller reading every
/// node's pods each pass copies nothing.
#[derive(Debug, Clone, Default)]
pub struct BoundPods {
    /// The pods, by name.
    pub pods: Arc<[Pod]>,
    /// A digest of the pods' names: equal digests, the same pods (as far as
    /// a 64-bit hash tells).
    pub digest: u64,
}

impl BoundPods {
    /// `pods` (any order) as a shared list by name, with their digest.
    pub fn new(mut pods: Vec<Pod>) -> Self {
        use std::hash::{Hash, Hasher};
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        let mut hasher = rustc_hash::FxHasher::default();
        for pod in &pods {
            pod.name.hash(&mut hasher);
        }
        BoundPods { digest: hasher.finish(), pods: pods.into() }
    }
}

impl PodSpec {
    /// Does anything about where the pod may run name node label `key`:
    /// its node selector, a node-affinity term (required or preferred), or
    /// the topology key of a spread or (anti-)affinity term?
    pub fn mentions_label(&self, key: &str) -> bool {
        let topology = |k: &TopologyKey| matches!(k, TopologyKey::Label(l) if l == key);
        self.node_selector.contains_key(key)
            || self.required_terms.iter().flatten().any(|r| r.key == key)
            || self.preferred_terms.iter().flat_map(|t| &t.requirements).any(|r| r.key == key)
            || self.spread.iter().any(|s| topology(&s.key))
            || self.affinity.iter().chain(&self.anti_affinity).any(|a| topology(&a.key))
    }

    /// What evicting the pod costs, as Karpenter counts it: 1, plus its
    /// `controller.kubernetes.io/pod-deletion-cost` over 2^27, plus its
    /// priority over 2^25, clamped to [-10, 10].
    pub fn eviction_cost(&self) -> f64 {
        let cost = 1.0 + f64::from(self.deletion_cost) / f64::from(1u32 << 27) + f64::from(self.priority) / f64::from(1u32 << 25);
        cost.clamp(-10.0, 10.0)
    }

    /// As a daemonset's pod template: does it run on a node with `labels`
    /// and `taints`? Its node selector and required node affinity must
    /// hold and it must tolerate the taints. [`daemonsets_on`] is the one
    /// place nodes get their daemonset pods from.
    pub fn runs_on(&self, labels: &BTreeMap<String, String>, taints: &[Taint]) -> bool {
        self.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            && (self.required_terms.is_empty() || self.required_terms.iter().any(|t| labels_match(t, labels)))
            && tolerates_all(&self.tolerations, taints)
    }

    /// As a daemonset's pod template: may it run on some node of a NodePool
    /// whose nodes all carry `labels` and `taints`? A label the pool does not
    /// fix (zone, instance type) may match, so this is an upper bound: what
    /// the scheduler reserves on a NodeClaim before its offering is known.
    pub fn may_run_in(&self, labels: &BTreeMap<String, String>, taints: &[Taint]) -> bool {
        self.node_selector.iter().all(|(k, v)| labels.get(k).is_none_or(|l| l == v)) && tolerates_all(&self.tolerations, taints)
    }

    /// A spec requesting `cpu_millis` and `memory_bytes`.
    pub fn requesting(cpu_millis: u32, memory_bytes: u64) -> Self {
        PodSpec { requests: Resources::pod(cpu_millis, memory_bytes), ..PodSpec::default() }
    }

    /// With label `key=value`.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// With annotation `key=value`.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// With `nodeSelector` `key=value`.
    pub fn node_selector(mut self, key: &str, value: &str) -> Self {
        self.node_selector.insert(key.into(), value.into());
        self
    }

    /// With one required node-affinity term (ANDed requirements).
    pub fn require(mut self, term: Vec<Requirement>) -> Self {
        self.required_terms.push(term);
        self
    }

    /// With a preferred node-affinity term.
    pub fn prefer(mut self, weight: i32, requirements: Vec<Requirement>) -> Self {
        self.preferred_terms.push(PreferredTerm { weight, requirements });
        self
    }

    /// With a toleration.
    pub fn tolerate(mut self, toleration: Toleration) -> Self {
        self.tolerations.push(toleration);
        self
    }

    /// With a topology spread constraint over pods matching `selector`.
    pub fn spread(mut self, key: TopologyKey, max_skew: u32, hard: bool, selector: LabelSelector) -> Self {
        self.spread.push(TopologySpread { key, max_skew, hard, selector });
        self
    }

    /// With required pod affinity to pods matching `selector`.
    pub fn affinity(mut self, key: TopologyKey, selector: LabelSelector) -> Self {
        self.affinity.push(PodAffinityTerm { key, selector });
        self
    }

    /// With required pod anti-affinity to pods matching `selector`.
    pub fn anti_affinity(mut self, key: TopologyKey, selector: LabelSelector) -> Self {
        self.anti_affinity.push(PodAffinityTerm { key, selector });
        self
    }

    /// With `gpus` GPUs requested.
    pub fn gpus(mut self, gpus: u32) -> Self {
        self.requests.gpus = gpus;
        self
    }

    /// With priority `priority`.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Marked `nodewright.io/do-not-disrupt`.
    pub fn do_not_disrupt(mut self) -> Self {
        self.do_not_disrupt = true;
        self
    }

    /// `n` pods named `prefix-0` … sharing this spec.
    pub fn pods(self, prefix: &str, n: usize) -> Vec<Pod> {
        let spec = Arc::new(self);
        (0..n).map(|i| Pod::new(format!("{prefix}-{i}"), spec.clone())).collect()
    }
}

/// The pods of `daemonsets` that run on a node with `labels` and `taints`.
pub fn daemonsets_on(daemonsets: &[PodSpec], labels: &BTreeMap<String, String>, taints: &[Taint]) -> Vec<Arc<PodSpec>> {
    daemonsets.iter().filter(|d| d.runs_on(labels, taints)).map(|d| Arc::new(d.clone())).collect()
}
