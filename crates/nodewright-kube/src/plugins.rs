//! `PolicyPlugin` objects for the reconciler
//! (`nodewright_core::controllers::policy_plugins`): listed in the model's
//! terms, their component fetched from the ConfigMap or URL the spec names,
//! and what became of them written to `status` (loaded digest and swap
//! time, or a `Rejected` condition with the reason).

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::KubeCluster;
use crate::crd::{Condition, PluginMode, PluginRole, PolicyPlugin, set_condition};
use nodewright_core::cluster::{ClusterError, PluginMode as SlotMode, PluginRole as Role, PluginStatus, PolicyPluginObject};

impl KubeCluster {
    pub(crate) async fn list_policy_plugins(&self) -> Result<Vec<PolicyPluginObject>, ClusterError> {
        let api: Api<PolicyPlugin> = Api::all(self.client.clone());
        let plugins = api.list(&ListParams::default()).await.map_err(|e| ClusterError(format!("list policyplugins: {e}")))?.items;
        let objects = plugins
            .iter()
            .map(|p| PolicyPluginObject {
                name: p.name_any(),
                role: match p.spec.role {
                    PluginRole::Selection => Role::Selection,
                    PluginRole::Consolidation => Role::Consolidation,
                },
                mode: match p.spec.mode {
                    PluginMode::Active => SlotMode::Active,
                    PluginMode::Shadow => SlotMode::Shadow,
                },
                sha256: p.spec.source.sha256.clone(),
                config: p.spec.config.to_string(),
                loaded_digest: p.status.as_ref().and_then(|s| s.loaded_digest.clone()),
            })
            .collect();
        // The sources and statuses the fetch and the status write below need.
        *self.plugins.lock().unwrap_or_else(|e| e.into_inner()) = plugins.into_iter().map(|p| (p.name_any(), p)).collect();
        Ok(objects)
    }

    pub(crate) async fn fetch_component(&self, name: &str) -> Result<Vec<u8>, String> {
        let plugin = self.plugins.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned();
        let plugin = plugin.ok_or_else(|| format!("PolicyPlugin {name} does not exist"))?;
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

    /// Loaded: the digest, the swap time, Ready and not Rejected. Rejected:
    /// the Rejected condition with the reason; the rest (the version that
    /// keeps serving) unchanged.
    pub(crate) async fn patch_plugin_status(&self, name: &str, report: &PluginStatus) -> Result<(), ClusterError> {
        let current = self.plugins.lock().unwrap_or_else(|e| e.into_inner()).get(name).and_then(|p| p.status.clone()).unwrap_or_default();
        let now = chrono::Utc::now().to_rfc3339();
        let condition = |type_: &str, status: &str, reason: &str, message: String| Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: now.clone(),
        };
        let mut status = current;
        match report {
            PluginStatus::Loaded { digest, slots } => {
                set_condition(&mut status.conditions, condition("Ready", "True", "Loaded", format!("serving {slots} NodePool slot(s)")));
                set_condition(&mut status.conditions, condition("Rejected", "False", "Loaded", String::new()));
                status.loaded_digest = Some(digest.clone());
                status.last_swap_time = Some(now.clone());
            }
            PluginStatus::Rejected { reason, message } => {
                set_condition(&mut status.conditions, condition("Rejected", "True", reason, message.clone()));
            }
        }
        let patch = serde_json::json!({ "status": status });
        let api: Api<PolicyPlugin> = Api::all(self.client.clone());
        api.patch_status(name, &PatchParams::apply(crate::FIELD_MANAGER), &Patch::Merge(&patch))
            .await
            .map_err(|e| ClusterError(format!("patch policyplugin {name} status: {e}")))?;
        if let Some(p) = self.plugins.lock().unwrap_or_else(|e| e.into_inner()).get_mut(name) {
            p.status = Some(status);
        }
        Ok(())
    }
}

/// How long fetching one component by URL may take, from the first byte
/// sent to the last received, unless [`KubeCluster::with_fetch_timeout`]
/// says otherwise.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

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
