//! Node classes: Karpenter's `EC2NodeClass` (`karpenter.k8s.aws/v1`) read
//! as users write it, and the launch settings nodewright derives from it
//! ([`Ec2NodeClass`]): which subnets, security groups and AMI to resolve,
//! the kubelet settings, volumes, instance metadata options and the user
//! data merged for the AMI family.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Which subnets or security groups: every one matching any term; a term
/// matches by id, by name (security groups), or by carrying all its tags
/// (`"*"` as a value: the key with any value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelectorTerm {
    /// Tags it must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its name (security groups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Which AMI: an alias (`al2023@latest`, `bottlerocket@v1.20.0`, …), an
/// id, or images by name, owner and tags (the newest of those matching).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AmiSelectorTerm {
    /// `FAMILY@VERSION`: the EKS-optimised AMI, looked up in the public SSM parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// An AMI id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// An image name (wildcards as EC2 takes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An owner: an account id, or `self`, `amazon`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Tags the image carries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// nodewright's own: an SSM parameter holding the AMI id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_parameter: Option<String>,
}

/// Which capacity reservations a node class launches into: by id, or
/// every reservation carrying all the term's tags (`"*"`: the key with any
/// value), optionally of one owner account; `instanceMatchCriteria`
/// narrows either to `open` or `targeted` reservations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapacityReservationSelectorTerm {
    /// Tags it must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Its id (`cr-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The account that owns it (12 digits).
    #[serde(default, rename = "ownerID", skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// `open` or `targeted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_match_criteria: Option<String>,
}

impl CapacityReservationSelectorTerm {
    /// Why the term cannot select anything as written, if it cannot:
    /// Karpenter's validation rules.
    fn check(&self) -> Result<(), String> {
        match &self.id {
            None if self.tags.is_empty() => return Err("names no id or tags".into()),
            Some(_) if !self.tags.is_empty() || self.owner_id.is_some() => {
                return Err("`id` cannot be set along with `tags` or `ownerID`".into());
            }
            Some(id) if !(id.strip_prefix("cr-").is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()))) => {
                return Err(format!("id `{id}` is not a capacity reservation id (cr-…)"));
            }
            _ => {}
        }
        if self.tags.iter().any(|(k, v)| k.is_empty() || v.is_empty()) {
            return Err("empty tag keys or values are not supported".into());
        }
        if let Some(owner) = &self.owner_id
            && !(owner.len() == 12 && owner.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!("ownerID `{owner}` is not a 12-digit account id"));
        }
        match self.instance_match_criteria.as_deref() {
            None | Some("open" | "targeted") => Ok(()),
            Some(other) => Err(format!("instanceMatchCriteria `{other}` is not open or targeted")),
        }
    }
}

pub use nodewright_core::model::KubeletSpec;

/// An EBS volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EbsSpec {
    /// Size as a quantity (`100Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_size: Option<String>,
    /// `gp3`, `gp2`, `io2`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
    /// Provisioned IOPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<i32>,
    /// Throughput in MiB/s (gp3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<i32>,
    /// Encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// KMS key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Deleted with the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
    /// A snapshot to start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
}

/// One of `spec.blockDeviceMappings`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockDeviceMapping {
    /// `/dev/xvda`, …
    pub device_name: String,
    /// The volume.
    #[serde(default)]
    pub ebs: EbsSpec,
    /// The volume the kubelet and images use.
    #[serde(default)]
    pub root_volume: bool,
}

/// Instance metadata service settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataOptions {
    /// `enabled` or `disabled`.
    #[serde(default = "enabled")]
    pub http_endpoint: String,
    /// `enabled` or `disabled`.
    #[serde(default = "disabled", rename = "httpProtocolIPv6")]
    pub http_protocol_ipv6: String,
    /// Hops a metadata response may take (1: not reachable from pods' network namespaces).
    #[serde(default = "one")]
    pub http_put_response_hop_limit: i32,
    /// `required` (IMDSv2) or `optional`.
    #[serde(default = "required")]
    pub http_tokens: String,
}

fn enabled() -> String {
    "enabled".into()
}
fn disabled() -> String {
    "disabled".into()
}
fn one() -> i32 {
    1
}
fn required() -> String {
    "required".into()
}

impl Default for MetadataOptions {
    /// Karpenter's defaults: IMDSv2 only, one hop.
    fn default() -> Self {
        MetadataOptions { http_endpoint: enabled(), http_protocol_ipv6: disabled(), http_put_response_hop_limit: 1, http_tokens: required() }
    }
}

