//! The threads plugin calls run on.
//!
//! A plugin may block in a WASI call (write to stdout, sleep, poll a
//! socket). Those calls are implemented on tokio, and a controller calling
//! a plugin is itself usually inside a tokio runtime (the simulator's
//! executor, `nodewright run`'s), where blocking on another runtime panics.
//! So a call made from inside a current-thread runtime is handed to one of
//! these threads: each owns a current-thread runtime with timers and I/O,
//! runs the call's future on it under the call's deadline, and hands the
//! result back; the caller waits, as it did for a synchronous call. A call
//! made outside any runtime (the simulator, `plugin check`, `plugin bench`,
//! the benchmarks), or on a worker of a multi-thread runtime (`nodewright
//! run`, which first tells the runtime the worker is about to block), runs
//! the same future on a current-thread runtime of the calling thread, which
//! saves the hand-over and behaves the same.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::sync::{Arc, Mutex};

/// A unit of work for a call thread.
type Job = Box<dyn FnOnce(&tokio::runtime::Runtime) + Send>;

/// A small pool of threads, each with its own current-thread runtime.
pub(crate) struct CallThreads {
    sender: Mutex<Sender<Job>>,
}

impl CallThreads {
    /// Start `threads` call threads (at least one).
    pub(crate) fn start(threads: usize) -> std::io::Result<Self> {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("nodewright-plugin-{i}"))
                .spawn(move || serve(&runtime, &receiver))?;
        }
        Ok(CallThreads {
            sender: Mutex::new(sender),
        })
    }

    /// Run `job` on a call thread and wait for its result. `Err` carries
    /// the panic message when the job panicked (the thread survives).
    pub(crate) fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce(&tokio::runtime::Runtime) -> R + Send + 'static,
    ) -> Result<R, String> {
        match tokio::runtime::Handle::try_current() {
            Err(_) => return run_here(job),
            // A worker of a multi-thread runtime hands its other tasks to
            // another worker and runs the call itself: no hand-over, no
            // thread switch.
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                return tokio::task::block_in_place(|| run_here(job));
            }
            Ok(_) => {}
        }
        let (reply, result) = sync_channel(1);
        let job: Job = Box::new(move |runtime| {
            let outcome =
                std::panic::catch_unwind(AssertUnwindSafe(|| job(runtime))).map_err(panic_message);
            let _ = reply.send(outcome);
        });
        let sent = self
            .sender
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send(job);
        if sent.is_err() {
            return Err("the plugin call threads have stopped".into());
        }
        result
            .recv()
            .map_err(|_| "the plugin call thread stopped during the call".to_string())?
    }
}

thread_local! {
    /// The runtime of calls made on this thread outside any other runtime.
    /// Leaked on purpose: dropping a runtime while the thread's own
    /// thread-locals are being torn down is not allowed, and the threads
    /// that call plugins this way are few and long-lived.
    static LOCAL: Result<&'static tokio::runtime::Runtime, String> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|runtime| &*Box::leak(Box::new(runtime)))
        .map_err(|e| e.to_string());
}

/// Run `job` on this thread's own runtime, catching a panic.
fn run_here<R>(job: impl FnOnce(&tokio::runtime::Runtime) -> R) -> Result<R, String> {
    LOCAL.with(|runtime| match runtime {
        Ok(runtime) => std::panic::catch_unwind(AssertUnwindSafe(|| job(runtime))).map_err(panic_message),
        Err(e) => Err(format!("cannot start a runtime for the plugin call: {e}")),
    })
}

/// A call thread's loop: take jobs until every sender is gone.
fn serve(runtime: &tokio::runtime::Runtime, receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(runtime),
            Err(_) => return,
        }
    }
}

/// The text of a caught panic.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".into()
    }
}
