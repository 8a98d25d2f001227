//! Labels, node requirements (`In`, `NotIn`, `Exists`, `DoesNotExist`,
//! `Gt`, `Lt`, `Gte`, `Lte`), taints and tolerations, as Kubernetes and Karpenter define them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Label keys every node nodewright launches carries. The instance labels
/// use Karpenter's keys so that existing pod specs and NodePools keep working.
pub mod well_known {
    /// EC2 instance type.
    pub const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
    /// CPU architecture (`amd64`, `arm64`).
    pub const ARCH: &str = "kubernetes.io/arch";
    /// Operating system (`linux`).
    pub const OS: &str = "kubernetes.io/os";
    /// Availability zone.
    pub const ZONE: &str = "topology.kubernetes.io/zone";
    /// Node name.
    pub const HOSTNAME: &str = "kubernetes.io/hostname";
    /// `on-demand`, `spot` or `reserved`.
    pub const CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";
    /// Instance family, e.g. `m7g`.
    pub const FAMILY: &str = "karpenter.k8s.aws/instance-family";
    /// Instance category, the letters before the generation, e.g. `m`, `c`, `g`.
    pub const CATEGORY: &str = "karpenter.k8s.aws/instance-category";
    /// Instance generation, e.g. `7`.
    pub const GENERATION: &str = "karpenter.k8s.aws/instance-generation";
    /// vCPUs.
    pub const CPU: &str = "karpenter.k8s.aws/instance-cpu";
    /// Memory in MiB.
    pub const MEMORY: &str = "karpenter.k8s.aws/instance-memory";
    /// GPUs.
    pub const GPU_COUNT: &str = "karpenter.k8s.aws/instance-gpu-count";
    /// The NodePool that launched the node.
    pub const NODE_POOL: &str = "nodewright.io/nodepool";
    /// Pod annotation that forbids voluntary disruption of its node.
    pub const DO_NOT_DISRUPT: &str = "nodewright.io/do-not-disrupt";

    /// The keys a NodePool may constrain and that describe an offering.
    pub const OFFERING_KEYS: [&str; 11] =
        [INSTANCE_TYPE, ARCH, OS, ZONE, CAPACITY_TYPE, FAMILY, CATEGORY, GENERATION, CPU, MEMORY, GPU_COUNT];
}

/// Operator of a node requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operator {
    /// The label is one of the values.
    In,
    /// The label is absent or none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label is an integer greater than the value.
    Gt,
    /// The label is an integer less than the value.
    Lt,
    /// The label is an integer greater than or equal to the value.
    Gte,
    /// The label is an integer less than or equal to the value.
    Lte,
}

impl Operator {
    /// Parse the Kubernetes spelling.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            "Gt" => Operator::Gt,
            "Lt" => Operator::Lt,
            "Gte" => Operator::Gte,
            "Lte" => Operator::Lte,
            other => return Err(format!("`{other}` is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte, Lte")),
        })
    }
}

/// One requirement on a node label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: Operator,
    /// Values (one integer for `Gt`/`Lt`, none for `Exists`/`DoesNotExist`).
    pub values: Vec<String>,
}

impl Requirement {
    /// A checked requirement: `In`/`NotIn` need values, `Exists`/`DoesNotExist`
    /// none, `Gt`/`Lt` exactly one integer.
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, String> {
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(format!("operator {operator:?} needs at least one value"));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(format!("operator {operator:?} takes no values"));
            }
            Operator::Gt | Operator::Lt | Operator::Gte | Operator::Lte if values.len() != 1 || values[0].parse::<i64>().is_err() => {
                return Err(format!("operator {operator:?} needs exactly one integer value, got {values:?}"));
            }
            _ => {}
        }
        if key.is_empty() {
            return Err("key must not be empty".into());
        }
        Ok(Requirement { key: key.into(), operator, values })
    }

    /// `key In [values]`.
    pub fn is_in(key: &str, values: &[&str]) -> Self {
        Requirement { key: key.into(), operator: Operator::In, values: values.iter().map(|v| v.to_string()).collect() }
    }

    /// `key NotIn [values]`.
    pub fn not_in(key: &str, values: &[&str]) -> Self {
        Requirement { key: key.into(), operator: Operator::NotIn, values: values.iter().map(|v| v.to_string()).collect() }
    }

    /// `key Exists` / `DoesNotExist` / `Gt n` / `Lt n`.
    pub fn with(key: &str, operator: Operator, value: Option<i64>) -> Self {
        Requirement { key: key.into(), operator, values: value.map(|v| vec![v.to_string()]).unwrap_or_default() }
    }

    /// Does a node whose label `key` is `value` (or absent) satisfy this?
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self.operator, value) {
            (Operator::In, Some(v)) => self.values.iter().any(|x| x == v),
            (Operator::In, None) => false,
            (Operator::NotIn, Some(v)) => !self.values.iter().any(|x| x == v),
            (Operator::NotIn, None) => true,
            (Operator::Exists, v) => v.is_some(),
            (Operator::DoesNotExist, v) => v.is_none(),
            (Operator::Gt | Operator::Lt | Operator::Gte | Operator::Lte, None) => false,
            (op, Some(v)) => match (v.parse::<i64>(), self.values.first().and_then(|b| b.parse::<i64>().ok())) {
                (Ok(v), Some(bound)) => match op {
                    Operator::Gt => v > bound,
                    Operator::Gte => v >= bound,
                    Operator::Lt => v < bound,
                    _ => v <= bound,
                },
                _ => false,
            },
        }
    }

    /// Human form, e.g. `kubernetes.io/arch In [arm64]`.
    pub fn describe(&self) -> String {
        match self.operator {
            Operator::Exists | Operator::DoesNotExist => format!("{} {:?}", self.key, self.operator),
            _ => format!("{} {:?} [{}]", self.key, self.operator, self.values.join(", ")),
        }
    }
}

