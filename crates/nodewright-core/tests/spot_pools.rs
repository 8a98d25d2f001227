//! Spot as the simulated cloud sells it: pools with a capacity that moves,
//! launches refused when a pool is full, reclaims when it shrinks, the
//! price-capacity-optimized order the baseline launches with; and jobs
//! that run to completion in the simulator.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodewright_core::cloud::{
    CloudProvider, LaunchError, LaunchRequest, POOL_DEPTH, POOL_LEVEL, SimulatedCloud, SimulatedCloudConfig, SpotStrategy,
};
use nodewright_core::model::{CapacityType, Catalog, NodePool, PolicyRef, Resources};
use nodewright_core::sim::{PolicyUnderTest, SimulationConfig, parse_trace, simulate};

/// The spot offering of `instance_type` in us-east-1a.
fn spot(catalog: &Catalog, instance_type: &str) -> u32 {
    catalog
        .offerings
        .iter()
        .position(|o| o.instance_type == instance_type && o.zone == "us-east-1a" && o.capacity_type == CapacityType::Spot)
        .expect("sold") as u32
}

fn cloud(catalog: Arc<Catalog>, now: Arc<Mutex<Duration>>) -> SimulatedCloud {
    let config = SimulatedCloudConfig { seed: 7, spot_pools: true, ..SimulatedCloudConfig::default() };
    SimulatedCloud::new(catalog, config, Arc::new(move || *now.lock().unwrap()))
}

fn request(claim: &str, offerings: Vec<u32>, spot_strategy: SpotStrategy) -> LaunchRequest {
    LaunchRequest { claim: claim.into(), node_pool: "default".into(), offerings, requests: Resources::default(), taints: vec![], spot_strategy, node_class: None, catalog_version: None }
}

#[test]
fn a_pool_holds_what_its_capacity_says_and_refuses_the_next_launch() {
    let catalog = Arc::new(Catalog::bundled());
    let now = Arc::new(Mutex::new(Duration::ZERO));
    let cloud = cloud(catalog.clone(), now.clone());
    let pool = spot(&catalog, "m5.large");
    let capacity = cloud.pool_capacity(pool, 0).unwrap();
    // A 2-vCPU type: its bucket's depth times a level within the range.
    let o = &catalog.offerings[pool as usize];
    let depth = POOL_DEPTH[o.interruption as usize];
    assert!(f64::from(capacity) >= (depth * POOL_LEVEL.0).floor() && f64::from(capacity) <= depth * POOL_LEVEL.1, "{capacity} of {depth}");
    assert_eq!(cloud.pool_capacity(pool, 0), Some(capacity), "the same pool and hour, the same capacity");
    let on_demand = catalog.offerings.iter().position(|x| x.capacity_type == CapacityType::OnDemand).unwrap() as u32;
    assert_eq!(cloud.pool_capacity(on_demand, 0), None, "on-demand has no pool");
    for i in 0..capacity {
        futures::executor::block_on(cloud.launch(&request(&format!("c{i}"), vec![pool], SpotStrategy::Prioritized))).unwrap();
    }
    let full = futures::executor::block_on(cloud.launch(&request("one-more", vec![pool], SpotStrategy::Prioritized))).unwrap_err();
    assert_eq!(full, LaunchError::InsufficientCapacity { tried: 1, skipped: 0 });
    assert!(cloud.unavailable().contains(&pool), "a full pool is benched like any capacity error");
}

#[test]
fn a_pool_that_shrinks_below_what_runs_reclaims_its_newest_instances() {
    let catalog = Arc::new(Catalog::bundled());
    let now = Arc::new(Mutex::new(Duration::ZERO));
    let cloud = cloud(catalog.clone(), now.clone());
    let pool = spot(&catalog, "c5.large");
    // The first hour in which the pool is smaller than at hour 0.
    let start = cloud.pool_capacity(pool, 0).unwrap();
    let (hour, later) = (1..2000u64).map(|h| (h, cloud.pool_capacity(pool, h).unwrap())).find(|&(_, c)| c < start).expect("a walk goes down");
    let cloud = self::cloud(catalog.clone(), now.clone());
    let mut ids = Vec::new();
    for i in 0..start {
        *now.lock().unwrap() = Duration::from_secs(u64::from(i));
        ids.push(futures::executor::block_on(cloud.launch(&request(&format!("c{i}"), vec![pool], SpotStrategy::Prioritized))).unwrap().id);
    }
    assert!(cloud.pool_shortfalls().is_empty(), "a full pool that does not shrink reclaims nothing");
    *now.lock().unwrap() = Duration::from_secs(hour * 3600);
    let reclaimed = cloud.pool_shortfalls();
    let excess = (start - later) as usize;
    assert_eq!(reclaimed.len(), excess);
    let newest: Vec<String> = ids.iter().rev().take(excess).cloned().collect();
    assert_eq!(reclaimed, newest, "the newest instances go first");
}

