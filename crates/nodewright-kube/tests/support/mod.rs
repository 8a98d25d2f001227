//! Test support shared by the kube-rs tests.

pub mod apiserver;
pub mod harness;
pub mod objects;
