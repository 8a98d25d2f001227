//! What a plugin instance lives in: WASI without capabilities, host-supplied
//! clock and randomness, a memory limiter, and log/stdout/stderr routed to
//! `tracing` under the plugin's name.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::glue;
use super::bindings::{v0_1_0, v0_2_0, v0_3_0};
use super::request::ConsolidationSnapshot;
use super::runtime::PluginClock;

/// Most bytes of log a plugin may write in one call (host `log`, stdout and
/// stderr together); the rest is dropped with one warning.
const LOG_BUDGET_PER_CALL: usize = 64 * 1024;
/// Longest line kept; longer lines are cut.
const MAX_LINE: usize = 4096;

/// The state a plugin's `Store` carries.
pub(crate) struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    plugin: Arc<str>,
    config: Arc<str>,
    log: Arc<LogBudget>,
    pub(crate) what_if: WhatIfContext,
    /// When the current call must be over; host imports refuse work past it.
    deadline: Option<std::time::Instant>,
}

/// What a `what-if` query may refer to during the current call.
#[derive(Default)]
pub(crate) struct WhatIfContext {
    /// The catalog of the call, in the plugin's contract form.
    pub(crate) catalog: Option<WhatIfCatalog>,
    /// The snapshot being planned, during a `plan` call.
    pub(crate) snapshot: Option<Arc<ConsolidationSnapshot>>,
    /// Price history of the call's fleet (contract 0.3.0), during a call.
    pub(crate) prices: Option<Arc<crate::policy::PriceHistory>>,
    /// Queries made in this call.
    pub(crate) queries: u32,
}

/// The catalog a `what-if` query reads, in the contract form of the
/// versions that have the query.
pub(crate) enum WhatIfCatalog {
    V0_2_0(Arc<v0_2_0::types::Catalog>),
    V0_3_0(Arc<v0_3_0::types::Catalog>),
}

impl WhatIfCatalog {
    fn len(&self) -> usize {
        match self {
            WhatIfCatalog::V0_2_0(c) => c.offerings.len(),
            WhatIfCatalog::V0_3_0(c) => c.offerings.len(),
        }
    }

    fn allocatable(&self, offering: u32) -> Option<crate::model::Resources> {
        match self {
            WhatIfCatalog::V0_2_0(c) => c.offerings.get(offering as usize).map(|o| glue::v0_2_0::from_resources(&o.allocatable)),
            WhatIfCatalog::V0_3_0(c) => c.offerings.get(offering as usize).map(|o| glue::v0_3_0::from_resources(&o.allocatable)),
        }
    }
}

/// Where the pods of a `what-if` query go, whatever the contract version.
enum FitTarget {
    Offering(u32),
    Nodes(Vec<u32>),
}

/// Most `what-if` queries one call may make.
const WHAT_IF_QUERIES_PER_CALL: u32 = 256;
/// Most pods one `what-if` query may carry.
const WHAT_IF_MAX_PODS: usize = 10_000;

/// Log budget shared by the host import and the output streams of one instance.
pub(crate) struct LogBudget {
    remaining: std::sync::atomic::AtomicUsize,
    warned: std::sync::atomic::AtomicBool,
}

impl LogBudget {
    fn new() -> Self {
        LogBudget {
            remaining: LOG_BUDGET_PER_CALL.into(),
            warned: false.into(),
        }
    }

    /// Take `n` bytes of budget; false (and one warning) when it is spent.
    fn take(&self, plugin: &str, n: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let ok = self
            .remaining
            .fetch_update(Relaxed, Relaxed, |left| left.checked_sub(n))
            .is_ok();
        if !ok && !self.warned.swap(true, Relaxed) {
            tracing::warn!(target: "nodewright::plugin", plugin, "log budget of {LOG_BUDGET_PER_CALL} bytes per call spent; dropping the rest");
        }
        ok
    }

    pub(crate) fn reset(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.remaining.store(LOG_BUDGET_PER_CALL, Relaxed);
        self.warned.store(false, Relaxed);
    }
}

