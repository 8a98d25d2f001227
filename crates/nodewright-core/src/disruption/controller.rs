//! The disruption controller: reads the cluster, decides, re-validates,
//! and carries disruptions out.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

// Keyed by names and never iterated: a fast hash, no order to leak.
use rustc_hash::FxHashMap as HashMap;

use serde::Serialize;

pub(super) mod validation;

use super::fit::{Member, View, free_capacity};
use super::karpenter::{Choice, karpenter_like};
use super::{Command, DisruptionSettings, Reason, RejectKind, Rejection, Replacement, budget};
use crate::cloud::CloudProvider;
use crate::cluster::{Cluster, ClusterError, ClusterEvent, EventObject};
use crate::model::{NodePool, Pod, Resources};
use crate::policy::{ConsolidationAction, ConsolidationSnapshot, DecidedBy, PolicyRegistry, Role, SelectionRequest, SnapshotNode};
use crate::provisioning::{ClaimSpec, Clock, LaunchedClaim, Provisioner, selection_slot};
use crate::scheduling::NodeCache;

/// The registry slot of a NodePool's consolidation policy.
pub fn consolidation_slot(node_pool: &str) -> String {
    format!("{node_pool}/consolidation")
}

/// What one pass did; the simulator mirrors it into its own model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DisruptionReport {
    /// Actions decided this pass, to be re-validated after the delay.
    pub staged: Vec<Command>,
    /// Actions started this pass (nodes cordoned, replacement launched).
    pub started: Vec<Command>,
    /// Actions rejected this pass, with the reason.
    pub rejected: Vec<Rejection>,
    /// Replacement NodeClaims launched.
    pub launched: Vec<LaunchedClaim>,
    /// Nodes cordoned.
    pub cordoned: Vec<String>,
    /// Nodes made schedulable again (their disruption was abandoned).
    pub uncordoned: Vec<String>,
    /// (pod, node) evicted.
    pub evicted: Vec<(String, String)>,
    /// Nodes whose instance was terminated and NodeClaim deleted, and why.
    pub terminated: Vec<(String, Reason)>,
    /// Consolidation plans made by plugins.
    pub plugin_decisions: usize,
    /// Consolidation plans made by `karpenter-like` after a plugin failed.
    pub fallbacks: usize,
    /// When the next pass has something to do (a staged action comes due,
    /// a blocked eviction is retried); passes on an interval also do.
    pub next_wakeup: Option<Duration>,
}

/// Totals since the controller started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DisruptionCounts {
    /// Nodes removed, by reason.
    pub nodes: BTreeMap<Reason, u64>,
    /// Actions started, by reason.
    pub actions: BTreeMap<Reason, u64>,
    /// Actions rejected, by kind.
    pub rejected: BTreeMap<RejectKind, u64>,
    /// Actions rejected, by the validation rule that rejected them.
    pub rejected_by_rule: BTreeMap<&'static str, u64>,
    /// Pods evicted.
    pub pods_evicted: u64,
    /// Disruptions abandoned (the replacement failed or never became ready).
    pub abandoned: u64,
    /// Passes run.
    pub passes: u64,
    /// Passes skipped: nothing had changed since a pass that found nothing.
    pub passes_skipped: u64,
    /// Passes that only moved running disruptions on (woken between two
    /// [`DisruptionSettings::poll_interval`]s, with no staged action due).
    pub drain_passes: u64,
}

/// What a pass that found nothing to do saw: while the same key holds and
/// no node reaches `consolidateAfter` or `expireAfter`, the next pass would
/// find nothing again.
struct Idle {
    key: u64,
    until: Duration,
    pools: Vec<NodePool>,
}

/// What the actions accepted so far in a pass have claimed: nodes taken
/// (with the disruptions already running), per-pool budget used, and the
/// replacements they will add. Each further action is checked on top.
#[derive(Default)]
struct Pass {
    taken: BTreeSet<String>,
    used: BTreeMap<String, usize>,
    extras: Vec<crate::scheduling::ExistingNode>,
}

impl Pass {
    fn accept(&mut self, view: &View, command: &Command) {
        *self.used.entry(command.node_pool.clone()).or_default() += command.nodes.len();
        self.taken.extend(command.nodes.iter().cloned());
        if let (Replacement::Offering(o), Some(pool)) = (&command.replacement, view.pool(&command.node_pool)) {
            let name = format!("replacement-{}", self.extras.len());
            self.extras.extend(view.new_node(pool, *o, &name));
        }
    }
}

struct Running {
    command: Command,
    replacements: Vec<String>,
    started: Duration,
    drain_since: Option<Duration>,
    next_attempt: Duration,
    backoff: Duration,
}

/// The offerings a pool's replacement may be, in the orders consolidation
/// reads them ([`Choice`] borrows them).
#[derive(Clone)]
struct Replacements {
    /// Ascending.
    allowed: Arc<Vec<u32>>,
    /// Cheapest first.
    by_price: Arc<Vec<u32>>,
    /// Along `by_price`: the most of each resource any offering up to there holds.
    reach: Arc<Vec<Resources>>,
    /// Largest first.
    largest_first: Arc<Vec<u32>>,
    /// Every on-demand one has a spot twin among them ([`Choice::spot_twins`]).
    spot_twins: bool,
}

/// Replacement lists remembered per NodePool.
const REMEMBERED_LISTS: usize = 8;

