//! Host bindings generated from `wit/`, one module per supported contract
//! version. A later version goes beside this one, so old plugins keep working.

/// `nodewright:policy@0.1.0`.
pub mod v0_1_0 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "policy",
    });

    pub use exports::nodewright::policy::{catalog, consolidation, instance_selection};
    pub use nodewright::policy::{host, types};
}
