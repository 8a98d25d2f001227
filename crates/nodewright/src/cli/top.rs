//! `nodewright top`: the nodes of a cluster in a terminal, in the manner of
//! eks-node-viewer — type, capacity type, zone, $/h, CPU and memory request
//! bars, pods; the cluster's $/h and $/month, pending pods, the policy of
//! each NodePool. It watches a cluster (the controller build), or replays
//! a simulation's `timeline.json` with a time cursor.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};

use nodewright_core::sim::timeline::{Frame, NodeRow, Timeline};

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// Replay a simulation's output directory (its `timeline.json`)
    /// instead of watching the cluster.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The policy to replay [default: the first].
    #[arg(long)]
    policy: Option<String>,
    /// Start the replay at this hour.
    #[arg(long, default_value_t = 0.0)]
    at: f64,
    /// Print one frame and exit (no terminal control).
    #[arg(long)]
    once: bool,
    /// Seconds between two reads of the cluster.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
}

/// Hours in a month, as AWS bills them.
const HOURS_PER_MONTH: f64 = 730.0;

pub(crate) fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    match &args.report {
        Some(dir) => replay(dir, &args),
        None => live(&args),
    }
}

/// A request bar: `████░░░░░░  40%`.
fn bar(used: u64, total: u64, width: usize) -> String {
    let ratio = if total == 0 { 0.0 } else { (used as f64 / total as f64).clamp(0.0, 1.0) };
    let filled = (ratio * width as f64).round() as usize;
    format!("{}{} {:>3.0}%", "█".repeat(filled), "░".repeat(width - filled), ratio * 100.0)
}

fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width { format!("{text:width$}") } else { text.chars().take(width.saturating_sub(1)).collect::<String>() + "…" }
}

/// The screen for `frame`: `title`, then the totals, the NodePools'
/// policies, and a row per node, at most `height` lines of `width`.
pub(crate) fn render(frame: &Frame, title: &str, policies: &[String], width: usize, height: usize) -> Vec<String> {
    let mut lines = vec![cut(title, width)];
    let per_hour = frame.dollars_per_hour();
    let (spot, on_demand) = frame.nodes.iter().fold((0, 0), |(s, o), n| if n.capacity_type == "spot" { (s + 1, o) } else { (s, o + 1) });
    lines.push(cut(
        &format!(
            "{} nodes ({on_demand} on-demand, {spot} spot)   ${per_hour:.4}/h   ${:.2}/month   {} pods pending",
            frame.nodes.len(),
            per_hour * HOURS_PER_MONTH,
            frame.pending
        ),
        width,
    ));
    for p in policies {
        lines.push(cut(p, width));
    }
    lines.push(String::new());
    let bar_width = if width >= 130 { 16 } else { 8 };
    lines.push(cut(
        &format!("{:<24} {:<14} {:<9} {:<11} {:>8}  {:<w$} {:<w$} {:>4}", "NODE", "TYPE", "CAPACITY", "ZONE", "$/H", "CPU", "MEMORY", "PODS", w = bar_width + 5),
        width,
    ));
    let mut nodes: Vec<&NodeRow> = frame.nodes.iter().collect();
    nodes.sort_by(|a, b| a.node_pool.cmp(&b.node_pool).then(a.name.cmp(&b.name)));
    let room = height.saturating_sub(lines.len());
    let shown = if nodes.len() > room { room.saturating_sub(1) } else { nodes.len() };
    for n in &nodes[..shown] {
        lines.push(cut(
            &format!(
                "{:<24} {:<14} {:<9} {:<11} {:>8.4}  {} {} {:>4}",
                cut(&n.name, 24),
                cut(&n.instance_type, 14),
                n.capacity_type,
                n.zone,
                n.price_per_hour,
                bar(n.cpu_requested_m, n.cpu_allocatable_m, bar_width),
                bar(n.memory_requested_mib, n.memory_allocatable_mib, bar_width),
                n.pods
            ),
            width,
        ));
    }
    if shown < nodes.len() {
        lines.push(format!("… {} more nodes (a taller terminal shows them)", nodes.len() - shown));
    }
    lines
}

/// Restores the terminal however the view ends.
struct Screen;

impl Screen {
    fn enter() -> anyhow::Result<Self> {
        crossterm::terminal::enable_raw_mode().context("the terminal (raw mode)")?;
        crossterm::execute!(std::io::stdout(), crossterm::terminal::EnterAlternateScreen, crossterm::cursor::Hide)?;
        Ok(Screen)
    }

