//! Pending pods → batched → scheduled → each new NodeClaim's offerings
//! ranked by its NodePool's selection policy → launched through the
//! [`CloudProvider`].

mod batcher;
pub mod explain;
mod fleet;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

pub use batcher::{Batcher, BatcherSettings};
pub use fleet::{FleetTracker, HISTORY_WINDOW, NodeCounts};

use crate::cloud::{CloudProvider, LaunchRequest, SpotStrategy};
use crate::cluster::{Cluster, ClusterError, ClusterEvent, EventObject, NodeClaim};
use crate::model::Catalog;
use crate::policy::{DecidedBy, PodFacts, PolicyRegistry, Role, SelectionRequest};
use crate::scheduling::{Hints, SchedulingInput, schedule_hinted};

/// Most offerings handed to one launch (CreateFleet takes up to 60 overrides
/// per request in the shape nodewright uses).
pub const MAX_LAUNCH_OFFERINGS: usize = 60;

/// NodeClaim names drawn before a launch gives up (each taken name is one).
const MAX_NAME_DRAWS: usize = 8;

/// What one provisioning pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProvisioningReport {
    /// Pending pods considered.
    pub pods: usize,
    /// Pods that fit on existing or in-flight nodes.
    pub pods_on_existing: usize,
    /// (pod, node) for those pods: bind now if the node is ready, else when it is.
    pub bindings: Vec<(String, String)>,
    /// NodeClaims launched.
    pub launched: Vec<LaunchedClaim>,
    /// Launches that failed (the pods stay pending).
    pub launch_failures: Vec<(String, String)>,
    /// (pod, reason) for pods nothing can hold.
    pub unschedulable: Vec<(String, String)>,
    /// Selection decisions made by plugins.
    pub plugin_decisions: usize,
    /// Selection decisions made by the built-in policy after a plugin failed.
    pub fallbacks: usize,
}

/// A launched NodeClaim.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchedClaim {
    /// Claim name.
    pub claim: String,
    /// NodePool.
    pub node_pool: String,
    /// Pods nominated to it.
    pub pods: Vec<String>,
    /// Provider id of the instance.
    pub instance: String,
    /// Catalog index of the offering bought.
    pub offering: u32,
    /// Offerings offered to the launch, in policy order.
    pub candidates: usize,
    /// Why it was bought as it was (set by a provisioning pass).
    #[serde(skip)]
    pub explanation: Option<Box<explain::LaunchExplanation>>,
}

/// Turns pending pods into launched NodeClaims.
pub struct Provisioner<C, K> {
    cloud: Arc<C>,
    cluster: Arc<K>,
    registry: Arc<PolicyRegistry>,
    next_claim: AtomicU64,
    /// Seed of the random part of NodeClaim names.
    name_seed: u64,
    clock: Clock,
    fleet: Arc<FleetTracker>,
    terminator: Arc<crate::termination::Terminator<C, K>>,
    /// What each node's pods add up to, kept from pass to pass.
    memo: crate::scheduling::NodeMemo,
}

pub use crate::model::{Clock, system_clock};

/// A NodeClaim to create and launch: one node of a NodePool for some pods.
#[derive(Debug, Clone)]
pub struct ClaimSpec<'a> {
    /// The NodePool.
    pub pool: &'a crate::model::NodePool,
    /// Offerings the launch may use, most preferred first.
    pub offerings: Vec<u32>,
    /// Pods it is for.
    pub pods: Vec<String>,
    /// Their requests plus daemonset overhead.
    pub requests: crate::model::Resources,
    /// The version of the catalog `offerings` index.
    pub catalog_version: u64,
}

/// The registry slot of a NodePool's selection policy.
pub fn selection_slot(node_pool: &str) -> String {
    format!("{node_pool}/selection")
}