/// Decides and carries out disruptions: expiry, drift, consolidation.
pub struct DisruptionController<C, K> {
    cloud: Arc<C>,
    cluster: Arc<K>,
    provisioner: Arc<Provisioner<C, K>>,
    registry: Arc<PolicyRegistry>,
    settings: DisruptionSettings,
    clock: Clock,
    /// Node → (fingerprint of its pods, when they last changed).
    seen: HashMap<String, (u64, Duration)>,
    staged: Vec<(Command, Duration)>,
    running: Vec<Running>,
    /// Pool → fingerprint of the state its last plan found nothing to do
    /// in, and the NodePool as it was then (built-in consolidation only).
    quiet: HashMap<String, (u64, NodePool)>,
    /// Pool → (key, offerings it may launch that its selection policy
    /// accepts: ascending, and cheapest first), the most recent first, at
    /// most [`REMEMBERED_LISTS`]: offerings are benched and come back, and
    /// the same sets recur.
    replacements: std::sync::Mutex<HashMap<String, Vec<(u64, Replacements)>>>,
    idle: Option<Idle>,
    /// When the last pass decided new actions.
    last_plan: Option<Duration>,
    /// Events of the pass not yet recorded (rejections are decided where
    /// nothing is awaited).
    events: Vec<ClusterEvent>,
    counts: DisruptionCounts,
    /// What each node's pods add up to, kept from pass to pass.
    memo: Arc<crate::scheduling::NodeMemo>,
}

impl<C: CloudProvider, K: Cluster> DisruptionController<C, K> {
    /// A controller acting through `provisioner` (whose cloud, cluster,
    /// registry and clock it shares).
    pub fn new(provisioner: Arc<Provisioner<C, K>>, cluster: Arc<K>, settings: DisruptionSettings) -> Self {
        DisruptionController {
            cloud: provisioner.cloud().clone(),
            registry: provisioner.registry().clone(),
            clock: provisioner.clock(),
            cluster,
            provisioner,
            settings,
            seen: HashMap::default(),
            staged: Vec::new(),
            running: Vec::new(),
            quiet: HashMap::default(),
            replacements: std::sync::Mutex::new(HashMap::default()),
            idle: None,
            last_plan: None,
            events: Vec::new(),
            counts: DisruptionCounts::default(),
            memo: Arc::default(),
        }
    }

    /// Totals so far.
    pub fn counts(&self) -> &DisruptionCounts {
        &self.counts
    }

    /// Nodes being disrupted now.
    pub fn in_progress(&self) -> Vec<String> {
        self.running.iter().flat_map(|r| r.command.nodes.iter().cloned()).collect()
    }

    /// One pass (see the module documentation). A pass is skipped when
    /// nothing is staged or running and nothing it reads has changed since
    /// a pass that found nothing to do: the cluster's [`Cluster::revision`],
    /// the catalog, the benched offerings, the policies in the NodePools'
    /// slots, which disruption budgets are in force, and no node has
    /// reached its `consolidateAfter` or `expireAfter` since; and only when
    /// no NodePool's consolidation is a plugin's (which may read node ages,
    /// pending pods, the fleet).
    ///
    /// New actions are decided at most once per
    /// [`DisruptionSettings::poll_interval`], and when staged actions come
    /// due; a pass in between only moves the running disruptions on (waits
    /// for replacements, drains, terminates) and reads only their nodes.
    pub async fn reconcile(&mut self) -> Result<DisruptionReport, ClusterError> {
        let now = (self.clock)();
        let due_any = self.staged.iter().any(|(_, at)| at.saturating_add(self.settings.validation_delay) <= now);
        let plan_due = self.last_plan.is_none_or(|at| now >= at.saturating_add(self.settings.poll_interval));
        if !(due_any || self.staged.is_empty() && plan_due) {
            self.counts.drain_passes += 1;
            let mut report = DisruptionReport::default();
            let pools = if self.running.is_empty() { Vec::new() } else { self.cluster.node_pools().await? };
            self.advance(now, &pools, &mut report).await?;
            report.next_wakeup = self.next_wakeup(now);
            return Ok(report);
        }
        let revision = self.cluster.revision();
        if self.staged.is_empty()
            && self.running.is_empty()
            && let Some(idle) = &self.idle
            && now < idle.until
            && self.idle_key(revision, &idle.pools, now) == Some(idle.key)
        {
            self.counts.passes_skipped += 1;
            return Ok(DisruptionReport::default());
        }
        self.idle = None;
        self.counts.passes += 1;
        let mut report = DisruptionReport::default();
        let view = self.read(now).await?;
        self.write_conditions(&view).await?;
        let mut pass = Pass { taken: self.in_progress().into_iter().collect(), ..Pass::default() };
        // Actions that have waited long enough: valid still → start.
        let (due, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.staged).into_iter().partition(|(_, at)| *at + self.settings.validation_delay <= now);
        self.staged = waiting;
        for (command, _) in due {
            match self.validate(&view, &command, &pass) {
                Ok(()) => {
                    pass.accept(&view, &command);
                    self.start(&view, command, &mut report).await?;
                }
                Err((rule, kind, message)) => {
                    let message = format!("no longer valid after the {:?} wait: {message}", self.settings.validation_delay);
                    self.reject(command, rule, kind, message, &mut report);
                }
            }
        }
        self.terminate_deleted(&view, &mut pass, &mut report).await?;
        if self.staged.is_empty() {
            self.last_plan = Some(now);
            self.plan(&view, &mut pass, &mut report).await?;
        }
        self.advance(now, &view.pools, &mut report).await?;
        if self.staged.is_empty() && self.running.is_empty() && report.started.is_empty() && report.terminated.is_empty()
            && !self.plugin_consolidates(&view.pools)
            && let Some(key) = self.idle_key(revision, &view.pools, now)
        {
            self.idle = Some(Idle { key, until: Self::next_deadline(&view), pools: view.pools.clone() });
        }
        report.next_wakeup = self.next_wakeup(now);
        for event in std::mem::take(&mut self.events) {
            self.cluster.record_event(event).await?;
        }
        Ok(report)
    }

