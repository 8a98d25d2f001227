//! One simulated world: the simulated cloud and cluster on a virtual clock,
//! and the production controllers on top — the provisioner, the
//! disruption controller, the interruption handler, registration, NodePool
//! status and the PolicyPlugin reconciler, sharing one policy registry. The simulator, the benchmarks and the tests build it here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::cloud::{CloudProvider, SimulatedCloud, SimulatedCloudConfig};
use crate::cluster::{ClusterError, SimulatedCluster};
use crate::controllers::node_pool_status::NodePoolStatusController;
use crate::controllers::policy_plugins::PolicyPluginController;
use crate::controllers::registration::RegistrationController;
use crate::disruption::{DisruptionController, DisruptionReport, DisruptionSettings, consolidation_slot};
use crate::interruption::InterruptionHandler;
use crate::model::{Catalog, NodePool, Pod};
use crate::policy::{PluginClock, PluginError, PolicyRegistry, PolicyRuntime, Role};
use crate::provisioning::{ClaimSpec, Provisioner, ProvisioningReport, selection_slot};

/// The virtual clock: what plugins, the cloud, the cluster and the
/// controllers read. It reads time from the start of the run;
/// the controllers see it as wall time from [`EPOCH_OFFSET`].
#[derive(Debug, Clone, Default)]
pub struct SimClock(Arc<AtomicU64>);

impl SimClock {
    /// Now, from the start of the run.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }

