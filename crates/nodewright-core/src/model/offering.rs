use serde::{Deserialize, Serialize};

use super::Resources;

/// CPU architecture of an instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// 64-bit Arm (Graviton).
    Arm64,
}

impl Arch {
    /// Its `kubernetes.io/arch` value.
    pub fn label(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// How capacity is bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityType {
    /// Pay by the hour, never reclaimed.
    OnDemand,
    /// Spare capacity at a discount, reclaimed with two minutes' warning.
    Spot,
    /// Capacity reserved in advance.
    Reserved,
}

impl CapacityType {
    /// Its `karpenter.sh/capacity-type` value.
    pub fn label(self) -> &'static str {
        match self {
            CapacityType::OnDemand => "on-demand",
            CapacityType::Spot => "spot",
            CapacityType::Reserved => "reserved",
        }
    }
}

/// Spot interruption frequency, in the Spot Instance Advisor's buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterruptionRate {
    /// Under 5 % a month.
    VeryLow,
    /// 5 to 10 %.
    Low,
    /// 10 to 15 %.
    Medium,
    /// 15 to 20 %.
    High,
    /// Over 20 %.
    VeryHigh,
}

impl InterruptionRate {
    /// Every bucket, lowest first.
    pub const ALL: [InterruptionRate; 5] = [
        InterruptionRate::VeryLow,
        InterruptionRate::Low,
        InterruptionRate::Medium,
        InterruptionRate::High,
        InterruptionRate::VeryHigh,
    ];

    /// The middle of the bucket, as a monthly fraction (0.025 … 0.25).
    pub fn monthly_fraction(self) -> f64 {
        match self {
            InterruptionRate::VeryLow => 0.025,
            InterruptionRate::Low => 0.075,
            InterruptionRate::Medium => 0.125,
            InterruptionRate::High => 0.175,
            InterruptionRate::VeryHigh => 0.25,
        }
    }
}

/// Something that can be bought: an instance type in a zone, bought one way, at a price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offering {
    /// EC2 instance type, e.g. `m7g.large`.
    pub instance_type: String,
    /// Family, e.g. `m7g`.
    pub family: String,
    /// Generation, e.g. 7.
    pub generation: u32,
    /// CPU architecture.
    pub arch: Arch,
    /// Availability zone.
    pub zone: String,
    /// How it is bought.
    pub capacity_type: CapacityType,
    /// US dollars per hour.
    pub price_per_hour: f64,
    /// What pods can use after system reservations.
    pub allocatable: Resources,
    /// What the machine has (vCPU, memory, max pods, GPUs, root volume).
    pub capacity: Resources,
    /// Spot interruption frequency (`VeryLow` for on-demand and reserved).
    pub interruption: InterruptionRate,
    /// The node classes whose NodePools may launch it (`None`: every
    /// NodePool); `""` stands for NodePools that name no node class. A
    /// capacity reservation a node class selects is launched into by that
    /// class's NodePools only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_classes: Option<Vec<String>>,
}

impl Offering {
    /// May a NodePool naming node class `class` launch it?
    pub fn serves(&self, class: Option<&str>) -> bool {
        self.node_classes.as_ref().is_none_or(|classes| classes.iter().any(|c| c == class.unwrap_or("")))
    }
}
