//! What contract 0.3.0 tells a policy beyond the catalog: the pods as
//! more than requests, and the fleet — running nodes per NodePool and
//! offering, the commitments and how much of them the fleet uses now, the
//! recent launch failures and interruptions per capacity pool. Host-side
//! and independent of the contract version; the glue converts.

use std::sync::Arc;

use crate::model::{PodSpec, well_known};

/// What a policy learns about a pod besides its requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodFacts {
    /// The workload (its `app` label); empty when unknown.
    pub workload: Arc<str>,
    /// Priority.
    pub priority: i32,
    /// `controller.kubernetes.io/pod-deletion-cost`.
    pub deletion_cost: i32,
    /// Must not be disrupted.
    pub do_not_disrupt: bool,
    /// May run on spot capacity.
    pub tolerates_spot: bool,
    /// Runs to completion.
    pub job: bool,
    /// Seconds it has run on its node (0 while pending or unknown).
    pub running_seconds: u64,
    /// Its labels whose keys the NodePool names (`spec.policy.podLabels`).
    pub labels: Vec<(String, String)>,
    /// Its annotations whose keys the NodePool names (`spec.policy.podAnnotations`).
    pub annotations: Vec<(String, String)>,
    /// Evictions its PodDisruptionBudgets allow now (`None`: no budget).
    pub pdb_headroom: Option<u32>,
}

impl PodFacts {
    /// The facts `spec` gives, with its labels and annotations under the
    /// keys `pool` names (no PDB headroom: the caller knows the budgets).
    pub fn of(spec: &PodSpec, pool: &crate::model::NodePool) -> Self {
        let named = |keys: &[String], values: &std::collections::BTreeMap<String, String>| -> Vec<(String, String)> {
            keys.iter().filter_map(|k| values.get(k).map(|v| (k.clone(), v.clone()))).collect()
        };
        PodFacts {
            workload: spec.labels.get("app").map_or_else(|| Arc::from(""), |w| Arc::from(w.as_str())),
            priority: spec.priority,
            deletion_cost: spec.deletion_cost,
            do_not_disrupt: spec.do_not_disrupt,
            tolerates_spot: tolerates_spot(spec),
            job: spec.job,
            running_seconds: 0,
            labels: named(&pool.policy_labels, &spec.labels),
            annotations: named(&pool.policy_annotations, &spec.annotations),
            pdb_headroom: None,
        }
    }
}

/// Whether nothing in `spec` keeps it off spot capacity: its node selector
/// and at least one of its required node-affinity terms allow
/// `karpenter.sh/capacity-type: spot`.
pub fn tolerates_spot(spec: &PodSpec) -> bool {
    let spot = "spot";
    spec.node_selector.get(well_known::CAPACITY_TYPE).is_none_or(|v| v == spot)
        && (spec.required_terms.is_empty()
            || spec.required_terms.iter().any(|term| {
                term.iter().filter(|r| r.key == well_known::CAPACITY_TYPE).all(|r| r.matches(Some(spot)))
            }))
}

/// Nodes of a NodePool running (or launching as) an offering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetCount {
    /// NodePool (shared: a fleet is rebuilt at every launch).
    pub node_pool: Arc<str>,
    /// Catalog index.
    pub offering: u32,
    /// Nodes (never 0).
    pub count: u32,
}

/// A Savings Plan and how much of it the running fleet uses now.
#[derive(Debug, Clone, PartialEq)]
pub struct SavingsPlanUse {
    /// $ per hour committed.
    pub hourly_commitment: f64,
    /// $ per hour of it the running on-demand fleet uses now.
    pub used_per_hour: f64,
    /// Fraction off for every family (when `family_discounts` is empty).
    pub discount: f64,
    /// Fraction off per family; families not named are not covered.
    pub family_discounts: Vec<(String, f64)>,
}

/// Reserved Instances (zone empty) or a capacity reservation, and their use.
#[derive(Debug, Clone, PartialEq)]
pub struct ReservationUse {
    /// Instance type.
    pub instance_type: String,
    /// Zone, empty for regional Reserved Instances.
    pub zone: String,
    /// Instances reserved.
    pub count: u32,
    /// Instances of the fleet using them now.
    pub used: u32,
    /// $ per instance-hour, paid whether used or not.
    pub hourly_rate: f64,
}

