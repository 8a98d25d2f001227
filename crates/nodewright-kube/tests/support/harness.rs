//! The harness of the lifecycle tests: a stateful in-memory API server
//! (`apiserver`), a cloud (the simulated one, or EC2 on moto) that can be
//! killed at a crash point, and the controllers on one test clock, with this
//! harness standing in for the kubelet (Nodes register and become Ready),
//! the kube-scheduler (pending pods are bound) and the workload controllers
//! (an evicted pod comes back pending; a PodDisruptionBudget's status
//! follows its running pods). Included by the kube-rs tests and by the
//! binary's moto tests; each test crate has `common` at its root.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nodewright_core::cloud::{CloudError, CloudProvider, Instance, LaunchError, LaunchRequest, SimulatedCloud, SimulatedCloudConfig};
use nodewright_core::controllers::registration::RegistrationController;
use nodewright_core::disruption::{DisruptionController, DisruptionSettings};
use nodewright_core::model::{Catalog, well_known};
use nodewright_core::policy::PolicyRegistry;
use nodewright_core::provisioning::Provisioner;
use nodewright_kube::KubeCluster;
use serde_json::{Value, json};

use super::apiserver::ApiServer;
use super::objects;

pub const FINALIZER: &str = "nodewright.io/termination";
/// Every controller process of a test draws NodeClaim names from this
/// seed: a restarted one first draws the names its predecessor took.
pub const NAME_SEED: u64 = 11;

/// The NodePool the tests use: it neither consolidates nor expires, so
/// every node that goes is one a test deleted.
pub fn node_pool() -> Value {
    let mut pool = objects::node_pool();
    pool["spec"]["disruption"] = json!({ "consolidationPolicy": "WhenEmpty", "consolidateAfter": "Never" });
    pool
}

pub fn pod(name: &str) -> Value {
    objects::pending_pod(name)
}

/// Where the controller process is killed: the step the cloud is asked
/// to do completes (`After…`) or does not start (`Before…`), and the
/// process stops there (a panic, caught by the test), leaving the API
/// server and the cloud as a kill would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// The NodeClaim is created; CreateFleet is not sent.
    BeforeLaunch,
    /// CreateFleet succeeded; the launch is not recorded on the claim.
    AfterLaunch,
    /// The node is drained; the instance is not terminated.
    BeforeTerminate,
    /// The instance is terminated; the finalizer is not removed.
    AfterTerminate,
}

/// What happens elsewhere while a CreateFleet is in flight: given the
/// claim being launched, run before the cloud answers.
pub type DuringLaunch = Box<dyn FnOnce(String) -> futures::future::BoxFuture<'static, ()> + Send>;

/// A cloud (the simulated one, or EC2 on moto), with a crash point armed
/// at most once, and at most one thing to happen during a launch.
pub struct CrashingCloud<I> {
    pub inner: I,
    pub armed: std::sync::Mutex<Option<CrashPoint>>,
    pub during_launch: std::sync::Mutex<Option<DuringLaunch>>,
}

impl<I> CrashingCloud<I> {
    pub fn crash_if(&self, point: CrashPoint) {
        let hit = {
            let mut armed = self.armed.lock().unwrap();
            let hit = *armed == Some(point);
            if hit {
                *armed = None;
            }
            hit
        };
        if hit {
            panic!("killed at {point:?}");
        }
    }
}

impl<I: CloudProvider> CloudProvider for CrashingCloud<I> {
    fn catalog(&self) -> Arc<Catalog> {
        self.inner.catalog()
    }

    fn unavailable(&self) -> std::collections::HashSet<u32> {
        self.inner.unavailable()
    }

