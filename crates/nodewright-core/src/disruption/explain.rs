//! Why a disruption was started or rejected: the method, the plan, each
//! validation rule and its result, the expected saving. The simulator
//! keeps these in `report.json`; `nodewright explain --report` prints them.

use serde::{Deserialize, Serialize};

use super::controller::validation::RULES;
use super::methods::{self, Plan};
use super::{Command, Rejection, Replacement};
use crate::model::Catalog;

/// The NodeClaim annotation holding the [`DisruptionExplanation`] of the
/// disruption under way, as JSON.
pub const DISRUPTION_ANNOTATION: &str = "nodewright.io/disruption";
/// The most it takes (the list of nodes is cut to fit).
pub const MAX_DISRUPTION_BYTES: usize = 8 * 1024;

/// One validation rule and what it said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleResult {
    /// Its label.
    pub rule: String,
    /// `passed`, `rejected: WHY`, or `not checked` (after a rejection).
    pub result: String,
}

/// Why a disruption was started or rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisruptionExplanation {
    /// The method (`expired`, `drifted`, `empty`, `underutilized`, `deleted`).
    pub method: String,
    /// `replace each`, or `NodePool policy PLUGIN` (the consolidation plan).
    pub plan: String,
    /// The NodePool.
    pub node_pool: String,
    /// The nodes.
    pub nodes: Vec<String>,
    /// What replaces them.
    pub replacement: String,
    /// Expected saving, $/h at catalog prices when decided.
    pub savings_per_hour: f64,
    /// `started` or `rejected`.
    pub outcome: String,
    /// Each rule, in order.
    pub rules: Vec<RuleResult>,
}

impl DisruptionExplanation {
    /// A started action: every rule passed (forceful methods skip the
    /// checks that do not hold them, and those pass).
    pub fn started(command: &Command, consolidation: &str, catalog: &Catalog) -> Self {
        Self::of(command, consolidation, catalog, None)
    }

    /// A rejected action: the rules before the one that rejected it passed.
    pub fn rejected(rejection: &Rejection, consolidation: &str, catalog: &Catalog) -> Self {
        Self::of(&rejection.command, consolidation, catalog, Some((rejection.rule, rejection.message.as_str())))
    }

    fn of(command: &Command, consolidation: &str, catalog: &Catalog, rejected_by: Option<(&str, &str)>) -> Self {
        let mut verdict = "passed".to_string();
        let rules = RULES
            .iter()
            .map(|&rule| {
                let result = match rejected_by {
                    Some((by, why)) if by == rule => {
                        let said = format!("rejected: {why}");
                        verdict = "not checked".into();
                        said
                    }
                    _ => verdict.clone(),
                };
                RuleResult { rule: rule.into(), result }
            })
            .collect();
        let replacement = match command.replacement {
            Replacement::None => "none: the pods fit on the nodes that stay".into(),
            Replacement::Provision => "whatever the provisioner launches for the pods".into(),
            Replacement::Offering(o) => catalog.offerings.get(o as usize).map_or_else(
                || format!("offering {o}"),
                |o| format!("{} {} {} (${:.4}/h)", o.instance_type, o.capacity_type.label(), o.zone, o.price_per_hour),
            ),
        };
        DisruptionExplanation {
            method: command.reason.label().into(),
            plan: match methods::of(command.reason).plan() {
                Plan::ReplaceEach => "replace each".into(),
                Plan::Policy => format!("NodePool policy {consolidation}"),
            },
            node_pool: command.node_pool.clone(),
            nodes: command.nodes.clone(),
            replacement,
            savings_per_hour: (command.savings_per_hour * 10_000.0).round() / 10_000.0,
            outcome: if rejected_by.is_some() { "rejected" } else { "started" }.into(),
            rules,
        }
    }

    /// As the annotation's JSON, the list of nodes cut to
    /// [`MAX_DISRUPTION_BYTES`].
    pub fn to_annotation(&self) -> String {
        let mut this = self.clone();
        loop {
            let text = serde_json::to_string(&this).unwrap_or_default();
            if text.len() <= MAX_DISRUPTION_BYTES || this.nodes.len() <= 1 {
                return text;
            }
            this.nodes.truncate(this.nodes.len() / 2);
        }
    }

    /// Lines for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} {} of {} in NodePool {} (plan: {}), replaced by {}; saving ${:.4}/h\n",
            self.outcome,
            self.method,
            self.nodes.join(", "),
            self.node_pool,
            self.plan,
            self.replacement,
            self.savings_per_hour
        );
        for r in &self.rules {
            out += &format!("  {:<20} {}\n", r.rule, r.result);
        }
        out
    }
}
