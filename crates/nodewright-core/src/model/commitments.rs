//! What a team has already committed to pay for: Compute Savings Plans,
//! Reserved Instances and on-demand capacity reservations. The bill applies
//! them hour by hour (see [`crate::cloud::billing`]).
//!
//! ```yaml
//! savingsPlans:
//!   - hourlyCommitment: 2.50   # $ per hour, paid whether used or not
//!     discount: 0.28           # off the on-demand price, every family…
//!   - hourlyCommitment: 1.00
//!     discounts:               # …or per family (families not named are not covered)
//!       m6i: 0.31
//!       c6g: 0.34
//! reservedInstances:
//!   - instanceType: m5.xlarge  # regional: any zone
//!     count: 3
//!     hourlyRate: 0.121        # $ per instance-hour (upfront spread over the term), paid whether used or not
//! capacityReservations:        # on-demand capacity reservations (ODCR): the `reserved` capacity type
//!   - instanceType: m5.xlarge
//!     zone: us-east-1a
//!     count: 2
//!     hourlyRate: 0.192        # $ per instance-hour (the on-demand price), paid whether used or not
//!     id: cr-0a1b2c3d4e5f60718  # its EC2 id: required by `nodewright run`, which launches into it
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// A Compute Savings Plan.
#[derive(Debug, Clone, PartialEq)]
pub struct SavingsPlan {
    /// Dollars per hour committed, paid whether used or not.
    pub hourly_commitment: f64,
    /// Fraction off the on-demand price.
    pub discount: Discount,
}

/// A Savings Plan's discount.
#[derive(Debug, Clone, PartialEq)]
pub enum Discount {
    /// The same fraction for every family.
    All(f64),
    /// Family → fraction; families not named are not covered.
    PerFamily(BTreeMap<String, f64>),
}

impl Discount {
    /// The fraction off for `family`, if the plan covers it.
    pub fn for_family(&self, family: &str) -> Option<f64> {
        match self {
            Discount::All(d) => Some(*d),
            Discount::PerFamily(rates) => rates.get(family).copied(),
        }
    }
}

/// Regional Reserved Instances of one instance type.
#[derive(Debug, Clone, PartialEq)]
pub struct ReservedInstances {
    /// Instance type.
    pub instance_type: String,
    /// How many.
    pub count: u32,
    /// Dollars per instance-hour, paid whether used or not.
    pub hourly_rate: f64,
}

/// An on-demand capacity reservation: instances of one type held in one
/// zone, sold as the `reserved` capacity type.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacityReservation {
    /// Instance type.
    pub instance_type: String,
    /// Availability zone.
    pub zone: String,
    /// Instances reserved.
    pub count: u32,
    /// Dollars per instance-hour, paid whether used or not.
    pub hourly_rate: f64,
    /// Its EC2 id (`cr-…`): what `nodewright run` launches into (targeted,
    /// as Karpenter does); the simulator needs none.
    pub id: Option<String>,
    /// The node classes whose NodePools launch into it (`""`: NodePools
    /// naming none); `None`, as for every reservation of a commitments
    /// file: every NodePool.
    pub node_classes: Option<Vec<String>>,
}

