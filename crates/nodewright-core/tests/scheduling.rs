//! The scheduler, constraint by constraint.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use nodewright_core::model::{
    Arch, CapacityType, Catalog, LabelSelector, MinValues, NodePool, Operator, Pod, PodSpec, PoolLimits, Requirement, Taint,
    TaintEffect, Toleration, TopologyKey, well_known,
};
use nodewright_core::scheduling::{ExistingNode, Hints, SchedulingInput, SchedulingResult, node_labels, schedule, schedule_within};

const GIB: u64 = 1 << 30;

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(Catalog::bundled)
}

fn run(pools: &[NodePool], nodes: &[ExistingNode], pods: &[Pod]) -> SchedulingResult {
    run_with(pools, &[], nodes, pods)
}

fn run_with(pools: &[NodePool], daemonsets: &[PodSpec], nodes: &[ExistingNode], pods: &[Pod]) -> SchedulingResult {
    schedule(SchedulingInput { catalog: catalog(), pools, daemonsets, nodes, pods })
}

/// Every offering of every claim satisfies `check`.
fn all_offerings(result: &SchedulingResult, check: impl Fn(&nodewright_core::model::Offering) -> bool) -> bool {
    result.claims.iter().all(|c| c.offerings.iter().all(|&o| check(&catalog().offerings[o as usize])))
}

fn claim_zone(result: &SchedulingResult, claim: usize) -> String {
    let zones: std::collections::BTreeSet<&str> =
        result.claims[claim].offerings.iter().map(|&o| catalog().offerings[o as usize].zone.as_str()).collect();
    assert_eq!(zones.len(), 1, "claim {claim} is pinned to one zone: {zones:?}");
    zones.into_iter().next().unwrap().to_string()
}

/// A node of `pool` bought as the first offering named `instance_type` in `zone`.
fn node(name: &str, pool: &NodePool, instance_type: &str, zone: &str, pods: Vec<Arc<PodSpec>>) -> ExistingNode {
    let offering = catalog()
        .offerings
        .iter()
        .find(|o| o.instance_type == instance_type && o.zone == zone && o.capacity_type == CapacityType::OnDemand)
        .unwrap();
    ExistingNode {
        name: name.into(),
        node_pool: Some(pool.name.clone()),
        labels: Arc::new(node_labels(offering, pool, name)),
        taints: pool.taints.clone(),
        allocatable: offering.allocatable,
        capacity: offering.capacity,
        pods: Arc::new(pods),
        schedulable: true,
    }
}

#[test]
fn small_pods_pack_onto_one_new_node_claim_whose_offerings_all_hold_them() {
    let pods = PodSpec::requesting(500, GIB).pods("web", 3);
    let result = run(&[NodePool::new("default")], &[], &pods);
    assert_eq!(result.claims.len(), 1);
    let claim = &result.claims[0];
    assert_eq!(claim.pods.len(), 3);
    assert_eq!(claim.requests.cpu_millis, 1500);
    assert!(!claim.offerings.is_empty());
    assert!(all_offerings(&result, |o| o.allocatable.covers(&claim.requests)));
    assert!(result.unschedulable.is_empty());
}

#[test]
fn pods_fill_existing_nodes_before_any_new_node_claim() {
    let pool = NodePool::new("default");
    let nodes = vec![node("n1", &pool, "m5.xlarge", "us-east-1a", vec![])];
    let pods = PodSpec::requesting(1000, 2 * GIB).pods("web", 4);
    let result = run(std::slice::from_ref(&pool), &nodes, &pods);
    assert_eq!(result.bindings.len(), 3, "an m5.xlarge holds three 1-vCPU pods after reservations");
    assert!(result.bindings.iter().all(|&(_, n)| n == 0));
    assert_eq!(result.claims.len(), 1);
    assert_eq!(result.claims[0].pods.len(), 1);
}

