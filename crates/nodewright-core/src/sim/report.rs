//! Reports: a table for reading, `report.json` for machines, SVG charts.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use super::engine::SimulationResult;

/// The results of one or more policies on one trace.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Trace name.
    pub trace: String,
    /// Seed of the run.
    pub seed: u64,
    /// Hours simulated.
    pub hours: f64,
    /// One entry per policy, in the order run.
    pub policies: Vec<SimulationResult>,
}

impl Report {
    /// `report.json`: deterministic for the same inputs.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialise") + "\n"
    }

    /// The side-by-side table, every policy in it.
    pub fn table(&self) -> comfy_table::Table {
        self.table_of(0..self.policies.len())
    }

    /// The side-by-side tables, each at most `width` characters wide: the
    /// policies split over as many tables as that takes, in order.
    pub fn tables(&self, width: usize) -> Vec<comfy_table::Table> {
        fit_to_width(self.policies.len(), width, |range| self.table_of(range))
    }

    fn table_of(&self, range: std::ops::Range<usize>) -> comfy_table::Table {
        let policies = &self.policies[range];
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        let mut header = vec!["metric".to_string()];
        header.extend(policies.iter().map(|p| p.policy.name.clone()));
        table.set_header(header);
        type Row = (&'static str, fn(&SimulationResult) -> String);
        let rows: [Row; 22] = [
            ("total $", |r| format!("{:.2}", r.metrics.cost_total)),
            ("  on-demand $", |r| format!("{:.2}", r.metrics.cost_on_demand)),
            ("  spot $", |r| format!("{:.2}", r.metrics.cost_spot)),
            ("node-hours", |r| format!("{:.1}", r.metrics.node_hours)),
            ("peak nodes", |r| r.metrics.peak_nodes.to_string()),
            ("CPU utilisation", |r| format!("{:.1} %", r.metrics.cpu_utilisation * 100.0)),
            ("memory utilisation", |r| format!("{:.1} %", r.metrics.memory_utilisation * 100.0)),
            ("first scheduling wait p50 / p95 / p99 (s)", |r| {
                format!("{:.0} / {:.0} / {:.0}", r.metrics.first_wait_p50_s, r.metrics.first_wait_p95_s, r.metrics.first_wait_p99_s)
            }),
            ("rescheduling wait p50 / p95 / p99 (s)", |r| {
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    r.metrics.reschedule_wait_p50_s, r.metrics.reschedule_wait_p95_s, r.metrics.reschedule_wait_p99_s
                )
            }),
            ("peak node CPU requested / allocatable", |r| format!("{:.1} %", r.metrics.peak_node_cpu_request_ratio * 100.0)),
            ("pods / pending at end", |r| format!("{} / {}", r.metrics.pods, r.metrics.pods_pending_at_end)),
            ("pods never scheduled", |r| r.metrics.pods_never_scheduled.to_string()),
            ("pods stopped: interruption / disruption", |r| format!("{} / {}", r.metrics.pods_disrupted, r.metrics.pods_evicted)),
            ("lost job pod-hours / their node $", |r| format!("{:.1} / {:.2}", r.metrics.lost_pod_hours, r.metrics.lost_work_dollars)),
            ("spot warnings / rebalance recommendations", |r| format!("{} / {}", r.metrics.interruptions, r.metrics.rebalance_recommendations)),
            ("nodes consolidated", |r| r.metrics.consolidations.to_string()),
            ("  empty / under-used", |r| format!("{} / {}", r.metrics.disrupted_empty, r.metrics.disrupted_underutilized)),
            ("drifted / expired", |r| format!("{} / {}", r.metrics.disrupted_drifted, r.metrics.disrupted_expired)),
            ("replacements / rejected", |r| format!("{} / {}", r.metrics.replacements, r.metrics.disruptions_rejected)),
            ("launches / failures", |r| format!("{} / {}", r.metrics.launches, r.metrics.launch_failures)),
            ("plugin calls / failures", |r| format!("{} / {}", r.metrics.plugin_calls, r.metrics.plugin_failures)),
            ("plugin time (ms, wall)", |r| format!("{:.1}", r.plugin_ms)),
        ];
        let committed = self.policies.iter().any(|p| p.metrics.commitments.is_some());
        for (name, cell) in rows {
            let mut row = vec![name.to_string()];
            row.extend(policies.iter().map(cell));
            table.add_row(row);
            // After the list-price rows, the bill with commitments applied.
            if name == "  spot $" && committed {
                for (name, cell) in COMMITTED_ROWS {
                    let mut row = vec![name.to_string()];
                    row.extend(policies.iter().map(|p| p.metrics.commitments.as_ref().map_or_else(|| "-".into(), cell)));
                    table.add_row(row);
                }
            }
        }
        table
    }
}

