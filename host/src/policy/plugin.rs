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
use super::sandbox::PluginState;
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
}

impl ContractVersion {
    /// Every supported version.
    pub const SUPPORTED: [ContractVersion; 2] = [ContractVersion::V0_1_0, ContractVersion::V0_2_0];

    /// The semver string.
    pub fn as_str(self) -> &'static str {
        match self {
            ContractVersion::V0_1_0 => "0.1.0",
            ContractVersion::V0_2_0 => "0.2.0",
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
    config: Arc<str>,
    runtime: PolicyRuntime,
    pre: InstancePre<PluginState>,
    glue: Glue,
    idle: Mutex<Vec<PluginInstance>>,
    calls: AtomicU64,
    busy_nanos: AtomicU64,
    conformance: OnceLock<ConformanceReport>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("info", &self.info).finish_non_exhaustive()
    }
}

/// Export indices of the contract version the plugin speaks.
enum Glue {
    V0_1_0(glue::v0_1_0::Indices),
    V0_2_0(glue::v0_2_0::Indices),
}

/// Typed exports of one instance, in the plugin's contract version.
enum Exports {
    V0_1_0(glue::v0_1_0::Exports),
    V0_2_0(glue::v0_2_0::Exports),
}

struct PluginInstance {
    store: Store<PluginState>,
    exports: Exports,
    catalog_version: Option<u64>,
}