#[test]
fn a_bounded_simulation_accepts_at_most_its_claims_bought_among_the_offerings_given() {
    let pool = NodePool::new("default");
    let pools = std::slice::from_ref(&pool);
    let nodes = vec![node("n1", &pool, "m5.xlarge", "us-east-1a", vec![])];
    let pods = PodSpec::requesting(1000, 2 * GIB).pods("web", 4);
    let within = |max: usize, buy: Option<&[u32]>| {
        schedule_within(SchedulingInput { catalog: catalog(), pools, daemonsets: &[], nodes: &nodes, pods: &pods }, max, Hints { buy, ..Hints::default() })
    };
    assert!(within(0, None).is_none(), "the fourth pod needs a new node");
    let one = within(1, None).expect("one new node holds the fourth pod");
    assert_eq!((one.bindings.len(), one.claims.len()), (3, 1));
    assert_eq!(one, run(pools, &nodes, &pods), "as the unbounded simulation places them");
    let of_type = |t: &str| -> Vec<u32> {
        catalog().largest_first.iter().copied().filter(|&o| catalog().offerings[o as usize].instance_type == t).collect()
    };
    assert!(within(1, Some(&of_type("t3.nano"))).is_none(), "a t3.nano cannot hold a 2 GiB pod");
    let large = of_type("m5.large");
    let bought = within(1, Some(&large)).expect("an m5.large holds it");
    assert!(!bought.claims[0].offerings.is_empty());
    assert!(bought.claims[0].offerings.iter().all(|o| large.contains(o)), "{:?}", bought.claims[0].offerings);
}

#[test]
fn a_hint_of_what_nodes_hold_places_pods_as_summing_their_pods_would() {
    let pool = NodePool::new("default");
    let held = PodSpec::requesting(2500, GIB).pods("held", 1).into_iter().map(|p| p.spec).collect();
    let nodes = vec![node("n1", &pool, "m5.xlarge", "us-east-1a", held), node("n2", &pool, "m5.xlarge", "us-east-1a", vec![])];
    let pods = PodSpec::requesting(1000, GIB).pods("web", 4);
    let pools = std::slice::from_ref(&pool);
    let input = || SchedulingInput { catalog: catalog(), pools, daemonsets: &[], nodes: &nodes, pods: &pods };
    let summed = schedule(input());
    // The hint covers n1 only; n2's pods are summed.
    let used = [nodes[0].used()];
    let hinted = nodewright_core::scheduling::schedule_hinted(input(), Hints { node_used: Some(&used), ..Hints::default() });
    assert_eq!(hinted, summed);
    assert_eq!(summed.bindings.iter().filter(|b| b.1 == 0).count(), 1, "n1 has room for one more: {summed:?}");
    // A hint that says n1 is full keeps pods off it.
    let full = [nodes[0].allocatable];
    let hinted = nodewright_core::scheduling::schedule_hinted(input(), Hints { node_used: Some(&full), ..Hints::default() });
    assert!(hinted.bindings.iter().all(|b| b.1 == 1), "{hinted:?}");
}

#[test]
fn a_removed_node_holds_nothing_for_topology_with_or_without_the_shared_cache() {
    use nodewright_core::scheduling::{NodeCache, schedule_hinted};
    let pool = NodePool::new("default");
    let web = PodSpec::requesting(500, GIB).label("app", "web").pods("web", 1).into_iter().map(|p| p.spec).collect();
    // n1 holds a web pod; n2, in the same zone, is empty.
    let nodes = vec![node("n1", &pool, "m5.xlarge", "us-east-1a", web), node("n2", &pool, "m5.xlarge", "us-east-1a", vec![])];
    let pods = PodSpec::requesting(500, GIB).anti_affinity(TopologyKey::Zone, LabelSelector::label("app", "web")).pods("apart", 1);
    let pools: &[NodePool] = &[];
    let input = || SchedulingInput { catalog: catalog(), pools, daemonsets: &[], nodes: &nodes, pods: &pods };
    let cache = NodeCache::new(nodes.len());
    for cache in [None, Some(&cache)] {
        // With n1 there, the zone holds a web pod: nowhere to go.
        let kept = schedule_hinted(input(), Hints { cache, ..Hints::default() });
        assert_eq!((kept.bindings.len(), kept.unschedulable.len()), (0, 1), "{kept:?}");
        // With n1 gone, its web pod counts nowhere and n2 takes the pod;
        // the counts the cache kept from the call above do not leak in.
        let gone = schedule_hinted(input(), Hints { cache, removed: &[0], ..Hints::default() });
        assert_eq!(gone.bindings, vec![(0, 1)], "{gone:?}");
    }
}

