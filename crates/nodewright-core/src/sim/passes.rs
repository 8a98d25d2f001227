//! Single controller passes on a prepared world, set up ahead so that only
//! the pass itself is timed: the `bench` command and the criterion
//! benchmarks.

use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};

use super::world::{SimClock, World, WorldSettings};
use crate::cluster::ClusterError;
use crate::disruption::{DisruptionController, DisruptionReport, DisruptionSettings};
use crate::model::{CapacityType, Catalog, NodePool, Pod, PodSpec};
use crate::policy::{PluginError, PolicyRuntime};
use crate::provisioning::ProvisioningReport;

/// One provisioning pass of a workload on a fresh world.
pub struct SimulatedPass {
    world: World,
}

impl SimulatedPass {
    /// A cluster with `pool` and `pods` pending; the pool's selection plugin
    /// is loaded, checked and handed the catalog before this returns.
    pub fn new(runtime: &PolicyRuntime, catalog: Arc<Catalog>, pool: NodePool, pods: &[Pod]) -> Result<Self, PluginError> {
        let world = World::new(runtime, SimClock::default(), catalog, vec![pool], WorldSettings::default());
        world.configure_policies()?;
        world.cluster.add_pods(pods.iter().cloned());
        Ok(SimulatedPass { world })
    }

    /// Run the pass.
    pub async fn run(&self) -> Result<ProvisioningReport, ClusterError> {
        self.world.provisioner.provision().await
    }
}

/// One consolidation planning pass over a large cluster: read the cluster,
/// ask the NodePool's consolidation policy for a plan, validate every action.
pub struct ConsolidationPass {
    world: World,
}

impl ConsolidationPass {
    /// `nodes` ready nodes of `pool` (m5/m6i/c5 on-demand, large to 2xlarge)
    /// running `pods_per_node` pods each, at utilisations spread from about
    /// 10 % to 70 % (seeded by `seed`).
    pub fn new(
        runtime: &PolicyRuntime,
        catalog: Arc<Catalog>,
        mut pool: NodePool,
        nodes: usize,
        pods_per_node: usize,
        seed: u64,
    ) -> Result<Self, ClusterError> {
        pool.consolidate_after = Some(Duration::ZERO);
        let world = World::new(runtime, SimClock::default(), catalog.clone(), vec![pool.clone()], WorldSettings::default());
        let types = ["m5.large", "m5.xlarge", "m5.2xlarge", "m6i.large", "m6i.xlarge", "c5.xlarge", "c5.2xlarge"];
        let offerings: Vec<u32> = types
            .iter()
            .filter_map(|t| {
                catalog.offerings.iter().position(|o| o.instance_type == *t && o.capacity_type == CapacityType::OnDemand && o.zone == "us-east-1a")
            })
            .map(|i| i as u32)
            .collect();
        if offerings.is_empty() {
            return Err(ClusterError("the catalog has none of the m5/m6i/c5 types the pass uses".into()));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for n in 0..nodes {
            let offering = offerings[n % offerings.len()];
            let claim = world.add_ready_node(&pool, offering)?;
            let allocatable = catalog.offerings[offering as usize].allocatable;
            let share: f64 = rng.random_range(0.10..0.70) / pods_per_node.max(1) as f64;
            let spec = Arc::new(PodSpec::requesting(
                (allocatable.cpu_millis as f64 * share) as u32,
                (allocatable.memory_bytes as f64 * share) as u64,
            ));
            let pods = (0..pods_per_node).map(|i| Pod::new(format!("{claim}-pod-{i}"), spec.clone())).collect();
            world.bind_to(&claim, pods)?;
        }
        Ok(ConsolidationPass { world })
    }

    /// One planning pass by a fresh controller (the plan is staged, not carried out).
    pub async fn run(&self) -> Result<DisruptionReport, ClusterError> {
        DisruptionController::new(self.world.provisioner.clone(), self.world.cluster.clone(), DisruptionSettings::default()).reconcile().await
    }
}