    fn mark_unavailable(&self, index: u32) {
        self.inner.mark_unavailable(index)
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Instance, LaunchError> {
        self.crash_if(CrashPoint::BeforeLaunch);
        let during = self.during_launch.lock().unwrap().take();
        if let Some(during) = during {
            during(request.claim.clone()).await;
        }
        let launched = self.inner.launch(request).await;
        self.crash_if(CrashPoint::AfterLaunch);
        launched
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), CloudError> {
        self.crash_if(CrashPoint::BeforeTerminate);
        let done = self.inner.terminate(instance_id).await;
        self.crash_if(CrashPoint::AfterTerminate);
        done
    }

    async fn instances(&self) -> Result<Vec<Instance>, CloudError> {
        self.inner.instances().await
    }

    // Drift is the inner cloud's (EC2 on moto resolves node classes).
    fn drift_generation(&self) -> u64 {
        self.inner.drift_generation()
    }

    async fn drifted(&self, instances: &[&Instance]) -> Result<std::collections::HashMap<String, String>, CloudError> {
        self.inner.drifted(instances).await
    }
}

/// A cluster: the API server, the simulated cloud, the controllers on one
/// test clock.
pub struct Harness<I = SimulatedCloud> {
    pub server: ApiServer,
    pub cloud: Arc<CrashingCloud<I>>,
    pub cluster: Arc<KubeCluster>,
    pub provisioner: Arc<Provisioner<CrashingCloud<I>, KubeCluster>>,
    pub disruption: DisruptionController<CrashingCloud<I>, KubeCluster>,
    pub clock: Arc<AtomicU64>,
    pub catalog: Arc<Catalog>,
    _cache: tempfile::TempDir,
}

impl Harness<SimulatedCloud> {
    /// On the simulated cloud.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// With watch caches: the controllers read what the server's watches
    /// delivered (and their own writes laid over them).
    pub async fn with_watch_caches() -> Self {
        let h = Self::build(true);
        let cache = h.cluster.cache().expect("caches");
        tokio::time::timeout(Duration::from_secs(5), cache.wait_until_ready()).await.expect("every kind listed");
        h
    }

    fn build(cached: bool) -> Self {
        let catalog = Arc::new(Catalog::bundled_types(60));
        let (clock, now) = test_clock();
        let inner = SimulatedCloud::new(catalog, SimulatedCloudConfig::default(), now.clone());
        Self::on(inner, clock, now, cached)
    }
}

/// The test clock: from now, moved on by the test.
pub fn test_clock() -> (Arc<AtomicU64>, nodewright_core::model::Clock) {
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let clock = Arc::new(AtomicU64::new(start));
    let now = {
        let clock = clock.clone();
        Arc::new(move || Duration::from_secs(clock.load(Ordering::Relaxed)))
    };
    (clock, now)
}

impl<I: CloudProvider> Harness<I> {
    /// On `inner` (whose clock is `now`, read from `clock`), with watch
    /// caches if `cached`.
    pub fn on(inner: I, clock: Arc<AtomicU64>, now: nodewright_core::model::Clock, cached: bool) -> Self {
        let (client, server) = ApiServer::start();
        let catalog = inner.catalog();
        let cloud = Arc::new(CrashingCloud { inner, armed: std::sync::Mutex::new(None), during_launch: std::sync::Mutex::new(None) });
        let for_cluster = catalog.clone();
        let mut cluster = KubeCluster::new(client.clone(), "nodewright", Arc::new(move || for_cluster.clone()));
        if cached {
            cluster = cluster.with_cache(nodewright_kube::cache::KubeCache::start(&client));
        }
        let cluster = Arc::new(cluster);
        let (runtime, cache) = crate::common::runtime();
        let provisioner = Arc::new(
            Provisioner::new(cloud.clone(), cluster.clone(), Arc::new(PolicyRegistry::new(runtime))).with_clock(now).with_name_seed(NAME_SEED),
        );
        let disruption = DisruptionController::new(provisioner.clone(), cluster.clone(), DisruptionSettings::default());
        Harness { server, cloud, cluster, provisioner, disruption, clock, catalog, _cache: cache }
    }