#[test]
fn a_bounded_simulation_still_relaxes_a_preference_no_offering_meets_before_giving_up() {
    let pool = NodePool::new("default");
    let nodes = vec![node("n1", &pool, "m5.xlarge", "us-east-1a", vec![])];
    let pods = PodSpec::requesting(1000, GIB).prefer(10, vec![Requirement::is_in(well_known::INSTANCE_TYPE, &["no-such-type"])]).pods("web", 1);
    let input = SchedulingInput { catalog: catalog(), pools: std::slice::from_ref(&pool), daemonsets: &[], nodes: &nodes, pods: &pods };
    let result = schedule_within(input, 0, Hints::default()).expect("the preference is dropped and the pod fits on n1");
    assert_eq!(result.bindings, vec![(0, 0)]);
    assert_eq!(result.relaxed, vec![(0, 1)]);
}

#[test]
fn a_cordoned_node_takes_no_pods() {
    let pool = NodePool::new("default");
    let mut cordoned = node("n1", &pool, "m5.xlarge", "us-east-1a", vec![]);
    cordoned.schedulable = false;
    let result = run(&[pool], &[cordoned], &PodSpec::requesting(100, GIB).pods("web", 1));
    assert!(result.bindings.is_empty());
    assert_eq!(result.claims.len(), 1);
}

#[test]
fn a_node_selector_limits_offerings_to_matching_labels() {
    let pods = PodSpec::requesting(500, GIB).node_selector(well_known::ARCH, "arm64").pods("web", 2);
    let result = run(&[NodePool::new("default")], &[], &pods);
    assert_eq!(result.claims.len(), 1);
    assert!(all_offerings(&result, |o| o.arch == Arch::Arm64));
}

#[test]
fn each_node_affinity_operator_filters_offerings() {
    let pool = NodePool::new("default").label("team", "web");
    type Check = Box<dyn Fn(&nodewright_core::model::Offering) -> bool>;
    let cases: Vec<(Requirement, Check)> = vec![
        (Requirement::is_in(well_known::FAMILY, &["m7g", "c7g"]), Box::new(|o| o.family == "m7g" || o.family == "c7g")),
        (Requirement::not_in(well_known::CAPACITY_TYPE, &["spot"]), Box::new(|o| o.capacity_type == CapacityType::OnDemand)),
        (Requirement::with(well_known::GENERATION, Operator::Gt, Some(6)), Box::new(|o| o.generation > 6)),
        (Requirement::with(well_known::CPU, Operator::Lt, Some(8)), Box::new(|o| o.capacity.cpu_millis < 8000)),
        (Requirement::with(well_known::GENERATION, Operator::Gte, Some(6)), Box::new(|o| o.generation >= 6)),
        (Requirement::with(well_known::CPU, Operator::Lte, Some(8)), Box::new(|o| o.capacity.cpu_millis <= 8000)),
        (Requirement::with("team", Operator::Exists, None), Box::new(|_| true)),
        (Requirement::is_in(well_known::ZONE, &["us-east-1b"]), Box::new(|o| o.zone == "us-east-1b")),
    ];
    for (requirement, check) in cases {
        let described = requirement.describe();
        let pods = PodSpec::requesting(500, GIB).require(vec![requirement]).pods("web", 1);
        let result = run(std::slice::from_ref(&pool), &[], &pods);
        assert_eq!(result.claims.len(), 1, "{described}: {:?}", result.unschedulable);
        assert!(all_offerings(&result, &check), "{described}");
    }
    // DoesNotExist on a label the pool sets: nothing in that pool fits.
    let pods = PodSpec::requesting(500, GIB).require(vec![Requirement::with("team", Operator::DoesNotExist, None)]).pods("web", 1);
    let result = run(std::slice::from_ref(&pool), &[], &pods);
    assert_eq!(result.unschedulable.len(), 1);
    assert_eq!(result.unschedulable[0].1, "no offering in NodePool default satisfies team DoesNotExist");
}

#[test]
fn required_terms_are_alternatives() {
    let pods = PodSpec::requesting(500, GIB)
        .require(vec![Requirement::is_in(well_known::INSTANCE_TYPE, &["m5.large"])])
        .require(vec![Requirement::is_in(well_known::INSTANCE_TYPE, &["m6g.large"])])
        .pods("web", 1);
    let result = run(&[NodePool::new("default")], &[], &pods);
    assert!(all_offerings(&result, |o| o.instance_type == "m5.large" || o.instance_type == "m6g.large"));
    let types: std::collections::BTreeSet<_> =
        result.claims[0].offerings.iter().map(|&o| catalog().offerings[o as usize].instance_type.clone()).collect();
    assert_eq!(types.len(), 2);
}

