//! A node class's kubelet settings: Karpenter's `spec.kubelet` as users
//! write it, the part that changes what pods can use, and the catalog's
//! offerings sized for each node class whose settings differ.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::quantity::{parse_bytes, parse_cpu_millis};
use super::{Catalog, InstanceType, KubeletConfig, Reserved};

/// The kubelet settings Karpenter's `spec.kubelet` takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeletSpec {
    /// Most pods on a node (otherwise the instance type's ENI limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pods: Option<u32>,
    /// Most pods per vCPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_per_core: Option<u32>,
    /// Resources reserved for the system (`cpu`, `memory`, `ephemeral-storage`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub system_reserved: BTreeMap<String, String>,
    /// Resources reserved for Kubernetes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kube_reserved: BTreeMap<String, String>,
    /// Hard eviction thresholds (`memory.available: 100Mi`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_hard: BTreeMap<String, String>,
    /// Soft eviction thresholds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_soft: BTreeMap<String, String>,
    /// Grace periods of the soft thresholds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    /// Longest grace period given to a pod evicted for a soft threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_max_pod_grace_period: Option<i64>,
    /// Image garbage collection starts above this disk use.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: Option<u32>,
    /// … and stops below this one.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: Option<u32>,
    /// CPU CFS quota enforcement.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "cpuCFSQuota")]
    pub cpu_cfs_quota: Option<bool>,
    /// Cluster DNS servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
}

impl KubeletSpec {
    /// The settings that change allocatable, parsed; `Err`: (field under
    /// `kubelet`, why).
    pub fn config(&self) -> Result<KubeletConfig, (String, String)> {
        if self.max_pods == Some(0) {
            return Err(("maxPods".into(), "must be at least 1".into()));
        }
        if self.pods_per_core == Some(0) {
            return Err(("podsPerCore".into(), "must be at least 1".into()));
        }
        let reserved = |name: &str, map: &BTreeMap<String, String>| -> Result<Reserved, (String, String)> {
            let mut r = Reserved::default();
            for (key, value) in map {
                let field = || format!("{name}.{key}");
                match key.as_str() {
                    "cpu" => r.cpu_millis = Some(parse_cpu_millis(value).map_err(|m| (field(), m))?),
                    "memory" => r.memory_bytes = Some(parse_bytes(value).map_err(|m| (field(), m))?),
                    "ephemeral-storage" => r.ephemeral_bytes = Some(parse_bytes(value).map_err(|m| (field(), m))?),
                    "pid" => {}
                    _ => return Err((field(), format!("`{key}` is not cpu, memory, ephemeral-storage or pid"))),
                }
            }
            Ok(r)
        };
        let eviction_memory_bytes = match self.eviction_hard.get("memory.available") {
            None => None,
            // A percentage of capacity depends on the type: the default is kept.
            Some(v) if v.ends_with('%') => None,
            Some(v) => Some(parse_bytes(v).map_err(|m| ("evictionHard.memory.available".to_string(), m))?),
        };
        Ok(KubeletConfig {
            max_pods: self.max_pods,
            pods_per_core: self.pods_per_core,
            kube_reserved: reserved("kubeReserved", &self.kube_reserved)?,
            system_reserved: reserved("systemReserved", &self.system_reserved)?,
            eviction_memory_bytes,
        })
    }
}

