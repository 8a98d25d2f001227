//! Price overrides for users with Savings Plans, Reserved Instances or
//! negotiated discounts: per instance type or per family, absolute or ±%.
//!
//! ```yaml
//! overrides:
//!   - instanceType: m5.large
//!     price: 0.062            # $/h
//!   - family: c6g
//!     adjustPercent: -28      # 28 % off
//!     capacityType: on-demand # default; spot prices can be overridden too
//! ```

use serde::Deserialize;

use super::{Catalog, CapacityType};

/// One override.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceOverride {
    /// What it applies to.
    pub target: OverrideTarget,
    /// Which capacity type's price changes.
    pub capacity_type: CapacityType,
    /// The change.
    pub change: PriceChange,
}

/// What an override applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideTarget {
    /// One instance type.
    InstanceType(String),
    /// Every type of a family.
    Family(String),
}

/// How the price changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PriceChange {
    /// The new price per hour.
    Absolute(f64),
    /// Percent added to the price (negative for a discount).
    Percent(f64),
}

/// A price override file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct PriceOverrideError {
    /// The file.
    pub file: String,
    /// The field, e.g. `overrides[2].price`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    overrides: Vec<RawOverride>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawOverride {
    instance_type: Option<String>,
    family: Option<String>,
    capacity_type: Option<String>,
    price: Option<f64>,
    adjust_percent: Option<f64>,
}

/// The highest price an override may set, dollars per hour.
pub const MAX_PRICE: f64 = 100_000.0;
/// The largest increase an override may apply, in percent.
pub const MAX_ADJUST_PERCENT: f64 = 10_000.0;

/// Parse an override file.
pub fn parse_price_overrides(file: &str, text: &str) -> Result<Vec<PriceOverride>, PriceOverrideError> {
    let fail = |field: String, message: String| PriceOverrideError { file: file.into(), field, message };
    let raw: RawFile = serde_path_to_error::deserialize(serde_yaml_ng::Deserializer::from_str(text))
        .map_err(|e| {
            let (field, message) = super::nodepool::yaml_error(e);
            fail(field, message)
        })?;
    raw.overrides
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let at = |f: &str| format!("overrides[{i}].{f}");
            let target = match (o.instance_type, o.family) {
                (Some(t), None) => OverrideTarget::InstanceType(t),
                (None, Some(f)) => OverrideTarget::Family(f),
                _ => return Err(fail(format!("overrides[{i}]"), "give exactly one of instanceType and family".into())),
            };
            let capacity_type = match o.capacity_type.as_deref() {
                None | Some("on-demand") => CapacityType::OnDemand,
                Some("spot") => CapacityType::Spot,
                Some("reserved") => CapacityType::Reserved,
                Some(other) => return Err(fail(at("capacityType"), format!("`{other}` is not on-demand, spot or reserved"))),
            };
            let change = match (o.price, o.adjust_percent) {
                (Some(p), None) if p.is_finite() && (0.0..=MAX_PRICE).contains(&p) => PriceChange::Absolute(p),
                (Some(p), None) => return Err(fail(at("price"), format!("{p} is not a price from 0 to {MAX_PRICE} $/h"))),
                (None, Some(a)) if a.is_finite() && a > -100.0 && a <= MAX_ADJUST_PERCENT => PriceChange::Percent(a),
                (None, Some(a)) => {
                    return Err(fail(at("adjustPercent"), format!("{a} must be above -100 and at most {MAX_ADJUST_PERCENT}")));
                }
                _ => return Err(fail(format!("overrides[{i}]"), "give exactly one of price and adjustPercent".into())),
            };
            Ok(PriceOverride { target, capacity_type, change })
        })
        .collect()
}