    /// A new controller process against the same API server and cloud
    /// (the previous one was killed, or lost the lease): fresh controllers
    /// whose NodeClaim names come from the same seed, so the first it draws
    /// are taken; crash recovery runs first, as `nodewright run` does on
    /// becoming leader.
    pub async fn restart(&mut self) -> (Vec<String>, Vec<String>) {
        let (runtime, cache) = crate::common::runtime();
        let now = self.provisioner.clock();
        self.provisioner = Arc::new(
            Provisioner::new(self.cloud.clone(), self.cluster.clone(), Arc::new(PolicyRegistry::new(runtime)))
                .with_clock(now)
                .with_name_seed(NAME_SEED),
        );
        self.disruption = DisruptionController::new(self.provisioner.clone(), self.cluster.clone(), DisruptionSettings::default());
        self._cache = cache;
        self.provisioner.reconcile().await.unwrap()
    }

    /// A pass in which the process is killed at `point`.
    pub async fn pass_killed_at(&mut self, point: CrashPoint) {
        *self.cloud.armed.lock().unwrap() = Some(point);
        let killed = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(self.controllers())).await;
        assert!(killed.is_err(), "the pass reached {point:?}");
        assert_eq!(*self.cloud.armed.lock().unwrap(), None);
    }

    /// The kubelet, the scheduler and the workload controllers, once.
    pub async fn stand_in(&self) {
        // A launched claim's node registers, Ready, with its startup taints.
        for claim in self.server.list("NodeClaim") {
            let claim_name = claim["metadata"]["name"].as_str().unwrap().to_string();
            let Some(provider) = claim["status"]["providerID"].as_str() else { continue };
            let registered = self.server.list("Node").iter().any(|n| n["spec"]["providerID"] == json!(provider));
            if claim["metadata"].get("deletionTimestamp").is_some() || registered {
                continue;
            }
            let instance = self.cloud_instance(&claim_name).await.expect("a launched claim has an instance");
            // Named as EC2 names it, not after the claim.
            let name = format!("ip-10-0-{}.ec2.internal", provider.rsplit('-').next().unwrap_or_default().trim_start_matches('0'));
            let offering = &self.catalog.offerings[instance as usize];
            let resources = json!({ "cpu": format!("{}m", offering.allocatable.cpu_millis), "memory": format!("{}", offering.allocatable.memory_bytes), "pods": "58" });
            self.server.put(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": { "name": name, "labels": {
                    well_known::NODE_POOL: claim["spec"]["nodePool"], well_known::ZONE: offering.zone,
                    well_known::INSTANCE_TYPE: offering.instance_type, well_known::HOSTNAME: name } },
                "spec": { "providerID": provider, "taints": [{ "key": "nodewright.io/starting", "effect": "NoSchedule" }] },
                "status": { "allocatable": resources, "capacity": resources, "conditions": [{ "type": "Ready", "status": "True" }] }
            }));
        }
        // Pending pods are bound to the first node that takes pods.
        let usable: Vec<String> = self
            .server
            .list("Node")
            .into_iter()
            .filter(|n| n["spec"]["unschedulable"] != json!(true) && n["spec"]["taints"].as_array().is_none_or(|t| t.is_empty()))
            .filter(|n| n["metadata"].get("deletionTimestamp").is_none())
            .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        for p in self.server.list("Pod") {
            let name = p["metadata"]["name"].as_str().unwrap();
            if p["spec"].get("nodeName").is_none()
                && let Some(node) = usable.first()
            {
                let bind = json!({ "spec": { "nodeName": node }, "status": { "phase": "Running", "conditions": [{ "type": "PodScheduled", "status": "True" }] } });
                self.server.patch("Pod", "shop", name, &bind);
            }
        }
        // An evicted pod's controller makes it again.
        for name in ["web-1", "web-2"] {
            if self.server.get("Pod", "shop", name).is_none() {
                self.server.put(pod(name));
            }
        }
        // The budget allows what its running pods leave above minAvailable.
        let running = self.running();
        let allowed = running.saturating_sub(1);
        self.server.patch("PodDisruptionBudget", "shop", "web", &json!({ "status": { "disruptionsAllowed": allowed, "currentHealthy": running } }));
    }

    pub fn running(&self) -> u64 {
        self.server.list("Pod").iter().filter(|p| p["status"]["phase"] == "Running").count() as u64
    }

    pub async fn cloud_instance(&self, claim: &str) -> Option<u32> {
        self.cloud.inner.instances().await.unwrap().into_iter().find(|i| i.claim == claim).map(|i| i.offering)
    }

    /// One pass of the controllers, as `nodewright run` orders them, then
    /// the rest of the cluster; 20 s pass.
    pub async fn pass(&mut self) {
        self.controllers().await;
        self.stand_in().await;
        self.clock.fetch_add(20, Ordering::Relaxed);
        if self.cluster.cache().is_some() {
            // Let the watches deliver what the stand-ins wrote.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    pub async fn controllers(&mut self) {
        RegistrationController::new(self.cluster.clone()).reconcile().await.unwrap();
        self.provisioner.provision().await.unwrap();
        self.disruption.reconcile().await.unwrap();
    }

    /// Nothing leaked, nothing twice, nothing stuck, every pod placed:
    /// one instance per NodeClaim and the reverse, no claim being deleted,
    /// every pod running.
    pub async fn settled(&self) {
        let claims: Vec<String> = self.server.list("NodeClaim").iter().map(|c| c["metadata"]["name"].as_str().unwrap().to_string()).collect();
        let mut backed: Vec<String> = self.cloud.instances().await.unwrap().into_iter().map(|i| i.claim).collect();
        backed.sort();
        let mut sorted = claims.clone();
        sorted.sort();
        assert_eq!(backed, sorted, "one instance per NodeClaim");
        let stuck: Vec<Value> = self.server.list("NodeClaim").into_iter().filter(|c| c["metadata"].get("deletionTimestamp").is_some()).collect();
        assert!(stuck.is_empty(), "{stuck:#?}");
        let pods = self.server.list("Pod");
        assert!(pods.iter().all(|p| p["status"]["phase"] == "Running"), "{pods:#?}");
        assert_eq!(self.server.unexpected(), Vec::<String>::new());
    }
}

