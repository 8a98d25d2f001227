//! Named policy slots, each swapped atomically: a candidate is compiled and
//! conformance-checked off the hot path, then replaces the active version in
//! one pointer swap. Calls in flight finish on the version they started
//! with. Failed calls fall back to the built-in policy; after
//! `Limits::rollback_after` consecutive failures, or once more than
//! `Limits::rollback_failure_percent` of the last `Limits::rollback_window`
//! calls failed, the slot rolls back to its previous version. A shadow candidate sees every input; its answers are
//! compared and logged, never acted on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde::Serialize;

use super::builtin::{cheapest_ranking, no_consolidation};
use super::error::{CallFailure, PluginError};
use super::plugin::Plugin;
use super::request::{ConsolidationAction, ConsolidationSnapshot, Ranking, SelectionRequest};
use super::runtime::PolicyRuntime;
use crate::model::{Catalog, PolicyRef};

/// The name that configures a slot to run the native built-in policy
/// (cheapest first for selection, as Karpenter chooses; Karpenter's
/// consolidation for consolidation).
pub const BUILTIN_SELECTION: &str = "karpenter-like";

/// Which decision a slot makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Which offering to buy.
    Selection,
    /// Which nodes to consolidate.
    Consolidation,
}

/// How a candidate joins a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotMode {
    /// Replace the active version.
    Active,
    /// Run beside the active version; log its answers, never act on them.
    Shadow,
}

/// Who made a decision.
#[derive(Debug, Clone)]
pub enum DecidedBy {
    /// The slot runs the built-in policy.
    Builtin,
    /// The active plugin answered.
    Plugin(Arc<Plugin>),
    /// The active plugin failed; the built-in policy answered.
    Fallback {
        /// The plugin that failed.
        plugin: Arc<Plugin>,
        /// Why.
        failure: CallFailure,
    },
}

/// A decision and who made it.
#[derive(Debug, Clone)]
pub struct Decision<T> {
    /// The answer, always valid.
    pub value: T,
    /// Who gave it.
    pub by: DecidedBy,
}

/// What a successful swap did.
#[derive(Debug, Clone, Serialize)]
pub struct SwapOutcome {
    /// The slot.
    pub slot: String,
    /// Active or shadow.
    pub mode: SlotMode,
    /// The new version's digest.
    pub digest: String,
    /// The version it replaced (`builtin` for the built-in policy).
    pub replaced: String,
}

#[derive(Clone)]
enum Version {
    Builtin,
    Plugin(Arc<Plugin>),
}

impl Version {
    fn label(&self) -> String {
        match self {
            Version::Builtin => "builtin".into(),
            Version::Plugin(p) => format!("{} ({})", p.info().name, p.info().digest),
        }
    }