    /// The termination controller's pass, on its own trigger beside
    /// [`Self::reconcile`]: NodeClaims being deleted (by a person, their
    /// Node deleted, an interruption a PDB held) start their way out at
    /// once, and running disruptions move on — replacement ready, evict,
    /// terminate, release. No disruption is decided here; the whole cluster
    /// is read only when some claim is being deleted.
    pub async fn terminate_pass(&mut self) -> Result<DisruptionReport, ClusterError> {
        let now = (self.clock)();
        let mut report = DisruptionReport::default();
        let claims = self.cluster.node_claims().await?;
        let in_progress = self.in_progress();
        let mut pools = Vec::new();
        if claims.iter().any(|c| c.deleting && !in_progress.contains(&c.name)) {
            let view = self.read(now).await?;
            let mut pass = Pass { taken: in_progress.into_iter().collect(), ..Pass::default() };
            self.terminate_deleted(&view, &mut pass, &mut report).await?;
            pools = view.pools;
        } else if !self.running.is_empty() {
            pools = self.cluster.node_pools().await?;
        }
        self.advance(now, &pools, &mut report).await?;
        for event in std::mem::take(&mut self.events) {
            self.cluster.record_event(event).await?;
        }
        report.next_wakeup = self.next_wakeup(now);
        Ok(report)
    }

    /// When the next pass has something to do: a staged action comes due,
    /// a drain is retried, a replacement may be ready.
    fn next_wakeup(&self, now: Duration) -> Option<Duration> {
        let staged_due = self.staged.iter().map(|(_, at)| at.saturating_add(self.settings.validation_delay));
        let retries = self.running.iter().map(|r| {
            if r.drain_since.is_some() {
                r.next_attempt.max(now.saturating_add(Duration::from_secs(1)))
            } else {
                now.saturating_add(self.settings.eviction_backoff)
            }
        });
        staged_due.chain(retries).min()
    }

    /// Everything besides the cluster's contents that a pass's answer
    /// depends on, with the cluster's revision; `None` if the cluster
    /// cannot tell its revision.
    fn idle_key(&self, revision: Option<u64>, pools: &[NodePool], now: Duration) -> Option<u64> {
        let revision = revision?;
        let benched = super::fit::set_digest(self.cloud.unavailable());
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (revision, self.cloud.catalog().version, benched, self.cloud.drift_generation()).hash(&mut hasher);
        for pool in pools {
            let generation = |slot: String| self.registry.slot(&slot).map(|s| s.generation());
            (generation(consolidation_slot(&pool.name)), generation(selection_slot(&pool.name)), budget::in_force(pool, now)).hash(&mut hasher);
        }
        Some(hasher.finish())
    }

    /// `pool`'s slot for `role`, running the policy the NodePool names (loaded
    /// when that changed; a load that fails is logged once, and the slot
    /// keeps its previous policy).
    fn slot_for(&self, pool: &NodePool, role: Role) -> Arc<crate::policy::PolicySlot> {
        let (name, reference, what) = match role {
            Role::Selection => (selection_slot(&pool.name), &pool.selection, "selection"),
            Role::Consolidation => (consolidation_slot(&pool.name), &pool.consolidation, "consolidation"),
        };
        let (slot, error) = self.registry.configure(&name, role, reference);
        if let Some(e) = error {
            tracing::error!(node_pool = %pool.name, "{what} plugin not loaded, the slot keeps its previous policy: {e}");
        }
        slot
    }

    /// Whether a plugin plans consolidation for some NodePool that
    /// consolidates: it may read what no skip follows (node ages, pending
    /// pods, the fleet), so no pass is skipped for it.
    fn plugin_consolidates(&self, pools: &[NodePool]) -> bool {
        pools.iter().filter(|p| p.consolidate_after.is_some()).any(|p| {
            p.consolidation.plugin != crate::policy::BUILTIN_SELECTION
                || self.registry.slot(&consolidation_slot(&p.name)).is_some_and(|s| s.runs_plugin())
        })
    }

    /// The first time a node of `view` reaches its NodePool's
    /// `consolidateAfter` or `expireAfter` (the end of time if none will).
    fn next_deadline(view: &View) -> Duration {
        let mut until = Duration::MAX;
        for member in &view.members {
            let Some(pool) = view.pool(member.pool()) else { continue };
            if let Some(after) = pool.consolidate_after
                && member.idle_for < after
                && let Some(at) = view.now.checked_sub(member.idle_for).and_then(|since| since.checked_add(after))
            {
                until = until.min(at);
            }
            if let Some(at) = pool.expire_after.and_then(|e| member.claim.created_at.checked_add(e)) {
                until = until.min(at);
            }
        }
        until
    }

