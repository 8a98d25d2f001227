//! The conformance suite a candidate passes before it may serve a slot:
//! fixed inputs, answers that must be valid and arrive within the limits.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::error::CallFailure;
use super::plugin::Plugin;
use super::fleet::{Fleet, FleetCount, PodFacts, PoolHistory, PriceHistory, ReservationUse, SavingsPlanUse};
use super::request::{ConsolidationSnapshot, SelectionRequest, SnapshotNode};
use crate::model::{Catalog, Resources};

const GIB: u64 = 1 << 30;

/// One check of the suite.
#[derive(Debug, Clone, Serialize)]
pub struct ConformanceCheck {
    /// What was checked.
    pub name: String,
    /// The failure, if it failed.
    pub failure: Option<CallFailure>,
    /// How long it took.
    pub duration: Duration,
}

/// The result of the whole suite.
#[derive(Debug, Clone, Serialize)]
pub struct ConformanceReport {
    /// Every check, in order.
    pub checks: Vec<ConformanceCheck>,
}

impl ConformanceReport {
    /// The first failed check.
    pub fn first_failure(&self) -> Option<&ConformanceCheck> {
        self.checks.iter().find(|c| c.failure.is_some())
    }

    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.first_failure().is_none()
    }
}

/// The bundled catalog, built once.
pub fn full_catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(Catalog::bundled)
}

/// A request for `pods` in NodePool `default`, feasible = every offering that holds them.
pub fn selection_request(catalog: &Catalog, pods: Vec<Resources>) -> SelectionRequest {
    let total: Resources = pods.iter().copied().sum();
    let facts = pods.iter().enumerate().map(|(i, _)| sample_facts(i)).collect();
    SelectionRequest {
        node_pool: "default".into(),
        feasible: catalog.feasible_for(&total),
        pods,
        facts,
        total,
        pending_pods: 12,
        fleet: sample_fleet(catalog),
    }
}

/// Facts of the suite's `i`-th pod: a mix of workloads, priorities, jobs,
/// pods that must stay on on-demand capacity and PDB-limited ones.
fn sample_facts(i: usize) -> PodFacts {
    PodFacts {
        workload: Arc::from(["web", "batch", "db"][i % 3]),
        priority: [0, 1000, -10][i % 3],
        deletion_cost: [0, 100, -5][i % 3],
        do_not_disrupt: false,
        tolerates_spot: i % 3 != 2,
        job: i % 3 == 1,
        running_seconds: [0, 5400, 86_400][i % 3],
        labels: vec![("team".into(), ["web", "data", "ml"][i % 3].into())],
        annotations: vec![("example.com/cost-centre".into(), ["cc-1", "cc-2", "cc-3"][i % 3].into())],
        pdb_headroom: [None, Some(0), Some(1)][i % 3],
    }
}

/// The suite's fleet: two NodePools' nodes on the first offerings, a
/// Savings Plan half used, Reserved Instances and a capacity reservation,
/// recent failures and interruptions.
pub fn sample_fleet(catalog: &Catalog) -> Arc<Fleet> {
    let offerings = u32::try_from(catalog.offerings.len()).unwrap_or(u32::MAX);
    let type_of = |i: u32| catalog.offerings.get(i as usize).map(|o| o.instance_type.clone()).unwrap_or_default();
    let zone_of = |i: u32| catalog.offerings.get(i as usize).map(|o| o.zone.clone()).unwrap_or_default();
    Arc::new(Fleet {
        version: 1,
        catalog_version: catalog.version,
        running: (0..offerings.min(6))
            .map(|i| FleetCount { node_pool: ["default", "batch"][i as usize % 2].into(), offering: i, count: 1 + i })
            .collect(),
        savings_plans: vec![
            SavingsPlanUse { hourly_commitment: 2.5, used_per_hour: 1.25, discount: 0.28, family_discounts: vec![] },
            SavingsPlanUse {
                hourly_commitment: 1.0,
                used_per_hour: 0.0,
                discount: 0.0,
                family_discounts: vec![("m6i".into(), 0.31), ("c6g".into(), 0.34)],
            },
        ],
        reserved_instances: vec![ReservationUse { instance_type: type_of(0), zone: String::new(), count: 3, used: 1, hourly_rate: 0.12 }],
        capacity_reservations: vec![ReservationUse { instance_type: type_of(1), zone: zone_of(1), count: 2, used: 2, hourly_rate: 0.2 }],
        recent: (0..offerings.min(4)).map(|i| PoolHistory { offering: i * 2, launch_failures: i % 2, interruptions: i / 2 }).collect(),
        prices: Arc::new(sample_prices(catalog)),
    })
}

/// The suite's price history: every offering at its catalog price a day
/// ago, and the first ten, then, six hours ago, 10 % dearer.
fn sample_prices(catalog: &Catalog) -> PriceHistory {
    const DAY_AGO: u64 = 1_767_225_600;
    let points = catalog
        .offerings
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            let i = u32::try_from(i).ok()?;
            let mut points = vec![(DAY_AGO, o.price_per_hour)];
            if i < 10 {
                points.push((DAY_AGO + 18 * 3600, o.price_per_hour * 1.1));
            }
            Some((i, points))
        })
        .collect::<Vec<_>>();
    PriceHistory::from_points(catalog.version, points)
}

