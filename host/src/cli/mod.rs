//! The `nodewright` command line.

mod bench;
mod metrics;
mod plugin;
mod run;
mod sample;
mod scaffold;
mod simulate;

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
    /// CPU deadline of one `rank` call, in milliseconds.
    #[arg(long, global = true, default_value_t = 50)]
    selection_timeout_ms: u64,
    /// CPU deadline of one `plan` call (and of a catalog hand-over), in milliseconds.
    #[arg(long, global = true, default_value_t = 500)]
    consolidation_timeout_ms: u64,
    /// Linear memory limit of a plugin instance, in MiB.
    #[arg(long, global = true, default_value_t = 128)]
    memory_limit_mib: u64,
    /// Directory of compiled components [default: $NODEWRIGHT_CACHE_DIR, else ~/.cache/nodewright/components].
    #[arg(long, global = true)]
    cache_dir: Option<std::path::PathBuf>,
}

impl RuntimeArgs {
    /// The runtime these settings describe.
    pub(crate) fn runtime(&self) -> anyhow::Result<crate::policy::PolicyRuntime> {
        let defaults = crate::policy::RuntimeConfig::default();
        crate::policy::PolicyRuntime::new(crate::policy::RuntimeConfig {
            cache_dir: self.cache_dir.clone().or(defaults.cache_dir.clone()),
            limits: self.limits(),
            ..defaults
        })
    }

    /// The plugin limits these settings describe.
    pub(crate) fn limits(&self) -> crate::policy::Limits {
        use std::time::Duration;
        crate::policy::Limits {
            selection_timeout: Duration::from_millis(self.selection_timeout_ms),
            consolidation_timeout: Duration::from_millis(self.consolidation_timeout_ms),
            memory_bytes: self.memory_limit_mib << 20,
            ..crate::policy::Limits::default()
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
    Trace(simulate::TraceCommand),
    /// Inspect, check and benchmark policy plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Benchmarks of the controllers.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run the autoscaler in a cluster (leader-elected; health and metrics
    /// on --listen).
    Run(run::RunArgs),
    /// Print the CustomResourceDefinitions (YAML).
    Crds,
}

/// Parse the command line, run the command, and turn its result into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_json);
    let result = match cli.command {
        Command::Compare(args) => simulate::compare(args, &cli.runtime),
        Command::Simulate(args) => simulate::simulate(args, &cli.runtime),
        Command::Trace(command) => simulate::trace(command),
        Command::Plugin(command) => plugin::run(command, &cli.runtime),
        Command::Bench(command) => bench::run(command, &cli.runtime),
        Command::Run(args) => run::run(args, &cli.runtime),
        Command::Crds => {
            print!("{}", crate::cluster::kube::crd::crds_yaml());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