    /// Move to `at` (from the start of the run).
    pub fn set(&self, at: Duration) {
        self.0.store(u64::try_from(at.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Now as the controllers read it: since the Unix epoch.
    pub fn wall(&self) -> Duration {
        EPOCH_OFFSET + self.now()
    }
}

/// Virtual runs start at 2026-01-05T00:00:00Z (a Monday), so plugins and
/// controllers see a plausible date.
pub const EPOCH_OFFSET: Duration = Duration::from_secs(1_767_571_200);

impl PluginClock for SimClock {
    fn wall_since_epoch(&self) -> Duration {
        self.wall()
    }

    fn monotonic_nanos(&self) -> u64 {
        u64::try_from(self.now().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// How a world behaves.
#[derive(Debug, Clone, Default)]
pub struct WorldSettings {
    /// The cloud: seed, boot latency, capacity failures, spot reclaims.
    pub cloud: SimulatedCloudConfig,
    /// Time from a pod stopping (evicted, drained, its node gone) until its
    /// controller has recreated it as a pending pod.
    pub restart_delay: Duration,
    /// The disruption controller's knobs.
    pub disruption: DisruptionSettings,
    /// Act on rebalance recommendations as on interruptions.
    pub rebalance_actionable: bool,
    /// Savings Plans and Reserved Instances policies are told about.
    pub commitments: crate::model::Commitments,
}

/// The simulated cloud and cluster with the production controllers.
pub struct World {
    /// The clock everything reads.
    pub clock: SimClock,
    /// The policy slots.
    pub registry: Arc<PolicyRegistry>,
    /// The cloud.
    pub cloud: Arc<SimulatedCloud>,
    /// The cluster.
    pub cluster: Arc<SimulatedCluster>,
    /// The provisioning controller.
    pub provisioner: Arc<Provisioner<SimulatedCloud, SimulatedCluster>>,
    /// The disruption controller.
    pub disruption: DisruptionController<SimulatedCloud, SimulatedCluster>,
    /// The interruption controller.
    pub interruption: InterruptionHandler<SimulatedCloud, SimulatedCluster>,
    /// Node registration and initialisation.
    pub registration: RegistrationController<SimulatedCluster>,
    /// NodePool statuses.
    pub node_pool_status: NodePoolStatusController<SimulatedCloud, SimulatedCluster>,
    /// PolicyPlugin objects into the registry's slots.
    pub policy_plugins: PolicyPluginController<SimulatedCluster>,
}

impl World {
    /// A world with `pools`, selling `catalog`, asking plugins loaded by
    /// `runtime` (whose clock should be `clock`), at time zero.
    pub fn new(runtime: &PolicyRuntime, clock: SimClock, catalog: Arc<Catalog>, pools: Vec<NodePool>, settings: WorldSettings) -> Self {
        let registry = Arc::new(PolicyRegistry::new(runtime.clone()));
        let name_seed = settings.cloud.seed;
        let run_clock = clock.clone();
        let now: crate::model::Clock = Arc::new(move || run_clock.now());
        let cloud = Arc::new(SimulatedCloud::new(catalog.clone(), settings.cloud, now.clone()));
        let cluster = Arc::new(SimulatedCluster::new(catalog, pools).with_restarts(now, settings.restart_delay).with_epoch(EPOCH_OFFSET).with_pod_events());
        let wall = clock.clone();
        let provisioner =
            Arc::new(
                Provisioner::new(cloud.clone(), cluster.clone(), registry.clone())
                    .with_clock(Arc::new(move || wall.wall()))
                    .with_commitments(settings.commitments)
                    .with_name_seed(name_seed),
            );
        let disruption = DisruptionController::new(provisioner.clone(), cluster.clone(), settings.disruption);
        let interruption = InterruptionHandler::new(cloud.clone(), cluster.clone(), provisioner.clone(), settings.rebalance_actionable);
        let registration = RegistrationController::new(cluster.clone());
        let node_pool_status = NodePoolStatusController::new(cloud.clone(), cluster.clone());
        let policy_plugins = PolicyPluginController::new(cluster.clone(), registry.clone());
        World { clock, registry, cloud, cluster, provisioner, disruption, interruption, registration, node_pool_status, policy_plugins }
    }

    /// Configure the selection and consolidation slots of every NodePool:
    /// the first plugin that cannot be loaded is returned.
    pub fn configure_policies(&self) -> Result<(), PluginError> {
        let pools = self.cluster_pools();
        for pool in &pools {
            for (slot, role, reference) in [
                (selection_slot(&pool.name), Role::Selection, &pool.selection),
                (consolidation_slot(&pool.name), Role::Consolidation, &pool.consolidation),
            ] {
                let (slot, error) = self.registry.configure(&slot, role, reference);
                if let Some(e) = error {
                    return Err(e);
                }
                slot.prepare(&self.cloud.catalog());
            }
        }
        Ok(())
    }

    fn cluster_pools(&self) -> Vec<NodePool> {
        drive(crate::cluster::Cluster::node_pools(&*self.cluster)).unwrap_or_default()
    }

    /// One provisioning pass.
    pub fn provision(&self) -> Result<ProvisioningReport, ClusterError> {
        drive(self.provisioner.provision())
    }

    /// One disruption pass.
    pub fn disrupt(&mut self) -> Result<DisruptionReport, ClusterError> {
        drive(self.disruption.reconcile())
    }

    /// Launch a node of `pool` bought as `offering` and register it at once
    /// (a test's or a benchmark's setup); returns its name.
    pub fn add_ready_node(&self, pool: &NodePool, offering: u32) -> Result<String, ClusterError> {
        let spec = ClaimSpec { pool, offerings: vec![offering], pods: Vec::new(), requests: Default::default(), catalog_version: self.cloud.catalog().version };
        let claim = drive(self.provisioner.launch_claim(spec))?.map_err(|(c, e)| ClusterError(format!("{c}: {e}")))?.claim;
        self.register(&claim)?;
        Ok(claim)
    }

    /// The instance of launched claim `claim` has booted: its kubelet
    /// registers the node, and the registration controller initialises it
    /// (startup taints removed, the claim marked initialised).
    pub fn register(&self, claim: &str) -> Result<(), ClusterError> {
        self.cluster.register(claim)?;
        drive(self.registration.reconcile())?;
        Ok(())
    }

    /// Add `pods` pending and bind each to `node` (a setup: no fit check).
    pub fn bind_to(&self, node: &str, pods: Vec<Pod>) -> Result<(), ClusterError> {
        let names: Vec<String> = pods.iter().map(|p| p.name.to_string()).collect();
        self.cluster.add_pods(pods);
        for name in names {
            self.cluster.bind(&name, node)?;
        }
        Ok(())
    }
}

/// Run a controller's future to completion. The simulated cloud and cluster
/// never wait on I/O or timers, so a plain executor drives them, outside any
/// tokio runtime: plugin calls then run on this thread rather than being
/// handed to the runtime's call threads.
pub fn drive<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}