/// Do `labels` satisfy every requirement?
pub fn labels_match(requirements: &[Requirement], labels: &BTreeMap<String, String>) -> bool {
    requirements.iter().all(|r| r.matches(labels.get(&r.key).map(String::as_str)))
}

/// Effect of a taint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaintEffect {
    /// New pods without a toleration are not scheduled.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Pods without a toleration are evicted.
    NoExecute,
}

impl TaintEffect {
    /// Parse the Kubernetes spelling.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "NoSchedule" => TaintEffect::NoSchedule,
            "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
            "NoExecute" => TaintEffect::NoExecute,
            other => return Err(format!("`{other}` is not one of NoSchedule, PreferNoSchedule, NoExecute")),
        })
    }
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value (may be empty).
    pub value: String,
    /// Effect.
    pub effect: TaintEffect,
}

/// A pod toleration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Toleration {
    /// Key; `None` with `exists` tolerates every taint.
    pub key: Option<String>,
    /// `Exists` (true) or `Equal` (false).
    pub exists: bool,
    /// Value for `Equal`.
    pub value: String,
    /// Effect; `None` tolerates every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Tolerate `key=value:effect`.
    pub fn equal(key: &str, value: &str, effect: TaintEffect) -> Self {
        Toleration { key: Some(key.into()), exists: false, value: value.into(), effect: Some(effect) }
    }

    /// Does this toleration cover `taint`?
    pub fn tolerates(&self, taint: &Taint) -> bool {
        let key_ok = match &self.key {
            None => self.exists,
            Some(k) => k == &taint.key && (self.exists || self.value == taint.value),
        };
        key_ok && self.effect.is_none_or(|e| e == taint.effect)
    }
}

/// Are all scheduling-relevant taints (`NoSchedule`, `NoExecute`) tolerated?
pub fn tolerates_all(tolerations: &[Toleration], taints: &[Taint]) -> bool {
    taints
        .iter()
        .filter(|t| t.effect != TaintEffect::PreferNoSchedule)
        .all(|t| tolerations.iter().any(|tol| tol.tolerates(t)))
}

#[cfg(test)]
mod tests {

    #[test]
    fn gte_and_lte_include_their_bound_gt_and_lt_do_not() {
        let check = |op: &str, value: &str| Requirement::new("karpenter.k8s.aws/instance-cpu", Operator::parse(op).unwrap(), vec!["8".into()]).unwrap().matches(Some(value));
        assert_eq!([check("Gt", "8"), check("Gte", "8"), check("Gte", "7"), check("Gte", "9")], [false, true, false, true]);
        assert_eq!([check("Lt", "8"), check("Lte", "8"), check("Lte", "9"), check("Lte", "7")], [false, true, false, true]);
        assert!(Requirement::new("k", Operator::Gte, vec!["x".into()]).is_err());
        assert_eq!(Operator::parse("Ge").unwrap_err(), "`Ge` is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte, Lte");
    }

    use super::*;

    #[test]
    fn each_operator_follows_kubernetes_semantics() {
        let r = |op, values: &[&str]| Requirement { key: "k".into(), operator: op, values: values.iter().map(|v| v.to_string()).collect() };
        assert!(r(Operator::In, &["a", "b"]).matches(Some("b")));
        assert!(!r(Operator::In, &["a"]).matches(None));
        assert!(r(Operator::NotIn, &["a"]).matches(None));
        assert!(!r(Operator::NotIn, &["a"]).matches(Some("a")));
        assert!(r(Operator::Exists, &[]).matches(Some("")));
        assert!(r(Operator::DoesNotExist, &[]).matches(None));
        assert!(r(Operator::Gt, &["4"]).matches(Some("5")));
        assert!(!r(Operator::Gt, &["4"]).matches(Some("4")));
        assert!(r(Operator::Lt, &["4"]).matches(Some("3")));
        assert!(!r(Operator::Lt, &["4"]).matches(Some("x")));
    }

    #[test]
    fn requirements_are_checked_when_built() {
        assert_eq!(Requirement::new("k", Operator::In, vec![]).unwrap_err(), "operator In needs at least one value");
        assert_eq!(
            Requirement::new("k", Operator::Gt, vec!["x".into()]).unwrap_err(),
            "operator Gt needs exactly one integer value, got [\"x\"]"
        );
        assert_eq!(Operator::parse("Inn").unwrap_err(), "`Inn` is not one of In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte, Lte");
    }

    #[test]
    fn tolerations_cover_taints_by_key_value_and_effect() {
        let taint = Taint { key: "gpu".into(), value: "true".into(), effect: TaintEffect::NoSchedule };
        assert!(Toleration::equal("gpu", "true", TaintEffect::NoSchedule).tolerates(&taint));
        assert!(!Toleration::equal("gpu", "false", TaintEffect::NoSchedule).tolerates(&taint));
        assert!(Toleration { key: None, exists: true, value: String::new(), effect: None }.tolerates(&taint));
        assert!(!tolerates_all(&[], std::slice::from_ref(&taint)));
        let soft = Taint { effect: TaintEffect::PreferNoSchedule, ..taint };
        assert!(tolerates_all(&[], &[soft]));
    }
}
