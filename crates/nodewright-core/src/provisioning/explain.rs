//! Why a NodeClaim was bought as it was: which policy ranked its
//! offerings (plugin, digest, contract version, config), the pods it was
//! for, and the offering bought against the cheapest offerings that could
//! have held them, each with why it lost. Written on the NodeClaim (the
//! [`DECISION_ANNOTATION`], at most [`MAX_EXPLANATION_BYTES`]) and kept in
//! the simulator's `report.json`; `nodewright explain` prints it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::model::labels::labels_match;
use crate::model::{Catalog, NodePool, Offering, Pod, PoolLimits, Resources};
use crate::policy::DecidedBy;
use crate::scheduling::node_labels;

/// The NodeClaim annotation holding its [`LaunchExplanation`] as JSON.
pub const DECISION_ANNOTATION: &str = "nodewright.io/decision";
/// The most an explanation takes on a NodeClaim (pods and alternatives
/// are cut to fit).
pub const MAX_EXPLANATION_BYTES: usize = 8 * 1024;
/// Alternatives an explanation lists.
pub const ALTERNATIVES: usize = 5;
/// Pods an explanation names.
const PODS_NAMED: usize = 10;

/// The policy that decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyIdentity {
    /// Plugin name (or `karpenter-like`, the built-in).
    pub plugin: String,
    /// sha256 of the component, for a plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Contract version it speaks, for a plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
    /// Its config.
    pub config: String,
    /// `plugin`, `builtin`, or `fallback: WHY` (the plugin failed and the
    /// built-in answered).
    pub decided_by: String,
}

impl PolicyIdentity {
    /// Who decided, from a slot's decision and the NodePool's reference.
    pub fn of(by: &DecidedBy, configured: &crate::model::PolicyRef) -> Self {
        let plugin_of = |p: &crate::policy::Plugin, decided_by: String| PolicyIdentity {
            plugin: p.info().name.clone(),
            digest: Some(p.info().digest.clone()),
            contract: Some(p.info().contract.as_str().to_string()),
            config: p.config().to_string(),
            decided_by,
        };
        match by {
            DecidedBy::Plugin(p) => plugin_of(p, "plugin".into()),
            DecidedBy::Fallback { plugin, failure } => {
                // The failure's kind, not its message (a timeout's says how
                // long it took): the report stays the same run after run.
                let mut id = plugin_of(plugin, format!("fallback: the plugin failed ({}); the built-in ranking was used", failure.kind()));
                id.plugin = format!("{} (failed)", id.plugin);
                id
            }
            DecidedBy::Builtin => PolicyIdentity {
                plugin: crate::policy::BUILTIN_SELECTION.into(),
                digest: None,
                contract: None,
                config: configured.config.clone(),
                decided_by: "builtin".into(),
            },
        }
    }
}

/// An offering, its price, and what happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    /// `TYPE CAPACITY-TYPE ZONE`.
    pub offering: String,
    /// Its price ($/h).
    pub price_per_hour: f64,
    /// Why it was bought, or why not.
    pub why: String,
}

/// Why a NodeClaim was bought as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchExplanation {
    /// The NodeClaim.
    pub claim: String,
    /// Its NodePool.
    pub node_pool: String,
    /// Who ranked its offerings.
    pub policy: PolicyIdentity,
    /// Pods it was for (the first ten).
    pub pods: Vec<String>,
    /// How many.
    pub pod_count: usize,
    /// What they (and the daemonsets) request.
    pub requests: String,
    /// Offerings the policy could choose from.
    pub feasible: usize,
    /// The offering bought.
    pub chosen: Alternative,
    /// The cheapest offerings that could hold the pods, each with why it lost.
    pub alternatives: Vec<Alternative>,
}

impl LaunchExplanation {
    /// As the annotation's JSON, cut (pods, then alternatives) to
    /// [`MAX_EXPLANATION_BYTES`].
    pub fn to_annotation(&self) -> String {
        let mut this = self.clone();
        loop {
            let text = serde_json::to_string(&this).unwrap_or_default();
            if text.len() <= MAX_EXPLANATION_BYTES {
                return text;
            }
            if this.pods.len() > 1 {
                this.pods.truncate(this.pods.len() / 2);
            } else if !this.alternatives.is_empty() {
                this.alternatives.pop();
            } else {
                this.requests.truncate(64);
                this.node_pool.truncate(64);
                return serde_json::to_string(&this).unwrap_or_default();
            }
        }
    }

    /// Lines for a terminal.
    pub fn render(&self) -> String {
        let mut out = format!("NodeClaim {} (NodePool {})\n", self.claim, self.node_pool);
        let p = &self.policy;
        out += &format!("  decided by {} ({})", p.plugin, p.decided_by);
        if let (Some(contract), Some(digest)) = (&p.contract, &p.digest) {
            let digest = digest.trim_start_matches("sha256:");
            out += &format!(", contract {contract}, sha256 {}", &digest[..digest.len().min(16)]);
        }
        out += &format!(", config {}\n", p.config);
        let more = self.pod_count.saturating_sub(self.pods.len());
        out += &format!(
            "  for {} pod{}: {}{}\n  requesting {}; {} feasible offerings\n",
            self.pod_count,
            if self.pod_count == 1 { "" } else { "s" },
            self.pods.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() },
            self.requests,
            self.feasible
        );
        out += &format!("  bought  {:<40} ${:>9.4}/h  {}\n", self.chosen.offering, self.chosen.price_per_hour, self.chosen.why);
        for a in &self.alternatives {
            out += &format!("  not     {:<40} ${:>9.4}/h  {}\n", a.offering, a.price_per_hour, a.why);
        }
        out
    }
}

