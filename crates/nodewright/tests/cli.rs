//! The `nodewright` binary, run as a user runs it.

#[path = "../../nodewright-core/tests/common/mod.rs"]
mod common;

use std::process::{Command, Output};

use common::{component, fixture};

fn nodewright(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodewright"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .expect("run nodewright")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Deadlines no loaded CI machine turns into a spurious timeout.
const GENEROUS: [&str; 4] = ["--selection-timeout-ms", "5000", "--consolidation-timeout-ms", "10000"];

#[test]
fn plugin_check_passes_every_bundled_plugin() {
    let cache = tempfile::tempdir().unwrap();
    for (name, world) in [
        ("cheapest", "instance-selector"),
        ("spot-savvy", "instance-selector"),
        ("graviton-first", "instance-selector"),
        ("empty-only", "consolidator"),
    ] {
        let path = component(name);
        let mut args = vec!["plugin", "check", path.to_str().unwrap()];
        args.extend(GENEROUS);
        let out = nodewright(&args, cache.path());
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{name}: {stdout}{}", text(&out.stderr));
        assert!(stdout.contains(&format!("world      {world}\n")), "{stdout}");
        assert!(stdout.contains("contract   nodewright:policy@0.1.0\n"), "{stdout}");
        assert!(stdout.ends_with("result     ok\n"), "{stdout}");
        assert!(!stdout.contains("FAIL"), "{stdout}");
    }
}

#[test]
fn plugin_check_fails_every_hostile_fixture_naming_the_file_and_the_reason() {
    let cache = tempfile::tempdir().unwrap();
    let first_check = "conformance check `rank: one small pod` failed";
    let cases: Vec<(std::path::PathBuf, String)> = vec![
        (component("hostile-loop"), format!("{first_check}: timed out after ")),
        (component("hostile-sleeper"), format!("{first_check}: timed out after ")),
        (component("hostile-memory-bomb"), format!("{first_check}: exceeded its memory limit of 128 MiB")),
        (component("hostile-deep-recursion"), format!("{first_check}: trapped: stack overflow")),
        (component("hostile-panic"), format!("{first_check}: trapped: wasm trap: wasm `unreachable` instruction executed")),
        (component("hostile-nan-score"), format!("{first_check}: invalid output: score of offering 0 is NaN, scores must be finite")),
        (component("hostile-infinite-score"), format!("{first_check}: invalid output: score of offering 0 is inf, scores must be finite")),
        (
            component("hostile-out-of-range"),
            format!("{first_check}: invalid output: offering index 8047 is out of range (the catalog has 8040 offerings)"),
        ),
        (
            component("hostile-oversized"),
            format!("{first_check}: invalid output: oversized output: 100000 scores for 7986 feasible offerings"),
        ),
        (
            component("hostile-file-and-socket"),
            format!(
                "{first_check}: returned an error: file: failed: No such file or directory (os error 44); socket: failed: Permission denied (os error 2); environment variables: 0"
            ),
        ),
        (component("hostile-catalog-reject"), format!("{first_check}: rejected catalog version ")),
        (
            component("hostile-consolidation-liar"),
            "conformance check `plan: no nodes` failed: invalid output: oversized output: 1 actions for 0 nodes".into(),
        ),
        (
            fixture("imports-wasi-http.wat"),
            "imports `wasi:http/outgoing-handler@0.2.0`, which the host does not provide (plugins may import nodewright:policy/host and WASI 0.2 cli, io, clocks, random, filesystem, sockets)".into(),
        ),
        (fixture("not-wasm.wasm"), "not a WebAssembly component: the file does not start with the WebAssembly magic bytes".into()),
        (fixture("core-module.wat"), "not a WebAssembly component: it is a core WebAssembly module in text form, not a component".into()),
        (
            fixture("wrong-world.wat"),
            "wrong world: exports neither nodewright:policy/instance-selection nor nodewright:policy/consolidation (found: run)".into(),
        ),
        (
            fixture("future-contract.wat"),
            "exports `nodewright:policy/instance-selection@9.0.0`: contract version 9.0.0 is not supported (this host supports 0.1.0, 0.2.0, 0.3.0)".into(),
        ),
    ];
    for (path, reason) in cases {
        let path_text = path.to_str().unwrap();
        let out = nodewright(&["plugin", "check", path_text], cache.path());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path_text}: {stderr}");
        let expected = format!("error: {path_text}: {reason}");
        assert!(
            stderr.lines().any(|line| line.starts_with(&expected)),
            "{path_text}: expected a line starting with\n{expected}\ngot\n{stderr}"
        );
    }
}