#[test]
fn price_capacity_optimized_takes_the_deepest_pools_then_the_cheapest_while_prioritized_follows_the_ranking() {
    let catalog = Arc::new(Catalog::bundled());
    let now = Arc::new(Mutex::new(Duration::ZERO));
    let cloud = cloud(catalog.clone(), now.clone());
    // Two pools: the cheaper one with less spare capacity.
    let a = spot(&catalog, "m5.large");
    let b = spot(&catalog, "m6i.large");
    let price = |o: u32| catalog.offerings[o as usize].price_per_hour;
    let (cheap, dear) = if price(a) <= price(b) { (a, b) } else { (b, a) };
    let cap_cheap = cloud.pool_capacity(cheap, 0).unwrap();
    let cap_dear = cloud.pool_capacity(dear, 0).unwrap();
    assert!(cap_dear > 0, "seed 7 gives the dearer pool room");
    // Fill the cheap pool until its spare capacity is under half the other's.
    let mut filled = 0;
    while (cap_cheap - filled) * 2 >= cap_dear && filled < cap_cheap {
        futures::executor::block_on(cloud.launch(&request(&format!("f{filled}"), vec![cheap], SpotStrategy::Prioritized))).unwrap();
        filled += 1;
    }
    let prioritized = futures::executor::block_on(cloud.launch(&request("p", vec![cheap, dear], SpotStrategy::Prioritized)));
    let pco = futures::executor::block_on(cloud.launch(&request("q", vec![cheap, dear], SpotStrategy::PriceCapacityOptimized))).unwrap();
    if filled < cap_cheap {
        assert_eq!(prioritized.unwrap().offering, cheap, "the ranking is followed while the pool has room");
    }
    assert_eq!(pco.offering, dear, "the deeper pool, though dearer");
}

#[test]
fn a_job_runs_its_whole_work_however_late_it_starts() {
    // One job whose work is an hour, nodes that take ten minutes to boot:
    // as a job it ends an hour after it starts (past its `del`), as a plain
    // pod at its `del`.
    let run = |job: bool| {
        let text = [
            r#"{"format":"nodewright-trace","version":1,"name":"job","duration_s":10800}"#.to_string(),
            format!(r#"{{"t":0,"add":"j","workload":"batch","cpu_m":2000,"mem_mib":1024,"job":{job}}}"#),
            r#"{"t":3600,"del":"j"}"#.to_string(),
        ]
        .join("\n");
        let trace = parse_trace("job", &text).unwrap();
        let mut pool = NodePool::new("default")
            .require(nodewright_core::model::Requirement::is_in(nodewright_core::model::well_known::CAPACITY_TYPE, &["on-demand"]));
        pool.consolidate_after = Some(Duration::from_secs(60));
        let baseline = PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() };
        let policy = PolicyUnderTest { name: "k".into(), selection: baseline.clone(), consolidation: baseline };
        let config = SimulationConfig {
            interruptions: false,
            spot_drift: false,
            boot_latency: (Duration::from_secs(600), Duration::from_secs(600)),
            ..SimulationConfig::default()
        };
        simulate(&trace, &policy, &[pool], Arc::new(Catalog::bundled()), &config, |_| {}).unwrap().metrics
    };
    let (job, plain) = (run(true), run(false));
    // The job's node runs ten minutes longer (its boot) than the plain
    // pod's, give or take the minute between disruption passes.
    let extra = (job.node_hours - plain.node_hours) * 3600.0;
    assert!((extra - 600.0).abs() <= 120.0, "{extra} s: job {job:?} plain {plain:?}");
    assert_eq!((job.pods, job.pods_pending_at_end, plain.pods_pending_at_end), (1, 0, 0));
}

#[test]
fn a_pool_whose_price_rose_is_reclaimed_more_often() {
    let catalog = Arc::new(Catalog::bundled());
    let now = Arc::new(Mutex::new(Duration::ZERO));
    let config = SimulatedCloudConfig { seed: 3, interruption_scale: 50.0, ..SimulatedCloudConfig::default() };
    let cloud = SimulatedCloud::new(catalog.clone(), config, Arc::new(move || *now.lock().unwrap()));
    let pool = spot(&catalog, "m5.large");
    let reclaims = |cloud: &SimulatedCloud| {
        let (mut n, mut after) = (0, Duration::ZERO);
        let until = Duration::from_secs(20_000 * 3600);
        while let Some(at) = cloud.next_reclaim(pool, after, until) {
            n += 1;
            after = at + Duration::from_secs(1);
        }
        n
    };
    let before = reclaims(&cloud);
    // The pool's price doubles: its hazard is × 4 (the square, within bounds).
    let mut offerings = catalog.offerings.clone();
    offerings[pool as usize].price_per_hour *= 2.0;
    cloud.set_catalog(Arc::new(Catalog::new(offerings)));
    let after = reclaims(&cloud);
    assert!(before > 0 && after > 3 * before && after < 5 * before, "{before} reclaims at the opening price, {after} at twice it");
}
