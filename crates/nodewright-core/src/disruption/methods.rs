//! Disruption methods, in the order a pass asks them: each says which
//! nodes are its candidates and the reason its actions carry (the budget
//! reason, the count and the metric label).
//!
//! - [`Deletion`]: the NodeClaim (or its Node) was deleted; replaced at once,
//!   whatever the budgets.
//! - [`Expiration`]: older than the NodePool's `expireAfter`; replaced at once.
//! - [`Drift`]: launched from another version of its NodePool; replaced
//!   within the budgets.
//! - [`Consolidation`]: initialised, its pods unchanged for
//!   `consolidateAfter`, no do-not-disrupt pod; what to do with the
//!   candidates (delete the empty ones, delete or replace the others) is the
//!   NodePool's consolidation policy's plan (a plugin, or `karpenter-like`).
//!
//! Every action of every method is then checked by the same validation
//! rules (`controller/validation.rs`) and ends through the same
//! termination path.

use std::time::Duration;

use super::{Reason, RejectKind};
use super::fit::Member;
use crate::model::NodePool;

/// Why a node is not a method's candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotCandidate<'a> {
    PoolGone { node: &'a str },
    NotDeleted { node: &'a str },
    NeverExpires { pool: &'a str },
    NotExpired { node: &'a str, after: Duration },
    NotDrifted { node: &'a str },
    NeverConsolidates { pool: &'a str },
    NotReady { node: &'a str },
    PodsChanged { node: &'a str, idle_for: Duration, after: Duration },
}

impl NotCandidate<'_> {
    /// The kind of rejection it makes of an action on the node.
    pub fn kind(&self) -> RejectKind {
        match self {
            NotCandidate::NeverConsolidates { .. } => RejectKind::Policy,
            _ => RejectKind::NotDisruptable,
        }
    }
}

impl std::fmt::Display for NotCandidate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotCandidate::PoolGone { node } => write!(f, "node {node}'s NodePool is gone"),
            NotCandidate::NotDeleted { node } => write!(f, "node {node} is not being deleted"),
            NotCandidate::NeverExpires { pool } => write!(f, "NodePool {pool} has expireAfter: Never"),
            NotCandidate::NotExpired { node, after } => write!(f, "node {node} expires after {}s", after.as_secs()),
            NotCandidate::NotDrifted { node } => write!(f, "node {node} matches its NodePool"),
            NotCandidate::NeverConsolidates { pool } => write!(f, "NodePool {pool} has consolidateAfter: Never"),
            NotCandidate::NotReady { node } => write!(f, "node {node} is not ready yet"),
            NotCandidate::PodsChanged { node, idle_for, after } => {
                write!(f, "node {node}'s pods changed {}s ago; consolidateAfter is {}s", idle_for.as_secs(), after.as_secs())
            }
        }
    }
}

/// What a method does with its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Each candidate alone: cordoned, its pods provisioned for (a
    /// replacement launched where they need one), drained, terminated.
    ReplaceEach,
    /// The NodePool's consolidation policy plans over all its candidates
    /// at once (a plugin, or `karpenter-like` natively or as its fallback):
    /// which to delete, which to replace by what. Actions deleting only
    /// empty nodes carry [`Reason::Empty`], the others
    /// [`Reason::Underutilized`]. Deleting empty nodes is left to the
    /// policy, not a method of the host's: a policy may keep empty nodes
    /// as headroom.
    Policy,
}

/// A way a node comes to be disrupted.
pub(crate) trait Method: Sync {
    /// The reason its actions carry (the budget reason, the count and the
    /// metric label).
    fn reason(&self) -> Reason;

    /// Is `member`, of `pool` (`None`: its NodePool is gone), a candidate
    /// of this method now (`Ok`), or why not? `drift_hash` is the
    /// NodePool's current hash. (Asked of every node on every pass: the
    /// reason is put in words only when it is shown.)
    fn candidate<'a>(&self, pool: Option<&'a NodePool>, member: &'a Member, now: Duration, drift_hash: &str) -> Result<(), NotCandidate<'a>>;

    /// What is done with its candidates.
    fn plan(&self) -> Plan {
        Plan::ReplaceEach
    }

    /// Forceful: its actions start at once (no validation delay), are not
    /// held by disruption budgets, PDB checks or do-not-disrupt pods, and
    /// their drain is forced past the NodePool's `terminationGracePeriod`.
    fn forceful(&self) -> bool {
        false
    }
}

/// The method whose actions carry `reason`.
pub(crate) fn of(reason: Reason) -> &'static dyn Method {
    match reason {
        Reason::Deleted => &Deletion,
        Reason::Expired => &Expiration,
        Reason::Drifted => &Drift,
        Reason::Empty | Reason::Underutilized => &Consolidation,
    }
}

/// Its NodeClaim was deleted.
pub(crate) struct Deletion;

impl Method for Deletion {
    fn reason(&self) -> Reason {
        Reason::Deleted
    }

    fn candidate<'a>(&self, _: Option<&'a NodePool>, member: &'a Member, _: Duration, _: &str) -> Result<(), NotCandidate<'a>> {
        if member.claim.deleting { Ok(()) } else { Err(NotCandidate::NotDeleted { node: member.name() }) }
    }

    fn forceful(&self) -> bool {
        true
    }
}

/// Older than `expireAfter`.
pub(crate) struct Expiration;

impl Method for Expiration {
    fn reason(&self) -> Reason {
        Reason::Expired
    }

    fn candidate<'a>(&self, pool: Option<&'a NodePool>, member: &'a Member, now: Duration, _: &str) -> Result<(), NotCandidate<'a>> {
        let pool = existing(pool, member)?;
        let Some(after) = pool.expire_after else { return Err(NotCandidate::NeverExpires { pool: &pool.name }) };
        match member.claim.created_at.checked_add(after) {
            Some(at) if now >= at => Ok(()),
            _ => Err(NotCandidate::NotExpired { node: member.name(), after }),
        }
    }

    fn forceful(&self) -> bool {
        true
    }
}

/// Launched from another version of its NodePool, or no longer matching
/// what its node class resolves to (the cloud's drift: a new AMI, …).
pub(crate) struct Drift;

impl Method for Drift {
    fn reason(&self) -> Reason {
        Reason::Drifted
    }

    fn candidate<'a>(&self, pool: Option<&'a NodePool>, member: &'a Member, _: Duration, drift_hash: &str) -> Result<(), NotCandidate<'a>> {
        if pool.is_some() && (member.drift.is_some() || (!member.claim.pool_hash.is_empty() && member.claim.pool_hash != drift_hash)) {
            Ok(())
        } else {
            Err(NotCandidate::NotDrifted { node: member.name() })
        }
    }
}

/// Empty or under-used nodes, by the NodePool's consolidation policy.
pub(crate) struct Consolidation;

impl Method for Consolidation {
    fn reason(&self) -> Reason {
        Reason::Underutilized
    }

    fn candidate<'a>(&self, pool: Option<&'a NodePool>, member: &'a Member, _: Duration, _: &str) -> Result<(), NotCandidate<'a>> {
        consolidatable(existing(pool, member)?, member)
    }

    fn plan(&self) -> Plan {
        Plan::Policy
    }
}

/// `member`'s NodePool, or why there is none.
fn existing<'a>(pool: Option<&'a NodePool>, member: &'a Member) -> Result<&'a NodePool, NotCandidate<'a>> {
    pool.ok_or(NotCandidate::PoolGone { node: member.name() })
}