/// The widest line of `table`, in characters.
fn width_of(table: &comfy_table::Table) -> usize {
    table.to_string().lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

/// The tables `build` makes of consecutive runs of `columns` policies, each
/// as many as fit in `width` characters (at least one a table, however
/// wide it is).
fn fit_to_width(columns: usize, width: usize, build: impl Fn(std::ops::Range<usize>) -> comfy_table::Table) -> Vec<comfy_table::Table> {
    let mut tables = Vec::new();
    let mut start = 0;
    while start < columns {
        let mut end = start + 1;
        let mut table = build(start..end);
        while end < columns {
            let wider = build(start..end + 1);
            if width_of(&wider) > width {
                break;
            }
            table = wider;
            end += 1;
        }
        tables.push(table);
        start = end;
    }
    tables
}

type CommittedRow = (&'static str, fn(&crate::cloud::billing::CommittedBill) -> String);

/// The bill with commitments applied, shown when a commitments file is given.
const COMMITTED_ROWS: [CommittedRow; 6] = [
    ("effective $ (commitments applied)", |b| format!("{:.2}", b.effective)),
    ("  commitment fees $", |b| format!("{:.2}", b.commitment_fees)),
    ("  on-demand covered / uncovered $", |b| format!("{:.2} / {:.2}", b.covered_on_demand, b.uncovered_on_demand)),
    ("  Savings Plan used / unused $", |b| format!("{:.2} / {:.2}", b.savings_plan_used, b.savings_plan_unused)),
    ("  RI hours used / unused", |b| format!("{:.1} / {:.1}", b.reserved_hours_used, b.reserved_hours_unused)),
    ("  reservation hours used / unused", |b| format!("{:.1} / {:.1}", b.reservation_hours_used, b.reservation_hours_unused)),
];

/// Mean and spread of one metric over seeds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one seed).
    pub sd: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
        let r = |v: f64| (v * 1e4).round() / 1e4;
        Spread {
            mean: r(mean),
            sd: r(var.sqrt()),
            min: r(values.iter().copied().fold(f64::INFINITY, f64::min)),
            max: r(values.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        }
    }
}

/// One policy over every seed: each metric's mean and spread.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    /// The policy.
    pub policy: String,
    /// Metric name (as in [`super::Metrics`]) → spread over the seeds.
    pub metrics: std::collections::BTreeMap<String, Spread>,
}

/// The results of the same policies on several seeds.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    /// Trace name.
    pub trace: String,
    /// Seeds run.
    pub seeds: Vec<u64>,
    /// Hours simulated.
    pub hours: f64,
    /// Per policy, in the order run: mean and spread of every metric.
    pub summary: Vec<PolicySummary>,
    /// Every run, one report per seed.
    pub runs: Vec<Report>,
}

