//! `nodewright simulate`, `compare` and `trace generate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use nodewright_core::model::{Catalog, NodePool, PolicyRef, parse_commitments, parse_price_overrides};
use nodewright_core::policy::BUILTIN_SELECTION;
use nodewright_core::sim::{PolicyUnderTest, Report, SeedReport, SimulationConfig, parse_trace, write_charts};

/// The bundled week-long `mixed` trace.
const BUNDLED_TRACE: &str = include_str!("../../../../examples/traces/mixed.jsonl");
/// Path shown for it.
const BUNDLED_TRACE_NAME: &str = "examples/traces/mixed.jsonl";
/// Policies compared when none are named: the selection policies with
/// Karpenter's consolidation, then the consolidators with `cheapest`.
const DEFAULT_POLICIES: [&str; 9] = [
    BUILTIN_SELECTION,
    "cheapest",
    "spot-savvy",
    "graviton-first",
    "on-demand-only",
    "cheapest+empty-only",
    "cheapest+utilization-threshold",
    "cheapest+savings-threshold",
    "cheapest+balanced",
];

/// Scenarios bundled with the binary: (name, trace, NodePools, commitments).
const SCENARIOS: [(&str, &str, &str, Option<&str>); 2] = [
    (
        "saas-week",
        include_str!("../../../../examples/scenarios/saas-week/trace.jsonl"),
        include_str!("../../../../examples/scenarios/saas-week/nodepools.yaml"),
        Some(include_str!("../../../../examples/scenarios/saas-week/commitments.yaml")),
    ),
    (
        "batch-week",
        include_str!("../../../../examples/scenarios/batch-week/trace.jsonl"),
        include_str!("../../../../examples/scenarios/batch-week/nodepools.yaml"),
        None,
    ),
];

/// The inputs of a scenario, each as (name shown in errors, text).
#[derive(Debug, Default)]
struct Scenario {
    trace: Option<(String, String)>,
    nodepools: Option<(String, String)>,
    commitments: Option<(String, String)>,
    prices: Option<(String, String)>,
}

/// `--scenario`: a bundled name or a directory holding `trace.jsonl` and
/// optionally `nodepools.yaml`, `commitments.yaml` and `prices.yaml`.
fn scenario(name: &str) -> anyhow::Result<Scenario> {
    if let Some((n, trace, pools, commitments)) = SCENARIOS.iter().find(|s| s.0 == name) {
        let shown = |file: &str| format!("examples/scenarios/{n}/{file}");
        return Ok(Scenario {
            trace: Some((shown("trace.jsonl"), trace.to_string())),
            nodepools: Some((shown("nodepools.yaml"), pools.to_string())),
            commitments: commitments.map(|c| (shown("commitments.yaml"), c.to_string())),
            prices: None,
        });
    }
    let dir = Path::new(name);
    if !dir.is_dir() {
        anyhow::bail!(
            "--scenario {name}: neither a bundled scenario ({}) nor a directory",
            SCENARIOS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
        );
    }
    let optional = |file: &str| -> anyhow::Result<Option<(String, String)>> {
        let path = dir.join(file);
        if path.exists() { super::read_named(&path).map(Some) } else { Ok(None) }
    };
    let trace = optional("trace.jsonl")?;
    anyhow::ensure!(trace.is_some(), "--scenario {name}: the directory has no trace.jsonl");
    Ok(Scenario { trace, nodepools: optional("nodepools.yaml")?, commitments: optional("commitments.yaml")?, prices: optional("prices.yaml")? })
}