#[test]
fn plugin_check_json_reports_the_failure_as_data() {
    let cache = tempfile::tempdir().unwrap();
    let path = component("hostile-nan-score");
    let out = nodewright(&["plugin", "check", path.to_str().unwrap(), "--json"], cache.path());
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["plugin"]["world"], "instance-selector");
    assert_eq!(report["conformance"]["checks"][0]["failure"], "invalid output: score of offering 0 is NaN, scores must be finite");
    assert!(report["error"].as_str().unwrap().starts_with(path.to_str().unwrap()));
}

#[test]
fn plugin_bench_reports_wasm_and_native_nanoseconds_per_call() {
    let cache = tempfile::tempdir().unwrap();
    let path = component("cheapest");
    let mut args = vec!["plugin", "bench", path.to_str().unwrap(), "--offerings", "100", "--time", "100ms", "--json"];
    args.extend(GENEROUS);
    let out = nodewright(&args, cache.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["offerings"], 100);
    for key in ["wasm_ns_per_call", "native_ns_per_call", "instantiate_ns"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    let path = component("empty-only");
    let out = nodewright(&["plugin", "bench", path.to_str().unwrap()], cache.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), format!("error: {}: does not export instance-selection, nothing to bench\n", path.display()));
}

#[test]
fn plugin_sample_ranks_one_request_with_every_bundled_policy() {
    let cache = tempfile::tempdir().unwrap();
    let mut args = vec!["plugin", "sample", "--json"];
    args.extend(GENEROUS);
    let out = nodewright(&args, cache.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["selection"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["policy"].as_str().unwrap()).collect();
    assert_eq!(names, ["karpenter-like", "cheapest", "spot-savvy", "graviton-first", "on-demand-only", "commitment-aware", "spot-diversified"]);
    for row in rows {
        assert_eq!(row["choices"].as_array().unwrap().len(), 5, "{row}");
        assert!(!row["decided_by"].as_str().unwrap().starts_with("fallback"), "{row}");
    }
    assert_eq!(rows[0]["choices"], rows[1]["choices"], "the cheapest plugin agrees with the native baseline");
    assert_eq!(report["consolidation"][0]["plan"], serde_json::json!([{"delete": {"nodes": [0]}}]));
}

#[test]
fn compare_writes_the_table_report_and_charts_and_repeats_itself_exactly() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("burst.jsonl");
    let out = nodewright(&["trace", "generate", "batch-burst", "--seed", "2", "--scale", "0.3", "--out", trace.to_str().unwrap()], cache.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = |name: &str| {
        let target = dir.path().join(name);
        let out = nodewright(
            &["compare", "--trace", trace.to_str().unwrap(), "--policy", "cheapest", "--policy", "on-demand-only", "--out", target.to_str().unwrap(), "--quiet"],
            cache.path(),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        for row in ["total $", "first scheduling wait p50 / p95 / p99 (s)", "rescheduling wait", "spot warnings / rebalance recommendations", "plugin calls / failures"] {
            assert!(stdout.contains(row), "{stdout}");
        }
        assert!(stdout.contains("karpenter-like") && stdout.contains("on-demand-only"), "{stdout}");
        for chart in ["cost.svg", "nodes.svg", "utilisation.svg"] {
            let svg = std::fs::read_to_string(target.join(chart)).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{chart}");
        }
        std::fs::read_to_string(target.join("report.json")).unwrap()
    };
    let first = report("a");
    assert_eq!(first, report("b"), "report.json is byte-identical across runs");
    let parsed: serde_json::Value = serde_json::from_str(&first).unwrap();
    let names: Vec<&str> = parsed["policies"].as_array().unwrap().iter().map(|p| p["policy"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["karpenter-like", "cheapest", "on-demand-only"]);
    // A policy simulated alone gives its row of the comparison, byte for byte.
    let solo = dir.path().join("solo");
    let out = nodewright(&["simulate", "--trace", trace.to_str().unwrap(), "--policy", "on-demand-only", "--out", solo.to_str().unwrap(), "--quiet"], cache.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let solo: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(solo.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_string_pretty(&solo["policies"][0]).unwrap(),
        serde_json::to_string_pretty(&parsed["policies"][2]).unwrap()
    );
}

#[test]
fn compare_on_several_seeds_reports_mean_and_spread_and_every_run() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("burst.jsonl");
    let out = nodewright(&["trace", "generate", "batch-burst", "--seed", "2", "--scale", "0.2", "--out", trace.to_str().unwrap()], cache.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let target = dir.path().join("r");
    let out = nodewright(
        &["compare", "--trace", trace.to_str().unwrap(), "--policy", "cheapest", "--seeds", "3", "--out", target.to_str().unwrap(), "--quiet"],
        cache.path(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("seeds 1,2,3 (mean ± standard deviation)"), "{stdout}");
    assert!(stdout.contains("metric (mean ± sd, 3 seeds)") && stdout.contains(" ± "), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(target.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["seeds"], serde_json::json!([1, 2, 3]));
    assert_eq!(report["runs"].as_array().unwrap().len(), 3);
    let total = &report["summary"][1]["metrics"]["cost_total"];
    let costs: Vec<f64> = report["runs"].as_array().unwrap().iter().map(|r| r["policies"][1]["metrics"]["cost_total"].as_f64().unwrap()).collect();
    let mean = costs.iter().sum::<f64>() / 3.0;
    assert!((total["mean"].as_f64().unwrap() - mean).abs() < 1e-3, "{total} vs {costs:?}");
    assert_eq!(total["min"].as_f64().unwrap(), costs.iter().copied().fold(f64::INFINITY, f64::min));
    assert_eq!(report["summary"][1]["policy"], "cheapest");
    for (flag, message) in [
        ("0", "--seeds `0` names no seed"),
        ("101", "--seeds `101` names 101 seeds; at most 100"),
        ("18446744073709551615", "--seeds `18446744073709551615` names 18446744073709551615 seeds; at most 100"),
        ("1,x", "--seeds `1,x`: `x` is not a seed"),
        ("1,1", "--seeds `1,1` names a seed twice"),
    ] {
        let out = nodewright(&["compare", "--seeds", flag, "--out", target.to_str().unwrap()], cache.path());
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(message), "{flag}: {}", text(&out.stderr));
    }
}

#[test]
fn a_malformed_trace_is_rejected_with_its_file_line_and_field() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("bad.jsonl");
    std::fs::write(
        &trace,
        "{\"format\":\"nodewright-trace\",\"version\":1,\"name\":\"bad\",\"duration_s\":100}\n{\"t\":1,\"add\":\"a\",\"workload\":\"w\",\"cpu_m\":100,\"mem_mib\":64}\n{\"t\":2,\"add\":\"b\",\"workload\":\"w\",\"mem_mib\":64}\n",
    )
    .unwrap();
    let out = nodewright(&["simulate", "--trace", trace.to_str().unwrap(), "--out", dir.path().join("r").to_str().unwrap()], cache.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), format!("error: {}:3: cpu_m: an `add` needs a CPU request\n", trace.display()));
}

#[test]
fn commitments_add_the_effective_bill_and_a_bad_file_is_refused_with_its_field() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "savingsPlans:\n  - hourlyCommitment: 1\n    discount: 1.5\n").unwrap();
    let out_dir = dir.path().join("r");
    let out = nodewright(&["simulate", "--commitments", bad.to_str().unwrap(), "--out", out_dir.to_str().unwrap()], cache.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("error: {}: savingsPlans[0].discount: 1.5 is not a discount from 0 (none) to below 1 (everything)\n", bad.display())
    );
    assert!(!out_dir.exists(), "nothing is written for a run that did not start");
    let good = dir.path().join("commitments.yaml");
    std::fs::write(&good, "savingsPlans:\n  - hourlyCommitment: 2\n    discount: 0.3\n").unwrap();
    let trace = dir.path().join("t.jsonl");
    let generated = nodewright(&["trace", "generate", "batch-burst", "--scale", "0.2", "--out", trace.to_str().unwrap()], cache.path());
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let mut args = vec!["simulate", "--trace", trace.to_str().unwrap(), "--commitments", good.to_str().unwrap(), "--out", out_dir.to_str().unwrap()];
    args.extend(GENEROUS);
    let out = nodewright(&args, cache.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("effective $ (commitments applied)"), "{stdout}");
    assert!(stdout.contains("  Savings Plan used / unused $"), "{stdout}");
    let report = std::fs::read_to_string(out_dir.join("report.json")).unwrap();
    assert!(report.contains("\"cost_effective\"") && report.contains("\"commitment_fees\""), "{report}");
}

#[test]
fn a_scenario_directory_supplies_the_trace_and_commitments_and_flags_override_it() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("tiny");
    std::fs::create_dir(&scenario).unwrap();
    let trace = scenario.join("trace.jsonl");
    let generated = nodewright(&["trace", "generate", "batch-burst", "--scale", "0.2", "--out", trace.to_str().unwrap()], cache.path());
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    std::fs::write(scenario.join("commitments.yaml"), "savingsPlans:\n  - hourlyCommitment: 2\n    discount: 0.3\n").unwrap();
    let out_dir = dir.path().join("r");
    let mut args = vec!["compare", "--scenario", scenario.to_str().unwrap(), "--policy", "commitment-aware", "--out", out_dir.to_str().unwrap()];
    args.extend(GENEROUS);
    let out = nodewright(&args, cache.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with(&format!("{} (", trace.display())), "{stdout}");
    assert!(stdout.contains("effective $ (commitments applied)"), "{stdout}");
    assert!(stdout.contains("commitment-aware"), "{stdout}");
    // A flag replaces the scenario's file: a bad one is refused by its name.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "reservedInstances:\n  - instanceType: m5.xlarge\n    count: -1\n    hourlyRate: 0.1\n").unwrap();
    let mut args = vec!["compare", "--scenario", scenario.to_str().unwrap(), "--commitments", bad.to_str().unwrap(), "--out", out_dir.to_str().unwrap()];
    args.extend(GENEROUS);
    let out = nodewright(&args, cache.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with(&format!("error: {}: reservedInstances[0].count", bad.display())), "{}", text(&out.stderr));
    // Neither bundled nor a directory; a directory without a trace.
    let out = nodewright(&["compare", "--scenario", "no-such-scenario"], cache.path());
    assert_eq!(text(&out.stderr), "error: --scenario no-such-scenario: neither a bundled scenario (saas-week, batch-week) nor a directory\n");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = nodewright(&["compare", "--scenario", empty.to_str().unwrap()], cache.path());
    assert_eq!(text(&out.stderr), format!("error: --scenario {}: the directory has no trace.jsonl\n", empty.display()));
}

