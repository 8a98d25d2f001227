//! The custom resources, group `nodewright.io`, version `v1alpha1`, derived
//! from these types (kube `CustomResource` + schemars). `nodewright crds`
//! prints them; `examples/deploy/crds/` holds the same YAML.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A status condition, as Kubernetes objects carry them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Rejected`, `Launched`, `Registered`, `Initialized`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word.
    #[serde(default)]
    pub reason: String,
    /// What a human needs to know.
    #[serde(default)]
    pub message: String,
    /// RFC 3339.
    #[serde(default)]
    pub last_transition_time: String,
}

/// Set `condition` in `conditions`, replacing the one of the same type.
pub fn set_condition(conditions: &mut Vec<Condition>, condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// A NodePool: Karpenter's v1 NodePool spec (template, requirements,
/// taints, limits, disruption, weight) plus `policy`, which names the
/// selection and consolidation plugins. The controller checks the spec with
/// the same parser as NodePool files and reports errors in `status`.
#[derive(CustomResource, Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[kube(group = "nodewright.io", version = "v1alpha1", kind = "NodePool", plural = "nodepools", shortname = "np")]
#[kube(status = "NodePoolStatus")]
#[kube(printcolumn = r#"{"name":"NodeClass","type":"string","jsonPath":".spec.template.spec.nodeClassRef.name"}"#)]
#[kube(printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.nodes"}"#)]
#[kube(printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#)]
#[kube(printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#)]
#[kube(printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".spec.weight","priority":1}"#)]
pub struct NodePoolSpec {
    /// The Karpenter-shaped spec; see `examples/nodepools/default.yaml`.
    #[serde(flatten)]
    #[schemars(schema_with = "any_object")]
    pub spec: serde_json::Map<String, serde_json::Value>,
}

/// What the controller says about a NodePool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// `Ready` (the spec is valid) with the error when it is not.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// NodeClaims it has now (launched or in flight).
    #[serde(default)]
    pub nodes: u32,
    /// The capacity of its launched nodes, summed, and their count
    /// (Karpenter's `status.resources`): `cpu`, `memory`, `pods`,
    /// `ephemeral-storage`, `nodes`, and `nvidia.com/gpu` when it has any.
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
}

/// How an `EC2NodeClass` finds an AMI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AmiSelector {
    /// An AMI id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// An SSM parameter holding the AMI id (e.g. the EKS-optimised AMI's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_parameter: Option<String>,
}

/// How nodes are launched on EC2.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "nodewright.io", version = "v1alpha1", kind = "EC2NodeClass", plural = "ec2nodeclasses", shortname = "ec2nc")]
#[kube(status = "EC2NodeClassStatus")]
#[serde(rename_all = "camelCase")]
pub struct EC2NodeClassSpec {
    /// Subnets: every subnet carrying all these tags.
    pub subnet_selector_tags: BTreeMap<String, String>,
    /// Security groups: every group carrying all these tags.
    pub security_group_selector_tags: BTreeMap<String, String>,
    /// The AMI.
    pub ami: AmiSelector,
    /// Instance profile of the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// Root volume size in GiB (gp3, encrypted).
    #[serde(default = "default_root_volume")]
    pub root_volume_gib: i32,
    /// User data.
    #[serde(default)]
    pub user_data: String,
    /// Extra tags on instances.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_root_volume() -> i32 {
    20
}

/// What the controller says about an `EC2NodeClass`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EC2NodeClassStatus {
    /// `SubnetsReady`, `SecurityGroupsReady`, `AMIsReady`,
    /// `InstanceProfileReady`, and `Ready` once they all are.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The subnets its terms select, as Karpenter's status lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<ResolvedSubnet>,
    /// The security groups its terms select.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<ResolvedSecurityGroup>,
    /// The AMI of each architecture.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amis: Vec<ResolvedAmi>,
    /// The instance profile nodes launch with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
}

/// A subnet a node class resolved to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResolvedSubnet {
    /// `subnet-…`.
    pub id: String,
    /// Its availability zone.
    pub zone: String,
}

/// A security group a node class resolved to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResolvedSecurityGroup {
    /// `sg-…`.
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
}

/// An AMI a node class resolved to, with the requirement it serves
/// (`kubernetes.io/arch In [amd64]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResolvedAmi {
    /// `ami-…`.
    pub id: String,
    /// The node requirements it serves.
    #[serde(default)]
    pub requirements: Vec<NodeSelectorRequirement>,
}

/// A node selector requirement, as Kubernetes writes one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeSelectorRequirement {
    /// The label.
    pub key: String,
    /// `In`, `NotIn`, …
    pub operator: String,
    /// The values.
    #[serde(default)]
    pub values: Vec<String>,
}