/// Launch failures and interruptions of a pool over the last hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolHistory {
    /// Catalog index.
    pub offering: u32,
    /// Launches refused for lack of capacity.
    pub launch_failures: u32,
    /// Spot interruption warnings.
    pub interruptions: u32,
}

/// Most price points kept per offering.
pub const MAX_PRICE_POINTS: usize = 64;

/// How each offering's price moved: (seconds since the Unix epoch, $ per
/// hour) each time it changed, oldest first, at most [`MAX_PRICE_POINTS`].
/// Kept as one list, offering after offering, so recording a catalog and
/// copying the history (at every catalog version) allocate once, not once
/// per offering.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PriceHistory {
    /// Catalog version the indices refer to.
    pub catalog_version: u64,
    /// Every offering's points, offering after offering.
    points: Vec<(u64, f64)>,
    /// Where offering `i`'s points start in `points`: `starts[i]`, up to
    /// `starts[i + 1]` (empty when no offering was seen).
    starts: Vec<usize>,
}

impl PriceHistory {
    /// A history of the given points per catalog index (each offering's
    /// oldest first; offerings not named have none).
    pub fn from_points(catalog_version: u64, points: impl IntoIterator<Item = (u32, Vec<(u64, f64)>)>) -> Self {
        let mut by_offering: Vec<(u32, Vec<(u64, f64)>)> = points.into_iter().collect();
        by_offering.sort_by_key(|(offering, _)| *offering);
        let offerings = by_offering.last().map_or(0, |(offering, _)| *offering as usize + 1);
        let mut history = PriceHistory { catalog_version, points: Vec::new(), starts: Vec::with_capacity(offerings + 1) };
        let mut named = by_offering.into_iter().peekable();
        for i in 0..offerings {
            history.starts.push(history.points.len());
            while let Some((_, points)) = named.next_if(|(offering, _)| *offering as usize == i) {
                history.points.extend(points);
            }
        }
        history.starts.push(history.points.len());
        history
    }

    /// The points of catalog offering `offering`, oldest first (none when
    /// it was never seen).
    pub fn of(&self, offering: u32) -> &[(u64, f64)] {
        let i = offering as usize;
        match (self.starts.get(i), self.starts.get(i.saturating_add(1))) {
            (Some(&from), Some(&to)) => self.points.get(from..to).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Record `catalog`'s prices at `at_seconds`: a point for each offering
    /// whose price differs from its last one (the oldest dropped past
    /// [`MAX_PRICE_POINTS`]). Returns whether anything changed.
    pub fn record(&mut self, catalog: &crate::model::Catalog, at_seconds: u64) -> bool {
        match self.recorded(catalog, at_seconds) {
            Some((next, changed)) => {
                *self = next;
                changed
            }
            None => false,
        }
    }

    /// [`PriceHistory::record`] as a new history, leaving this one as it
    /// is (a history handed out stays unchanged): the new history and
    /// whether any point changed; `None` when this one already holds
    /// `catalog`'s version.
    pub fn recorded(&self, catalog: &crate::model::Catalog, at_seconds: u64) -> Option<(PriceHistory, bool)> {
        if self.catalog_version == catalog.version && !self.points.is_empty() {
            return None;
        }
        let offerings = catalog.offerings.len().min(u32::MAX as usize);
        let mut points = Vec::with_capacity(self.points.len().max(offerings).saturating_add(offerings / 8));
        let mut starts = Vec::with_capacity(offerings.saturating_add(1));
        let mut changed = self.starts.len() > offerings.saturating_add(1);
        for (i, o) in catalog.offerings.iter().take(offerings).enumerate() {
            starts.push(points.len());
            let old = self.of(i as u32);
            let moved = old.last().is_none_or(|&(_, p)| p != o.price_per_hour);
            let keep = if moved && old.len() >= MAX_PRICE_POINTS { &old[old.len() + 1 - MAX_PRICE_POINTS..] } else { old };
            points.extend_from_slice(keep);
            if moved {
                points.push((at_seconds, o.price_per_hour));
                changed = true;
            }
        }
        starts.push(points.len());
        Some((PriceHistory { catalog_version: catalog.version, points, starts }, changed))
    }
}

/// The fleet and the commitments, under a version that changes whenever
/// any of it does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fleet {
    /// Version (0: nothing observed yet).
    pub version: u64,
    /// Catalog version the offering indices refer to.
    pub catalog_version: u64,
    /// Running and launching nodes, by NodePool then offering.
    pub running: Vec<FleetCount>,
    /// Savings Plans.
    pub savings_plans: Vec<SavingsPlanUse>,
    /// Regional Reserved Instances.
    pub reserved_instances: Vec<ReservationUse>,
    /// On-demand capacity reservations.
    pub capacity_reservations: Vec<ReservationUse>,
    /// Pools with something to report over the last hour.
    pub recent: Vec<PoolHistory>,
    /// How prices moved (read by the `price-history` import, not copied
    /// into the contract's fleet record).
    pub prices: Arc<PriceHistory>,
}

impl Fleet {
    /// The same content as `other`, versions aside.
    pub fn same_as(&self, other: &Fleet) -> bool {
        self.catalog_version == other.catalog_version
            && self.running == other.running
            && self.savings_plans == other.savings_plans
            && self.reserved_instances == other.reserved_instances
            && self.capacity_reservations == other.capacity_reservations
            && self.recent == other.recent
            && Arc::ptr_eq(&self.prices, &other.prices)
    }