/// Karpenter's `EC2NodeClass` spec (`karpenter.k8s.aws/v1`), every field it
/// takes; unknown fields are refused by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeClassSpec {
    /// Subnets nodes launch into.
    #[serde(default)]
    pub subnet_selector_terms: Vec<SelectorTerm>,
    /// Security groups of the nodes.
    #[serde(default)]
    pub security_group_selector_terms: Vec<SelectorTerm>,
    /// Their AMI.
    #[serde(default)]
    pub ami_selector_terms: Vec<AmiSelectorTerm>,
    /// Capacity reservations its nodes launch into (beside those of the commitments file).
    #[serde(default)]
    pub capacity_reservation_selector_terms: Vec<CapacityReservationSelectorTerm>,
    /// `AL2023`, `AL2`, `Bottlerocket`, `Custom`, `Windows2019`, …; implied by an alias.
    #[serde(default)]
    pub ami_family: Option<String>,
    /// The IAM role of the nodes (an instance profile is made for it).
    #[serde(default)]
    pub role: Option<String>,
    /// Or an existing instance profile.
    #[serde(default)]
    pub instance_profile: Option<String>,
    /// Kubelet settings.
    #[serde(default)]
    pub kubelet: Option<KubeletSpec>,
    /// Volumes.
    #[serde(default)]
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// `RAID0`: the instance stores as one volume for the kubelet and images.
    #[serde(default)]
    pub instance_store_policy: Option<String>,
    /// Instance metadata service.
    #[serde(default)]
    pub metadata_options: Option<MetadataOptions>,
    /// User data, merged with what the AMI family needs.
    #[serde(default)]
    pub user_data: Option<String>,
    /// Tags on instances, volumes and templates.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Public IPv4 addresses on the nodes' interface.
    #[serde(default)]
    pub associate_public_ip_address: Option<bool>,
    /// CloudWatch detailed monitoring.
    #[serde(default)]
    pub detailed_monitoring: Option<bool>,
    /// Outposts context.
    #[serde(default)]
    pub context: Option<String>,
}

/// The AMI families nodewright can write user data for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AmiFamily {
    /// Amazon Linux 2023: a `NodeConfig` for nodeadm.
    #[default]
    Al2023,
    /// Amazon Linux 2: the bootstrap script.
    Al2,
    /// Bottlerocket: TOML settings.
    Bottlerocket,
    /// The user data as given, nothing added.
    Custom,
}

impl AmiFamily {
    fn parse(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "al2023" => Ok(AmiFamily::Al2023),
            "al2" => Ok(AmiFamily::Al2),
            "bottlerocket" => Ok(AmiFamily::Bottlerocket),
            "custom" => Ok(AmiFamily::Custom),
            w if w.starts_with("windows") => Err(format!("`{text}`: Windows nodes are not supported (the catalog and user data are Linux)")),
            _ => Err(format!("`{text}` is not AL2023, AL2, Bottlerocket or Custom")),
        }
    }
}

/// An `EC2NodeClass` document: its name and spec.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedNodeClass {
    /// `metadata.name`.
    pub name: String,
    /// `spec`.
    pub spec: NodeClassSpec,
}

#[derive(Deserialize)]
struct Document {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: serde_yaml_ng::Value,
    #[serde(default)]
    spec: serde_yaml_ng::Value,
}

/// The `EC2NodeClass` documents of a (multi-document) YAML file named
/// `file`, other kinds skipped. Errors name the file, the document, the
/// node class and the field.
pub fn parse_node_classes(file: &str, text: &str) -> Result<Vec<NamedNodeClass>, String> {
    let mut classes = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let doc: Document = Document::deserialize(document).map_err(|e| format!("{file}: document {}: {e}", i + 1))?;
        if doc.kind != "EC2NodeClass" {
            continue;
        }
        let name = doc.metadata.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(format!("{file}: document {}: metadata.name: must not be empty", i + 1));
        }
        if !doc.api_version.starts_with("karpenter.k8s.aws/") && !doc.api_version.starts_with("nodewright.io/") {
            return Err(format!("{file}: EC2NodeClass {name}: apiVersion: `{}` is not karpenter.k8s.aws/v1", doc.api_version));
        }
        let spec: NodeClassSpec = serde_path_to_error::deserialize(doc.spec)
            .map_err(|e| format!("{file}: EC2NodeClass {name}: spec.{}: {}", e.path(), e.inner()))?;
        classes.push(NamedNodeClass { name, spec });
    }
    Ok(classes)
}