    fn draw(&self, lines: &[String]) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        crossterm::queue!(out, crossterm::terminal::Clear(crossterm::terminal::ClearType::All), crossterm::cursor::MoveTo(0, 0))?;
        for (i, line) in lines.iter().enumerate() {
            crossterm::queue!(out, crossterm::cursor::MoveTo(0, u16::try_from(i).unwrap_or(u16::MAX)))?;
            write!(out, "{line}")?;
        }
        out.flush()?;
        Ok(())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = crossterm::execute!(std::io::stdout(), crossterm::cursor::Show, crossterm::terminal::LeaveAlternateScreen);
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

fn size() -> (usize, usize) {
    crossterm::terminal::size().map(|(w, h)| (usize::from(w), usize::from(h))).unwrap_or((120, 40))
}

/// A key, if one is pressed within `wait`.
fn key(wait: Duration) -> anyhow::Result<Option<KeyEvent>> {
    if crossterm::event::poll(wait)?
        && let Event::Key(k) = crossterm::event::read()?
    {
        return Ok(Some(k));
    }
    Ok(None)
}

fn quits(k: &KeyEvent) -> bool {
    matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))
}

/// The frames of `dir/timeline.json` for `policy`.
fn load(dir: &std::path::Path, policy: Option<&str>) -> anyhow::Result<Timeline> {
    let path = dir.join("timeline.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read (written by compare and simulate)", path.display()))?;
    let timelines: Vec<Timeline> = serde_json::from_str(&text).with_context(|| format!("{}: not a timeline", path.display()))?;
    let names: Vec<&str> = timelines.iter().map(|t| t.policy.as_str()).collect();
    let chosen = match policy {
        Some(p) => timelines.iter().position(|t| t.policy == p).with_context(|| format!("{}: no policy {p} (it has {})", path.display(), names.join(", ")))?,
        None => 0,
    };
    let timeline = timelines.into_iter().nth(chosen).with_context(|| format!("{}: no policy", path.display()))?;
    anyhow::ensure!(!timeline.frames.is_empty(), "{}: policy {}: no frames", path.display(), timeline.policy);
    Ok(timeline)
}

fn replay(dir: &std::path::Path, args: &TopArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.at.is_finite() && args.at >= 0.0, "--at {} must be an hour of the run, 0 or more", args.at);
    let timeline = load(dir, args.policy.as_deref())?;
    let last = timeline.frames.len() - 1;
    let mut cursor = timeline.frames.iter().position(|f| f.hour >= args.at).unwrap_or(last);
    let pools: std::collections::BTreeSet<&str> = timeline.frames.iter().flat_map(|f| f.nodes.iter().map(|n| n.node_pool.as_str())).collect();
    let policies: Vec<String> =
        pools.iter().map(|p| format!("NodePool {p}: selection {}, consolidation {}", timeline.selection, timeline.consolidation)).collect();
    let title = |cursor: usize| {
        format!(
            "nodewright top: replay of {} (policy {}), hour {:.0} of {:.0}   ←/→ an hour  PgUp/PgDn a day  q quits",
            dir.display(),
            timeline.policy,
            timeline.frames[cursor].hour,
            timeline.frames[last].hour
        )
    };
    if args.once {
        let (width, height) = (160, usize::MAX);
        println!("{}", render(&timeline.frames[cursor], &title(cursor), &policies, width, height).join("\n"));
        return Ok(ExitCode::SUCCESS);
    }
    let screen = Screen::enter()?;
    loop {
        let (width, height) = size();
        screen.draw(&render(&timeline.frames[cursor], &title(cursor), &policies, width, height))?;
        let Some(k) = key(Duration::from_secs(3600))? else { continue };
        if quits(&k) {
            break;
        }
        cursor = match k.code {
            KeyCode::Right | KeyCode::Char('l') => (cursor + 1).min(last),
            KeyCode::Left | KeyCode::Char('h') => cursor.saturating_sub(1),
            KeyCode::PageDown => (cursor + 24).min(last),
            KeyCode::PageUp => cursor.saturating_sub(24),
            KeyCode::Home => 0,
            KeyCode::End => last,
            _ => cursor,
        };
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "controller"))]
fn live(_: &TopArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "watching a cluster needs the Kubernetes client, the `controller` feature (build with \
         `cargo build --release -p nodewright --features controller`); `--report DIR` replays a simulation"
    )
}

