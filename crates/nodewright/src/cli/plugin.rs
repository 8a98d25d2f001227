//! `nodewright plugin check | bench | list`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use nodewright_core::model::{Catalog, Resources};
use nodewright_core::policy::{
    ConformanceReport, Plugin, PluginInfo, SelectionRequest, bundled, cheapest_ranking,
};

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Load a component, print what it is, and run the conformance suite.
    /// Exits 1 with the reason when it cannot serve as a policy.
    Check(CheckArgs),
    /// Measure nanoseconds per `rank` call, plugin against the native cheapest policy.
    Bench(BenchArgs),
    /// List the bundled plugins.
    List,
    /// Rank one sample request with every bundled selection plugin, side by side.
    Sample(super::sample::SampleArgs),
    /// Create a plugin project (Rust, Python or JavaScript) that builds with
    /// one command and passes `plugin check` as generated.
    New(super::scaffold::NewArgs),
    /// Write a bundled plugin's component to a file.
    Export {
        /// Bundled plugin name (see `plugin list`).
        name: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The component (`.wasm`, or `.wat` text).
    file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The plugin's config JSON.
    #[arg(long, default_value = "{}")]
    config: String,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The component (`.wasm`).
    file: PathBuf,
    /// Feasible offerings per request.
    #[arg(long, default_value_t = 1000)]
    offerings: usize,
    /// How long to measure each side.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    time: Duration,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The plugin's config JSON.
    #[arg(long, default_value = "{}")]
    config: String,
}

/// `--time`: a duration like 2s or 500ms, at most an hour.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len()));
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 2s or 500ms"))?;
    let seconds = match unit {
        "s" | "" => value,
        "ms" => value / 1000.0,
        _ => return Err(format!("`{text}`: unit must be s or ms")),
    };
    if seconds > 3600.0 {
        return Err(format!("`{text}` is longer than an hour"));
    }
    nodewright_core::model::quantity::checked_seconds(seconds).map_err(|m| format!("`{text}` {m}"))
}

