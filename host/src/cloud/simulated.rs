//! An in-memory cloud: seeded, with capacity failures per offering and the
//! unavailable-offerings cache, on the clock it is given.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{CloudError, CloudProvider, Instance, LaunchError, LaunchRequest, UNAVAILABLE_FOR};
use crate::model::Catalog;

/// Settings of a [`SimulatedCloud`].
#[derive(Debug, Clone)]
pub struct SimulatedCloudConfig {
    /// Seed of its randomness.
    pub seed: u64,
    /// Probability that a launch of a given offering fails for lack of
    /// capacity, by catalog index (absent: never).
    pub capacity_failure: HashMap<u32, f64>,
    /// Time from launch until the node is ready, drawn uniformly from this
    /// range for each instance.
    pub boot_latency: (Duration, Duration),
}

impl Default for SimulatedCloudConfig {
    fn default() -> Self {
        SimulatedCloudConfig {
            seed: 1,
            capacity_failure: HashMap::new(),
            boot_latency: (Duration::from_secs(30), Duration::from_secs(60)),
        }
    }
}

/// The clock the simulated cloud reads (virtual in the simulator).
pub type Now = Arc<dyn Fn() -> Duration + Send + Sync>;

struct State {
    rng: StdRng,
    next_id: u64,
    instances: BTreeMap<String, Instance>,
    unavailable_until: HashMap<u32, Duration>,
    launches: u64,
    capacity_failures: u64,
    requests: Vec<LaunchRequest>,
    ready_at: HashMap<String, Duration>,
}

/// An in-memory [`CloudProvider`].
pub struct SimulatedCloud {
    catalog: Mutex<Arc<Catalog>>,
    config: SimulatedCloudConfig,
    now: Now,
    state: Mutex<State>,
}

impl SimulatedCloud {
    /// A cloud selling `catalog`, reading time from `now`.
    pub fn new(catalog: Arc<Catalog>, config: SimulatedCloudConfig, now: Now) -> Self {
        let state = State {
            rng: StdRng::seed_from_u64(config.seed),
            next_id: 1,
            instances: BTreeMap::new(),
            unavailable_until: HashMap::new(),
            launches: 0,
            capacity_failures: 0,
            requests: Vec::new(),
            ready_at: HashMap::new(),
        };
        SimulatedCloud { catalog: Mutex::new(catalog), config, now, state: Mutex::new(state) }
    }

    /// Sell `catalog` from now on (same offerings in the same order, new prices).
    pub fn set_catalog(&self, catalog: Arc<Catalog>) {
        *self.catalog.lock().expect("catalog lock") = catalog;
    }

    /// (successful launches, capacity failures) so far.
    pub fn counters(&self) -> (u64, u64) {
        let state = self.state.lock().expect("cloud lock");
        (state.launches, state.capacity_failures)
    }

    /// When instance `id` is (or was) ready to register as a node.
    pub fn ready_at(&self, id: &str) -> Option<Duration> {
        self.state.lock().expect("cloud lock").ready_at.get(id).copied()
    }

    /// Every launch request received, in order.
    pub fn launch_requests(&self) -> Vec<LaunchRequest> {
        self.state.lock().expect("cloud lock").requests.clone()
    }

    fn launch_now(&self, request: &LaunchRequest) -> Result<Instance, LaunchError> {
        let now = (self.now)();
        let catalog_len = self.catalog().offerings.len();
        let mut state = self.state.lock().expect("cloud lock");
        state.requests.push(request.clone());
        if let Some(existing) = state.instances.values().find(|i| i.claim == request.claim) {
            return Ok(existing.clone()); // idempotent per claim, like a ClientToken
        }
        let (mut tried, mut skipped) = (0, 0);
        for &offering in &request.offerings {
            if offering as usize >= catalog_len {
                return Err(LaunchError::Provider(format!("offering index {offering} is not in the catalog")));
            }
            if state.unavailable_until.get(&offering).is_some_and(|&until| until > now) {
                skipped += 1;
                continue;
            }
            tried += 1;
            let p = self.config.capacity_failure.get(&offering).copied().unwrap_or(0.0);
            if p > 0.0 && state.rng.random::<f64>() < p {
                state.capacity_failures += 1;
                state.unavailable_until.insert(offering, now + UNAVAILABLE_FOR);
                continue;
            }
            let id = format!("i-{:017x}", state.next_id);
            state.next_id += 1;
            state.launches += 1;
            let (low, high) = self.config.boot_latency;
            let boot = if high > low { low + (high - low).mul_f64(state.rng.random::<f64>()) } else { low };
            state.ready_at.insert(id.clone(), now + boot);
            let instance =
                Instance { id: id.clone(), claim: request.claim.clone(), node_pool: request.node_pool.clone(), offering };
            state.instances.insert(id, instance.clone());
            return Ok(instance);
        }
        Err(LaunchError::InsufficientCapacity { tried, skipped })
    }
}

impl CloudProvider for SimulatedCloud {
    fn catalog(&self) -> Arc<Catalog> {
        self.catalog.lock().expect("catalog lock").clone()
    }

    fn mark_unavailable(&self, index: u32) {
        let until = (self.now)() + UNAVAILABLE_FOR;
        self.state.lock().expect("cloud lock").unavailable_until.insert(index, until);
    }

    fn unavailable(&self) -> std::collections::HashSet<u32> {
        let now = (self.now)();
        let state = self.state.lock().expect("cloud lock");
        state.unavailable_until.iter().filter(|(_, until)| **until > now).map(|(&o, _)| o).collect()
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Instance, LaunchError> {
        self.launch_now(request)
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), CloudError> {
        match self.state.lock().expect("cloud lock").instances.remove(instance_id) {
            Some(_) => Ok(()),
            None => Err(CloudError(format!("instance {instance_id} does not exist"))),
        }
    }

    async fn instances(&self) -> Result<Vec<Instance>, CloudError> {
        Ok(self.state.lock().expect("cloud lock").instances.values().cloned().collect())
    }
}