/// A NodePool, two pods of one workload behind a PodDisruptionBudget of
/// minAvailable 1, and passes until both run on one node: its claim's
/// name, and the node's.
pub async fn two_pods_running<I: CloudProvider>(h: &mut Harness<I>) -> (String, String) {
    h.server.put(node_pool());
    h.server.put(pod("web-1"));
    h.server.put(pod("web-2"));
    h.server.put(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": { "name": "web", "namespace": "shop" },
        "spec": { "minAvailable": 1, "selector": { "matchLabels": { "app": "web" } } },
        "status": { "disruptionsAllowed": 0 }
    }));
    for _ in 0..6 {
        h.pass().await;
    }
    let claims = h.server.list("NodeClaim");
    assert_eq!(claims.len(), 1, "{claims:#?}");
    assert_eq!(claims[0]["metadata"]["finalizers"], json!([FINALIZER]));
    let first = claims[0]["metadata"]["name"].as_str().unwrap().to_string();
    let node = claims[0]["status"]["nodeName"].as_str().expect("the claim knows its node").to_string();
    assert!(node.starts_with("ip-10-0-"), "{node}");
    assert_eq!(h.running(), 2, "both pods run on {node}");
    (first, node)
}

/// Passes until NodeClaim `first` is gone; then its instance is
/// terminated, its node gone, both pods run on the one replacement, each
/// having left through the Eviction API while the budget held.
pub async fn drained_onto_a_replacement<I: CloudProvider>(h: &mut Harness<I>, first: &str, node: &str) {
    let instance = h.cloud_instance(first).await.expect("its instance runs");
    let mut passes = 0;
    while h.server.get("NodeClaim", "", first).is_some() {
        h.pass().await;
        passes += 1;
        assert!(h.running() >= 1, "the budget keeps one pod running at every step (pass {passes})");
        assert!(passes < 40, "the claim is still there after {passes} passes: {:#?} evictions {:?} pods {:#?} claims {:?}", h.server.get("NodeClaim", "", first).map(|c| c["status"].clone()), h.server.evictions(), h.server.list("Pod").iter().map(|p| (p["metadata"]["name"].clone(), p["spec"]["nodeName"].clone(), p["status"]["phase"].clone())).collect::<Vec<_>>(), h.server.list("NodeClaim").iter().map(|c| c["metadata"]["name"].clone()).collect::<Vec<_>>());
    }
    assert!(h.cloud_instance(first).await.is_none(), "the instance of {first} ({instance}) is terminated");
    assert!(h.server.get("Node", "", node).is_none());
    let claims = h.server.list("NodeClaim");
    assert_eq!(claims.len(), 1, "one replacement: {claims:#?}");
    let second = claims[0]["status"]["nodeName"].as_str().expect("the replacement registered").to_string();
    let pods = h.server.list("Pod");
    assert!(pods.iter().all(|p| p["spec"]["nodeName"] == json!(second) && p["status"]["phase"] == "Running"), "{pods:#?}");
    let evictions = h.server.evictions();
    let mut accepted: Vec<&str> = evictions.iter().filter(|e| e.1).map(|e| e.0.as_str()).collect();
    accepted.sort_unstable();
    assert_eq!(accepted, vec!["shop/web-1", "shop/web-2"], "each pod left once, through the Eviction API: {evictions:?}");
    assert!(evictions.iter().any(|e| !e.1), "the budget refused the second eviction until the first pod ran again: {evictions:?}");
    assert_eq!(h.cloud.instances().await.unwrap().len(), 1, "no instance leaked");
    assert_eq!(h.server.unexpected(), Vec::<String>::new());
}

