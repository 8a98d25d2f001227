//! What the lifecycle controllers (`nodewright_core::controllers`) read and
//! write, as Kubernetes objects: registrations (NodeClaims and the Nodes
//! their instances registered as, linked by providerID), NodeClaim
//! conditions, startup taints, NodePool statuses.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};
use kube::api::{Api, Patch, PatchParams};

use crate::{FIELD_MANAGER, KubeCluster, crd, err, parse_pool};
use nodewright_core::cluster::{ClusterError, NodePoolObject, NodePoolStatus, RegisteredNode, Registration};
use nodewright_core::model::{ClaimConditions, Resources};
use nodewright_core::model::quantity::{parse_bytes, parse_cpu_millis};

fn condition_true(conditions: &[crd::Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

/// The reference that makes a NodeClaim `pool`'s (as Karpenter's are):
/// deleting the NodePool has the garbage collector delete the claim, which
/// the termination finalizer drains and terminates. `None` for a NodePool
/// the API server gave no uid.
pub(crate) fn owned_by(pool: &crd::NodePool) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: crd::NodePool::api_version(&()).into_owned(),
        kind: crd::NodePool::kind(&()).into_owned(),
        name: pool.name_any(),
        uid: pool.uid()?,
        block_owner_deletion: Some(true),
        controller: None,
    })
}

/// The disruption conditions of a NodeClaim's status, read back.
pub(crate) fn claim_conditions(conditions: &[crd::Condition]) -> ClaimConditions {
    let reason = |type_: &str| conditions.iter().find(|c| c.type_ == type_ && c.status == "True").map(|c| c.reason.clone());
    ClaimConditions {
        drifted: reason("Drifted"),
        consolidatable: condition_true(conditions, "Consolidatable"),
        empty: condition_true(conditions, "Empty"),
        disruption: reason("DisruptionReason"),
    }
}

