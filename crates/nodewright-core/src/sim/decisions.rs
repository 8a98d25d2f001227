//! The simulator's decision log: each launch with why it was bought as it
//! was, each disruption started or rejected with its rules (a rejection
//! repeated pass after pass is kept once). Kept in `report.json` (the
//! first [`MAX_DECISIONS`] of a run); `nodewright explain --report` and
//! `report.html` read it.

use serde::{Deserialize, Serialize};

use crate::disruption::DisruptionExplanation;
use crate::provisioning::explain::LaunchExplanation;

/// Decisions a run keeps (the first ones; the others are counted).
pub const MAX_DECISIONS: usize = 400;

/// One decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Hours from the start of the run.
    pub hour: f64,
    /// A NodeClaim launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Box<LaunchExplanation>>,
    /// A disruption started or rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<Box<DisruptionExplanation>>,
}

impl Decision {
    /// Lines for a terminal.
    pub fn render(&self) -> String {
        let at = format!("at {:.2} h: ", self.hour);
        match (&self.launch, &self.disruption) {
            (Some(l), _) => at + &l.render(),
            (_, Some(d)) => at + &d.render(),
            _ => at + "nothing\n",
        }
    }

    /// Does it concern NodeClaim `claim` (launched it, or disrupted it)?
    pub fn concerns(&self, claim: &str) -> bool {
        self.launch.as_ref().is_some_and(|l| l.claim == claim) || self.disruption.as_ref().is_some_and(|d| d.nodes.iter().any(|n| n == claim))
    }
}

/// A run's log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionLog {
    /// The first decisions.
    pub kept: Vec<Decision>,
    /// Decisions made in all (kept or not).
    pub total: u64,
}

impl DecisionLog {
    /// Note `decision`.
    pub fn push(&mut self, decision: Decision) {
        self.total += 1;
        if self.kept.len() < MAX_DECISIONS {
            self.kept.push(decision);
        }
    }
}