impl Plugin {
    /// Load the component at `path`, named after its file.
    pub fn from_file(runtime: &PolicyRuntime, path: &std::path::Path, config: &str) -> Result<Self, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::load(runtime, &path.display().to_string(), &bytes, config)
    }

    /// Load a plugin from component bytes (binary, or WAT text). `config` is
    /// the JSON the plugin will read through `host.config`.
    pub fn load(runtime: &PolicyRuntime, name: &str, bytes: &[u8], config: &str) -> Result<Self, PluginError> {
        let started = Instant::now();
        check_component_bytes(name, bytes)?;
        let inner = &runtime.inner;
        let digest = sha256_hex(bytes);
        let (component, outcome) =
            inner
                .cache
                .get(&inner.engine, &digest, bytes)
                .map_err(|e| match bytes.get(4..8) {
                    Some([1, 0, 0, 0]) => PluginError::NotAComponent {
                        plugin: name.into(),
                        reason: "it is a core WebAssembly module; wrap it with `wasm-tools component new`".into(),
                    },
                    _ => PluginError::Compile { plugin: name.into(), reason: format!("{e:#}") },
                })?;
        let load_time = started.elapsed();
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(&inner.engine).map(|(n, _)| n.to_string()).collect();
        let exports: Vec<String> = ty.exports(&inner.engine).map(|(n, _)| n.to_string()).collect();
        if let Some(import) = imports.iter().find(|i| !ALLOWED_IMPORTS.iter().any(|a| i.starts_with(a))) {
            return Err(PluginError::UnsupportedImport { plugin: name.into(), import: import.clone() });
        }
        let mut contract = None;
        for export in &exports {
            if let Some(version) = export.strip_prefix("nodewright:policy/").and_then(|e| e.split_once('@')).map(|(_, v)| v) {
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
        let world = match (selects, consolidates) {
            (true, true) => World::Policy,
            (true, false) => World::InstanceSelector,
            (false, true) => World::Consolidator,
            (false, false) => {
                return Err(PluginError::WrongWorld {
                    plugin: name.into(),
                    found: if exports.is_empty() { "no exports".into() } else { exports.join(", ") },
                });
            }
        };
        let contract = contract.expect("a selection or consolidation export names its version");
        let link = |e: wasmtime::Error| PluginError::Link { plugin: name.into(), reason: format!("{e:#}") };
        let pre = inner.linker.instantiate_pre(&component).map_err(link)?;
        let glue = match contract {
            ContractVersion::V0_1_0 => {
                Glue::V0_1_0(glue::v0_1_0::Indices::new(&pre, world.selects(), world.consolidates()).map_err(link)?)
            }
            ContractVersion::V0_2_0 => {
                Glue::V0_2_0(glue::v0_2_0::Indices::new(&pre, world.selects(), world.consolidates()).map_err(link)?)
            }
        };
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
            config: Arc::from(config),
            runtime: runtime.clone(),
            pre,
            glue,
            idle: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            conformance: OnceLock::new(),
        };
        // Instantiate once now: a component that cannot start (a trap in its
        // start function, a missing export type) is rejected at load.
        let instance = plugin.instantiate().map_err(|failure| PluginError::Link {
            plugin: name.into(),
            reason: failure.to_string(),
        })?;
        plugin.idle.lock().expect("idle lock").push(instance);
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
                failure: check.failure.clone().expect("a failed check has its failure"),
            }),
        }
    }

    /// The plugin's configuration JSON.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Calls made and nanoseconds spent in them.
    pub fn call_stats(&self) -> (u64, u64) {
        (self.calls.load(Ordering::Relaxed), self.busy_nanos.load(Ordering::Relaxed))
    }

    /// Hand `catalog` to an idle instance that does not hold it yet, so the
    /// next decision does not pay for the hand-over. A failure here is
    /// reported by that next call.
    pub fn prepare(&self, catalog: &Catalog) {
        let idle = self.idle.lock().expect("idle lock").pop();
        let Some(mut instance) = idle else { return };
        match self.hand_over(&mut instance, catalog) {
            Err(CallFailure::Timeout { .. } | CallFailure::MemoryLimit { .. } | CallFailure::StackOverflow | CallFailure::Trap(_)) => {}
            _ => self.idle.lock().expect("idle lock").push(instance),
        }
    }

    /// Give `instance` the catalog unless it already holds this version.
    fn hand_over(&self, instance: &mut PluginInstance, catalog: &Catalog) -> Result<(), CallFailure> {
        if instance.catalog_version == Some(catalog.version) {
            return Ok(());
        }
        let limit = self.runtime.limits().consolidation_timeout;
        instance.store.set_epoch_deadline(PolicyRuntime::ticks(limit));
        let handed = match (&self.glue, &instance.exports) {
            (Glue::V0_1_0(indices), Exports::V0_1_0(exports)) => exports.set_catalog(&mut instance.store, &indices.catalog(catalog)),
            (Glue::V0_2_0(indices), Exports::V0_2_0(exports)) => {
                let wit = indices.catalog(catalog);
                instance.store.data_mut().what_if.catalog = Some(wit.clone());
                exports.set_catalog(&mut instance.store, &wit)
            }
            _ => unreachable!("an instance speaks its plugin's version"),
        };
        match handed {
            Err(e) => Err(classify(&instance.store, e, limit)),
            Ok(Err(message)) => Err(CallFailure::CatalogRejected { version: catalog.version, message: cut(message) }),
            Ok(Ok(())) => {
                instance.catalog_version = Some(catalog.version);
                Ok(())
            }
        }
    }

    /// Create a fresh instance (new store, new memory).
    pub fn instantiate_fresh(&self) -> Result<(), CallFailure> {
        self.instantiate().map(drop)
    }

    fn instantiate(&self) -> Result<PluginInstance, CallFailure> {
        let inner = &self.runtime.inner;
        let n = inner.instances_created.fetch_add(1, Ordering::Relaxed);
        let seed = inner.config.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut store = PluginState::store(
            &inner.engine,
            Arc::from(self.info.name.as_str()),
            self.config.clone(),
            inner.config.clock.clone(),
            seed,
            inner.config.limits.memory_bytes,
        );
        store.set_epoch_deadline(PolicyRuntime::ticks(inner.config.limits.consolidation_timeout));
        let instance = self.pre.instantiate(&mut store).map_err(|e| classify(&store, e, inner.config.limits.consolidation_timeout))?;
        let load = |e: wasmtime::Error| CallFailure::Instantiate(format!("{e:#}"));
        let exports = match &self.glue {
            Glue::V0_1_0(indices) => Exports::V0_1_0(indices.load(&mut store, &instance).map_err(load)?),
            Glue::V0_2_0(indices) => Exports::V0_2_0(indices.load(&mut store, &instance).map_err(load)?),
        };
        Ok(PluginInstance { store, exports, catalog_version: None })
    }

    /// Run `call` on an instance that holds `catalog`, within `timeout`.
    /// An instance that traps is thrown away; the next call gets a fresh one.
    fn with_instance<R>(
        &self,
        catalog: &Catalog,
        timeout: Duration,
        call: impl FnOnce(&mut PluginInstance) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, CallFailure> {
        let started = Instant::now();
        let idle = self.idle.lock().expect("idle lock").pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self.instantiate()?,
        };
        let result = self.call_on(&mut instance, catalog, timeout, call);
        let trapped = matches!(
            result,
            Err(CallFailure::Timeout { .. } | CallFailure::MemoryLimit { .. } | CallFailure::StackOverflow | CallFailure::Trap(_))
        );
        if !trapped {
            let mut idle = self.idle.lock().expect("idle lock");
            if idle.len() < MAX_IDLE {
                idle.push(instance);
            }
        }
        let elapsed = started.elapsed();
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.busy_nanos.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        if let Some(observe) = CALL_OBSERVER.get() {
            observe(&self.info.name, elapsed);
        }
        result
    }

    fn call_on<R>(
        &self,
        instance: &mut PluginInstance,
        catalog: &Catalog,
        timeout: Duration,
        call: impl FnOnce(&mut PluginInstance) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, CallFailure> {
        instance.store.data().log_budget().reset();
        instance.store.data_mut().what_if.queries = 0;
        self.hand_over(instance, catalog)?;
        instance.store.set_epoch_deadline(PolicyRuntime::ticks(timeout));
        match call(instance) {
            Err(e) => Err(classify(&instance.store, e, timeout)),
            Ok(Err(message)) => Err(CallFailure::PluginError(cut(message))),
            Ok(Ok(value)) => Ok(value),
        }
    }

    /// Ask the plugin to rank `request`'s feasible offerings; the answer is
    /// validated before it is returned.
    pub fn rank(&self, catalog: &Catalog, request: &SelectionRequest) -> Result<Ranking, CallFailure> {
        if !self.info.world.selects() {
            return Err(CallFailure::Instantiate(format!("{} does not export instance-selection", self.info.name)));
        }
        let timeout = self.runtime.limits().selection_timeout;
        let (offerings, scores) = self.with_instance(catalog, timeout, |instance| match &instance.exports {
            Exports::V0_1_0(e) => e.rank(&mut instance.store, catalog.version, request),
            Exports::V0_2_0(e) => e.rank(&mut instance.store, catalog.version, request),
        })?;
        Ranking::validate(offerings, scores, &request.feasible, catalog.offerings.len())
            .map_err(CallFailure::InvalidOutput)
    }

    /// Ask the plugin for a consolidation plan; the plan is checked for
    /// structure (indices, disruptability, replacements) before it is returned.
    pub fn plan(&self, catalog: &Catalog, snapshot: &ConsolidationSnapshot) -> Result<Vec<ConsolidationAction>, CallFailure> {
        if !self.info.world.consolidates() {
            return Err(CallFailure::Instantiate(format!("{} does not export consolidation", self.info.name)));
        }
        let timeout = self.runtime.limits().consolidation_timeout;
        let plan = self.with_instance(catalog, timeout, |instance| match &instance.exports {
            Exports::V0_1_0(e) => e.plan(&mut instance.store, catalog.version, snapshot),
            Exports::V0_2_0(e) => {
                instance.store.data_mut().what_if.snapshot = Some(Arc::new(snapshot.clone()));
                let plan = e.plan(&mut instance.store, catalog.version, snapshot);
                instance.store.data_mut().what_if.snapshot = None;
                plan
            }
        })?;
        ConsolidationAction::validate_plan(plan, snapshot).map_err(CallFailure::InvalidOutput)
    }
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
fn classify(store: &Store<PluginState>, error: wasmtime::Error, timeout: Duration) -> CallFailure {
    if store.data().limiter.hit {
        return CallFailure::MemoryLimit { limit_bytes: limit_of(store) };
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => CallFailure::Timeout { limit: timeout },
        Some(wasmtime::Trap::StackOverflow) => CallFailure::StackOverflow,
        Some(trap) => CallFailure::Trap(trap.to_string()),
        None => CallFailure::Trap(error.root_cause().to_string()),
    }
}

fn limit_of(store: &Store<PluginState>) -> u64 {
    store.data().limiter.limit()
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