/// Is `id` shaped like an EC2 capacity reservation id (`cr-` and 8 to 17
/// lowercase hexadecimal digits)?
fn is_reservation_id(id: &str) -> bool {
    id.strip_prefix("cr-").is_some_and(|hex| (8..=17).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Every commitment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Commitments {
    /// Savings Plans, in the order given.
    pub savings_plans: Vec<SavingsPlan>,
    /// Reserved Instances, in the order given.
    pub reserved_instances: Vec<ReservedInstances>,
    /// Capacity reservations, in the order given.
    pub capacity_reservations: Vec<CapacityReservation>,
}

impl Commitments {
    /// No commitments at all.
    pub fn is_empty(&self) -> bool {
        self.savings_plans.is_empty() && self.reserved_instances.is_empty() && self.capacity_reservations.is_empty()
    }
}

/// A commitments file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct CommitmentsError {
    /// The file.
    pub file: String,
    /// The field, e.g. `savingsPlans[0].discount`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The largest hourly amount (commitment or rate) a file may give, dollars.
pub const MAX_HOURLY_DOLLARS: f64 = 1_000_000.0;
/// The most instances one Reserved Instance entry may count.
pub const MAX_RESERVED_COUNT: u32 = 100_000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    savings_plans: Vec<RawSavingsPlan>,
    #[serde(default)]
    reserved_instances: Vec<RawReserved>,
    #[serde(default)]
    capacity_reservations: Vec<RawCapacityReservation>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCapacityReservation {
    instance_type: String,
    zone: String,
    count: u32,
    hourly_rate: f64,
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSavingsPlan {
    hourly_commitment: f64,
    discount: Option<f64>,
    discounts: Option<BTreeMap<String, f64>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawReserved {
    instance_type: String,
    count: u32,
    hourly_rate: f64,
}

/// Parse a commitments file called `file`.
pub fn parse_commitments(file: &str, text: &str) -> Result<Commitments, CommitmentsError> {
    let fail = |field: String, message: String| CommitmentsError { file: file.into(), field, message };
    let raw: RawFile = serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text)).map_err(|e| {
        let (field, message) = super::nodepool::yaml_error(e);
        fail(field, message)
    })?;
    let dollars = |field: String, value: f64| {
        if value.is_finite() && (0.0..=MAX_HOURLY_DOLLARS).contains(&value) {
            Ok(value)
        } else {
            Err(fail(field, format!("{value} is not an hourly amount from 0 to {MAX_HOURLY_DOLLARS} $")))
        }
    };
    let fraction = |field: String, value: f64| {
        if value.is_finite() && (0.0..1.0).contains(&value) {
            Ok(value)
        } else {
            Err(fail(field, format!("{value} is not a discount from 0 (none) to below 1 (everything)")))
        }
    };
    let mut savings_plans = Vec::with_capacity(raw.savings_plans.len());
    for (i, plan) in raw.savings_plans.into_iter().enumerate() {
        let hourly_commitment = dollars(format!("savingsPlans[{i}].hourlyCommitment"), plan.hourly_commitment)?;
        let discount = match (plan.discount, plan.discounts) {
            (Some(d), None) => Discount::All(fraction(format!("savingsPlans[{i}].discount"), d)?),
            (None, Some(rates)) if !rates.is_empty() => {
                for (family, &d) in &rates {
                    fraction(format!("savingsPlans[{i}].discounts.{family}"), d)?;
                }
                Discount::PerFamily(rates)
            }
            (None, Some(_)) => return Err(fail(format!("savingsPlans[{i}].discounts"), "names no family".into())),
            _ => return Err(fail(format!("savingsPlans[{i}]"), "give exactly one of discount and discounts".into())),
        };
        savings_plans.push(SavingsPlan { hourly_commitment, discount });
    }
    let mut reserved_instances = Vec::with_capacity(raw.reserved_instances.len());
    for (i, ri) in raw.reserved_instances.into_iter().enumerate() {
        if ri.instance_type.trim().is_empty() {
            return Err(fail(format!("reservedInstances[{i}].instanceType"), "is empty".into()));
        }
        if ri.count == 0 || ri.count > MAX_RESERVED_COUNT {
            return Err(fail(format!("reservedInstances[{i}].count"), format!("{} is not from 1 to {MAX_RESERVED_COUNT}", ri.count)));
        }
        let hourly_rate = dollars(format!("reservedInstances[{i}].hourlyRate"), ri.hourly_rate)?;
        reserved_instances.push(ReservedInstances { instance_type: ri.instance_type, count: ri.count, hourly_rate });
    }
    let mut capacity_reservations: Vec<CapacityReservation> = Vec::with_capacity(raw.capacity_reservations.len());
    for (i, r) in raw.capacity_reservations.into_iter().enumerate() {
        for (field, value) in [("instanceType", &r.instance_type), ("zone", &r.zone)] {
            if value.trim().is_empty() {
                return Err(fail(format!("capacityReservations[{i}].{field}"), "is empty".into()));
            }
        }
        if r.count == 0 || r.count > MAX_RESERVED_COUNT {
            return Err(fail(format!("capacityReservations[{i}].count"), format!("{} is not from 1 to {MAX_RESERVED_COUNT}", r.count)));
        }
        if let Some(j) = capacity_reservations.iter().position(|c| c.instance_type == r.instance_type && c.zone == r.zone) {
            return Err(fail(
                format!("capacityReservations[{i}]"),
                format!("{} in {} is already reserved by capacityReservations[{j}]; give one entry per type and zone", r.instance_type, r.zone),
            ));
        }
        let hourly_rate = dollars(format!("capacityReservations[{i}].hourlyRate"), r.hourly_rate)?;
        if let Some(id) = &r.id {
            if !is_reservation_id(id) {
                return Err(fail(format!("capacityReservations[{i}].id"), format!("{id:?} is not a capacity reservation id (cr- and 8 to 17 hexadecimal digits)")));
            }
            if let Some(j) = capacity_reservations.iter().position(|c| c.id.as_deref() == Some(id.as_str())) {
                return Err(fail(format!("capacityReservations[{i}].id"), format!("{id} is already capacityReservations[{j}]")));
            }
        }
        capacity_reservations.push(CapacityReservation { instance_type: r.instance_type, zone: r.zone, count: r.count, hourly_rate, id: r.id, node_classes: None });
    }
    Ok(Commitments { savings_plans, reserved_instances, capacity_reservations })
}