    async fn read(&mut self, now: Duration) -> Result<View, ClusterError> {
        let catalog = self.cloud.catalog();
        let pools = self.cluster.node_pools().await?;
        let daemonsets = self.cluster.daemonsets().await?;
        let nodes = self.cluster.nodes().await?;
        let claims = self.cluster.node_claims().await?;
        let pdbs = self.cluster.pod_disruption_budgets().await?;
        let pending = u32::try_from(self.cluster.pending_count().await?).unwrap_or(u32::MAX);
        let fleet = self.provisioner.fleet().observe(
            &catalog,
            claims.iter().filter_map(|c| c.instance.as_ref().map(|i| (c.node_pool.as_str(), i.offering))),
            now,
        );
        // What the cloud says no longer matches its node class (a new AMI, …).
        let launched: Vec<&crate::model::Instance> = claims.iter().filter_map(|c| c.instance.as_ref()).collect();
        let mut drifted = self.cloud.drifted(&launched).await.unwrap_or_else(|e| {
            tracing::warn!("drift from the node class not checked this pass: {e}");
            std::collections::HashMap::new()
        });
        let mut bound = self.cluster.bound_pods_by_node().await?;
        let index: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
        let mut members = Vec::new();
        let mut alive = HashMap::default();
        let mut deleting = Vec::new();
        for claim in claims {
            if claim.deleting && claim.instance.is_none() {
                deleting.push(claim.name);
                continue;
            }
            let (Some(instance), true) = (&claim.instance, index.contains_key(&claim.name)) else { continue };
            let crate::model::BoundPods { pods, digest: fingerprint } = bound.remove(&claim.name).unwrap_or_default();
            let since = match self.seen.get(&claim.name) {
                Some(&(f, since)) if f == fingerprint => since,
                _ => now,
            };
            alive.insert(claim.name.clone(), (fingerprint, since));
            let drift = drifted.remove(&instance.id);
            members.push(Member { offering: instance.offering, claim, pods, idle_for: now.saturating_sub(since), drift });
        }
        self.seen = alive;
        let (used, free, free_total) = free_capacity(&nodes, &self.memo);
        let drift_hashes = pools.iter().map(|p| (p.name.clone(), p.drift_hash())).collect();
        let unavailable: rustc_hash::FxHashSet<u32> = self.cloud.unavailable().into_iter().collect();
        let node_count = nodes.len();
        Ok(View {
            catalog,
            pools,
            drift_hashes,
            daemonsets,
            nodes: std::sync::Mutex::new(nodes),
            index,
            used,
            cache: NodeCache::with_memo(node_count, self.memo.clone()),
            free,
            free_total,
            members,
            deleting,
            pdbs,
            unavailable_digest: super::fit::set_digest(unavailable.iter().copied()),
            unavailable,
            now,
            fleet,
            pending,
        })
    }

    /// What each node's NodeClaim says of its disruption — drifted (and
    /// why), consolidatable, empty — written where it changed.
    async fn write_conditions(&self, view: &View) -> Result<(), ClusterError> {
        use super::methods::{Consolidation, Method};
        for member in &view.members {
            let pool = view.pool(member.pool());
            let claim = &member.claim;
            let pool_drifted = pool.is_some()
                && !claim.pool_hash.is_empty()
                && view.drift_hashes.get(member.pool()).is_some_and(|h| *h != claim.pool_hash);
            let next = crate::model::ClaimConditions {
                drifted: member.drift.clone().or_else(|| pool_drifted.then(|| "NodePoolDrifted".to_string())),
                consolidatable: Consolidation.candidate(pool, member, view.now, "").is_ok(),
                empty: member.pods.is_empty(),
                disruption: claim.conditions.disruption.clone(),
            };
            if next != claim.conditions {
                self.cluster.write_claim_conditions(member.name(), &next).await?;
            }
        }
        Ok(())
    }

    /// Set (`Some`) or clear the reason NodeClaim `name` is being disrupted for.
    async fn mark_disruption(&self, view: &View, name: &str, reason: Option<Reason>) -> Result<(), ClusterError> {
        let Some(member) = view.members.iter().find(|m| m.name() == name) else { return Ok(()) };
        let mut next = member.claim.conditions.clone();
        // An interruption's deletion keeps saying it was interrupted.
        if reason == Some(Reason::Deleted) && next.disruption.as_deref() == Some(crate::interruption::INTERRUPTED) {
            return Ok(());
        }
        next.disruption = reason.map(|r| r.label().to_string());
        if next != member.claim.conditions {
            self.cluster.write_claim_conditions(name, &next).await?;
        }
        Ok(())
    }

    /// Nodes of `pool` being disrupted: by running disruptions, and by the
    /// actions accepted so far in `pass`. They count against its budgets.
    fn busy(&self, pool: &str, pass: &Pass) -> usize {
        self.running.iter().filter(|r| r.command.node_pool == pool).map(|r| r.command.nodes.len()).sum::<usize>()
            + pass.used.get(pool).copied().unwrap_or(0)
    }


    fn reject(&mut self, command: Command, rule: &'static str, kind: RejectKind, message: String, report: &mut DisruptionReport) {
        tracing::info!(node_pool = %command.node_pool, nodes = ?command.nodes, reason = ?command.reason, ?kind, rule, "disruption rejected: {message}");
        for node in &command.nodes {
            self.events.push(ClusterEvent {
                object: EventObject::NodeClaim(node.clone()),
                warning: false,
                reason: "DisruptionBlocked",
                message: format!("{} not disrupted ({rule}): {message}", command.reason.label()),
            });
        }
        *self.counts.rejected.entry(kind).or_default() += 1;
        *self.counts.rejected_by_rule.entry(rule).or_default() += 1;
        report.rejected.push(Rejection { command, kind, rule, message });
    }

