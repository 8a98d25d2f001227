//! `PolicyPlugin` resources → registry slots. On a change: fetch the
//! component, verify its sha256, compile and conformance-check it off the
//! decision path, and swap it into the slot of every NodePool that names it;
//! then report in `status` (loaded digest, swap time, or a `Rejected`
//! condition with the reason while the previous version keeps serving).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use sha2::Digest;

use crate::crd::{Condition, PluginMode, PluginRole, PolicyPlugin, PolicyPluginStatus, set_condition};
use nodewright_core::cluster::ClusterError;
use nodewright_core::disruption::consolidation_slot;
use nodewright_core::model::NodePool;
use nodewright_core::policy::{PolicyRegistry, Role, SlotMode};
use nodewright_core::provisioning::selection_slot;

/// What happened to one `PolicyPlugin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginOutcome {
    /// Swapped into these slots at this digest.
    Loaded {
        /// Resource name.
        plugin: String,
        /// sha256.
        digest: String,
        /// Slots it serves.
        slots: Vec<String>,
    },
    /// Already serving this digest.
    Unchanged {
        /// Resource name.
        plugin: String,
    },
    /// Not loaded; the reason is in its status.
    Rejected {
        /// Resource name.
        plugin: String,
        /// `DigestMismatch`, `FetchFailed`, `LoadFailed`.
        reason: String,
        /// Why.
        message: String,
    },
}

/// Keeps registry slots in step with `PolicyPlugin` resources.
pub struct PluginReconciler {
    client: Client,
    namespace: String,
    registry: Arc<PolicyRegistry>,
    fetch_timeout: Duration,
}

impl PluginReconciler {
    /// Components from ConfigMaps in `namespace`, loaded into `registry`.
    pub fn new(client: Client, namespace: &str, registry: Arc<PolicyRegistry>) -> Self {
        PluginReconciler { client, namespace: namespace.into(), registry, fetch_timeout: Duration::from_secs(60) }
    }

    /// How long fetching one component by URL may take, from the first
    /// byte sent to the last received (60 s by default).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// One pass over every `PolicyPlugin`, for `pools`.
    pub async fn reconcile(&self, pools: &[NodePool]) -> Result<Vec<PluginOutcome>, ClusterError> {
        let api: Api<PolicyPlugin> = Api::all(self.client.clone());
        let plugins = api.list(&ListParams::default()).await.map_err(|e| ClusterError(format!("list policyplugins: {e}")))?.items;
        self.registry.set_external(plugins.iter().map(|p| p.name_any()));
        let mut outcomes = Vec::new();
        for plugin in plugins {
            outcomes.push(self.reconcile_one(&api, &plugin, pools).await?);
        }
        Ok(outcomes)
    }

    async fn reconcile_one(&self, api: &Api<PolicyPlugin>, plugin: &PolicyPlugin, pools: &[NodePool]) -> Result<PluginOutcome, ClusterError> {
        let name = plugin.name_any();
        let status = plugin.status.clone().unwrap_or_default();
        let wanted = plugin.spec.source.sha256.to_ascii_lowercase();
        let role = match plugin.spec.role {
            PluginRole::Selection => Role::Selection,
            PluginRole::Consolidation => Role::Consolidation,
        };
        let slots: Vec<String> = pools
            .iter()
            .filter(|p| match role {
                Role::Selection => p.selection.plugin == name,
                Role::Consolidation => p.consolidation.plugin == name,
            })
            .map(|p| match role {
                Role::Selection => selection_slot(&p.name),
                Role::Consolidation => consolidation_slot(&p.name),
            })
            .collect();
        let serving = slots.iter().all(|s| {
            self.registry.slots().iter().find(|x| x.name() == s).and_then(|x| x.active_plugin()).is_some_and(|p| p.info().digest == format!("sha256:{wanted}"))
        });
        if status.loaded_digest.as_deref() == Some(wanted.as_str()) && serving {
            return Ok(PluginOutcome::Unchanged { plugin: name });
        }
        let bytes = match self.fetch(plugin).await {
            Ok(bytes) => bytes,
            Err(message) => return self.reject(api, &name, status, "FetchFailed", message).await,
        };
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        if digest != wanted {
            let message = format!("spec.source.sha256 is {wanted} but the component's sha256 is {digest}; the previous version keeps serving");
            return self.reject(api, &name, status, "DigestMismatch", message).await;
        }
        let config = plugin.spec.config.to_string();
        let config = if config == "null" { "{}".to_string() } else { config };
        let mode = match plugin.spec.mode {
            PluginMode::Active => SlotMode::Active,
            PluginMode::Shadow => SlotMode::Shadow,
        };
        // Compiling a large component takes seconds: off the async executor.
        let registry = self.registry.clone();
        let (load_slots, load_bytes) = (slots.clone(), bytes.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            for slot in &load_slots {
                registry.load(slot, role, &load_bytes, &config, mode)?;
            }
            Ok::<_, nodewright_core::policy::PluginError>(())
        })
        .await
        .map_err(|e| ClusterError(format!("plugin load task: {e}")))?;
        if let Err(e) = loaded {
            return self.reject(api, &name, status, "LoadFailed", format!("{e}; the previous version keeps serving")).await;
        }
        let now = chrono::Utc::now().to_rfc3339();
        let mut conditions = status.conditions.clone();
        set_condition(&mut conditions, Condition { type_: "Ready".into(), status: "True".into(), reason: "Loaded".into(), message: format!("serving {} NodePool slot(s)", slots.len()), last_transition_time: now.clone() });
        set_condition(&mut conditions, Condition { type_: "Rejected".into(), status: "False".into(), reason: "Loaded".into(), message: String::new(), last_transition_time: now.clone() });
        let status = PolicyPluginStatus { loaded_digest: Some(digest.clone()), last_swap_time: Some(now), conditions };
        self.patch_status(api, &name, &status).await?;
        tracing::info!(plugin = %name, %digest, ?slots, "policy plugin loaded");
        Ok(PluginOutcome::Loaded { plugin: name, digest, slots })
    }

    async fn fetch(&self, plugin: &PolicyPlugin) -> Result<Vec<u8>, String> {
        let source = &plugin.spec.source;
        match (&source.config_map, &source.url) {
            (Some(_), Some(_)) => Err("spec.source: configMap and url are both set; set one".into()),
            (Some(cm), None) => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
                let map = api
                    .get_opt(&cm.name)
                    .await
                    .map_err(|e| format!("spec.source.configMap: reading ConfigMap {}/{}: {e}", self.namespace, cm.name))?
                    .ok_or_else(|| format!("spec.source.configMap: ConfigMap {}/{} does not exist", self.namespace, cm.name))?;
                map.binary_data
                    .and_then(|mut d| d.remove(&cm.key))
                    .map(|b| b.0)
                    .ok_or_else(|| format!("spec.source.configMap: ConfigMap {}/{} has no binaryData key `{}`", self.namespace, cm.name, cm.key))
            }
            (None, Some(url)) => fetch_url(url, self.fetch_timeout).await.map_err(|e| format!("spec.source.url `{url}`: {e}")),
            (None, None) => Err("spec.source: neither configMap nor url is set".into()),
        }
    }

    async fn reject(&self, api: &Api<PolicyPlugin>, name: &str, status: PolicyPluginStatus, reason: &str, message: String) -> Result<PluginOutcome, ClusterError> {
        tracing::warn!(plugin = name, reason, "policy plugin rejected: {message}");
        let mut status = status;
        set_condition(
            &mut status.conditions,
            Condition { type_: "Rejected".into(), status: "True".into(), reason: reason.into(), message: message.clone(), last_transition_time: chrono::Utc::now().to_rfc3339() },
        );
        self.patch_status(api, name, &status).await?;
        Ok(PluginOutcome::Rejected { plugin: name.into(), reason: reason.into(), message })
    }

    async fn patch_status(&self, api: &Api<PolicyPlugin>, name: &str, status: &PolicyPluginStatus) -> Result<(), ClusterError> {
        let patch = serde_json::json!({ "status": status });
        api.patch_status(name, &PatchParams::apply(crate::FIELD_MANAGER), &Patch::Merge(&patch))
            .await
            .map_err(|e| ClusterError(format!("patch policyplugin {name} status: {e}")))?;
        Ok(())
    }
}

