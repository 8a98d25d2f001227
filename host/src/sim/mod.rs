//! The offline simulator: the real provisioning controller and policy
//! registry, on the simulated cloud and cluster, driven by a workload trace
//! on a virtual clock. Same trace, policy and seed → byte-identical report.

mod engine;
mod report;
pub mod trace;

pub use engine::{PolicyUnderTest, SimClock, SimulationConfig, SimulationResult, Sample, Metrics, simulate};
pub use report::{Report, write_charts};
pub use trace::{Trace, TraceError, generate, parse_trace};
