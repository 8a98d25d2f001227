//! Disruption scenarios on the simulated cloud and cluster: the real
//! controller, the real scheduler, real plugins.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::component;
use nodewright_core::cloud::{CloudProvider, SimulatedCloudConfig};
use nodewright_core::cluster::Cluster;
use nodewright_core::disruption::{DisruptionReport, DisruptionSettings, Reason, RejectKind};
use nodewright_core::model::{
    Budget, BudgetNodes, CapacityType, Catalog, ConsolidationPolicy, IntOrPercent, LabelSelector, NodePool, PdbLimit, PodDisruptionBudget, PodSpec,
    Requirement, well_known,
};
use nodewright_core::interruption::InterruptionKind;
use nodewright_core::provisioning::ClaimSpec;
use nodewright_core::sim::{SimClock, WorldSettings};

const GIB: u64 = 1 << 30;

fn catalog() -> Arc<Catalog> {
    static CATALOG: OnceLock<Arc<Catalog>> = OnceLock::new();
    CATALOG.get_or_init(|| Arc::new(Catalog::bundled())).clone()
}

/// On-demand, one zone: prices (and so choices) are plain to read.
fn pool() -> NodePool {
    let mut pool = NodePool::new("default")
        .require(Requirement::is_in(well_known::CAPACITY_TYPE, &["on-demand"]))
        .require(Requirement::is_in(well_known::ZONE, &["us-east-1a"]))
        .selection("karpenter-like", "{}")
        .consolidation("karpenter-like", "{}");
    pool.consolidate_after = Some(Duration::from_secs(60));
    pool.budgets = vec![Budget { nodes: BudgetNodes::Percent(100), reasons: vec![], schedule: None, duration: None }];
    pool
}

/// The simulated world with its controllers, and what the disruption
/// controller reported pass by pass.
struct World {
    world: common::TestWorld,
    executor: tokio::runtime::Runtime,
    reports: Vec<(u64, DisruptionReport)>,
}

impl std::ops::Deref for World {
    type Target = nodewright_core::sim::World;
    fn deref(&self) -> &Self::Target {
        &self.world
    }
}

fn world(pools: Vec<NodePool>) -> World {
    world_with(pools, DisruptionSettings::default())
}

fn world_with(pools: Vec<NodePool>, disruption: DisruptionSettings) -> World {
    let settings = WorldSettings {
        cloud: SimulatedCloudConfig { seed: 3, boot_latency: (Duration::ZERO, Duration::ZERO), ..Default::default() },
        disruption,
        ..WorldSettings::default()
    };
    let world = common::test_world(SimClock::default(), catalog(), pools, settings);
    let executor = tokio::runtime::Builder::new_current_thread().build().unwrap();
    World { world, executor, reports: Vec::new() }
}

fn offering(instance_type: &str) -> u32 {
    catalog()
        .offerings
        .iter()
        .position(|o| o.instance_type == instance_type && o.capacity_type == CapacityType::OnDemand && o.zone == "us-east-1a")
        .unwrap_or_else(|| panic!("{instance_type} on-demand in us-east-1a")) as u32
}

fn price(instance_type: &str) -> f64 {
    catalog().offerings[offering(instance_type) as usize].price_per_hour
}

impl World {
    fn now(&self) -> u64 {
        self.clock.now().as_secs()
    }

    /// A ready node of the first NodePool bought as `instance_type`.
    fn node(&self, instance_type: &str) -> String {
        self.node_as(offering(instance_type))
    }

    /// A ready node of the first NodePool bought as catalog offering `offering`.
    fn node_as(&self, offering: u32) -> String {
        let pools = self.executor.block_on(self.cluster.node_pools()).unwrap();
        let pool = &pools[0];
        let spec = ClaimSpec { pool, offerings: vec![offering], pods: vec![], requests: Default::default(), catalog_version: self.cloud.catalog().version };
        let launched = self.executor.block_on(self.provisioner.launch_claim(spec)).unwrap().unwrap();
        self.register(&launched.claim).unwrap();
        launched.claim
    }

    /// `n` pods of `spec` bound to `node`; returns their names.
    fn put(&self, node: &str, prefix: &str, spec: PodSpec, n: usize) -> Vec<String> {
        let pods = spec.pods(prefix, n);
        let names: Vec<String> = pods.iter().map(|p| p.name.to_string()).collect();
        self.cluster.add_pods(pods);
        for name in &names {
            self.cluster.bind(name, node).unwrap();
        }
        names
    }

    /// Advance the clock by `seconds` in passes `step` seconds apart. After
    /// each pass, launched nodes register at once and the cluster's
    /// kube-scheduler binds the pending pods that fit.
    fn run(&mut self, seconds: u64, step: u64) {
        let end = self.now() + seconds;
        while self.now() < end {
            self.clock.set(self.clock.now() + Duration::from_secs(step));
            let report = self.executor.block_on(self.world.disruption.reconcile()).unwrap();
            self.settle();
            self.executor.block_on(self.provisioner.provision()).unwrap();
            self.settle();
            self.reports.push((self.now(), report));
        }
    }

    /// Launched instances boot at once; the scheduler binds what fits.
    fn settle(&self) {
        for instance in self.cloud.take_launched() {
            self.register(&instance.claim).unwrap();
        }
        self.cluster.schedule_pending(true);
    }

    fn nodes(&self) -> Vec<(String, String)> {
        self.cluster
            .node_claims()
            .into_iter()
            .map(|c| (c.name, catalog().offerings[c.instance.unwrap().offering as usize].instance_type.clone()))
            .collect()
    }

    fn terminated(&self) -> Vec<(u64, String, Reason)> {
        self.reports.iter().flat_map(|(t, r)| r.terminated.iter().map(|(n, why)| (*t, n.clone(), *why))).collect()
    }

    fn rejections(&self) -> Vec<(RejectKind, String)> {
        self.reports.iter().flat_map(|(_, r)| r.rejected.iter().map(|x| (x.kind, x.message.clone()))).collect()
    }

    /// The validation rule of each rejection, and the controller's count by rule.
    fn rules(&self) -> (Vec<&'static str>, Vec<(&'static str, u64)>) {
        let rules = self.reports.iter().flat_map(|(_, r)| r.rejected.iter().map(|x| x.rule)).collect();
        (rules, self.world.disruption.counts().rejected_by_rule.iter().map(|(k, v)| (*k, *v)).collect())
    }
}

/// A PodDisruptionBudget `default/APP` over the pods labelled `app: APP`.
fn pdb(app: &str, limit: PdbLimit) -> PodDisruptionBudget {
    PodDisruptionBudget { name: format!("default/{app}"), selector: LabelSelector::label("app", app), limit }
}

fn pod(cpu_millis: u32, memory_gib: u64) -> PodSpec {
    PodSpec::requesting(cpu_millis, memory_gib * GIB)
}

