//! The rules every disruption action is checked against before it is
//! taken (and again once its validation delay is over), in order: the first
//! that fails rejects the action with its kind, its message and its label
//! (`counts.rejected_by_rule`, the `rule` of a [`Rejection`]).
//!
//! | rule | kind | checks |
//! |---|---|---|
//! | `nodes` | UnknownNode | the NodePool exists; every node is one of its, and not already being disrupted |
//! | `disruptable` | NotDisruptable / Policy | no do-not-disrupt pod; for consolidation, a candidate (initialised, idle for `consolidateAfter`) |
//! | `when-empty` | Policy | a `WhenEmpty` NodePool consolidates only empty nodes |
//! | `balanced` | Policy | in a `Balanced` NodePool, a consolidation saves enough for what it disrupts |
//! | `budget` | Budget | the NodePool's disruption budget for the reason |
//! | `pdb` | Pdb | every PodDisruptionBudget allows the evictions |
//! | `replacement-allowed` | Policy | a replacement is one the NodePool may launch and its selection policy accepts |
//! | `spot-to-spot` | Policy | spot replaces spot only when spot-to-spot consolidation is on |
//! | `strands` | Strands | every pod on the move fits on the nodes that stay plus the replacements |
//! | `savings` | Savings | a consolidation replacement is cheaper by the required margin |
//!
//! Expiry and deletion are forceful: `disruptable`, `budget` and `pdb` do not
//! apply to them (their drain honours PDBs until `terminationGracePeriod`).

use std::collections::BTreeSet;

use super::{DisruptionController, Pass};
use crate::cloud::CloudProvider;
use crate::cluster::Cluster;
use crate::disruption::fit::{Member, View, describe_stranded};
use crate::disruption::methods::{self, Plan};
use crate::disruption::{Command, RejectKind, Replacement, budget};
use crate::model::{CapacityType, ConsolidationPolicy, NodePool, Pod};

/// What the rules look at: the action and the nodes it names.
pub(super) struct Check<'a> {
    pub view: &'a View,
    pub command: &'a Command,
    pub pass: &'a Pass,
    pub pool: &'a NodePool,
    pub members: Vec<&'a Member>,
}

impl Check<'_> {
    /// Expiry and deletion: not held by budgets, PDBs or do-not-disrupt.
    fn forceful(&self) -> bool {
        methods::of(self.command.reason).forceful()
    }

    /// Planned by the NodePool's consolidation policy.
    fn consolidating(&self) -> bool {
        methods::of(self.command.reason).plan() == Plan::Policy
    }
}

type Verdict = Result<(), (RejectKind, String)>;

/// The labels of the rules an action is validated by, in order (`nodes`
/// first: the NodePool and the nodes it names exist and are free).
pub const RULES: [&str; 10] =
    ["nodes", "disruptable", "when-empty", "balanced", "budget", "pdb", "replacement-allowed", "spot-to-spot", "strands", "savings"];

/// One rule: its label, and its check.
pub(super) struct Rule<C, K> {
    pub label: &'static str,
    pub check: fn(&DisruptionController<C, K>, &Check<'_>) -> Verdict,
}

impl<C: CloudProvider, K: Cluster> DisruptionController<C, K> {
    /// The rules, in the order they are checked.
    pub(super) fn rules() -> [Rule<C, K>; 9] {
        [
            Rule { label: RULES[1], check: Self::disruptable },
            Rule { label: RULES[2], check: Self::when_empty },
            Rule { label: RULES[3], check: Self::balanced },
            Rule { label: RULES[4], check: Self::within_budget },
            Rule { label: RULES[5], check: Self::within_pdbs },
            Rule { label: RULES[6], check: Self::replacement_allowed },
            Rule { label: RULES[7], check: Self::spot_to_spot_allowed },
            Rule { label: RULES[8], check: Self::strands_nothing },
            Rule { label: RULES[9], check: Self::saves_enough },
        ]
    }

    /// Check `command` against the cluster as it is now, on top of `pass`:
    /// the label of the rule that rejects it, with its kind and message.
    pub(super) fn validate(&self, view: &View, command: &Command, pass: &Pass) -> Result<(), (&'static str, RejectKind, String)> {
        let check = Self::check_of(view, command, pass).map_err(|(kind, message)| (RULES[0], kind, message))?;
        for rule in Self::rules() {
            (rule.check)(self, &check).map_err(|(kind, message)| (rule.label, kind, message))?;
        }
        Ok(())
    }

