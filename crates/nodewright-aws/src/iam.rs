//! The instance profile an `EC2NodeClass` with a `role` launches with, as
//! Karpenter makes it: one per node class, named after the cluster and a
//! hash of the region and the class, created under the path
//! `/nodewright/REGION/CLUSTER/` and tagged with the class, the cluster and
//! the region, holding exactly the class's role (a role changed in the
//! class replaces the one in the profile).

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_iam::Client;
use aws_sdk_iam::types::Tag;
use sha2::Digest;

use nodewright_core::cloud::CloudError;

/// The tag naming the node class an instance profile was made for.
pub const NODE_CLASS_TAG: &str = "nodewright.io/ec2nodeclass";

fn error(operation: &str, e: impl std::error::Error) -> CloudError {
    CloudError(format!("IAM {operation}: {}", aws_sdk_iam::error::DisplayErrorContext(e)))
}

/// Instance profiles made for node classes' roles.
pub struct InstanceProfiles {
    client: Client,
    cluster: String,
    region: String,
    /// (class, role) → the profile's name, once it holds the role.
    made: Mutex<HashMap<(String, String), String>>,
}

/// The role's name: `role` may be given as a name, a path or an ARN.
pub fn role_name(role: &str) -> &str {
    role.rsplit('/').next().unwrap_or(role)
}

impl InstanceProfiles {
    /// Profiles of cluster `cluster` in `region`, through `client`.
    pub fn new(client: Client, cluster: &str, region: &str) -> Self {
        InstanceProfiles { client, cluster: cluster.into(), region: region.into(), made: Mutex::new(HashMap::new()) }
    }

    /// The name of node class `class`'s profile: the cluster and 16 hex
    /// digits of the sha256 of the region and the class, at most 128
    /// characters (IAM's limit).
    pub fn name_for(&self, class: &str) -> String {
        let digest = hex::encode(sha2::Sha256::digest(format!("{}/{class}", self.region)));
        let mut cluster = self.cluster.clone();
        cluster.truncate(128 - 17);
        format!("{cluster}_{}", &digest[..16])
    }

    /// The profile of node class `class`, created if missing, holding
    /// `role` and no other.
    pub async fn ensure(&self, class: &str, role: &str) -> Result<String, CloudError> {
        let role = role_name(role);
        let key = (class.to_string(), role.to_string());
        if let Some(name) = self.made.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(name.clone());
        }
        let name = self.name_for(class);
        let roles: Vec<String> = match self.client.get_instance_profile().instance_profile_name(&name).send().await {
            Ok(found) => found.instance_profile().map(|p| p.roles().iter().map(|r| r.role_name().to_string()).collect()).unwrap_or_default(),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => {
                let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build().map_err(|e| CloudError(format!("IAM tag {k}: {e}")));
                self.client
                    .create_instance_profile()
                    .instance_profile_name(&name)
                    .path(format!("/nodewright/{}/{}/", self.region, self.cluster))
                    .tags(tag(NODE_CLASS_TAG, class)?)
                    .tags(tag(&format!("kubernetes.io/cluster/{}", self.cluster), "owned")?)
                    .tags(tag("topology.kubernetes.io/region", &self.region)?)
                    .send()
                    .await
                    .map_err(|e| error("CreateInstanceProfile", e))?;
                tracing::info!(node_class = class, instance_profile = %name, "instance profile created");
                Vec::new()
            }
            Err(e) => return Err(error("GetInstanceProfile", e)),
        };
        for other in roles.iter().filter(|r| r.as_str() != role) {
            self.client
                .remove_role_from_instance_profile()
                .instance_profile_name(&name)
                .role_name(other)
                .send()
                .await
                .map_err(|e| error("RemoveRoleFromInstanceProfile", e))?;
        }
        if !roles.iter().any(|r| r == role) {
            self.client
                .add_role_to_instance_profile()
                .instance_profile_name(&name)
                .role_name(role)
                .send()
                .await
                .map_err(|e| error("AddRoleToInstanceProfile", e))?;
            tracing::info!(node_class = class, instance_profile = %name, role, "role added to the instance profile");
        }
        self.made.lock().unwrap_or_else(|e| e.into_inner()).insert(key, name.clone());
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_is_named_by_its_last_path_segment() {
        assert_eq!(role_name("KarpenterNodeRole-demo"), "KarpenterNodeRole-demo");
        assert_eq!(role_name("arn:aws:iam::111122223333:role/nodes/KarpenterNodeRole-demo"), "KarpenterNodeRole-demo");
    }
}
