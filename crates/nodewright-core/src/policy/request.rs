//! What the host asks a policy and what it accepts back, independent of the
//! contract version a plugin speaks. Validation of plugin answers lives here.

use serde::Serialize;

use std::sync::Arc;

use super::fleet::{Fleet, PodFacts};
use crate::model::Resources;

/// A new node to open for some pods: which feasible offering should it be?
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SelectionRequest {
    /// The NodePool the node belongs to.
    pub node_pool: String,
    /// Requests of each pod to place.
    pub pods: Vec<Resources>,
    /// Sum of the pods' requests plus daemonset overhead.
    pub total: Resources,
    /// Catalog indices of the offerings that can host the pods, ascending.
    pub feasible: Vec<u32>,
    /// What else is known of each pod, in the order of `pods` (contract
    /// 0.3.0); a pod without an entry has default facts.
    pub facts: Vec<PodFacts>,
    /// Pods waiting for a node in this pass.
    pub pending_pods: u32,
    /// The fleet and commitments (contract 0.3.0).
    pub fleet: Arc<Fleet>,
}

/// Validated scores for some feasible offerings; lower is preferred.
/// Two lists of equal length, as the contract hands them over (no copy).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Ranking {
    /// Catalog indices, in the order the policy gave them.
    offerings: Vec<u32>,
    /// `scores[i]` is the score of `offerings[i]`.
    scores: Vec<f64>,
}

impl Ranking {
    /// The `k` preferred offerings, best first (ties to the lower index).
    pub fn best(&self, k: usize) -> Vec<(u32, f64)> {
        self.clone().into_best(k)
    }

    /// A ranking trusted as given (the host's own policies).
    pub(crate) fn trusted(offerings: Vec<u32>, scores: Vec<f64>) -> Self {
        debug_assert_eq!(offerings.len(), scores.len());
        Ranking { offerings, scores }
    }

    /// (catalog index, score) pairs in the policy's order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (u32, f64)> + '_ {
        self.offerings.iter().copied().zip(self.scores.iter().copied())
    }

    /// Number of offerings scored.
    pub fn len(&self) -> usize {
        self.offerings.len()
    }

    /// True when no offering was scored.
    pub fn is_empty(&self) -> bool {
        self.offerings.is_empty()
    }

    /// [`Ranking::best`], consuming the ranking.
    pub fn into_best(self, k: usize) -> Vec<(u32, f64)> {
        let order = |a: &(u32, f64), b: &(u32, f64)| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
        let mut entries: Vec<(u32, f64)> = self.offerings.into_iter().zip(self.scores).collect();
        if k < entries.len() {
            entries.select_nth_unstable_by(k, order);
            entries.truncate(k);
        }
        entries.sort_unstable_by(order);
        entries
    }

    /// The preferred offering, if any.
    pub fn top(&self) -> Option<u32> {
        self.entries().min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0))).map(|e| e.0)
    }

    /// Check a plugin's answer against the request: equal lengths, no more
    /// entries than feasible offerings, every index feasible and given once,
    /// every score finite.
    pub fn validate(
        offerings: Vec<u32>,
        scores: Vec<f64>,
        feasible: &[u32],
        catalog_len: usize,
    ) -> Result<Ranking, String> {
        if offerings.len() != scores.len() {
            return Err(format!(
                "ranking has {} offerings but {} scores",
                offerings.len(),
                scores.len()
            ));
        }
        if offerings.len() > feasible.len() {
            return Err(format!(
                "oversized output: {} scores for {} feasible offerings",
                offerings.len(),
                feasible.len()
            ));
        }
        // The common answer scores every feasible offering in request order:
        // then indices are known to be feasible and unique, and in range when
        // the last is (the host lists them ascending). The scores are checked
        // by a fold over every entry without stopping early, which the
        // compiler turns into vector code; the first bad score is looked for
        // only when there is one.
        debug_assert!(feasible.windows(2).all(|w| w[0] < w[1]), "feasible offerings are ascending");
        if offerings == feasible && feasible.last().is_none_or(|&i| (i as usize) < catalog_len) {
            if !scores.iter().fold(true, |finite, s| finite & s.is_finite()) {
                let bad = scores.iter().position(|s| !s.is_finite()).unwrap_or(0);
                return Err(format!("score of offering {} is {}, scores must be finite", offerings[bad], scores[bad]));
            }
            return Ok(Ranking { offerings, scores });
        }
        // One byte per catalog offering: 1 = feasible, 2 = already scored.
        let mut state = vec![0u8; catalog_len];
        for &i in feasible {
            if let Some(slot) = state.get_mut(i as usize) {
                *slot = 1;
            }
        }
        for (&index, &score) in offerings.iter().zip(&scores) {
            match state.get(index as usize) {
                None => {
                    return Err(format!(
                        "offering index {index} is out of range (the catalog has {catalog_len} offerings)"
                    ));
                }
                Some(0) => return Err(format!("offering index {index} is not one of the feasible offerings")),
                Some(2) => return Err(format!("offering index {index} is scored twice")),
                Some(_) => {}
            }
            if !score.is_finite() {
                return Err(format!("score of offering {index} is {score}, scores must be finite"));
            }
            state[index as usize] = 2;
        }
        Ok(Ranking { offerings, scores })
    }
}

