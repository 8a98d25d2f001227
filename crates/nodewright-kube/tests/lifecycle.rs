//! The controllers against a stateful in-memory API server
//! (`support::apiserver`): the NodeClaim lifecycle as a cluster lives it,
//! with this test standing in for the kubelet (Nodes register and become
//! Ready), the kube-scheduler (pending pods are bound) and the workload
//! controllers (an evicted pod comes back pending; a PodDisruptionBudget's
//! status follows its running pods).

#[path = "../../nodewright-core/tests/common/mod.rs"]
mod common;
mod support;

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
use support::apiserver::ApiServer;
use support::objects;

const FINALIZER: &str = "nodewright.io/termination";
/// Every controller process of a test draws NodeClaim names from this
/// seed: a restarted one first draws the names its predecessor took.
const NAME_SEED: u64 = 11;

/// The NodePool the tests use: it neither consolidates nor expires, so
/// every node that goes is one a test deleted.
fn node_pool() -> Value {
    let mut pool = objects::node_pool();
    pool["spec"]["disruption"] = json!({ "consolidationPolicy": "WhenEmpty", "consolidateAfter": "Never" });
    pool
}

fn pod(name: &str) -> Value {
    objects::pending_pod(name)
}

/// Where the controller process is killed: the step the cloud is asked
/// to do completes (`After…`) or does not start (`Before…`), and the
/// process stops there (a panic, caught by the test), leaving the API
/// server and the cloud as a kill would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrashPoint {
    /// The NodeClaim is created; CreateFleet is not sent.
    BeforeLaunch,
    /// CreateFleet succeeded; the launch is not recorded on the claim.
    AfterLaunch,
    /// The node is drained; the instance is not terminated.
    BeforeTerminate,
    /// The instance is terminated; the finalizer is not removed.
    AfterTerminate,
}

/// The simulated cloud, with a crash point armed at most once.
struct CrashingCloud {
    inner: SimulatedCloud,
    armed: std::sync::Mutex<Option<CrashPoint>>,
}

