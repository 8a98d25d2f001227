//! PolicyPlugin objects → registry slots. On a change: fetch the component
//! (through the cluster: a ConfigMap's key, a URL), verify its sha256,
//! compile and conformance-check it off the decision path, and swap it into
//! the slot of every NodePool that names it; then report in its status
//! (the digest loaded and when, or `Rejected` with the reason while the
//! previous version keeps serving).

use std::sync::Arc;

use sha2::Digest;

use crate::cluster::{Cluster, ClusterError, PluginStatus, PolicyPluginObject};
use crate::disruption::consolidation_slot;
use crate::model::NodePool;
use crate::policy::{PluginError, PolicyRegistry, Role};
use crate::provisioning::selection_slot;

/// What happened to one PolicyPlugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginOutcome {
    /// Swapped into these slots at this digest.
    Loaded {
        /// Its name.
        plugin: String,
        /// sha256 (hex).
        digest: String,
        /// Slots it serves.
        slots: Vec<String>,
    },
    /// Already serving this digest.
    Unchanged {
        /// Its name.
        plugin: String,
    },
    /// Not loaded; the reason is in its status.
    Rejected {
        /// Its name.
        plugin: String,
        /// `FetchFailed`, `DigestMismatch`, `LoadFailed`.
        reason: String,
        /// Why.
        message: String,
    },
}

/// Keeps registry slots in step with PolicyPlugin objects.
pub struct PolicyPluginController<K> {
    cluster: Arc<K>,
    registry: Arc<PolicyRegistry>,
}

impl<K: Cluster> PolicyPluginController<K> {
    /// Plugins of `cluster` loaded into `registry`.
    pub fn new(cluster: Arc<K>, registry: Arc<PolicyRegistry>) -> Self {
        PolicyPluginController { cluster, registry }
    }

    /// One pass over every PolicyPlugin, for the cluster's NodePools.
    pub async fn reconcile(&self) -> Result<Vec<PluginOutcome>, ClusterError> {
        let pools = self.cluster.node_pools().await?;
        self.reconcile_for(&pools).await
    }

    /// One pass over every PolicyPlugin, for `pools`.
    pub async fn reconcile_for(&self, pools: &[NodePool]) -> Result<Vec<PluginOutcome>, ClusterError> {
        let plugins = self.cluster.policy_plugins().await?;
        self.registry.set_external(plugins.iter().map(|p| p.name.clone()));
        let mut outcomes = Vec::new();
        for plugin in &plugins {
            outcomes.push(self.reconcile_one(plugin, pools).await?);
        }
        Ok(outcomes)
    }

    async fn reconcile_one(&self, plugin: &PolicyPluginObject, pools: &[NodePool]) -> Result<PluginOutcome, ClusterError> {
        let name = plugin.name.clone();
        let wanted = plugin.sha256.to_ascii_lowercase();
        let role = plugin.role;
        let slots: Vec<String> = pools
            .iter()
            .filter_map(|p| match role {
                Role::Selection => (p.selection.plugin == name).then(|| selection_slot(&p.name)),
                Role::Consolidation => (p.consolidation.plugin == name).then(|| consolidation_slot(&p.name)),
            })
            .collect();
        let serving = slots.iter().all(|s| {
            self.registry.slots().iter().find(|x| x.name() == s).and_then(|x| x.active_plugin()).is_some_and(|p| p.info().digest == format!("sha256:{wanted}"))
        });
        if plugin.loaded_digest.as_deref() == Some(wanted.as_str()) && serving {
            return Ok(PluginOutcome::Unchanged { plugin: name });
        }
        let bytes = match self.cluster.policy_plugin_component(&name).await {
            Ok(bytes) => bytes,
            Err(message) => return self.reject(&name, "FetchFailed", message).await,
        };
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        if digest != wanted {
            let message = format!("spec.source.sha256 is {wanted} but the component's sha256 is {digest}; the previous version keeps serving");
            return self.reject(&name, "DigestMismatch", message).await;
        }
        let config = if plugin.config.trim().is_empty() || plugin.config == "null" { "{}".to_string() } else { plugin.config.clone() };
        let (registry, load_slots, mode) = (self.registry.clone(), slots.clone(), plugin.mode);
        let load = move || {
            for slot in &load_slots {
                registry.load(slot, role, &bytes, &config, mode)?;
            }
            Ok::<_, PluginError>(())
        };
        // Compiling a large component takes seconds: off the async executor
        // where there is one (the simulator drives controllers without).
        let loaded = match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.spawn_blocking(load).await.map_err(|e| ClusterError(format!("plugin load task: {e}")))?,
            Err(_) => load(),
        };
        if let Err(e) = loaded {
            return self.reject(&name, "LoadFailed", format!("{e}; the previous version keeps serving")).await;
        }
        self.cluster.write_policy_plugin_status(&name, &PluginStatus::Loaded { digest: digest.clone(), slots: slots.len() }).await?;
        tracing::info!(plugin = %name, %digest, ?slots, "policy plugin loaded");
        Ok(PluginOutcome::Loaded { plugin: name, digest, slots })
    }

    async fn reject(&self, name: &str, reason: &str, message: String) -> Result<PluginOutcome, ClusterError> {
        tracing::warn!(plugin = name, reason, "policy plugin rejected: {message}");
        self.cluster.write_policy_plugin_status(name, &PluginStatus::Rejected { reason: reason.into(), message: message.clone() }).await?;
        Ok(PluginOutcome::Rejected { plugin: name.into(), reason: reason.into(), message })
    }
}
