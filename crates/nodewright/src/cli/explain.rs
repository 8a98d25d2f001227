//! `nodewright explain`: why a NodeClaim was bought as it was, or why a
//! simulation decided what it did.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use nodewright_core::sim::decisions::Decision;

#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// A NodeClaim: in the cluster (the controller build reads its
    /// decision from the cluster), or in the report given.
    claim: Option<String>,
    /// A simulation's output directory (its `report.json`).
    #[arg(long)]
    report: Option<PathBuf>,
    /// The policy (a row of the report) [default: the first].
    #[arg(long)]
    policy: Option<String>,
    /// The seed, for a report of several.
    #[arg(long)]
    seed: Option<u64>,
    /// Decisions from this hour of the run on.
    #[arg(long)]
    hour: Option<f64>,
    /// How many decisions to print.
    #[arg(long, default_value_t = 10)]
    limit: usize,
}

pub(crate) fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    match &args.report {
        Some(dir) => {
            let text = report(dir, &args)?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        None => cluster(&args),
    }
}

/// What `explain --report` prints.
fn report(dir: &std::path::Path, args: &ExplainArgs) -> anyhow::Result<String> {
    let path = dir.join("report.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let report: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not a report", path.display()))?;
    // One seed: the report; several: its `runs`.
    let runs: Vec<&serde_json::Value> = match report.get("runs").and_then(|r| r.as_array()) {
        Some(runs) => runs.iter().collect(),
        None => vec![&report],
    };
    let run = match args.seed {
        Some(seed) => runs
            .iter()
            .find(|r| r["seed"].as_u64() == Some(seed))
            .with_context(|| format!("{}: no run of seed {seed}", path.display()))?,
        None => runs.first().with_context(|| format!("{}: no run", path.display()))?,
    };
    let policies = run["policies"].as_array().with_context(|| format!("{}: policies: missing", path.display()))?;
    let names: Vec<&str> = policies.iter().filter_map(|p| p["policy"]["name"].as_str()).collect();
    let policy = match &args.policy {
        Some(name) => policies
            .iter()
            .find(|p| p["policy"]["name"].as_str() == Some(name))
            .with_context(|| format!("{}: no policy {name} (it has {})", path.display(), names.join(", ")))?,
        None => policies.first().with_context(|| format!("{}: no policy", path.display()))?,
    };
    let name = policy["policy"]["name"].as_str().unwrap_or("?");
    let log = &policy["decisions"];
    let decisions: Vec<Decision> = serde_json::from_value(log["kept"].clone())
        .with_context(|| format!("{}: policy {name}: decisions: not a decision log (a report from an older build?)", path.display()))?;
    let total = log["total"].as_u64().unwrap_or(decisions.len() as u64);
    let chosen: Vec<&Decision> = decisions
        .iter()
        .filter(|d| args.claim.as_deref().is_none_or(|c| d.concerns(c)))
        .filter(|d| args.hour.is_none_or(|h| d.hour >= h))
        .take(args.limit)
        .collect();
    let mut out = format!("policy {name}: {} decisions kept of {total}\n", decisions.len());
    if chosen.is_empty() {
        match &args.claim {
            Some(claim) => anyhow::bail!(
                "{}: policy {name}: no decision about NodeClaim {claim} among the {} kept (of {total})",
                path.display(),
                decisions.len()
            ),
            None => out += "no decision matches\n",
        }
    }
    for d in chosen {
        out += &d.render();
        out.push('\n');
    }
    Ok(out)
}

#[cfg(feature = "controller")]
fn cluster(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let claim = args.claim.clone().context("name a NodeClaim, or give --report DIR")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let text = runtime.block_on(async {
        let client = nodewright_kube::default_client().await.context("a Kubernetes client (kubeconfig or in-cluster)")?;
        from_cluster(client, &claim).await
    })?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "controller"))]
fn cluster(_: &ExplainArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "explaining a NodeClaim in a cluster needs the Kubernetes client, the `controller` feature (build with \
         `cargo build --release -p nodewright --features controller`); `--report DIR` explains a simulation"
    )
}

