//! `disruption-aware` (contract 0.3.0): consolidate only where it pays.
//!
//! A node's cost is what it holds of the bill, given the commitments. Spot
//! costs its price. An on-demand node deleted (its pods fit on the others)
//! frees Savings Plan headroom another node will use: it is worth the
//! plan's rate for its family (list price when no plan covers it). An
//! on-demand node replaced is worth only what the commitments do not cover
//! now, since its headroom would go unused: so a covered node is never
//! swapped for spot, while a spot node is swapped for on-demand the free
//! headroom covers ([`economics::marginal_price`] prices the replacement).
//! A capacity reservation costs nothing. An action is proposed when its saving over `horizon_hours`
//! exceeds what its evictions cost:
//! - `dollars_per_pod` for each pod (a restart), times `1 + priority / 1000`
//!   for pods of positive priority;
//! - `dollars_per_deletion_cost` times each pod's positive
//!   `pod-deletion-cost`;
//! - for a job's pod, the work it loses: its share of the node's price for
//!   as long as it has run (the node's age when the host does not know).
//!
//! A node with a pod whose PodDisruptionBudget allows no eviction is left
//! alone. Empty nodes are always deleted. Deletes come first (their pods
//! must fit on the nodes that stay, asked through `what-if`), then one-node
//! replacements by the offering of lowest marginal price, all within the
//! NodePool's disruption budget.
//!
//! Config: `{"horizon_hours": 1.0, "dollars_per_pod": 0.002,
//! "dollars_per_deletion_cost": 0.0001, "max_candidates": 16}`.

use std::sync::OnceLock;

use nodewright_plugin::consolidate::pods_of;
use nodewright_plugin::{
    Action, CapacityType, Catalog, Consolidator, Fleet, Node, Offering, Replacement, Requests, Snapshot, economics, fleet,
    pods_not_fitting_nodes, pods_not_fitting_offering,
};

#[derive(Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    horizon_hours: f64,
    dollars_per_pod: f64,
    dollars_per_deletion_cost: f64,
    max_candidates: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { horizon_hours: 1.0, dollars_per_pod: 0.002, dollars_per_deletion_cost: 0.0001, max_candidates: 16 }
    }
}

fn config() -> Result<Config, String> {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let c: Config = nodewright_plugin::config()?;
            for (name, v) in [("horizon_hours", c.horizon_hours), ("dollars_per_pod", c.dollars_per_pod), ("dollars_per_deletion_cost", c.dollars_per_deletion_cost)] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(format!("invalid plugin config: {name} {v} must be a finite number >= 0"));
                }
            }
            Ok(c)
        })
        .clone()
}

/// Share of the running on-demand list price the commitments do not cover now.
fn uncovered_share(fleet: &Fleet, catalog: &Catalog) -> f64 {
    let od = |o: u32| catalog.offerings.get(o as usize).filter(|o| o.capacity_type == CapacityType::OnDemand);
    let list: f64 = fleet.counts().filter_map(|c| od(c.offering).map(|o| o.price_per_hour * f64::from(c.count))).sum();
    if list <= 0.0 {
        return 1.0;
    }
    let mut covered = 0.0;
    for ri in &fleet.reserved_instances {
        let price = fleet.counts().filter_map(|c| od(c.offering)).find(|o| o.instance_type == ri.instance_type).map_or(0.0, |o| o.price_per_hour);
        covered += price * f64::from(ri.used);
    }
    for plan in &fleet.savings_plans {
        let discount = if plan.family_discounts.is_empty() {
            plan.discount
        } else {
            plan.family_discounts.iter().map(|(_, d)| *d).fold(0.0, f64::max)
        };
        if discount < 1.0 {
            covered += plan.used_per_hour / (1.0 - discount);
        }
    }
    (1.0 - covered / list).clamp(0.0, 1.0)
}

