//! `nodewright plugin sample`: the bundled selection policies side by side
//! on one sample request, and the consolidation plugin on a sample snapshot.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use nodewright_core::model::{Catalog, Resources};
use nodewright_core::policy::{
    DecidedBy, Plugin, SelectionRequest, bundled, cheapest_ranking, full_catalog, sample_snapshot,
};

#[derive(Debug, Args)]
pub(crate) struct SampleArgs {
    /// How many offerings to show per policy.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Choice {
    rank: usize,
    instance_type: String,
    capacity_type: String,
    zone: String,
    price_per_hour: f64,
    score: f64,
}

#[derive(Serialize)]
struct PolicyRow {
    policy: String,
    decided_by: String,
    choices: Vec<Choice>,
}

/// The sample: three web pods of 1 vCPU / 2 GiB in NodePool `default`,
/// which allows instance generations above 4 in zone us-east-1a.
fn sample_request(catalog: &Catalog) -> SelectionRequest {
    let mut request = nodewright_core::policy::selection_request(catalog, vec![Resources::pod(1000, 2 << 30); 3]);
    request.feasible.retain(|&i| {
        let o = &catalog.offerings[i as usize];
        o.generation > 4 && o.zone == "us-east-1a"
    });
    request
}

pub(crate) fn run(args: SampleArgs, runtime: &super::RuntimeArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime.runtime()?;
    let catalog = full_catalog();
    let request = sample_request(catalog);
    let describe = |entries: Vec<(u32, f64)>| -> Vec<Choice> {
        entries
            .into_iter()
            .enumerate()
            .map(|(rank, (index, score))| {
                let o = &catalog.offerings[index as usize];
                Choice {
                    rank: rank + 1,
                    instance_type: o.instance_type.clone(),
                    capacity_type: serde_json::to_value(o.capacity_type).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
                    zone: o.zone.clone(),
                    price_per_hour: o.price_per_hour,
                    score,
                }
            })
            .collect()
    };
    let mut rows = vec![PolicyRow {
        policy: "karpenter-like".into(),
        decided_by: "native".into(),
        choices: describe(cheapest_ranking(catalog, &request).best(args.top)),
    }];
    let mut consolidators = Vec::new();
    for (name, bytes) in bundled::ALL {
        let plugin = Arc::new(Plugin::load(&runtime, name, bytes, "{}")?);
        if plugin.info().world.consolidates() {
            consolidators.push(plugin.clone());
        }
        if !plugin.info().world.selects() {
            continue;
        }
        let slot = nodewright_core::policy::PolicyRegistry::new(runtime.clone()).ensure_slot(name, nodewright_core::policy::Role::Selection);
        slot.propose(plugin, nodewright_core::policy::SlotMode::Active)?;
        let decision = slot.rank(catalog, &request);
        let decided_by = match decision.by {
            DecidedBy::Plugin(p) => format!("wasm {}", &p.info().digest[..19]),
            DecidedBy::Builtin => "native".into(),
            DecidedBy::Fallback { failure, .. } => format!("fallback: {failure}"),
        };
        rows.push(PolicyRow { policy: name.into(), decided_by, choices: describe(decision.value.best(args.top)) });
    }
    let snapshot = sample_snapshot(catalog);
    let plans: Vec<(String, String)> = consolidators
        .iter()
        .map(|p| {
            let plan = match p.plan(catalog, &snapshot) {
                Ok(actions) => serde_json::to_string(&actions).unwrap_or_default(),
                Err(f) => format!("failed: {f}"),
            };
            (p.info().name.clone(), plan)
        })
        .collect();
    if args.json {
        let out = serde_json::json!({
            "request": { "node_pool": request.node_pool, "pods": request.pods, "feasible": request.feasible.len() },
            "catalog_offerings": catalog.offerings.len(),
            "selection": rows,
            "consolidation": plans.iter().map(|(n, p)| serde_json::json!({"policy": n, "plan": serde_json::from_str::<serde_json::Value>(p).unwrap_or(p.clone().into())})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Sample request: 3 pods of 1 vCPU / 2 GiB in NodePool `default` (generation > 4, us-east-1a);\n{} of the {} bundled us-east-1 offerings are feasible.\n",
        request.feasible.len(),
        catalog.offerings.len()
    );
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec!["#".to_string()];
    header.extend(rows.iter().map(|r| format!("{}\n({})", r.policy, r.decided_by)));
    table.set_header(header);
    for i in 0..args.top {
        let mut line = vec![(i + 1).to_string()];
        for row in &rows {
            line.push(row.choices.get(i).map_or_else(String::new, |c| {
                format!("{} {} {}\n${:.4}/h (score {:.4})", c.instance_type, c.capacity_type, c.zone, c.price_per_hour, c.score)
            }));
        }
        table.add_row(line);
    }
    println!("{table}");
    println!("\nSample consolidation snapshot: nodes `empty`, `busy`, `pinned` (do-not-disrupt, empty), `half`.");
    for (name, plan) in plans {
        println!("  {name}: {plan}");
    }
    Ok(ExitCode::SUCCESS)
}