/// What `explain CLAIM` prints for a NodeClaim of the cluster `client` talks to.
#[cfg(feature = "controller")]
pub(crate) async fn from_cluster(client: kube::Client, claim: &str) -> anyhow::Result<String> {
    use nodewright_core::provisioning::explain::{DECISION_ANNOTATION, LaunchExplanation};
    let api: kube::Api<nodewright_kube::crd::NodeClaim> = kube::Api::all(client);
    let object = api.get_opt(claim).await.with_context(|| format!("read NodeClaim {claim}"))?.with_context(|| format!("NodeClaim {claim} does not exist"))?;
    let annotation = object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DECISION_ANNOTATION))
        .with_context(|| format!("NodeClaim {claim} has no {DECISION_ANNOTATION} annotation (not launched by nodewright's provisioner)"))?;
    let explanation: LaunchExplanation =
        serde_json::from_str(annotation).with_context(|| format!("NodeClaim {claim}: metadata.annotations.{DECISION_ANNOTATION}: not a decision"))?;
    let mut out = explanation.render();
    let disruption = object.metadata.annotations.as_ref().and_then(|a| a.get(nodewright_core::disruption::explain::DISRUPTION_ANNOTATION));
    if let Some(text) = disruption {
        let why: nodewright_core::disruption::DisruptionExplanation = serde_json::from_str(text)
            .with_context(|| format!("NodeClaim {claim}: metadata.annotations.{}: not a disruption", nodewright_core::disruption::explain::DISRUPTION_ANNOTATION))?;
        out += &format!("  being disrupted: {}", why.render());
    }
    let conditions = object.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    for c in conditions.iter().filter(|c| c.status == "True" && matches!(c.type_.as_str(), "Drifted" | "Consolidatable" | "Empty" | "DisruptionReason")) {
        out += &format!("  now {}: {}\n", c.type_, c.reason);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewright_core::model::{Catalog, NodePool, PolicyRef, Requirement};
    use nodewright_core::sim::{PolicyUnderTest, Report, SimulationConfig, generate, parse_trace, simulate};

    fn args(claim: Option<&str>) -> ExplainArgs {
        ExplainArgs { claim: claim.map(String::from), report: None, policy: None, seed: None, hour: None, limit: 3 }
    }

    #[test]
    fn a_simulation_explains_its_launches_and_disruptions_from_its_report() {
        let trace = parse_trace("burst", &generate("batch-burst", 2, 0.1).unwrap()).unwrap();
        let mut pool = NodePool::new("default");
        pool.requirements.push(Requirement::is_in("karpenter.sh/capacity-type", &["on-demand"]));
        pool.consolidate_after = Some(std::time::Duration::from_secs(60));
        let policy = PolicyUnderTest {
            name: "cheapest".into(),
            selection: PolicyRef { plugin: "cheapest".into(), config: "{}".into() },
            consolidation: PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
        };
        let cache = tempfile::tempdir().unwrap();
        let config = SimulationConfig { cache_dir: Some(cache.path().into()), ..SimulationConfig::default() };
        let result = simulate(&trace, &policy, &[pool], std::sync::Arc::new(Catalog::bundled()), &config, |_| {}).unwrap();
        let log = &result.decisions;
        assert!(log.total >= log.kept.len() as u64 && !log.kept.is_empty());
        let launch = log.kept.iter().find_map(|d| d.launch.as_ref()).expect("a launch is explained");
        assert_eq!(launch.policy.plugin, "cheapest");
        assert_eq!(launch.policy.contract.as_deref(), Some("0.1.0"));
        assert!(launch.policy.digest.as_ref().is_some_and(|d| d.starts_with("sha256:") && d.len() == 71), "{launch:?}");
        assert!(launch.chosen.offering.contains(" on-demand "), "{launch:?}");
        // The cheapest offerings that could hold the pods are spot: each says why it lost.
        assert_eq!(launch.alternatives.len(), 5);
        assert!(
            launch.alternatives.iter().all(|a| a.price_per_hour <= launch.chosen.price_per_hour || a.why.starts_with("ranked #")),
            "{launch:#?}"
        );
        assert!(
            launch.alternatives.iter().any(|a| a.why == "excluded by NodePool default's requirement karpenter.sh/capacity-type In [on-demand]"),
            "{launch:#?}"
        );
        let disruption = log.kept.iter().find_map(|d| d.disruption.as_ref()).expect("a disruption is explained");
        assert_eq!(disruption.rules.len(), 10);
        assert_eq!(disruption.rules[0].rule, "nodes");

        let dir = tempfile::tempdir().unwrap();
        let report = Report { trace: "burst".into(), seed: 1, hours: 24.0, policies: vec![result.clone()] };
        std::fs::write(dir.path().join("report.json"), report.to_json()).unwrap();
        let explain = |claim: Option<&str>| report_for(dir.path(), claim);
        let text = explain(Some(&launch.claim)).unwrap();
        assert!(text.starts_with(&format!("policy cheapest: {} decisions kept of {}\nat ", log.kept.len(), log.total)), "{text}");
        assert!(text.contains(&format!("NodeClaim {} (NodePool default)\n  decided by cheapest (plugin), contract 0.1.0, sha256 ", launch.claim)), "{text}");
        assert!(text.contains("  not     "), "{text}");
        let err = explain(Some("default-nosuch")).unwrap_err().to_string();
        assert!(err.ends_with(&format!("policy cheapest: no decision about NodeClaim default-nosuch among the {} kept (of {})", log.kept.len(), log.total)), "{err}");
        let first = explain(None).unwrap();
        assert_eq!(first.matches("\nat ").count(), 3, "--limit 3: {first}");
    }

    fn report_for(dir: &std::path::Path, claim: Option<&str>) -> anyhow::Result<String> {
        report(dir, &ExplainArgs { report: Some(dir.into()), ..args(claim) })
    }
}