/// One node of a consolidation snapshot.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SnapshotNode {
    /// Node name.
    pub name: String,
    /// Catalog index of its offering.
    pub offering: u32,
    /// Seconds since launch.
    pub age_seconds: u64,
    /// Requests of its pods (daemonsets excluded).
    pub pods: Vec<Resources>,
    /// What else is known of each pod, in the order of `pods`; a pod
    /// without an entry has default facts.
    pub facts: Vec<PodFacts>,
    /// False when something on the node forbids disruption.
    pub disruptable: bool,
}

/// The nodes of a NodePool and what could replace them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConsolidationSnapshot {
    /// The NodePool.
    pub node_pool: String,
    /// Its nodes.
    pub nodes: Vec<SnapshotNode>,
    /// Catalog indices of the offerings it may launch now.
    pub replacements: Vec<u32>,
    /// Nodes its disruption budget still allows to disrupt for consolidation.
    pub budget_left: u32,
    /// Pods of the cluster waiting for a node.
    pub pending_pods: u32,
    /// The fleet and commitments (contract 0.3.0).
    pub fleet: Arc<Fleet>,
}

/// A consolidation step a policy proposes (node indices into the snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsolidationAction {
    /// Delete these nodes.
    Delete {
        /// Node indices.
        nodes: Vec<u32>,
    },
    /// Launch `offering` and delete these nodes.
    Replace {
        /// Node indices.
        nodes: Vec<u32>,
        /// Catalog index of the replacement.
        offering: u32,
    },
}

impl ConsolidationAction {
    /// The nodes the action removes.
    pub fn nodes(&self) -> &[u32] {
        match self {
            ConsolidationAction::Delete { nodes } | ConsolidationAction::Replace { nodes, .. } => nodes,
        }
    }