#[test]
fn trace_generate_names_the_kinds_it_knows() {
    let cache = tempfile::tempdir().unwrap();
    let out = nodewright(&["trace", "generate", "stock-market", "--out", "/dev/null"], cache.path());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: unknown trace kind `stock-market` (one of diurnal-web, batch-burst, ml-gpu, mixed, saas-week, batch-week)\n");
}

#[test]
fn traces_too_long_or_pods_too_large_are_refused_with_file_line_and_field() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let header = |duration: &str| {
        format!(
            "{{\"format\":\"nodewright-trace\",\"version\":1,\"name\":\"bad\",\"duration_s\":{duration}}}\n"
        )
    };
    let pod = |mem: &str| {
        format!("{{\"t\":1,\"add\":\"a\",\"workload\":\"w\",\"cpu_m\":100,\"mem_mib\":{mem}}}\n")
    };
    let cases = [
        (
            header("1e20") + &pod("64"),
            "1:1: duration_s: 100000000000000000000 is longer than the longest trace the simulator runs (31622400 s, 366 days)",
        ),
        (
            header("1e11") + &pod("64"),
            "1:1: duration_s: 100000000000 is longer than the longest trace the simulator runs (31622400 s, 366 days)",
        ),
        (
            header("100") + &pod("17592186044415"),
            "1:2: mem_mib: 17592186044415 MiB is more than the largest accepted request (1 EiB)",
        ),
    ];
    for (i, (content, reason)) in cases.iter().enumerate() {
        let trace = dir.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&trace, content).unwrap();
        let out = nodewright(
            &[
                "simulate",
                "--trace",
                trace.to_str().unwrap(),
                "--out",
                dir.path().join("r").to_str().unwrap(),
            ],
            cache.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{reason}");
        let (file, rest) = reason.split_once(':').unwrap();
        let _ = file;
        assert_eq!(
            text(&out.stderr),
            format!("error: {}:{rest}\n", trace.display()),
            "{reason}"
        );
    }
}

