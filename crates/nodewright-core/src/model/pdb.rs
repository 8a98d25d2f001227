//! PodDisruptionBudgets: how many pods of a set may be evicted at once.

use super::LabelSelector;

/// A count or a percentage of the pods a budget selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntOrPercent {
    /// This many pods.
    Count(u32),
    /// This percentage of the selected pods, rounded up (as Kubernetes does).
    Percent(u32),
}

impl IntOrPercent {
    fn of(self, total: u32) -> u32 {
        match self {
            IntOrPercent::Count(n) => n,
            IntOrPercent::Percent(p) => (u64::from(total) * u64::from(p)).div_ceil(100) as u32,
        }
    }
}

/// `spec.minAvailable` or `spec.maxUnavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdbLimit {
    /// At least this many selected pods must stay running.
    MinAvailable(IntOrPercent),
    /// At most this many selected pods may be down.
    MaxUnavailable(IntOrPercent),
}

/// A PodDisruptionBudget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodDisruptionBudget {
    /// `namespace/name`.
    pub name: String,
    /// Pods it protects.
    pub selector: LabelSelector,
    /// Its limit.
    pub limit: PdbLimit,
}

impl PodDisruptionBudget {
    /// Evictions allowed now, when `healthy` of the `expected` pods it
    /// selects are running (the `status.disruptionsAllowed` Kubernetes keeps).
    pub fn disruptions_allowed(&self, healthy: u32, expected: u32) -> u32 {
        let desired_healthy = match self.limit {
            PdbLimit::MinAvailable(n) => n.of(expected),
            PdbLimit::MaxUnavailable(n) => expected.saturating_sub(n.of(expected)),
        };
        healthy.saturating_sub(desired_healthy)
    }
}

/// A PodDisruptionBudget with the evictions it allows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdbStatus {
    /// The budget.
    pub budget: PodDisruptionBudget,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(limit: PdbLimit) -> PodDisruptionBudget {
        PodDisruptionBudget { name: "default/web".into(), selector: LabelSelector::label("app", "web"), limit }
    }

    #[test]
    fn allowed_disruptions_follow_kubernetes_rounding() {
        assert_eq!(pdb(PdbLimit::MinAvailable(IntOrPercent::Count(2))).disruptions_allowed(3, 3), 1);
        assert_eq!(pdb(PdbLimit::MinAvailable(IntOrPercent::Count(3))).disruptions_allowed(3, 3), 0);
        // 50 % of 3 rounds up to 2 that must stay.
        assert_eq!(pdb(PdbLimit::MinAvailable(IntOrPercent::Percent(50))).disruptions_allowed(3, 3), 1);
        assert_eq!(pdb(PdbLimit::MaxUnavailable(IntOrPercent::Count(1))).disruptions_allowed(4, 4), 1);
        // One already down uses up the only disruption.
        assert_eq!(pdb(PdbLimit::MaxUnavailable(IntOrPercent::Count(1))).disruptions_allowed(3, 4), 0);
        assert_eq!(pdb(PdbLimit::MaxUnavailable(IntOrPercent::Percent(25))).disruptions_allowed(8, 8), 2);
    }
}