impl Catalog {
    /// This catalog with `overrides` applied (an instance-type override
    /// wins over a family one), under a new version.
    pub fn with_overrides(&self, overrides: &[PriceOverride]) -> Catalog {
        let mut offerings = self.offerings.clone();
        for offering in &mut offerings {
            let applies = |o: &&PriceOverride, exact: bool| {
                o.capacity_type == offering.capacity_type
                    && match &o.target {
                        OverrideTarget::InstanceType(t) => exact && *t == offering.instance_type,
                        OverrideTarget::Family(f) => !exact && *f == offering.family,
                    }
            };
            let chosen = overrides.iter().find(|o| applies(o, true)).or_else(|| overrides.iter().find(|o| applies(o, false)));
            if let Some(o) = chosen {
                offering.price_per_hour = match o.change {
                    PriceChange::Absolute(p) => p,
                    PriceChange::Percent(a) => offering.price_per_hour * (1.0 + a / 100.0),
                };
            }
        }
        Catalog::new(offerings)
    }

    /// This catalog plus one offering of the `reserved` capacity type per
    /// capacity reservation, priced at nothing (the reservation is paid as a
    /// commitment), appended after the others so their indices stay. A
    /// reservation of a type not sold in its zone is refused: (its index,
    /// the reason).
    pub fn with_reservations(&self, reservations: &[super::CapacityReservation]) -> Result<Catalog, (usize, String)> {
        if reservations.is_empty() {
            return Ok(self.clone());
        }
        let mut offerings = self.offerings.clone();
        for (i, r) in reservations.iter().enumerate() {
            let base = self
                .offerings
                .iter()
                .find(|o| o.instance_type == r.instance_type && o.zone == r.zone && o.capacity_type == CapacityType::OnDemand)
                .ok_or_else(|| (i, format!("{} is not sold on demand in {}", r.instance_type, r.zone)))?;
            offerings.push(super::Offering {
                capacity_type: CapacityType::Reserved,
                price_per_hour: 0.0,
                node_classes: r.node_classes.clone(),
                ..base.clone()
            });
        }
        Ok(Catalog::new(offerings))
    }

    /// The index of the `reserved` offering of `instance_type` in `zone`.
    pub fn reserved_offering(&self, instance_type: &str, zone: &str) -> Option<u32> {
        self.offerings
            .iter()
            .rposition(|o| o.capacity_type == CapacityType::Reserved && o.instance_type == instance_type && o.zone == zone)
            .and_then(|i| u32::try_from(i).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_change_prices_type_before_family() {
        let text = "overrides:\n  - family: m5\n    adjustPercent: -50\n  - instanceType: m5.large\n    price: 0.01\n";
        let overrides = parse_price_overrides("prices.yaml", text).unwrap();
        let catalog = Catalog::bundled();
        let changed = catalog.with_overrides(&overrides);
        assert_ne!(changed.version, catalog.version);
        for (before, after) in catalog.offerings.iter().zip(&changed.offerings) {
            let expected = match (before.capacity_type, before.instance_type.as_str(), before.family.as_str()) {
                (CapacityType::OnDemand, "m5.large", _) => 0.01,
                (CapacityType::OnDemand, _, "m5") => before.price_per_hour * 0.5,
                _ => before.price_per_hour,
            };
            assert!((after.price_per_hour - expected).abs() < 1e-12, "{}", before.instance_type);
        }
    }

    #[test]
    fn a_bad_override_names_file_and_field() {
        let err = |t: &str| parse_price_overrides("prices.yaml", t).unwrap_err().to_string();
        assert_eq!(
            err("overrides:\n  - family: m5\n    adjustPercent: -150\n"),
            "prices.yaml: overrides[0].adjustPercent: -150 must be above -100 and at most 10000"
        );
        assert_eq!(
            err("overrides:\n  - family: m5\n    instanceType: m5.large\n    price: 1\n"),
            "prices.yaml: overrides[0]: give exactly one of instanceType and family"
        );
        assert!(err("overrides:\n  - family: m5\n    prize: 1\n").starts_with("prices.yaml: overrides[0].prize: unknown field `prize`"));
    }
}