    /// The `nodes` rule: the NodePool and the members the action names.
    fn check_of<'a>(view: &'a View, command: &'a Command, pass: &'a Pass) -> Result<Check<'a>, (RejectKind, String)> {
        let pool = view
            .pool(&command.node_pool)
            .ok_or_else(|| (RejectKind::UnknownNode, format!("NodePool {} does not exist", command.node_pool)))?;
        if command.nodes.is_empty() {
            return Err((RejectKind::UnknownNode, "the action names no node".into()));
        }
        let mut members = Vec::new();
        for name in &command.nodes {
            let member = view.member(name).ok_or_else(|| (RejectKind::UnknownNode, format!("node {name} is gone")))?;
            if member.pool() != pool.name {
                return Err((RejectKind::UnknownNode, format!("node {name} belongs to NodePool {}", member.pool())));
            }
            if pass.taken.contains(name) {
                return Err((RejectKind::UnknownNode, format!("node {name} is already being disrupted")));
            }
            members.push(member);
        }
        Ok(Check { view, command, pass, pool, members })
    }

    fn disruptable(&self, c: &Check<'_>) -> Verdict {
        if c.forceful() {
            return Ok(());
        }
        for member in &c.members {
            if let Some(pod) = member.pods.iter().find(|p| p.spec.do_not_disrupt) {
                return Err((RejectKind::NotDisruptable, format!("pod {} on node {} has karpenter.sh/do-not-disrupt", pod.name, member.name())));
            }
            if c.consolidating() {
                crate::disruption::methods::consolidatable(c.pool, member).map_err(|why| (why.kind(), why.to_string()))?;
            }
        }
        Ok(())
    }

    fn when_empty(&self, c: &Check<'_>) -> Verdict {
        if c.consolidating()
            && c.pool.consolidation_policy == ConsolidationPolicy::WhenEmpty
            && let Some(busy) = c.members.iter().find(|m| !m.pods.is_empty())
        {
            return Err((
                RejectKind::Policy,
                format!("NodePool {} consolidates WhenEmpty and node {} runs {} pods", c.pool.name, busy.name(), busy.pods.len()),
            ));
        }
        Ok(())
    }

    /// Karpenter's `Balanced`: the move's savings as a fraction of the
    /// NodePool's $/hour, times the threshold, must reach its disruption
    /// cost as a fraction of the NodePool's. A node's disruption cost is 1
    /// plus its pods' eviction costs ([`Pod`]'s `eviction_cost`).
    fn balanced(&self, c: &Check<'_>) -> Verdict {
        let ConsolidationPolicy::Balanced { threshold } = c.pool.consolidation_policy else { return Ok(()) };
        if !c.consolidating() {
            return Ok(());
        }
        let disruption = |m: &Member| 1.0 + m.pods.iter().map(|p| p.spec.eviction_cost()).sum::<f64>();
        let (mut pool_cost, mut pool_disruption) = (0.0, 0.0);
        for member in c.view.members.iter().filter(|m| m.pool() == c.pool.name) {
            pool_cost += c.view.price(member.offering);
            pool_disruption += disruption(member);
        }
        let moved: f64 = c.members.iter().map(|m| disruption(m)).sum();
        if pool_cost <= 0.0 || pool_disruption <= 0.0 {
            return Ok(());
        }
        let saved = c.command.savings_per_hour.max(0.0) / pool_cost;
        let disrupted = moved / pool_disruption;
        if saved * f64::from(threshold) >= disrupted {
            return Ok(());
        }
        Err((
            RejectKind::Policy,
            format!(
                "NodePool {} consolidates Balanced (threshold {threshold}): the action saves {:.1} % of its cost and disrupts {:.1} % of its pods' disruption cost",
                c.pool.name,
                saved * 100.0,
                disrupted * 100.0
            ),
        ))
    }

    fn within_budget(&self, c: &Check<'_>) -> Verdict {
        if c.forceful() {
            return Ok(());
        }
        let pool = c.pool;
        let pool_nodes = c.view.members.iter().filter(|m| m.pool() == pool.name).count();
        let busy = self.busy(&pool.name, c.pass);
        if let Some(allowed) = budget::allowed(pool, c.command.reason, pool_nodes, c.view.now)
            && busy + c.command.nodes.len() > allowed as usize
        {
            return Err((
                RejectKind::Budget,
                format!(
                    "NodePool {}'s disruption budget allows {allowed} of its {pool_nodes} nodes for {} now; {busy} are being disrupted and the action needs {}",
                    pool.name,
                    c.command.reason.budget_name(),
                    c.command.nodes.len()
                ),
            ));
        }
        Ok(())
    }

    fn within_pdbs(&self, c: &Check<'_>) -> Verdict {
        if c.forceful() {
            return Ok(());
        }
        let pods: Vec<&Pod> = c.view.pods_of(&c.command.nodes).collect();
        for pdb in &c.view.pdbs {
            let evicted = pods.iter().filter(|p| pdb.budget.selector.matches(&p.spec.labels)).count();
            if evicted > pdb.disruptions_allowed as usize {
                return Err((
                    RejectKind::Pdb,
                    format!("PodDisruptionBudget {} allows {} evictions and the action evicts {evicted} of its pods", pdb.budget.name, pdb.disruptions_allowed),
                ));
            }
        }
        Ok(())
    }

    /// The replacement offering's name, for messages.
    fn offering_name(view: &View, o: u32) -> String {
        view.catalog.offerings.get(o as usize).map_or_else(|| format!("#{o}"), |o| o.instance_type.clone())
    }

    fn replacement_allowed(&self, c: &Check<'_>) -> Verdict {
        if let Replacement::Offering(o) = c.command.replacement
            && self.replacements(c.view, c.pool).binary_search(&o).is_err()
        {
            return Err((
                RejectKind::Policy,
                format!(
                    "replacement {} is not an offering NodePool {} may launch now and its selection policy accepts",
                    Self::offering_name(c.view, o),
                    c.pool.name
                ),
            ));
        }
        Ok(())
    }

    fn spot_to_spot_allowed(&self, c: &Check<'_>) -> Verdict {
        let spot = |offering: u32| c.view.catalog.offerings.get(offering as usize).is_some_and(|x| x.capacity_type == CapacityType::Spot);
        if let Replacement::Offering(o) = c.command.replacement
            && !self.settings.spot_to_spot
            && spot(o)
            && c.members.iter().all(|m| spot(m.offering))
        {
            return Err((
                RejectKind::Policy,
                format!("replacement {} is spot for spot nodes, and spot-to-spot consolidation is off", Self::offering_name(c.view, o)),
            ));
        }
        Ok(())
    }

    /// Everything on the move at once: the pods of this action, of those
    /// accepted before it and of the disruptions under way, onto the nodes
    /// that stay plus every replacement.
    fn strands_nothing(&self, c: &Check<'_>) -> Verdict {
        let mut gone: BTreeSet<&str> = c.pass.taken.iter().map(String::as_str).collect();
        gone.extend(c.command.nodes.iter().map(String::as_str));
        let moving: Vec<String> = gone.iter().map(|n| n.to_string()).collect();
        let all_pods: Vec<Pod> = c.view.pods_of(&moving).cloned().collect();
        if all_pods.is_empty() {
            return Ok(());
        }
        let mut extras = c.pass.extras.clone();
        let new_nodes_in = match c.command.replacement {
            Replacement::None => &[][..],
            Replacement::Offering(o) => {
                extras.extend(c.view.new_node(c.pool, o, "replacement"));
                &[][..]
            }
            Replacement::Provision => c.view.pools.as_slice(),
        };
        let result = c.view.simulate(&all_pods, &gone, extras, new_nodes_in);
        match describe_stranded(&all_pods, &result) {
            Some(stranded) => Err((RejectKind::Strands, stranded)),
            None => Ok(()),
        }
    }

    fn saves_enough(&self, c: &Check<'_>) -> Verdict {
        let Replacement::Offering(o) = c.command.replacement else { return Ok(()) };
        if !c.consolidating() {
            return Ok(());
        }
        let current: f64 = c.members.iter().map(|m| c.view.price(m.offering)).sum();
        // What the replacement adds to the bill: with commitments, an
        // on-demand node their free headroom covers adds less than its list
        // price (without commitments, the list price).
        let price = c.view.catalog.offerings.get(o as usize).map_or_else(|| c.view.price(o), |x| c.view.fleet.marginal_price(x));
        if price >= current * (1.0 - self.settings.min_savings_fraction) {
            return Err((
                RejectKind::Savings,
                format!(
                    "the replacement costs ${price:.4}/h against ${current:.4}/h for the nodes it replaces; at least {:.0}% less is required",
                    self.settings.min_savings_fraction * 100.0
                ),
            ));
        }
        Ok(())
    }
}