#[derive(Debug, Args)]
pub(crate) struct SimulationArgs {
    /// A scenario: `saas-week` or `batch-week` (bundled) or a directory with `trace.jsonl`
    /// and optionally `nodepools.yaml`, `commitments.yaml`, `prices.yaml`;
    /// `--trace`, `--nodepools`, `--commitments` and `--prices` override its files.
    #[arg(long)]
    scenario: Option<String>,
    /// Trace (JSON Lines) [default: the bundled week-long `mixed` trace].
    #[arg(long)]
    trace: Option<PathBuf>,
    /// NodePools (YAML) [default: one NodePool `default` allowing every offering].
    #[arg(long)]
    nodepools: Option<PathBuf>,
    /// Price overrides (YAML).
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Savings Plans and Reserved Instances the bill applies (YAML; see the
    /// README): adds the effective $ to the table and `report.json`.
    #[arg(long)]
    commitments: Option<PathBuf>,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 1, conflicts_with = "seeds")]
    seed: u64,
    /// Run every policy on several seeds and report mean ± spread: a count
    /// (`5`: seeds 1 to 5) or a list (`1,2,7`), at most 100 seeds.
    #[arg(long, value_parser = parse_seeds)]
    seeds: Option<Seeds>,
    /// Simulations run at once [default: the cores available].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    jobs: Option<u16>,
    /// Report directory (report.json, SVG charts).
    #[arg(long, default_value = "nodewright-report")]
    out: PathBuf,
    /// No spot interruptions.
    #[arg(long)]
    no_interruptions: bool,
    /// Multiply spot interruption rates by this (0 to 100).
    #[arg(long, default_value = "1", value_parser = parse_interruption_scale)]
    interruption_scale: f64,
    /// Replace a node on a rebalance recommendation, as on an interruption
    /// warning (`rebalanceActionable` in `nodewright run`'s config); otherwise it is recorded only.
    #[arg(long)]
    rebalance_actionable: bool,
    /// Node boot latency range in seconds, `MIN-MAX` (at most a day).
    #[arg(long, default_value = "30-90", value_parser = parse_range)]
    boot_latency: (Duration, Duration),
    /// Print the report JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Policy: `SELECTION[+CONSOLIDATION]`, each a bundled plugin,
    /// `karpenter-like`, or a component file (consolidation defaults to
    /// `karpenter-like`).
    #[arg(long, default_value = "cheapest")]
    policy: String,
    #[command(flatten)]
    common: SimulationArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// Policies (repeat), each `SELECTION[+CONSOLIDATION]` of bundled
    /// plugins, component files or `karpenter-like` (consolidation defaults
    /// to `karpenter-like`); `karpenter-like` is always added as the baseline
    /// [default: karpenter-like, cheapest, spot-savvy, graviton-first,
    /// on-demand-only, then cheapest with empty-only,
    /// utilization-threshold, savings-threshold and balanced].
    #[arg(long = "policy")]
    policies: Vec<String>,
    #[command(flatten)]
    common: SimulationArgs,
}

pub(crate) fn simulate(args: SimulateArgs, runtime: &super::RuntimeArgs) -> anyhow::Result<ExitCode> {
    run(vec![args.policy], args.common, runtime)
}

pub(crate) fn compare(args: CompareArgs, runtime: &super::RuntimeArgs) -> anyhow::Result<ExitCode> {
    let mut policies = if args.policies.is_empty() {
        DEFAULT_POLICIES.iter().map(|p| p.to_string()).collect()
    } else {
        args.policies
    };
    if !policies.iter().any(|p| p == BUILTIN_SELECTION) {
        policies.insert(0, BUILTIN_SELECTION.into());
    }
    run(policies, args.common, runtime)
}

fn policy_of(spec: &str) -> PolicyUnderTest {
    let (selection, consolidation) = spec.split_once('+').unwrap_or((spec, BUILTIN_SELECTION));
    let label = |name: &str| -> String {
        Path::new(name).file_stem().and_then(|s| s.to_str()).filter(|_| name.ends_with(".wasm")).unwrap_or(name).to_string()
    };
    let name = if spec.contains('+') { format!("{}+{}", label(selection), label(consolidation)) } else { label(selection) };
    PolicyUnderTest {
        name,
        selection: PolicyRef { plugin: selection.into(), config: "{}".into() },
        consolidation: PolicyRef { plugin: consolidation.into(), config: "{}".into() },
    }
}