    /// NodeClaims whose deletion was asked for (by a person, or by another
    /// controller) go the way every disruption goes, at once and whatever
    /// the budgets: cordon, a replacement for their pods, a drain through
    /// the PDBs (forced after `terminationGracePeriod`), the instance
    /// terminated, then the claim released. One recorded without an
    /// instance is released at once, once the terminator has ended any
    /// instance tagged with its name ([`Terminator::release_unrecorded`]).
    ///
    /// [`Terminator::release_unrecorded`]: crate::termination::Terminator::release_unrecorded
    async fn terminate_deleted(&mut self, view: &View, pass: &mut Pass, report: &mut DisruptionReport) -> Result<(), ClusterError> {
        for name in self.provisioner.terminator().release_unrecorded(&view.deleting).await? {
            tracing::info!(node = %name, "deleted NodeClaim released: it had no instance");
            *self.counts.nodes.entry(Reason::Deleted).or_default() += 1;
            report.terminated.push((name, Reason::Deleted));
        }
        use super::methods::{Deletion, Method};
        for member in &view.members {
            if Deletion.candidate(view.pool(member.pool()), member, view.now, "").is_err() || pass.taken.contains(member.name()) {
                continue;
            }
            // Rejected, it is tried again next pass (its pods may fit nowhere yet).
            self.replace_node(view, member, Reason::Deleted, pass, report).await?;
        }
        Ok(())
    }

    /// Replace `member` for `reason` (its pods provisioned for): if valid
    /// on top of `pass`, accepted and, for expiry and deletion, started at
    /// once (returns `None`), otherwise returned to be staged; if not, rejected.
    async fn replace_node(
        &mut self,
        view: &View,
        member: &Member,
        reason: Reason,
        pass: &mut Pass,
        report: &mut DisruptionReport,
    ) -> Result<Option<Command>, ClusterError> {
        let command = Command {
            reason,
            node_pool: member.pool().to_string(),
            nodes: vec![member.name().into()],
            replacement: Replacement::Provision,
            savings_per_hour: 0.0,
        };
        // A deleted claim whose NodePool is gone (deleted with its claims)
        // has nothing to be checked against: it goes.
        let checked = if reason == Reason::Deleted && view.pool(member.pool()).is_none() { Ok(()) } else { self.validate(view, &command, pass) };
        match checked {
            Ok(()) => {
                pass.accept(view, &command);
                if super::methods::of(reason).forceful() {
                    self.start(view, command, report).await?;
                    return Ok(None);
                }
                Ok(Some(command))
            }
            Err((rule, kind, message)) => {
                self.reject(command, rule, kind, message, report);
                Ok(None)
            }
        }
    }

    /// Decide new actions, method by method ([`super::methods::METHODS`]):
    /// those replacing nodes one at a time (expiry, started at once; drift),
    /// then the NodePools' consolidation policies over what is left.
    async fn plan(&mut self, view: &View, pass: &mut Pass, report: &mut DisruptionReport) -> Result<(), ClusterError> {
        use super::methods::{METHODS, Plan};
        let mut staged = Vec::new();
        for member in &view.members {
            let Some(pool) = view.pool(member.pool()) else { continue };
            if pass.taken.contains(member.name()) || member.claim.deleting {
                continue;
            }
            let hash = view.drift_hashes.get(&pool.name).map_or("", String::as_str);
            let mut replacing = METHODS.iter().filter(|m| m.plan() == Plan::ReplaceEach);
            let Some(method) = replacing.find(|m| m.candidate(Some(pool), member, view.now, hash).is_ok()) else { continue };
            // A drifted node the budget holds back is tried again next pass.
            staged.extend(self.replace_node(view, member, method.reason(), pass, report).await?);
        }
        for method in METHODS.iter().filter(|m| m.plan() == Plan::Policy) {
            for pool in &view.pools {
                if pool.consolidate_after.is_none() {
                    continue;
                }
                staged.extend(self.consolidate(*method, view, pool, pass, report));
            }
        }
        let now = view.now;
        for command in staged {
            tracing::info!(node_pool = %command.node_pool, nodes = ?command.nodes, reason = ?command.reason, "disruption decided, re-validated in {:?}", self.settings.validation_delay);
            report.staged.push(command.clone());
            self.staged.push((command, now));
        }
        Ok(())
    }

