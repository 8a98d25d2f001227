//! The offline simulator: the real provisioning, disruption and
//! interruption controllers and policy registry, on the simulated cloud and
//! cluster, driven by a workload trace on a virtual clock. Same trace,
//! policy and seed → byte-identical report.

pub mod decisions;
mod engine;
pub mod html;
pub mod import;
pub mod kube_trace;
mod passes;
pub mod timeline;
mod report;
pub mod trace;
mod world;

pub use engine::{EndState, Metrics, PolicyUnderTest, Sample, SimulationConfig, SimulationResult, simulate};
pub use passes::{ConsolidationPass, SimulatedPass};
pub use report::{PolicySummary, Report, SeedReport, Spread, write_charts};
pub use trace::{Trace, TraceError, generate, parse_trace};
pub use world::{EPOCH_OFFSET, SimClock, World, WorldSettings, drive};