#[test]
fn a_taint_keeps_pods_without_a_toleration_out_of_its_node_pool() {
    let gpu = NodePool::new("gpu").weight(50).taint(Taint { key: "gpu".into(), value: "true".into(), effect: TaintEffect::NoSchedule });
    let default = NodePool::new("default");
    let plain = PodSpec::requesting(500, GIB).pods("web", 1);
    let result = run(&[gpu.clone(), default.clone()], &[], &plain);
    assert_eq!(result.claims[0].node_pool, "default", "the heavier pool is tainted");
    let tolerant = PodSpec::requesting(500, GIB).tolerate(Toleration::equal("gpu", "true", TaintEffect::NoSchedule)).pods("ml", 1);
    let result = run(&[gpu.clone(), default], &[], &tolerant);
    assert_eq!(result.claims[0].node_pool, "gpu");
    let result = run(&[gpu], &[], &plain);
    assert_eq!(result.unschedulable[0].1, "NodePool gpu has taint gpu=true:NoSchedule, which the pod does not tolerate");
}

#[test]
fn heavier_node_pools_are_tried_first() {
    let light = NodePool::new("light").weight(1);
    let heavy = NodePool::new("heavy").weight(90).require(Requirement::is_in(well_known::CAPACITY_TYPE, &["on-demand"]));
    let result = run(&[light, heavy], &[], &PodSpec::requesting(500, GIB).pods("web", 2));
    assert_eq!(result.claims.len(), 1);
    assert_eq!(result.claims[0].node_pool, "heavy");
    assert!(all_offerings(&result, |o| o.capacity_type == CapacityType::OnDemand));
}