/// A node nodewright decided to launch, from the decision until the
/// instance is gone (a finalizer holds it until the instance is terminated).
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "nodewright.io", version = "v1alpha1", kind = "NodeClaim", plural = "nodeclaims", shortname = "nc")]
#[kube(status = "NodeClaimStatus")]
#[kube(printcolumn = r#"{"name":"Type","type":"string","jsonPath":".status.instanceType"}"#)]
#[kube(printcolumn = r#"{"name":"Capacity","type":"string","jsonPath":".status.capacityType"}"#)]
#[kube(printcolumn = r#"{"name":"Zone","type":"string","jsonPath":".status.zone"}"#)]
#[kube(printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.nodeName"}"#)]
#[kube(printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#)]
#[kube(printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#)]
#[kube(printcolumn = r#"{"name":"ID","type":"string","jsonPath":".status.providerID","priority":1}"#)]
#[kube(printcolumn = r#"{"name":"NodePool","type":"string","jsonPath":".spec.nodePool","priority":1}"#)]
#[kube(printcolumn = r#"{"name":"Drifted","type":"string","jsonPath":".status.conditions[?(@.type==\"Drifted\")].status","priority":1}"#)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimSpec {
    /// Its NodePool.
    pub node_pool: String,
    /// Catalog offerings the launch may use, most preferred first, as
    /// `type/zone/capacity-type`.
    pub offerings: Vec<String>,
    /// CPU (millicores) its pods and daemonsets request.
    pub cpu_millis: u32,
    /// Memory (bytes) they request.
    pub memory_bytes: u64,
    /// GPUs they request.
    #[serde(default)]
    pub gpus: u32,
    /// Taints the node registers with (startup taints included).
    #[serde(default)]
    pub taints: Vec<String>,
    /// Pods it was opened for.
    #[serde(default)]
    pub pods: Vec<String>,
    /// The NodePool's drift hash when the claim was made.
    #[serde(default)]
    pub node_pool_hash: String,
}

/// What the controller says about a NodeClaim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimStatus {
    /// `aws:///zone/i-…` once launched.
    #[serde(default, rename = "providerID", skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// EC2 instance id.
    #[serde(default, rename = "instanceID", skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Offering bought, `type/zone/capacity-type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offering: Option<String>,
    /// Instance type bought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// How it was bought: `on-demand`, `spot` or `reserved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_type: Option<String>,
    /// Its availability zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The node that registered for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// `Launched`, `Registered`, `Initialized`, and `Ready` (Unknown until
    /// the node is initialised, then True), as Karpenter's.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Which decision a `PolicyPlugin` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PluginRole {
    /// Which offering to buy.
    Selection,
    /// Which nodes to consolidate.
    Consolidation,
}

/// Whether a `PolicyPlugin` decides or only shadows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PluginMode {
    /// Its answers are used.
    #[default]
    Active,
    /// It sees every input beside the active version; its diverging choices
    /// are logged with their cost difference; nothing it says is executed.
    Shadow,
}

/// Where the component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginSource {
    /// A ConfigMap (in the controller's namespace) with the component under
    /// `binaryData[key]` — for components up to about 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// An HTTP(S) URL, for large components (Python ones are ~18 MB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Required sha256 of the component, hex. A component whose digest
    /// differs is rejected.
    pub sha256: String,
}

/// A component in a ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    /// ConfigMap name.
    pub name: String,
    /// Key under `binaryData`.
    #[serde(default = "default_key")]
    pub key: String,
}

fn default_key() -> String {
    "plugin.wasm".into()
}

/// A policy plugin NodePools refer to by name in `spec.policy`.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "nodewright.io", version = "v1alpha1", kind = "PolicyPlugin", plural = "policyplugins", shortname = "pp")]
#[kube(status = "PolicyPluginStatus")]
#[kube(printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role"}"#)]
#[kube(printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#)]
#[kube(printcolumn = r#"{"name":"Digest","type":"string","jsonPath":".status.loadedDigest"}"#)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPluginSpec {
    /// Which decision it makes.
    pub role: PluginRole,
    /// The component.
    pub source: PluginSource,
    /// JSON handed to the plugin (`config()`).
    #[serde(default)]
    #[schemars(schema_with = "any_object")]
    pub config: serde_json::Value,
    /// `active` or `shadow`.
    #[serde(default)]
    pub mode: PluginMode,
}

/// What the controller says about a `PolicyPlugin`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPluginStatus {
    /// sha256 of the version serving now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_digest: Option<String>,
    /// When it was swapped in (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_swap_time: Option<String>,
    /// `Ready`, and `Rejected` with the reason when the last candidate
    /// failed (the previous version keeps serving).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Every CRD as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    use kube::CustomResourceExt;
    [NodePool::crd(), NodeClaim::crd(), EC2NodeClass::crd(), PolicyPlugin::crd()]
        .iter()
        .map(|crd| serde_yaml_ng::to_string(crd).expect("CRDs serialise"))
        .collect::<Vec<_>>()
        .join("---\n")
}
