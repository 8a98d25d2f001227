//! Interruption handling: the EventBridge events AWS puts on the
//! interruption queue (spot interruption warnings, rebalance
//! recommendations, instance state changes, scheduled maintenance), turned
//! into actions on the cluster: cordon, launch the replacement first, then
//! hand the node to the one termination path ([`crate::termination`]): its
//! NodeClaim marked for deletion, its pods evicted through the Eviction API
//! (PodDisruptionBudgets honoured), the instance terminated and the claim
//! released once it is empty. A node a budget holds stays marked; the
//! disruption controller's deletion method finishes it.
//!
//! A message is deleted once its action has started (or when it is
//! malformed, foreign or about an instance this cluster does not own);
//! handling a message twice is harmless.

mod message;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use message::{InterruptionKind, MessageError, parse_message};

use crate::cloud::CloudProvider;
use crate::cluster::{Cluster, ClusterError};
use crate::provisioning::Provisioner;
use crate::termination::Drained;

/// The cause of an interrupted node's end: its termination count, and its
/// NodeClaim's disruption reason while it is drained.
pub const INTERRUPTED: &str = "interrupted";

/// What became of one message. Every outcome but an error deletes the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The node is being replaced: cordoned, replacement launched, drained, deleted.
    Replaced {
        /// Kind of event.
        kind: &'static str,
        /// NodeClaims replaced.
        claims: Vec<String>,
        /// Replacement NodeClaims launched.
        replacements: usize,
        /// Pods evicted.
        evicted: usize,
    },
    /// Recorded, nothing done (a rebalance recommendation).
    Recorded {
        /// Kind of event.
        kind: &'static str,
    },
    /// No NodeClaim of this cluster runs the instance (already handled, or not ours).
    NotOwned {
        /// Kind of event.
        kind: &'static str,
    },
    /// Malformed or foreign: logged with its id and deleted.
    Dropped {
        /// Why.
        reason: String,
    },
}

/// Handles interruption messages against the cluster and cloud.
pub struct InterruptionHandler<C, K> {
    cloud: Arc<C>,
    cluster: Arc<K>,
    provisioner: Arc<Provisioner<C, K>>,
    /// Act on rebalance recommendations as on interruptions.
    rebalance_actionable: bool,
    counts: Mutex<BTreeMap<(String, String), u64>>,
}

impl<C: CloudProvider, K: Cluster> InterruptionHandler<C, K> {
    /// A handler launching replacements through `provisioner`.
    pub fn new(cloud: Arc<C>, cluster: Arc<K>, provisioner: Arc<Provisioner<C, K>>, rebalance_actionable: bool) -> Self {
        InterruptionHandler { cloud, cluster, provisioner, rebalance_actionable, counts: Mutex::new(BTreeMap::new()) }
    }

    /// Messages handled, by (kind, outcome).
    pub fn counts(&self) -> BTreeMap<(String, String), u64> {
        self.counts.lock().expect("counts lock").clone()
    }

    fn count(&self, kind: &str, outcome: &str) {
        *self.counts.lock().expect("counts lock").entry((kind.into(), outcome.into())).or_default() += 1;
    }

    /// Handle SQS message `id` with `body`. An error (the cluster or cloud
    /// failed) means the message must stay on the queue to be retried.
    pub async fn handle(&self, id: &str, body: &str) -> Result<Outcome, ClusterError> {
        let kind = match parse_message(id, body) {
            Ok(kind) => kind,
            Err(e) => {
                let label = match e {
                    MessageError::Malformed { .. } => "malformed",
                    MessageError::Foreign { .. } => "foreign",
                };
                tracing::warn!(message = id, "{e}");
                self.count(label, "dropped");
                return Ok(Outcome::Dropped { reason: e.to_string() });
            }
        };
        self.handle_event(id, kind).await
    }

    /// Act on an event already parsed (the simulated cloud emits them as
    /// they come out of the queue). `id` names it in logs.
    pub async fn handle_event(&self, id: &str, kind: InterruptionKind) -> Result<Outcome, ClusterError> {
        let name = kind.name();
        if let InterruptionKind::Rebalance { instance } = &kind
            && !self.rebalance_actionable
        {
            tracing::info!(message = id, instance, "rebalance recommendation recorded");
            self.count(name, "recorded");
            return Ok(Outcome::Recorded { kind: name });
        }
        let instances = kind.instances();
        let claims: Vec<_> = self
            .cluster
            .node_claims()
            .await?
            .into_iter()
            .filter(|c| c.instance.as_ref().is_some_and(|i| instances.contains(&i.id.as_str())))
            .collect();
        if claims.is_empty() {
            self.count(name, "not-owned");
            return Ok(Outcome::NotOwned { kind: name });
        }
        if matches!(kind, InterruptionKind::SpotInterruption { .. }) {
            for claim in &claims {
                if let Some(instance) = &claim.instance {
                    self.cloud.mark_unavailable(instance.offering);
                    self.provisioner.fleet().interrupted(instance.offering, self.provisioner.now());
                }
            }
        }
        // Cordon, then launch capacity for the pods before evicting them.
        let mut moving = Vec::new();
        for claim in &claims {
            self.cluster.cordon(&claim.name).await?;
            moving.extend(self.cluster.pods_on(&claim.name).await?);
        }
        let report = self.provisioner.provision_with(moving).await?;
        // Then hand each node to the termination path: its claim is marked
        // for deletion first, so that what this pass cannot finish (a pod a
        // PodDisruptionBudget holds, an eviction still under way) is
        // finished by the termination path's next passes — here or after a
        // restart — and never forgotten with the message.
        let mut evicted = 0;
        let mut handed_over = Vec::new();
        for claim in &claims {
            // Why it goes, kept on the claim: the termination path that
            // finishes a node this pass cannot counts it as interrupted.
            let conditions = crate::model::ClaimConditions { disruption: Some(INTERRUPTED.into()), ..claim.conditions.clone() };
            self.cluster.write_claim_conditions(&claim.name, &conditions).await?;
            self.cluster.request_claim_deletion(&claim.name).await?;
            let terminator = self.provisioner.terminator();
            let mut step = terminator.drain(claim, INTERRUPTED, false).await?;
            if let Drained::Evicting { evicted: pods, blocked } = &step {
                evicted += pods.len();
                if !blocked {
                    // Evictions that ended at once leave the node empty.
                    step = terminator.drain(claim, INTERRUPTED, false).await?;
                }
            }
            match step {
                Drained::Terminated => {}
                // An instance that still runs after a failed terminate keeps
                // its claim, and the message stays on the queue to be
                // handled again.
                Drained::TerminateFailed => {
                    return Err(ClusterError(format!("terminate the instance of {} failed; retried with the message", claim.name)));
                }
                Drained::Evicting { .. } => handed_over.push(claim.name.clone()),
            }
        }
        if !handed_over.is_empty() {
            tracing::info!(message = id, kind = name, claims = ?handed_over, "pods still leaving: the termination path finishes these nodes");
        }
        tracing::info!(message = id, kind = name, replacements = report.launched.len(), evicted, "node replaced");
        self.count(name, "replaced");
        Ok(Outcome::Replaced {
            kind: name,
            claims: claims.into_iter().map(|c| c.name).collect(),
            replacements: report.launched.len(),
            evicted,
        })
    }
}
