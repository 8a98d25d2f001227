//! `nodewright trace`: generate a synthetic trace, or import a real
//! cluster's workload (kubectl snapshots, audit logs) into a version 2
//! trace.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use nodewright_core::sim::generate;
use nodewright_core::sim::import::{ImportOptions, Input, import};

#[derive(Debug, Subcommand)]
pub(crate) enum TraceCommand {
    /// Generate a trace: diurnal-web, batch-burst, ml-gpu, mixed, saas-week or batch-week.
    Generate {
        /// Kind of trace.
        kind: String,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Multiply pod counts by this.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Import a cluster's workload into a version 2 trace: snapshots
    /// (`kubectl get pods,pdb,daemonsets -A -o json > FILE`, several taken
    /// over time, oldest first; `FILE@2026-11-30T10:00:00Z` says when one
    /// was taken) and Kubernetes audit logs (JSON Lines), mixed freely.
    Import {
        /// Snapshots and audit logs.
        #[arg(required = true)]
        inputs: Vec<String>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// The trace's name [default: the output file's stem].
        #[arg(long)]
        name: Option<String>,
        /// How long the trace runs when the inputs do not span a time (a
        /// single snapshot): e.g. 24h, 7d.
        #[arg(long, default_value = "24h")]
        duration: String,
        /// Hash names and label values (well-known topology and instance
        /// keys excepted), keeping shapes.
        #[arg(long)]
        anonymize: bool,
        /// Keep this pod annotation (repeatable): the ones a NodePool's
        /// `spec.policy.podAnnotations` names.
        #[arg(long = "keep-annotation")]
        keep_annotations: Vec<String>,
    },
    /// Record a live cluster's pods, PodDisruptionBudgets and DaemonSets
    /// (through the kubeconfig or the in-cluster service account) into a
    /// version 2 trace, written as they change; stop it at any time.
    #[cfg(feature = "controller")]
    Record {
        /// How long to record: e.g. 24h, 7d.
        #[arg(long = "for", default_value = "24h")]
        duration: String,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// The trace's name [default: the output file's stem].
        #[arg(long)]
        name: Option<String>,
        /// Hash names and label values (well-known keys excepted).
        #[arg(long)]
        anonymize: bool,
        /// Keep this pod annotation (repeatable).
        #[arg(long = "keep-annotation")]
        keep_annotations: Vec<String>,
    },
    /// Record a live cluster: not in this build (see `--features controller`).
    #[cfg(not(feature = "controller"))]
    #[command(hide = true)]
    Record {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        rest: Vec<String>,
    },
}

pub(crate) fn run(command: TraceCommand) -> anyhow::Result<ExitCode> {
    match command {
        #[cfg(feature = "controller")]
        TraceCommand::Record { duration, out, name, anonymize, keep_annotations } => {
            let duration = parse_days(&duration).map_err(|e| anyhow::anyhow!("--for {e}"))?;
            anyhow::ensure!(
                duration.as_secs_f64() <= nodewright_core::sim::trace::MAX_TRACE_SECONDS && !duration.is_zero(),
                "--for must be positive and at most 366 days"
            );
            let name = name.unwrap_or_else(|| out.file_stem().and_then(|s| s.to_str()).unwrap_or("recorded").to_string());
            let options = ImportOptions { name, duration_s: duration.as_secs_f64(), anonymize, keep_annotations: keep_annotations.into_iter().collect() };
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let client = nodewright_kube::default_client().await.context("a Kubernetes client (kubeconfig or in-cluster)")?;
                eprintln!("recording to {} for {} s; Ctrl-C stops (the trace is valid whenever it stops)", out.display(), duration.as_secs());
                let stop = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                let recorded = super::record::record(client, nodewright_core::sim::import::Recorder::new(&options), duration, &out, stop).await?;
                println!("wrote {} ({} events over {:.0} s)", out.display(), recorded.lines, recorded.seconds);
                anyhow::Ok(ExitCode::SUCCESS)
            })
        }
        #[cfg(not(feature = "controller"))]
        TraceCommand::Record { .. } => anyhow::bail!(
            "`nodewright trace record` is not in this build: it needs the Kubernetes client, the `controller` feature; build it with \
             `cargo build --release -p nodewright --features controller`"
        ),
        TraceCommand::Generate { kind, seed, scale, out } => {
            anyhow::ensure!(
                scale.is_finite() && scale > 0.0 && scale <= nodewright_core::sim::trace::MAX_SCALE,
                "--scale {scale} must be a positive number no larger than {}",
                nodewright_core::sim::trace::MAX_SCALE
            );
            let text = generate(&kind, seed, scale).map_err(anyhow::Error::msg)?;
            std::fs::write(&out, &text).with_context(|| format!("{}: cannot write", out.display()))?;
            let pods = text.lines().filter(|l| l.contains("\"add\"")).count();
            println!("wrote {} ({pods} pods)", out.display());
            Ok(ExitCode::SUCCESS)
        }
        TraceCommand::Import { inputs, out, name, duration, anonymize, keep_annotations } => {
            let duration = parse_days(&duration).map_err(|e| anyhow::anyhow!("--duration {e}"))?;
            let inputs = inputs.iter().map(|arg| input(arg)).collect::<anyhow::Result<Vec<_>>>()?;
            let name = name.unwrap_or_else(|| out.file_stem().and_then(|s| s.to_str()).unwrap_or("imported").to_string());
            let options = ImportOptions {
                name,
                duration_s: duration.as_secs_f64(),
                anonymize,
                keep_annotations: keep_annotations.into_iter().collect::<BTreeSet<_>>(),
            };
            let started = std::time::Instant::now();
            let imported = import(&inputs, &options).map_err(anyhow::Error::msg)?;
            for note in &imported.notes {
                eprintln!("note: {note}");
            }
            std::fs::write(&out, &imported.text).with_context(|| format!("{}: cannot write", out.display()))?;
            println!(
                "wrote {} ({} pods, {} PodDisruptionBudgets, {} DaemonSets; {} notes) in {:.2} s",
                out.display(),
                imported.pods,
                imported.pdbs,
                imported.daemonsets,
                imported.notes.len(),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `24h`, `90m`, `7d`: the units of a NodePool's durations, plus days.
fn parse_days(text: &str) -> Result<std::time::Duration, String> {
    match text.strip_suffix('d') {
        Some(days) => {
            let days: u64 = days.parse().map_err(|_| format!("`{text}` is not a duration like 24h or 7d"))?;
            days.checked_mul(86_400).map(std::time::Duration::from_secs).ok_or_else(|| format!("`{text}` is too long"))
        }
        None => nodewright_core::model::quantity::parse_duration(text).map_err(|e| format!("`{text}`: {e}")),
    }
}

/// `FILE` or `FILE@TIME`.
fn input(arg: &str) -> anyhow::Result<Input> {
    let (path, taken_at) = match arg.rsplit_once('@') {
        Some((path, time)) if time.contains('T') => {
            let at = time.parse().map_err(|e| anyhow::anyhow!("{arg}: `{time}` is not an RFC 3339 time: {e}"))?;
            (path, Some(at))
        }
        _ => (arg, None),
    };
    let (file, text) = super::read_named(std::path::Path::new(path))?;
    Ok(Input { file, text, taken_at })
}