#[test]
fn flags_out_of_range_are_refused_naming_the_flag() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("r");
    let out_dir = out_dir.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["plugin", "list", "--memory-limit-mib", "17592186044416"],
            "invalid value '17592186044416' for '--memory-limit-mib <MEMORY_LIMIT_MIB>': 17592186044416 is not in 1..=65536",
        ),
        (
            vec![
                "plugin",
                "list",
                "--selection-timeout-ms",
                "18446744073709551615",
            ],
            "invalid value '18446744073709551615' for '--selection-timeout-ms <SELECTION_TIMEOUT_MS>': 18446744073709551615 is not in 1..=600000",
        ),
        (
            vec!["plugin", "list", "--consolidation-timeout-ms", "0"],
            "invalid value '0' for '--consolidation-timeout-ms <CONSOLIDATION_TIMEOUT_MS>': 0 is not in 1..=600000",
        ),
        (
            vec!["simulate", "--boot-latency", "0-1e300", "--out", out_dir],
            "--boot-latency `0-1e300`: the upper bound is longer than a day (86400 s)",
        ),
        (
            vec![
                "trace",
                "generate",
                "mixed",
                "--scale",
                "1e6",
                "--out",
                "/dev/null",
            ],
            "--scale 1000000 must be a positive number no larger than 100",
        ),
    ];
    for (args, expected) in cases {
        let out = nodewright(&args, cache.path());
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected\n{expected}\ngot\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let bench = component("cheapest");
    let out = nodewright(
        &[
            "plugin",
            "bench",
            bench.to_str().unwrap(),
            "--time",
            "100000000000000000000s",
        ],
        cache.path(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`100000000000000000000s` is longer than an hour"),
        "{stderr}"
    );
}

#[test]
fn compare_into_a_closed_pipe_stops_quietly_with_success() {
    let cache = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.jsonl");
    let generated = nodewright(
        &[
            "trace",
            "generate",
            "batch-burst",
            "--scale",
            "0.1",
            "--out",
            trace.to_str().unwrap(),
        ],
        cache.path(),
    );
    assert!(generated.status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodewright"))
        .args([
            "compare",
            "--trace",
            trace.to_str().unwrap(),
            "--policy",
            "cheapest",
            "--quiet",
            "--out",
        ])
        .arg(dir.path().join("r"))
        .arg("--cache-dir")
        .arg(cache.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything is written, as `| head -0` would.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn plugin_check_ends_a_plugin_that_sleeps_forever_within_twice_its_deadline() {
    let cache = tempfile::tempdir().unwrap();
    let path = component("hostile-sleeper");
    let out = nodewright(
        &[
            "plugin",
            "check",
            path.to_str().unwrap(),
            "--selection-timeout-ms",
            "200",
        ],
        cache.path(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let prefix = format!(
        "error: {}: conformance check `rank: one small pod` failed: timed out after ",
        path.display()
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{stderr}"));
    let took: u64 = line[prefix.len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((200..400).contains(&took), "{line}");
    assert!(line.ends_with(" ms (deadline 200 ms)"), "{line}");
}