    /// Dollars per hour one more node of `offering` adds to the bill now:
    /// nothing when a free Reserved Instance of its type (or, for the
    /// reserved capacity type, a free capacity reservation of its type and
    /// zone) takes it; for on-demand, the part of its list price the free
    /// headroom of the best Savings Plan does not cover; spot at its price.
    pub fn marginal_price(&self, offering: &crate::model::Offering) -> f64 {
        use crate::model::CapacityType;
        let price = offering.price_per_hour;
        let free = |r: &ReservationUse| r.used < r.count && r.instance_type == offering.instance_type;
        match offering.capacity_type {
            CapacityType::Spot => price,
            CapacityType::Reserved => {
                if self.capacity_reservations.iter().any(|r| free(r) && r.zone == offering.zone) { 0.0 } else { price }
            }
            CapacityType::OnDemand => {
                if self.reserved_instances.iter().any(free) {
                    return 0.0;
                }
                self.savings_plans
                    .iter()
                    .filter_map(|plan| {
                        let discount = if plan.family_discounts.is_empty() {
                            plan.discount
                        } else {
                            plan.family_discounts.iter().find(|(f, _)| *f == offering.family).map(|(_, d)| *d)?
                        };
                        let headroom = (plan.hourly_commitment - plan.used_per_hour).max(0.0);
                        (discount < 1.0 && headroom > 0.0).then(|| (price - headroom / (1.0 - discount)).max(0.0))
                    })
                    .fold(price, f64::min)
            }
        }
    }