pub(crate) fn run(command: PluginCommand, runtime: &super::RuntimeArgs) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Check(args) => check(args, runtime),
        PluginCommand::Bench(args) => bench(args, runtime),
        PluginCommand::Sample(args) => super::sample::run(args, runtime),
        PluginCommand::New(args) => super::scaffold::new(args),
        PluginCommand::List => {
            for (name, bytes) in bundled::ALL {
                println!("{name:16} {:>8} bytes", bytes.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Export { name, out } => {
            let bytes = bundled::get(&name).with_context(|| format!("no bundled plugin named `{name}` (see `plugin list`)"))?;
            std::fs::write(&out, bytes).with_context(|| format!("{}: cannot write", out.display()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Serialize)]
struct CheckReport<'a> {
    file: String,
    ok: bool,
    error: Option<String>,
    plugin: Option<&'a PluginInfo>,
    conformance: Option<&'a ConformanceReport>,
}

fn check(args: CheckArgs, runtime: &super::RuntimeArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime.runtime()?;
    let file = args.file.display().to_string();
    let loaded = Plugin::from_file(&runtime, &args.file, &args.config);
    let (plugin, error) = match &loaded {
        Ok(plugin) => (Some(plugin), plugin.check_conformance().err().map(|e| e.to_string())),
        Err(e) => (None, Some(e.to_string())),
    };
    let report = CheckReport {
        file,
        ok: error.is_none(),
        error,
        plugin: plugin.map(|p| p.info()),
        conformance: plugin.map(|p| p.conformance()),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_check(&report);
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_check(report: &CheckReport<'_>) {
    if let Some(info) = report.plugin {
        println!("plugin     {}", report.file);
        println!("digest     {}", info.digest);
        println!("size       {} bytes", info.size_bytes);
        println!("world      {}", info.world.name());
        println!("contract   nodewright:policy@{}", info.contract.as_str());
        println!("exports    {}", info.exports.join(", "));
        println!("imports    {}", info.imports.len());
        println!(
            "load       {:.1} ms ({})",
            info.load_time.as_secs_f64() * 1e3,
            if info.compiled { "compiled" } else { "from cache" }
        );
    }
    if let Some(conformance) = report.conformance {
        println!("conformance");
        for check in &conformance.checks {
            let outcome = match &check.failure {
                None => "ok  ".to_string(),
                Some(failure) => format!("FAIL {failure} —"),
            };
            println!("  {outcome} {} ({:.2} ms)", check.name, check.duration.as_secs_f64() * 1e3);
        }
    }
    match &report.error {
        None => println!("result     ok"),
        Some(error) => eprintln!("error: {error}"),
    }
}

#[derive(Serialize)]
struct BenchReport {
    file: String,
    offerings: usize,
    wasm_ns_per_call: f64,
    native_ns_per_call: f64,
    wasm_calls: u64,
    native_calls: u64,
    instantiate_ns: f64,
    load_ms: f64,
    compiled: bool,
    /// Size of the component.
    size_bytes: usize,
}

/// Calls `f` for about `budget` after a warm-up and returns (ns per call, calls).
fn measure(budget: Duration, mut f: impl FnMut()) -> (f64, u64) {
    for _ in 0..100 {
        f();
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < budget {
        for _ in 0..64 {
            f();
        }
        calls += 64;
    }
    (started.elapsed().as_nanos() as f64 / calls as f64, calls)
}

fn bench(args: BenchArgs, runtime: &super::RuntimeArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime.runtime()?;
    let plugin = Plugin::from_file(&runtime, &args.file, &args.config)?;
    anyhow::ensure!(plugin.info().world.selects(), "{}: does not export instance-selection, nothing to bench", args.file.display());
    let catalog = Catalog::bundled_sample(args.offerings);
    let request = SelectionRequest {
        node_pool: "bench".into(),
        pods: vec![Resources::pod(250, 512 << 20)],
        total: Resources::pod(250, 512 << 20),
        feasible: (0..catalog.offerings.len() as u32).collect(),
        // A 0.3.0 plugin reads the conformance suite's fleet (commitments
        // half used, reservations, recent failures); older ones ignore it.
        fleet: nodewright_core::policy::sample_fleet(&catalog),
        ..SelectionRequest::default()
    };
    let first = plugin.rank(&catalog, &request).map_err(|f| anyhow::anyhow!("{}: rank {f}", args.file.display()))?;
    anyhow::ensure!(!first.is_empty() || request.feasible.is_empty(), "{}: ranks no offering", args.file.display());
    let mut failure = None;
    let (wasm_ns, wasm_calls) = measure(args.time, || {
        if let Err(f) = plugin.rank(&catalog, &request) {
            failure.get_or_insert(f);
        }
    });
    if let Some(f) = failure {
        anyhow::bail!("{}: rank {f}", args.file.display());
    }
    let (native_ns, native_calls) = measure(args.time, || {
        std::hint::black_box(cheapest_ranking(&catalog, std::hint::black_box(&request)));
    });
    let started = Instant::now();
    let rounds = 50;
    for _ in 0..rounds {
        plugin.instantiate_fresh().map_err(|f| anyhow::anyhow!("{}: {f}", args.file.display()))?;
    }
    let report = BenchReport {
        file: args.file.display().to_string(),
        offerings: catalog.offerings.len(),
        wasm_ns_per_call: wasm_ns.round(),
        native_ns_per_call: native_ns.round(),
        wasm_calls,
        native_calls,
        instantiate_ns: (started.elapsed().as_nanos() as f64 / rounds as f64).round(),
        load_ms: plugin.info().load_time.as_secs_f64() * 1e3,
        compiled: plugin.info().compiled,
        size_bytes: plugin.info().size_bytes,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("plugin        {}", report.file);
        println!("size          {} bytes", report.size_bytes);
        println!("offerings     {}", report.offerings);
        println!("wasm          {:>10.0} ns/call ({} calls)", report.wasm_ns_per_call, report.wasm_calls);
        println!("native        {:>10.0} ns/call ({} calls)", report.native_ns_per_call, report.native_calls);
        println!("instantiate   {:>10.0} ns", report.instantiate_ns);
        println!("load          {:>10.2} ms ({})", report.load_ms, if report.compiled { "compiled" } else { "from cache" });
    }
    Ok(ExitCode::SUCCESS)
}
