//! Node registration and initialisation (Karpenter's NodeClaim lifecycle
//! after launch): Registered once the claim's instance has a Node,
//! Initialized once that Node is Ready and the NodePool's startup taints
//! are gone (this controller removes them). A Node deleted by hand deletes
//! its NodeClaim, which the termination path then drains and terminates.

use std::sync::Arc;

use crate::cluster::{Cluster, ClusterError};

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationReport {
    /// Claims linked to their node this pass (not yet Ready).
    pub registered: Vec<String>,
    /// Claims initialised this pass.
    pub initialized: Vec<String>,
    /// Claims whose Node was deleted by hand, now being deleted.
    pub node_deleted: Vec<String>,
}

/// Registers and initialises nodes.
pub struct RegistrationController<K> {
    cluster: Arc<K>,
}

impl<K: Cluster> RegistrationController<K> {
    /// A controller over `cluster`.
    pub fn new(cluster: Arc<K>) -> Self {
        RegistrationController { cluster }
    }

    /// One pass over every launched NodeClaim. Only what changed is written.
    pub async fn reconcile(&self) -> Result<RegistrationReport, ClusterError> {
        let pools = self.cluster.node_pools().await?;
        let mut report = RegistrationReport::default();
        for r in self.cluster.registrations().await? {
            if r.node_deleted {
                if !r.deleting {
                    tracing::info!(node_claim = %r.claim, "its node was deleted: deleting the NodeClaim");
                    self.cluster.request_claim_deletion(&r.claim).await?;
                    report.node_deleted.push(r.claim);
                }
                continue;
            }
            if r.initialized || r.deleting {
                continue;
            }
            let Some(node) = r.node else { continue };
            if !node.ready {
                if !r.registered {
                    self.cluster.mark_registration(&r.claim, &node.name, false).await?;
                    report.registered.push(r.claim);
                }
                continue;
            }
            // A NodePool gone since the launch has no startup taints to wait for.
            let startup: Vec<String> = pools
                .iter()
                .find(|p| p.name == r.node_pool)
                .map(|p| p.startup_taints.iter().map(|t| t.key.clone()).filter(|k| node.taints.contains(k)).collect())
                .unwrap_or_default();
            if !startup.is_empty() {
                self.cluster.remove_node_taints(&node.name, &startup).await?;
            }
            self.cluster.mark_registration(&r.claim, &node.name, true).await?;
            tracing::debug!(node_claim = %r.claim, node = %node.name, "node initialised");
            report.initialized.push(r.claim);
        }
        Ok(report)
    }
}