#[test]
fn an_empty_node_is_deleted_after_consolidate_after() {
    let mut w = world(vec![pool()]);
    let busy = w.node("m5.large");
    w.put(&busy, "web", pod(1500, 4), 1);
    let idle = w.node("m5.large");
    w.run(50, 10);
    assert!(w.terminated().is_empty(), "nothing goes before consolidateAfter (60 s)");
    w.run(60, 10);
    let terminated = w.terminated();
    assert_eq!(terminated.len(), 1, "{terminated:?}");
    let (at, node, reason) = &terminated[0];
    assert_eq!((node, *reason), (&idle, Reason::Empty));
    // Decided at 60 s, re-validated 15 s later.
    assert!(*at >= 75, "deleted at {at} s");
    assert_eq!(w.nodes(), vec![(busy, "m5.large".to_string())]);
}

#[test]
fn a_pass_that_found_nothing_is_skipped_until_the_cluster_changes() {
    let mut w = world(vec![pool()]);
    // Two half-used nodes that cannot be consolidated while their pods say so.
    let a = w.node("m5.large");
    w.put(&a, "web", pod(500, 1).do_not_disrupt(), 1);
    let b = w.node("m5.large");
    let job = w.put(&b, "job", pod(500, 1).do_not_disrupt(), 1);
    w.run(600, 10);
    let settled = w.disruption.counts().clone();
    let nodes = w.nodes();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    w.run(600, 10);
    let quiet = w.disruption.counts().clone();
    assert_eq!(quiet.passes, settled.passes, "nothing changed, so no pass ran: {quiet:?}");
    assert_eq!(quiet.passes_skipped - settled.passes_skipped, 60, "{quiet:?}");
    assert_eq!(w.nodes(), nodes);
    // The job ends: its node is empty, and is deleted once empty for consolidateAfter.
    assert!(w.cluster.delete_pod(&job[0]));
    let before = w.terminated().len();
    w.run(100, 10);
    assert!(w.disruption.counts().passes > quiet.passes);
    let terminated: Vec<Reason> = w.terminated()[before..].iter().map(|(_, _, r)| *r).collect();
    assert_eq!(terminated, vec![Reason::Empty]);
    assert_eq!(w.nodes().len(), 1);
}

#[test]
fn a_node_whose_pods_were_replaced_by_smaller_ones_is_consolidated_though_it_holds_as_many() {
    // The cheapest offering of the pool with 15 CPU: nothing cheaper holds
    // two pods of 7.5 CPU, so a pass finds nothing to do.
    let cat = catalog();
    let big = cat
        .offerings
        .iter()
        .filter(|o| o.capacity_type == CapacityType::OnDemand && o.zone == "us-east-1a" && o.allocatable.cpu_millis >= 15_000 && o.allocatable.memory_bytes >= 4 * GIB)
        .min_by(|a, b| a.price_per_hour.total_cmp(&b.price_per_hour))
        .unwrap()
        .instance_type
        .clone();
    let mut w = world(vec![pool()]);
    let node = w.node(&big);
    let large = w.put(&node, "batch", pod(7_500, 1), 2);
    w.run(180, 10);
    assert_eq!(w.nodes(), vec![(node.clone(), big.clone())], "nothing cheaper holds 15 CPU");
    // The same number of pods, now small: a cheaper node holds them.
    for name in &large {
        assert!(w.cluster.delete_pod(name));
    }
    w.put(&node, "web", pod(500, 1), 2);
    w.run(180, 10);
    let terminated: Vec<(String, Reason)> = w.terminated().into_iter().map(|(_, n, r)| (n, r)).collect();
    assert_eq!(terminated, vec![(node, Reason::Underutilized)]);
    let nodes = w.nodes();
    assert!(nodes.len() == 1 && price(&nodes[0].1) < price(&big), "{nodes:?}");
}

#[test]
fn a_consolidation_policy_swapped_in_plans_at_the_next_poll_though_the_cluster_has_not_changed() {
    // `empty-only` keeps an under-used node; nothing in the cluster changes
    // after that, and its plan is skipped pass after pass.
    let mut w = world(vec![pool().consolidation("empty-only", "{}")]);
    let big = w.node("m5.4xlarge");
    w.put(&big, "api", pod(500, 1), 2);
    w.run(300, 10);
    assert!(w.terminated().is_empty(), "{:?}", w.terminated());
    // The slot's policy is swapped (as a PolicyPlugin object does in a
    // running cluster): the next plan is the new policy's.
    let bytes = nodewright_core::policy::bundled::get("utilization-threshold").unwrap();
    let slot = nodewright_core::disruption::consolidation_slot("default");
    w.registry.load(&slot, nodewright_core::policy::Role::Consolidation, bytes, "{}", nodewright_core::policy::SlotMode::Active).unwrap();
    w.run(120, 10);
    let terminated: Vec<(String, Reason)> = w.terminated().into_iter().map(|(_, n, r)| (n, r)).collect();
    assert_eq!(terminated, vec![(big, Reason::Underutilized)]);
}

