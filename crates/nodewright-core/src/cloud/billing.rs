//! The bill with commitments applied, hour by hour, the way AWS applies
//! them: Reserved Instances first, to running on-demand instances of their
//! type in any zone; then each Savings Plan, in the order given, to the
//! on-demand usage left, highest discount first, until its hourly
//! commitment is spent. Commitments are paid whether used or not; usage they
//! cover costs nothing more.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{Catalog, Commitments};

/// On-demand usage of one offering in one clock hour.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Instance-seconds.
    pub seconds: f64,
    /// What they cost at the price each instance was launched at.
    pub dollars: f64,
}

/// On-demand usage by clock hour (hours since the start), then by catalog
/// offering index.
pub type HourlyUsage = BTreeMap<u64, BTreeMap<u32, Usage>>;

/// The bill once commitments are applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CommittedBill {
    /// Savings Plan commitments and Reserved Instance fees over the run.
    pub commitment_fees: f64,
    /// On-demand usage the commitments covered, at the on-demand price.
    pub covered_on_demand: f64,
    /// On-demand usage nothing covered: paid at the on-demand price.
    pub uncovered_on_demand: f64,
    /// Spot usage (commitments here do not cover spot).
    pub spot: f64,
    /// What the run costs: fees, uncovered on-demand and spot.
    pub effective: f64,
    /// Savings Plan commitment spent on usage, and left unused.
    pub savings_plan_used: f64,
    /// (See `savings_plan_used`.)
    pub savings_plan_unused: f64,
    /// Reserved Instance hours used, and paid for without use.
    pub reserved_hours_used: f64,
    /// (See `reserved_hours_used`.)
    pub reserved_hours_unused: f64,
    /// Capacity reservation hours used by instances, and paid for empty.
    pub reservation_hours_used: f64,
    /// (See `reservation_hours_used`.)
    pub reservation_hours_unused: f64,
}

/// Apply `commitments` to `usage` over a run of `hours` hours (the last may
/// be partial: commitments are paid, and available, pro rata), with `spot`
/// dollars of spot usage. Offerings are looked up in `catalog`.
pub fn apply(usage: &HourlyUsage, hours: f64, catalog: &Catalog, commitments: &Commitments, spot: f64) -> CommittedBill {
    let mut bill = CommittedBill { spot, ..CommittedBill::default() };
    let hours = if hours.is_finite() && hours > 0.0 { hours } else { 0.0 };
    let empty = BTreeMap::new();
    // Every hour the run spans, used or not: commitments are paid for all.
    let whole = hours.ceil() as u64;
    for hour in 0..whole.max(usage.keys().next_back().map_or(0, |h| h + 1)) {
        let share = (hours - hour as f64).clamp(0.0, 1.0);
        let mut left: Vec<(u32, Usage)> = usage.get(&hour).unwrap_or(&empty).iter().map(|(&o, &u)| (o, u)).collect();
        let hour = cover_hour(&mut left, share, catalog, commitments);
        bill.covered_on_demand += hour.covered_dollars;
        bill.commitment_fees += hour.fees;
        for (ri, used) in commitments.reserved_instances.iter().zip(&hour.reserved_seconds) {
            let capacity = f64::from(ri.count) * 3600.0 * share;
            bill.reserved_hours_used += used / 3600.0;
            bill.reserved_hours_unused += (capacity - used).max(0.0) / 3600.0;
        }
        for (plan, used) in commitments.savings_plans.iter().zip(&hour.plan_dollars) {
            let budget = plan.hourly_commitment * share;
            bill.savings_plan_used += used;
            bill.savings_plan_unused += (budget - used).max(0.0);
        }
        for (r, used) in commitments.capacity_reservations.iter().zip(&hour.reservation_seconds) {
            let capacity = f64::from(r.count) * 3600.0 * share;
            bill.reservation_hours_used += used / 3600.0;
            bill.reservation_hours_unused += (capacity - used).max(0.0) / 3600.0;
        }
        bill.uncovered_on_demand += left.iter().map(|(_, u)| u.dollars.max(0.0)).sum::<f64>();
    }
    bill.effective = bill.commitment_fees + bill.uncovered_on_demand + bill.spot;
    bill
}