    /// Nodes of `node_pool` (running and launching).
    pub fn pool_nodes(&self, node_pool: &str) -> u32 {
        self.running.iter().filter(|c| *c.node_pool == *node_pool).fold(0u32, |n, c| n.saturating_add(c.count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CapacityType, Catalog};

    #[test]
    fn the_price_history_keeps_a_point_per_change_the_newest_64_per_offering() {
        let first = Catalog::bundled_types(2);
        let mut history = PriceHistory::default();
        assert!(history.record(&first, 10));
        assert!(!history.record(&first, 20), "the same catalog version again records nothing");
        let price = |i: usize| first.offerings[i].price_per_hour;
        assert_eq!(history.of(0), [(10, price(0))]);
        assert_eq!(history.of(u32::MAX), [], "an offering never seen has no points");
        // Offering 1 changes price 70 times; the others stay.
        let mut offerings = first.offerings.clone();
        for step in 1..=70u64 {
            offerings[1].price_per_hour = price(1) + step as f64;
            assert!(history.record(&Catalog::new(offerings.clone()), 10 + step));
        }
        assert_eq!(history.of(0), [(10, price(0))]);
        let one = history.of(1);
        assert_eq!(one.len(), MAX_PRICE_POINTS);
        assert_eq!(one.first(), Some(&(17, price(1) + 7.0)), "the oldest points went first");
        assert_eq!(one.last(), Some(&(80, price(1) + 70.0)));
        assert_eq!(history.of(2), [(10, price(2))]);
        // A catalog whose prices did not move adds nothing, though its version is new.
        let mut same = Catalog::new(offerings.clone());
        same.version = same.version.wrapping_add(1);
        assert!(!history.record(&same, 99));
        let built = PriceHistory::from_points(7, [(3, vec![(1, 2.0), (5, 2.5)]), (1, vec![(4, 1.0)])]);
        assert_eq!((built.of(0), built.of(1), built.of(3), built.of(4)), (&[][..], &[(4, 1.0)][..], &[(1, 2.0), (5, 2.5)][..], &[][..]));
    }

    #[test]
    fn the_marginal_price_counts_free_reservations_and_savings_plan_headroom() {
        let catalog = Catalog::bundled();
        let find = |t: &str, c: CapacityType| catalog.offerings.iter().find(|o| o.instance_type == t && o.capacity_type == c).unwrap();
        let m5 = find("m5.xlarge", CapacityType::OnDemand);
        let c6g = find("c6g.large", CapacityType::OnDemand);
        let spot = find("m5.xlarge", CapacityType::Spot);
        let ri = |used| ReservationUse { instance_type: "m5.xlarge".into(), zone: String::new(), count: 2, used, hourly_rate: 0.12 };
        let plan = |used| SavingsPlanUse { hourly_commitment: 0.05, used_per_hour: used, discount: 0.25, family_discounts: vec![] };
        let fleet = Fleet { reserved_instances: vec![ri(1)], savings_plans: vec![plan(0.0)], ..Fleet::default() };
        assert_eq!(fleet.marginal_price(m5), 0.0);
        assert_eq!(fleet.marginal_price(spot), spot.price_per_hour);
        // $0.05/h of plan at 25 % off covers $0.0667/h of list price.
        let covered = 0.05 / 0.75;
        assert!((fleet.marginal_price(c6g) - (c6g.price_per_hour - covered).max(0.0)).abs() < 1e-12);
        let full = Fleet { reserved_instances: vec![ri(2)], savings_plans: vec![plan(0.05)], ..Fleet::default() };
        assert_eq!(full.marginal_price(m5), m5.price_per_hour);
        assert_eq!(Fleet::default().marginal_price(c6g), c6g.price_per_hour);
    }

    #[test]
    fn pod_facts_carry_only_the_labels_and_annotations_the_node_pool_names() {
        let spec = PodSpec::requesting(500, 1 << 30).label("app", "web").label("team", "growth").label("secret", "x");
        let spec = spec.annotation("example.com/cost-centre", "cc-7").annotation("example.com/other", "y");
        let mut pool = crate::model::NodePool::new("default");
        pool.policy_labels = vec!["team".to_string(), "tier".to_string()];
        pool.policy_annotations = vec!["example.com/cost-centre".to_string()];
        let facts = PodFacts::of(&spec, &pool);
        assert_eq!(facts.labels, vec![("team".to_string(), "growth".to_string())]);
        assert_eq!(facts.annotations, vec![("example.com/cost-centre".to_string(), "cc-7".to_string())]);
        assert_eq!(&*facts.workload, "web");
        let bare = PodFacts::of(&spec, &crate::model::NodePool::new("default"));
        assert!(bare.labels.is_empty() && bare.annotations.is_empty());
    }

    #[test]
    fn a_pod_tolerates_spot_unless_its_selector_or_every_term_excludes_it() {
        use crate::model::{Operator, Requirement};
        let spec = PodSpec::default();
        assert!(tolerates_spot(&spec));
        let mut on_demand = PodSpec::default();
        on_demand.node_selector.insert(well_known::CAPACITY_TYPE.into(), "on-demand".into());
        assert!(!tolerates_spot(&on_demand));
        let term = |v: &str| vec![Requirement { key: well_known::CAPACITY_TYPE.into(), operator: Operator::In, values: vec![v.into()] }];
        let either = PodSpec { required_terms: vec![term("on-demand"), term("spot")], ..PodSpec::default() };
        assert!(tolerates_spot(&either));
        let never = PodSpec { required_terms: vec![term("on-demand")], ..PodSpec::default() };
        assert!(!tolerates_spot(&never));
    }
}