    fn same(&self, other: &Version) -> bool {
        match (self, other) {
            (Version::Builtin, Version::Builtin) => true,
            (Version::Plugin(a), Version::Plugin(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

struct SlotState {
    active: Version,
    previous: Option<Version>,
    shadow: Option<Arc<Plugin>>,
}

/// Counters and versions of a slot, for metrics and `status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlotStats {
    /// Slot name.
    pub name: String,
    /// Active version (`builtin` or name and digest).
    pub active: String,
    /// Version a rollback would return to.
    pub previous: Option<String>,
    /// Shadow candidate.
    pub shadow: Option<String>,
    /// Decisions asked of the slot.
    pub calls: u64,
    /// Decisions the active plugin made.
    pub plugin_decisions: u64,
    /// Decisions the built-in policy made after a plugin failure.
    pub fallbacks: u64,
    /// Failed plugin calls by kind.
    pub failures: BTreeMap<String, u64>,
    /// Failures in a row right now.
    pub consecutive_failures: u32,
    /// Rollbacks performed.
    pub rollbacks: u64,
    /// Successful swaps (active or shadow).
    pub swaps: u64,
    /// Candidates rejected.
    pub rejected: u64,
    /// Why the last candidate was rejected.
    pub last_rejection: Option<String>,
    /// When the last swap or rollback happened.
    pub last_swap: Option<SystemTime>,
    /// Shadow calls made.
    pub shadow_calls: u64,
    /// Shadow answers that differed from the active one.
    pub shadow_divergences: u64,
    /// Shadow calls that failed.
    pub shadow_failures: u64,
}

/// One named decision point (e.g. a NodePool's selection policy).
pub struct PolicySlot {
    name: String,
    role: Role,
    rule: RollbackRule,
    state: ArcSwap<SlotState>,
    /// Bumped whenever the active, previous or shadow version changes.
    generation: AtomicU64,
    swap_lock: Mutex<()>,
    consecutive_failures: AtomicU32,
    calls: AtomicU64,
    plugin_decisions: AtomicU64,
    fallbacks: AtomicU64,
    shadow_calls: AtomicU64,
    shadow_divergences: AtomicU64,
    shadow_failures: AtomicU64,
    history: Mutex<SlotHistory>,
    /// Outcomes of the active version's recent calls (true: failed).
    recent: Mutex<std::collections::VecDeque<bool>>,
}

/// When a slot gives up on its active plugin.
#[derive(Debug, Clone, Copy)]
struct RollbackRule {
    in_a_row: u32,
    window: u32,
    failure_percent: u32,
}

impl RollbackRule {
    fn from_limits(limits: &super::runtime::Limits) -> Self {
        RollbackRule {
            in_a_row: limits.rollback_after.max(1),
            window: limits.rollback_window.max(1),
            failure_percent: limits.rollback_failure_percent.min(100),
        }
    }
}

#[derive(Default)]
struct SlotHistory {
    failures: BTreeMap<String, u64>,
    rollbacks: u64,
    swaps: u64,
    rejected: u64,
    last_rejection: Option<String>,
    last_swap: Option<SystemTime>,
}

impl PolicySlot {
    fn new(name: &str, role: Role, rule: RollbackRule) -> Self {
        PolicySlot {
            name: name.into(),
            role,
            rule,
            state: ArcSwap::from_pointee(SlotState { active: Version::Builtin, previous: None, shadow: None }),
            swap_lock: Mutex::new(()),
            generation: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            calls: AtomicU64::new(0),
            plugin_decisions: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            shadow_calls: AtomicU64::new(0),
            shadow_divergences: AtomicU64::new(0),
            shadow_failures: AtomicU64::new(0),
            history: Mutex::new(SlotHistory::default()),
            recent: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// The slot's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Changes whenever the slot's versions change (a swap, a rollback, a
    /// return to the built-in policy): answers remembered from before may
    /// no longer be the slot's.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The decision it makes.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The active plugin, if the slot is not on the built-in policy.
    pub fn active_plugin(&self) -> Option<Arc<Plugin>> {
        match &self.state.load().active {
            Version::Plugin(p) => Some(p.clone()),
            Version::Builtin => None,
        }
    }

    /// Whether it runs a plugin (active or shadow) rather than only the
    /// built-in policy.
    pub fn runs_plugin(&self) -> bool {
        let state = self.state.load();
        matches!(state.active, Version::Plugin(_)) || state.shadow.is_some()
    }

    /// Whether a version it runs (active or shadow) reads the fleet
    /// (contract 0.3.0): callers compute the fleet only then.
    pub fn reads_fleet(&self) -> bool {
        let state = self.state.load();
        let reads = |p: &Plugin| p.info().contract == super::ContractVersion::V0_3_0;
        matches!(&state.active, Version::Plugin(p) if reads(p)) || state.shadow.as_deref().is_some_and(reads)
    }

    /// Check `candidate` and, if it passes, make it the slot's active or
    /// shadow version. A rejected candidate leaves the slot as it was.
    pub fn propose(&self, candidate: Arc<Plugin>, mode: SlotMode) -> Result<SwapOutcome, PluginError> {
        let checked = self.check_role(&candidate).and_then(|()| candidate.check_conformance().map(drop));
        if let Err(e) = checked {
            self.record_rejection(&e);
            return Err(e);
        }
        let _swapping = self.swap_lock.lock().expect("swap lock");
        let current = self.state.load_full();
        let digest = candidate.info().digest.clone();
        let (next, replaced) = match mode {
            SlotMode::Active => (
                SlotState {
                    active: Version::Plugin(candidate.clone()),
                    previous: Some(current.active.clone()),
                    shadow: current.shadow.clone().filter(|s| s.info().digest != digest),
                },
                current.active.label(),
            ),
            SlotMode::Shadow => (
                SlotState {
                    active: current.active.clone(),
                    previous: current.previous.clone(),
                    shadow: Some(candidate.clone()),
                },
                current.shadow.as_ref().map_or_else(|| "none".into(), |s| Version::Plugin(s.clone()).label()),
            ),
        };
        self.set_state(next);
        if mode == SlotMode::Active {
            self.forget_outcomes();
        }
        let mut history = self.history.lock().expect("history lock");
        history.swaps += 1;
        history.last_swap = Some(SystemTime::now());
        tracing::info!(slot = %self.name, ?mode, %digest, %replaced, "policy swapped");
        Ok(SwapOutcome { slot: self.name.clone(), mode, digest, replaced })
    }

    /// Count a candidate that never got to [`PolicySlot::propose`] (it did
    /// not load) and keep its reason for `status`.
    pub fn record_rejection(&self, error: &PluginError) {
        let mut history = self.history.lock().expect("history lock");
        history.rejected += 1;
        history.last_rejection = Some(error.to_string());
        tracing::warn!(slot = %self.name, "candidate rejected, slot unchanged: {error}");
    }

    /// Run the native built-in policy from now on (the active plugin, if
    /// any, becomes the previous version).
    pub fn use_builtin(&self) {
        let _swapping = self.swap_lock.lock().expect("swap lock");
        let current = self.state.load_full();
        if matches!(current.active, Version::Builtin) {
            return;
        }
        self.set_state(SlotState {
            active: Version::Builtin,
            previous: Some(current.active.clone()),
            shadow: current.shadow.clone(),
        });
        self.history.lock().expect("history lock").last_swap = Some(SystemTime::now());
    }

    /// Drop the shadow candidate, if any.
    pub fn clear_shadow(&self) {
        let _swapping = self.swap_lock.lock().expect("swap lock");
        let current = self.state.load_full();
        self.set_state(SlotState {
            active: current.active.clone(),
            previous: current.previous.clone(),
            shadow: None,
        });
    }

    /// Make `state` the slot's versions; the one place they change, so
    /// [`PolicySlot::generation`] always moves with them.
    fn set_state(&self, state: SlotState) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.state.store(Arc::new(state));
    }

    fn check_role(&self, candidate: &Plugin) -> Result<(), PluginError> {
        let world = candidate.info().world;
        let (fits, needed) = match self.role {
            Role::Selection => (world.selects(), "nodewright:policy/instance-selection"),
            Role::Consolidation => (world.consolidates(), "nodewright:policy/consolidation"),
        };
        if fits {
            return Ok(());
        }
        Err(PluginError::WrongRole {
            plugin: candidate.info().name.clone(),
            world: world.name().into(),
            slot: self.name.clone(),
            needed: needed.into(),
        })
    }

    /// Hand `catalog` to the active plugin (and the shadow) ahead of the
    /// next decision; cheap when they already hold it. A failed hand-over
    /// is counted, logged and weighs toward a rollback like a failed call.
    pub fn prepare(&self, catalog: &Catalog) {
        let state = self.state.load_full();
        if let Version::Plugin(plugin) = &state.active
            && let Err(failure) = plugin.prepare(catalog)
        {
            self.record_failure(&state, plugin, &failure, "catalog hand-over failed");
        }
        if let Some(shadow) = &state.shadow
            && let Err(failure) = shadow.prepare(catalog)
        {
            self.shadow_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(slot = %self.name, shadow = %shadow.info().name, "shadow catalog hand-over failed: {failure}");
        }
    }

    /// Rank `request`'s feasible offerings. Always answers: a failed plugin
    /// call is answered by the built-in cheapest policy.
    pub fn rank(&self, catalog: &Catalog, request: &SelectionRequest) -> Decision<Ranking> {
        let state = self.state.load_full();
        let decision = self.decide(&state, |p| p.rank(catalog, request), || cheapest_ranking(catalog, request));
        if let Some(shadow) = &state.shadow {
            self.shadow_call(shadow, shadow.rank(catalog, request), |answer| {
                let (active_top, shadow_top) = (decision.value.top(), answer.top());
                if active_top == shadow_top {
                    return None;
                }
                let price = |i: Option<u32>| i.and_then(|i| catalog.offerings.get(i as usize)).map(|o| o.price_per_hour);
                let describe = |i: Option<u32>| {
                    i.and_then(|i| catalog.offerings.get(i as usize))
                        .map_or_else(|| "nothing".to_string(), |o| format!("{} {:?} {}", o.instance_type, o.capacity_type, o.zone))
                };
                let delta = price(shadow_top).unwrap_or(0.0) - price(active_top).unwrap_or(0.0);
                Some(format!(
                    "active chose {}, shadow would choose {} ({delta:+.4} $/h)",
                    describe(active_top),
                    describe(shadow_top)
                ))
            });
        }
        decision
    }

    /// Plan consolidation for `snapshot`. Always answers: a failed plugin
    /// call is answered by "no action".
    pub fn plan(&self, catalog: &Catalog, snapshot: &ConsolidationSnapshot) -> Decision<Vec<ConsolidationAction>> {
        self.plan_from(catalog, snapshot, no_consolidation)
    }

    /// Plan consolidation for the snapshot `snapshot` makes; the built-in
    /// slot, and a failed plugin call, are answered by `builtin` (the
    /// host's own consolidator). The snapshot is made only when a plugin
    /// (active or shadow) is called: the built-in consolidator reads the
    /// cluster directly.
    pub fn plan_with(
        &self,
        catalog: &Catalog,
        snapshot: impl FnOnce() -> ConsolidationSnapshot,
        builtin: impl FnOnce() -> Vec<ConsolidationAction>,
    ) -> Decision<Vec<ConsolidationAction>> {
        self.plan_from(catalog, std::cell::LazyCell::new(snapshot), builtin)
    }

    fn plan_from(
        &self,
        catalog: &Catalog,
        snapshot: impl std::ops::Deref<Target = ConsolidationSnapshot>,
        builtin: impl FnOnce() -> Vec<ConsolidationAction>,
    ) -> Decision<Vec<ConsolidationAction>> {
        let state = self.state.load_full();
        let decision = self.decide(&state, |p| p.plan(catalog, &snapshot), builtin);
        if let Some(shadow) = &state.shadow {
            self.shadow_call(shadow, shadow.plan(catalog, &snapshot), |answer| {
                (answer != &decision.value).then(|| format!("active planned {:?}, shadow would plan {:?}", decision.value, answer))
            });
        }
        decision
    }

    fn decide<T>(
        &self,
        state: &Arc<SlotState>,
        call: impl FnOnce(&Plugin) -> Result<T, CallFailure>,
        builtin: impl FnOnce() -> T,
    ) -> Decision<T> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let plugin = match &state.active {
            Version::Builtin => return Decision { value: builtin(), by: DecidedBy::Builtin },
            Version::Plugin(plugin) => plugin,
        };
        match call(plugin) {
            Ok(value) => {
                self.plugin_decisions.fetch_add(1, Ordering::Relaxed);
                self.consecutive_failures.store(0, Ordering::Relaxed);
                self.push_outcome(false);
                Decision { value, by: DecidedBy::Plugin(plugin.clone()) }
            }
            Err(failure) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.record_failure(state, plugin, &failure, "plugin call failed, built-in policy used");
                Decision { value: builtin(), by: DecidedBy::Fallback { plugin: plugin.clone(), failure } }
            }
        }
    }

    /// Count, log and weigh one failure of the active plugin; roll back
    /// when it breaks the rule.
    fn record_failure(&self, state: &Arc<SlotState>, plugin: &Plugin, failure: &CallFailure, what: &str) {
        *self.history.lock().unwrap_or_else(|p| p.into_inner()).failures.entry(failure.kind().into()).or_default() += 1;
        tracing::warn!(slot = %self.name, plugin = %plugin.info().name, kind = failure.kind(), "{what}: {failure}");
        let in_a_row = self.consecutive_failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let (failed, calls) = self.push_outcome(true);
        let rule = self.rule;
        if in_a_row >= rule.in_a_row {
            self.roll_back(state, &format!("{in_a_row} failed calls in a row (last: {failure})"));
        } else if calls >= rule.window && u64::from(failed) * 100 > u64::from(rule.failure_percent) * u64::from(calls) {
            self.roll_back(
                state,
                &format!("{failed} of the last {calls} calls failed, more than {} % (last: {failure})", rule.failure_percent),
            );
        }
    }

    /// Remember one outcome of the active version; returns (failed, calls)
    /// over the window.
    fn push_outcome(&self, failed: bool) -> (u32, u32) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.push_back(failed);
        while recent.len() > self.rule.window as usize {
            recent.pop_front();
        }
        let failures = recent.iter().filter(|f| **f).count();
        (u32::try_from(failures).unwrap_or(u32::MAX), u32::try_from(recent.len()).unwrap_or(u32::MAX))
    }

    /// A new active version starts with a clean record.
    fn forget_outcomes(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Return to the previous version, unless the slot has already moved on
    /// from the failing one.
    fn roll_back(&self, failing: &Arc<SlotState>, reason: &str) {
        let _swapping = self.swap_lock.lock().expect("swap lock");
        let current = self.state.load_full();
        if !current.active.same(&failing.active) {
            return;
        }
        let restored = current.previous.clone().unwrap_or(Version::Builtin);
        let previous = match restored {
            Version::Plugin(_) => Some(Version::Builtin),
            Version::Builtin => None,
        };
        tracing::error!(
            slot = %self.name,
            failing = %current.active.label(),
            restored = %restored.label(),
            "{reason}; rolled back"
        );
        self.set_state(SlotState { active: restored, previous, shadow: current.shadow.clone() });
        self.forget_outcomes();
        let mut history = self.history.lock().expect("history lock");
        history.rollbacks += 1;
        history.last_swap = Some(SystemTime::now());
    }

    fn shadow_call<T>(&self, shadow: &Plugin, answer: Result<T, CallFailure>, diverges: impl FnOnce(&T) -> Option<String>) {
        self.shadow_calls.fetch_add(1, Ordering::Relaxed);
        match answer {
            Ok(answer) => {
                if let Some(difference) = diverges(&answer) {
                    self.shadow_divergences.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(slot = %self.name, shadow = %shadow.info().name, "shadow diverges: {difference}");
                }
            }
            Err(failure) => {
                self.shadow_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(slot = %self.name, shadow = %shadow.info().name, "shadow call failed: {failure}");
            }
        }
    }

    /// Counters and versions.
    pub fn stats(&self) -> SlotStats {
        let state = self.state.load();
        let history = self.history.lock().expect("history lock");
        SlotStats {
            name: self.name.clone(),
            active: state.active.label(),
            previous: state.previous.as_ref().map(Version::label),
            shadow: state.shadow.as_ref().map(|s| Version::Plugin(s.clone()).label()),
            calls: self.calls.load(Ordering::Relaxed),
            plugin_decisions: self.plugin_decisions.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            failures: history.failures.clone(),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            rollbacks: history.rollbacks,
            swaps: history.swaps,
            rejected: history.rejected,
            last_rejection: history.last_rejection.clone(),
            last_swap: history.last_swap,
            shadow_calls: self.shadow_calls.load(Ordering::Relaxed),
            shadow_divergences: self.shadow_divergences.load(Ordering::Relaxed),
            shadow_failures: self.shadow_failures.load(Ordering::Relaxed),
        }
    }
}

/// Every slot of the process, by name.
pub struct PolicyRegistry {
    runtime: PolicyRuntime,
    slots: RwLock<BTreeMap<String, Arc<PolicySlot>>>,
    defaults: Mutex<BTreeMap<&'static str, Arc<Plugin>>>,
    /// Slot name → the plugin reference it was last configured from.
    configured: Mutex<BTreeMap<String, PolicyRef>>,
    /// Plugin names whose components something else loads into slots (the
    /// `PolicyPlugin` resources): `configure` leaves those slots alone.
    external: Mutex<std::collections::BTreeSet<String>>,
}

impl PolicyRegistry {
    /// An empty registry on `runtime`.
    pub fn new(runtime: PolicyRuntime) -> Self {
        PolicyRegistry {
            runtime,
            slots: RwLock::new(BTreeMap::new()),
            defaults: Mutex::new(BTreeMap::new()),
            configured: Mutex::new(BTreeMap::new()),
            external: Mutex::new(std::collections::BTreeSet::new()),
        }
    }

    /// Plugins named `names` are loaded by their own source (a
    /// `PolicyPlugin` resource through [`PolicyRegistry::load`]); a NodePool
    /// naming one does not make `configure` look for a file.
    pub fn set_external(&self, names: impl IntoIterator<Item = String>) {
        *self.external.lock().expect("external lock") = names.into_iter().collect();
    }

    /// The runtime plugins are loaded into.
    pub fn runtime(&self) -> &PolicyRuntime {
        &self.runtime
    }

    /// The slot called `name`, if it exists.
    pub fn slot(&self, name: &str) -> Option<Arc<PolicySlot>> {
        self.slots.read().expect("slots lock").get(name).cloned()
    }

    /// The slot called `name`, created on the built-in policy for `role` if missing.
    pub fn ensure_slot(&self, name: &str, role: Role) -> Arc<PolicySlot> {
        if let Some(slot) = self.slot(name) {
            return slot;
        }
        let rule = RollbackRule::from_limits(&self.runtime.limits());
        self.slots
            .write()
            .expect("slots lock")
            .entry(name.into())
            .or_insert_with(|| Arc::new(PolicySlot::new(name, role, rule)))
            .clone()
    }

    /// The bundled component that is the default policy for `role`:
    /// `cheapest` for selection, `empty-only` for consolidation. Loaded once
    /// per registry and shared by every slot that uses it.
    pub fn default_plugin(&self, role: Role) -> Result<Arc<Plugin>, PluginError> {
        let name = match role {
            Role::Selection => "cheapest",
            Role::Consolidation => "empty-only",
        };
        let mut defaults = self.defaults.lock().expect("defaults lock");
        if let Some(plugin) = defaults.get(name) {
            return Ok(plugin.clone());
        }
        let bytes = super::bundled::get(name).expect("bundled defaults exist");
        let plugin = Arc::new(Plugin::load(&self.runtime, name, bytes, "{}")?);
        plugin.check_conformance()?;
        defaults.insert(name, plugin.clone());
        Ok(plugin)
    }

    /// The slot called `name`; a new one runs the bundled default
    /// component for `role` (with the native built-in behind it).
    pub fn ensure_default_slot(&self, name: &str, role: Role) -> Result<Arc<PolicySlot>, PluginError> {
        let existed = self.slot(name).is_some();
        let slot = self.ensure_slot(name, role);
        if !existed && slot.active_plugin().is_none() {
            slot.propose(self.default_plugin(role)?, SlotMode::Active)?;
        }
        Ok(slot)
    }

    /// The slot called `name`, running the plugin `reference` names: a
    /// bundled plugin or a component file, with its config. Loading happens
    /// only when the reference changes; if it fails, the slot keeps what it
    /// ran before (a new slot: the built-in policy) and the error is kept in
    /// the slot's stats and returned once.
    pub fn configure(&self, name: &str, role: Role, reference: &PolicyRef) -> (Arc<PolicySlot>, Option<PluginError>) {
        let slot = self.ensure_slot(name, role);
        {
            let mut configured = self.configured.lock().expect("configured lock");
            if configured.get(name) == Some(reference) {
                return (slot, None);
            }
            configured.insert(name.into(), reference.clone());
        }
        if reference.plugin == BUILTIN_SELECTION {
            slot.use_builtin();
            return (slot, None);
        }
        if self.external.lock().expect("external lock").contains(&reference.plugin) {
            return (slot, None);
        }
        let loaded = match super::bundled::get(&reference.plugin) {
            Some(bytes) => Plugin::load(&self.runtime, &reference.plugin, bytes, &reference.config),
            None => Plugin::from_file(&self.runtime, std::path::Path::new(&reference.plugin), &reference.config),
        };
        let outcome = match loaded {
            Ok(plugin) => slot.propose(Arc::new(plugin), SlotMode::Active).map(drop),
            Err(e) => {
                slot.record_rejection(&e);
                Err(e)
            }
        };
        (slot, outcome.err())
    }

    /// Every slot, by name.
    pub fn slots(&self) -> Vec<Arc<PolicySlot>> {
        self.slots.read().expect("slots lock").values().cloned().collect()
    }

    /// Compile `bytes`, check it, and swap it into slot `slot` (created for
    /// `role` if missing). Nothing changes when any step fails.
    pub fn load(
        &self,
        slot: &str,
        role: Role,
        bytes: &[u8],
        config: &str,
        mode: SlotMode,
    ) -> Result<SwapOutcome, PluginError> {
        let target = self.ensure_slot(slot, role);
        match Plugin::load(&self.runtime, slot, bytes, config) {
            Ok(plugin) => target.propose(Arc::new(plugin), mode),
            Err(e) => {
                target.record_rejection(&e);
                Err(e)
            }
        }
    }
}