/// Where the AMI comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AmiSource {
    /// This AMI id.
    Id(String),
    /// The AMI id stored in this SSM parameter (e.g. the EKS-optimised AMI's
    /// `/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/image_id`),
    /// read when the launch template is built.
    SsmParameter(String),
    /// Karpenter's selector terms: the first term that finds an image wins
    /// (an alias is looked up in the public SSM parameters for the
    /// cluster's Kubernetes version; name, owner and tags take the newest
    /// matching image).
    Terms(Vec<AmiSelectorTerm>),
}

/// The settings of a node's launch, from a node class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Ec2NodeClass {
    /// Subnets: every subnet matching any term.
    pub subnets: Vec<SelectorTerm>,
    /// Security groups: every group matching any term.
    pub security_groups: Vec<SelectorTerm>,
    /// The AMI.
    pub ami: Option<AmiSource>,
    /// What the user data is written for.
    pub family: AmiFamily,
    /// Kubernetes version of the cluster (`1.31`): chooses an alias's AMI.
    pub kubernetes_version: String,
    /// Root volume size in GiB (gp3, encrypted), when no block devices are given.
    pub root_volume_gib: i32,
    /// Volumes; empty: the family's root volume of `root_volume_gib`.
    pub block_devices: Vec<BlockDeviceMapping>,
    /// Instance profile name.
    pub instance_profile: Option<String>,
    /// Capacity reservations: every active one matching any term is
    /// launched into (targeted, by id) by this class's NodePools only.
    pub capacity_reservations: Vec<CapacityReservationSelectorTerm>,
    /// The nodes' IAM role, when no instance profile is named: a profile
    /// is made for it (`iam::InstanceProfiles`), named after the class.
    pub role: Option<String>,
    /// The class's name (the instance profile made for its role is named
    /// after it).
    pub name: String,
    /// `instanceStorePolicy: RAID0`: the instance store volumes are joined
    /// in a RAID0 array for the node's ephemeral storage (containerd and
    /// the kubelet), as the AMI family's bootstrap does it.
    pub raid0: bool,
    /// The user's user data, merged with what the family needs.
    pub user_data: String,
    /// Kubelet settings.
    pub kubelet: KubeletSpec,
    /// Instance metadata service.
    pub metadata: MetadataOptions,
    /// Extra tags on instances.
    pub tags: BTreeMap<String, String>,
    /// Public IPv4 addresses on the nodes' interface.
    pub associate_public_ip: Option<bool>,
    /// CloudWatch detailed monitoring.
    pub detailed_monitoring: bool,
}

impl Ec2NodeClass {
    /// A hash of what the class says directly about a launch — not what
    /// its selector terms resolve to (those drift on their own) nor the
    /// cluster's Kubernetes version: the family, volumes, instance profile
    /// or role, user data, kubelet, metadata options, tags, public IP,
    /// monitoring, RAID0. An instance launched under another hash has
    /// drifted (`NodeClassDrift`), as Karpenter's node class hash does. 16
    /// hex digits of a sha256, the same in every process.
    pub fn static_hash(&self) -> String {
        use sha2::Digest;
        let fields = format!(
            "{:?}|{}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{}|{}",
            self.family,
            self.root_volume_gib,
            self.block_devices,
            self.instance_profile,
            self.role,
            self.user_data,
            self.kubelet,
            self.metadata,
            self.tags,
            self.associate_public_ip,
            self.detailed_monitoring,
            self.raid0
        );
        hex::encode(&sha2::Sha256::digest(fields.as_bytes())[..8])
    }