/// What the commitments covered in one hour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HourCover {
    /// Commitment fees of the hour (its `share`).
    pub fees: f64,
    /// On-demand dollars covered, at the on-demand price.
    pub covered_dollars: f64,
    /// Instance-seconds each Reserved Instance entry covered.
    pub reserved_seconds: Vec<f64>,
    /// Dollars of each Savings Plan's commitment spent.
    pub plan_dollars: Vec<f64>,
    /// Instance-seconds each capacity reservation held.
    pub reservation_seconds: Vec<f64>,
}

/// Apply `commitments` to the on-demand usage `left` of one hour (`share`
/// of it when the run ends within it): capacity reservations are paid and
/// hold the instances launched into them (the `reserved` capacity type);
/// Reserved Instances apply first to on-demand instances of their type in
/// any zone, then each Savings Plan, highest discount first, until its
/// commitment is spent. `left` keeps what nothing covered. The bill and
/// the policies' view of the commitments ([`commitment_use`]) both use it.
pub fn cover_hour(left: &mut [(u32, Usage)], share: f64, catalog: &Catalog, commitments: &Commitments) -> HourCover {
    let mut hour = HourCover::default();
    let on_demand = |o: u32| catalog.offerings.get(o as usize).filter(|x| x.capacity_type == crate::model::CapacityType::OnDemand);
    for r in &commitments.capacity_reservations {
        let capacity = f64::from(r.count) * 3600.0 * share;
        let held: f64 = left
            .iter()
            .filter(|(o, _)| {
                catalog.offerings.get(*o as usize).is_some_and(|x| {
                    x.capacity_type == crate::model::CapacityType::Reserved && x.instance_type == r.instance_type && x.zone == r.zone
                })
            })
            .map(|(_, u)| u.seconds)
            .sum();
        hour.fees += f64::from(r.count) * r.hourly_rate * share;
        hour.reservation_seconds.push(held.min(capacity));
    }
    let cover = |item: &mut Usage, seconds: f64, covered: &mut f64| -> f64 {
        let seconds = seconds.min(item.seconds).max(0.0);
        if item.seconds <= 0.0 || seconds <= 0.0 {
            return 0.0;
        }
        let dollars = item.dollars * seconds / item.seconds;
        item.seconds -= seconds;
        item.dollars -= dollars;
        *covered += dollars;
        seconds
    };
    for ri in &commitments.reserved_instances {
        let capacity = f64::from(ri.count) * 3600.0 * share;
        let mut free = capacity;
        for (o, item) in left.iter_mut() {
            if on_demand(*o).is_some_and(|x| x.instance_type == ri.instance_type) {
                free -= cover(item, free, &mut hour.covered_dollars);
            }
        }
        hour.fees += f64::from(ri.count) * ri.hourly_rate * share;
        hour.reserved_seconds.push(capacity - free);
    }
    for plan in &commitments.savings_plans {
        let budget = plan.hourly_commitment * share;
        let mut free = budget;
        let mut eligible: Vec<(f64, usize)> = left
            .iter()
            .enumerate()
            .filter_map(|(i, (o, _))| {
                let family = &on_demand(*o)?.family;
                plan.discount.for_family(family).map(|d| (d, i))
            })
            .collect();
        // Highest discount first; ties in catalog order.
        eligible.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (discount, i) in eligible {
            let item = &mut left[i].1;
            let at_plan_rate = item.dollars * (1.0 - discount);
            if free <= 0.0 || at_plan_rate <= 0.0 {
                continue;
            }
            let fraction = (free / at_plan_rate).min(1.0);
            let seconds = item.seconds * fraction;
            cover(item, seconds, &mut hour.covered_dollars);
            free -= at_plan_rate * fraction;
        }
        hour.fees += budget;
        hour.plan_dollars.push(budget - free.max(0.0));
    }
    hour
}