impl SeedReport {
    /// Summarise `runs` (one per seed, the same policies in the same order).
    pub fn new(runs: &[Report]) -> Self {
        let first = &runs[0];
        let summary = first
            .policies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut values: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
                for run in runs {
                    let Some(result) = run.policies.get(i) else { continue };
                    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&result.metrics) {
                        for (name, value) in fields {
                            if let Some(v) = value.as_f64() {
                                values.entry(name).or_default().push(v);
                            }
                        }
                    }
                }
                PolicySummary { policy: p.policy.name.clone(), metrics: values.into_iter().map(|(k, v)| (k, Spread::of(&v))).collect() }
            })
            .collect();
        SeedReport { trace: first.trace.clone(), seeds: runs.iter().map(|r| r.seed).collect(), hours: first.hours, summary, runs: runs.to_vec() }
    }

    /// `report.json`: deterministic for the same inputs.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialise") + "\n"
    }

    /// The side-by-side table: mean ± standard deviation over the seeds.
    pub fn table(&self) -> comfy_table::Table {
        self.table_of(0..self.summary.len())
    }

    /// [`Self::table`] as tables at most `width` characters wide.
    pub fn tables(&self, width: usize) -> Vec<comfy_table::Table> {
        fit_to_width(self.summary.len(), width, |range| self.table_of(range))
    }

    fn table_of(&self, range: std::ops::Range<usize>) -> comfy_table::Table {
        let summary = &self.summary[range];
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        let mut header = vec![format!("metric (mean ± sd, {} seeds)", self.seeds.len())];
        header.extend(summary.iter().map(|p| p.policy.clone()));
        table.set_header(header);
        let rows: [(&str, &str, f64, usize); 15] = [
            ("total $", "cost_total", 1.0, 2),
            ("  on-demand $", "cost_on_demand", 1.0, 2),
            ("  spot $", "cost_spot", 1.0, 2),
            ("node-hours", "node_hours", 1.0, 1),
            ("CPU utilisation %", "cpu_utilisation", 100.0, 1),
            ("first scheduling wait p50 (s)", "first_wait_p50_s", 1.0, 0),
            ("first scheduling wait p95 (s)", "first_wait_p95_s", 1.0, 0),
            ("rescheduling wait p95 (s)", "reschedule_wait_p95_s", 1.0, 0),
            ("pods pending at end", "pods_pending_at_end", 1.0, 1),
            ("pods stopped by interruption", "pods_disrupted", 1.0, 0),
            ("pods evicted by disruption", "pods_evicted", 1.0, 0),
            ("lost job pod-hours", "lost_pod_hours", 1.0, 1),
            ("lost job node $", "lost_work_dollars", 1.0, 2),
            ("spot interruptions", "interruptions", 1.0, 1),
            ("nodes consolidated", "consolidations", 1.0, 0),
        ];
        let committed = self.summary.iter().any(|p| p.metrics.contains_key("cost_effective"));
        let effective = committed.then_some(("effective $ (commitments applied)", "cost_effective", 1.0, 2));
        for (label, field, scale, places) in effective.into_iter().chain(rows) {
            let mut row = vec![label.to_string()];
            row.extend(summary.iter().map(|p| match p.metrics.get(field) {
                Some(s) => format!("{:.places$} ± {:.places$}", s.mean * scale, s.sd * scale),
                None => "-".into(),
            }));
            table.add_row(row);
        }
        table
    }
}

/// Tableau's ten categorical colours: distinct for ten policies.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of the `i`th policy: one of [`COLOURS`], then hues a golden
/// angle apart, so no two policies of a chart share one.
fn colour(i: usize) -> RGBColor {
    if let Some(&c) = COLOURS.get(i) {
        return c;
    }
    let hue = ((i - COLOURS.len()) as f64 * 137.508 + 15.0) % 360.0 / 360.0;
    let (r, g, b) = HSLColor(hue, 0.65, 0.42).rgb();
    RGBColor(r, g, b)
}

/// Lines on one plot before a chart turns into small multiples (one plot
/// per policy, on a shared scale).
const MAX_LINES_ON_ONE_PLOT: usize = 10;

/// Width of the legend beside a plot, in pixels.
const LEGEND_WIDTH: u32 = 260;

/// Write `cost.svg`, `nodes.svg` and `utilisation.svg` into `dir`.
pub fn write_charts(report: &Report, dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    let cost = dir.join("cost.svg");
    chart(&cost, &format!("Cumulative cost, trace {}", report.trace), "$", report, &[("", |s| s.cost)])?;
    written.push(cost);
    let nodes = dir.join("nodes.svg");
    chart(
        &nodes,
        "Nodes by capacity type (solid: on-demand, dashed: spot)",
        "nodes",
        report,
        &[("on-demand", |s| s.on_demand_nodes as f64), ("spot", |s| s.spot_nodes as f64)],
    )?;
    written.push(nodes);
    let utilisation = dir.join("utilisation.svg");
    chart(&utilisation, "CPU requested / allocatable", "utilisation", report, &[("", |s| s.cpu_utilisation)])?;
    written.push(utilisation);
    Ok(written)
}

type Series<'a> = (&'a str, fn(&super::engine::Sample) -> f64);