impl PluginState {
    /// A fresh store for `plugin`: no preopened directories, no environment,
    /// no arguments, no network; clock and randomness from the host.
    pub(crate) fn store(
        engine: &wasmtime::Engine,
        plugin: Arc<str>,
        config: Arc<str>,
        clock: Arc<dyn PluginClock>,
        seed: u64,
        limits: &super::runtime::Limits,
    ) -> Store<PluginState> {
        let log = Arc::new(LogBudget::new());
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(PluginOutput { plugin: plugin.clone(), stream: Stream::Stdout, log: log.clone() })
            .stderr(PluginOutput { plugin: plugin.clone(), stream: Stream::Stderr, log: log.clone() })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(WallClock(clock.clone()))
            .monotonic_clock(MonotonicClock(clock))
            .secure_random(StdRng::seed_from_u64(seed))
            .insecure_random(StdRng::seed_from_u64(seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15))
            .insecure_random_seed(u128::from(seed) << 64 | u128::from(!seed));
        let state = PluginState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.memory_bytes),
            plugin,
            config,
            log,
            what_if: WhatIfContext::default(),
            deadline: None,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store
    }

    pub(crate) fn log_budget(&self) -> &LogBudget {
        &self.log
    }

    /// Set (or clear) the deadline of the call about to run.
    pub(crate) fn set_deadline(&mut self, deadline: Option<std::time::Instant>) {
        self.deadline = deadline;
    }

    /// An error for the plugin when the call's deadline has passed.
    fn check_deadline(&self, what: &str) -> Result<(), String> {
        match self.deadline {
            Some(deadline) if std::time::Instant::now() >= deadline => {
                Err(format!("{what} refused: the call's deadline has passed"))
            }
            _ => Ok(()),
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl PluginState {
    fn log_line(&mut self, level: tracing::Level, message: &str) {
        if self.log.take(&self.plugin, message.len()) {
            emit(&self.plugin, level, cut(message));
        }
    }
}

impl v0_1_0::host::Host for PluginState {
    fn log(&mut self, level: v0_1_0::host::Level, message: String) {
        self.log_line(glue::v0_1_0::level(level), &message);
    }

    fn config(&mut self) -> String {
        self.config.to_string()
    }
}

impl v0_2_0::host::Host for PluginState {
    fn log(&mut self, level: v0_2_0::host::Level, message: String) {
        self.log_line(glue::v0_2_0::level(level), &message);
    }

    fn config(&mut self) -> String {
        self.config.to_string()
    }

    fn what_if(&mut self, pods: Vec<v0_2_0::types::Resources>, target: v0_2_0::host::FitTarget) -> Result<Vec<u32>, String> {
        let pods = pods.iter().map(glue::v0_2_0::from_resources).collect();
        let target = match target {
            v0_2_0::host::FitTarget::Offering(o) => FitTarget::Offering(o),
            v0_2_0::host::FitTarget::Nodes(n) => FitTarget::Nodes(n),
        };
        self.fit(pods, target)
    }
}

impl v0_3_0::host::Host for PluginState {
    fn log(&mut self, level: v0_3_0::host::Level, message: String) {
        self.log_line(glue::v0_3_0::level(level), &message);
    }

    fn config(&mut self) -> String {
        self.config.to_string()
    }

    fn what_if(&mut self, pods: Vec<v0_3_0::types::Resources>, target: v0_3_0::host::FitTarget) -> Result<Vec<u32>, String> {
        let pods = pods.iter().map(glue::v0_3_0::from_resources).collect();
        let target = match target {
            v0_3_0::host::FitTarget::Offering(o) => FitTarget::Offering(o),
            v0_3_0::host::FitTarget::Nodes(n) => FitTarget::Nodes(n),
        };
        self.fit(pods, target)
    }

    fn price_history(&mut self, offering: u32) -> Result<Vec<v0_3_0::host::PricePoint>, String> {
        let mut points = Vec::new();
        self.price_points("price-history", &[offering], |_, at_seconds, price_per_hour| {
            points.push(v0_3_0::host::PricePoint { at_seconds, price_per_hour });
        })?;
        Ok(points)
    }

    fn price_histories(&mut self, offerings: Vec<u32>) -> Result<Vec<v0_3_0::host::OfferingPricePoint>, String> {
        let mut points = Vec::new();
        self.price_points("price-histories", &offerings, |offering, at_seconds, price_per_hour| {
            points.push(v0_3_0::host::OfferingPricePoint { offering, at_seconds, price_per_hour });
        })?;
        Ok(points)
    }
}

impl PluginState {
    /// Hand `point` every recorded price of each of `offerings`, in the
    /// order named, each offering's oldest first; nothing is handed over
    /// when one of them is out of range or too many are named.
    fn price_points(&self, import: &str, offerings: &[u32], mut point: impl FnMut(u32, u64, f64)) -> Result<(), String> {
        self.check_deadline(import)?;
        let prices = self.what_if.prices.as_ref().ok_or_else(|| format!("{import} is answered only during rank and plan"))?;
        let catalog = self.what_if.catalog.as_ref().ok_or("no catalog has been handed over")?;
        if offerings.len() > catalog.len() {
            return Err(format!("{import} names {} offerings, at most {} (the catalog's size)", offerings.len(), catalog.len()));
        }
        if let Some(&bad) = offerings.iter().find(|&&o| o as usize >= catalog.len()) {
            return Err(format!("offering index {bad} is out of range (the catalog has {} offerings)", catalog.len()));
        }
        for &offering in offerings {
            for &(at, price) in prices.of(offering) {
                point(offering, at, price);
            }
        }
        Ok(())
    }

    /// The `what-if` query of every version that has it.
    fn fit(&mut self, pods: Vec<crate::model::Resources>, target: FitTarget) -> Result<Vec<u32>, String> {
        self.what_if.queries = self.what_if.queries.saturating_add(1);
        if self.what_if.queries > WHAT_IF_QUERIES_PER_CALL {
            return Err(format!("what-if budget spent: at most {WHAT_IF_QUERIES_PER_CALL} queries per call"));
        }
        if pods.len() > WHAT_IF_MAX_PODS {
            return Err(format!("what-if query carries {} pods, at most {WHAT_IF_MAX_PODS}", pods.len()));
        }
        self.check_deadline("what-if")?;
        let catalog = self.what_if.catalog.as_ref().ok_or("no catalog has been handed over")?;
        let allocatable = |o: u32| -> Result<crate::model::Resources, String> {
            catalog.allocatable(o).ok_or_else(|| format!("offering index {o} is out of range (the catalog has {} offerings)", catalog.len()))
        };
        // (allocatable, requests already there) of each target node.
        let nodes: Vec<(crate::model::Resources, crate::model::Resources)> = match target {
            FitTarget::Offering(o) => vec![(allocatable(o)?, crate::model::Resources::default())],
            FitTarget::Nodes(indices) => {
                let snapshot = self.what_if.snapshot.as_ref().ok_or("`nodes` targets exist only during a plan call")?;
                if indices.len() > snapshot.nodes.len() {
                    return Err(format!(
                        "what-if names {} nodes, the snapshot has {}; each node may be named once",
                        indices.len(),
                        snapshot.nodes.len()
                    ));
                }
                let mut seen = vec![false; snapshot.nodes.len()];
                let mut nodes = Vec::with_capacity(indices.len());
                for i in indices {
                    match seen.get_mut(i as usize) {
                        Some(seen) if *seen => return Err(format!("what-if names node index {i} twice")),
                        Some(seen) => *seen = true,
                        None => {}
                    }
                    let node = snapshot.nodes.get(i as usize).ok_or_else(|| {
                        format!("node index {i} is out of range (the snapshot has {} nodes)", snapshot.nodes.len())
                    })?;
                    nodes.push((allocatable(node.offering)?, node.pods.iter().copied().sum()));
                }
                nodes
            }
        };
        let unplaced = crate::scheduling::requests::unplaced(&pods, &nodes);
        // The simulation's time is the call's: an answer computed past the
        // deadline is refused, and the guest is stopped at its next check.
        self.check_deadline("what-if")?;
        Ok(unplaced)
    }
}

fn emit(plugin: &str, level: tracing::Level, message: &str) {
    match level {
        tracing::Level::TRACE => tracing::trace!(target: "nodewright::plugin", plugin, "{message}"),
        tracing::Level::DEBUG => tracing::debug!(target: "nodewright::plugin", plugin, "{message}"),
        tracing::Level::INFO => tracing::info!(target: "nodewright::plugin", plugin, "{message}"),
        tracing::Level::WARN => tracing::warn!(target: "nodewright::plugin", plugin, "{message}"),
        _ => tracing::error!(target: "nodewright::plugin", plugin, "{message}"),
    }
}

fn cut(line: &str) -> &str {
    if line.len() <= MAX_LINE {
        return line;
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// Denies growth past one limit for the whole instance: every linear
/// memory and every table of the store count together (a table element as
/// [`TABLE_ELEMENT_BYTES`]), so a component cannot multiply the limit by
/// declaring many memories. The number of instances, memories and tables is
/// capped as well. Remembers what it refused, so a trap can be reported as
/// "memory limit" rather than a bare trap.
pub(crate) struct MemoryLimiter {
    limit_bytes: u64,
    held_bytes: u64,
    refused: Option<u64>,
}

/// What one table element is charged against the memory limit.
const TABLE_ELEMENT_BYTES: u64 = 16;
/// Most core instances one component instance may create.
pub(crate) const MAX_INSTANCES: usize = 200;
/// Most linear memories one component instance may hold.
pub(crate) const MAX_MEMORIES: usize = 16;
/// Most tables one component instance may hold.
pub(crate) const MAX_TABLES: usize = 200;

impl MemoryLimiter {
    fn new(limit_bytes: u64) -> Self {
        MemoryLimiter { limit_bytes, held_bytes: 0, refused: None }
    }

    /// The failure to report when growth was refused.
    pub(crate) fn failure(&self) -> Option<super::error::CallFailure> {
        self.refused.map(|requested_bytes| super::error::CallFailure::MemoryLimit { limit_bytes: self.limit_bytes, requested_bytes })
    }

    fn grow(&mut self, current: u64, desired: u64) -> wasmtime::Result<bool> {
        let added = desired.saturating_sub(current);
        let total = self.held_bytes.saturating_add(added);
        if total > self.limit_bytes {
            self.refused = Some(total);
            return Err(wasmtime::format_err!(
                "memory limit of {} MiB reached (the instance would hold {} MiB)",
                self.limit_bytes >> 20,
                total.div_ceil(1 << 20)
            ));
        }
        self.held_bytes = total;
        Ok(true)
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current as u64, desired as u64)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let bytes = |elements: usize| (elements as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        self.grow(bytes(current), bytes(desired))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// A plugin's stdout or stderr: each line becomes a `tracing` event.
#[derive(Clone)]
struct PluginOutput {
    plugin: Arc<str>,
    stream: Stream,
    log: Arc<LogBudget>,
}

/// One open handle on a [`PluginOutput`], holding an unfinished line.
struct OutputHandle {
    output: PluginOutput,
    partial: Vec<u8>,
}

impl OutputHandle {
    fn write_bytes(&mut self, bytes: &[u8]) {
        if !self.output.log.take(&self.output.plugin, bytes.len()) {
            return;
        }
        self.partial.extend_from_slice(bytes);
        while let Some(newline) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=newline).collect();
            self.emit_line(&line[..line.len() - 1]);
        }
        if self.partial.len() > MAX_LINE {
            let line = std::mem::take(&mut self.partial);
            self.emit_line(&line);
        }
    }

    fn emit_line(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let level = match self.output.stream {
            Stream::Stdout => tracing::Level::INFO,
            Stream::Stderr => tracing::Level::WARN,
        };
        emit(&self.output.plugin, level, cut(&text));
    }
}

impl Drop for OutputHandle {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.emit_line(&line);
        }
    }
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(OutputHandle { output: self.clone(), partial: Vec::new() })
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(OutputHandle { output: self.clone(), partial: Vec::new() })
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputHandle {
    async fn ready(&mut self) {}
}

impl OutputStream for OutputHandle {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for OutputHandle {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.get_mut().write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct WallClock(Arc<dyn PluginClock>);

impl HostWallClock for WallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        self.0.wall_since_epoch()
    }
}

struct MonotonicClock(Arc<dyn PluginClock>);

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.0.monotonic_nanos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PriceHistory;
    use crate::policy::bindings::glue;
    use v0_3_0::host::Host;

    /// A store as a 0.3.0 `rank` call sees it: the bundled catalog handed
    /// over, and a price history for offerings 1 and 3.
    fn in_a_call() -> (Store<PluginState>, usize) {
        let engine = wasmtime::Engine::default();
        let clock = Arc::new(crate::policy::runtime::SystemClock::default());
        let mut store = PluginState::store(&engine, "p".into(), "{}".into(), clock, 1, &super::super::runtime::Limits::default());
        let catalog = crate::model::Catalog::bundled();
        let points = std::collections::HashMap::from([(1, vec![(10, 0.5), (20, 0.75)]), (3, vec![(30, 2.0)])]);
        let state = store.data_mut();
        state.what_if.catalog = Some(WhatIfCatalog::V0_3_0(Arc::new(glue::v0_3_0::to_catalog(&catalog))));
        state.what_if.prices = Some(Arc::new(PriceHistory::from_points(catalog.version, points)));
        (store, catalog.offerings.len())
    }

    #[test]
    fn price_histories_answers_for_many_offerings_in_the_order_named() {
        let (mut store, _) = in_a_call();
        let points = store.data_mut().price_histories(vec![3, 2, 1]).unwrap();
        let flat: Vec<(u32, u64, f64)> = points.iter().map(|p| (p.offering, p.at_seconds, p.price_per_hour)).collect();
        assert_eq!(flat, [(3, 30, 2.0), (1, 10, 0.5), (1, 20, 0.75)]);
        let one: Vec<(u64, f64)> = store.data_mut().price_history(1).unwrap().iter().map(|p| (p.at_seconds, p.price_per_hour)).collect();
        assert_eq!(one, [(10, 0.5), (20, 0.75)]);
    }

    #[test]
    fn a_what_if_about_snapshot_nodes_counts_what_they_already_run_and_each_question_against_the_budget() {
        use crate::model::Resources;
        use crate::policy::request::SnapshotNode;
        let (mut store, _) = in_a_call();
        let catalog = crate::model::Catalog::bundled();
        let m5 = catalog.offerings.iter().position(|o| o.instance_type == "m5.large").unwrap() as u32;
        let all = catalog.offerings[m5 as usize].allocatable;
        let half = Resources { cpu_millis: all.cpu_millis / 2, memory_bytes: all.memory_bytes / 2, pods: 1, ..Resources::default() };
        let node = |pods: Vec<Resources>| SnapshotNode { name: "n".into(), offering: m5, age_seconds: 0, pods, facts: Vec::new(), disruptable: true };
        let snapshot = |second: Vec<Resources>| Some(Arc::new(ConsolidationSnapshot { nodes: vec![node(vec![half]), node(second)], ..Default::default() }));
        let ask = |store: &mut Store<PluginState>| store.data_mut().fit(vec![half, half], FitTarget::Nodes(vec![0, 1]));
        // Half of node 0 and all of node 1 are free: both pods fit.
        store.data_mut().what_if.snapshot = snapshot(Vec::new());
        assert_eq!(ask(&mut store), Ok(vec![]));
        // Node 1 fills up: one pod fits nowhere, though the question reads the same.
        store.data_mut().what_if.snapshot = snapshot(vec![half, half]);
        assert_eq!(ask(&mut store), Ok(vec![1]));
        // Each question counted against the call's budget.
        assert_eq!(store.data_mut().what_if.queries, 2);
    }

    #[test]
    fn price_histories_refuses_an_offering_out_of_range_too_many_offerings_and_a_call_outside_rank_and_plan() {
        let (mut store, len) = in_a_call();
        let past = u32::try_from(len).unwrap();
        assert_eq!(
            store.data_mut().price_histories(vec![1, past, 3]).unwrap_err(),
            format!("offering index {past} is out of range (the catalog has {len} offerings)")
        );
        assert_eq!(
            store.data_mut().price_histories(vec![1; len + 1]).unwrap_err(),
            format!("price-histories names {} offerings, at most {len} (the catalog's size)", len + 1)
        );
        store.data_mut().what_if.prices = None;
        assert_eq!(store.data_mut().price_histories(vec![1]).unwrap_err(), "price-histories is answered only during rank and plan");
        assert_eq!(store.data_mut().price_history(1).unwrap_err(), "price-history is answered only during rank and plan");
    }
}