/// How much of each commitment a running on-demand fleet uses now: the
/// fleet given as (offering, instances, $ per hour of them all), as if it
/// ran for a whole hour. Returns (instances of each Reserved Instance entry
/// in use, $ per hour of each Savings Plan in use).
pub fn commitment_use(running: &[(u32, u32, f64)], catalog: &Catalog, commitments: &Commitments) -> (Vec<u32>, Vec<f64>) {
    let mut left: Vec<(u32, Usage)> =
        running.iter().map(|&(o, count, per_hour)| (o, Usage { seconds: f64::from(count) * 3600.0, dollars: per_hour })).collect();
    let hour = cover_hour(&mut left, 1.0, catalog, commitments);
    let reserved = hour.reserved_seconds.iter().map(|s| (s / 3600.0).round().clamp(0.0, f64::from(u32::MAX)) as u32).collect();
    (reserved, hour.plan_dollars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CapacityType, Discount, ReservedInstances, SavingsPlan};

    /// The on-demand offering of `instance_type` in `zone`.
    fn offering(catalog: &Catalog, instance_type: &str, zone: &str) -> u32 {
        let i = catalog
            .offerings
            .iter()
            .position(|o| o.instance_type == instance_type && o.zone == zone && o.capacity_type == CapacityType::OnDemand)
            .expect("the bundled catalog sells it");
        u32::try_from(i).expect("small index")
    }

    fn used(seconds: f64, per_hour: f64) -> Usage {
        Usage { seconds, dollars: per_hour * seconds / 3600.0 }
    }

    /// Three nodes over two hours, then an idle hour:
    /// - A: m5.xlarge in us-east-1a, both hours, $0.20/h;
    /// - B: m5.xlarge in us-east-1b, the first hour, $0.20/h;
    /// - C: c6g.2xlarge, both hours, $0.30/h;
    /// - one m5.xlarge Reserved Instance at $0.12/h;
    /// - a $0.10/h Savings Plan, 25 % off m5 and 40 % off c6g.
    ///
    /// By hand, each of the first two hours:
    /// - the RI covers one m5.xlarge hour ($0.20 at list), so B's hour is
    ///   left in the first;
    /// - the plan goes to c6g first (the higher discount): C's hour costs
    ///   $0.18 at the plan's rate, so $0.10 covers 10/18 of it ($0.1667 at
    ///   list) and $0.1333 is left;
    /// - uncovered: $0.20 + $0.1333 in the first hour, $0.1333 in the second.
    ///
    /// The third hour uses nothing and still pays $0.12 + $0.10.
    #[test]
    fn a_savings_plan_and_a_reserved_instance_give_the_hand_computed_bill() {
        let catalog = Catalog::bundled();
        let (a, b, c) = (
            offering(&catalog, "m5.xlarge", "us-east-1a"),
            offering(&catalog, "m5.xlarge", "us-east-1b"),
            offering(&catalog, "c6g.2xlarge", "us-east-1a"),
        );
        let mut usage = HourlyUsage::new();
        usage.insert(0, BTreeMap::from([(a, used(3600.0, 0.20)), (b, used(3600.0, 0.20)), (c, used(3600.0, 0.30))]));
        usage.insert(1, BTreeMap::from([(a, used(3600.0, 0.20)), (c, used(3600.0, 0.30))]));
        let commitments = Commitments {
            savings_plans: vec![SavingsPlan {
                hourly_commitment: 0.10,
                discount: Discount::PerFamily(BTreeMap::from([("m5".to_string(), 0.25), ("c6g".to_string(), 0.40)])),
            }],
            reserved_instances: vec![ReservedInstances { instance_type: "m5.xlarge".into(), count: 1, hourly_rate: 0.12 }],
            capacity_reservations: Vec::new(),
        };
        let bill = apply(&usage, 3.0, &catalog, &commitments, 0.05);
        let close = |got: f64, want: f64, what: &str| assert!((got - want).abs() < 1e-9, "{what}: {got} != {want}");
        close(bill.commitment_fees, 3.0 * (0.12 + 0.10), "fees, the idle hour included");
        close(bill.uncovered_on_demand, 0.20 + 2.0 * (0.30 - 0.30 * 10.0 / 18.0), "uncovered on-demand");
        close(bill.covered_on_demand, 2.0 * 0.20 + 2.0 * 0.30 * 10.0 / 18.0, "covered on-demand");
        close(bill.effective, 0.66 + 0.20 + 2.0 * (0.30 - 0.30 * 10.0 / 18.0) + 0.05, "effective");
        close(bill.savings_plan_used, 0.20, "plan used");
        close(bill.savings_plan_unused, 0.10, "plan unused (the idle hour)");
        close(bill.reserved_hours_used, 2.0, "RI hours used");
        close(bill.reserved_hours_unused, 1.0, "RI hours unused (the idle hour)");
        // Covered and uncovered together are the list-price on-demand bill.
        close(bill.covered_on_demand + bill.uncovered_on_demand, 0.40 + 0.30 + 0.20 + 0.30, "list price");
    }

    #[test]
    fn a_partial_last_hour_pays_and_offers_commitments_pro_rata() {
        let catalog = Catalog::bundled();
        let a = offering(&catalog, "m5.xlarge", "us-east-1a");
        let usage = HourlyUsage::from([(0, BTreeMap::from([(a, used(1800.0, 0.20))]))]);
        let commitments = Commitments {
            savings_plans: vec![SavingsPlan { hourly_commitment: 0.20, discount: Discount::All(0.5) }],
            reserved_instances: Vec::new(),
            capacity_reservations: Vec::new(),
        };
        let bill = apply(&usage, 0.5, &catalog, &commitments, 0.0);
        // Half an hour of a $0.20 plan: $0.10, of which the half hour of
        // m5.xlarge uses $0.05 (its $0.10 at list, half off).
        assert!((bill.commitment_fees - 0.10).abs() < 1e-12, "{bill:?}");
        assert!((bill.savings_plan_used - 0.05).abs() < 1e-12, "{bill:?}");
        assert!((bill.uncovered_on_demand).abs() < 1e-12, "{bill:?}");
        assert!((bill.effective - 0.10).abs() < 1e-12, "{bill:?}");
    }

    #[test]
    fn without_commitments_the_effective_bill_is_the_list_price_bill() {
        let catalog = Catalog::bundled();
        let a = offering(&catalog, "m5.xlarge", "us-east-1a");
        let usage = HourlyUsage::from([(0, BTreeMap::from([(a, used(3600.0, 0.20))]))]);
        let bill = apply(&usage, 1.0, &catalog, &Commitments::default(), 0.07);
        assert_eq!((bill.commitment_fees, bill.covered_on_demand), (0.0, 0.0));
        assert!((bill.effective - 0.27).abs() < 1e-12, "{bill:?}");
    }

    #[test]
    fn a_capacity_reservation_is_paid_every_hour_holds_what_runs_in_it_and_takes_no_reserved_instance() {
        use crate::model::CapacityReservation;
        let reservation = CapacityReservation { instance_type: "m5.xlarge".into(), zone: "us-east-1a".into(), count: 2, hourly_rate: 0.192, id: None, node_classes: None };
        let catalog = Catalog::bundled().with_reservations(std::slice::from_ref(&reservation)).unwrap();
        let reserved = catalog.reserved_offering("m5.xlarge", "us-east-1a").unwrap();
        // One instance in the reservation for an hour and a half of a two-hour run.
        let usage = HourlyUsage::from([
            (0, BTreeMap::from([(reserved, used(3600.0, 0.0))])),
            (1, BTreeMap::from([(reserved, used(1800.0, 0.0))])),
        ]);
        let commitments = Commitments {
            savings_plans: Vec::new(),
            reserved_instances: vec![ReservedInstances { instance_type: "m5.xlarge".into(), count: 1, hourly_rate: 0.12 }],
            capacity_reservations: vec![reservation],
        };
        let bill = apply(&usage, 2.0, &catalog, &commitments, 0.0);
        let close = |got: f64, want: f64, what: &str| assert!((got - want).abs() < 1e-9, "{what}: {got} != {want}");
        close(bill.commitment_fees, 2.0 * 2.0 * 0.192 + 2.0 * 0.12, "fees");
        close(bill.reservation_hours_used, 1.5, "reservation hours used");
        close(bill.reservation_hours_unused, 2.5, "reservation hours unused");
        close(bill.reserved_hours_used, 0.0, "the Reserved Instance does not apply to reserved capacity");
        close(bill.effective, bill.commitment_fees, "nothing else is paid");
    }
}
