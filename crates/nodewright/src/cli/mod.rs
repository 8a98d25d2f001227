//! The `nodewright` command line.

mod bench;
mod explain;
#[cfg(feature = "controller")]
mod metrics;
#[cfg(feature = "controller")]
mod nodeclasses;
mod plugin;
#[cfg(feature = "controller")]
mod record;
#[cfg(feature = "controller")]
mod run;
mod sample;
mod scaffold;
mod top;
mod simulate;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Kubernetes node autoscaler for AWS with WebAssembly policy plugins.
#[derive(Debug, Parser)]
#[command(name = "nodewright", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `nodewright::plugin=debug`.
    #[arg(long, global = true, default_value = "warn", env = "NODEWRIGHT_LOG")]
    log: String,
    /// Write logs as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// Settings of the Wasm runtime every command that runs plugins uses.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RuntimeArgs {
    /// Deadline of one `rank` call (guest and host time), in milliseconds (1 to 600000).
    #[arg(long, global = true, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    selection_timeout_ms: u64,
    /// Deadline of one `plan` call (and of a catalog hand-over), in milliseconds (1 to 600000).
    #[arg(long, global = true, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    consolidation_timeout_ms: u64,
    /// Memory limit of a plugin instance (all its memories and tables), in MiB (1 to 65536).
    #[arg(long, global = true, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    memory_limit_mib: u64,
    /// Roll a slot back once more than this percentage of its last
    /// `--rollback-window` calls failed (0 to 100).
    #[arg(long, global = true, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    rollback_failure_percent: u32,
    /// Calls the failure-rate rollback looks back over (1 to 100000).
    #[arg(long, global = true, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rollback_window: u32,
    /// Directory of compiled components [default: $NODEWRIGHT_CACHE_DIR, else ~/.cache/nodewright/components].
    #[arg(long, global = true)]
    cache_dir: Option<std::path::PathBuf>,
}

impl RuntimeArgs {
    /// The runtime these settings describe.
    pub(crate) fn runtime(&self) -> anyhow::Result<nodewright_core::policy::PolicyRuntime> {
        let defaults = nodewright_core::policy::RuntimeConfig::default();
        nodewright_core::policy::PolicyRuntime::new(nodewright_core::policy::RuntimeConfig {
            cache_dir: self.cache_dir.clone().or(defaults.cache_dir.clone()),
            limits: self.limits(),
            ..defaults
        })
    }

    /// The plugin limits these settings describe.
    pub(crate) fn limits(&self) -> nodewright_core::policy::Limits {
        use std::time::Duration;
        nodewright_core::policy::Limits {
            selection_timeout: Duration::from_millis(self.selection_timeout_ms),
            consolidation_timeout: Duration::from_millis(self.consolidation_timeout_ms),
            memory_bytes: self.memory_limit_mib << 20,
            rollback_failure_percent: self.rollback_failure_percent,
            rollback_window: self.rollback_window,
            ..nodewright_core::policy::Limits::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate several policies side by side on a workload trace (with no
    /// arguments: the bundled policies on the bundled week-long `mixed` trace).
    Compare(simulate::CompareArgs),
    /// Simulate one policy on a workload trace.
    Simulate(simulate::SimulateArgs),
    /// Workload traces.
    #[command(subcommand)]
    Trace(trace::TraceCommand),
    /// Why a NodeClaim was bought as it was (in the cluster, or in a
    /// simulation's report), or what a simulation decided and why.
    Explain(explain::ExplainArgs),
    /// The nodes in a terminal: type, capacity type, zone, $/h, request
    /// bars, pods (a cluster, or a simulation replayed with a time cursor).
    Top(top::TopArgs),
    /// Inspect, check and benchmark policy plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Benchmarks of the controllers.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run the autoscaler in a cluster (leader-elected; health and metrics
    /// on --listen).
    #[cfg(feature = "controller")]
    Run(run::RunArgs),
    /// Print the CustomResourceDefinitions (YAML).
    #[cfg(feature = "controller")]
    Crds,
    /// Run the autoscaler in a cluster: not in this build (see `--features controller`).
    #[cfg(not(feature = "controller"))]
    #[command(name = "run", disable_help_flag = true)]
    RunNotBuilt {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
    /// Print the CustomResourceDefinitions: not in this build (see `--features controller`).
    #[cfg(not(feature = "controller"))]
    #[command(name = "crds", disable_help_flag = true)]
    CrdsNotBuilt {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
}

/// Why `run` and `crds` are missing from a build without the controller.
#[cfg(not(feature = "controller"))]
fn not_built(command: &str) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "`nodewright {command}` is not in this build: the controller (EC2, SQS and the Kubernetes client) is the \
         `controller` feature; build it with `cargo build --release -p nodewright --features controller`"
    )
}

/// Parse the command line, run the command, and turn its result into an exit code.
/// Run the command line; `batch` is called first for a command that runs
/// to completion (anything but `run`), to tune the process for throughput.
pub fn main(batch: fn()) -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_json);
    #[cfg(feature = "controller")]
    let long_lived = matches!(cli.command, Command::Run(_));
    #[cfg(not(feature = "controller"))]
    let long_lived = false;
    if !long_lived {
        batch();
    }
    let result = match cli.command {
        Command::Compare(args) => simulate::compare(args, &cli.runtime),
        Command::Simulate(args) => simulate::simulate(args, &cli.runtime),
        Command::Trace(command) => trace::run(command),
        Command::Explain(args) => explain::run(args),
        Command::Top(args) => top::run(args),
        Command::Plugin(command) => plugin::run(command, &cli.runtime),
        Command::Bench(command) => bench::run(command, &cli.runtime),
        #[cfg(feature = "controller")]
        Command::Run(args) => run::run(args, &cli.runtime),
        #[cfg(feature = "controller")]
        Command::Crds => {
            print!("{}", nodewright_kube::crd::crds_yaml());
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(not(feature = "controller"))]
        Command::RunNotBuilt { .. } => not_built("run"),
        #[cfg(not(feature = "controller"))]
        Command::CrdsNotBuilt { .. } => not_built("crds"),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A file the user named: its name as errors show it, and its text.
pub(crate) fn read_named(path: &std::path::Path) -> anyhow::Result<(String, String)> {
    use anyhow::Context;
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("{name}: cannot read"))?;
    Ok((name, text))
}

/// A reader that stops early (`nodewright compare | head -3`) closes the
/// pipe; like other command-line tools, nodewright then stops quietly with
/// success instead of reporting a failed print. Every other panic keeps
/// the default report.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: invalid log filter `{filter}` ({e}); using `warn`");
        tracing_subscriber::EnvFilter::new("warn")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The stateful API server the kube-rs tests use.
#[cfg(all(test, feature = "controller"))]
#[path = "../../../nodewright-kube/tests/support/apiserver.rs"]
pub(crate) mod test_apiserver;
