//! Each NodePool's status: whether its spec is valid (if not, the field and
//! the error, while it is left out of every decision), how many NodeClaims
//! it has, and the capacity of its launched nodes (Karpenter's
//! `status.resources`, which its `limits` are checked against). Written only
//! when it changes.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cloud::CloudProvider;
use crate::cluster::{Cluster, ClusterError, NodePoolStatus};

/// Writes NodePool statuses.
pub struct NodePoolStatusController<C, K> {
    cloud: Arc<C>,
    cluster: Arc<K>,
}

impl<C: CloudProvider, K: Cluster> NodePoolStatusController<C, K> {
    /// A controller reading capacities from `cloud`'s catalog.
    pub fn new(cloud: Arc<C>, cluster: Arc<K>) -> Self {
        NodePoolStatusController { cloud, cluster }
    }

    /// One pass; returns the NodePools whose status was written.
    pub async fn reconcile(&self) -> Result<Vec<String>, ClusterError> {
        let catalog = self.cloud.catalog();
        let mut held: HashMap<String, NodePoolStatus> = HashMap::new();
        for claim in self.cluster.node_claims().await? {
            let status = held.entry(claim.node_pool.clone()).or_default();
            status.nodes = status.nodes.saturating_add(1);
            if let Some(offering) = claim.instance.as_ref().and_then(|i| catalog.offerings.get(i.offering as usize)) {
                status.resources = status.resources.saturating_add(offering.capacity);
            }
        }
        let mut written = Vec::new();
        for object in self.cluster.node_pool_objects().await? {
            let mut next = held.remove(&object.name).unwrap_or_default();
            next.invalid = object.invalid.clone();
            if object.status.as_ref() == Some(&next) {
                continue;
            }
            let was_invalid = object.status.as_ref().and_then(|s| s.invalid.as_ref());
            if let Some(why) = &next.invalid
                && was_invalid != Some(why)
            {
                tracing::error!(node_pool = %object.name, "NodePool {} is left out until it is fixed: {why}", object.name);
            }
            self.cluster.write_node_pool_status(&object.name, &next).await?;
            written.push(object.name);
        }
        Ok(written)
    }
}
