//! The `nodewright` command line: the offline commands (compare, simulate,
//! trace, plugin, bench) on `nodewright-core`, and with the `controller`
//! feature `run` and `crds` on `nodewright-aws` and `nodewright-kube`.

pub mod cli;