fn describe(o: &Offering) -> String {
    format!("{} {} {}", o.instance_type, o.capacity_type.label(), o.zone)
}

/// What a launch knew, for [`explain_launch`].
pub struct LaunchFacts<'a> {
    /// The catalog.
    pub catalog: &'a Catalog,
    /// The NodePool.
    pub pool: &'a NodePool,
    /// The claim's pods.
    pub pods: Vec<&'a Pod>,
    /// What they and the daemonsets request.
    pub requests: Resources,
    /// The offerings the scheduling simulation left the claim.
    pub planned: &'a [u32],
    /// Offerings benched after capacity errors.
    pub unavailable: &'a HashSet<u32>,
    /// The policy's order.
    pub ranked: &'a [u32],
    /// Offerings handed to the launch, in order.
    pub tried: &'a [u32],
    /// The one bought.
    pub bought: u32,
    /// Who ranked.
    pub policy: PolicyIdentity,
    /// The feasible count.
    pub feasible: usize,
}

/// Why `claim` was bought as `facts.bought`.
pub fn explain_launch(claim: &str, facts: &LaunchFacts<'_>) -> LaunchExplanation {
    let catalog = facts.catalog;
    let rank_of = |o: u32| facts.ranked.iter().position(|&r| r == o);
    let bought_rank = rank_of(facts.bought);
    let policy = &facts.policy.plugin;
    let bought = &catalog.offerings[facts.bought as usize];
    let chosen = Alternative {
        offering: describe(bought),
        price_per_hour: bought.price_per_hour,
        why: match bought_rank {
            Some(r) => format!("ranked #{} by {policy}", r + 1),
            None => "bought".into(),
        },
    };
    let refused: Vec<u32> = facts.tried.iter().copied().take_while(|&o| o != facts.bought).collect();
    // The cheapest that hold the requests: the first met in the catalog's
    // cheapest-first order (price, then index).
    let cheapest: Vec<u32> = catalog
        .cheapest_first
        .iter()
        .copied()
        .filter(|&o| o != facts.bought && catalog.fit[o as usize].allocatable.covers(&facts.requests))
        .take(ALTERNATIVES)
        .collect();
    let alternatives = cheapest
        .into_iter()
        .map(|o| {
            let offering = &catalog.offerings[o as usize];
            let why = if refused.contains(&o) {
                "tried first: the cloud had no capacity for it".to_string()
            } else if let Some(r) = rank_of(o) {
                match bought_rank {
                    Some(b) if r > b => format!("ranked #{} by {policy}, below the one bought", r + 1),
                    _ => format!("ranked #{} by {policy}, not among the offerings the launch was handed", r + 1),
                }
            } else if facts.unavailable.contains(&o) {
                "benched after a capacity error".to_string()
            } else if facts.planned.contains(&o) {
                format!("left out by {policy}")
            } else {
                excluded_why(facts, offering)
            };
            Alternative { offering: describe(offering), price_per_hour: offering.price_per_hour, why }
        })
        .collect();
    LaunchExplanation {
        claim: claim.to_string(),
        node_pool: facts.pool.name.clone(),
        policy: facts.policy.clone(),
        pods: facts.pods.iter().take(PODS_NAMED).map(|p| p.name.to_string()).collect(),
        pod_count: facts.pods.len(),
        requests: facts.requests.describe(),
        feasible: facts.feasible,
        chosen,
        alternatives,
    }
}

/// Why an offering the scheduling simulation did not leave the claim is
/// out: the first requirement of the NodePool or of a pod it fails, else
/// the NodePool's limits, else the topology the pods pin the claim to.
fn excluded_why(facts: &LaunchFacts<'_>, offering: &Offering) -> String {
    let labels = node_labels(offering, facts.pool, "");
    if let Some(r) = facts.pool.requirements.iter().find(|r| !labels_match(std::slice::from_ref(*r), &labels)) {
        return format!("excluded by NodePool {}'s requirement {}", facts.pool.name, r.describe());
    }
    if let Some(t) = facts.pool.taints.first()
        && facts.pods.iter().any(|p| !crate::model::labels::tolerates_all(&p.spec.tolerations, std::slice::from_ref(t)))
    {
        return format!("excluded: a pod does not tolerate taint {}", t.key);
    }
    for pod in &facts.pods {
        if let Some((k, v)) = pod.spec.node_selector.iter().find(|(k, v)| labels.get(*k) != Some(*v)) {
            return format!("excluded by {}'s node selector {k}={v}", pod.name);
        }
        if !pod.spec.required_terms.is_empty() && !pod.spec.required_terms.iter().any(|t| labels_match(t, &labels)) {
            let term = pod.spec.required_terms[0].iter().map(|r| r.describe()).collect::<Vec<_>>().join(" and ");
            return format!("excluded by {}'s required node affinity ({term})", pod.name);
        }
    }
    if facts.pool.limits != PoolLimits::default() {
        return format!("excluded by NodePool {}'s limits, or by the pods' zone or topology constraints", facts.pool.name);
    }
    "excluded by the pods' zone or topology constraints (the claim is pinned to one domain)".into()
}
