//! A loaded plugin: one component version with its config, ready to call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::glue;
use super::cache::{CacheOutcome, sha256_hex};
use super::conformance::{self, ConformanceReport};
use super::error::{CallFailure, PluginError};
use super::request::{ConsolidationAction, ConsolidationSnapshot, Ranking, SelectionRequest};
use super::runtime::PolicyRuntime;
use super::fleet::Fleet;
use super::sandbox::{PluginState, WhatIfCatalog};
use crate::model::Catalog;

/// The WIT world a plugin targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// Exports `instance-selection`.
    InstanceSelector,
    /// Exports `consolidation`.
    Consolidator,
    /// Exports both.
    Policy,
}

impl World {
    /// The world's name in the WIT package.
    pub fn name(self) -> &'static str {
        match self {
            World::InstanceSelector => "instance-selector",
            World::Consolidator => "consolidator",
            World::Policy => "policy",
        }
    }

    /// True when the plugin ranks offerings.
    pub fn selects(self) -> bool {
        matches!(self, World::InstanceSelector | World::Policy)
    }

    /// True when the plugin plans consolidation.
    pub fn consolidates(self) -> bool {
        matches!(self, World::Consolidator | World::Policy)
    }
}

/// Contract versions this host implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ContractVersion {
    /// `nodewright:policy@0.1.0`.
    #[serde(rename = "0.1.0")]
    V0_1_0,
    /// `nodewright:policy@0.2.0` (adds the host's `what-if`).
    #[serde(rename = "0.2.0")]
    V0_2_0,
    /// `nodewright:policy@0.3.0` (adds the fleet, the commitments and
    /// richer pods).
    #[serde(rename = "0.3.0")]
    V0_3_0,
}

impl ContractVersion {
    /// Every supported version.
    pub const SUPPORTED: [ContractVersion; 3] = [ContractVersion::V0_1_0, ContractVersion::V0_2_0, ContractVersion::V0_3_0];

    /// The semver string.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractVersion::V0_1_0 => "0.1.0",
            ContractVersion::V0_2_0 => "0.2.0",
            ContractVersion::V0_3_0 => "0.3.0",
        }
    }

    fn parse(version: &str) -> Option<Self> {
        Self::SUPPORTED.into_iter().find(|v| v.as_str() == version)
    }
}

/// Called with a plugin's name and wall time after each call.
type CallObserver = Box<dyn Fn(&str, Duration) + Send + Sync>;

static CALL_OBSERVER: OnceLock<CallObserver> = OnceLock::new();

/// Have `observe(plugin name, wall time)` called after every plugin call of
/// the process (the controller's latency histogram). Set once; later calls
/// are ignored.
pub fn observe_calls(observe: impl Fn(&str, Duration) + Send + Sync + 'static) {
    let _ = CALL_OBSERVER.set(Box::new(observe));
}

/// What is known about a loaded plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Name (slot or file name).
    pub name: String,
    /// `sha256:` + hex digest of the component bytes.
    pub digest: String,
    /// Size of the component in bytes.
    pub size_bytes: usize,
    /// Its world.
    pub world: World,
    /// The contract version it speaks.
    pub contract: ContractVersion,
    /// Names of its exports.
    pub exports: Vec<String>,
    /// Names of its imports.
    pub imports: Vec<String>,
    /// Time to get the compiled form.
    pub load_time: Duration,
    /// Whether it was compiled now (false: found in a cache).
    pub compiled: bool,
}

