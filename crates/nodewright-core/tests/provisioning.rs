//! Provisioning end to end on the simulated cloud and cluster.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::component;
use nodewright_core::cloud::{CloudProvider, SimulatedCloudConfig, UNAVAILABLE_FOR};
use nodewright_core::model::{
    Arch, Catalog, LabelSelector, NodePool, PodSpec, Requirement, Taint, TaintEffect, TopologyKey, well_known,
};
use nodewright_core::policy::{SelectionRequest, cheapest_ranking};
use nodewright_core::provisioning::{MAX_LAUNCH_OFFERINGS, selection_slot};
use nodewright_core::sim::{SimClock, WorldSettings};

const GIB: u64 = 1 << 30;

fn catalog() -> Arc<Catalog> {
    static CATALOG: OnceLock<Arc<Catalog>> = OnceLock::new();
    CATALOG.get_or_init(|| Arc::new(Catalog::bundled_types(400))).clone()
}

type World = common::TestWorld;

fn world(pools: Vec<NodePool>, capacity_failure: HashMap<u32, f64>) -> World {
    let settings = WorldSettings {
        cloud: SimulatedCloudConfig { seed: 3, capacity_failure, boot_latency: (Duration::from_secs(40), Duration::from_secs(50)), ..Default::default() },
        ..WorldSettings::default()
    };
    common::test_world(SimClock::default(), catalog(), pools, settings)
}

fn provision(world: &World) -> nodewright_core::provisioning::ProvisioningReport {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(world.provisioner.provision()).unwrap()
}

#[test]
fn a_plugin_that_prefers_arm64_produces_arm64_launches() {
    let pool = NodePool::new("default").selection("graviton-first", r#"{"within_percent": 100}"#);
    let w = world(vec![pool], HashMap::new());
    w.cluster.add_pods(PodSpec::requesting(1000, 2 * GIB).pods("web", 6));
    let report = provision(&w);
    assert_eq!(report.launched.len(), 1);
    assert_eq!(report.plugin_decisions, 1);
    let request = &w.cloud.launch_requests()[0];
    assert!(!request.offerings.is_empty());
    assert!(request.offerings.iter().take(10).all(|&o| catalog().offerings[o as usize].arch == Arch::Arm64));
    assert_eq!(catalog().offerings[report.launched[0].offering as usize].arch, Arch::Arm64);
}

#[test]
fn a_launch_request_carries_the_top_sixty_offerings_in_policy_order() {
    let w = world(vec![NodePool::new("default")], HashMap::new());
    w.cluster.add_pods(PodSpec::requesting(500, GIB).pods("web", 2));
    let report = provision(&w);
    let request = &w.cloud.launch_requests()[0];
    assert_eq!(request.offerings.len(), MAX_LAUNCH_OFFERINGS);
    assert_eq!(report.launched[0].candidates, MAX_LAUNCH_OFFERINGS);
    let prices: Vec<f64> = request.offerings.iter().map(|&o| catalog().offerings[o as usize].price_per_hour).collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "cheapest first: {prices:?}");
    // They are the cheapest of every feasible offering.
    let claim = &w.cluster.node_claims()[0];
    let feasible = catalog().feasible_for(&claim.requests);
    let native = cheapest_ranking(
        &catalog(),
        &SelectionRequest { node_pool: "default".into(), total: claim.requests, feasible, ..SelectionRequest::default() },
    );
    assert_eq!(native.top(), Some(request.offerings[0]));
    assert_eq!(report.launched[0].offering, request.offerings[0]);
}

#[test]
fn a_capacity_failure_falls_through_to_the_next_offering_and_benches_the_first_for_three_minutes() {
    let probe = world(vec![NodePool::new("default")], HashMap::new());
    probe.cluster.add_pods(PodSpec::requesting(500, GIB).pods("web", 1));
    provision(&probe);
    let first = probe.cloud.launch_requests()[0].offerings[0];

    let w = world(vec![NodePool::new("default")], HashMap::from([(first, 1.0)]));
    w.cluster.add_pods(PodSpec::requesting(500, GIB).pods("web", 1));
    let report = provision(&w);
    assert_eq!(report.launched.len(), 1);
    assert_ne!(report.launched[0].offering, first);
    assert_eq!(w.cloud.counters(), (1, 1));
    assert!(w.cloud.unavailable().contains(&first));

    // Within three minutes the next launch does not even offer it.
    w.clock.set(UNAVAILABLE_FOR - Duration::from_secs(1));
    let solo = PodSpec::requesting(500, GIB)
        .label("app", "solo")
        .anti_affinity(TopologyKey::Hostname, LabelSelector::label("app", "solo"));
    w.cluster.add_pods(solo.pods("solo", 2));
    // One joins the in-flight node, the other needs a node of its own.
    assert_eq!(provision(&w).launched.len(), 1);
    let later = w.cloud.launch_requests();
    assert!(later.len() > 1);
    assert!(later[1..].iter().all(|r| !r.offerings.contains(&first)), "benched offering offered again");
    // After three minutes it is back.
    w.clock.set(UNAVAILABLE_FOR + Duration::from_secs(1));
    assert!(!w.cloud.unavailable().contains(&first));
}

