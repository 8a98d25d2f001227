//! nodewright: a Kubernetes node autoscaler for AWS whose decisions — which
//! offering to buy, which nodes to consolidate — are sandboxed WebAssembly
//! components behind one versioned WIT contract.

pub mod cloud;
pub mod cluster;
pub mod controllers;
pub mod disruption;
pub mod interruption;
pub mod model;
pub mod policy;
pub mod provisioning;
pub mod scheduling;
pub mod sim;
pub mod supervise;
pub mod termination;