/// Largest component `spec.source.url` may serve (a Python component is
/// ~18 MB; a JavaScript one ~12 MB).
pub const MAX_URL_COMPONENT_BYTES: usize = 128 << 20;
/// Redirects followed (release assets usually redirect once).
const MAX_REDIRECTS: usize = 5;

/// GET `url` (http or https; redirects followed up to five times), the
/// whole exchange within `timeout`, the body at most
/// [`MAX_URL_COMPONENT_BYTES`]. The digest is the caller's to check: TLS
/// says who served the bytes, the sha256 says they are the ones reviewed.
pub async fn fetch_url(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    match tokio::time::timeout(timeout, fetch_following(url)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no complete answer within {} s", timeout.as_secs_f64())),
    }
}

async fn fetch_following(url: &str) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    let provider = rustls::crypto::ring::default_provider();
    // Without system roots (a scratch image) only plain http works; an https
    // URL then fails on its certificate, which the error says.
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
        Ok(builder) => builder,
        Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
            rustls::ClientConfig::builder_with_provider(provider.into())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS set-up: {e}"))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    };
    let connector = builder.https_or_http().enable_http1().build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Empty<bytes::Bytes>>(connector);
    match url.split_once("://") {
        Some(("http" | "https", _)) => {}
        Some((scheme, _)) => return Err(format!("scheme `{scheme}` is not http or https")),
        None => return Err("not a URL: no scheme (http:// or https://)".into()),
    }
    let mut uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    for _ in 0..=MAX_REDIRECTS {
        match uri.scheme_str() {
            Some("http" | "https") => {}
            other => return Err(format!("scheme `{}` is not http or https", other.unwrap_or(""))),
        }
        let response = client.get(uri.clone()).await.map_err(|e| format!("GET {uri}: {}", error_chain(&e)))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| format!("GET {uri}: HTTP {status} without a Location"))?;
            uri = resolve_location(&uri, location).map_err(|e| format!("GET {uri}: bad Location `{location}`: {e}"))?;
            continue;
        }
        if !status.is_success() {
            return Err(format!("GET {uri}: HTTP {status}"));
        }
        if let Some(length) = response.headers().get(http::header::CONTENT_LENGTH).and_then(|l| l.to_str().ok()?.parse::<u64>().ok())
            && length > MAX_URL_COMPONENT_BYTES as u64 {
                return Err(format!("GET {uri}: {length} bytes, more than the {MAX_URL_COMPONENT_BYTES} a component may have"));
            }
        let body = http_body_util::Limited::new(response.into_body(), MAX_URL_COMPONENT_BYTES)
            .collect()
            .await
            .map_err(|e| format!("GET {uri}: reading the body: {e}"))?;
        return Ok(body.to_bytes().to_vec());
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

/// `location` relative to `base` (absolute URLs and absolute paths; that is
/// what servers send).
fn resolve_location(base: &http::Uri, location: &str) -> Result<http::Uri, String> {
    let target: http::Uri = location.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    if target.scheme().is_some() {
        return Ok(target);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = target.path_and_query().cloned();
    http::Uri::from_parts(parts).map_err(|e| e.to_string())
}

/// An error and its causes, `: `-separated (hyper's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