/// Is `member` a consolidation candidate of `pool` now: the NodePool
/// consolidates, the node is initialised and its pods have not changed for
/// `consolidateAfter`? (The do-not-disrupt check is the validation's.)
pub(crate) fn consolidatable<'a>(pool: &'a NodePool, member: &'a Member) -> Result<(), NotCandidate<'a>> {
    let Some(after) = pool.consolidate_after else {
        return Err(NotCandidate::NeverConsolidates { pool: &pool.name });
    };
    if !member.claim.initialized {
        return Err(NotCandidate::NotReady { node: member.name() });
    }
    if member.idle_for < after {
        return Err(NotCandidate::PodsChanged { node: member.name(), idle_for: member.idle_for, after });
    }
    Ok(())
}

/// The methods a pass asks for new actions, in order. For a node, the
/// first [`Plan::ReplaceEach`] method whose candidate it is decides its
/// reason; what those leave, the [`Plan::Policy`] method plans over.
/// ([`Deletion`] is asked first, every pass, even between two polls'
/// decisions.)
pub(crate) const METHODS: [&dyn Method; 3] = [&Expiration, &Drift, &Consolidation];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NodeClaim;
    use std::time::Duration;

    fn member(created_at: u64, pool_hash: &str, initialized: bool, deleting: bool, idle_for: u64) -> Member {
        let claim = NodeClaim {
            name: "default-bcdfg".into(),
            node_pool: "default".into(),
            pods: Default::default(),
            requests: Default::default(),
            offerings: Default::default(),
            taints: vec![],
            instance: None,
            created_at: Duration::from_secs(created_at),
            pool_hash: pool_hash.into(),
            initialized,
            deleting,
            conditions: Default::default(),
        };
        Member { claim, offering: 0, pods: Default::default(), idle_for: Duration::from_secs(idle_for), drift: None }
    }

    #[test]
    fn each_method_names_its_candidates_and_the_first_replacing_one_decides_the_reason() {
        let mut pool = NodePool::new("default");
        pool.expire_after = Some(Duration::from_secs(3600));
        pool.consolidate_after = Some(Duration::from_secs(60));
        let now = Duration::from_secs(4000);
        let replacing = || METHODS.iter().filter(|m| m.plan() == Plan::ReplaceEach);
        let reason = |m: &Member, hash: &str| replacing().find(|x| x.candidate(Some(&pool), m, now, hash).is_ok()).map(|x| x.reason());
        // Old and drifted: expiry comes first.
        assert_eq!(reason(&member(0, "old", true, false, 0), "new"), Some(Reason::Expired));
        assert_eq!(reason(&member(1000, "old", true, false, 0), "new"), Some(Reason::Drifted));
        assert_eq!(reason(&member(1000, "new", true, false, 0), "new"), None);
        // A claim without a hash (adopted) never drifts.
        assert_eq!(reason(&member(1000, "", true, false, 0), "new"), None);
        assert_eq!(Expiration.candidate(Some(&pool), &member(1000, "", true, false, 0), now, "").unwrap_err().to_string(), "node default-bcdfg expires after 3600s");
        assert!(Deletion.candidate(None, &member(1000, "", true, true, 0), now, "").is_ok(), "a deleted claim goes even without its NodePool");
        assert!(Consolidation.candidate(Some(&pool), &member(1000, "", true, false, 60), now, "").is_ok());
        assert_eq!(
            Consolidation.candidate(Some(&pool), &member(1000, "", true, false, 59), now, "").unwrap_err().to_string(),
            "node default-bcdfg's pods changed 59s ago; consolidateAfter is 60s"
        );
        assert_eq!(Consolidation.candidate(Some(&pool), &member(1000, "", false, false, 600), now, "").unwrap_err().to_string(), "node default-bcdfg is not ready yet");
        assert_eq!(Consolidation.reason(), Reason::Underutilized);
        // Forceful: deletion and expiry, not drift or consolidation.
        let forceful: Vec<Reason> = [Reason::Deleted, Reason::Expired, Reason::Drifted, Reason::Empty, Reason::Underutilized]
            .into_iter()
            .filter(|&r| of(r).forceful())
            .collect();
        assert_eq!(forceful, vec![Reason::Deleted, Reason::Expired]);
        assert_eq!(of(Reason::Empty).plan(), Plan::Policy);
        assert_eq!(of(Reason::Drifted).plan(), Plan::ReplaceEach);
        assert_eq!(of(Reason::Deleted).reason(), Reason::Deleted);
    }
}