    /// The launch settings of Karpenter's `EC2NodeClass` `name` for a
    /// cluster running Kubernetes `kubernetes_version`. What nodewright
    /// cannot honour yet is refused naming the field: Windows families.
    pub fn from_karpenter(name: &str, spec: &NodeClassSpec, kubernetes_version: &str) -> Result<Self, String> {
        let fail = |field: &str, message: String| format!("EC2NodeClass {name}: spec.{field}: {message}");
        if spec.subnet_selector_terms.is_empty() {
            return Err(fail("subnetSelectorTerms", "at least one term is required".into()));
        }
        if spec.security_group_selector_terms.is_empty() {
            return Err(fail("securityGroupSelectorTerms", "at least one term is required".into()));
        }
        for (field, terms) in [("subnetSelectorTerms", &spec.subnet_selector_terms), ("securityGroupSelectorTerms", &spec.security_group_selector_terms)] {
            if let Some(i) = terms.iter().position(|t| t.tags.is_empty() && t.id.is_none() && t.name.is_none()) {
                return Err(fail(&format!("{field}[{i}]"), "names no id, name or tags".into()));
            }
        }
        if spec.ami_selector_terms.is_empty() {
            return Err(fail("amiSelectorTerms", "at least one term is required".into()));
        }
        let mut family = spec.ami_family.as_deref().map(AmiFamily::parse).transpose().map_err(|m| fail("amiFamily", m))?;
        for (i, term) in spec.ami_selector_terms.iter().enumerate() {
            if let Some(alias) = &term.alias {
                let (alias_family, _) = parse_alias(alias).map_err(|m| fail(&format!("amiSelectorTerms[{i}].alias"), m))?;
                if spec.ami_selector_terms.len() > 1 {
                    return Err(fail(&format!("amiSelectorTerms[{i}].alias"), "an alias must be the only term".into()));
                }
                family = Some(alias_family);
            } else if term.id.is_none() && term.name.is_none() && term.tags.is_empty() && term.ssm_parameter.is_none() {
                return Err(fail(&format!("amiSelectorTerms[{i}]"), "names no alias, id, name, tags or ssmParameter".into()));
            }
        }
        let family = family.ok_or_else(|| fail("amiFamily", "is required unless an alias names the family".into()))?;
        for (i, term) in spec.capacity_reservation_selector_terms.iter().enumerate() {
            term.check().map_err(|m| fail(&format!("capacityReservationSelectorTerms[{i}]"), m))?;
        }
        // An instance profile named is used as is; a role gets one made for it.
        let (instance_profile, role) = match (&spec.instance_profile, &spec.role) {
            (Some(profile), _) => (Some(profile.clone()), None),
            (None, Some(role)) if crate::iam::role_name(role).is_empty() => return Err(fail("role", format!("`{role}` names no role"))),
            (None, Some(role)) => (None, Some(role.clone())),
            (None, None) => return Err(fail("role", "set role or instanceProfile".into())),
        };
        let raid0 = match spec.instance_store_policy.as_deref() {
            None => false,
            Some("RAID0") => true,
            Some(other) => return Err(fail("instanceStorePolicy", format!("`{other}` is not RAID0"))),
        };
        for (i, device) in spec.block_device_mappings.iter().enumerate() {
            if let Some(size) = &device.ebs.volume_size {
                volume_gib(size).map_err(|m| fail(&format!("blockDeviceMappings[{i}].ebs.volumeSize"), m))?;
            }
        }
        let kubelet = spec.kubelet.clone().unwrap_or_default();
        kubelet.config().map_err(|(field, m)| fail(&format!("kubelet.{field}"), m))?;
        Ok(Ec2NodeClass {
            subnets: spec.subnet_selector_terms.clone(),
            security_groups: spec.security_group_selector_terms.clone(),
            ami: Some(AmiSource::Terms(spec.ami_selector_terms.clone())),
            family,
            kubernetes_version: kubernetes_version.into(),
            root_volume_gib: 20,
            block_devices: spec.block_device_mappings.clone(),
            instance_profile,
            capacity_reservations: spec.capacity_reservation_selector_terms.clone(),
            role,
            name: name.into(),
            raid0,
            user_data: spec.user_data.clone().unwrap_or_default(),
            kubelet,
            metadata: spec.metadata_options.clone().unwrap_or_default(),
            tags: spec.tags.clone(),
            associate_public_ip: spec.associate_public_ip_address,
            detailed_monitoring: spec.detailed_monitoring.unwrap_or(false),
        })
    }

    /// The kubelet settings that change what pods can use, parsed
    /// (`from_karpenter` has checked them; a quantity that does not parse
    /// is left at its default).
    pub fn kubelet_config(&self) -> nodewright_core::model::KubeletConfig {
        self.kubelet.config().unwrap_or_default()
    }

