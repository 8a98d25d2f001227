//! The Wasm policy runtime: one engine, a cache of compiled components,
//! sandboxed and bounded calls, output validation, built-in fallbacks, and a
//! registry of slots swapped atomically (with rollback and shadow runs).
//!
//! Data flow for one decision: [`PolicySlot::rank`] takes the active
//! [`Plugin`], which takes an idle instance and runs the call as a future on
//! a call thread (or on the caller's thread outside any tokio runtime): it
//! instantiates from the `InstancePre` when no instance was idle, hands over
//! the catalog when the instance has not seen its version, and calls `rank`,
//! each under one deadline for guest and host time and one memory limit for
//! the whole instance; the caller validates the answer. A failed call is
//! answered by the built-in policy.

mod bindings;
mod builtin;
mod cache;
mod conformance;
mod error;
mod executor;
mod fleet;
mod plugin;
mod registry;
mod request;
mod runtime;
mod sandbox;
mod watch;

pub use builtin::{cheapest_ranking, no_consolidation};
pub use conformance::{
    ConformanceCheck, ConformanceReport, full_catalog, large_snapshot, sample_fleet, sample_snapshot, selection_request,
};
pub use error::{CallFailure, PluginError};
pub use executor::panic_message;
pub use fleet::{
    Fleet, FleetCount, MAX_PRICE_POINTS, PodFacts, PoolHistory, PriceHistory, ReservationUse, SavingsPlanUse, tolerates_spot,
};
pub use plugin::{ContractVersion, Plugin, PluginInfo, World, observe_calls};
pub use registry::{
    BUILTIN_SELECTION, DecidedBy, Decision, PolicyRegistry, PolicySlot, Role, SlotMode, SlotStats, SwapOutcome,
};
pub use request::{ConsolidationAction, ConsolidationSnapshot, Ranking, SelectionRequest, SnapshotNode};
pub use runtime::{CacheStats, Limits, PluginClock, PolicyRuntime, RuntimeConfig, SystemClock};
pub use watch::{DirectoryWatch, WatchEvent};

/// Where the build put the bundled components of `plugins/` (embedded
/// below); the examples and test fixtures are `nodewright-test-plugins`.
pub const BUILT_PLUGIN_DIR: &str = env!("NODEWRIGHT_PLUGIN_DIR");

/// The components bundled with nodewright, by name: the host's default policies.
pub mod bundled {
    /// `cheapest`: price per hour, lowest first (selection).
    pub const CHEAPEST: &[u8] = include_bytes!(concat!(env!("NODEWRIGHT_PLUGIN_DIR"), "/cheapest.wasm"));
    /// `spot-savvy`: price weighted by interruption risk (selection).
    pub const SPOT_SAVVY: &[u8] = include_bytes!(concat!(env!("NODEWRIGHT_PLUGIN_DIR"), "/spot-savvy.wasm"));
    /// `graviton-first`: arm64 within a margin of the cheapest (selection).
    pub const GRAVITON_FIRST: &[u8] =
        include_bytes!(concat!(env!("NODEWRIGHT_PLUGIN_DIR"), "/graviton-first.wasm"));
    /// `on-demand-only`: the cheapest on-demand offering, never spot (selection).
    pub const ON_DEMAND_ONLY: &[u8] = include_bytes!(concat!(env!("NODEWRIGHT_PLUGIN_DIR"), "/on-demand-only.wasm"));
    /// `empty-only`: delete empty nodes (consolidation).
    pub const EMPTY_ONLY: &[u8] = include_bytes!(concat!(env!("NODEWRIGHT_PLUGIN_DIR"), "/empty-only.wasm"));

    /// `utilization-threshold`: consolidate nodes under a requested share (consolidation).
    pub const UTILIZATION_THRESHOLD: &[u8] =
        include_bytes!(concat!(env!("NODEWRIGHT_PLUGIN_DIR"), "/utilization-threshold.wasm"));
    /// `savings-threshold`: act only above a monthly saving (consolidation).
    pub const SAVINGS_THRESHOLD: &[u8] = include_bytes!(concat!(env!("NODEWRIGHT_PLUGIN_DIR"), "/savings-threshold.wasm"));
    /// `balanced`: savings weighed against pods disrupted (consolidation).
    pub const BALANCED: &[u8] = include_bytes!(concat!(env!("NODEWRIGHT_PLUGIN_DIR"), "/balanced.wasm"));

    /// `commitment-aware`: reservations, Reserved Instances and Savings Plan
    /// headroom first (selection, contract 0.3.0).
    pub const COMMITMENT_AWARE: &[u8] = include_bytes!(concat!(env!("NODEWRIGHT_PLUGIN_DIR"), "/commitment-aware.wasm"));
    /// `spot-diversified`: spot spread over pools, deep ones first, commitments
    /// filled first (selection, contract 0.3.0).
    pub const SPOT_DIVERSIFIED: &[u8] = include_bytes!(concat!(env!("NODEWRIGHT_PLUGIN_DIR"), "/spot-diversified.wasm"));
    /// `disruption-aware`: savings weighed against eviction cost (consolidation, contract 0.3.0).
    pub const DISRUPTION_AWARE: &[u8] = include_bytes!(concat!(env!("NODEWRIGHT_PLUGIN_DIR"), "/disruption-aware.wasm"));

    /// Every bundled component as (name, bytes).
    pub const ALL: [(&str, &[u8]); 11] = [
        ("cheapest", CHEAPEST),
        ("spot-savvy", SPOT_SAVVY),
        ("graviton-first", GRAVITON_FIRST),
        ("on-demand-only", ON_DEMAND_ONLY),
        ("empty-only", EMPTY_ONLY),
        ("utilization-threshold", UTILIZATION_THRESHOLD),
        ("savings-threshold", SAVINGS_THRESHOLD),
        ("balanced", BALANCED),
        ("commitment-aware", COMMITMENT_AWARE),
        ("spot-diversified", SPOT_DIVERSIFIED),
        ("disruption-aware", DISRUPTION_AWARE),
    ];

    /// The bundled component called `name`.
    pub fn get(name: &str) -> Option<&'static [u8]> {
        ALL.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
    }
}