/// Interfaces a plugin may import: the host's own and WASI 0.2 (linked
/// without capabilities, since components from most languages import it).
const ALLOWED_IMPORTS: [&str; 8] = [
    "nodewright:policy/host@",
    "nodewright:policy/types@",
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

const SELECTION_EXPORT: &str = "nodewright:policy/instance-selection@";
const CONSOLIDATION_EXPORT: &str = "nodewright:policy/consolidation@";

/// At most this many idle instances are kept per plugin.
const MAX_IDLE: usize = 8;

/// One plugin version, compiled and linked, with its configuration.
pub struct Plugin {
    info: PluginInfo,
    core: Arc<Core>,
    idle: Mutex<Vec<PluginInstance>>,
    calls: AtomicU64,
    busy_nanos: AtomicU64,
    conformance: OnceLock<ConformanceReport>,
}

/// What a call thread needs of a plugin to instantiate and call it.
struct Core {
    name: Arc<str>,
    config: Arc<str>,
    runtime: PolicyRuntime,
    pre: InstancePre<PluginState>,
    glue: Glue,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Export indices of the contract version the plugin speaks.
enum Glue {
    V0_1_0(glue::v0_1_0::Indices),
    V0_2_0(glue::v0_2_0::Indices),
    V0_3_0(glue::v0_3_0::Indices),
}

/// Typed exports of one instance, in the plugin's contract version.
enum Exports {
    V0_1_0(glue::v0_1_0::Exports),
    V0_2_0(glue::v0_2_0::Exports),
    V0_3_0(glue::v0_3_0::Exports),
}

/// The catalog in the plugin's contract form.
#[derive(Clone)]
enum WitCatalog {
    V0_1_0(Arc<super::bindings::v0_1_0::types::Catalog>),
    V0_2_0(Arc<super::bindings::v0_2_0::types::Catalog>),
    V0_3_0(Arc<super::bindings::v0_3_0::types::Catalog>),
}

/// What a call asks of an instance once it holds the catalog.
enum Ask {
    /// Only the catalog hand-over.
    Catalog,
    /// `instance-selection.rank`, with the call's own copy of the request
    /// (its feasible list and NodePool name move into the call's arguments).
    Rank(SelectionRequest),
    /// `consolidation.plan`.
    Plan(Arc<ConsolidationSnapshot>),
}

/// The unvalidated answer to an [`Ask`].
enum Answer {
    Catalog,
    Ranked(Vec<u32>, Vec<f64>),
    Planned(Vec<ConsolidationAction>),
}

struct PluginInstance {
    store: Store<PluginState>,
    exports: Exports,
    catalog_version: Option<u64>,
    /// The fleet version it holds (contract 0.3.0).
    fleet_version: Option<u64>,
}

impl Plugin {
    /// Load the component at `path`, named after its file.
    pub fn from_file(
        runtime: &PolicyRuntime,
        path: &std::path::Path,
        config: &str,
    ) -> Result<Self, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::load(runtime, &path.display().to_string(), &bytes, config)
    }

    /// Load a plugin from component bytes (binary, or WAT text). `config` is
    /// the JSON the plugin will read through `host.config`.
    pub fn load(
        runtime: &PolicyRuntime,
        name: &str,
        bytes: &[u8],
        config: &str,
    ) -> Result<Self, PluginError> {
        let started = Instant::now();
        check_component_bytes(name, bytes)?;
        let inner = &runtime.inner;
        let digest = sha256_hex(bytes);
        let (component, outcome) = inner
            .cache
            .get(&inner.engine, &digest, bytes)
            .map_err(|e| match bytes.get(4..8) {
                Some([1, 0, 0, 0]) => PluginError::NotAComponent {
                    plugin: name.into(),
                    reason:
                        "it is a core WebAssembly module; wrap it with `wasm-tools component new`"
                            .into(),
                },
                _ => PluginError::Compile {
                    plugin: name.into(),
                    reason: format!("{e:#}"),
                },
            })?;
        let load_time = started.elapsed();
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&inner.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let exports: Vec<String> = ty
            .exports(&inner.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        if let Some(import) = imports
            .iter()
            .find(|i| !ALLOWED_IMPORTS.iter().any(|a| i.starts_with(a)))
        {
            return Err(PluginError::UnsupportedImport {
                plugin: name.into(),
                import: import.clone(),
            });
        }
        let mut contract = None;
        for export in &exports {
            if let Some(version) = export
                .strip_prefix("nodewright:policy/")
                .and_then(|e| e.split_once('@'))
                .map(|(_, v)| v)
            {
                match ContractVersion::parse(version) {
                    Some(v) => contract = Some(v),
                    None => {
                        return Err(PluginError::UnsupportedVersion {
                            plugin: name.into(),
                            export: export.clone(),
                            version: version.into(),
                            supported: ContractVersion::SUPPORTED.map(|v| v.as_str()).join(", "),
                        });
                    }
                }
            }
        }
        let selects = exports.iter().any(|e| e.starts_with(SELECTION_EXPORT));
        let consolidates = exports.iter().any(|e| e.starts_with(CONSOLIDATION_EXPORT));
        let wrong_world = || PluginError::WrongWorld {
            plugin: name.into(),
            found: if exports.is_empty() {
                "no exports".into()
            } else {
                exports.join(", ")
            },
        };
        let world = match (selects, consolidates) {
            (true, true) => World::Policy,
            (true, false) => World::InstanceSelector,
            (false, true) => World::Consolidator,
            (false, false) => return Err(wrong_world()),
        };
        let contract = contract.ok_or_else(wrong_world)?;
        let link = |e: wasmtime::Error| PluginError::Link {
            plugin: name.into(),
            reason: format!("{e:#}"),
        };
        let pre = inner.linker.instantiate_pre(&component).map_err(link)?;
        // Start it once before checking the exports' types: a component that
        // cannot start (a trap in its start function, more memory than its
        // limit) is rejected at load, whatever it exports.
        let store = Core::store(runtime, name.into(), config.into());
        let start_limit = runtime.limits().consolidation_timeout;
        let probe = runtime
            .inner
            .calls
            .run({
                let pre = pre.clone();
                move |rt| rt.block_on(start(&pre, store, start_limit))
            })
            .unwrap_or_else(|panic| Err(host_panic("while starting the plugin", &panic)))
            .map_err(|failure| PluginError::Link {
                plugin: name.into(),
                reason: failure.to_string(),
            })?;
        let (mut store, started_instance) = probe;
        // It names a version this host implements, with other types (or
        // fewer exports) than this host's: most likely built against
        // another revision of that version's WIT.
        let mismatch = |e: wasmtime::Error| PluginError::Link {
            plugin: name.into(),
            reason: format!(
                "its exports are not those of nodewright:policy@{v} as this host defines it ({e:#}); rebuild it against this release's wit/v{v} or plugin SDK",
                v = contract.as_str()
            ),
        };
        let glue = match contract {
            ContractVersion::V0_1_0 => Glue::V0_1_0(
                glue::v0_1_0::Indices::new(&pre, world.selects(), world.consolidates())
                    .map_err(mismatch)?,
            ),
            ContractVersion::V0_2_0 => Glue::V0_2_0(
                glue::v0_2_0::Indices::new(&pre, world.selects(), world.consolidates())
                    .map_err(mismatch)?,
            ),
            ContractVersion::V0_3_0 => Glue::V0_3_0(
                glue::v0_3_0::Indices::new(&pre, world.selects(), world.consolidates())
                    .map_err(mismatch)?,
            ),
        };
        let core = Arc::new(Core {
            name: name.into(),
            config: Arc::from(config),
            runtime: runtime.clone(),
            pre,
            glue,
        });
        let instance = core
            .exports(&mut store, &started_instance)
            .map(|exports| PluginInstance {
                store,
                exports,
                catalog_version: None,
                fleet_version: None,
            });
        let instance = instance.map_err(|failure| PluginError::Link {
            plugin: name.into(),
            reason: failure.to_string(),
        })?;
        let plugin = Plugin {
            info: PluginInfo {
                name: name.into(),
                digest: format!("sha256:{digest}"),
                size_bytes: bytes.len(),
                world,
                contract,
                exports,
                imports,
                load_time,
                compiled: outcome == CacheOutcome::Compiled,
            },
            core,
            idle: Mutex::new(vec![instance]),
            calls: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            conformance: OnceLock::new(),
        };
        Ok(plugin)
    }

    /// What is known about the plugin.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The conformance suite's result for this plugin and config (run once).
    pub fn conformance(&self) -> &ConformanceReport {
        self.conformance.get_or_init(|| conformance::run(self))
    }

    /// The conformance result as an error naming the first failed check.
    pub fn check_conformance(&self) -> Result<&ConformanceReport, PluginError> {
        let report = self.conformance();
        match report.first_failure() {
            None => Ok(report),
            Some(check) => Err(PluginError::Conformance {
                plugin: self.info.name.clone(),
                check: check.name.clone(),
                failure: check
                    .failure
                    .clone()
                    .unwrap_or_else(|| CallFailure::InvalidOutput("failed".into())),
            }),
        }
    }

    /// The plugin's configuration JSON.
    pub fn config(&self) -> &str {
        &self.core.config
    }

    /// Calls made and nanoseconds spent in them.
    pub fn call_stats(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.busy_nanos.load(Ordering::Relaxed),
        )
    }

    /// Hand `catalog` to an idle instance that does not hold it yet (or to a
    /// new one when none is idle), so the next decision does not pay for
    /// the hand-over. A failure is returned
    /// (the slot counts and logs it) and the instance is dropped when it trapped.
    pub fn prepare(&self, catalog: &Catalog) -> Result<(), CallFailure> {
        let instance = self.lock_idle().pop();
        if let Some(instance) = instance {
            if instance.catalog_version == Some(catalog.version) {
                self.lock_idle().push(instance);
                return Ok(());
            }
            return self
                .with_instance(Some(instance), catalog, Ask::Catalog)
                .map(drop);
        }
        // No idle instance (the last one trapped, or all are busy): start one now.
        self.with_instance(None, catalog, Ask::Catalog).map(drop)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<PluginInstance>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Create a fresh instance (new store, new memory).
    pub fn instantiate_fresh(&self) -> Result<(), CallFailure> {
        self.core
            .run(|core| async move { core.instantiate().await.map(drop) })
    }

    /// Run `ask` on an instance that holds `catalog` (`instance`, else an
    /// idle one, else a new one) on a call thread, within the call's
    /// deadline. An instance that trapped or ran out of time is thrown
    /// away; the next call gets a fresh one.
    fn with_instance(
        &self,
        instance: Option<PluginInstance>,
        catalog: &Catalog,
        ask: Ask,
    ) -> Result<Answer, CallFailure> {
        let started = Instant::now();
        let instance = instance.or_else(|| self.lock_idle().pop());
        let wit = self.core.wit_catalog(catalog);
        let version = catalog.version;
        let (instance, result) = self
            .core
            .runtime
            .inner
            .calls
            .run({
                let core = self.core.clone();
                move |rt| {
                    rt.block_on(async move {
                        let mut instance = match instance {
                            Some(instance) => instance,
                            None => match core.instantiate().await {
                                Ok(instance) => instance,
                                Err(failure) => return (None, Err(failure)),
                            },
                        };
                        let result = core.call_on(&mut instance, version, &wit, ask).await;
                        (Some(instance), result)
                    })
                }
            })
            .unwrap_or_else(|panic| {
                (None, Err(host_panic("during the call", &panic)))
            });
        if let Some(instance) =
            instance.filter(|_| !result.as_ref().is_err_and(CallFailure::spoils_instance))
        {
            let mut idle = self.lock_idle();
            if idle.len() < MAX_IDLE {
                idle.push(instance);
            }
        }
        let elapsed = started.elapsed();
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.busy_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if let Some(observe) = CALL_OBSERVER.get() {
            observe(&self.info.name, elapsed);
        }
        result
    }

    /// Ask the plugin to rank `request`'s feasible offerings; the answer is
    /// validated before it is returned.
    pub fn rank(
        &self,
        catalog: &Catalog,
        request: &SelectionRequest,
    ) -> Result<Ranking, CallFailure> {
        if !self.info.world.selects() {
            return Err(CallFailure::Instantiate(format!(
                "{} does not export instance-selection",
                self.info.name
            )));
        }
        match self.with_instance(None, catalog, Ask::Rank(request.clone()))? {
            Answer::Ranked(offerings, scores) => Ranking::validate(
                offerings,
                scores,
                &request.feasible,
                catalog.offerings.len(),
            )
            .map_err(CallFailure::InvalidOutput),
            _ => Err(CallFailure::InvalidOutput(
                "answered a rank call with something else".into(),
            )),
        }
    }

    /// Ask the plugin for a consolidation plan; the plan is checked for
    /// structure (indices, disruptability, replacements) before it is returned.
    pub fn plan(
        &self,
        catalog: &Catalog,
        snapshot: &ConsolidationSnapshot,
    ) -> Result<Vec<ConsolidationAction>, CallFailure> {
        if !self.info.world.consolidates() {
            return Err(CallFailure::Instantiate(format!(
                "{} does not export consolidation",
                self.info.name
            )));
        }
        match self.with_instance(None, catalog, Ask::Plan(Arc::new(snapshot.clone())))? {
            Answer::Planned(plan) => ConsolidationAction::validate_plan(plan, snapshot)
                .map_err(CallFailure::InvalidOutput),
            _ => Err(CallFailure::InvalidOutput(
                "answered a plan call with something else".into(),
            )),
        }
    }
}

/// Instantiate `pre` in `store` within `limit` (the hand-over deadline).
async fn start(
    pre: &InstancePre<PluginState>,
    mut store: Store<PluginState>,
    limit: Duration,
) -> Result<(Store<PluginState>, wasmtime::component::Instance), CallFailure> {
    let started = Instant::now();
    store.set_epoch_deadline(PolicyRuntime::ticks(limit));
    store.data_mut().set_deadline(started.checked_add(limit));
    let outcome = tokio::time::timeout(limit, pre.instantiate_async(&mut store)).await;
    store.data_mut().set_deadline(None);
    match outcome {
        Err(_) => Err(CallFailure::Timeout {
            limit,
            took: started.elapsed(),
        }),
        Ok(Err(e)) => Err(classify(&store, e, limit, started.elapsed())),
        Ok(Ok(instance)) => Ok((store, instance)),
    }
}

impl Core {
    /// A fresh store for this plugin.
    fn store(runtime: &PolicyRuntime, name: Arc<str>, config: Arc<str>) -> Store<PluginState> {
        let inner = &runtime.inner;
        let n = inner.instances_created.fetch_add(1, Ordering::Relaxed);
        let seed = inner.config.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        PluginState::store(
            &inner.engine,
            name,
            config,
            inner.config.clock.clone(),
            seed,
            &inner.config.limits,
        )
    }

    /// Run `call` on a call thread and wait for it.
    fn run<
        R: Send + 'static,
        F: std::future::Future<Output = Result<R, CallFailure>> + Send + 'static,
    >(
        self: &Arc<Self>,
        call: impl FnOnce(Arc<Core>) -> F + Send + 'static,
    ) -> Result<R, CallFailure> {
        let core = self.clone();
        self.runtime
            .inner
            .calls
            .run(move |rt| rt.block_on(call(core)))
            .unwrap_or_else(|panic| Err(host_panic("during the call", &panic)))
    }

    async fn instantiate(&self) -> Result<PluginInstance, CallFailure> {
        let store = Core::store(&self.runtime, self.name.clone(), self.config.clone());
        let (mut store, instance) = start(
            &self.pre,
            store,
            self.runtime.limits().consolidation_timeout,
        )
        .await?;
        let exports = self.exports(&mut store, &instance)?;
        Ok(PluginInstance {
            store,
            exports,
            catalog_version: None,
            fleet_version: None,
        })
    }

    /// The typed exports of a started instance.
    fn exports(
        &self,
        store: &mut Store<PluginState>,
        instance: &wasmtime::component::Instance,
    ) -> Result<Exports, CallFailure> {
        let load = |e: wasmtime::Error| CallFailure::Instantiate(format!("{e:#}"));
        Ok(match &self.glue {
            Glue::V0_1_0(indices) => Exports::V0_1_0(indices.load(store, instance).map_err(load)?),
            Glue::V0_2_0(indices) => Exports::V0_2_0(indices.load(store, instance).map_err(load)?),
            Glue::V0_3_0(indices) => Exports::V0_3_0(indices.load(store, instance).map_err(load)?),
        })
    }

    /// `catalog` in the plugin's contract form (converted once per version).
    fn wit_catalog(&self, catalog: &Catalog) -> WitCatalog {
        match &self.glue {
            Glue::V0_1_0(indices) => WitCatalog::V0_1_0(indices.catalog(catalog)),
            Glue::V0_2_0(indices) => WitCatalog::V0_2_0(indices.catalog(catalog)),
            Glue::V0_3_0(indices) => WitCatalog::V0_3_0(indices.catalog(catalog)),
        }
    }

    /// Give `instance` the catalog unless it already holds this version,
    /// within the hand-over deadline.
    async fn hand_over(
        &self,
        instance: &mut PluginInstance,
        version: u64,
        catalog: &WitCatalog,
    ) -> Result<(), CallFailure> {
        if instance.catalog_version == Some(version) {
            return Ok(());
        }
        let limit = self.runtime.limits().consolidation_timeout;
        let handed = bounded(instance, limit, async |instance| {
            match (catalog, &instance.exports) {
                (WitCatalog::V0_1_0(wit), Exports::V0_1_0(exports)) => {
                    exports.set_catalog(&mut instance.store, wit).await
                }
                (WitCatalog::V0_2_0(wit), Exports::V0_2_0(exports)) => {
                    instance.store.data_mut().what_if.catalog = Some(WhatIfCatalog::V0_2_0(wit.clone()));
                    exports.set_catalog(&mut instance.store, wit).await
                }
                (WitCatalog::V0_3_0(wit), Exports::V0_3_0(exports)) => {
                    instance.store.data_mut().what_if.catalog = Some(WhatIfCatalog::V0_3_0(wit.clone()));
                    exports.set_catalog(&mut instance.store, wit).await
                }
                _ => Err(wasmtime::format_err!(
                    "the catalog is not in the instance's contract version"
                )),
            }
        })
        .await;
        match handed {
            Err(failure) => Err(failure.during_catalog_hand_over()),
            Ok(Err(message)) => Err(CallFailure::CatalogRejected {
                version,
                message: cut(message),
            }),
            Ok(Ok(())) => {
                instance.catalog_version = Some(version);
                // A fleet refers to one catalog: hand it over again.
                instance.fleet_version = None;
                Ok(())
            }
        }
    }

    /// The fleet version an instance holds after a call that used `fleet`:
    /// that version once the plugin answered; what it held before when it
    /// answered with an error (it may have refused the fleet the call
    /// carried: the next call carries it again); none after a trap or a
    /// timeout.
    fn fleet_held<T>(held: Option<u64>, fleet: &Fleet, outcome: &Result<Result<T, String>, CallFailure>) -> Option<u64> {
        match outcome {
            Ok(Ok(_)) => Some(fleet.version),
            Ok(Err(_)) => held,
            Err(_) => None,
        }
    }

    async fn call_on(
        &self,
        instance: &mut PluginInstance,
        version: u64,
        catalog: &WitCatalog,
        ask: Ask,
    ) -> Result<Answer, CallFailure> {
        instance.store.data().log_budget().reset();
        instance.store.data_mut().what_if.queries = 0;
        instance.store.data_mut().what_if.prices = None;
        self.hand_over(instance, version, catalog).await?;
        let limits = self.runtime.limits();
        let answer =
            match ask {
                Ask::Catalog => return Ok(Answer::Catalog),
                Ask::Rank(mut request) => {
                    // A 0.3.0 instance not holding this version is sent the fleet with the call.
                    let send_fleet = instance.fleet_version != Some(request.fleet.version);
                    instance.store.data_mut().what_if.prices = Some(request.fleet.prices.clone());
                    let ranked = bounded(
                    instance,
                    limits.selection_timeout,
                    async |instance| match &instance.exports {
                        Exports::V0_1_0(e) => e.rank(&mut instance.store, version, &mut request).await,
                        Exports::V0_2_0(e) => e.rank(&mut instance.store, version, &mut request).await,
                        Exports::V0_3_0(e) => e.rank(&mut instance.store, version, &mut request, send_fleet).await,
                    },
                )
                .await;
                    instance.fleet_version = Self::fleet_held(instance.fleet_version, &request.fleet, &ranked);
                    ranked?.map(|(offerings, scores)| Answer::Ranked(offerings, scores))
                }
                Ask::Plan(snapshot) => {
                    let send_fleet = instance.fleet_version != Some(snapshot.fleet.version);
                    instance.store.data_mut().what_if.prices = Some(snapshot.fleet.prices.clone());
                    let plan = bounded(instance, limits.consolidation_timeout, async |instance| {
                        match &instance.exports {
                            Exports::V0_1_0(e) => {
                                e.plan(&mut instance.store, version, &snapshot).await
                            }
                            Exports::V0_2_0(e) => {
                                instance.store.data_mut().what_if.snapshot = Some(snapshot.clone());
                                e.plan(&mut instance.store, version, &snapshot).await
                            }
                            Exports::V0_3_0(e) => {
                                instance.store.data_mut().what_if.snapshot = Some(snapshot.clone());
                                e.plan(&mut instance.store, version, &snapshot, send_fleet).await
                            }
                        }
                    })
                    .await;
                    instance.store.data_mut().what_if.snapshot = None;
                    instance.fleet_version = Self::fleet_held(instance.fleet_version, &snapshot.fleet, &plan);
                    plan?.map(Answer::Planned)
                }
            };
        instance.store.data_mut().what_if.prices = None;
        answer.map_err(|message| CallFailure::PluginError(cut(message)))
    }
}

/// Run `call` on `instance` under one deadline of `limit` for the whole
/// call, host time included: the epoch deadline ends guest code, the
/// timeout ends a call blocked in the host (sleep, poll), and host imports
/// read the deadline to refuse work past it.
async fn bounded<T>(
    instance: &mut PluginInstance,
    limit: Duration,
    call: impl AsyncFnOnce(&mut PluginInstance) -> wasmtime::Result<T>,
) -> Result<T, CallFailure> {
    let started = Instant::now();
    instance
        .store
        .set_epoch_deadline(PolicyRuntime::ticks(limit));
    instance
        .store
        .data_mut()
        .set_deadline(started.checked_add(limit));
    let outcome = tokio::time::timeout(limit, call(&mut *instance)).await;
    instance.store.data_mut().set_deadline(None);
    let took = started.elapsed();
    match outcome {
        Err(_) => Err(CallFailure::Timeout { limit, took }),
        Ok(Err(e)) => Err(classify(&instance.store, e, limit, took)),
        Ok(Ok(value)) => Ok(value),
    }
}

/// A panic caught on a call thread, as the failure of the call it ended.
fn host_panic(when: &str, panic: &str) -> CallFailure {
    CallFailure::Trap(format!("host panic {when}: {panic}"))
}

/// Reject what is plainly not a component before handing it to the compiler.
fn check_component_bytes(name: &str, bytes: &[u8]) -> Result<(), PluginError> {
    let not = |reason: &str| PluginError::NotAComponent { plugin: name.into(), reason: reason.into() };
    match bytes {
        [0, b'a', b's', b'm', 1, 0, 0, 0, ..] => {
            Err(not("it is a core WebAssembly module; wrap it with `wasm-tools component new`"))
        }
        [0, b'a', b's', b'm', 0x0d, 0, 1, 0, ..] => Ok(()),
        [0, b'a', b's', b'm', ..] => Err(not("unknown WebAssembly binary version")),
        _ => match std::str::from_utf8(bytes).map(skip_wat_comments) {
            Ok(text) if text.starts_with("(component") => Ok(()),
            Ok(text) if text.starts_with("(module") => {
                Err(not("it is a core WebAssembly module in text form, not a component"))
            }
            _ => Err(not("the file does not start with the WebAssembly magic bytes")),
        },
    }
}

/// `text` without leading whitespace and `;;` line comments.
fn skip_wat_comments(mut text: &str) -> &str {
    loop {
        text = text.trim_start();
        match text.strip_prefix(";;") {
            Some(comment) => text = comment.split_once('\n').map_or("", |(_, rest)| rest),
            None => return text,
        }
    }
}

/// Turn a wasmtime error from a call into the reason the call failed.
fn classify(store: &Store<PluginState>, error: wasmtime::Error, timeout: Duration, took: Duration) -> CallFailure {
    if let Some(failure) = store.data().limiter.failure() {
        return failure;
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => CallFailure::Timeout { limit: timeout, took },
        Some(wasmtime::Trap::StackOverflow) => CallFailure::StackOverflow,
        Some(trap) => CallFailure::Trap(trap.to_string()),
        None => CallFailure::Trap(error.root_cause().to_string()),
    }
}

/// Plugin-supplied strings are cut to a size a log line can carry.
fn cut(mut message: String) -> String {
    const MAX: usize = 1024;
    if message.len() > MAX {
        let mut end = MAX;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_holds_the_fleet_a_call_carried_once_the_plugin_answered() {
        let fleet = Fleet { version: 7, ..Fleet::default() };
        let answered: Result<Result<(), String>, CallFailure> = Ok(Ok(()));
        assert_eq!(Core::fleet_held(None, &fleet, &answered), Some(7));
        assert_eq!(Core::fleet_held(Some(6), &fleet, &answered), Some(7));
        // The plugin's own error: it may have refused the fleet carried, so
        // it holds what it held before (the next call carries 7 again).
        let refused: Result<Result<(), String>, CallFailure> = Ok(Err("no".into()));
        assert_eq!(Core::fleet_held(Some(6), &fleet, &refused), Some(6));
        assert_eq!(Core::fleet_held(Some(7), &fleet, &refused), Some(7), "a call carrying none leaves it held");
        // A trap or a timeout: nothing is known of what it holds.
        let trapped: Result<Result<(), String>, CallFailure> = Err(CallFailure::Trap("unreachable".into()));
        assert_eq!(Core::fleet_held(Some(7), &fleet, &trapped), None);
    }
}
