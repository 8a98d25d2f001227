//! NodePool disruption budgets: how many of a NodePool's nodes may be
//! disrupted at once, for a reason, now.

use std::time::Duration;

use super::Reason;
use crate::model::{BudgetNodes, NodePool};

/// Nodes of `pool` that may be disrupted for `reason` at `now` (time since
/// the Unix epoch, UTC), when the pool has `nodes` nodes. Every active
/// budget that names the reason (or names none) applies; the most
/// restrictive wins. `None`: no budget applies.
pub fn allowed(pool: &NodePool, reason: Reason, nodes: usize, now: Duration) -> Option<u32> {
    pool.budgets
        .iter()
        .filter(|b| b.reasons.is_empty() || b.reasons.iter().any(|r| r == reason.budget_name()))
        .filter(|b| active(b.schedule.as_deref(), b.duration, now))
        .map(|b| match b.nodes {
            BudgetNodes::Count(n) => n,
            BudgetNodes::Percent(p) => (nodes as u64 * u64::from(p)).div_ceil(100) as u32,
        })
        .min()
}

/// Which of `pool`'s budgets are in force at `now`, one bit each in order
/// (a change means `allowed` may answer differently).
pub fn in_force(pool: &NodePool, now: Duration) -> Vec<bool> {
    pool.budgets.iter().map(|b| active(b.schedule.as_deref(), b.duration, now)).collect()
}

/// Is a budget with `schedule` and `duration` in force at `now`? One
/// without a schedule always is; one with a schedule is from each time the
/// schedule fires until `duration` later.
fn active(schedule: Option<&str>, duration: Option<Duration>, now: Duration) -> bool {
    let (Some(schedule), Some(duration)) = (schedule, duration) else { return true };
    // NodePools are checked when they are read, so a schedule that does not
    // parse here is one edited under us: it does not apply.
    let Ok(cron) = schedule.parse::<croner::Cron>() else { return false };
    let Some(now) = chrono::DateTime::from_timestamp(now.as_secs() as i64, 0) else { return false };
    let window_start = now - chrono::Duration::seconds(duration.as_secs() as i64);
    match cron.find_next_occurrence(&window_start, true) {
        Ok(fired) => fired <= now && duration > Duration::ZERO,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Budget;

    fn pool(budgets: Vec<Budget>) -> NodePool {
        NodePool { budgets, ..NodePool::new("default") }
    }

    fn budget(nodes: BudgetNodes, reasons: &[&str], schedule: Option<(&str, u64)>) -> Budget {
        Budget {
            nodes,
            reasons: reasons.iter().map(|r| r.to_string()).collect(),
            schedule: schedule.map(|(s, _)| s.to_string()),
            duration: schedule.map(|(_, d)| Duration::from_secs(d)),
        }
    }

    /// 2026-01-05T09:30:00Z, a Monday.
    const MONDAY_0930: Duration = Duration::from_secs(1_767_571_200 + 9 * 3600 + 1800);

    #[test]
    fn percentages_round_up_and_the_most_restrictive_budget_wins() {
        let p = pool(vec![budget(BudgetNodes::Percent(10), &[], None), budget(BudgetNodes::Count(5), &[], None)]);
        assert_eq!(allowed(&p, Reason::Underutilized, 11, MONDAY_0930), Some(2));
        assert_eq!(allowed(&p, Reason::Underutilized, 100, MONDAY_0930), Some(5));
        assert_eq!(allowed(&pool(vec![]), Reason::Empty, 100, MONDAY_0930), None);
    }

    #[test]
    fn a_budget_applies_only_to_the_reasons_it_names() {
        let p = pool(vec![budget(BudgetNodes::Count(0), &["Drifted"], None), budget(BudgetNodes::Count(3), &[], None)]);
        assert_eq!(allowed(&p, Reason::Drifted, 10, MONDAY_0930), Some(0));
        assert_eq!(allowed(&p, Reason::Empty, 10, MONDAY_0930), Some(3));
    }

    #[test]
    fn a_scheduled_budget_is_in_force_for_its_duration_after_each_hit() {
        // No disruption during business hours: from 09:00 for 8 h on weekdays.
        let p = pool(vec![budget(BudgetNodes::Count(0), &[], Some(("0 9 * * 1-5", 8 * 3600)))]);
        assert_eq!(allowed(&p, Reason::Underutilized, 10, MONDAY_0930), Some(0));
        let evening = MONDAY_0930 + Duration::from_secs(8 * 3600);
        assert_eq!(allowed(&p, Reason::Underutilized, 10, evening), None);
        let sunday = MONDAY_0930 - Duration::from_secs(24 * 3600);
        assert_eq!(allowed(&p, Reason::Underutilized, 10, sunday), None);
    }
}