#[test]
fn a_failing_selection_plugin_falls_back_to_the_cheapest_and_still_launches() {
    // The turncoat fails every request for NodePool `poison`.
    let turncoat = component("hostile-turncoat").display().to_string();
    let pool = NodePool::new("poison").selection(&turncoat, "{}");
    let w = world(vec![pool], HashMap::new());
    w.cluster.add_pods(PodSpec::requesting(500, GIB).pods("web", 2));
    let report = provision(&w);
    assert_eq!((report.launched.len(), report.fallbacks, report.plugin_decisions), (1, 1, 0));
    let slot = w.registry.slot(&selection_slot("poison")).unwrap();
    assert_eq!(slot.stats().failures.get("plugin-error"), Some(&1));
    let prices: Vec<f64> =
        w.cloud.launch_requests()[0].offerings.iter().map(|&o| catalog().offerings[o as usize].price_per_hour).collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn a_node_pool_whose_plugin_cannot_load_keeps_provisioning_with_the_builtin_policy() {
    let pool = NodePool::new("default").selection("/nonexistent/policy.wasm", "{}");
    let w = world(vec![pool], HashMap::new());
    w.cluster.add_pods(PodSpec::requesting(500, GIB).pods("web", 1));
    let report = provision(&w);
    assert_eq!(report.launched.len(), 1);
    let stats = w.registry.slot(&selection_slot("default")).unwrap().stats();
    assert_eq!(stats.active, "builtin");
    assert!(stats.last_rejection.unwrap().starts_with("/nonexistent/policy.wasm: cannot read: "));
}

#[test]
fn pods_waiting_for_a_launched_node_claim_do_not_open_another() {
    let w = world(vec![NodePool::new("default")], HashMap::new());
    w.cluster.add_pods(PodSpec::requesting(500, GIB).pods("web", 4));
    assert_eq!(provision(&w).launched.len(), 1);
    let again = provision(&w);
    assert_eq!(again.pods, 4);
    assert_eq!(again.pods_on_existing, 4);
    assert!(again.launched.is_empty());
}

#[test]
fn unschedulable_pods_get_an_event_with_the_reason() {
    let pool = NodePool::new("default").require(Requirement::is_in(well_known::ARCH, &["arm64"]));
    let w = world(vec![pool], HashMap::new());
    w.cluster.add_pods(PodSpec::requesting(500, GIB).node_selector(well_known::ARCH, "amd64").pods("x86", 1));
    let report = provision(&w);
    assert!(report.launched.is_empty());
    let expected = "no offering in NodePool default (kubernetes.io/arch In [arm64]) satisfies kubernetes.io/arch In [amd64]";
    assert_eq!(w.cluster.events(), vec![("x86-0".to_string(), expected.to_string())]);
    // Every pass says it again; the record keeps it once.
    for _ in 0..3 {
        assert_eq!(provision(&w).unschedulable.len(), 1);
    }
    assert_eq!(w.cluster.events(), vec![("x86-0".to_string(), expected.to_string())]);
}

#[test]
fn a_node_claim_starts_with_the_pool_taints_and_startup_taints() {
    let mut pool = NodePool::new("default");
    pool.startup_taints.push(Taint { key: "node.cilium.io/agent-not-ready".into(), value: "true".into(), effect: TaintEffect::NoExecute });
    let w = world(vec![pool], HashMap::new());
    w.cluster.add_pods(PodSpec::requesting(500, GIB).pods("web", 1));
    provision(&w);
    assert_eq!(w.cloud.launch_requests()[0].taints.len(), 1);
    assert_eq!(w.cluster.node_claims()[0].taints[0].key, "node.cilium.io/agent-not-ready");
}

#[test]
fn a_launched_instance_is_ready_after_a_boot_latency_drawn_from_the_configured_range() {
    let w = world(vec![NodePool::new("default")], HashMap::new());
    w.clock.set(Duration::from_secs(100));
    let solo = PodSpec::requesting(500, GIB).label("app", "solo").anti_affinity(TopologyKey::Hostname, LabelSelector::label("app", "solo"));
    w.cluster.add_pods(solo.pods("solo", 5));
    let report = provision(&w);
    assert_eq!(report.launched.len(), 5);
    let claims = w.cluster.node_claims();
    let ready: Vec<Duration> = claims.iter().map(|c| w.cloud.ready_at(&c.instance.as_ref().unwrap().id).unwrap()).collect();
    assert!(ready.iter().all(|r| *r >= Duration::from_secs(140) && *r <= Duration::from_secs(150)), "{ready:?}");
    assert!(ready.windows(2).any(|w| w[0] != w[1]), "drawn, not fixed: {ready:?}");
}

#[test]
fn a_second_process_never_reuses_the_name_of_an_existing_node_claim() {
    use nodewright_core::provisioning::{ClaimSpec, Provisioner};
    let pool = NodePool::new("default");
    let w = world(vec![pool.clone()], HashMap::new());
    let executor = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let offering = catalog().offerings.iter().position(|o| o.capacity_type == nodewright_core::model::CapacityType::OnDemand).unwrap() as u32;
    let launch = |p: &Provisioner<_, _>| {
        let spec = ClaimSpec { pool: &pool, offerings: vec![offering], pods: vec![], requests: Default::default(), catalog_version: w.cloud.catalog().version };
        executor.block_on(p.launch_claim(spec)).unwrap().unwrap().claim
    };
    let first: Vec<String> = (0..3).map(|_| launch(&w.provisioner)).collect();
    for name in &first {
        let suffix = name.strip_prefix("default-").unwrap();
        assert_eq!(suffix.len(), 5, "{name}");
        assert!(suffix.bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)), "{name}");
    }
    // The worst case of a restart: a new process drawing the very same
    // names. The three taken ones are drawn again; nothing fails, nothing
    // launches twice.
    let restarted = Provisioner::new(w.cloud.clone(), w.cluster.clone(), w.registry.clone()).with_name_seed(3);
    let fourth = launch(&restarted);
    assert!(!first.contains(&fourth), "{fourth} reuses one of {first:?}");
    assert_eq!(w.cluster.node_claims().len(), 4);
    assert_eq!(w.cloud.launch_requests().len(), 4);
    // Two processes with seeds of their own draw different names.
    let other = Provisioner::new(w.cloud.clone(), w.cluster.clone(), w.registry.clone());
    let fifth = launch(&other);
    assert!(!first.contains(&fifth) && fifth != fourth);
    // Every name taken: the launch fails with a named error and launches nothing.
    let stuck = Provisioner::new(w.cloud.clone(), w.cluster.clone(), w.registry.clone()).with_name_seed(3);
    for _ in 0..4 {
        launch(&stuck); // draws past the four names seed 3 gave
    }
    let again = Provisioner::new(w.cloud.clone(), w.cluster.clone(), w.registry.clone()).with_name_seed(3);
    let spec = ClaimSpec { pool: &pool, offerings: vec![offering], pods: vec![], requests: Default::default(), catalog_version: w.cloud.catalog().version };
    let before = w.cloud.launch_requests().len();
    let err = executor.block_on(again.launch_claim(spec)).unwrap_err();
    assert_eq!(err.to_string(), "NodePool default: 8 NodeClaim names drawn were all taken");
    assert_eq!(w.cloud.launch_requests().len(), before);
}