/// The lifecycle scenarios, on any cloud: the kube-rs tests run them on the
/// simulated cloud, the binary's tests on EC2 (moto).
pub mod scenarios {
    use super::*;

    /// `kubectl delete nodeclaim`: drained through the PDB onto a
    /// replacement, the instance terminated, the finalizer removed.
    pub async fn nodeclaim_deleted_by_hand<I: CloudProvider>(h: &mut Harness<I>) {
        let (first, node) = two_pods_running(h).await;
        // kubectl delete nodeclaim: the finalizer holds it.
        assert_eq!(h.server.delete("NodeClaim", "", &first), 200);
        assert!(h.server.get("NodeClaim", "", &first).unwrap()["metadata"]["deletionTimestamp"].is_string());
        drained_onto_a_replacement(h, &first, &node).await;
    }

    /// `kubectl delete node`: its NodeClaim goes the same way.
    pub async fn node_deleted_by_hand<I: CloudProvider>(h: &mut Harness<I>) {
        let (first, node) = two_pods_running(h).await;
        // kubectl delete node: the node goes at once; its claim follows.
        assert_eq!(h.server.delete("Node", "", &node), 200);
        assert!(h.server.get("Node", "", &node).is_none());
        drained_onto_a_replacement(h, &first, &node).await;
    }

    /// `kubectl delete nodeclaim` while its CreateFleet is in flight: the
    /// termination pass (on its own task in `run`) finds no instance
    /// recorded or tagged, and releases the claim; the launch then has no
    /// claim to record its instance on. The instance is terminated at once,
    /// the pods stay pending and get a claim of their own.
    pub async fn nodeclaim_deleted_while_launching<I: CloudProvider>(h: &mut Harness<I>) {
        h.server.put(node_pool());
        h.server.put(pod("web-1"));
        h.server.put(pod("web-2"));
        let (server, provisioner, cluster) = (h.server.clone(), h.provisioner.clone(), h.cluster.clone());
        let during: DuringLaunch = Box::new(move |claim: String| {
            Box::pin(async move {
                assert_eq!(server.delete("NodeClaim", "", &claim), 200);
                let mut termination = DisruptionController::new(provisioner, cluster, DisruptionSettings::default());
                termination.terminate_pass().await.unwrap();
                assert!(server.get("NodeClaim", "", &claim).is_none(), "released: it had no instance");
            })
        });
        *h.cloud.during_launch.lock().unwrap() = Some(during);
        let report = h.provisioner.provision().await.unwrap();
        assert!(report.launched.is_empty(), "{report:?}");
        assert_eq!(report.launch_failures.len(), 1, "{report:?}");
        let (claim, why) = &report.launch_failures[0];
        assert!(why.starts_with(&format!("NodeClaim {claim} was deleted while its instance launched: instance ")), "{why}");
        assert!(h.cloud.instances().await.unwrap().is_empty(), "the instance no claim holds is terminated");
        assert!(h.server.list("NodeClaim").is_empty());
        for _ in 0..4 {
            h.pass().await;
        }
        h.settled().await;
        let claims: Vec<String> = h.server.list("NodeClaim").iter().map(|c| c["metadata"]["name"].as_str().unwrap().to_string()).collect();
        assert!(!claims.is_empty() && !claims.contains(claim), "new claims hold the pods: {claims:?}");
    }