#[test]
fn zone_topology_spread_puts_pods_evenly_in_every_zone() {
    let spec = PodSpec::requesting(1000, 2 * GIB).label("app", "web").spread(
        TopologyKey::Zone,
        1,
        true,
        LabelSelector::label("app", "web"),
    );
    let result = run(&[NodePool::new("default")], &[], &spec.pods("web", 6));
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for (c, claim) in result.claims.iter().enumerate() {
        *per_zone.entry(claim_zone(&result, c)).or_default() += claim.pods.len();
    }
    assert_eq!(per_zone.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{per_zone:?}");
}

#[test]
fn zone_spread_counts_pods_already_running() {
    let pool = NodePool::new("default");
    let web = Arc::new(PodSpec::requesting(100, GIB).label("app", "web"));
    let nodes = vec![node("a", &pool, "m5.large", "us-east-1a", vec![web.clone(), web.clone()])];
    let spec = PodSpec::requesting(100, GIB).label("app", "web").spread(TopologyKey::Zone, 1, true, LabelSelector::label("app", "web"));
    let result = run(&[pool], &nodes, &spec.pods("web", 2));
    let zones: Vec<String> = (0..result.claims.len()).map(|c| claim_zone(&result, c)).collect();
    assert!(result.bindings.is_empty(), "zone a already has two");
    assert_eq!(zones.len(), 2);
    assert!(!zones.contains(&"us-east-1a".to_string()), "{zones:?}");
}

#[test]
fn hostname_topology_spread_gives_each_pod_its_own_node() {
    let spec = PodSpec::requesting(250, GIB / 2).label("app", "api").spread(
        TopologyKey::Hostname,
        1,
        true,
        LabelSelector::label("app", "api"),
    );
    let result = run(&[NodePool::new("default")], &[], &spec.pods("api", 4));
    assert_eq!(result.claims.len(), 4);
    assert!(result.claims.iter().all(|c| c.pods.len() == 1));
}

#[test]
fn hostname_anti_affinity_separates_matching_pods_but_not_others() {
    let db = PodSpec::requesting(500, GIB).label("app", "db").anti_affinity(TopologyKey::Hostname, LabelSelector::label("app", "db"));
    let mut pods = db.pods("db", 3);
    pods.extend(PodSpec::requesting(100, GIB / 4).pods("side", 3));
    let result = run(&[NodePool::new("default")], &[], &pods);
    assert_eq!(result.claims.len(), 3);
    for claim in &result.claims {
        let dbs = claim.pods.iter().filter(|&&p| pods[p].name.starts_with("db")).count();
        assert_eq!(dbs, 1);
    }
}

#[test]
fn zone_pod_affinity_follows_the_pods_it_names() {
    let pool = NodePool::new("default");
    let cache = Arc::new(PodSpec::requesting(100, GIB).label("app", "cache"));
    let nodes = vec![node("c", &pool, "m5.large", "us-east-1b", vec![cache])];
    let spec = PodSpec::requesting(2000, 4 * GIB).affinity(TopologyKey::Zone, LabelSelector::label("app", "cache"));
    let result = run(&[pool], &nodes, &spec.pods("web", 3));
    assert!(!result.claims.is_empty());
    for c in 0..result.claims.len() {
        assert_eq!(claim_zone(&result, c), "us-east-1b");
    }
}

#[test]
fn hostname_pod_affinity_joins_the_node_of_the_pod_it_names() {
    let pool = NodePool::new("default");
    let cache = Arc::new(PodSpec::requesting(100, GIB).label("app", "cache"));
    let nodes = vec![
        node("empty", &pool, "m5.xlarge", "us-east-1a", vec![]),
        node("with-cache", &pool, "m5.xlarge", "us-east-1a", vec![cache]),
    ];
    let spec = PodSpec::requesting(500, GIB).affinity(TopologyKey::Hostname, LabelSelector::label("app", "cache"));
    let result = run(&[pool], &nodes, &spec.pods("sidecar", 2));
    assert_eq!(result.bindings.iter().map(|b| b.1).collect::<Vec<_>>(), vec![1, 1]);
}

#[test]
fn a_self_affine_group_starts_anywhere_then_stays_together() {
    let spec = PodSpec::requesting(1000, 2 * GIB).label("app", "etl").affinity(TopologyKey::Zone, LabelSelector::label("app", "etl"));
    let result = run(&[NodePool::new("default")], &[], &spec.pods("etl", 40));
    let zones: std::collections::BTreeSet<String> = (0..result.claims.len()).map(|c| claim_zone(&result, c)).collect();
    assert_eq!(zones.len(), 1, "{zones:?}");
    assert!(result.unschedulable.is_empty());
}

#[test]
fn node_pool_limits_stop_new_claims_and_say_so() {
    let pool = NodePool::new("default").limits(PoolLimits { cpu_millis: Some(8000), ..PoolLimits::default() });
    let pods = PodSpec::requesting(3000, 4 * GIB).anti_affinity(TopologyKey::Hostname, LabelSelector::label("app", "big")).label("app", "big").pods("big", 3);
    let result = run(&[pool], &[], &pods);
    assert_eq!(result.claims.len(), 2, "two 4-vCPU nodes fit in 8 vCPU");
    assert_eq!(result.unschedulable.len(), 1);
    assert_eq!(result.unschedulable[0].1, "NodePool default would exceed its limits (cpu 8)");
}

#[test]
fn a_node_count_limit_counts_existing_nodes_and_new_claims() {
    let pool = NodePool::new("default").limits(PoolLimits { nodes: Some(3), ..PoolLimits::default() });
    let existing = node("old-1", &pool, "m5.xlarge", "us-east-1a", vec![]);
    let pods = PodSpec::requesting(3000, 4 * GIB).anti_affinity(TopologyKey::Hostname, LabelSelector::label("app", "big")).label("app", "big").pods("big", 4);
    let result = run(&[pool], &[existing], &pods);
    // One pod goes to the existing node, two to new claims (3 nodes), the last waits.
    assert_eq!(result.claims.len(), 2);
    assert_eq!(result.unschedulable.len(), 1);
    assert_eq!(result.unschedulable[0].1, "NodePool default would exceed its limits (nodes 3)");
}

#[test]
fn a_pods_limit_counts_the_instance_types_max_pods() {
    let max_pods = catalog().offerings.iter().find(|o| o.instance_type == "m5.xlarge").unwrap().capacity.pods;
    let limit = u64::from(max_pods) * 5 / 2;
    let pool = NodePool::new("default")
        .require(Requirement::is_in(well_known::INSTANCE_TYPE, &["m5.xlarge"]))
        .limits(PoolLimits { pods: Some(limit), ..PoolLimits::default() });
    let spread = PodSpec::requesting(100, GIB / 4).anti_affinity(TopologyKey::Hostname, LabelSelector::label("app", "s")).label("app", "s");
    let result = run(&[pool], &[], &spread.pods("s", 3));
    assert_eq!(result.claims.len(), 2, "two m5.xlarge of {max_pods} pods each fit in {limit}");
    assert_eq!(result.unschedulable.len(), 1);
    assert_eq!(result.unschedulable[0].1, format!("NodePool default would exceed its limits (pods {limit})"));
}

/// Distinct values of `key` among the offerings of claim `c`.
fn distinct(result: &SchedulingResult, c: usize, key: &str) -> usize {
    let label = |o: &nodewright_core::model::Offering| match key {
        well_known::FAMILY => o.family.clone(),
        well_known::INSTANCE_TYPE => o.instance_type.clone(),
        _ => unreachable!("a key this test uses"),
    };
    result.claims[c].offerings.iter().map(|&o| label(&catalog().offerings[o as usize])).collect::<std::collections::BTreeSet<_>>().len()
}

#[test]
fn min_values_keep_that_many_families_in_every_claim_or_the_pod_waits_saying_so() {
    let families = ["m5", "c5", "r5", "m6i", "c6i", "r6i"];
    let base = || {
        NodePool::new("default")
            .require(Requirement::is_in(well_known::CAPACITY_TYPE, &["on-demand"]))
            .require(Requirement::is_in(well_known::FAMILY, &families))
    };
    let mut pool = base();
    pool.min_values = vec![MinValues { key: well_known::FAMILY.into(), count: 5 }];
    // Pods of 16 CPU: a claim fills up until fewer than five of the six
    // families have a type that holds it, then a new claim opens.
    let pods = PodSpec::requesting(16_000, 32 * GIB).pods("big", 12);
    let strict = run(std::slice::from_ref(&pool), &[], &pods);
    assert!(strict.unschedulable.is_empty(), "{:?}", strict.unschedulable);
    for c in 0..strict.claims.len() {
        assert!(distinct(&strict, c, well_known::FAMILY) >= 5, "claim {c} keeps {} families", distinct(&strict, c, well_known::FAMILY));
    }
    // Without minValues the same pods pack onto fewer claims, some of them
    // open to fewer families.
    let loose = run(&[base()], &[], &pods);
    assert!(loose.claims.len() < strict.claims.len(), "{} claims against {}", loose.claims.len(), strict.claims.len());
    assert!((0..loose.claims.len()).any(|c| distinct(&loose, c, well_known::FAMILY) < 5));
    // More instance types than the catalog has: the pod waits, and says why.
    pool.min_values = vec![MinValues { key: well_known::INSTANCE_TYPE.into(), count: 100_000 }];
    let result = run(&[pool], &[], &PodSpec::requesting(500, GIB).pods("web", 1));
    assert!(result.claims.is_empty());
    let reason = &result.unschedulable[0].1;
    assert!(
        reason.starts_with("NodePool default requires at least 100000 distinct node.kubernetes.io/instance-type values (")
            && reason.ends_with(" here) (minValues) among the offerings that hold the pod"),
        "{reason}"
    );
}

#[test]
fn higher_priority_pods_are_placed_first_when_room_is_short() {
    let pool = NodePool::new("default").limits(PoolLimits { cpu_millis: Some(4000), ..PoolLimits::default() });
    let mut pods = PodSpec::requesting(3000, 4 * GIB).label("tier", "low").pods("low", 1);
    pods.extend(PodSpec::requesting(3000, 4 * GIB).label("tier", "high").priority(1000).pods("high", 1));
    let result = run(&[pool], &[], &pods);
    assert_eq!(result.claims.len(), 1);
    assert_eq!(pods[result.claims[0].pods[0]].name.as_ref(), "high-0");
    assert_eq!(pods[result.unschedulable[0].0].name.as_ref(), "low-0");
}

#[test]
fn daemonset_overhead_is_added_to_every_new_node() {
    let daemonsets = [PodSpec::requesting(200, GIB / 2)];
    let result = run_with(&[NodePool::new("default")], &daemonsets, &[], &PodSpec::requesting(500, GIB).pods("web", 1));
    assert_eq!(result.claims[0].requests.cpu_millis, 700);
    assert_eq!(result.claims[0].requests.pods, 2);
}

#[test]
fn a_preferred_affinity_is_honoured_when_it_can_be() {
    let spec = PodSpec::requesting(500, GIB).prefer(50, vec![Requirement::is_in(well_known::ARCH, &["arm64"])]);
    let result = run(&[NodePool::new("default")], &[], &spec.pods("web", 2));
    assert!(all_offerings(&result, |o| o.arch == Arch::Arm64));
    assert!(result.relaxed.is_empty());
}

#[test]
fn preferences_are_relaxed_one_at_a_time_lightest_first() {
    let pool = NodePool::new("default").require(Requirement::is_in(well_known::ARCH, &["amd64"]));
    let spec = PodSpec::requesting(500, GIB)
        .prefer(10, vec![Requirement::is_in(well_known::ARCH, &["arm64"])])
        .prefer(80, vec![Requirement::is_in(well_known::ZONE, &["us-east-1c"])]);
    let result = run(&[pool], &[], &spec.pods("web", 1));
    assert_eq!(result.relaxed, vec![(0, 1)], "only the lighter arm64 preference was dropped");
    assert_eq!(claim_zone(&result, 0), "us-east-1c");
    assert!(all_offerings(&result, |o| o.arch == Arch::Amd64));
}

#[test]
fn a_schedule_anyway_spread_gives_way_when_it_cannot_be_met() {
    let pool = NodePool::new("default").require(Requirement::is_in(well_known::ZONE, &["us-east-1a"]));
    let spec = PodSpec::requesting(500, GIB).label("app", "w").spread(TopologyKey::Zone, 1, false, LabelSelector::label("app", "w"));
    let result = run(&[pool], &[], &spec.pods("w", 4));
    assert!(result.unschedulable.is_empty(), "{:?}", result.unschedulable);
    let hard = PodSpec::requesting(500, GIB).label("app", "w").spread(TopologyKey::Zone, 1, true, LabelSelector::label("app", "w"));
    let pool = NodePool::new("default").require(Requirement::is_in(well_known::ZONE, &["us-east-1a"]));
    let result = run(&[pool], &[], &hard.pods("w", 4));
    assert_eq!(result.unschedulable.len(), 3, "zones b and c count as domains and stay empty");
}

#[test]
fn an_unplaceable_pod_gets_a_reason_a_human_can_act_on() {
    let pool = NodePool::new("default").require(Requirement::is_in(well_known::ARCH, &["arm64"]));
    let pods = PodSpec::requesting(4000, 16 * GIB).gpus(4).pods("train", 1);
    let result = run(&[pool], &[], &pods);
    assert!(result.claims.is_empty());
    assert_eq!(
        result.unschedulable,
        vec![(0, "no offering in NodePool default (kubernetes.io/arch In [arm64]) has 4000m CPU, 16384 MiB memory, 4 GPUs".to_string())]
    );
    let pods = PodSpec::requesting(4000, 16 * GIB).gpus(4).node_selector(well_known::CAPACITY_TYPE, "spot").pods("train", 1);
    let pool = NodePool::new("default").require(Requirement::is_in(well_known::ARCH, &["arm64"]));
    let result = run(&[pool], &[], &pods);
    assert_eq!(
        result.unschedulable[0].1,
        "no offering in NodePool default (kubernetes.io/arch In [arm64]) has 4000m CPU, 16384 MiB memory, 4 GPUs and karpenter.sh/capacity-type In [spot]"
    );
}

#[test]
fn a_spread_over_a_custom_node_label_counts_the_nodepools_label_values() {
    let mut rack_a = NodePool::new("rack-a");
    rack_a.weight = 20;
    rack_a.labels.insert("example.com/rack".into(), "a".into());
    let mut rack_b = NodePool::new("rack-b");
    rack_b.labels.insert("example.com/rack".into(), "b".into());
    let rack = TopologyKey::Label("example.com/rack".into());
    let spec = PodSpec::requesting(500, GIB).label("app", "db").spread(rack.clone(), 1, true, LabelSelector::label("app", "db"));
    let pods = spec.clone().pods("db", 4);
    let pools = [rack_a.clone(), rack_b.clone()];
    let result = run(&pools, &[], &pods);
    assert!(result.unschedulable.is_empty(), "{:?}", result.unschedulable);
    let per_pool = |pool: &str| result.claims.iter().filter(|c| c.node_pool == pool).map(|c| c.pods.len()).sum::<usize>();
    // The heavier pool alone would take all four; the spread keeps them two and two.
    assert_eq!((per_pool("rack-a"), per_pool("rack-b")), (2, 2));
    // With a node of rack a holding two already, the next two go to rack b.
    let spec = Arc::new(spec);
    let full = node("a-1", &rack_a, "m5.xlarge", "us-east-1a", vec![spec.clone(), spec.clone()]);
    let result = run(&pools, std::slice::from_ref(&full), &spec.as_ref().clone().pods("db-late", 2));
    assert!(result.bindings.is_empty());
    assert_eq!(result.claims.iter().map(|c| c.node_pool.as_str()).collect::<Vec<_>>(), ["rack-b"]);
    // A pool without the label is in no domain: a hard spread never goes there.
    let result = run(&[NodePool::new("plain")], &[], &pods);
    assert_eq!(result.unschedulable.len(), 4);
}

#[test]
fn anti_affinity_on_the_capacity_type_pins_each_claim_to_one_capacity_type() {
    let anti = TopologyKey::Label(well_known::CAPACITY_TYPE.into());
    let pods = PodSpec::requesting(500, GIB).label("app", "w").anti_affinity(anti, LabelSelector::label("app", "w")).pods("w", 3);
    let result = run(&[NodePool::new("default")], &[], &pods);
    // Two capacity types in the pool (spot, on-demand): two pods placed, one left.
    assert_eq!(result.claims.len(), 2, "{:?}", result.claims.iter().map(|c| c.pods.clone()).collect::<Vec<_>>());
    let types: Vec<std::collections::BTreeSet<&str>> = result
        .claims
        .iter()
        .map(|c| c.offerings.iter().map(|&o| catalog().offerings[o as usize].capacity_type.label()).collect())
        .collect();
    assert!(types.iter().all(|t| t.len() == 1), "{types:?}");
    assert_ne!(types[0], types[1]);
    assert_eq!(result.unschedulable.len(), 1);
}

#[test]
fn a_new_claims_offerings_remembered_from_an_earlier_pass_are_those_worked_out_afresh() {
    // The solver remembers a new claim's list only for pools without
    // limits: the same pool with limits no pod reaches works it out every
    // time, and must agree, pass after pass, whatever was remembered.
    let unbounded = PoolLimits { cpu_millis: Some(u64::MAX / 4), ..PoolLimits::default() };
    let spread = PodSpec::requesting(1000, 2 * GIB).label("app", "web").spread(TopologyKey::Zone, 1, true, LabelSelector::label("app", "web"));
    let shapes: Vec<Vec<Pod>> = vec![
        PodSpec::requesting(1500, 3 * GIB).pods("plain", 1),
        PodSpec::requesting(500, GIB).node_selector(well_known::ARCH, "arm64").pods("arm", 1),
        spread.pods("web", 4),
        PodSpec::requesting(30_000, 60 * GIB).pods("big", 1),
    ];
    let pools = [
        NodePool::new("default"),
        NodePool::new("default").require(Requirement::is_in(well_known::CAPACITY_TYPE, &["on-demand"])),
        NodePool::new("other"),
    ];
    let offerings = |result: &SchedulingResult| result.claims.iter().map(|c| (c.pods.clone(), c.offerings.clone())).collect::<Vec<_>>();
    for round in 0..2 {
        for pool in &pools {
            for pods in &shapes {
                let remembered = run(std::slice::from_ref(pool), &[], pods);
                let afresh = run(&[pool.clone().limits(unbounded)], &[], pods);
                assert!(!remembered.claims.is_empty() && remembered.unschedulable.is_empty(), "{}: {:?}", pool.name, remembered.unschedulable);
                assert_eq!(offerings(&remembered), offerings(&afresh), "round {round}, pool {} {:?}, {}", pool.name, pool.requirements, pods[0].name);
            }
        }
        // The second NodePool named `default` buys on demand only, the first any capacity type.
        let any = run(&[pools[0].clone()], &[], &shapes[0]);
        let on_demand = run(&[pools[1].clone()], &[], &shapes[0]);
        assert!(all_offerings(&on_demand, |o| o.capacity_type == CapacityType::OnDemand));
        assert!(!all_offerings(&any, |o| o.capacity_type == CapacityType::OnDemand));
    }
}