/// The Karpenter spelling of a disruption reason's label.
fn reason_name(label: &str) -> String {
    let mut chars = label.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn condition(type_: &str, status: &str, reason: &str, message: String) -> crd::Condition {
    crd::Condition { type_: type_.into(), status: status.into(), reason: reason.into(), message, last_transition_time: chrono::Utc::now().to_rfc3339() }
}

/// Karpenter's `status.resources` of a NodePool, as quantities.
fn resource_list(nodes: u32, r: Resources) -> BTreeMap<String, String> {
    let cpu = if r.cpu_millis.is_multiple_of(1000) { (r.cpu_millis / 1000).to_string() } else { format!("{}m", r.cpu_millis) };
    let mut list = BTreeMap::from([
        ("cpu".to_string(), cpu),
        ("memory".to_string(), r.memory_bytes.to_string()),
        ("pods".to_string(), r.pods.to_string()),
        ("ephemeral-storage".to_string(), r.ephemeral_bytes.to_string()),
        ("nodes".to_string(), nodes.to_string()),
    ]);
    if r.gpus > 0 {
        list.insert("nvidia.com/gpu".into(), r.gpus.to_string());
    }
    list
}

/// [`resource_list`] read back; `None` if any value is not one it writes.
fn resources_of(list: &BTreeMap<String, String>) -> Option<Resources> {
    let get = |key: &str| list.get(key).map(String::as_str);
    Some(Resources {
        cpu_millis: u32::try_from(parse_cpu_millis(get("cpu")?).ok()?).ok()?,
        memory_bytes: parse_bytes(get("memory")?).ok()?,
        pods: get("pods")?.parse().ok()?,
        gpus: get("nvidia.com/gpu").map_or(Some(0), |g| g.parse().ok())?,
        ephemeral_bytes: parse_bytes(get("ephemeral-storage")?).ok()?,
    })
}

/// A NodePool's status as written, in the model's terms (`None`: never
/// written, or not in the shape this controller writes).
fn status_of(np: &crd::NodePool) -> Option<NodePoolStatus> {
    let status = np.status.as_ref()?;
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    let invalid = match ready.status.as_str() {
        "True" => None,
        _ => Some(ready.message.clone()),
    };
    let resources = resources_of(&status.resources)?;
    Some(NodePoolStatus { invalid, nodes: status.nodes, resources })
}

impl KubeCluster {
    /// NodeClaims made before claims were owned by their NodePool (by an
    /// earlier version, or by hand) get the owner reference a new one is
    /// created with, so `kubectl delete nodepool` collects them too. A claim
    /// being deleted, or whose NodePool is gone, is left as it is. Each
    /// patch names the claim's `resourceVersion`: one changed since the read
    /// is left for the next call. Returns the claims given an owner.
    pub async fn own_node_claims(&self) -> Result<Vec<String>, ClusterError> {
        let pools = self.read::<crd::NodePool>(|c| c.node_pools.state(), "list nodepools").await?;
        let mut owned = Vec::new();
        for claim in self.read_claims().await? {
            let references = claim.owner_references();
            if claim.metadata.deletion_timestamp.is_some() || references.iter().any(|r| r.kind == crd::NodePool::kind(&())) {
                continue;
            }
            let Some(reference) = pools.iter().find(|p| p.name_any() == claim.spec.node_pool).and_then(|p| owned_by(p)) else { continue };
            let name = claim.name_any();
            let mut next = references.to_vec();
            next.push(reference);
            let patch = serde_json::json!({ "metadata": { "resourceVersion": claim.resource_version(), "ownerReferences": next } });
            match self.claims_api().patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(patched) => {
                    self.wrote_claim(patched);
                    owned.push(name);
                }
                // Changed or deleted since the read: the next call sees it as it is.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => return Err(err("give a nodeclaim its nodepool as owner")(e)),
            }
        }
        Ok(owned)
    }

    pub(crate) async fn read_registrations(&self) -> Result<Vec<Registration>, ClusterError> {
        let nodes = self.read_nodes().await?;
        let by_provider: HashMap<&str, &core::Node> =
            nodes.iter().filter_map(|n| Some((n.spec.as_ref()?.provider_id.as_deref()?, n.as_ref()))).collect();
        let alive: HashSet<String> = nodes.iter().filter(|n| n.metadata.deletion_timestamp.is_none()).map(|n| n.name_any()).collect();
        Ok(self
            .read_claims()
            .await?
            .iter()
            .filter_map(|claim| {
                let status = claim.status.clone().unwrap_or_default();
                let provider = status.provider_id.as_deref()?;
                let node = by_provider.get(provider).map(|n| RegisteredNode {
                    name: n.name_any(),
                    ready: n.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| c.type_ == "Ready" && c.status == "True"),
                    taints: n.spec.as_ref().and_then(|s| s.taints.as_ref()).map(|t| t.iter().map(|t| t.key.clone()).collect()).unwrap_or_default(),
                });
                Some(Registration {
                    claim: claim.name_any(),
                    node_pool: claim.spec.node_pool.clone(),
                    node,
                    // It was linked to a Node that is gone: deleted by hand.
                    node_deleted: status.node_name.as_deref().is_some_and(|n| !alive.contains(n)),
                    registered: condition_true(&status.conditions, "Registered"),
                    initialized: condition_true(&status.conditions, "Initialized"),
                    deleting: claim.metadata.deletion_timestamp.is_some(),
                })
            })
            .collect())
    }

    /// Status `nodeName` and the conditions Registered, then Initialized and
    /// Ready, in one patch.
    pub(crate) async fn write_registration(&self, claim: &str, node: &str, initialized: bool) -> Result<(), ClusterError> {
        let current = self.read_claims().await?.iter().find(|c| c.name_any() == claim).and_then(|c| c.status.clone()).unwrap_or_default();
        let mut conditions = current.conditions;
        crd::set_condition(&mut conditions, condition("Registered", "True", "NodeRegistered", String::new()));
        if initialized {
            crd::set_condition(&mut conditions, condition("Initialized", "True", "NodeReady", String::new()));
            crd::set_condition(&mut conditions, condition("Ready", "True", "Ready", String::new()));
        }
        let patch = serde_json::json!({ "status": { "nodeName": node, "conditions": conditions } });
        self.patch_existing_claim_status(claim, &patch, "patch nodeclaim status").await
    }

    /// `Drifted`, `Consolidatable`, `Empty` and `DisruptionReason`, each
    /// True (with its reason) or False, beside the lifecycle conditions, in
    /// one status patch; a condition's transition time moves only when its
    /// status or reason does.
    pub(crate) async fn patch_claim_conditions(&self, claim: &str, next: &ClaimConditions) -> Result<(), ClusterError> {
        let current = self.read_claims().await?.iter().find(|c| c.name_any() == claim).and_then(|c| c.status.clone()).unwrap_or_default();
        let mut conditions = current.conditions;
        let wanted = [
            ("Drifted", next.drifted.clone()),
            ("Consolidatable", next.consolidatable.then(|| "Consolidatable".to_string())),
            ("Empty", next.empty.then(|| "Empty".to_string())),
            ("DisruptionReason", next.disruption.as_deref().map(reason_name)),
        ];
        for (type_, reason) in wanted {
            let (status, reason) = match reason {
                Some(reason) => ("True", reason),
                None => ("False", format!("Not{type_}")),
            };
            if !conditions.iter().any(|c| c.type_ == type_ && c.status == status && c.reason == reason) {
                crd::set_condition(&mut conditions, condition(type_, status, &reason, String::new()));
            }
        }
        let patch = serde_json::json!({ "status": { "conditions": conditions } });
        self.patch_existing_claim_status(claim, &patch, "patch nodeclaim conditions").await
    }

    pub(crate) async fn untaint(&self, node: &str, keys: &[String]) -> Result<(), ClusterError> {
        let current = self.read_nodes().await?.iter().find(|n| n.name_any() == node).cloned();
        let taints = current.and_then(|n| n.spec.clone()).and_then(|s| s.taints).unwrap_or_default();
        let kept: Vec<&core::Taint> = taints.iter().filter(|t| !keys.contains(&t.key)).collect();
        let patch = serde_json::json!({ "spec": { "taints": kept } });
        let nodes: Api<core::Node> = Api::all(self.client.clone());
        let patched = nodes.patch(node, &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&patch)).await.map_err(err("remove startup taints"))?;
        self.wrote_node(patched);
        Ok(())
    }

    pub(crate) async fn read_node_pool_objects(&self) -> Result<Vec<NodePoolObject>, ClusterError> {
        Ok(self
            .read::<crd::NodePool>(|c| c.node_pools.state(), "list nodepools")
            .await?
            .iter()
            .map(|np| NodePoolObject {
                name: np.name_any(),
                invalid: parse_pool(np).err().map(|e| format!("{}: {}", e.field, e.message)),
                status: status_of(np),
            })
            .collect())
    }

    /// The `Ready` condition (`Valid`, or `InvalidSpec` with the field and
    /// the error; its transition time kept while it holds), `nodes` and
    /// `resources`.
    pub(crate) async fn patch_node_pool_status(&self, name: &str, next: &NodePoolStatus) -> Result<(), ClusterError> {
        let current = self
            .read::<crd::NodePool>(|c| c.node_pools.state(), "list nodepools")
            .await?
            .iter()
            .find(|np| np.name_any() == name)
            .and_then(|np| np.status.clone())
            .unwrap_or_default();
        let (status, reason, message) = match &next.invalid {
            None => ("True", "Valid", String::new()),
            Some(why) => ("False", "InvalidSpec", why.clone()),
        };
        let mut conditions = current.conditions;
        if !conditions.iter().any(|c| c.type_ == "Ready" && c.status == status && c.reason == reason && c.message == message) {
            crd::set_condition(&mut conditions, condition("Ready", status, reason, message));
        }
        let status = crd::NodePoolStatus { conditions, nodes: next.nodes, resources: resource_list(next.nodes, next.resources) };
        let patch = serde_json::json!({ "status": status });
        let api: Api<crd::NodePool> = Api::all(self.client.clone());
        api.patch_status(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Merge(&patch))
            .await
            .map_err(|e| ClusterError(format!("patch nodepool {name} status: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodepools_resources_read_back_as_written() {
        let r = Resources { cpu_millis: 15_890, memory_bytes: 32 << 30, pods: 234, gpus: 0, ephemeral_bytes: 20 << 30 };
        let list = resource_list(3, r);
        assert_eq!(list["cpu"], "15890m");
        assert_eq!(list["nodes"], "3");
        assert!(!list.contains_key("nvidia.com/gpu"));
        assert_eq!(resources_of(&list), Some(r));
        let whole = Resources { cpu_millis: 8000, gpus: 2, ..r };
        let list = resource_list(1, whole);
        assert_eq!((list["cpu"].as_str(), list["nvidia.com/gpu"].as_str()), ("8", "2"));
        assert_eq!(resources_of(&list), Some(whole));
        // Not the shape written: read as never written, so it is written again.
        let mut odd = list.clone();
        odd.insert("cpu".into(), "lots".into());
        assert_eq!(resources_of(&odd), None);
    }
}
