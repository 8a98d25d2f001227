//! The fleet a 0.3.0 policy sees: counted from the NodeClaims, with the
//! commitments and how much of them the running on-demand nodes use, and
//! the launch failures and interruptions of the last hour. One tracker is
//! shared by provisioning, disruption and the interruption handler; it
//! hands out the same `Arc<Fleet>` (and version) until something changes,
//! so plugins receive it once per change.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cloud::billing::commitment_use;
use crate::model::{CapacityType, Catalog, Commitments, Discount};
use crate::policy::{Fleet, FleetCount, PoolHistory, PriceHistory, ReservationUse, SavingsPlanUse};

/// How far back launch failures and interruptions are reported.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(3600);

/// Most events kept for the window (older ones are dropped first).
const MAX_EVENTS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Happened {
    LaunchFailure,
    Interruption,
}

#[derive(Default)]
struct State {
    last: Arc<Fleet>,
    events: VecDeque<(Duration, u32, Happened)>,
    /// Prices as recorded so far, as handed out (replaced, never changed,
    /// when a catalog brings new prices).
    prices: Arc<PriceHistory>,
}

/// Keeps the fleet state policies are told about.
#[derive(Default)]
pub struct FleetTracker {
    commitments: Commitments,
    state: Mutex<State>,
}

impl FleetTracker {
    /// A tracker reporting `commitments`.
    pub fn new(commitments: Commitments) -> Self {
        FleetTracker { commitments, state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, at: Duration, offering: u32, what: Happened) {
        let mut state = self.state();
        if state.events.len() >= MAX_EVENTS {
            state.events.pop_front();
        }
        state.events.push_back((at, offering, what));
    }

    /// A launch of `offering` was refused for lack of capacity at `at`.
    pub fn launch_failed(&self, offering: u32, at: Duration) {
        self.record(at, offering, Happened::LaunchFailure);
    }

    /// A spot instance of `offering` was warned of its interruption at `at`.
    pub fn interrupted(&self, offering: u32, at: Duration) {
        self.record(at, offering, Happened::Interruption);
    }

    /// The fleet now: `nodes` are (NodePool, catalog offering) of every
    /// running or launching node. Same content as last time: the same
    /// `Arc` and version.
    pub fn observe<'a>(&self, catalog: &Catalog, nodes: impl IntoIterator<Item = (&'a str, u32)>, now: Duration) -> Arc<Fleet> {
        self.observe_counts(catalog, &NodeCounts::of(nodes), now)
    }

    /// [`FleetTracker::observe`], from the nodes counted per (NodePool,
    /// offering): what a provisioning pass keeps up to date as it launches.
    pub fn observe_counts(&self, catalog: &Catalog, counts: &NodeCounts, now: Duration) -> Arc<Fleet> {
        let counts = &counts.counts;
        // What the commitments cover: nothing to work out without any (at
        // every launch of a pass, on every node).
        let (reserved_used, plan_used) = if self.commitments.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let mut on_demand: BTreeMap<u32, (u32, f64)> = BTreeMap::new();
            for (&(_, offering), &count) in counts {
                if let Some(o) = catalog.offerings.get(offering as usize).filter(|o| o.capacity_type == CapacityType::OnDemand) {
                    let e = on_demand.entry(offering).or_default();
                    e.0 = e.0.saturating_add(count);
                    e.1 += o.price_per_hour * f64::from(count);
                }
            }
            let running_od: Vec<(u32, u32, f64)> = on_demand.iter().map(|(&o, &(n, p))| (o, n, p)).collect();
            commitment_use(&running_od, catalog, &self.commitments)
        };
        let mut state = self.state();
        if let Some((next, changed)) = state.prices.recorded(catalog, now.as_secs())
            && (changed || next.catalog_version != state.prices.catalog_version)
        {
            state.prices = Arc::new(next);
        }
        let since = now.saturating_sub(HISTORY_WINDOW);
        while state.events.front().is_some_and(|e| e.0 < since) {
            state.events.pop_front();
        }
        let mut recent: BTreeMap<u32, PoolHistory> = BTreeMap::new();
        for &(_, offering, what) in &state.events {
            let h = recent.entry(offering).or_insert(PoolHistory { offering, launch_failures: 0, interruptions: 0 });
            match what {
                Happened::LaunchFailure => h.launch_failures = h.launch_failures.saturating_add(1),
                Happened::Interruption => h.interruptions = h.interruptions.saturating_add(1),
            }
        }
        let fleet = Fleet {
            version: 0,
            catalog_version: catalog.version,
            running: counts.iter().map(|((pool, offering), &count)| FleetCount { node_pool: pool.clone(), offering: *offering, count }).collect(),
            savings_plans: self
                .commitments
                .savings_plans
                .iter()
                .zip(plan_used)
                .map(|(plan, used)| {
                    let (discount, family_discounts) = match &plan.discount {
                        Discount::All(d) => (*d, Vec::new()),
                        Discount::PerFamily(rates) => (0.0, rates.iter().map(|(f, d)| (f.clone(), *d)).collect()),
                    };
                    SavingsPlanUse { hourly_commitment: plan.hourly_commitment, used_per_hour: used, discount, family_discounts }
                })
                .collect(),
            reserved_instances: self
                .commitments
                .reserved_instances
                .iter()
                .zip(reserved_used)
                .map(|(ri, used)| ReservationUse {
                    instance_type: ri.instance_type.clone(),
                    zone: String::new(),
                    count: ri.count,
                    used: used.min(ri.count),
                    hourly_rate: ri.hourly_rate,
                })
                .collect(),
            capacity_reservations: self
                .commitments
                .capacity_reservations
                .iter()
                .map(|r| {
                    let held = catalog
                        .reserved_offering(&r.instance_type, &r.zone)
                        .map_or(0, |o| counts.iter().filter(|((_, x), _)| *x == o).fold(0u32, |n, (_, c)| n.saturating_add(*c)));
                    ReservationUse {
                        instance_type: r.instance_type.clone(),
                        zone: r.zone.clone(),
                        count: r.count,
                        used: held.min(r.count),
                        hourly_rate: r.hourly_rate,
                    }
                })
                .collect(),
            recent: recent.into_values().collect(),
            prices: state.prices.clone(),
        };
        if state.last.version > 0 && state.last.same_as(&fleet) {
            return state.last.clone();
        }
        let fleet = Arc::new(Fleet { version: state.last.version.saturating_add(1), ..fleet });
        state.last = fleet.clone();
        fleet
    }
}