    /// The leader stops with pods pending; the standby (same name seed)
    /// takes over: fresh names, nothing launched twice, every pod placed.
    pub async fn failover<I: CloudProvider>(h: &mut Harness<I>) {
        let (first, _) = two_pods_running(h).await;
        // More pods arrive; the leader stops; the standby takes over with the
        // same name seed, so the first name it draws is taken.
        for name in ["web-3", "web-4"] {
            let mut p = pod(name);
            p["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("1500m");
            h.server.put(p);
        }
        let (adopted, deleted) = h.restart().await;
        assert!(adopted.is_empty() && deleted.is_empty());
        for _ in 0..6 {
            h.pass().await;
        }
        let claims: Vec<String> = h.server.list("NodeClaim").iter().map(|c| c["metadata"]["name"].as_str().unwrap().to_string()).collect();
        assert!(claims.len() >= 2 && claims.contains(&first), "{claims:?}");
        h.settled().await;
    }

    /// Killed at `point` during a launch; after a restart: nothing leaked,
    /// nothing twice, nothing stuck, every pod placed.
    pub async fn killed_in_launch<I: CloudProvider>(h: &mut Harness<I>, point: CrashPoint) {
        h.server.put(node_pool());
        h.server.put(pod("web-1"));
        h.server.put(pod("web-2"));
        h.pass_killed_at(point).await;
        let claims = h.server.list("NodeClaim");
        assert_eq!(claims.len(), 1, "{point:?}: the claim was created");
        assert!(claims[0]["status"].get("instanceID").is_none(), "{point:?}: the launch was not recorded");
        let (adopted, deleted) = h.restart().await;
        let name = claims[0]["metadata"]["name"].as_str().unwrap().to_string();
        match point {
            CrashPoint::BeforeLaunch => assert_eq!((adopted, deleted), (vec![], vec![name]), "nothing to adopt: the claim goes"),
            _ => assert_eq!((adopted, deleted), (vec![name], vec![]), "the instance is adopted"),
        }
        for _ in 0..6 {
            h.pass().await;
        }
        h.settled().await;
        assert_eq!(h.server.list("NodeClaim").len(), 1, "{point:?}");
    }

    /// Killed at `point` while a NodeClaim deleted by hand is terminated;
    /// after a restart the claim goes, nothing leaked or stuck.
    pub async fn killed_in_termination<I: CloudProvider>(h: &mut Harness<I>, point: CrashPoint) {
        let (first, _) = two_pods_running(h).await;
        assert_eq!(h.server.delete("NodeClaim", "", &first), 200);
        // Passes until the one that is killed.
        *h.cloud.armed.lock().unwrap() = Some(point);
        let mut passes = 0;
        loop {
            let killed = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(h.controllers())).await.is_err();
            h.stand_in().await;
            h.clock.fetch_add(20, Ordering::Relaxed);
            if killed {
                break;
            }
            passes += 1;
            assert!(passes < 40, "{point:?} was never reached");
        }
        assert!(h.server.get("NodeClaim", "", &first).is_some(), "{point:?}: the finalizer still holds the claim");
        h.restart().await;
        let mut passes = 0;
        while h.server.get("NodeClaim", "", &first).is_some() {
            h.pass().await;
            passes += 1;
            assert!(passes < 40, "{point:?}: the claim is stuck after the restart");
        }
        h.settled().await;
        assert!(h.cloud_instance(&first).await.is_none(), "{point:?}");
    }
}
