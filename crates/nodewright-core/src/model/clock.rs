//! The one clock type every layer reads: a function giving "now". The
//! controllers read time since the Unix epoch (the wall clock in a
//! cluster, the virtual clock from its epoch in the simulator); the
//! simulated cloud and cluster read time from the start of the run.

use std::sync::Arc;
use std::time::Duration;

/// Now, by some clock.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The wall clock: time since the Unix epoch.
pub fn system_clock() -> Clock {
    Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default())
}