    /// Ask `pool`'s consolidation policy for a plan over `method`'s
    /// candidates and keep the valid actions.
    fn consolidate(&mut self, method: &dyn super::methods::Method, view: &View, pool: &NodePool, pass: &mut Pass, report: &mut DisruptionReport) -> Vec<Command> {
        let taken = pass.taken.clone();
        let members: Vec<usize> = (0..view.members.len()).filter(|&i| view.members[i].pool() == pool.name).collect();
        let candidate: Vec<bool> = members
            .iter()
            .map(|&i| {
                let m = &view.members[i];
                !taken.contains(m.name()) && !m.pods.iter().any(|p| p.spec.do_not_disrupt) && method.candidate(Some(pool), m, view.now, "").is_ok()
            })
            .collect();
        if !candidate.contains(&true) {
            return Vec::new();
        }
        // The pool's policies as its spec names them now, before anything
        // is compared with a past pass.
        let slot = self.slot_for(pool, Role::Consolidation);
        let selection = self.slot_for(pool, Role::Selection);
        let pool_nodes = members.len();
        let busy = self.busy(&pool.name, pass);
        let room = |reason: Reason| {
            budget::allowed(pool, reason, pool_nodes, view.now).map_or(usize::MAX, |a| (a as usize).saturating_sub(busy))
        };
        // What the built-in plan reads: the NodePool, the candidates and
        // their pods (by name), what every node holds and whether it takes
        // pods, the offerings benched, the room the budgets leave, and the
        // versions of the pool's policies. A plugin may read more (node
        // ages, pending pods, the fleet): its plan is never skipped.
        let skips = !slot.runs_plugin();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (view.catalog.version, &candidate, taken.len(), view.unavailable_digest).hash(&mut hasher);
        (room(Reason::Empty), room(Reason::Underutilized)).hash(&mut hasher);
        for &i in &members {
            let m = &view.members[i];
            (m.name(), self.seen.get(m.name()).map(|&(pods, _)| pods), &m.claim.pool_hash).hash(&mut hasher);
        }
        view.used.hash(&mut hasher);
        view.free.hash(&mut hasher);
        view.pdbs.iter().for_each(|p| p.disruptions_allowed.hash(&mut hasher));
        (slot.generation(), selection.generation()).hash(&mut hasher);
        let fingerprint = hasher.finish();
        if skips && self.quiet.get(&pool.name).is_some_and(|(f, p)| *f == fingerprint && p == pool) {
            return Vec::new();
        }
        let Replacements { allowed: replacements, by_price, reach, largest_first, spot_twins } = self.replacement_lists(view, pool);
        // Pod facts and the fleet only for a plugin that reads them (0.3.0).
        let rich = slot.reads_fleet();
        let snapshot = || ConsolidationSnapshot {
            node_pool: pool.name.clone(),
            nodes: members
                .iter()
                .zip(&candidate)
                .map(|(&i, &disruptable)| {
                    let m = &view.members[i];
                    SnapshotNode {
                        name: m.name().into(),
                        offering: m.offering,
                        age_seconds: view.now.saturating_sub(m.claim.created_at).as_secs(),
                        pods: m.pods.iter().map(|p| p.spec.requests).collect(),
                        facts: if rich { m.pods.iter().map(|p| view.facts(p, pool)).collect() } else { Vec::new() },
                        disruptable,
                    }
                })
                .collect(),
            replacements: replacements.to_vec(),
            budget_left: u32::try_from(room(Reason::Underutilized).min(pool_nodes)).unwrap_or(u32::MAX),
            pending_pods: view.pending,
            fleet: if rich { view.fleet.clone() } else { Arc::default() },
        };
        slot.prepare(&view.catalog);
        let choice = Choice {
            allowed: &replacements,
            by_price: &by_price,
            reach: &reach,
            largest_first: &largest_first,
            spot_twins,
            choose: &|pods: &[Pod], total: Resources, feasible: Vec<u32>| self.choose(view, pool, pods, total, feasible),
        };
        let decision = slot.plan_with(&view.catalog, snapshot, || karpenter_like(view, pool, &members, &candidate, &self.settings, room, &choice));
        match decision.by {
            DecidedBy::Plugin(_) => report.plugin_decisions += 1,
            DecidedBy::Fallback { .. } => report.fallbacks += 1,
            DecidedBy::Builtin => {}
        }
        let mut accepted = Vec::new();
        for action in decision.value {
            let (indices, replacement) = match action {
                ConsolidationAction::Delete { nodes } => (nodes, Replacement::None),
                ConsolidationAction::Replace { nodes, offering } => (nodes, Replacement::Offering(offering)),
            };
            let chosen: Vec<&Member> = indices.iter().map(|&i| &view.members[members[i as usize]]).collect();
            let empty = chosen.iter().all(|m| m.pods.is_empty());
            let current: f64 = chosen.iter().map(|m| view.price(m.offering)).sum();
            let command = Command {
                reason: if empty && replacement == Replacement::None { Reason::Empty } else { Reason::Underutilized },
                node_pool: pool.name.clone(),
                nodes: chosen.iter().map(|m| m.name().to_string()).collect(),
                savings_per_hour: current - if let Replacement::Offering(o) = replacement { view.price(o) } else { 0.0 },
                replacement,
            };
            match self.validate(view, &command, pass) {
                Ok(()) => {
                    pass.accept(view, &command);
                    accepted.push(command);
                }
                Err((rule, kind, message)) => self.reject(command, rule, kind, message, report),
            }
        }
        if accepted.is_empty() && skips {
            self.quiet.insert(pool.name.clone(), (fingerprint, pool.clone()));
        } else {
            self.quiet.remove(&pool.name);
        }
        accepted
    }

    /// The offerings `pool` may launch now that its selection policy
    /// accepts (ranks at all), ascending; remembered by the catalog, the
    /// pool, the benched offerings and the version of the pool's selection
    /// slot, and for a plugin that reads the fleet the pending pods and the
    /// fleet's version too (the last [`REMEMBERED_LISTS`] of them). A replacement is one of
    /// these, so consolidation never buys what the pool's policy would not.
    fn replacements(&self, view: &View, pool: &NodePool) -> Arc<Vec<u32>> {
        self.replacement_lists(view, pool).allowed
    }