/// One chart: every policy's series on one plot with the legend beside
/// it, or, when that would be more than [`MAX_LINES_ON_ONE_PLOT`] lines,
/// small multiples: a plot per policy on a shared scale, each titled with
/// its policy.
fn chart(path: &Path, title: &str, unit: &str, report: &Report, series: &[Series<'_>]) -> anyhow::Result<()> {
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", path.display());
    let policies = report.policies.len();
    let small_multiples = policies * series.len() > MAX_LINES_ON_ONE_PLOT;
    let columns = if small_multiples { 3 } else { 1 };
    let rows = if small_multiples { policies.div_ceil(columns) } else { 1 };
    let height = if small_multiples { 60 + 240 * rows as u32 } else { 480 };
    let root = SVGBackend::new(path, (960 + if small_multiples { 0 } else { LEGEND_WIDTH }, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|e| fail(&e))?;
    let max_y = report
        .policies
        .iter()
        .flat_map(|p| p.samples.iter().flat_map(|s| series.iter().map(move |(_, f)| f(s))))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.05;
    let x_range = 0f64..report.hours.max(1e-9);
    let draw = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>, shown: &[usize], caption: Option<&str>| -> anyhow::Result<()> {
        let mut builder = ChartBuilder::on(area);
        builder.margin(12).x_label_area_size(30).y_label_area_size(56);
        if let Some(caption) = caption {
            builder.caption(caption, ("sans-serif", 15));
        }
        let mut chart = builder.build_cartesian_2d(x_range.clone(), 0f64..max_y).map_err(|e| fail(&e))?;
        chart.configure_mesh().x_desc("hours").y_desc(unit).draw().map_err(|e| fail(&e))?;
        for &i in shown {
            let policy = &report.policies[i];
            let style = ShapeStyle::from(colour(i)).stroke_width(2);
            for (j, (_, value)) in series.iter().enumerate() {
                let points: Vec<(f64, f64)> = policy.samples.iter().map(|s| (s.hour, value(s))).collect();
                if j == 0 {
                    chart.draw_series(LineSeries::new(points, style)).map_err(|e| fail(&e))?;
                } else {
                    chart.draw_series(DashedLineSeries::new(points, 6, 4, style)).map_err(|e| fail(&e))?;
                }
            }
        }
        Ok(())
    };
    if small_multiples {
        for (i, area) in root.split_evenly((rows, columns)).iter().enumerate().take(policies) {
            draw(area, &[i], Some(&report.policies[i].policy.name))?;
        }
    } else {
        let (plot, legend) = root.split_horizontally(960);
        draw(&plot, &(0..policies).collect::<Vec<_>>(), None)?;
        // The legend beside the data: a line in the policy's colour per series, then its name.
        let mut y = 30;
        for (i, policy) in report.policies.iter().enumerate() {
            for (j, (label, _)) in series.iter().enumerate() {
                let name = if label.is_empty() { policy.policy.name.clone() } else { format!("{} {label}", policy.policy.name) };
                let style = ShapeStyle::from(colour(i)).stroke_width(2);
                // Solid for the first series, dashed for the others, as on the plot.
                let segments: &[(i32, i32)] = if j == 0 { &[(4, 28)] } else { &[(4, 10), (14, 20), (24, 28)] };
                for &(from, to) in segments {
                    legend.draw(&PathElement::new(vec![(from, y), (to, y)], style)).map_err(|e| fail(&e))?;
                }
                legend.draw(&Text::new(name, (34, y - 7), ("sans-serif", 13))).map_err(|e| fail(&e))?;
                y += 20;
            }
        }
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_take_the_policies_in_order_as_many_as_fit_the_width() {
        let names = ["karpenter-like", "cheapest", "spot-savvy", "graviton-first", "on-demand-only", "cheapest+empty-only", "cheapest+utilization-threshold"];
        let build = |range: std::ops::Range<usize>| {
            let mut table = comfy_table::Table::new();
            table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
            let mut header = vec!["first scheduling wait p50 / p95 / p99 (s)".to_string()];
            header.extend(names[range.clone()].iter().map(|n| n.to_string()));
            table.set_header(header);
            let mut row = vec!["total $".to_string()];
            row.extend(range.map(|i| format!("{}.00", 100 * i)));
            table.add_row(row);
            table
        };
        let tables = fit_to_width(names.len(), 120, build);
        assert!(tables.len() > 1);
        assert!(tables.iter().all(|t| width_of(t) <= 120), "{:?}", tables.iter().map(width_of).collect::<Vec<_>>());
        let shown: Vec<String> = tables.iter().flat_map(|t| t.header().unwrap().cell_iter().skip(1).map(|c| c.content()).collect::<Vec<_>>()).collect();
        assert_eq!(shown, names);
        // Each table as full as it can be: the next policy would not have fit.
        for (t, next) in tables.iter().zip(tables.iter().skip(1)) {
            let first_of_next = next.header().unwrap().cell_iter().nth(1).unwrap().content();
            let start = names.iter().position(|n| *n == t.header().unwrap().cell_iter().nth(1).unwrap().content()).unwrap();
            let end = names.iter().position(|n| *n == first_of_next).unwrap();
            assert!(width_of(&build(start..end + 1)) > 120);
        }
        // One policy wider than the width still gets a table of its own.
        assert_eq!(fit_to_width(2, 10, build).len(), 2);
    }

    /// A report of `n` policies, each a day of hourly samples.
    fn report_of(n: usize) -> Report {
        let policies = (0..n)
            .map(|i| SimulationResult {
                policy: super::super::engine::PolicyUnderTest {
                    name: format!("policy-{i}"),
                    selection: crate::model::PolicyRef { plugin: "cheapest".into(), config: "{}".into() },
                    consolidation: crate::model::PolicyRef { plugin: "karpenter-like".into(), config: "{}".into() },
                },
                metrics: Default::default(),
                samples: (0..=24)
                    .map(|h| super::super::engine::Sample {
                        hour: f64::from(h),
                        cost: f64::from(h * (i as u32 + 1)),
                        on_demand_nodes: 3,
                        spot_nodes: i as u32,
                        cpu_utilisation: 0.5,
                        memory_utilisation: 0.5,
                        pending: 0,
                    })
                    .collect(),
                plugin_ms: 0.0,
                end: Default::default(),
                decisions: Default::default(),
                timeline: Vec::new(),
            })
            .collect();
        Report { trace: "t".into(), seed: 1, hours: 24.0, policies }
    }

    #[test]
    fn a_chart_of_a_handful_of_lines_is_one_plot_with_its_legend_beside_and_more_are_small_multiples() {
        let dir = tempfile::tempdir().unwrap();
        let texts = |file: &str| -> (String, Vec<String>) {
            let svg = std::fs::read_to_string(dir.path().join(file)).unwrap();
            let texts = svg.split("<text").skip(1).filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_string())).collect();
            (svg, texts)
        };
        // Five policies: ten lines on the nodes chart, one plot, the legend
        // (policy and series) beside it.
        write_charts(&report_of(5), dir.path()).unwrap();
        let (svg, shown) = texts("nodes.svg");
        assert!(svg.starts_with(&format!("<svg width=\"{}\" height=\"480\"", 960 + LEGEND_WIDTH)), "{}", &svg[..80]);
        for i in 0..5 {
            assert!(shown.contains(&format!("policy-{i} on-demand")) && shown.contains(&format!("policy-{i} spot")), "{shown:?}");
        }
        // Six: twelve lines, so a plot per policy titled with its name, no legend.
        write_charts(&report_of(6), dir.path()).unwrap();
        let (svg, shown) = texts("nodes.svg");
        assert!(svg.starts_with("<svg width=\"960\" height=\"540\""), "{}", &svg[..80]);
        let titles: Vec<&String> = shown.iter().filter(|t| t.starts_with("policy-")).collect();
        assert_eq!(titles, (0..6).map(|i| format!("policy-{i}")).collect::<Vec<_>>().iter().collect::<Vec<_>>());
        // The cost chart of six (six lines) stays one plot, each policy its colour.
        let (svg, _) = texts("cost.svg");
        for i in 0..6 {
            let (r, g, b) = colour(i).rgb();
            assert!(svg.contains(&format!("stroke=\"#{r:02X}{g:02X}{b:02X}\"")), "policy {i}'s colour");
        }
    }

    #[test]
    fn every_policy_of_a_chart_has_a_colour_of_its_own() {
        let colours: std::collections::HashSet<(u8, u8, u8)> = (0..24).map(|i| colour(i).rgb()).collect();
        assert_eq!(colours.len(), 24);
        // The tenth and the first differ (they were the same blue with six colours).
        assert_ne!(colour(5).rgb(), colour(0).rgb());
    }
}