/// Running or launching nodes per (NodePool, catalog offering).
#[derive(Debug, Clone, Default)]
pub struct NodeCounts {
    counts: BTreeMap<(Arc<str>, u32), u32>,
    /// Each NodePool's name, allocated once and shared by its entries
    /// (a cluster has a few NodePools and many nodes).
    names: Vec<Arc<str>>,
}

impl PartialEq for NodeCounts {
    fn eq(&self, other: &Self) -> bool {
        self.counts == other.counts
    }
}

impl NodeCounts {
    /// Count `nodes`, each a (NodePool, offering).
    pub fn of<'a>(nodes: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let mut counts = NodeCounts::default();
        for (pool, offering) in nodes {
            counts.add(pool, offering);
        }
        counts
    }

    /// One more node of `pool` bought as `offering`.
    pub fn add(&mut self, pool: &str, offering: u32) {
        let name = match self.names.iter().find(|p| ***p == *pool) {
            Some(name) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(pool);
                self.names.push(name.clone());
                name
            }
        };
        let c = self.counts.entry((name, offering)).or_default();
        *c = c.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReservedInstances, SavingsPlan};

    fn on_demand(catalog: &Catalog, instance_type: &str) -> u32 {
        catalog
            .offerings
            .iter()
            .position(|o| o.instance_type == instance_type && o.capacity_type == CapacityType::OnDemand)
            .expect("sold") as u32
    }

    #[test]
    fn commitments_in_use_follow_the_running_on_demand_nodes_and_versions_change_only_with_content() {
        let catalog = Catalog::bundled();
        let m5 = on_demand(&catalog, "m5.xlarge");
        let c6g = on_demand(&catalog, "c6g.large");
        let commitments = Commitments {
            savings_plans: vec![SavingsPlan { hourly_commitment: 0.05, discount: Discount::All(0.25) }],
            reserved_instances: vec![ReservedInstances { instance_type: "m5.xlarge".into(), count: 2, hourly_rate: 0.12 }],
            capacity_reservations: Vec::new(),
        };
        let tracker = FleetTracker::new(commitments);
        let three_m5 = [("a", m5), ("a", m5), ("b", m5)];
        let fleet = tracker.observe(&catalog, three_m5, Duration::ZERO);
        assert_eq!(fleet.version, 1);
        assert_eq!(fleet.pool_nodes("a"), 2);
        // Two of the three m5.xlarge use the RIs; the third's price at 25 %
        // off is more than the plan's $0.05/h, so the plan is spent.
        assert_eq!(fleet.reserved_instances[0].used, 2);
        assert!((fleet.savings_plans[0].used_per_hour - 0.05).abs() < 1e-9, "{:?}", fleet.savings_plans);
        let again = tracker.observe(&catalog, three_m5, Duration::from_secs(5));
        assert!(Arc::ptr_eq(&fleet, &again));
        // One m5 gone, a c6g.large in: one RI free, the plan covers part of the c6g.
        let fleet = tracker.observe(&catalog, [("a", m5), ("a", m5), ("b", c6g)], Duration::from_secs(10));
        assert_eq!(fleet.version, 2);
        assert_eq!(fleet.reserved_instances[0].used, 2);
        let c6g_price = catalog.offerings[c6g as usize].price_per_hour;
        let expected = (c6g_price * 0.75).min(0.05);
        assert!((fleet.savings_plans[0].used_per_hour - expected).abs() < 1e-9);
    }

    #[test]
    fn failures_and_interruptions_are_reported_for_an_hour() {
        let catalog = Catalog::bundled();
        let tracker = FleetTracker::default();
        tracker.launch_failed(7, Duration::from_secs(100));
        tracker.interrupted(7, Duration::from_secs(200));
        tracker.interrupted(9, Duration::from_secs(3000));
        let fleet = tracker.observe(&catalog, [], Duration::from_secs(3750));
        assert_eq!(
            fleet.recent,
            vec![
                PoolHistory { offering: 7, launch_failures: 0, interruptions: 1 },
                PoolHistory { offering: 9, launch_failures: 0, interruptions: 1 }
            ]
        );
        let later = tracker.observe(&catalog, [], Duration::from_secs(7000));
        assert!(later.recent.is_empty());
        assert_eq!(later.version, fleet.version + 1);
    }
}