#[test]
fn a_consolidation_plugin_waiting_for_a_node_to_age_is_asked_again_though_nothing_else_changes() {
    // `empty-only` leaves an empty node alone until it is two minutes old;
    // nothing in the cluster changes after the first pass, and the plugin
    // reads what no skip can follow (node ages).
    let mut p = pool().consolidation("empty-only", r#"{"min_age_seconds": 120}"#);
    p.consolidate_after = Some(Duration::ZERO);
    let mut w = world(vec![p]);
    let busy = w.node("m5.large");
    w.put(&busy, "web", pod(1500, 4), 1);
    let idle = w.node("m5.large");
    w.run(100, 10);
    assert!(w.terminated().is_empty(), "{:?}", w.terminated());
    w.run(100, 10);
    let terminated = w.terminated();
    assert_eq!(terminated.iter().map(|(_, n, r)| (n.clone(), *r)).collect::<Vec<_>>(), vec![(idle, Reason::Empty)]);
    // Decided at the first poll at 120 s or later, re-validated 15 s later.
    assert!((135..=145).contains(&terminated[0].0), "deleted at {} s", terminated[0].0);
}

#[test]
fn a_node_the_budget_held_back_is_consolidated_when_its_window_ends_though_nothing_else_changes() {
    // No node may go for being under-used in the first five minutes of the
    // day (the simulated clock starts at midnight); the under-used node
    // waits for the window to end, and nothing else changes.
    let mut p = pool();
    p.budgets.push(Budget { nodes: BudgetNodes::Count(0), reasons: vec!["Underutilized".into()], schedule: Some("0 0 * * *".into()), duration: Some(Duration::from_secs(300)) });
    let mut w = world(vec![p]);
    let big = w.node("m5.4xlarge");
    w.put(&big, "api", pod(500, 1), 2);
    w.run(290, 10);
    assert!(w.terminated().is_empty(), "{:?}", w.terminated());
    w.run(120, 10);
    let terminated = w.terminated();
    assert_eq!(terminated.iter().map(|(_, n, r)| (n.clone(), *r)).collect::<Vec<_>>(), vec![(big.clone(), Reason::Underutilized)]);
    // Decided at the first poll after the window.
    assert_eq!(decided_at(&w, &big), vec![310], "{:?}", w.disruption.counts());
}

#[test]
fn a_nodepool_edited_to_consolidate_under_used_nodes_plans_at_the_next_poll() {
    let mut p = pool();
    p.consolidation_policy = ConsolidationPolicy::WhenEmpty;
    let mut w = world(vec![p.clone()]);
    let big = w.node("m5.4xlarge");
    w.put(&big, "api", pod(500, 1), 2);
    w.run(180, 10);
    assert!(w.terminated().is_empty(), "{:?}", w.terminated());
    // Only the NodePool changes.
    p.consolidation_policy = ConsolidationPolicy::WhenEmptyOrUnderutilized;
    w.cluster.set_node_pools(vec![p]);
    w.run(10, 10);
    assert_eq!(decided_at(&w, &big), vec![190]);
}

#[test]
fn a_replacement_is_chosen_among_what_the_selection_plugin_accepts_now_not_when_it_last_looked() {
    // `backlog-spot` (contract 0.3.0) buys spot only while pods are pending.
    let mut p = pool().selection(component("backlog-spot").to_str().unwrap(), "{}");
    p.requirements.retain(|r| r.key != well_known::CAPACITY_TYPE);
    let p = p.require(Requirement::is_in(well_known::CAPACITY_TYPE, &["on-demand", "spot"]));
    let mut w = world(vec![p]);
    let replacements = |w: &World| -> Vec<CapacityType> {
        w.reports
            .iter()
            .flat_map(|(_, r)| r.started.iter())
            .filter_map(|c| match c.replacement {
                nodewright_core::disruption::Replacement::Offering(o) => Some(catalog().offerings[o as usize].capacity_type),
                _ => None,
            })
            .collect()
    };
    // Nothing pending: an under-used node is replaced on demand.
    let first = w.node("m5.4xlarge");
    w.put(&first, "api", pod(500, 1), 2);
    w.run(180, 10);
    assert_eq!(replacements(&w), vec![CapacityType::OnDemand]);
    // A pod no node can hold waits (its selector names no label a node has);
    // another under-used node is replaced, now as spot.
    let mut stuck = pod(100, 1);
    stuck.node_selector.insert("team".into(), "nobody".into());
    w.cluster.add_pods(stuck.pods("stuck", 1));
    let second = w.node("m5.4xlarge");
    w.put(&second, "web", pod(1500, 4), 3);
    w.run(180, 10);
    assert!(w.executor.block_on(w.cluster.pending_count()).unwrap() > 0);
    assert_eq!(replacements(&w), vec![CapacityType::OnDemand, CapacityType::Spot]);
}

#[test]
fn a_skipped_pass_does_not_miss_a_node_reaching_consolidate_after() {
    // Nothing changes in the cluster after the first pass; the empty node
    // still goes once it has been empty for consolidateAfter.
    let mut w = world(vec![pool()]);
    let busy = w.node("m5.large");
    w.put(&busy, "web", pod(1500, 4), 1);
    let idle = w.node("m5.large");
    w.run(50, 10);
    assert!(w.disruption.counts().passes_skipped >= 3, "{:?}", w.disruption.counts());
    w.run(60, 10);
    let terminated: Vec<(String, Reason)> = w.terminated().into_iter().map(|(_, n, r)| (n, r)).collect();
    assert_eq!(terminated, vec![(idle, Reason::Empty)]);
}

#[test]
fn an_underused_large_node_is_replaced_by_a_cheaper_one() {
    let mut w = world(vec![pool()]);
    let big = w.node("m5.4xlarge");
    let pods = w.put(&big, "api", pod(500, 1), 2);
    w.run(180, 10);
    let terminated = w.terminated();
    assert_eq!(terminated.iter().map(|(_, n, r)| (n.clone(), *r)).collect::<Vec<_>>(), vec![(big.clone(), Reason::Underutilized)]);
    let nodes = w.nodes();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert!(price(&nodes[0].1) < price("m5.4xlarge"), "{} is not cheaper", nodes[0].1);
    let started: Vec<_> = w.reports.iter().flat_map(|(_, r)| r.started.clone()).collect();
    assert!(started[0].savings_per_hour > 0.0);
    // Why, as written on the NodeClaim for `nodewright explain`.
    let why = w.cluster.claim_annotation(&big, nodewright_core::disruption::explain::DISRUPTION_ANNOTATION).expect("written on the claim");
    let why: nodewright_core::disruption::DisruptionExplanation = serde_json::from_str(&why).unwrap();
    assert_eq!((why.method.as_str(), why.outcome.as_str(), why.nodes.as_slice()), ("underutilized", "started", std::slice::from_ref(&big)));
    assert!(why.plan.starts_with("NodePool policy "), "{}", why.plan);
    assert!(why.rules.iter().all(|r| r.result == "passed"), "{:?}", why.rules);
    assert_eq!(why.savings_per_hour, (started[0].savings_per_hour * 10_000.0).round() / 10_000.0);
    for pod in pods {
        assert!(!w.cluster.pending_names().contains(&pod), "{pod} is still pending");
    }
    assert_eq!(w.executor.block_on(w.cluster.bound_pods()).unwrap().len(), 2);
}

#[test]
fn two_half_empty_nodes_become_one() {
    let mut w = world(vec![pool()]);
    let a = w.node("m5.xlarge");
    let b = w.node("m5.xlarge");
    w.put(&a, "a", pod(800, 3), 2);
    w.put(&b, "b", pod(800, 3), 2);
    w.run(240, 10);
    let nodes = w.nodes();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert!(price(&nodes[0].1) < 2.0 * price("m5.xlarge"));
    let gone: Vec<String> = w.terminated().into_iter().map(|(_, n, _)| n).collect();
    assert!(gone.contains(&a) && gone.contains(&b), "{gone:?}");
    assert_eq!(w.executor.block_on(w.cluster.bound_pods()).unwrap().len(), 4);
    assert!(w.cluster.pending_names().is_empty());
}

#[test]
fn a_node_registered_again_keeps_the_pods_bound_to_it() {
    let mut w = world(vec![pool()]);
    let node = w.node("m5.large");
    w.put(&node, "web", pod(1000, 2), 1);
    // The harness registers every launched instance again as it settles.
    w.run(10, 10);
    w.register(&node).unwrap();
    let nodes = w.executor.block_on(w.cluster.nodes()).unwrap();
    assert_eq!(nodes.iter().find(|n| n.name == node).map(|n| n.used().cpu_millis), Some(1000));
}

/// Four m5.large without room for another pod (their pods do-not-disrupt,
/// so only the m5.xlarge is a candidate) and one m5.xlarge running `pods`
/// small pods, under `policy`; consolidation runs for four minutes.
fn balanced_world(policy: ConsolidationPolicy, pods: usize) -> (World, String) {
    let mut pool = pool();
    pool.consolidation_policy = policy;
    let mut w = world(vec![pool]);
    let full = catalog().offerings[offering("m5.large") as usize].allocatable.cpu_millis - 50;
    for i in 0..4 {
        let node = w.node("m5.large");
        w.put(&node, &format!("full{i}"), pod(full, 4).do_not_disrupt(), 1);
    }
    let big = w.node("m5.xlarge");
    w.put(&big, "small", pod(100, 1), pods);
    w.run(240, 10);
    (w, big)
}

#[test]
fn balanced_consolidation_skips_a_move_that_disrupts_more_than_it_saves() {
    // Its pods need a replacement (10 GiB): it saves less than a third of
    // the pool's cost and disrupts 11 of its 19 units of disruption cost
    // (1 a node, 1 a pod).
    let (w, big) = balanced_world(ConsolidationPolicy::WhenEmptyOrUnderutilized, 10);
    assert_eq!(w.terminated().iter().map(|(_, n, r)| (n.clone(), *r)).collect::<Vec<_>>(), vec![(big, Reason::Underutilized)], "the test's move is taken without Balanced");
    let (w, _) = balanced_world(ConsolidationPolicy::Balanced { threshold: 2 }, 10);
    let started: Vec<_> = w.reports.iter().flat_map(|(_, r)| r.started.clone()).collect();
    assert!(w.terminated().is_empty(), "{:?} {started:?}", w.terminated());
    let (rules, _) = w.rules();
    assert!(!rules.is_empty() && rules.iter().all(|r| *r == "balanced"), "{rules:?}");
    let message = &w.rejections()[0].1;
    assert!(message.starts_with("NodePool default consolidates Balanced (threshold 2): the action saves "), "{message}");
    assert!(message.ends_with(" % of its cost and disrupts 57.9 % of its pods' disruption cost"), "{message}");
    // A more cautious threshold does not take it either.
    let (w, _) = balanced_world(ConsolidationPolicy::Balanced { threshold: 1 }, 10);
    assert!(w.terminated().is_empty());
}

#[test]
fn balanced_consolidation_takes_a_move_that_saves_enough() {
    // One pod: a far smaller replacement saves most of the node's price,
    // over a quarter of the pool's cost, for 2 of 10 units of disruption.
    let (w, big) = balanced_world(ConsolidationPolicy::Balanced { threshold: 2 }, 1);
    assert_eq!(w.terminated().iter().map(|(_, n, r)| (n.clone(), *r)).collect::<Vec<_>>(), vec![(big, Reason::Underutilized)]);
    assert_eq!(w.rules(), (vec![], vec![]));
}

#[test]
fn a_do_not_disrupt_pod_that_lands_during_the_wait_stops_the_action() {
    let mut w = world(vec![pool()]);
    let busy = w.node("m5.large");
    w.put(&busy, "web", pod(1500, 4), 1);
    let idle = w.node("m5.large");
    w.run(70, 10);
    assert_eq!(w.reports.iter().map(|(_, r)| r.staged.len()).sum::<usize>(), 1, "the deletion is decided");
    w.put(&idle, "batch", pod(100, 1).do_not_disrupt(), 1);
    w.run(30, 10);
    assert!(w.terminated().is_empty());
    let rejections = w.rejections();
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert_eq!(rejections[0].0, RejectKind::NotDisruptable);
    assert_eq!(
        rejections[0].1,
        format!("no longer valid after the 15s wait: pod batch-0 on node {idle} has karpenter.sh/do-not-disrupt")
    );
}

#[test]
fn a_blocking_pdb_stops_an_action() {
    let mut w = world(vec![pool()]);
    let big = w.node("m5.4xlarge");
    w.put(&big, "api", pod(500, 1).label("app", "api"), 2);
    w.cluster.add_pdb(pdb("api", PdbLimit::MinAvailable(IntOrPercent::Count(2))));
    w.run(120, 10);
    assert!(w.terminated().is_empty());
    let rejections = w.rejections();
    assert!(!rejections.is_empty());
    assert_eq!(rejections[0].0, RejectKind::Pdb);
    assert_eq!(rejections[0].1, "PodDisruptionBudget default/api allows 0 evictions and the action evicts 2 of its pods");
    assert_eq!(w.rules(), (vec!["pdb"], vec![("pdb", 1)]));
    // The state does not change, so the plan is not asked again every pass.
    assert_eq!(rejections.len(), 1, "{rejections:?}");
}

#[test]
fn an_exhausted_budget_stops_an_action() {
    // empty-only proposes every empty node; karpenter-like would not
    // propose past the budget in the first place.
    let mut p = pool().consolidation("empty-only", "{}");
    p.budgets = vec![
        Budget { nodes: BudgetNodes::Percent(100), reasons: vec![], schedule: None, duration: None },
        Budget { nodes: BudgetNodes::Count(0), reasons: vec!["Empty".into()], schedule: None, duration: None },
    ];
    let mut w = world(vec![p]);
    let busy = w.node("m5.large");
    w.put(&busy, "web", pod(1500, 4), 1);
    let idle = w.node("m5.large");
    w.run(120, 10);
    assert!(w.terminated().is_empty());
    // Asked at every poll once the node has been empty for consolidateAfter
    // (70 s to 120 s), the plugin proposes it again and again, and each time
    // the budget holds it back.
    let rejections = w.rejections();
    assert_eq!(rejections.len(), 6, "{rejections:?}");
    assert!(rejections.iter().all(|r| r == &rejections[0]), "{rejections:?}");
    assert_eq!(rejections[0].0, RejectKind::Budget);
    assert_eq!(
        rejections[0].1,
        "NodePool default's disruption budget allows 0 of its 2 nodes for Empty now; 0 are being disrupted and the action needs 1"
    );
    assert_eq!(w.rules(), (vec!["budget"; 6], vec![("budget", 6)]));
    let _ = idle;
}

#[test]
fn a_plugin_proposing_an_action_that_strands_pods_is_rejected() {
    let p = pool().consolidation(component("hostile-strander").to_str().unwrap(), "{}");
    let mut w = world(vec![p]);
    let a = w.node("m5.large");
    let b = w.node("m5.large");
    w.put(&a, "a", pod(1500, 6), 1);
    w.put(&b, "b", pod(1500, 6), 1);
    w.run(120, 10);
    assert!(w.terminated().is_empty());
    // Proposed again at every poll once consolidateAfter has passed (70 s
    // to 120 s), rejected every time.
    let rejections = w.rejections();
    assert_eq!(rejections.len(), 6, "{rejections:?}");
    assert!(rejections.iter().all(|r| r == &rejections[0]), "{rejections:?}");
    assert_eq!(rejections[0].0, RejectKind::Strands);
    assert!(rejections[0].1.starts_with("pod a-0 would fit nowhere: "), "{}", rejections[0].1);
    assert!(rejections[0].1.ends_with("(and 1 more pods)"), "{}", rejections[0].1);
    assert_eq!(w.rules(), (vec!["strands"; 6], vec![("strands", 6)]));
}

#[test]
fn a_plugin_that_traps_falls_back_to_karpenter_like() {
    let p = NodePool { name: "trap".into(), ..pool().consolidation(component("hostile-consolidation-trap").to_str().unwrap(), "{}") };
    let mut w = world(vec![p]);
    let busy = w.node("m5.large");
    w.put(&busy, "web", pod(1500, 4), 1);
    let idle = w.node("m5.large");
    w.run(120, 10);
    // The first plan is the plugin's call, trapped, answered by karpenter-like.
    let (_, first) = w.reports.iter().find(|(_, r)| r.fallbacks > 0).expect("a fallback");
    assert_eq!(first.staged.iter().map(|c| (c.nodes.clone(), c.reason)).collect::<Vec<_>>(), vec![(vec![idle.clone()], Reason::Empty)]);
    assert_eq!(w.terminated().into_iter().map(|(_, n, r)| (n, r)).collect::<Vec<_>>(), vec![(idle, Reason::Empty)]);
}

#[test]
fn expiry_replaces_a_node_despite_the_plugin_saying_nothing() {
    let mut p = pool().consolidation("empty-only", "{}");
    p.expire_after = Some(Duration::from_secs(3600));
    let mut w = world(vec![p]);
    let old = w.node("m5.large");
    w.put(&old, "web", pod(1500, 6), 1);
    w.run(3590, 10);
    assert!(w.terminated().is_empty());
    w.run(30, 10);
    let terminated = w.terminated();
    assert_eq!(terminated.iter().map(|(_, n, r)| (n.clone(), *r)).collect::<Vec<_>>(), vec![(old.clone(), Reason::Expired)]);
    let nodes = w.nodes();
    assert_eq!(nodes.len(), 1);
    assert_ne!(nodes[0].0, old);
    let bound = w.executor.block_on(w.cluster.bound_pods()).unwrap();
    assert_eq!(bound.len(), 1);
    assert_eq!(bound[0].0, nodes[0].0, "the pod moved to the replacement");
}

#[test]
fn a_new_image_drifts_the_nodes_which_are_replaced_one_at_a_time_through_the_budget() {
    let mut pool = pool();
    pool.consolidate_after = None;
    pool.budgets = vec![Budget { nodes: BudgetNodes::Count(1), reasons: vec![], schedule: None, duration: None }];
    let mut w = world(vec![pool]);
    let old: Vec<String> = (0..2).map(|_| w.node("m5.large")).collect();
    for (i, node) in old.iter().enumerate() {
        w.put(node, &format!("app{i}"), pod(1000, 2), 1);
    }
    w.run(60, 10);
    assert!(w.terminated().is_empty(), "nothing drifted yet");
    // The node class's AMI alias now resolves to a newer AMI.
    w.cloud.release_image();
    w.run(400, 10);
    let terminated = w.terminated();
    assert_eq!(terminated.iter().map(|(_, n, r)| (n.clone(), *r)).collect::<BTreeSet<_>>(), old.iter().map(|n| (n.clone(), Reason::Drifted)).collect());
    // Never both at once: the budget held one back while the other was replaced.
    let (rules, _) = w.rules();
    assert!(rules.contains(&"budget"), "{rules:?}");
    assert!(terminated[0].0 < terminated[1].0, "{terminated:?}");
    // The replacements run the new image: nothing further drifts.
    w.run(200, 10);
    assert_eq!(w.terminated().len(), 2);
    assert_eq!(w.nodes().len(), 2);
    assert_eq!(w.executor.block_on(w.cluster.bound_pods()).unwrap().len(), 2);
}

#[test]
fn a_drifted_node_is_replaced() {
    let mut w = world(vec![pool()]);
    let old = w.node("m5.large");
    w.put(&old, "web", pod(1500, 6), 1);
    w.run(30, 10);
    w.cluster.set_node_pools(vec![pool().label("team", "payments")]);
    w.run(60, 10);
    let terminated = w.terminated();
    assert_eq!(terminated.iter().map(|(_, n, r)| (n.clone(), *r)).collect::<Vec<_>>(), vec![(old, Reason::Drifted)]);
    assert_eq!(w.nodes().len(), 1);
}

#[test]
fn an_expired_nodes_drain_waits_on_a_pdb_then_is_forced_after_the_grace_period() {
    let mut p = pool().consolidation("empty-only", "{}");
    p.expire_after = Some(Duration::from_secs(600));
    p.termination_grace_period = Some(Duration::from_secs(300));
    let mut w = world(vec![p]);
    let old = w.node("m5.large");
    w.put(&old, "db", pod(1000, 2).label("app", "db"), 1);
    w.cluster.add_pdb(pdb("db", PdbLimit::MaxUnavailable(IntOrPercent::Count(0))));
    w.run(700, 10);
    assert!(w.terminated().is_empty(), "the PDB holds the drain");
    assert!(w.nodes().iter().any(|(n, _)| *n == old));
    w.run(300, 10);
    assert_eq!(w.terminated().into_iter().map(|(_, n, r)| (n, r)).collect::<Vec<_>>(), vec![(old, Reason::Expired)]);
}

#[test]
fn a_spot_node_is_replaced_by_a_cheaper_spot_node_only_when_spot_to_spot_is_on() {
    let spot = |instance_type: &str| {
        catalog()
            .offerings
            .iter()
            .position(|o| o.instance_type == instance_type && o.capacity_type == CapacityType::Spot && o.zone == "us-east-1a")
            .unwrap() as u32
    };
    let mut pool = pool();
    pool.requirements.retain(|r| r.key != well_known::CAPACITY_TYPE);
    let pool = pool.require(Requirement::is_in(well_known::CAPACITY_TYPE, &["spot"]));
    for spot_to_spot in [false, true] {
        let mut w = world_with(vec![pool.clone()], DisruptionSettings { spot_to_spot, ..DisruptionSettings::default() });
        let big = w.node_as(spot("m5.4xlarge"));
        w.put(&big, "api", pod(500, 1), 2);
        w.run(180, 10);
        let claims = w.cluster.node_claims();
        assert_eq!(claims.len(), 1, "spot-to-spot {spot_to_spot}: {:?}", w.nodes());
        let offering = &catalog().offerings[claims[0].instance.as_ref().unwrap().offering as usize];
        if spot_to_spot {
            assert_ne!(claims[0].name, big, "replaced");
            assert_eq!(offering.capacity_type, CapacityType::Spot);
            assert!(offering.price_per_hour < catalog().offerings[spot("m5.4xlarge") as usize].price_per_hour);
        } else {
            assert_eq!((claims[0].name.as_str(), offering.instance_type.as_str()), (big.as_str(), "m5.4xlarge"), "kept: spot-to-spot is off");
        }
        assert_eq!(w.executor.block_on(w.cluster.bound_pods()).unwrap().len(), 2);
    }
}

/// With spot-to-spot off, a spot node whose pods could go on a cheaper
/// spot node is kept (a replacement could be bought as spot, and is
/// refused), while one whose pods require on-demand is replaced by a
/// cheaper on-demand node.
#[test]
fn a_spot_node_is_replaced_on_demand_only_when_its_pods_require_on_demand() {
    let spot = catalog()
        .offerings
        .iter()
        .position(|o| o.instance_type == "m5.4xlarge" && o.capacity_type == CapacityType::Spot && o.zone == "us-east-1a")
        .unwrap() as u32;
    let mut pool = pool();
    pool.requirements.retain(|r| r.key != well_known::CAPACITY_TYPE);
    let pool = pool.require(Requirement::is_in(well_known::CAPACITY_TYPE, &["spot", "on-demand"]));
    for pinned in [false, true] {
        let mut w = world(vec![pool.clone()]);
        let big = w.node_as(spot);
        let mut spec = pod(500, 1);
        if pinned {
            spec.node_selector.insert(well_known::CAPACITY_TYPE.into(), "on-demand".into());
        }
        w.put(&big, "api", spec, 2);
        w.run(180, 10);
        let claims = w.cluster.node_claims();
        assert_eq!(claims.len(), 1, "pinned {pinned}: {:?}", w.nodes());
        let offering = &catalog().offerings[claims[0].instance.as_ref().unwrap().offering as usize];
        if pinned {
            assert_ne!(claims[0].name, big, "replaced");
            assert_eq!(offering.capacity_type, CapacityType::OnDemand);
            assert!(offering.price_per_hour < catalog().offerings[spot as usize].price_per_hour);
        } else {
            assert_eq!((claims[0].name.as_str(), offering.capacity_type), (big.as_str(), CapacityType::Spot), "kept: spot-to-spot is off");
        }
        assert_eq!(w.executor.block_on(w.cluster.bound_pods()).unwrap().len(), 2);
    }
}

#[test]
fn bound_pods_say_how_long_they_have_run() {
    let mut w = world(vec![pool()]);
    let a = w.node("m5.xlarge");
    w.put(&a, "a", pod(800, 3), 1);
    // By the controllers' clock (wall time from the run's epoch).
    let ran = |w: &World| w.executor.block_on(w.cluster.bound_pods()).unwrap()[0].1.running_for(w.clock.wall());
    let first = ran(&w).expect("a bound pod has run for some time");
    // Less than the NodePool's consolidateAfter: nothing moves the pod.
    w.run(30, 10);
    let later = ran(&w).expect("still bound");
    assert_eq!(later - first, Duration::from_secs(30));
    // It started when it was bound, whatever the time it is asked.
    let started = w.executor.block_on(w.cluster.bound_pods()).unwrap()[0].1.started;
    assert_eq!(started, Some(w.clock.wall() - later));
}

/// When passes decided on an action naming `node` (staged or rejected).
fn decided_at(w: &World, node: &str) -> Vec<u64> {
    let names = |c: &nodewright_core::disruption::Command| c.nodes.iter().any(|n| n == node);
    w.reports
        .iter()
        .filter(|(_, r)| r.staged.iter().any(names) || r.rejected.iter().any(|x| names(&x.command)))
        .map(|(t, _)| *t)
        .collect()
}

#[test]
fn between_two_polls_a_pass_only_moves_running_disruptions_on() {
    // An expired node whose drain a PDB holds keeps a disruption running,
    // so the controller is woken every few seconds; it decides new actions
    // once per poll interval only.
    let run = |poll: u64| {
        let mut p = pool();
        p.expire_after = Some(Duration::from_secs(600));
        p.consolidate_after = Some(Duration::ZERO);
        let mut w = world_with(vec![p], DisruptionSettings { poll_interval: Duration::from_secs(poll), ..DisruptionSettings::default() });
        let old = w.node("m5.large");
        w.put(&old, "db", pod(1000, 2).label("app", "db"), 1);
        w.cluster.add_pdb(pdb("db", PdbLimit::MaxUnavailable(IntOrPercent::Count(0))));
        w.run(300, 5);
        // A second node, younger: it expires after the run.
        let spare = w.node("m5.large");
        let job = w.put(&spare, "job", pod(1000, 2).do_not_disrupt(), 1);
        w.run(310, 5);
        assert_eq!(w.disruption.in_progress(), vec![old.clone()], "the expired node's drain is held by the PDB");
        // The job ends: the spare node is empty. (Deleting it would strand
        // the db pod, which the provisioner expects to move there: the
        // action is rejected, but it is decided on.)
        assert!(w.cluster.delete_pod(&job[0]));
        w.run(120, 5);
        (decided_at(&w, &spare), w.disruption.counts().clone())
    };
    // The expiry is found at 600 s (the node's deadline ends the idle
    // skip); the next decision is due at 660 s.
    let (decided, polled) = run(60);
    assert_eq!(decided.first(), Some(&660), "decided at the next poll, not as soon as the node was empty: {decided:?}");
    // Deciding at every pass, the same node is decided on at the first pass after it emptied.
    let (decided, every) = run(0);
    assert_eq!(decided.first(), Some(&615), "{decided:?}");
    // Every pass plans, but while a decided action waits out its 15 s
    // validation delay (at 5 s steps) a pass only moves disruptions on.
    assert!(every.drain_passes <= 3, "{every:?}");
    // The passes in between read only the running disruption's nodes.
    assert!(polled.drain_passes >= 20, "{polled:?}");
    assert!(polled.passes + 20 <= every.passes, "{polled:?} against {every:?}");
}

#[test]
fn a_node_claim_deleted_by_hand_is_drained_through_its_pdb_then_terminated_and_released() {
    let mut p = pool().consolidation("empty-only", "{}");
    p.consolidate_after = None; // nothing but the deletion moves a pod
    let mut w = world(vec![p]);
    let node = w.node("m5.xlarge");
    let instance = w.cluster.node_claims().iter().find(|c| c.name == node).and_then(|c| c.instance.clone()).unwrap().id;
    let pods = w.put(&node, "web", pod(500, 1).label("app", "web"), 3);
    w.cluster.add_pdb(pdb("web", PdbLimit::MaxUnavailable(IntOrPercent::Count(1))));
    w.run(30, 10);
    assert!(w.terminated().is_empty());
    // `kubectl delete nodeclaim`: a deletion timestamp, the finalizer holds it.
    assert!(w.cluster.request_deletion(&node));
    assert!(!w.cluster.request_deletion("no-such-claim"));
    w.run(10, 10);
    let started: Vec<_> = w.reports.iter().flat_map(|(_, r)| r.started.clone()).collect();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!((started[0].reason, started[0].nodes.clone()), (Reason::Deleted, vec![node.clone()]));
    let launched: usize = w.reports.iter().map(|(_, r)| r.launched.len()).sum();
    assert_eq!(launched, 1, "a replacement for the pods is launched first");
    w.run(120, 10);
    // One eviction at a time: the PDB allows one pod down, and an evicted
    // pod is back (on the replacement) before the next goes.
    let evictions: Vec<(u64, usize)> = w.reports.iter().filter(|(_, r)| !r.evicted.is_empty()).map(|(t, r)| (*t, r.evicted.len())).collect();
    assert!(evictions.iter().all(|(_, n)| *n == 1), "{evictions:?}");
    assert_eq!(evictions.len(), 3, "{evictions:?}");
    assert_eq!(w.terminated().into_iter().map(|(_, n, r)| (n, r)).collect::<Vec<_>>(), vec![(node.clone(), Reason::Deleted)]);
    let running = w.executor.block_on(nodewright_core::cloud::CloudProvider::instances(&*w.cloud)).unwrap();
    assert!(!running.iter().any(|i| i.id == instance), "the instance is terminated");
    assert!(w.cluster.node_claims().iter().all(|c| c.name != node), "the claim is released");
    let bound = w.executor.block_on(w.cluster.bound_pods()).unwrap();
    for name in pods {
        assert!(bound.iter().any(|(n, p)| *p.name == *name && *n != node), "{name} runs elsewhere");
    }
    assert_eq!(w.disruption.counts().nodes.get(&Reason::Deleted), Some(&1));
}

/// A launch whose record a crash cut off: the NodeClaim says no instance,
/// the cloud has one tagged with its name. Deleting the claim terminates
/// that instance before the claim is released; nothing is left running.
#[test]
fn a_deleted_node_claim_that_never_recorded_its_instance_has_the_tagged_instance_terminated() {
    use nodewright_core::cloud::{LaunchRequest, SpotStrategy};
    use nodewright_core::model::NodeClaim;
    let mut w = world(vec![pool()]);
    let claim = NodeClaim { name: "default-crash".into(), node_pool: "default".into(), offerings: Arc::from(vec![offering("m5.large")]), ..Default::default() };
    assert_eq!(w.executor.block_on(w.cluster.create_node_claim(claim)).unwrap(), nodewright_core::cluster::Created::Created);
    let request = LaunchRequest {
        claim: "default-crash".into(),
        node_pool: "default".into(),
        offerings: vec![offering("m5.large")],
        requests: Default::default(),
        taints: Vec::new(),
        spot_strategy: SpotStrategy::Prioritized,
        node_class: None,
        catalog_version: None,
    };
    let instance = w.executor.block_on(w.cloud.launch(&request)).unwrap();
    // It never boots into a node here: the record of it is what was lost.
    assert_eq!(w.cloud.take_launched().len(), 1);
    assert!(w.cluster.request_deletion("default-crash"));
    w.run(10, 10);
    assert!(w.cluster.node_claims().is_empty(), "the claim is released");
    let running = w.executor.block_on(CloudProvider::instances(&*w.cloud)).unwrap();
    assert!(!running.iter().any(|i| i.id == instance.id), "the tagged instance is terminated: {running:?}");
}

#[test]
fn a_node_claim_deleted_with_its_node_pool_is_still_terminated() {
    let mut w = world(vec![pool()]);
    let node = w.node("m5.large");
    let pods = w.put(&node, "web", pod(500, 1), 1);
    w.run(10, 10);
    // The NodePool is deleted, and its NodeClaims with it (they are its).
    w.cluster.set_node_pools(vec![]);
    assert!(w.cluster.node_claims().iter().any(|c| c.name == node && c.deleting), "{:?}", w.cluster.node_claims());
    w.run(30, 10);
    assert_eq!(w.terminated().into_iter().map(|(_, n, r)| (n, r)).collect::<Vec<_>>(), vec![(node.clone(), Reason::Deleted)]);
    assert!(w.cluster.node_claims().is_empty());
    // Its pod waits for a NodePool that can hold it.
    assert_eq!(w.cluster.pending_names(), pods);
    assert!(w.rejections().is_empty(), "{:?}", w.rejections());
}

#[test]
fn node_claims_say_whether_they_are_drifted_consolidatable_or_empty_and_why_they_are_disrupted() {
    use nodewright_core::model::ClaimConditions;
    let mut w = world(vec![pool()]);
    let busy = w.node("m5.large");
    w.put(&busy, "web", pod(1500, 4).label("app", "web").do_not_disrupt(), 1);
    let idle = w.node("m5.large");
    let of = |w: &World, name: &str| w.cluster.node_claims().into_iter().find(|c| c.name == name).map(|c| c.conditions);
    w.run(10, 10);
    assert_eq!(of(&w, &busy), Some(ClaimConditions::default()));
    assert_eq!(of(&w, &idle), Some(ClaimConditions { empty: true, ..ClaimConditions::default() }));
    // consolidateAfter (60 s) on: the busy node is consolidatable (its
    // do-not-disrupt pod keeps it); the empty one is gone.
    w.run(90, 10);
    assert_eq!(of(&w, &busy), Some(ClaimConditions { consolidatable: true, ..ClaimConditions::default() }));
    assert_eq!(of(&w, &idle), None);
    // The NodePool changes: the node is drifted, and says why.
    let mut changed = pool();
    changed.labels.insert("team".into(), "payments".into());
    w.cluster.set_node_pools(vec![changed]);
    w.run(70, 10);
    assert_eq!(of(&w, &busy).and_then(|c| c.drifted), Some("NodePoolDrifted".to_string()));
    // Deleted by hand, its drain held by a PDB: it says it is being disrupted, and why.
    w.cluster.add_pdb(pdb("web", PdbLimit::MaxUnavailable(IntOrPercent::Count(0))));
    assert!(w.cluster.request_deletion(&busy));
    w.run(20, 10);
    assert_eq!(of(&w, &busy).and_then(|c| c.disruption), Some("deleted".to_string()));
}

#[test]
fn events_say_what_was_launched_and_nominated_disrupted_held_back_and_terminated() {
    use nodewright_core::cluster::{ClusterEvent, EventObject};
    let mut w = world(vec![pool()]);
    // A pending pod: a NodeClaim is launched for it, and it is nominated.
    w.cluster.add_pods(pod(1500, 4).label("app", "web").do_not_disrupt().pods("web", 1));
    w.run(10, 10);
    let events = w.cluster.recorded_events();
    let launched: Vec<&ClusterEvent> = events.iter().filter(|e| e.reason == "Launched").collect();
    assert_eq!(launched.len(), 1, "{events:?}");
    let EventObject::NodeClaim(claim) = &launched[0].object else { panic!("{launched:?}") };
    assert!(launched[0].message.starts_with("launched ") && launched[0].message.ends_with(", for 1 pod(s)"), "{}", launched[0].message);
    assert!(launched[0].message.contains("on-demand in us-east-1a ($"), "{}", launched[0].message);
    let nominated = ClusterEvent { object: EventObject::Pod("web-0".into()), warning: false, reason: "Nominated", message: format!("pod should schedule on NodeClaim {claim}") };
    assert!(events.contains(&nominated), "{events:?}");
    // An empty node: disrupted (why, what it saves), then terminated.
    let idle = w.node("m5.large");
    w.run(120, 10);
    let about = |w: &World, name: &str| -> Vec<(&'static str, String)> {
        w.cluster.recorded_events().into_iter().filter(|e| e.object == EventObject::NodeClaim(name.into())).map(|e| (e.reason, e.message)).collect()
    };
    let idle_events = about(&w, &idle);
    let reasons: Vec<&str> = idle_events.iter().map(|(r, _)| *r).collect();
    assert_eq!(reasons, ["Launched", "Disrupting", "Terminated"], "{idle_events:?}");
    assert!(idle_events[1].1.starts_with("empty; saves $0.0960/h"), "{idle_events:?}");
    assert!(idle_events[2].1.ends_with(" terminated (empty)"), "{idle_events:?}");
    // The NodePool changes: the busy node drifted, held back by its
    // do-not-disrupt pod, says so.
    let mut changed = pool();
    changed.labels.insert("team".into(), "payments".into());
    w.cluster.set_node_pools(vec![changed]);
    w.run(60, 10);
    let blocked: Vec<String> = about(&w, claim).into_iter().filter(|(r, _)| *r == "DisruptionBlocked").map(|(_, m)| m).collect();
    assert!(!blocked.is_empty(), "{:?}", about(&w, claim));
    assert!(blocked[0].starts_with("drifted not disrupted (disruptable): "), "{blocked:?}");
    assert!(w.cluster.event_counts().get("DisruptionBlocked").is_some_and(|&n| n as usize >= blocked.len()));
}

#[test]
fn an_interrupted_node_is_drained_through_its_pdb_and_a_node_it_holds_is_finished_by_the_termination_path() {
    let mut p = pool();
    p.consolidate_after = None; // nothing but the interruption moves a pod
    let mut w = world(vec![p]);
    let node = w.node("m5.xlarge");
    let instance = w.cluster.node_claims().iter().find(|c| c.name == node).and_then(|c| c.instance.clone()).unwrap().id;
    let pods = w.put(&node, "web", pod(500, 1).label("app", "web"), 3);
    w.cluster.add_pdb(pdb("web", PdbLimit::MaxUnavailable(IntOrPercent::Count(1))));
    w.cloud.take_launched();
    let outcome = w.executor.block_on(w.interruption.handle_event("m1", InterruptionKind::SpotInterruption { instance: instance.clone() })).unwrap();
    // The replacement first, then the Eviction API: the PDB lets one pod go.
    assert_eq!(
        outcome,
        nodewright_core::interruption::Outcome::Replaced { kind: "spot-interruption", claims: vec![node.clone()], replacements: 1, evicted: 1 }
    );
    let claim = w.cluster.node_claims().into_iter().find(|c| c.name == node).expect("the PDB keeps the node");
    assert!(claim.deleting, "marked for deletion: the termination path finishes it");
    assert_eq!(claim.conditions.disruption.as_deref(), Some("interrupted"), "and why");
    let running = |w: &World| w.executor.block_on(nodewright_core::cloud::CloudProvider::instances(&*w.cloud)).unwrap();
    assert!(running(&w).iter().any(|i| i.id == instance), "not terminated while pods are on it");
    assert_eq!(w.executor.block_on(w.cluster.pods_on(&node)).unwrap().len(), 2);
    w.settle();
    w.run(120, 10);
    // The rest went one at a time, each back before the next, with no
    // second replacement.
    let evictions: Vec<usize> = w.reports.iter().filter(|(_, r)| !r.evicted.is_empty()).map(|(_, r)| r.evicted.len()).collect();
    assert_eq!(evictions, vec![1, 1]);
    let launched: usize = w.reports.iter().map(|(_, r)| r.launched.len()).sum();
    assert_eq!((launched, w.cloud.launch_requests().len()), (0, 2), "the node itself and the interruption's replacement only");
    assert_eq!(w.terminated().into_iter().map(|(_, n, r)| (n, r)).collect::<Vec<_>>(), vec![(node.clone(), Reason::Deleted)]);
    // Finished by the deletion method, counted as what ended it.
    let counts = w.provisioner.terminator().counts();
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), vec!["interrupted"], "{counts:?}");
    assert!(!running(&w).iter().any(|i| i.id == instance), "the instance is terminated");
    assert!(w.cluster.node_claims().iter().all(|c| c.name != node), "the claim is released");
    let bound = w.executor.block_on(w.cluster.bound_pods()).unwrap();
    for name in pods {
        assert!(bound.iter().any(|(n, p)| *p.name == *name && *n != node), "{name} runs elsewhere");
    }
}