/// A NodePool deleted after a pass read it: the claim for it is not made
/// and nothing is launched; the pass reports why and goes on.
#[test]
fn a_claim_for_a_node_pool_deleted_since_the_pass_read_it_is_not_made_and_nothing_is_launched() {
    use nodewright_core::provisioning::ClaimSpec;
    let pool = NodePool::new("default");
    let w = world(vec![pool.clone(), NodePool::new("other")], HashMap::new());
    w.cluster.set_node_pools(vec![NodePool::new("other")]);
    let executor = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let offering = catalog().offerings.iter().position(|o| o.capacity_type == nodewright_core::model::CapacityType::OnDemand).unwrap() as u32;
    let spec = ClaimSpec { pool: &pool, offerings: vec![offering], pods: vec!["shop/web-1".into()], requests: Default::default(), catalog_version: w.cloud.catalog().version };
    let (claim, why) = executor.block_on(w.provisioner.launch_claim(spec)).unwrap().unwrap_err();
    assert!(claim.starts_with("default-"), "{claim}");
    assert_eq!(why, "NodePool default was deleted: no NodeClaim created, its pods stay pending");
    assert!(w.cluster.node_claims().is_empty());
    assert!(w.cloud.launch_requests().is_empty());
    // Its sibling still gets its claim.
    let other = NodePool::new("other");
    let spec = ClaimSpec { pool: &other, offerings: vec![offering], pods: vec![], requests: Default::default(), catalog_version: w.cloud.catalog().version };
    let launched = executor.block_on(w.provisioner.launch_claim(spec)).unwrap().unwrap();
    assert_eq!(w.cluster.node_claims().iter().map(|c| c.name.clone()).collect::<Vec<_>>(), [launched.claim]);
}