impl CrashingCloud {
    fn crash_if(&self, point: CrashPoint) {
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

impl CloudProvider for CrashingCloud {
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
}

/// A cluster: the API server, the simulated cloud, the controllers on one
/// test clock.
struct Harness {
    server: ApiServer,
    cloud: Arc<CrashingCloud>,
    cluster: Arc<KubeCluster>,
    provisioner: Arc<Provisioner<CrashingCloud, KubeCluster>>,
    disruption: DisruptionController<CrashingCloud, KubeCluster>,
    clock: Arc<AtomicU64>,
    catalog: Arc<Catalog>,
    _cache: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        Self::build(false)
    }

    /// With watch caches: the controllers read what the server's watches
    /// delivered (and their own writes laid over them).
    async fn with_watch_caches() -> Self {
        let h = Self::build(true);
        let cache = h.cluster.cache().expect("caches");
        tokio::time::timeout(Duration::from_secs(5), cache.wait_until_ready()).await.expect("every kind listed");
        h
    }

    fn build(cached: bool) -> Self {
        let (client, server) = ApiServer::start();
        let catalog = Arc::new(Catalog::bundled_types(60));
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let clock = Arc::new(AtomicU64::new(start));
        let now = {
            let clock = clock.clone();
            Arc::new(move || Duration::from_secs(clock.load(Ordering::Relaxed)))
        };
        let inner = SimulatedCloud::new(catalog.clone(), SimulatedCloudConfig::default(), now.clone());
        let cloud = Arc::new(CrashingCloud { inner, armed: std::sync::Mutex::new(None) });
        let for_cluster = catalog.clone();
        let mut cluster = KubeCluster::new(client.clone(), "nodewright", Arc::new(move || for_cluster.clone()));
        if cached {
            cluster = cluster.with_cache(nodewright_kube::cache::KubeCache::start(&client));
        }
        let cluster = Arc::new(cluster);
        let (runtime, cache) = common::runtime();
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
    async fn restart(&mut self) -> (Vec<String>, Vec<String>) {
        let (runtime, cache) = common::runtime();
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
    async fn pass_killed_at(&mut self, point: CrashPoint) {
        *self.cloud.armed.lock().unwrap() = Some(point);
        let killed = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(self.controllers())).await;
        assert!(killed.is_err(), "the pass reached {point:?}");
        assert_eq!(*self.cloud.armed.lock().unwrap(), None);
    }

    /// The kubelet, the scheduler and the workload controllers, once.
    fn stand_in(&self) {
        // A launched claim's node registers, Ready, with its startup taints.
        for claim in self.server.list("NodeClaim") {
            let claim_name = claim["metadata"]["name"].as_str().unwrap().to_string();
            let Some(provider) = claim["status"]["providerID"].as_str() else { continue };
            let registered = self.server.list("Node").iter().any(|n| n["spec"]["providerID"] == json!(provider));
            if claim["metadata"].get("deletionTimestamp").is_some() || registered {
                continue;
            }
            let instance = self.cloud_instance(&claim_name).expect("a launched claim has an instance");
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

    fn running(&self) -> u64 {
        self.server.list("Pod").iter().filter(|p| p["status"]["phase"] == "Running").count() as u64
    }

    fn cloud_instance(&self, claim: &str) -> Option<u32> {
        futures::executor::block_on(self.cloud.inner.instances()).unwrap().into_iter().find(|i| i.claim == claim).map(|i| i.offering)
    }

    /// One pass of the controllers, as `nodewright run` orders them, then
    /// the rest of the cluster; 20 s pass.
    async fn pass(&mut self) {
        self.controllers().await;
        self.stand_in();
        self.clock.fetch_add(20, Ordering::Relaxed);
        if self.cluster.cache().is_some() {
            // Let the watches deliver what the stand-ins wrote.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    async fn controllers(&mut self) {
        RegistrationController::new(self.cluster.clone()).reconcile().await.unwrap();
        self.provisioner.provision().await.unwrap();
        self.disruption.reconcile().await.unwrap();
    }

    /// Nothing leaked, nothing twice, nothing stuck, every pod placed:
    /// one instance per NodeClaim and the reverse, no claim being deleted,
    /// every pod running.
    async fn settled(&self) {
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
async fn two_pods_running(h: &mut Harness) -> (String, String) {
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
async fn drained_onto_a_replacement(h: &mut Harness, first: &str, node: &str) {
    let instance = h.cloud_instance(first).expect("its instance runs");
    let mut passes = 0;
    while h.server.get("NodeClaim", "", first).is_some() {
        h.pass().await;
        passes += 1;
        assert!(h.running() >= 1, "the budget keeps one pod running at every step (pass {passes})");
        assert!(passes < 40, "the claim is still there after {passes} passes: {:#?} evictions {:?} pods {:#?} claims {:?}", h.server.get("NodeClaim", "", first).map(|c| c["status"].clone()), h.server.evictions(), h.server.list("Pod").iter().map(|p| (p["metadata"]["name"].clone(), p["spec"]["nodeName"].clone(), p["status"]["phase"].clone())).collect::<Vec<_>>(), h.server.list("NodeClaim").iter().map(|c| c["metadata"]["name"].clone()).collect::<Vec<_>>());
    }
    assert!(h.cloud_instance(first).is_none(), "the instance of {first} ({instance}) is terminated");
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

#[tokio::test]
async fn a_nodeclaim_deleted_by_hand_is_drained_through_its_pdb_terminated_and_its_finalizer_removed() {
    let mut h = Harness::new();
    let (first, node) = two_pods_running(&mut h).await;
    // kubectl delete nodeclaim: the finalizer holds it.
    assert_eq!(h.server.delete("NodeClaim", "", &first), 200);
    assert!(h.server.get("NodeClaim", "", &first).unwrap()["metadata"]["deletionTimestamp"].is_string());
    drained_onto_a_replacement(&mut h, &first, &node).await;
}

#[tokio::test]
async fn a_node_deleted_by_hand_deletes_its_nodeclaim_which_is_drained_and_terminated_the_same_way() {
    let mut h = Harness::new();
    let (first, node) = two_pods_running(&mut h).await;
    // kubectl delete node: the node goes at once; its claim follows.
    assert_eq!(h.server.delete("Node", "", &node), 200);
    assert!(h.server.get("Node", "", &node).is_none());
    drained_onto_a_replacement(&mut h, &first, &node).await;
}

#[tokio::test]
async fn a_crash_in_launch_or_termination_leaves_nothing_leaked_duplicated_or_stuck_after_a_restart() {
    for point in [CrashPoint::BeforeLaunch, CrashPoint::AfterLaunch] {
        let mut h = Harness::new();
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
    for point in [CrashPoint::BeforeTerminate, CrashPoint::AfterTerminate] {
        let mut h = Harness::new();
        let (first, _) = two_pods_running(&mut h).await;
        assert_eq!(h.server.delete("NodeClaim", "", &first), 200);
        // Passes until the one that is killed.
        *h.cloud.armed.lock().unwrap() = Some(point);
        let mut passes = 0;
        loop {
            let killed = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(h.controllers())).await.is_err();
            h.stand_in();
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
        assert!(h.cloud_instance(&first).is_none(), "{point:?}");
    }
}

#[tokio::test]
async fn after_failover_the_new_leader_draws_fresh_names_launches_nothing_twice_and_places_every_pod() {
    let mut h = Harness::new();
    let (first, _) = two_pods_running(&mut h).await;
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

#[tokio::test]
async fn with_watch_caches_a_nodeclaim_deleted_by_hand_is_drained_and_released_from_what_the_watches_deliver() {
    let mut h = Harness::with_watch_caches().await;
    let (first, node) = two_pods_running(&mut h).await;
    assert_eq!(h.server.delete("NodeClaim", "", &first), 200);
    drained_onto_a_replacement(&mut h, &first, &node).await;
    let cache = h.cluster.cache().unwrap();
    assert_eq!(cache.node_claims.state().len(), 1, "the watch delivered the release");
    assert_eq!(cache.pods.state().len(), 2);
}

#[tokio::test]
async fn a_spot_interruption_drains_through_the_pdb_and_the_termination_path_finishes_what_the_budget_held() {
    let mut h = Harness::new();
    let (first, node) = two_pods_running(&mut h).await;
    let instance = h.cloud.instances().await.unwrap().into_iter().find(|i| i.claim == first).expect("its instance").id;
    let handler = nodewright_core::interruption::InterruptionHandler::new(h.cloud.clone(), h.cluster.clone(), h.provisioner.clone(), false);
    let outcome = handler.handle_event("m1", nodewright_core::interruption::InterruptionKind::SpotInterruption { instance }).await.unwrap();
    // The replacement first; then the budget lets one pod go, and holds the other.
    assert_eq!(
        outcome,
        nodewright_core::interruption::Outcome::Replaced { kind: "spot-interruption", claims: vec![first.clone()], replacements: 1, evicted: 1 }
    );
    let evictions = h.server.evictions();
    assert_eq!(evictions.iter().filter(|e| e.1).count(), 1, "{evictions:?}");
    assert!(evictions.iter().any(|e| !e.1), "the budget refused the second: {evictions:?}");
    // Marked for deletion, so the handed-over node survives the message
    // being deleted (and a restart).
    assert!(h.server.get("NodeClaim", "", &first).unwrap()["metadata"]["deletionTimestamp"].is_string());
    drained_onto_a_replacement(&mut h, &first, &node).await;
}
