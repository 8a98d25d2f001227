//! The lifecycle controllers written against [`crate::cluster::Cluster`],
//! so that `nodewright run` and the simulator run the same code:
//!
//! - [`registration`]: links a launched NodeClaim to the Node its instance
//!   registered as, removes the NodePool's startup taints once the node is
//!   Ready and marks the claim initialised; a Node deleted by hand deletes
//!   its NodeClaim (the termination path then drains and terminates it).
//! - [`node_pool_status`]: each NodePool's status — valid or why not, its
//!   NodeClaims, the capacity it holds — written only when it changes.
//! - [`policy_plugins`]: PolicyPlugin objects into the registry's slots
//!   (fetched, digest-checked, compiled and conformance-checked off the
//!   decision path), with what became of each in its status.

pub mod node_pool_status;
pub mod policy_plugins;
pub mod registration;
