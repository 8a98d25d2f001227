//! The one `Engine` of the process, its `Linker`, the epoch ticker that
//! bounds CPU time, and the settings every plugin call runs under.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::{v0_1_0, v0_2_0, v0_3_0};
use super::cache::ComponentCache;
use super::executor::CallThreads;
use super::sandbox::PluginState;

/// How long one epoch tick lasts; deadlines are whole ticks.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Bounds on every plugin call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Deadline of a `rank` call, guest and host time together.
    pub selection_timeout: Duration,
    /// Deadline of a `plan` call (and of starting an instance or handing
    /// over a catalog), guest and host time together.
    pub consolidation_timeout: Duration,
    /// Most bytes an instance may hold in all its memories and tables.
    pub memory_bytes: u64,
    /// Consecutive failed calls after which a slot rolls back.
    pub rollback_after: u32,
    /// Calls the failure-rate rule looks back over.
    pub rollback_window: u32,
    /// A slot also rolls back once more than this percentage of the last
    /// `rollback_window` calls failed (a plugin failing one call in five
    /// never fails three in a row).
    pub rollback_failure_percent: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            selection_timeout: Duration::from_millis(50),
            consolidation_timeout: Duration::from_millis(500),
            memory_bytes: 128 << 20,
            rollback_after: 3,
            rollback_window: 50,
            rollback_failure_percent: 10,
        }
    }
}

/// The clock a plugin sees through WASI: the real one in production, a
/// virtual one in the simulator so a run replays bit for bit.
pub trait PluginClock: Send + Sync {
    /// Wall-clock time since the Unix epoch.
    fn wall_since_epoch(&self) -> Duration;
    /// Monotonic nanoseconds from an arbitrary origin.
    fn monotonic_nanos(&self) -> u64;
}

/// The machine's clock.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock { origin: Instant::now() }
    }
}

impl PluginClock for SystemClock {
    fn wall_since_epoch(&self) -> Duration {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
    }

    fn monotonic_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// How to build a [`PolicyRuntime`].
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are kept; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Call bounds.
    pub limits: Limits,
    /// The clock plugins see.
    pub clock: Arc<dyn PluginClock>,
    /// Seed of the randomness plugins see; each instance derives its own.
    pub seed: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: default_cache_dir(),
            limits: Limits::default(),
            clock: Arc::new(SystemClock::default()),
            seed: 0x6e6f_6465_7772_6974,
        }
    }
}

/// `$NODEWRIGHT_CACHE_DIR`, else `$XDG_CACHE_HOME/nodewright/components`,
/// else `$HOME/.cache/nodewright/components`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("NODEWRIGHT_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("nodewright").join("components"))
}

/// Compilations and cache use since the runtime started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Components compiled by Cranelift.
    pub compiled: u64,
    /// Components loaded from the on-disk cache, no compilation.
    pub disk_hits: u64,
    /// Components found already loaded in this process.
    pub memory_hits: u64,
    /// Artefacts written to the disk cache.
    pub writes: u64,
    /// Cache entries found unusable and replaced.
    pub discarded: u64,
}

/// The Wasm runtime: one engine, one linker, one cache. Cheap to clone.
#[derive(Clone)]
pub struct PolicyRuntime {
    pub(crate) inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    pub(crate) calls: CallThreads,
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<PluginState>,
    pub(crate) cache: ComponentCache,
    pub(crate) config: RuntimeConfig,
    pub(crate) instances_created: AtomicU64,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl PolicyRuntime {
    /// A runtime with `config`.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let mut wasm = Config::new();
        // Calls are async (`call_async`): a blocking WASI call (sleep, poll)
        // suspends the call instead of the thread, so the call's deadline can
        // end it. CPU-bound code is ended by the epoch deadline.
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed)
            .max_wasm_stack(512 * 1024);
        let engine = Engine::new(&wasm)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        v0_1_0::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        v0_2_0::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        v0_3_0::host::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        let cache = ComponentCache::new(&engine, config.cache_dir.clone())?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.weak(), ticker_stop.clone())?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        let calls = CallThreads::start(threads)?;
        Ok(PolicyRuntime {
            inner: Arc::new(RuntimeInner {
                calls,
                engine,
                linker,
                cache,
                config,
                instances_created: AtomicU64::new(0),
                ticker_stop,
            }),
        })
    }

    /// The call bounds.
    pub fn limits(&self) -> Limits {
        self.inner.config.limits
    }

    /// Compilation and cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Instances created so far, across all plugins.
    pub fn instances_created(&self) -> u64 {
        self.inner.instances_created.load(Ordering::Relaxed)
    }

    /// Deadline in epoch ticks for a timeout (saturating: a deadline too
    /// far away to count in ticks is as good as none).
    pub(crate) fn ticks(timeout: Duration) -> u64 {
        u64::try_from(timeout.as_micros() / TICK.as_micros()).unwrap_or(u64::MAX).max(1)
    }
}

/// Advances the engine's epoch every [`TICK`] until the runtime is dropped.
fn spawn_ticker(engine: wasmtime::EngineWeak, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("nodewright-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(drop)
}
