//! The last steps of every node's end, whoever decided it (a disruption
//! method, a person deleting its NodeClaim or Node, a spot interruption):
//! terminate the instance — one already gone counts as terminated — and
//! only then delete the NodeClaim (its finalizer removed). Nothing else
//! terminates instances; the termination counts by cause are kept here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::cloud::CloudProvider;
use crate::cluster::{Cluster, ClusterError};
use crate::model::NodeClaim;

/// Terminates instances and releases their NodeClaims.
pub struct Terminator<C, K> {
    cloud: Arc<C>,
    cluster: Arc<K>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl<C: CloudProvider, K: Cluster> Terminator<C, K> {
    /// A terminator over `cloud` and `cluster`.
    pub fn new(cloud: Arc<C>, cluster: Arc<K>) -> Self {
        Terminator { cloud, cluster, counts: Mutex::new(BTreeMap::new()) }
    }

    /// Terminate the instance of `claim` and delete the claim; `cause`
    /// labels the count (`expired`, `deleted`, `interrupted`, …). `false`:
    /// the instance still runs after a failed terminate, the claim is kept
    /// and the caller tries again later.
    pub async fn terminate(&self, claim: &NodeClaim, cause: &'static str) -> Result<bool, ClusterError> {
        if let Some(instance) = &claim.instance
            && let Err(e) = self.cloud.terminate(&instance.id).await
        {
            // Already terminated (by a process that stopped before it could
            // remove the finalizer): nothing runs it any more.
            let running = match self.cloud.instances().await {
                Ok(instances) => instances.iter().any(|i| i.id == instance.id),
                Err(_) => true,
            };
            if running {
                tracing::warn!(node_claim = %claim.name, "terminate failed, retried later: {e}");
                return Ok(false);
            }
            tracing::info!(node_claim = %claim.name, "its instance is already gone: {e}");
        }
        self.cluster.delete_node_claim(&claim.name).await?;
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()).entry(cause).or_default() += 1;
        Ok(true)
    }

    /// NodeClaims released, by cause.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