/// Dollars per hour deleting `node` takes off the bill.
fn node_cost(node: &Node, catalog: &Catalog, fleet: &Fleet) -> f64 {
    match catalog.offerings.get(node.offering as usize) {
        Some(o) if o.capacity_type == CapacityType::OnDemand => {
            let best = fleet.savings_plans.iter().filter_map(|p| economics::plan_discount(p, &o.family)).fold(0.0f64, f64::max);
            o.price_per_hour * (1.0 - best.clamp(0.0, 1.0))
        }
        Some(o) if o.capacity_type == CapacityType::Spot => o.price_per_hour,
        _ => 0.0,
    }
}

/// Dollars per hour replacing a node of `current` saves, by the new
/// node's offering. On-demand by on-demand: the difference at the plan's
/// rate (both draw on the commitment); on-demand by spot: only the
/// uncovered share of the old price (the headroom it frees would go
/// unused); spot by anything: its price less what the new node adds to
/// the bill. What depends on `current` alone is worked out once, since
/// every offering the NodePool may launch is weighed against it.
struct Saving<'a> {
    current: &'a Offering,
    /// The rate an on-demand to on-demand difference is worth.
    on_demand_rate: f64,
    uncovered: f64,
}

impl<'a> Saving<'a> {
    fn new(current: &'a Offering, fleet: &Fleet, uncovered: f64) -> Self {
        let best = fleet.savings_plans.iter().filter_map(|p| economics::plan_discount(p, &current.family)).fold(0.0f64, f64::max);
        let on_demand_rate = if uncovered > 0.0 { 1.0 } else { 1.0 - best.clamp(0.0, 1.0) };
        Saving { current, on_demand_rate, uncovered }
    }

    /// The saving of a new node of `new`.
    fn of(&self, new: &Packed) -> f64 {
        let od = CapacityType::OnDemand;
        match (self.current.capacity_type, new.capacity_type) {
            (CapacityType::Spot, _) => self.current.price_per_hour - new.marginal_price,
            (c, n) if c == od && n == od => (self.current.price_per_hour - new.price_per_hour) * self.on_demand_rate,
            (c, _) if c == od => self.current.price_per_hour * self.uncovered - new.marginal_price,
            _ => 0.0,
        }
    }
}

/// A replacement offering as the search reads it, packed.
struct Packed {
    index: u32,
    cpu_millis: u32,
    memory_bytes: u64,
    capacity_type: CapacityType,
    price_per_hour: f64,
    /// What a new node of it adds to the bill, given the commitments.
    marginal_price: f64,
}

/// The snapshot's replacement offerings (those in the catalog), packed
/// once per call: every node weighed for replacement walks the whole list.
struct Replacements(Vec<Packed>);

impl Replacements {
    fn of(snapshot: &Snapshot, catalog: &Catalog, fleet: &Fleet) -> Self {
        let mut prices = economics::prices(catalog.version, fleet);
        let packed = snapshot
            .replacements
            .iter()
            .filter_map(|&index| {
                let o = catalog.offerings.get(index as usize)?;
                Some(Packed {
                    index,
                    cpu_millis: o.allocatable.cpu_millis,
                    memory_bytes: o.allocatable.memory_bytes,
                    capacity_type: o.capacity_type,
                    price_per_hour: o.price_per_hour,
                    marginal_price: prices.of(index, o),
                })
            })
            .collect();
        Replacements(packed)
    }