impl Catalog {
    /// This catalog with its offerings sized for every node class whose
    /// kubelet settings (`classes`, by name) differ from those it is sized
    /// for (`sized_for`): one copy of every offering but the reserved ones
    /// per distinct setting, appended in class-name order after the others
    /// (so theirs keep their indices), allocatable and pod capacity from
    /// the type's facts under those settings, and served to those classes'
    /// NodePools only; the offerings here are then served only to the
    /// NodePools of the other classes and of none (`""`). A capacity
    /// reservation stays one offering, whoever launches into it, sized for
    /// `sized_for` (its count and its use are the reservation's). With no
    /// class differing, the catalog as it is. An offering whose type has
    /// no facts keeps its size.
    pub fn with_kubelets(&self, facts: &[InstanceType], sized_for: &KubeletConfig, classes: &BTreeMap<String, KubeletConfig>) -> Catalog {
        let mut groups: Vec<(KubeletConfig, Vec<String>)> = Vec::new();
        let mut same = vec![String::new()];
        for (name, config) in classes {
            if config == sized_for {
                same.push(name.clone());
            } else if let Some((_, names)) = groups.iter_mut().find(|(c, _)| c == config) {
                names.push(name.clone());
            } else {
                groups.push((*config, vec![name.clone()]));
            }
        }
        if groups.is_empty() {
            return self.clone();
        }
        let serving = |offering: &super::Offering, names: &[String]| -> Option<Vec<String>> {
            Some(match &offering.node_classes {
                None => names.to_vec(),
                Some(list) => list.iter().filter(|c| names.contains(c)).cloned().collect(),
            })
        };
        let facts: HashMap<&str, &InstanceType> = facts.iter().map(|f| (f.name.as_str(), f)).collect();
        let reserved = |o: &super::Offering| o.capacity_type == super::CapacityType::Reserved;
        let mut offerings: Vec<super::Offering> = self
            .offerings
            .iter()
            .map(|o| if reserved(o) { o.clone() } else { super::Offering { node_classes: serving(o, &same), ..o.clone() } })
            .collect();
        for (config, names) in &groups {
            offerings.extend(self.offerings.iter().filter(|o| !reserved(o)).map(|o| {
                let mut copy = super::Offering { node_classes: serving(o, names), ..o.clone() };
                if let Some(facts) = facts.get(o.instance_type.as_str()) {
                    copy.allocatable = facts.allocatable_with(config);
                    copy.capacity.pods = facts.pods_with(config);
                }
                copy
            }));
        }
        Catalog::new(offerings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CapacityReservation, NodePool, bundled_instance_types};

    #[test]
    fn each_node_class_with_its_own_kubelet_settings_gets_offerings_sized_for_them() {
        let facts = bundled_instance_types();
        let reservation = CapacityReservation {
            instance_type: "m5.xlarge".into(),
            zone: "us-east-1a".into(),
            count: 1,
            hourly_rate: 0.192,
            id: None,
            node_classes: Some(vec!["dense".into(), "plain".into()]),
        };
        let catalog = Catalog::bundled().with_reservations(&[reservation]).unwrap();
        let n = catalog.offerings.len();
        let dense = KubeletConfig { max_pods: Some(20), ..KubeletConfig::default() };
        let classes = BTreeMap::from([
            ("plain".to_string(), KubeletConfig::default()),
            ("dense".to_string(), dense),
            ("also-dense".to_string(), dense),
        ]);
        assert_eq!(catalog.with_kubelets(&facts, &KubeletConfig::default(), &BTreeMap::from([("plain".to_string(), KubeletConfig::default())])), catalog);
        let sized = catalog.with_kubelets(&facts, &KubeletConfig::default(), &classes);
        // One copy for the two classes that share settings; none of the reservation.
        assert_eq!(sized.offerings.len(), 2 * n - 1);
        assert_ne!(sized.version, catalog.version);
        let m5 = facts.iter().find(|f| f.name == "m5.xlarge").unwrap();
        for (i, (before, (here, copy))) in catalog.offerings[..n - 1].iter().zip(sized.offerings.iter().zip(&sized.offerings[n..])).enumerate() {
            assert_eq!((&here.instance_type, &here.zone, here.capacity_type, here.allocatable), (&before.instance_type, &before.zone, before.capacity_type, before.allocatable));
            assert_eq!((&copy.instance_type, &copy.zone, copy.capacity_type), (&before.instance_type, &before.zone, before.capacity_type));
            for class in [Some("dense"), Some("also-dense")] {
                assert!(copy.serves(class) && !here.serves(class), "{i}");
            }
            assert!(here.serves(Some("plain")) && here.serves(None) && !copy.serves(Some("plain")) && !copy.serves(None), "{i}");
            assert_eq!(copy.allocatable, facts.iter().find(|f| f.name == before.instance_type).unwrap().allocatable_with(&dense), "{i}");
            if copy.instance_type == "m5.xlarge" {
                assert_eq!((copy.allocatable.pods, copy.capacity.pods), (20, 20));
                assert!(copy.allocatable.memory_bytes > m5.allocatable().memory_bytes, "fewer pods, less memory reserved for them");
            }
        }
        // The reservation stays one offering for the classes selecting it.
        assert_eq!(sized.offerings[n - 1], catalog.offerings[n - 1]);
        // The scheduler offers a NodePool its class's offerings only.
        let pool = |class: Option<&str>| NodePool { node_class: class.map(String::from), ..NodePool::new("p") };
        let offered = |class: Option<&str>| crate::scheduling::pool_offering_list(&sized, &pool(class));
        let (dense_pool, none, plain) = (offered(Some("dense")), offered(None), offered(Some("plain")));
        assert!(dense_pool.iter().all(|&o| o as usize >= n - 1));
        assert_eq!(dense_pool.len(), n, "its copies and the reservation");
        assert_eq!(none.len(), n - 1);
        assert!(none.iter().all(|&o| (o as usize) < n - 1));
        assert_eq!(plain.iter().copied().filter(|o| !none.contains(o)).collect::<Vec<u32>>(), vec![n as u32 - 1], "and plain's, the reservation");
        assert!(offered(Some("also-dense")).iter().all(|&o| o as usize >= n), "not selected by also-dense");
    }

    #[test]
    fn kubelet_settings_are_checked_by_field() {
        let spec = |yaml: &str| serde_yaml_ng::from_str::<KubeletSpec>(yaml).unwrap().config();
        assert_eq!(spec("maxPods: 0").unwrap_err(), ("maxPods".into(), "must be at least 1".into()));
        assert_eq!(spec("podsPerCore: 0").unwrap_err(), ("podsPerCore".into(), "must be at least 1".into()));
        assert_eq!(spec("kubeReserved: { gpu: 1 }").unwrap_err().0, "kubeReserved.gpu");
        let config = spec("maxPods: 30\nsystemReserved: { cpu: 100m, memory: 1Gi }\nevictionHard: { memory.available: 5% }").unwrap();
        assert_eq!((config.max_pods, config.system_reserved.cpu_millis, config.system_reserved.memory_bytes), (Some(30), Some(100), Some(1 << 30)));
        assert_eq!(config.eviction_memory_bytes, None, "a percentage keeps the default");
        // Karpenter's spelling of the settings that do not size a node.
        let named = spec("clusterDNS: [10.100.0.10]\ncpuCFSQuota: true\nimageGCHighThresholdPercent: 85\nimageGCLowThresholdPercent: 80\n");
        assert_eq!(named, Ok(KubeletConfig::default()));
    }
}