    /// The volumes a launch gets: those given, or the family's root volume.
    pub fn volumes(&self) -> Vec<(String, i32, String, bool, bool)> {
        if self.block_devices.is_empty() {
            let device = if self.family == AmiFamily::Bottlerocket { "/dev/xvdb" } else { "/dev/xvda" };
            return vec![(device.into(), self.root_volume_gib, "gp3".into(), true, true)];
        }
        self.block_devices
            .iter()
            .map(|d| {
                let size = d.ebs.volume_size.as_deref().and_then(|s| volume_gib(s).ok()).unwrap_or(self.root_volume_gib);
                (
                    d.device_name.clone(),
                    size,
                    d.ebs.volume_type.clone().unwrap_or_else(|| "gp3".into()),
                    d.ebs.encrypted.unwrap_or(true),
                    d.ebs.delete_on_termination.unwrap_or(true),
                )
            })
            .collect()
    }

    /// The user data of a node of cluster `cluster`: what the family needs
    /// (the kubelet settings included) merged with the user's.
    pub fn rendered_user_data(&self, cluster: &str) -> String {
        let k = &self.kubelet;
        match self.family {
            AmiFamily::Custom => self.user_data.clone(),
            AmiFamily::Al2023 => {
                let mut config = serde_json::Map::new();
                if let Some(n) = k.max_pods {
                    config.insert("maxPods".into(), n.into());
                }
                if let Some(n) = k.pods_per_core {
                    config.insert("podsPerCore".into(), n.into());
                }
                for (key, map) in [("systemReserved", &k.system_reserved), ("kubeReserved", &k.kube_reserved), ("evictionHard", &k.eviction_hard), ("evictionSoft", &k.eviction_soft), ("evictionSoftGracePeriod", &k.eviction_soft_grace_period)] {
                    if !map.is_empty() {
                        config.insert(key.into(), serde_json::to_value(map).unwrap_or_default());
                    }
                }
                if !k.cluster_dns.is_empty() {
                    config.insert("clusterDNS".into(), serde_json::to_value(&k.cluster_dns).unwrap_or_default());
                }
                let mut spec = serde_json::json!({ "cluster": { "name": cluster }, "kubelet": { "config": config } });
                if self.raid0 {
                    spec["instance"] = serde_json::json!({ "localStorage": { "strategy": "RAID0" } });
                }
                let node_config = serde_json::json!({ "apiVersion": "node.eks.aws/v1alpha1", "kind": "NodeConfig", "spec": spec });
                let yaml = serde_yaml_ng::to_string(&node_config).unwrap_or_default();
                let mut parts = vec![("application/node.eks.aws".to_string(), yaml)];
                if !self.user_data.trim().is_empty() {
                    parts.push(("text/x-shellscript; charset=\"us-ascii\"".into(), self.user_data.clone()));
                }
                mime(&parts)
            }
            AmiFamily::Al2 => {
                let mut args = Vec::new();
                if let Some(n) = k.max_pods {
                    args.push(format!("--max-pods={n}"));
                }
                if let Some(n) = k.pods_per_core {
                    args.push(format!("--pods-per-core={n}"));
                }
                let mut extra = if args.is_empty() { String::new() } else { format!(" --kubelet-extra-args '{}'", args.join(" ")) };
                if self.raid0 {
                    extra.push_str(" --local-disks raid0");
                }
                let script = format!("#!/bin/bash\nset -ex\n/etc/eks/bootstrap.sh '{cluster}'{extra}\n");
                let mut parts = Vec::new();
                if !self.user_data.trim().is_empty() {
                    parts.push(("text/x-shellscript; charset=\"us-ascii\"".to_string(), self.user_data.clone()));
                }
                parts.push(("text/x-shellscript; charset=\"us-ascii\"".into(), script));
                mime(&parts)
            }
            AmiFamily::Bottlerocket => {
                let mut toml = format!("[settings.kubernetes]\ncluster-name = \"{cluster}\"\n");
                if let Some(n) = k.max_pods {
                    toml.push_str(&format!("max-pods = {n}\n"));
                }
                if self.raid0 {
                    // Bottlerocket's own tool makes the array and binds the
                    // kubelet's and containerd's directories onto it.
                    toml.push_str(concat!(
                        "\n[settings.bootstrap-commands.000-mount-instance-storage]\n",
                        "commands = [[\"apiclient\", \"ephemeral-storage\", \"init\"], [\"apiclient\", \"ephemeral-storage\", \"bind\", \"--dirs\", \"/var/lib/containerd\", \"/var/lib/kubelet\", \"/var/log/pods\"]]\n",
                        "mode = \"always\"\n",
                        "essential = true\n",
                    ));
                }
                if !self.user_data.trim().is_empty() {
                    toml.push('\n');
                    toml.push_str(&self.user_data);
                }
                toml
            }
        }
    }
}

