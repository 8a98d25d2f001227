//! Controller steps run under supervision: an error or a panic inside one
//! step is caught at the step's boundary, logged and counted, and the next
//! step (and the next pass) runs as usual. A long-running controller must
//! never be taken down by one bad object.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// Why a supervised step did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepFailure {
    /// The step returned an error.
    #[error("{step}: {message}")]
    Failed {
        /// The step's name.
        step: &'static str,
        /// The error, as text.
        message: String,
    },
    /// The step panicked; the panic was caught.
    #[error("{step}: panicked: {message}")]
    Panicked {
        /// The step's name.
        step: &'static str,
        /// The panic message.
        message: String,
    },
}

impl StepFailure {
    /// `error` or `panic`, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            StepFailure::Failed { .. } => "error",
            StepFailure::Panicked { .. } => "panic",
        }
    }

    /// The step that failed.
    pub fn step(&self) -> &'static str {
        match self {
            StepFailure::Failed { step, .. } | StepFailure::Panicked { step, .. } => step,
        }
    }
}

/// Run `step`, turning its error or its panic into a [`StepFailure`] that is
/// logged at warn (error) or error (panic) level.
pub async fn supervised<T, E: std::fmt::Display>(
    name: &'static str,
    step: impl Future<Output = Result<T, E>>,
) -> Result<T, StepFailure> {
    let failure = match AssertUnwindSafe(step).catch_unwind().await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) => StepFailure::Failed {
            step: name,
            message: e.to_string(),
        },
        Err(panic) => StepFailure::Panicked {
            step: name,
            message: crate::policy::panic_message(panic),
        },
    };
    match &failure {
        StepFailure::Failed { .. } => {
            tracing::warn!(step = name, "controller step failed: {failure}")
        }
        StepFailure::Panicked { .. } => tracing::error!(
            step = name,
            "controller step panicked, continuing: {failure}"
        ),
    }
    Err(failure)
}

/// What became of a step in a pass of [`Steps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran<T> {
    /// It ran and succeeded.
    Done(T),
    /// It ran and failed; it backs off.
    Failed(StepFailure),
    /// It is backing off after failures: not run this pass.
    Waiting,
}

/// Each controller step's own error backoff and last success: a step that
/// fails is skipped for 1 s, then 2 s, 4 s, … up to `max` (reset by a
/// success), while the other steps run every pass.
#[derive(Debug)]
pub struct Steps {
    max: std::time::Duration,
    state: std::collections::BTreeMap<&'static str, StepState>,
}

#[derive(Debug, Clone, Copy, Default)]
struct StepState {
    failures: u32,
    retry_at: std::time::Duration,
    last_success: Option<std::time::Duration>,
}

impl Steps {
    /// Backoffs capped at `max`.
    pub fn new(max: std::time::Duration) -> Self {
        Steps { max, state: Default::default() }
    }

    /// Run step `name` at time `now` (any monotonic clock) unless it is
    /// backing off, supervised as [`supervised`] runs it.
    pub async fn run<T, E: std::fmt::Display>(
        &mut self,
        name: &'static str,
        now: std::time::Duration,
        step: impl Future<Output = Result<T, E>>,
    ) -> Ran<T> {
        let state = self.state.entry(name).or_default();
        if now < state.retry_at {
            return Ran::Waiting;
        }
        match supervised(name, step).await {
            Ok(value) => {
                let state = self.state.entry(name).or_default();
                *state = StepState { failures: 0, retry_at: now, last_success: Some(now) };
                Ran::Done(value)
            }
            Err(failure) => {
                let max = self.max;
                let state = self.state.entry(name).or_default();
                state.failures = state.failures.saturating_add(1);
                let wait = std::time::Duration::from_secs(1u64.checked_shl(state.failures - 1).unwrap_or(u64::MAX)).min(max);
                state.retry_at = now.saturating_add(wait);
                Ran::Failed(failure)
            }
        }
    }

    /// When step `name` last succeeded (by the clock given to `run`).
    pub fn last_success(&self, name: &str) -> Option<std::time::Duration> {
        self.state.get(name).and_then(|s| s.last_success)
    }

    /// Every step seen, with its last success.
    pub fn successes(&self) -> Vec<(&'static str, Option<std::time::Duration>)> {
        self.state.iter().map(|(name, s)| (*name, s.last_success)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_step_backs_off_doubling_to_the_cap_while_another_runs_each_pass() {
        let mut steps = Steps::new(std::time::Duration::from_secs(4));
        let at = std::time::Duration::from_secs;
        let mut ran = Vec::new();
        for t in 0..12 {
            let bad = futures::executor::block_on(steps.run("status", at(t), async { Err::<(), _>("conflict") }));
            let good = futures::executor::block_on(steps.run("provisioning", at(t), async { Ok::<_, String>(t) }));
            assert_eq!(good, Ran::Done(t), "the other step runs every pass");
            ran.push(!matches!(bad, Ran::Waiting));
        }
        // Failures at 0, 1 (after 1 s), 3 (2 s), 7 (4 s), 11 (4 s: the cap).
        let tried: Vec<u64> = (0..12).filter(|&t| ran[t as usize]).collect();
        assert_eq!(tried, vec![0, 1, 3, 7, 11]);
        assert_eq!(steps.last_success("status"), None);
        assert_eq!(steps.last_success("provisioning"), Some(at(11)));
        // A success resets the backoff.
        let ok = futures::executor::block_on(steps.run("status", at(15), async { Ok::<_, String>(()) }));
        assert_eq!(ok, Ran::Done(()));
        let again = futures::executor::block_on(steps.run("status", at(16), async { Err::<(), _>("x") }));
        assert!(matches!(again, Ran::Failed(_)));
        assert_eq!(futures::executor::block_on(steps.run("status", at(16), async { Ok::<_, String>(()) })), Ran::Waiting);
        assert_eq!(futures::executor::block_on(steps.run("status", at(17), async { Ok::<_, String>(()) })), Ran::Done(()));
    }

    #[test]
    fn a_panicking_step_is_caught_and_the_next_step_still_runs() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let outcomes = runtime.block_on(async {
            let first = supervised("explodes", async {
                let v: Vec<u32> = Vec::new();
                #[allow(clippy::indexing_slicing, reason = "the panic under test")]
                Ok::<u32, String>(v[3])
            })
            .await;
            let second = supervised("fails", async { Err::<u32, _>("no API server") }).await;
            let third = supervised("works", async { Ok::<u32, String>(7) }).await;
            (first, second, third)
        });
        assert_eq!(
            outcomes.0,
            Err(StepFailure::Panicked {
                step: "explodes",
                message: "index out of bounds: the len is 0 but the index is 3".into()
            })
        );
        assert_eq!(outcomes.0.as_ref().unwrap_err().kind(), "panic");
        assert_eq!(
            outcomes.1,
            Err(StepFailure::Failed {
                step: "fails",
                message: "no API server".into()
            })
        );
        assert_eq!(outcomes.2, Ok(7));
    }
}