impl<C: CloudProvider, K: Cluster> Provisioner<C, K> {
    /// A provisioner over `cloud` and `cluster`, ranking with `registry`.
    pub fn new(cloud: Arc<C>, cluster: Arc<K>, registry: Arc<PolicyRegistry>) -> Self {
        Provisioner {
            terminator: Arc::new(crate::termination::Terminator::new(cloud.clone(), cluster.clone())),
            cloud,
            cluster,
            registry,
            next_claim: AtomicU64::new(0),
            name_seed: rand::random(),
            clock: system_clock(),
            fleet: Arc::default(),
            memo: crate::scheduling::NodeMemo::new(),
        }
    }

    /// Draw NodeClaim names from `seed` (the simulator's, so that a run is
    /// reproducible); by default every process draws its own.
    pub fn with_name_seed(mut self, seed: u64) -> Self {
        self.name_seed = seed;
        self
    }

    /// A fresh NodeClaim name for `pool`: `POOL-` and five random
    /// characters, as Karpenter's names (the API server's `generateName`
    /// alphabet), so that a restarted process or another replica does not
    /// reuse the names of claims that exist.
    fn claim_name(&self, pool: &str) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let n = self.next_claim.fetch_add(1, Ordering::Relaxed);
        let mut x = crate::model::stream::bits(self.name_seed, crate::model::stream::Stream::ClaimName, n, 0);
        let mut name = format!("{pool}-");
        for _ in 0..5 {
            name.push(ALPHABET[(x % ALPHABET.len() as u64) as usize] as char);
            x /= ALPHABET.len() as u64;
        }
        name
    }

    /// Tell policies about `commitments` (and how much of them the fleet uses).
    pub fn with_commitments(mut self, commitments: crate::model::Commitments) -> Self {
        self.fleet = Arc::new(FleetTracker::new(commitments));
        self
    }

    /// The one place instances are terminated and NodeClaims released.
    pub fn terminator(&self) -> &Arc<crate::termination::Terminator<C, K>> {
        &self.terminator
    }

    /// The fleet state policies are told about.
    pub fn fleet(&self) -> &Arc<FleetTracker> {
        &self.fleet
    }

    /// Read time from `clock` (the simulator's virtual clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Its clock.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Now, by the provisioner's clock.
    pub fn now(&self) -> std::time::Duration {
        (self.clock)()
    }

    /// The cloud it launches through.
    pub fn cloud(&self) -> &Arc<C> {
        &self.cloud
    }

    /// The registry it asks for selection decisions.
    pub fn registry(&self) -> &Arc<PolicyRegistry> {
        &self.registry
    }

    /// Record a NodeClaim for `spec` and launch it. On a failed launch the
    /// claim is deleted again and (claim, error) returned; when its NodePool
    /// was deleted since the pass read it, nothing is created or launched and
    /// (the name drawn, why) is returned, so the pass goes on with the others;
    /// when the claim was deleted while its instance launched, the instance
    /// is terminated and (claim, why) returned.
    pub async fn launch_claim(&self, spec: ClaimSpec<'_>) -> Result<Result<LaunchedClaim, (String, String)>, ClusterError> {
        let pool = spec.pool;
        let mut taints = pool.taints.clone();
        taints.extend(pool.startup_taints.iter().cloned());
        let pods: Arc<[String]> = spec.pods.clone().into();
        let offerings: Arc<[u32]> = spec.offerings.clone().into();
        let claim = |name: String| NodeClaim {
            name,
            node_pool: pool.name.clone(),
            pods: pods.clone(),
            requests: spec.requests,
            offerings: offerings.clone(),
            taints: taints.clone(),
            instance: None,
            created_at: self.now(),
            pool_hash: pool.drift_hash(),
            initialized: false,
            deleting: false,
            conditions: Default::default(),
        };
        // A name another process took is drawn again; the claim is recorded
        // before anything is launched, so a taken name never launches twice.
        let mut name = None;
        for _ in 0..MAX_NAME_DRAWS {
            let drawn = self.claim_name(&pool.name);
            match self.cluster.create_node_claim(claim(drawn.clone())).await? {
                crate::cluster::Created::Created => {
                    name = Some(drawn);
                    break;
                }
                crate::cluster::Created::NameTaken => tracing::info!(claim = %drawn, "NodeClaim name taken, drawing another"),
                crate::cluster::Created::NodePoolGone => {
                    let why = format!("NodePool {} was deleted: no NodeClaim created, its pods stay pending", pool.name);
                    tracing::info!(claim = %drawn, "{why}");
                    return Ok(Err((drawn, why)));
                }
            }
        }
        let Some(name) = name else {
            return Err(ClusterError(format!("NodePool {}: {MAX_NAME_DRAWS} NodeClaim names drawn were all taken", pool.name)));
        };
        let launch = LaunchRequest {
            claim: name.clone(),
            node_pool: pool.name.clone(),
            offerings: spec.offerings.clone(),
            requests: spec.requests,
            taints: taints.clone(),
            node_class: pool.node_class.clone(),
            catalog_version: Some(spec.catalog_version),
            // The native baseline launches spot as Karpenter does; a
            // plugin's ranking is followed as given.
            spot_strategy: if pool.selection.plugin == crate::policy::BUILTIN_SELECTION {
                SpotStrategy::PriceCapacityOptimized
            } else {
                SpotStrategy::Prioritized
            },
        };
        match self.cloud.launch(&launch).await {
            Ok(instance) => {
                let launched = LaunchedClaim {
                    claim: name.clone(),
                    node_pool: pool.name.clone(),
                    pods: spec.pods,
                    instance: instance.id.clone(),
                    offering: instance.offering,
                    candidates: launch.offerings.len(),
                    explanation: None,
                };
                let catalog = self.cloud.catalog();
                let what = catalog.offerings.get(instance.offering as usize).map_or_else(
                    || format!("offering {}", instance.offering),
                    |o| format!("{} {} in {} (${:.4}/h)", o.instance_type, o.capacity_type.label(), o.zone, o.price_per_hour),
                );
                if self.cluster.claim_launched(&name, instance).await? == crate::cluster::Recorded::ClaimGone {
                    let why = self.terminator.end_unclaimed(&name, &launched.instance).await;
                    return Ok(Err((name, why)));
                }
                let event = |object, reason, message| ClusterEvent { object, warning: false, reason, message };
                self.cluster
                    .record_event(event(EventObject::NodeClaim(name.clone()), "Launched", format!("launched {what} as {}, for {} pod(s)", launched.instance, launched.pods.len())))
                    .await?;
                for pod in &launched.pods {
                    self.cluster.record_event(event(EventObject::Pod(pod.clone()), "Nominated", format!("pod should schedule on NodeClaim {name}"))).await?;
                }
                Ok(Ok(launched))
            }
            Err(e) => {
                // No capacity is routine (the offerings are benched for a
                // while and the next pass tries others); anything else is not.
                if matches!(e, crate::cloud::LaunchError::InsufficientCapacity { .. }) {
                    tracing::info!(claim = %name, "launch failed, pods stay pending: {e}");
                } else {
                    tracing::warn!(claim = %name, "launch failed, pods stay pending: {e}");
                }
                self.cluster
                    .record_event(ClusterEvent { object: EventObject::NodeClaim(name.clone()), warning: true, reason: "LaunchFailed", message: e.to_string() })
                    .await?;
                self.cluster.delete_node_claim(&name).await?;
                Ok(Err((name, e.to_string())))
            }
        }
    }

    /// After a restart: a NodeClaim recorded without its instance (the
    /// process stopped between the launch and recording it) adopts the
    /// instance the cloud tagged with its name; one with no instance at all
    /// is deleted so its pods are provisioned again. Nothing is launched
    /// twice and nothing leaks. Returns (adopted, deleted).
    pub async fn reconcile(&self) -> Result<(Vec<String>, Vec<String>), ClusterError> {
        let instances = self.cloud.instances().await.map_err(|e| ClusterError(e.0))?;
        let (mut adopted, mut deleted) = (Vec::new(), Vec::new());
        for claim in self.cluster.node_claims().await? {
            if claim.instance.is_some() {
                continue;
            }
            match instances.iter().find(|i| i.claim == claim.name) {
                Some(instance) => match self.cluster.claim_launched(&claim.name, instance.clone()).await? {
                    crate::cluster::Recorded::Recorded => adopted.push(claim.name),
                    // Deleted since it was listed.
                    crate::cluster::Recorded::ClaimGone => {
                        self.terminator.end_unclaimed(&claim.name, &instance.id).await;
                    }
                },
                None => {
                    self.cluster.delete_node_claim(&claim.name).await?;
                    deleted.push(claim.name);
                }
            }
        }
        Ok((adopted, deleted))
    }

    /// One pass: schedule every pending pod, launch the NodeClaims needed.
    pub async fn provision(&self) -> Result<ProvisioningReport, ClusterError> {
        self.provision_with(Vec::new()).await
    }

    /// A pass that also places `extra` pods — still running on a node about
    /// to go — so their replacement capacity is launched before they are
    /// evicted.
    pub async fn provision_with(&self, extra: Vec<crate::model::Pod>) -> Result<ProvisioningReport, ClusterError> {
        let catalog: Arc<Catalog> = self.cloud.catalog();
        let pools = self.cluster.node_pools().await?;
        let daemonsets = self.cluster.daemonsets().await?;
        let mut pods = self.cluster.pending_pods().await?;
        pods.extend(extra);
        let nodes = self.cluster.nodes().await?;
        let mut report = ProvisioningReport { pods: pods.len(), ..ProvisioningReport::default() };
        if pods.is_empty() {
            return Ok(report);
        }
        let hints = Hints { memo: Some(&self.memo), ..Hints::default() };
        let result = schedule_hinted(SchedulingInput { catalog: &catalog, pools: &pools, daemonsets: &daemonsets, nodes: &nodes, pods: &pods }, hints);
        report.pods_on_existing = result.bindings.len();
        report.bindings = result.bindings.iter().map(|&(p, n)| (pods[p].name.to_string(), nodes[n].name.clone())).collect();
        let unavailable = self.cloud.unavailable();
        // The fleet 0.3.0 policies see, read once a pass needs it and
        // updated as the pass launches.
        let mut running: Option<fleet::NodeCounts> = None;
        let pending = u32::try_from(pods.len()).unwrap_or(u32::MAX);
        for (pod, reason) in &result.unschedulable {
            self.cluster.pod_unschedulable(&pods[*pod].name, reason).await?;
            report.unschedulable.push((pods[*pod].name.to_string(), reason.clone()));
        }
        for planned in result.claims {
            let Some(pool) = pools.iter().find(|p| p.name == planned.node_pool) else { continue };
            let (slot, error) = self.registry.configure(&selection_slot(&pool.name), Role::Selection, &pool.selection);
            if let Some(e) = error {
                tracing::error!(node_pool = %pool.name, "selection plugin not loaded, the slot keeps its previous policy: {e}");
            }
            let mut feasible = planned.offerings.clone();
            if !unavailable.is_empty() {
                feasible.retain(|o| !unavailable.contains(o));
            }
            let now = self.now();
            let fleet = if slot.reads_fleet() {
                if running.is_none() {
                    let claims = self.cluster.node_claims().await?;
                    let nodes = claims.iter().filter_map(|c| c.instance.as_ref().map(|i| (c.node_pool.as_str(), i.offering)));
                    running = Some(fleet::NodeCounts::of(nodes));
                }
                self.fleet.observe_counts(&catalog, running.as_ref().unwrap_or(&fleet::NodeCounts::default()), now)
            } else {
                Arc::default()
            };
            let request = SelectionRequest {
                node_pool: pool.name.clone(),
                pods: planned.pods.iter().map(|&p| pods[p].spec.requests).collect(),
                facts: planned.pods.iter().map(|&p| PodFacts::of(&pods[p].spec, pool)).collect(),
                total: planned.requests,
                feasible,
                pending_pods: pending,
                fleet,
            };
            slot.prepare(&catalog);
            let decision = slot.rank(&catalog, &request);
            let policy = explain::PolicyIdentity::of(&decision.by, &pool.selection);
            match decision.by {
                DecidedBy::Plugin(_) => report.plugin_decisions += 1,
                DecidedBy::Fallback { .. } => report.fallbacks += 1,
                DecidedBy::Builtin => {}
            }
            // The best 60, widened to keep the pool's minValues (which then
            // need the whole ranking).
            let keep = if pool.min_values.is_empty() { MAX_LAUNCH_OFFERINGS } else { usize::MAX };
            let ranked: Vec<u32> = decision.value.into_best(keep).into_iter().map(|(o, _)| o).collect();
            let pod_names: Vec<String> = planned.pods.iter().map(|&p| pods[p].name.to_string()).collect();
            let offerings = match crate::scheduling::launch_offerings(&catalog, &ranked, &pool.min_values, MAX_LAUNCH_OFFERINGS) {
                Ok(offerings) => offerings,
                Err(short) => {
                    let reason = format!(
                        "NodePool {} requires {short} (minValues) among the offerings its selection policy ranked that are available now",
                        pool.name
                    );
                    for name in &pod_names {
                        self.cluster.pod_unschedulable(name, &reason).await?;
                        report.unschedulable.push((name.clone(), reason.clone()));
                    }
                    continue;
                }
            };
            if offerings.is_empty() {
                let reason = if request.feasible.is_empty() {
                    format!("every offering that fits in NodePool {} is temporarily unavailable", pool.name)
                } else {
                    format!("the selection policy of NodePool {} left out every feasible offering", pool.name)
                };
                for name in &pod_names {
                    self.cluster.pod_unschedulable(name, &reason).await?;
                    report.unschedulable.push((name.clone(), reason.clone()));
                }
                continue;
            }
            let tried = offerings.clone();
            let spec = ClaimSpec { pool, offerings, pods: pod_names, requests: planned.requests, catalog_version: catalog.version };
            let outcome = self.launch_claim(spec).await?;
            // Offerings tried before the one bought (or all, on a failure)
            // that the cloud now marks unavailable were refused for capacity.
            let bought = outcome.as_ref().ok().map(|l| l.offering);
            let refused: Vec<u32> = tried.iter().copied().take_while(|&o| Some(o) != bought).collect();
            if !refused.is_empty() {
                let now_unavailable = self.cloud.unavailable();
                for o in refused.into_iter().filter(|o| now_unavailable.contains(o)) {
                    self.fleet.launch_failed(o, now);
                }
            }
            match outcome {
                Ok(mut launched) => {
                    let facts = explain::LaunchFacts {
                        catalog: &catalog,
                        pool,
                        pods: planned.pods.iter().map(|&p| &pods[p]).collect(),
                        requests: planned.requests,
                        planned: &planned.offerings,
                        unavailable: &unavailable,
                        ranked: &ranked,
                        tried: &tried,
                        bought: launched.offering,
                        policy: policy.clone(),
                        feasible: request.feasible.len(),
                    };
                    let explanation = explain::explain_launch(&launched.claim, &facts);
                    // Informational: a failed write leaves the claim without it.
                    if let Err(e) = self.cluster.write_claim_annotation(&launched.claim, explain::DECISION_ANNOTATION, &explanation.to_annotation()).await {
                        tracing::warn!(claim = %launched.claim, "the decision was not written on the NodeClaim: {e}");
                    }
                    launched.explanation = Some(Box::new(explanation));
                    if let Some(running) = running.as_mut() {
                        running.add(&launched.node_pool, launched.offering);
                    }
                    report.launched.push(launched);
                }
                Err(failure) => report.launch_failures.push(failure),
            }
        }
        Ok(report)
    }
}
