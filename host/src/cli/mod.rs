//! The `nodewright` command line.

mod compare;
mod plugin;

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
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bundled policies side by side on a bundled sample request and print their choices.
    Compare(compare::CompareArgs),
    /// Inspect, check and benchmark policy plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
}

/// Parse the command line, run the command, and turn its result into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_json);
    let result = match cli.command {
        Command::Compare(args) => compare::run(args),
        Command::Plugin(command) => plugin::run(command),
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
