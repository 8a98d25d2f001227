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

#[cfg(test)]
mod tests {
    use super::*;

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
