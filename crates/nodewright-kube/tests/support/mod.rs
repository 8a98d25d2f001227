//! Test support shared by the kube-rs tests.

pub mod apiserver;