fn run(policies: Vec<String>, args: SimulationArgs, runtime: &super::RuntimeArgs) -> anyhow::Result<ExitCode> {
    let scenario = match &args.scenario {
        Some(name) => scenario(name)?,
        None => Scenario::default(),
    };
    // A flag names a file; else the scenario's; else the default.
    let input = |flag: &Option<PathBuf>, from_scenario: Option<(String, String)>| -> anyhow::Result<Option<(String, String)>> {
        match flag {
            Some(path) => super::read_named(path).map(Some),
            None => Ok(from_scenario),
        }
    };
    let (trace_name, text) =
        input(&args.trace, scenario.trace)?.unwrap_or_else(|| (BUNDLED_TRACE_NAME.to_string(), BUNDLED_TRACE.to_string()));
    let trace = parse_trace(&trace_name, &text)?;
    for note in &trace.notes {
        eprintln!("note: {note}");
    }
    let (pools, kubelets) = match input(&args.nodepools, scenario.nodepools)? {
        Some((name, text)) => {
            let file = nodewright_core::model::parse_node_pool_file(&name, &text)?;
            for note in &file.notes {
                eprintln!("note: {note}");
            }
            anyhow::ensure!(!file.pools.is_empty(), "{name}: no NodePool in it");
            let mut kubelets = file.kubelets;
            for pool in &file.pools {
                if let Some(class) = pool.node_class.as_ref().filter(|c| !kubelets.is_empty() && !kubelets.contains_key(*c)) {
                    eprintln!("note: {name}: NodePool {}: EC2NodeClass {class} is not in the file; its nodes are sized with the default kubelet settings", pool.name);
                    kubelets.insert(class.clone(), Default::default());
                }
            }
            (file.pools, kubelets)
        }
        None => {
            let mut pool = NodePool::new("default");
            pool.consolidate_after = Some(Duration::from_secs(60));
            (vec![pool], Default::default())
        }
    };
    let mut catalog = Catalog::bundled();
    if let Some((name, text)) = input(&args.prices, scenario.prices)? {
        catalog = catalog.with_overrides(&parse_price_overrides(&name, &text)?);
    }
    let commitments = match input(&args.commitments, scenario.commitments)? {
        Some((name, text)) => {
            let commitments = parse_commitments(&name, &text)?;
            // Capacity reservations are offerings of their own.
            catalog = catalog
                .with_reservations(&commitments.capacity_reservations)
                .map_err(|(i, message)| anyhow::anyhow!("{name}: capacityReservations[{i}]: {message}"))?;
            commitments
        }
        None => Default::default(),
    };
    // Each node class's kubelet settings size its NodePools' nodes (the
    // instance facts are read again only when a file names some).
    let catalog = if kubelets.is_empty() {
        catalog
    } else {
        catalog.with_kubelets(&nodewright_core::model::bundled_instance_types(), &Default::default(), &kubelets)
    };
    let boot = args.boot_latency;
    let config = SimulationConfig {
        commitments,
        seed: args.seed,
        boot_latency: boot,
        interruptions: !args.no_interruptions,
        interruption_scale: args.interruption_scale,
        rebalance_actionable: args.rebalance_actionable,
        limits: runtime.limits(),
        cache_dir: runtime.cache_dir.clone().or(SimulationConfig::default().cache_dir),
        ..SimulationConfig::default()
    };
    let catalog = Arc::new(catalog);
    let seeds = args.seeds.clone().map_or_else(|| vec![args.seed], |s| s.0);
    let policies: Vec<PolicyUnderTest> = policies.iter().map(|p| policy_of(p)).collect();
    // Every (seed, policy) is a world of its own: run them on as many
    // threads as there are cores; the results come back in order.
    let jobs: Vec<(u64, &PolicyUnderTest)> = seeds.iter().flat_map(|&seed| policies.iter().map(move |p| (seed, p))).collect();
    let threads = args.jobs.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), usize::from).min(jobs.len()).max(1);
    let bars = indicatif::MultiProgress::new();
    if args.quiet {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let outcomes: Vec<std::sync::Mutex<Option<anyhow::Result<nodewright_core::sim::SimulationResult>>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(seed, policy)) = jobs.get(i) else { break };
                    let label = if seeds.len() > 1 { format!("{} #{seed}", policy.name) } else { policy.name.clone() };
                    let bar = bars.add(progress_bar(&label));
                    let config = SimulationConfig { seed, ..config.clone() };
                    let result = nodewright_core::sim::simulate(&trace, policy, &pools, catalog.clone(), &config, |done| {
                        bar.set_position((done * 1000.0) as u64)
                    });
                    bar.finish_and_clear();
                    let failed = result.is_err();
                    *outcomes[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                    if failed {
                        // Stop handing out work; the first error is reported.
                        next.store(jobs.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let mut results = Vec::new();
    for outcome in outcomes {
        match outcome.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(result) => results.push(result?),
            None => anyhow::bail!("a simulation did not run because an earlier one failed"),
        }
    }
    let hours = trace.duration_s / 3600.0;
    let runs: Vec<Report> = results
        .chunks(policies.len())
        .zip(&seeds)
        .map(|(chunk, &seed)| Report { trace: trace.name.clone(), seed, hours, policies: chunk.to_vec() })
        .collect();
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}: cannot create", args.out.display()))?;
    let json_path = args.out.join("report.json");
    // Tables a terminal of TABLE_WIDTH columns shows unwrapped.
    let (json, tables, whole) = match runs.as_slice() {
        [report] => (report.to_json(), report.tables(TABLE_WIDTH), report.table()),
        _ => {
            let summary = SeedReport::new(&runs);
            (summary.to_json(), summary.tables(TABLE_WIDTH), summary.table())
        }
    };
    std::fs::write(&json_path, &json).with_context(|| format!("{}: cannot write", json_path.display()))?;
    let charts = write_charts(&runs[0], &args.out)?;
    let timelines: Vec<nodewright_core::sim::timeline::Timeline> = runs[0]
        .policies
        .iter()
        .map(|p| nodewright_core::sim::timeline::Timeline {
            policy: p.policy.name.clone(),
            selection: p.policy.selection.plugin.clone(),
            consolidation: p.policy.consolidation.plugin.clone(),
            frames: p.timeline.clone(),
        })
        .collect();
    std::fs::write(args.out.join("timeline.json"), serde_json::to_string(&timelines)? + "\n")?;
    let command = if policies.len() == 1 { "simulate" } else { "compare" };
    let html = nodewright_core::sim::html::write_html(&args.out, &format!("nodewright {command}: {}", trace.name), &whole, &charts, &runs[0])?;
    let timing = serde_json::json!({
        "seconds": elapsed.as_secs_f64(),
        "threads": threads,
        "runs": runs.iter().flat_map(|r| r.policies.iter().map(move |p| serde_json::json!({"policy": p.policy.name, "seed": r.seed, "plugin_ms": p.plugin_ms}))).collect::<Vec<_>>(),
    });
    std::fs::write(args.out.join("timing.json"), serde_json::to_string_pretty(&timing)? + "\n")?;
    if args.json {
        print!("{json}");
    } else {
        let seeds_text = match seeds.as_slice() {
            [seed] => format!("seed {seed}"),
            many => format!("seeds {} (mean ± standard deviation)", many.iter().map(u64::to_string).collect::<Vec<_>>().join(",")),
        };
        println!(
            "{} ({:.0} h, {} events), {seeds_text}: simulated in {:.1} s on {threads} threads",
            trace_name,
            hours,
            trace.events.len(),
            elapsed.as_secs_f64()
        );
        for table in tables {
            println!("{table}");
        }
        println!("wrote {}", json_path.display());
        println!("wrote {}", html.display());
        for chart in charts {
            println!("wrote {}{}", chart.display(), if seeds.len() > 1 { format!(" (seed {})", seeds[0]) } else { String::new() });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The width the tables of `simulate` and `compare` keep within: the
/// policies are split over as many tables as that takes.
const TABLE_WIDTH: usize = 120;

/// Most seeds one `--seeds` runs.
const MAX_SEEDS: usize = 100;

/// The seeds of `--seeds`.
#[derive(Debug, Clone, PartialEq)]
struct Seeds(Vec<u64>);

/// `--seeds`: `N` (seeds 1 to N) or a comma-separated list, at most 100.
fn parse_seeds(text: &str) -> Result<Seeds, String> {
    let seeds: Vec<u64> = if text.contains(',') {
        text.split(',').map(|s| s.trim().parse::<u64>().map_err(|_| format!("--seeds `{text}`: `{s}` is not a seed"))).collect::<Result<_, _>>()?
    } else {
        let n: u64 = text.trim().parse().map_err(|_| format!("--seeds `{text}` is neither a count nor a list like 1,2,3"))?;
        if n > MAX_SEEDS as u64 {
            return Err(format!("--seeds `{text}` names {n} seeds; at most {MAX_SEEDS}"));
        }
        (1..=n).collect()
    };
    match seeds.len() {
        0 => Err(format!("--seeds `{text}` names no seed")),
        n if n > MAX_SEEDS => Err(format!("--seeds `{text}` names {n} seeds; at most {MAX_SEEDS}")),
        _ => {
            let mut unique = seeds.clone();
            unique.sort_unstable();
            unique.dedup();
            if unique.len() != seeds.len() { Err(format!("--seeds `{text}` names a seed twice")) } else { Ok(Seeds(seeds)) }
        }
    }
}

/// The longest boot latency accepted: a day.
const MAX_BOOT_SECONDS: f64 = 86_400.0;

/// `--boot-latency MIN-MAX`, in seconds.
fn parse_range(text: &str) -> Result<(Duration, Duration), String> {
    let parse = |t: &str| t.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
    match text.split_once('-').map(|(a, b)| (parse(a), parse(b))) {
        Some((Some(low), Some(high))) if low <= high && high <= MAX_BOOT_SECONDS => Ok((
            nodewright_core::model::quantity::checked_seconds(low)?,
            nodewright_core::model::quantity::checked_seconds(high)?,
        )),
        Some((Some(_), Some(high))) if high > MAX_BOOT_SECONDS => {
            Err(format!("--boot-latency `{text}`: the upper bound is longer than a day ({MAX_BOOT_SECONDS} s)"))
        }
        _ => Err(format!("--boot-latency `{text}` is not a range of seconds like 30-90")),
    }
}

/// `--interruption-scale`: a finite factor from 0 to 100.
fn parse_interruption_scale(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(scale) if (0.0..=100.0).contains(&scale) => Ok(scale),
        _ => Err(format!("`{text}` is not a factor from 0 to 100")),
    }
}

fn progress_bar(name: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>16} [{bar:40}] {percent:>3}% {elapsed}").expect("valid template").progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    bar
}