    /// [`Self::replacements`], and the same offerings cheapest first and
    /// largest first (the catalog's order for new NodeClaims).
    fn replacement_lists(&self, view: &View, pool: &NodePool) -> Replacements {
        let slot = self.slot_for(pool, Role::Selection);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (view.catalog.version, &pool.requirements, &pool.labels, &pool.node_class, view.unavailable_digest, &pool.selection.plugin, &pool.selection.config)
            .hash(&mut hasher);
        slot.generation().hash(&mut hasher);
        // A plugin that reads the fleet (contract 0.3.0) is also handed the
        // pending pods and the fleet: what it accepts may follow them.
        if slot.reads_fleet() {
            (view.pending, view.fleet.version).hash(&mut hasher);
        }
        let key = hasher.finish();
        let mut cache = self.replacements.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entries) = cache.get_mut(&pool.name)
            && let Some(at) = entries.iter().position(|(k, _)| *k == key)
        {
            let entry = entries.remove(at);
            let lists = entry.1.clone();
            entries.insert(0, entry);
            return lists;
        }
        let mut list = view.replacements(pool);
        slot.prepare(&view.catalog);
        let request = SelectionRequest {
            node_pool: pool.name.clone(),
            feasible: list.clone(),
            pending_pods: view.pending,
            fleet: view.fleet.clone(),
            ..SelectionRequest::default()
        };
        // What the policy accepts (it leaves out what it would never buy),
        // marked by catalog index: a ranking holds feasible offerings only
        // (the host checks), so these are the list's.
        let mut accepted = vec![false; view.catalog.offerings.len()];
        for (o, _) in slot.rank(&view.catalog, &request).value.entries() {
            if let Some(a) = accepted.get_mut(o as usize) {
                *a = true;
            }
        }
        let accepted = |&o: &u32| accepted.get(o as usize).copied().unwrap_or(false);
        list.retain(accepted);
        // The catalog's orders, filtered: no sort per list.
        let by_price: Vec<u32> = view.catalog.cheapest_first.iter().copied().filter(accepted).collect();
        let reach = by_price
            .iter()
            .scan(Resources::default(), |most, &o| {
                *most = most.max_each(view.catalog.fit[o as usize].allocatable);
                Some(*most)
            })
            .collect();
        let largest_first = view.catalog.largest_first.iter().copied().filter(accepted).collect();
        let spot_twins = super::karpenter::spot_twins(&view.catalog, &list);
        let lists = Replacements {
            allowed: Arc::new(list),
            by_price: Arc::new(by_price),
            reach: Arc::new(reach),
            largest_first: Arc::new(largest_first),
            spot_twins,
        };
        let entries = cache.entry(pool.name.clone()).or_default();
        entries.insert(0, (key, lists.clone()));
        entries.truncate(REMEMBERED_LISTS);
        lists
    }

    /// The best of `feasible` for `pods` (requesting `total`) by `pool`'s
    /// selection policy.
    fn choose(&self, view: &View, pool: &NodePool, pods: &[Pod], total: Resources, feasible: Vec<u32>) -> Option<u32> {
        let (slot, _) = self.registry.configure(&selection_slot(&pool.name), Role::Selection, &pool.selection);
        let rich = slot.reads_fleet();
        let request = SelectionRequest {
            node_pool: pool.name.clone(),
            pods: pods.iter().map(|p| p.spec.requests).collect(),
            facts: if rich { pods.iter().map(|p| view.facts(p, pool)).collect() } else { Vec::new() },
            total,
            feasible,
            pending_pods: view.pending,
            fleet: view.fleet.clone(),
        };
        slot.rank(&view.catalog, &request).value.into_best(1).first().map(|&(o, _)| o)
    }

    /// Cordon the nodes and launch the replacement.
    async fn start(&mut self, view: &View, command: Command, report: &mut DisruptionReport) -> Result<(), ClusterError> {
        let now = view.now;
        // Why, on each NodeClaim (for `nodewright explain`; informational).
        let consolidation = view.pool(&command.node_pool).map_or_else(|| "?".to_string(), |p| p.consolidation.plugin.clone());
        let why = super::explain::DisruptionExplanation::started(&command, &consolidation, &view.catalog).to_annotation();
        for node in &command.nodes {
            self.cluster.cordon(node).await?;
            self.mark_disruption(view, node, Some(command.reason)).await?;
            if let Err(e) = self.cluster.write_claim_annotation(node, super::explain::DISRUPTION_ANNOTATION, &why).await {
                tracing::warn!(claim = %node, "the disruption was not written on the NodeClaim: {e}");
            }
            report.cordoned.push(node.clone());
        }
        let pods: Vec<Pod> = view.pods_of(&command.nodes).cloned().collect();
        let moving: BTreeSet<&str> = pods.iter().map(|p| &*p.name).collect();
        let mut replacements = Vec::new();
        match command.replacement {
            Replacement::None => {}
            Replacement::Offering(offering) => {
                let Some(pool) = view.pool(&command.node_pool) else {
                    // Validated against this view a moment ago; a NodePool
                    // gone since is an abandoned disruption, not a crash.
                    tracing::warn!(node_pool = %command.node_pool, "NodePool is gone, disruption abandoned");
                    self.abandon(&command, report).await?;
                    return Ok(());
                };
                let overhead = view.new_node(pool, offering, "replacement").map(|n| n.used()).unwrap_or_default();
                let requests = pods.iter().map(|p| p.spec.requests).sum::<crate::model::Resources>().saturating_add(overhead);
                let spec = ClaimSpec {
                    pool,
                    offerings: vec![offering],
                    pods: moving.iter().map(|p| p.to_string()).collect(),
                    requests,
                    catalog_version: view.catalog.version,
                };
                match self.provisioner.launch_claim(spec).await? {
                    Ok(launched) => {
                        replacements.push(launched.claim.clone());
                        report.launched.push(launched);
                    }
                    Err((claim, e)) => {
                        tracing::info!(claim, "replacement launch failed, disruption abandoned: {e}");
                        self.abandon(&command, report).await?;
                        return Ok(());
                    }
                }
            }
            Replacement::Provision => {
                let launched = self.provisioner.provision_with(pods.clone()).await?.launched;
                for claim in launched {
                    if claim.pods.iter().any(|p| moving.contains(p.as_str())) {
                        replacements.push(claim.claim.clone());
                    }
                    report.launched.push(claim);
                }
            }
        }
        tracing::info!(node_pool = %command.node_pool, nodes = ?command.nodes, reason = ?command.reason, ?replacements, "disruption started");
        let replacing = if replacements.is_empty() { String::new() } else { format!(", replaced by {}", replacements.join(", ")) };
        for node in &command.nodes {
            let message = format!("{}{replacing}; saves ${:.4}/h", command.reason.label(), command.savings_per_hour);
            self.cluster.record_event(ClusterEvent { object: EventObject::NodeClaim(node.clone()), warning: false, reason: "Disrupting", message }).await?;
        }
        *self.counts.actions.entry(command.reason).or_default() += 1;
        report.started.push(command.clone());
        let drain_since = replacements.is_empty().then_some(now);
        self.running.push(Running {
            command,
            replacements,
            started: now,
            drain_since,
            next_attempt: now,
            backoff: self.settings.eviction_backoff,
        });
        Ok(())
    }

    async fn abandon(&mut self, command: &Command, report: &mut DisruptionReport) -> Result<(), ClusterError> {
        for node in &command.nodes {
            self.cluster.uncordon(node).await?;
            if let Some(claim) = self.cluster.node_claim(node).await?
                && claim.conditions.disruption.is_some()
            {
                self.cluster.write_claim_conditions(node, &crate::model::ClaimConditions { disruption: None, ..claim.conditions }).await?;
            }
            report.uncordoned.push(node.clone());
        }
        self.counts.abandoned += 1;
        Ok(())
    }

    /// Move running disruptions on: wait for replacements, evict, terminate.
    /// It reads the NodeClaims and the pods of the nodes being drained,
    /// nothing else.
    async fn advance(&mut self, now: Duration, pools: &[NodePool], report: &mut DisruptionReport) -> Result<(), ClusterError> {
        if self.running.is_empty() {
            return Ok(());
        }
        // The claims of the nodes being disrupted and of their replacements.
        let mut claims: HashMap<String, crate::model::NodeClaim> = HashMap::default();
        let names: BTreeSet<String> = self.running.iter().flat_map(|r| r.command.nodes.iter().chain(&r.replacements)).cloned().collect();
        for name in names {
            if let Some(claim) = self.cluster.node_claim(&name).await? {
                claims.insert(name, claim);
            }
        }
        let mut still = Vec::new();
        for mut run in std::mem::take(&mut self.running) {
            if run.drain_since.is_none() {
                let lost = run.replacements.iter().find(|c| !claims.contains_key(*c));
                let late = now.saturating_sub(run.started) > self.settings.replacement_timeout;
                if lost.is_some() || late {
                    tracing::warn!(nodes = ?run.command.nodes, "replacement {} — disruption abandoned", if late { "not ready in time" } else { "is gone" });
                    self.abandon(&run.command, report).await?;
                    continue;
                }
                if !run.replacements.iter().all(|c| claims.get(c).is_some_and(|c| c.initialized)) {
                    still.push(run);
                    continue;
                }
                run.drain_since = Some(now);
            }
            if now < run.next_attempt {
                still.push(run);
                continue;
            }
            let since = run.drain_since.unwrap_or(now);
            let pool = pools.iter().find(|p| p.name == run.command.node_pool);
            let force = super::methods::of(run.command.reason).forceful()
                && pool.and_then(|p| p.termination_grace_period).is_some_and(|g| now.saturating_sub(since) >= g);
            let mut blocked = false;
            let mut remaining = Vec::new();
            for node in std::mem::take(&mut run.command.nodes) {
                match self.drain_node(claims.get(&node), &node, run.command.reason, force, report).await? {
                    Drained::Gone => {}
                    Drained::Waiting => remaining.push(node),
                    Drained::Blocked => {
                        blocked = true;
                        remaining.push(node);
                    }
                }
            }
            run.command.nodes = remaining;
            if run.command.nodes.is_empty() {
                continue;
            }
            if blocked {
                run.next_attempt = now + run.backoff;
                run.backoff = (run.backoff * 2).min(self.settings.max_eviction_backoff);
            } else {
                run.next_attempt = now;
            }
            still.push(run);
        }
        self.running = still;
        Ok(())
    }

    /// One drain step of `node` through the termination path: evict what
    /// is left on it; once nothing is, terminate its instance and then
    /// delete its NodeClaim.
    async fn drain_node(
        &mut self,
        claim: Option<&crate::model::NodeClaim>,
        node: &str,
        reason: Reason,
        force: bool,
        report: &mut DisruptionReport,
    ) -> Result<Drained, ClusterError> {
        let Some(claim) = claim else { return Ok(Drained::Gone) };
        // A node an interruption handed over ends counted as interrupted.
        let cause = match claim.conditions.disruption.as_deref() {
            Some(crate::interruption::INTERRUPTED) if reason == Reason::Deleted => crate::interruption::INTERRUPTED,
            _ => reason.label(),
        };
        match self.provisioner.terminator().drain(claim, cause, force).await? {
            crate::termination::Drained::Terminated => {
                tracing::info!(node, ?reason, "node disrupted");
                *self.counts.nodes.entry(reason).or_default() += 1;
                report.terminated.push((node.into(), reason));
                Ok(Drained::Gone)
            }
            crate::termination::Drained::TerminateFailed => Ok(Drained::Waiting),
            crate::termination::Drained::Evicting { evicted, blocked } => {
                self.counts.pods_evicted += evicted.len() as u64;
                report.evicted.extend(evicted.into_iter().map(|pod| (pod, node.to_string())));
                Ok(if blocked { Drained::Blocked } else { Drained::Waiting })
            }
        }
    }
}

enum Drained {
    /// Terminated and deleted (or already gone).
    Gone,
    /// Pods evicted; the node goes once they are gone.
    Waiting,
    /// Some evictions were refused.
    Blocked,
}
