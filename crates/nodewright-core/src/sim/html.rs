//! `report.html`: one self-contained page (no script, no fetch: readable
//! offline, from a file) with the comparison table, the charts inlined, and
//! each policy's decision log.

use std::path::{Path, PathBuf};

use super::decisions::Decision;
use super::report::Report;

/// Decisions a policy's log shows on the page.
pub const DECISIONS_SHOWN: usize = 100;

/// `text` safe inside HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn table_html(table: &comfy_table::Table) -> String {
    let mut out = String::from("<table class=\"metrics\">\n");
    if let Some(header) = table.header() {
        out += "<thead><tr>";
        for cell in header.cell_iter() {
            out += &format!("<th>{}</th>", escape(&cell.content()));
        }
        out += "</tr></thead>\n";
    }
    out += "<tbody>\n";
    for row in table.row_iter() {
        out += "<tr>";
        for (i, cell) in row.cell_iter().enumerate() {
            let content = cell.content();
            if i == 0 {
                let indented = content.starts_with("  ");
                out += &format!("<th scope=\"row\"{}>{}</th>", if indented { " class=\"sub\"" } else { "" }, escape(content.trim()));
            } else {
                out += &format!("<td>{}</td>", escape(&content));
            }
        }
        out += "</tr>\n";
    }
    out + "</tbody></table>\n"
}

fn summary(d: &Decision) -> (String, String) {
    match (&d.launch, &d.disruption) {
        (Some(l), _) => (
            "launch".into(),
            format!("{} in {}: {} (${:.4}/h) for {} pod{}, by {}", l.claim, l.node_pool, l.chosen.offering, l.chosen.price_per_hour, l.pod_count, if l.pod_count == 1 { "" } else { "s" }, l.policy.plugin),
        ),
        (_, Some(x)) => (
            format!("disruption ({})", x.outcome),
            format!("{} of {} in {}, saving ${:.4}/h", x.method, x.nodes.join(", "), x.node_pool, x.savings_per_hour),
        ),
        _ => ("-".into(), String::new()),
    }
}

/// The page for `report` (its table given, as the terminal shows it but
/// whole) with the charts at `charts`; written as `dir/report.html`.
pub fn write_html(dir: &Path, title: &str, table: &comfy_table::Table, charts: &[PathBuf], report: &Report) -> anyhow::Result<PathBuf> {
    let mut body = format!("<h1>{}</h1>\n<p class=\"meta\">trace <b>{}</b>, seed {}, {:.0} h simulated, {} policies</p>\n", escape(title), escape(&report.trace), report.seed, report.hours, report.policies.len());
    body += "<h2>Comparison</h2>\n";
    body += "<div class=\"scroll\">";
    body += &table_html(table);
    body += "</div>\n";
    body += "<h2>Charts</h2>\n";
    for chart in charts {
        let svg = std::fs::read_to_string(chart).map_err(|e| anyhow::anyhow!("{}: {e}", chart.display()))?;
        // Inline: the XML declaration is not allowed inside HTML.
        let svg = svg.trim_start().strip_prefix("<?xml").and_then(|rest| rest.split_once("?>").map(|(_, s)| s)).unwrap_or(&svg);
        let name = chart.file_name().and_then(|n| n.to_str()).unwrap_or("chart");
        body += &format!("<figure class=\"chart\" id=\"{}\">{}<figcaption>{}</figcaption></figure>\n", escape(name), svg.trim(), escape(name));
    }
    body += "<h2>Decisions</h2>\n<p class=\"meta\">Each launch with the policy that ranked its offerings and why the cheapest alternatives lost; each disruption with its method, plan and validation rules. <code>nodewright explain --report DIR</code> prints them too.</p>\n";
    for result in &report.policies {
        let log = &result.decisions;
        body += &format!(
            "<details class=\"log\"><summary>{}: {} decisions ({} kept in report.json, first {} shown)</summary>\n<table class=\"decisions\"><thead><tr><th>hour</th><th>what</th><th>decision</th></tr></thead><tbody>\n",
            escape(&result.policy.name),
            log.total,
            log.kept.len(),
            log.kept.len().min(DECISIONS_SHOWN)
        );
        for d in log.kept.iter().take(DECISIONS_SHOWN) {
            let (kind, line) = summary(d);
            body += &format!(
                "<tr><td>{:.2}</td><td>{}</td><td><details><summary>{}</summary><pre>{}</pre></details></td></tr>\n",
                d.hour,
                escape(&kind),
                escape(&line),
                escape(&d.render())
            );
        }
        body += "</tbody></table></details>\n";
    }
    let page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n",
        escape(title)
    );
    let path = dir.join("report.html");
    std::fs::write(&path, page).map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", path.display()))?;
    Ok(path)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}.scroll{overflow-x:auto}\
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}\
.meta{color:#555}table{border-collapse:collapse;font-size:.85em}\
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right}td{white-space:nowrap}\
thead th{background:#f3f3f3;position:sticky;top:0}tbody th{text-align:left;font-weight:normal;white-space:nowrap}\
tbody th.sub{padding-left:1.6em;color:#555}tbody tr:nth-child(even){background:#fafafa}\
figure.chart{margin:1em 0}figure.chart svg{max-width:1400px;width:100%;height:auto}figcaption{color:#777;font-size:.8em}\
details.log{margin:.5em 0}table.decisions td{text-align:left;vertical-align:top}pre{margin:.3em 0;font-size:.9em}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }
}
