//! The last steps of every node's end, whoever decided it (a disruption
//! method, a person deleting its NodeClaim or Node, a spot interruption):
//! drain it through the Eviction API, which honours PodDisruptionBudgets
//! (pods deleted outright only once a drain is forced, past the NodePool's
//! `terminationGracePeriod`); once it is empty terminate the instance — one
//! already gone counts as terminated — and only then delete the NodeClaim
//! (its finalizer removed). Nothing else drains for a node's end or
//! terminates instances; the termination counts by cause are kept here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::cloud::CloudProvider;
use crate::cluster::{Cluster, ClusterError, ClusterEvent, EventObject, Eviction};
use crate::model::NodeClaim;

/// What one drain step did to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drained {
    /// It was empty: its instance is terminated and its NodeClaim released.
    Terminated,
    /// It was empty, but its instance still runs after a failed terminate:
    /// the claim is kept and the step is tried again later.
    TerminateFailed,
    /// Pods are leaving: those evicted (or deleted, when forced) this step.
    /// The node goes at a later step, once it is empty.
    Evicting {
        /// Pods evicted this step.
        evicted: Vec<String>,
        /// A PodDisruptionBudget (or a failed call) held back some pod:
        /// retry with backoff.
        blocked: bool,
    },
}

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
        let instance = claim.instance.as_ref().map_or_else(|| "no instance".to_string(), |i| format!("instance {}", i.id));
        self.cluster
            .record_event(ClusterEvent { object: EventObject::NodeClaim(claim.name.clone()), warning: false, reason: "Terminated", message: format!("{instance} terminated ({cause})") })
            .await?;
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()).entry(cause).or_default() += 1;
        Ok(true)
    }

    /// One drain step for `claim`'s node, ending for `cause`: if no pod is
    /// left, terminate and release it ([`Self::terminate`]); otherwise evict
    /// what is left through the Eviction API, or, when `force`d, delete it
    /// without asking the PodDisruptionBudgets.
    pub async fn drain(&self, claim: &NodeClaim, cause: &'static str, force: bool) -> Result<Drained, ClusterError> {
        let node = claim.name.as_str();
        let pods = self.cluster.pods_on(node).await?;
        if pods.is_empty() {
            return Ok(if self.terminate(claim, cause).await? { Drained::Terminated } else { Drained::TerminateFailed });
        }
        if force {
            return Ok(Drained::Evicting { evicted: self.cluster.drain(node).await?, blocked: false });
        }
        let mut evicted = Vec::new();
        let mut blocked = false;
        for pod in &pods {
            match self.cluster.evict(&pod.name).await {
                Ok(Eviction::Evicted) => evicted.push(pod.name.to_string()),
                Ok(Eviction::Blocked { pdb }) => {
                    tracing::info!(node, pod = %pod.name, pdb, "eviction blocked by a PodDisruptionBudget, retried with backoff");
                    blocked = true;
                }
                Err(e) => {
                    tracing::warn!(node, pod = %pod.name, "eviction failed, retried: {e}");
                    blocked = true;
                }
            }
        }
        Ok(Drained::Evicting { evicted, blocked })
    }

    /// Release the deleted NodeClaims `claims`, which recorded no instance,
    /// after terminating any instance the cloud tagged with one of their
    /// names (a launch whose record a crash cut off). A claim is kept while
    /// the cloud cannot be asked, or a terminate of its instance fails.
    /// Returns the claims released.
    pub async fn release_unrecorded(&self, claims: &[String]) -> Result<Vec<String>, ClusterError> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let tagged = match self.cloud.instances().await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(?claims, "deleted NodeClaims kept: the cloud's instances could not be listed: {e}");
                return Ok(Vec::new());
            }
        };
        let mut released = Vec::new();
        for name in claims {
            let mut failed = false;
            for instance in tagged.iter().filter(|i| i.claim == *name) {
                match self.cloud.terminate(&instance.id).await {
                    Ok(()) => tracing::info!(node_claim = %name, instance = %instance.id, "terminated the instance tagged with a deleted NodeClaim that never recorded it"),
                    Err(e) => {
                        tracing::warn!(node_claim = %name, instance = %instance.id, "deleted NodeClaim kept: its tagged instance was not terminated: {e}");
                        failed = true;
                    }
                }
            }
            if !failed {
                self.cluster.delete_node_claim(name).await?;
                released.push(name.clone());
            }
        }
        Ok(released)
    }

    /// End instance `id`, launched for NodeClaim `claim`, which was deleted
    /// and released while the launch was in flight: no node registered, so
    /// nothing is drained, and no claim is left to release. Returns what
    /// became of it, in a sentence (the launch's failure reason). If the
    /// terminate fails, the instance is left to the garbage collection of
    /// instances no NodeClaim holds.
    pub async fn end_unclaimed(&self, claim: &str, id: &str) -> String {
        match self.cloud.terminate(id).await {
            Ok(()) => {
                tracing::info!(node_claim = %claim, instance = %id, "NodeClaim deleted while its instance launched: instance terminated");
                format!("NodeClaim {claim} was deleted while its instance launched: instance {id} terminated, its pods stay pending")
            }
            Err(e) => {
                tracing::warn!(node_claim = %claim, instance = %id, "NodeClaim deleted while its instance launched; terminate failed, left to garbage collection: {e}");
                format!("NodeClaim {claim} was deleted while its instance launched; terminating instance {id} failed ({e}), garbage collection ends it")
            }
        }
    }

    /// NodeClaims released, by cause.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