    /// The (at most) four offerings that hold `cpu_millis` and
    /// `memory_bytes` and save the most (`worth` it), best first, ties by
    /// index: (minus the saving, offering).
    fn best(&self, saving: &Saving, cpu_millis: u64, memory_bytes: u64, worth: impl Fn(f64) -> bool) -> Vec<(f64, u32)> {
        let order = |a: &(f64, u32), b: &(f64, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        let mut best: Vec<(f64, u32)> = Vec::with_capacity(5);
        for r in self.0.iter().filter(|r| u64::from(r.cpu_millis) >= cpu_millis && r.memory_bytes >= memory_bytes) {
            let s = saving.of(r);
            if !worth(s) {
                continue;
            }
            let option = (-s, r.index);
            if best.len() == 4 && order(&option, &best[3]).is_ge() {
                continue;
            }
            let at = best.partition_point(|b| order(b, &option).is_lt());
            best.insert(at, option);
            best.truncate(4);
        }
        best
    }
}

/// Dollars the evictions of `node` cost, `None` when a PDB forbids them.
fn eviction_cost(node: &Node, catalog: &Catalog, config: &Config) -> Option<f64> {
    let offering = catalog.offerings.get(node.offering as usize)?;
    let hours = node.age_seconds as f64 / 3600.0;
    let mut cost = 0.0;
    for pod in &node.pods {
        if pod.pdb_headroom == Some(0) || pod.do_not_disrupt {
            return None;
        }
        cost += config.dollars_per_pod * (1.0 + f64::from(pod.priority.max(0)) / 1000.0);
        cost += config.dollars_per_deletion_cost * f64::from(pod.deletion_cost.max(0));
        if pod.job {
            let hours = if pod.running_seconds > 0 { pod.running_seconds as f64 / 3600.0 } else { hours };
            let share = if offering.allocatable.cpu_millis == 0 {
                1.0
            } else {
                (f64::from(pod.requests().cpu_millis) / f64::from(offering.allocatable.cpu_millis)).min(1.0)
            };
            cost += share * offering.price_per_hour * hours;
        }
    }
    Some(cost)
}

struct DisruptionAware;

impl Consolidator for DisruptionAware {
    fn plan(snapshot: &Snapshot, catalog: &Catalog) -> Result<Vec<Action>, String> {
        let config = config()?;
        let fleet = fleet();
        let nodes = &snapshot.nodes;
        let budget = snapshot.budget_left as usize;
        let mut actions = Vec::new();
        let mut gone: Vec<usize> = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            if actions.len() < budget && node.disruptable && node.pods.is_empty() {
                actions.push(Action::Delete(vec![i as u32]));
                gone.push(i);
            }
        }
        let uncovered = uncovered_share(&fleet, catalog);
        // The replacement offerings, packed once per call when a node is
        // weighed for replacement.
        let mut packed: Option<Replacements> = None;
        // Candidates by net value of deleting them, best first.
        let mut candidates: Vec<(f64, f64, usize)> = nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| n.disruptable && !n.pods.is_empty() && !gone.contains(i))
            .filter_map(|(i, n)| {
                let saving = node_cost(n, catalog, &fleet);
                let cost = eviction_cost(n, catalog, &config)?;
                Some((saving * config.horizon_hours - cost, cost, i))
            })
            .filter(|c| c.0 > 0.0)
            .collect();
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
        candidates.truncate(config.max_candidates);
        for &(_, cost, i) in &candidates {
            if actions.len() >= budget {
                break;
            }
            // Deleting it: its pods (and those of the nodes already deleted
            // for their pods) must fit on the nodes that stay.
            let mut leaving = gone.clone();
            leaving.push(i);
            let pods = pods_of(snapshot, &leaving);
            let stay: Vec<u32> = (0..nodes.len()).filter(|j| !leaving.contains(j)).map(|j| j as u32).collect();
            if !stay.is_empty() && pods_not_fitting_nodes(&pods, &stay)?.is_empty() {
                actions.push(Action::Delete(vec![i as u32]));
                gone.push(i);
                continue;
            }
            // Replacing it by the offering that saves the most and holds its pods.
            let own = pods_of(snapshot, &[i]);
            let Some(current) = catalog.offerings.get(nodes[i].offering as usize) else { continue };
            let cpu: u64 = own.iter().map(|p| u64::from(p.cpu_millis)).sum();
            let memory: u64 = own.iter().map(|p| p.memory_bytes).sum();
            let saving = Saving::new(current, &fleet, uncovered);
            let replacements = packed.get_or_insert_with(|| Replacements::of(snapshot, catalog, &fleet));
            let options = replacements.best(&saving, cpu, memory, |saving| saving * config.horizon_hours > cost);
            for &(_, o) in &options {
                if pods_not_fitting_offering(&own, o)?.is_empty() {
                    actions.push(Action::Replace(Replacement { nodes: vec![i as u32], offering: o }));
                    gone.push(i);
                    break;
                }
            }
        }
        Ok(actions)
    }
}

nodewright_plugin::export!(DisruptionAware);