    /// Check a plugin's plan against the snapshot: node indices in range,
    /// each node in at most one action, only disruptable nodes, replacements
    /// among the allowed offerings, no empty action, no more actions than nodes.
    pub fn validate_plan(
        plan: Vec<ConsolidationAction>,
        snapshot: &ConsolidationSnapshot,
    ) -> Result<Vec<ConsolidationAction>, String> {
        if plan.len() > snapshot.nodes.len() {
            return Err(format!(
                "oversized output: {} actions for {} nodes",
                plan.len(),
                snapshot.nodes.len()
            ));
        }
        let mut used = vec![false; snapshot.nodes.len()];
        for (a, action) in plan.iter().enumerate() {
            if action.nodes().is_empty() {
                return Err(format!("action {a} names no node"));
            }
            for &n in action.nodes() {
                let Some(node) = snapshot.nodes.get(n as usize) else {
                    return Err(format!(
                        "action {a} names node index {n}, the snapshot has {} nodes",
                        snapshot.nodes.len()
                    ));
                };
                if !node.disruptable {
                    return Err(format!("action {a} names node {} which must not be disrupted", node.name));
                }
                if std::mem::replace(&mut used[n as usize], true) {
                    return Err(format!("node {} appears in more than one action", node.name));
                }
            }
            if let ConsolidationAction::Replace { offering, .. } = action
                && !snapshot.replacements.contains(offering)
            {
                return Err(format!(
                    "action {a} replaces with offering index {offering}, which is not an allowed replacement"
                ));
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_ranking_is_kept_in_plugin_order() {
        let r = Ranking::validate(vec![4, 2], vec![1.5, 0.5], &[2, 3, 4], 10).unwrap();
        assert_eq!(r.entries().collect::<Vec<_>>(), vec![(4, 1.5), (2, 0.5)]);
        assert_eq!(r.best(1), vec![(2, 0.5)]);
        assert_eq!(r.top(), Some(2));
    }

    #[test]
    fn ranking_rules_are_each_enforced_with_their_message() {
        let check = |o: Vec<u32>, s: Vec<f64>| Ranking::validate(o, s, &[1, 2, 3], 5).unwrap_err();
        assert_eq!(check(vec![1], vec![]), "ranking has 1 offerings but 0 scores");
        assert_eq!(check(vec![1, 2, 3, 1], vec![0.0; 4]), "oversized output: 4 scores for 3 feasible offerings");
        assert_eq!(check(vec![9], vec![0.0]), "offering index 9 is out of range (the catalog has 5 offerings)");
        assert_eq!(check(vec![2, 2], vec![0.0, 1.0]), "offering index 2 is scored twice");
        assert_eq!(check(vec![0], vec![0.0]), "offering index 0 is not one of the feasible offerings");
        assert_eq!(check(vec![3], vec![f64::NAN]), "score of offering 3 is NaN, scores must be finite");
        assert_eq!(check(vec![3], vec![f64::INFINITY]), "score of offering 3 is inf, scores must be finite");
    }

    #[test]
    fn plan_rules_are_each_enforced_with_their_message() {
        let node = |name: &str, disruptable| SnapshotNode {
            name: name.into(),
            offering: 0,
            age_seconds: 60,
            pods: vec![],
            disruptable,
            ..SnapshotNode::default()
        };
        let snapshot = ConsolidationSnapshot {
            node_pool: "default".into(),
            nodes: vec![node("a", true), node("b", false), node("c", true)],
            replacements: vec![7],
            ..ConsolidationSnapshot::default()
        };
        let check = |plan| ConsolidationAction::validate_plan(plan, &snapshot).unwrap_err();
        use ConsolidationAction::*;
        assert_eq!(check(vec![Delete { nodes: vec![5] }]), "action 0 names node index 5, the snapshot has 3 nodes");
        assert_eq!(check(vec![Delete { nodes: vec![1] }]), "action 0 names node b which must not be disrupted");
        assert_eq!(
            check(vec![Delete { nodes: vec![0] }, Replace { nodes: vec![0], offering: 7 }]),
            "node a appears in more than one action"
        );
        assert_eq!(
            check(vec![Replace { nodes: vec![2], offering: 3 }]),
            "action 0 replaces with offering index 3, which is not an allowed replacement"
        );
        assert_eq!(check(vec![Delete { nodes: vec![] }]), "action 0 names no node");
        let ok = vec![Delete { nodes: vec![0] }, Replace { nodes: vec![2], offering: 7 }];
        assert_eq!(ConsolidationAction::validate_plan(ok.clone(), &snapshot).unwrap(), ok);
    }
}