#[test]
fn an_interruption_an_expiry_and_a_hand_deletion_each_end_through_the_one_termination_path() {
    let mut expiring = pool();
    expiring.consolidate_after = None;
    expiring.expire_after = Some(Duration::from_secs(3600));
    let mut w = world(vec![expiring]);
    let (a, b, c) = (w.node("m5.xlarge"), w.node("m5.xlarge"), w.node("m5.xlarge"));
    for (node, app) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        w.put(node, app, pod(500, 1), 1);
    }
    w.cloud.take_launched(); // registered already
    let instance = |w: &World, claim: &str| w.cluster.node_claims().into_iter().find(|x| x.name == claim).unwrap().instance.unwrap().id;
    // A spot interruption warning for a's instance (on-demand here: what
    // matters is the path it takes).
    let warned = instance(&w, &a);
    let outcome = w.executor.block_on(w.interruption.handle_event("m1", InterruptionKind::SpotInterruption { instance: warned })).unwrap();
    assert!(matches!(outcome, nodewright_core::interruption::Outcome::Replaced { .. }), "{outcome:?}");
    w.settle();
    // kubectl delete nodeclaim b.
    assert!(w.cluster.request_deletion(&b));
    w.run(120, 10);
    // c (and the replacements, younger) expire after an hour.
    w.run(3600, 60);
    let counts = w.provisioner.terminator().counts();
    assert_eq!(counts.get("interrupted"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("deleted"), Some(&1), "{counts:?}");
    assert!(counts.get("expired").is_some_and(|&n| n >= 1), "{counts:?}");
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), vec!["deleted", "expired", "interrupted"]);
    // Each NodeClaim released there had its instance terminated first.
    let claims: Vec<String> = w.cluster.node_claims().into_iter().map(|x| x.name).collect();
    for gone in [&a, &b, &c] {
        assert!(!claims.contains(gone), "{gone} is released: {claims:?}");
    }
    let running: Vec<String> = w.executor.block_on(w.cloud.instances()).unwrap().into_iter().map(|i| i.claim).collect();
    let mut sorted = claims.clone();
    sorted.sort();
    let mut backed = running.clone();
    backed.sort();
    assert_eq!(backed, sorted, "one instance per NodeClaim left, none leaked");
}