/// The suite's consolidation snapshot: an empty node, a busy one, a pinned
/// one and a half-empty old one, with every offering as a replacement.
pub fn sample_snapshot(catalog: &Catalog) -> ConsolidationSnapshot {
    let node = |name: &str, offering: u32, age_seconds: u64, pods: Vec<Resources>, disruptable: bool| SnapshotNode {
        name: name.into(),
        offering,
        age_seconds,
        facts: (0..pods.len()).map(sample_facts).collect(),
        pods,
        disruptable,
    };
    ConsolidationSnapshot {
        node_pool: "default".into(),
        nodes: vec![
            node("empty", 0, 3600, vec![], true),
            node("busy", 1, 7200, vec![Resources::pod(1500, 2 * GIB); 3], true),
            node("pinned", 2, 600, vec![], false),
            node("half", 3, 86_400, vec![Resources::pod(250, GIB)], true),
        ],
        replacements: (0..catalog.offerings.len().min(64) as u32).collect(),
        budget_left: 2,
        pending_pods: 3,
        fleet: sample_fleet(catalog),
    }
}

/// A snapshot larger than the sample: 200 nodes of up to ten pods each,
/// some pinned, on the first offerings, with every offering as a replacement.
pub fn large_snapshot(catalog: &Catalog) -> ConsolidationSnapshot {
    let offerings = u32::try_from(catalog.offerings.len()).unwrap_or(u32::MAX).max(1);
    ConsolidationSnapshot {
        node_pool: "default".into(),
        nodes: (0..200u32)
            .map(|i| SnapshotNode {
                name: format!("node-{i}"),
                offering: (i * 7) % offerings.min(64),
                age_seconds: 600 + u64::from(i) * 60,
                pods: vec![Resources::pod(100 + (i % 5) * 100, GIB / 2); (i % 11) as usize],
                facts: (0..(i % 11) as usize).map(sample_facts).collect(),
                disruptable: i % 13 != 0,
            })
            .collect(),
        replacements: (0..offerings).collect(),
        budget_left: 20,
        pending_pods: 0,
        fleet: sample_fleet(catalog),
    }
}

pub(crate) fn run(plugin: &Plugin) -> ConformanceReport {
    let mut checks = Vec::new();
    let mut check = |name: &str, f: &dyn Fn() -> Result<(), CallFailure>| {
        let started = Instant::now();
        let failure = f().err();
        checks.push(ConformanceCheck { name: name.into(), failure, duration: started.elapsed() });
    };
    let catalog = full_catalog();
    if plugin.info().world.selects() {
        check("rank: one small pod", &|| {
            plugin.rank(catalog, &selection_request(catalog, vec![Resources::pod(500, GIB)])).map(drop)
        });
        check("rank: two GPU pods", &|| {
            let pods = vec![Resources::pod(4000, 16 * GIB).with_gpus(1); 2];
            plugin.rank(catalog, &selection_request(catalog, pods)).map(drop)
        });
        check("rank: nothing feasible", &|| {
            let mut request = selection_request(catalog, vec![Resources::pod(500, GIB)]);
            request.feasible.clear();
            match plugin.rank(catalog, &request)? {
                r if r.is_empty() => Ok(()),
                r => Err(CallFailure::InvalidOutput(format!("{} scores with nothing feasible", r.len()))),
            }
        });
        let small = Catalog::bundled_sample(1000);
        check("rank: new catalog version, 1000 offerings", &|| {
            plugin.rank(&small, &selection_request(&small, vec![Resources::pod(100, GIB / 4); 5])).map(drop)
        });
        check("rank: 1000 pods, every offering feasible", &|| {
            let pods = vec![Resources::pod(100, GIB / 8); 1000];
            let total: Resources = pods.iter().copied().sum();
            let request = SelectionRequest {
                node_pool: "default".into(),
                feasible: (0..u32::try_from(catalog.offerings.len()).unwrap_or(u32::MAX)).collect(),
                facts: (0..pods.len()).map(sample_facts).collect(),
                pods,
                total,
                pending_pods: 1000,
                fleet: sample_fleet(catalog),
            };
            plugin.rank(catalog, &request).map(drop)
        });
    }
    if plugin.info().world.consolidates() {
        check("plan: no nodes", &|| {
            let mut snapshot = sample_snapshot(catalog);
            snapshot.nodes.clear();
            plugin.plan(catalog, &snapshot).map(drop)
        });
        check("plan: four nodes", &|| plugin.plan(catalog, &sample_snapshot(catalog)).map(drop));
        check("plan: 200 nodes, every offering a replacement", &|| plugin.plan(catalog, &large_snapshot(catalog)).map(drop));
    }
    ConformanceReport { checks }
}