/// A MIME multi-part document of (content type, body) parts.
fn mime(parts: &[(String, String)]) -> String {
    let boundary = "//";
    let mut out = format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\n\n");
    for (content_type, body) in parts {
        out.push_str(&format!("--{boundary}\nContent-Type: {content_type}\n\n{body}"));
        if !body.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push_str(&format!("--{boundary}--\n"));
    out
}

/// `FAMILY@VERSION` → the family and the version (`latest` or `vYYYYMMDD`, …).
pub fn parse_alias(alias: &str) -> Result<(AmiFamily, String), String> {
    let (family, version) = alias.split_once('@').ok_or_else(|| format!("`{alias}` is not FAMILY@VERSION"))?;
    let family = match family {
        "al2023" => AmiFamily::Al2023,
        "al2" => AmiFamily::Al2,
        "bottlerocket" => AmiFamily::Bottlerocket,
        other => return Err(format!("`{other}` is not al2023, al2 or bottlerocket")),
    };
    if version.is_empty() {
        return Err(format!("`{alias}`: no version (`latest`, or a release such as v20240807)"));
    }
    Ok((family, version.to_string()))
}

/// The public SSM parameter holding the EKS-optimised AMI of `alias` for
/// Kubernetes `kubernetes` on `arch` (`x86_64` or `arm64`), as Karpenter reads it.
pub fn alias_parameter(alias: &str, kubernetes: &str, arch: &str) -> Result<String, String> {
    let (family, version) = parse_alias(alias)?;
    Ok(match (family, version.as_str()) {
        (AmiFamily::Al2023, "latest") => format!("/aws/service/eks/optimized-ami/{kubernetes}/amazon-linux-2023/{arch}/standard/recommended/image_id"),
        (AmiFamily::Al2023, v) => {
            format!("/aws/service/eks/optimized-ami/{kubernetes}/amazon-linux-2023/{arch}/standard/amazon-eks-node-al2023-{arch}-standard-{kubernetes}-{v}/image_id")
        }
        (AmiFamily::Al2, "latest") => {
            let suffix = if arch == "arm64" { "-arm64" } else { "" };
            format!("/aws/service/eks/optimized-ami/{kubernetes}/amazon-linux-2{suffix}/recommended/image_id")
        }
        (AmiFamily::Al2, v) => {
            let suffix = if arch == "arm64" { "-arm64" } else { "" };
            format!("/aws/service/eks/optimized-ami/{kubernetes}/amazon-linux-2{suffix}/amazon-eks{suffix}-node-{kubernetes}-{v}/image_id")
        }
        (AmiFamily::Bottlerocket, v) => {
            let v = if v == "latest" { "latest".to_string() } else { v.trim_start_matches('v').to_string() };
            format!("/aws/service/bottlerocket/aws-k8s-{kubernetes}/{arch}/{v}/image_id")
        }
        (AmiFamily::Custom, _) => unreachable!("parse_alias gives no Custom"),
    })
}

/// A volume size quantity in whole GiB (rounded up).
fn volume_gib(size: &str) -> Result<i32, String> {
    let bytes = nodewright_core::model::quantity::parse_bytes(size)?;
    let gib = bytes.div_ceil(1 << 30);
    i32::try_from(gib).ok().filter(|g| *g >= 1 && *g <= 65_536).ok_or_else(|| format!("`{size}` is not between 1Gi and 64Ti"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASS: &str = r#"
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: default
spec:
  instanceProfile: KarpenterNodeInstanceProfile
  amiSelectorTerms:
    - alias: al2023@latest
  subnetSelectorTerms:
    - tags:
        karpenter.sh/discovery: my-cluster
  securityGroupSelectorTerms:
    - tags:
        karpenter.sh/discovery: my-cluster
  kubelet:
    maxPods: 42
  metadataOptions:
    httpTokens: required
    httpPutResponseHopLimit: 2
"#;

    #[test]
    fn a_karpenter_node_class_becomes_launch_settings() {
        let classes = parse_node_classes("class.yaml", CLASS).unwrap();
        assert_eq!(classes.len(), 1);
        let class = Ec2NodeClass::from_karpenter(&classes[0].name, &classes[0].spec, "1.31").unwrap();
        assert_eq!(class.family, AmiFamily::Al2023);
        assert_eq!(class.kubelet.max_pods, Some(42));
        assert_eq!(class.metadata.http_put_response_hop_limit, 2);
        assert_eq!(class.metadata.http_endpoint, "enabled", "defaults fill what is not given");
        assert_eq!(class.volumes(), vec![("/dev/xvda".to_string(), 20, "gp3".to_string(), true, true)]);
        let user_data = class.rendered_user_data("my-cluster");
        assert!(user_data.starts_with("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"//\"\n"), "{user_data}");
        assert!(user_data.contains("Content-Type: application/node.eks.aws\n\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\n"), "{user_data}");
        assert!(user_data.contains("name: my-cluster") && user_data.contains("maxPods: 42"), "{user_data}");
        assert!(user_data.ends_with("--//--\n"));
    }

    #[test]
    fn aliases_name_the_public_parameters() {
        assert_eq!(
            alias_parameter("al2023@latest", "1.31", "x86_64").unwrap(),
            "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/image_id"
        );
        assert_eq!(
            alias_parameter("al2023@v20240625", "1.30", "arm64").unwrap(),
            "/aws/service/eks/optimized-ami/1.30/amazon-linux-2023/arm64/standard/amazon-eks-node-al2023-arm64-standard-1.30-v20240625/image_id"
        );
        assert_eq!(alias_parameter("bottlerocket@latest", "1.31", "arm64").unwrap(), "/aws/service/bottlerocket/aws-k8s-1.31/arm64/latest/image_id");
        assert_eq!(alias_parameter("windows@latest", "1.31", "x86_64").unwrap_err(), "`windows` is not al2023, al2 or bottlerocket");
        assert_eq!(alias_parameter("al2023", "1.31", "x86_64").unwrap_err(), "`al2023` is not FAMILY@VERSION");
    }

    #[test]
    fn bottlerocket_and_al2_user_data_carry_the_kubelet_settings_and_the_users() {
        let mut class = Ec2NodeClass { family: AmiFamily::Bottlerocket, user_data: "[settings.kubernetes]\nkube-api-qps = 30\n".into(), ..Default::default() };
        class.kubelet.max_pods = Some(110);
        assert_eq!(
            class.rendered_user_data("c"),
            "[settings.kubernetes]\ncluster-name = \"c\"\nmax-pods = 110\n\n[settings.kubernetes]\nkube-api-qps = 30\n"
        );
        class.family = AmiFamily::Al2;
        class.user_data = "echo hello".into();
        let al2 = class.rendered_user_data("c");
        assert!(al2.contains("echo hello\n--//\n"), "the user's part first: {al2}");
        assert!(al2.contains("/etc/eks/bootstrap.sh 'c' --kubelet-extra-args '--max-pods=110'"), "{al2}");
    }

    #[test]
    fn raid0_is_asked_of_each_familys_bootstrap() {
        let mut class = Ec2NodeClass { family: AmiFamily::Al2023, raid0: true, ..Default::default() };
        let al2023 = class.rendered_user_data("c");
        assert!(al2023.contains("instance:\n    localStorage:\n      strategy: RAID0\n"), "{al2023}");
        class.family = AmiFamily::Al2;
        assert!(class.rendered_user_data("c").contains("/etc/eks/bootstrap.sh 'c' --local-disks raid0\n"));
        class.family = AmiFamily::Bottlerocket;
        let toml = class.rendered_user_data("c");
        assert!(toml.contains("[settings.bootstrap-commands.000-mount-instance-storage]\n"), "{toml}");
        assert!(toml.contains(r#"["apiclient", "ephemeral-storage", "init"]"#), "{toml}");
        class.raid0 = false;
        assert!(!class.rendered_user_data("c").contains("ephemeral-storage"));
        // Read from Karpenter's spelling; anything else is refused by name.
        let parse = |policy: &str| {
            let classes = parse_node_classes("class.yaml", &format!("{CLASS}  instanceStorePolicy: {policy}\n")).unwrap();
            Ec2NodeClass::from_karpenter(&classes[0].name, &classes[0].spec, "1.31").map(|c| c.raid0)
        };
        assert_eq!(parse("RAID0"), Ok(true));
        assert_eq!(parse("RAID5"), Err("EC2NodeClass default: spec.instanceStorePolicy: `RAID5` is not RAID0".into()));
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_field() {
        let parse = |text: &str| {
            let classes = parse_node_classes("class.yaml", text)?;
            Ec2NodeClass::from_karpenter(&classes[0].name, &classes[0].spec, "1.31").map(drop)
        };
        assert_eq!(parse(&CLASS.replace("instanceProfile: KarpenterNodeInstanceProfile", "role: \"arn:aws:iam::1:role/\"")).unwrap_err(), "EC2NodeClass default: spec.role: `arn:aws:iam::1:role/` names no role");
        assert_eq!(parse(&CLASS.replace("instanceProfile: KarpenterNodeInstanceProfile", "")).unwrap_err(), "EC2NodeClass default: spec.role: set role or instanceProfile");
        assert_eq!(parse(&CLASS.replace("maxPods: 42", "maxPod: 42")).unwrap_err().split(": unknown field").next().unwrap(), "class.yaml: EC2NodeClass default: spec.kubelet.maxPod");
        assert_eq!(
            parse(&CLASS.replace("alias: al2023@latest", "alias: windows2022@latest")).unwrap_err(),
            "EC2NodeClass default: spec.amiSelectorTerms[0].alias: `windows2022` is not al2023, al2 or bottlerocket"
        );
        assert_eq!(
            parse(&CLASS.replace("maxPods: 42", "maxPods: 42\n    kubeReserved:\n      memory: lots")).unwrap_err(),
            "EC2NodeClass default: spec.kubelet.kubeReserved.memory: `lots` is not a quantity"
        );
        assert_eq!(
            parse(&CLASS.replace("  kubelet:\n", "  blockDeviceMappings:\n    - deviceName: /dev/xvda\n      ebs:\n        volumeSize: lots\n  kubelet:\n")).unwrap_err(),
            "EC2NodeClass default: spec.blockDeviceMappings[0].ebs.volumeSize: `lots` is not a quantity"
        );
    }

    #[test]
    fn capacity_reservation_terms_are_checked_as_karpenter_checks_them() {
        let parse = |terms: &str| {
            let text = CLASS.replace("  kubelet:\n", &format!("  capacityReservationSelectorTerms:\n{terms}  kubelet:\n"));
            let classes = parse_node_classes("class.yaml", &text)?;
            Ec2NodeClass::from_karpenter(&classes[0].name, &classes[0].spec, "1.31").map(|c| c.capacity_reservations)
        };
        let taken = parse("    - tags: { team: ml }\n      ownerID: \"123456789012\"\n      instanceMatchCriteria: targeted\n    - id: cr-0a1b2c3d4e5f60718\n").unwrap();
        assert_eq!(taken.len(), 2);
        assert_eq!((taken[0].owner_id.as_deref(), taken[0].instance_match_criteria.as_deref()), (Some("123456789012"), Some("targeted")));
        assert_eq!(taken[1].id.as_deref(), Some("cr-0a1b2c3d4e5f60718"));
        let refused = |terms: &str| parse(terms).unwrap_err();
        let field = "EC2NodeClass default: spec.capacityReservationSelectorTerms";
        assert_eq!(refused("    - ownerID: \"123456789012\"\n"), format!("{field}[0]: names no id or tags"));
        assert_eq!(refused("    - id: cr-0a1b2c3d\n      tags: { team: ml }\n"), format!("{field}[0]: `id` cannot be set along with `tags` or `ownerID`"));
        assert_eq!(refused("    - id: sg-0a1b2c3d\n"), format!("{field}[0]: id `sg-0a1b2c3d` is not a capacity reservation id (cr-…)"));
        assert_eq!(refused("    - tags: { team: \"\" }\n"), format!("{field}[0]: empty tag keys or values are not supported"));
        assert_eq!(refused("    - tags: { team: ml }\n      ownerID: \"12\"\n"), format!("{field}[0]: ownerID `12` is not a 12-digit account id"));
        assert_eq!(
            refused("    - tags: { team: ml }\n    - tags: { team: ml }\n      instanceMatchCriteria: closed\n"),
            format!("{field}[1]: instanceMatchCriteria `closed` is not open or targeted")
        );
        assert_eq!(refused("    - name: mine\n").split(": unknown field").next().unwrap(), format!("class.yaml: {field}[0].name"));
    }
}