#[cfg(feature = "controller")]
fn live(args: &TopArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    let catalog = nodewright_core::model::Catalog::bundled();
    let started = std::time::Instant::now();
    runtime.block_on(async {
        let client = nodewright_kube::default_client().await.context("a Kubernetes client (kubeconfig or in-cluster)")?;
        let title = "nodewright top: the cluster, read every few seconds   q quits".to_string();
        if args.once {
            let (frame, policies) = from_cluster(&client, &catalog, started).await?;
            println!("{}", render(&frame, &title, &policies, 160, usize::MAX).join("\n"));
            return Ok(ExitCode::SUCCESS);
        }
        let screen = Screen::enter()?;
        loop {
            let (width, height) = size();
            let lines = match from_cluster(&client, &catalog, started).await {
                Ok((frame, policies)) => render(&frame, &title, &policies, width, height),
                Err(e) => vec![title.clone(), format!("reading the cluster failed: {e:#}; retrying")],
            };
            screen.draw(&lines)?;
            let interval = Duration::from_secs(args.interval);
            let pressed = tokio::task::block_in_place(|| key(interval))?;
            if pressed.as_ref().is_some_and(quits) {
                break;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The cluster now: its nodes with their prices (the bundled catalog, by
/// type, zone and capacity type), requests and pods; pending pods; each
/// NodePool's policies.
#[cfg(feature = "controller")]
pub(crate) async fn from_cluster(
    client: &kube::Client,
    catalog: &nodewright_core::model::Catalog,
    started: std::time::Instant,
) -> anyhow::Result<(Frame, Vec<String>)> {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use nodewright_core::model::{k8s, well_known};
    let list = kube::api::ListParams::default();
    let nodes = kube::Api::<Node>::all(client.clone()).list(&list).await.context("list nodes")?;
    let pods = kube::Api::<Pod>::all(client.clone()).list(&list).await.context("list pods")?;
    let keep = Default::default();
    let mut frame = Frame { hour: started.elapsed().as_secs_f64() / 3600.0, ..Frame::default() };
    let mut on_node: std::collections::HashMap<String, (nodewright_core::model::Resources, u32)> = Default::default();
    for p in &pods.items {
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        if phase == "Succeeded" || phase == "Failed" {
            continue;
        }
        let Some(spec) = p.spec.as_ref() else { continue };
        match &spec.node_name {
            Some(node) => {
                let entry = on_node.entry(node.clone()).or_default();
                entry.0 = entry.0.saturating_add(k8s::pod_spec(&p.metadata, spec, &keep).requests);
                entry.1 += 1;
            }
            None => frame.pending += 1,
        }
    }
    for n in &nodes.items {
        let labels = n.metadata.labels.clone().unwrap_or_default();
        let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let (instance_type, zone, capacity_type) = (label(well_known::INSTANCE_TYPE), label(well_known::ZONE), label(well_known::CAPACITY_TYPE));
        let price = catalog
            .offerings
            .iter()
            .find(|o| o.instance_type == instance_type && o.zone == zone && o.capacity_type.label() == capacity_type)
            .map_or(0.0, |o| o.price_per_hour);
        let allocatable = k8s::node_resources(n.status.as_ref().and_then(|s| s.allocatable.as_ref()));
        let name = n.metadata.name.clone().unwrap_or_default();
        let (used, count) = on_node.get(&name).copied().unwrap_or_default();
        let pool = labels.get("karpenter.sh/nodepool").or_else(|| labels.get(well_known::NODE_POOL)).cloned().unwrap_or_else(|| "-".into());
        frame.nodes.push(NodeRow {
            name,
            node_pool: pool,
            instance_type,
            capacity_type,
            zone,
            price_per_hour: price,
            cpu_requested_m: used.cpu_millis.into(),
            cpu_allocatable_m: allocatable.cpu_millis.into(),
            memory_requested_mib: used.memory_bytes >> 20,
            memory_allocatable_mib: allocatable.memory_bytes >> 20,
            pods: count,
        });
    }
    // Each NodePool's policies, as its spec names them.
    let pools = kube::Api::<nodewright_kube::crd::NodePool>::all(client.clone()).list(&list).await.map(|l| l.items).unwrap_or_default();
    let plugin = |spec: &serde_json::Map<String, serde_json::Value>, slot: &str| {
        spec.get("policy").and_then(|p| p.get(slot)).and_then(|s| s.get("plugin")).and_then(|p| p.as_str()).unwrap_or("karpenter-like").to_string()
    };
    let policies = pools
        .iter()
        .map(|p| format!("NodePool {}: selection {}, consolidation {}", p.metadata.name.as_deref().unwrap_or(""), plugin(&p.spec.spec, "selection"), plugin(&p.spec.spec, "consolidation")))
        .collect();
    Ok((frame, policies))
}
