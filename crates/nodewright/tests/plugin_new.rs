//! `nodewright plugin new` for each language produces a project that builds
//! with its documented command and passes `plugin check` unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;

fn nodewright(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nodewright"))
        .args(args)
        .env("NODEWRIGHT_CACHE_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/polyglot-cache"))
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Scaffold `name` in `dir`; the (build command, output file) it printed.
fn scaffold(dir: &Path, name: &str, lang: &str, role: &str) -> (String, PathBuf) {
    let out = nodewright(&["plugin", "new", name, "--lang", lang, "--role", role, "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let build = stdout.lines().find_map(|l| l.strip_prefix("build:  ")).unwrap().to_string();
    let check = stdout.lines().find_map(|l| l.strip_prefix("check:  nodewright plugin check ")).unwrap();
    (build, PathBuf::from(check.split_whitespace().next().unwrap()))
}

fn build_and_check(build: &str, output: &Path, env: &[(&str, String)]) {
    let mut command = Command::new("bash");
    command.arg("-c").arg(build);
    for (k, v) in env {
        command.env(k, v);
    }
    let built = command.output().unwrap();
    assert!(built.status.success(), "`{build}` failed:\n{}\n{}", text(&built.stdout), text(&built.stderr));
    let check = nodewright(&["plugin", "check", output.to_str().unwrap(), "--consolidation-timeout-ms", "10000", "--selection-timeout-ms", "5000"]);
    assert!(check.status.success(), "plugin check {}:\n{}{}", output.display(), text(&check.stdout), text(&check.stderr));
    assert!(text(&check.stdout).contains("result     ok"), "{}", text(&check.stdout));
    assert!(text(&check.stdout).contains("contract   nodewright:policy@0.3.0\n"), "a new plugin speaks 0.3.0: {}", text(&check.stdout));
}

fn tools() {
    // Installs componentize-py and the npm tools when missing.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("scripts/build-polyglot")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_new_rust_plugin_builds_and_passes_plugin_check() {
    let dir = tempfile::tempdir().unwrap();
    // Share compiled dependencies with the bundled plugins.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins").display().to_string();
    for (name, role) in [("my-selector", "selection"), ("my-consolidator", "consolidation")] {
        let (build, output) = scaffold(dir.path(), name, "rust", role);
        let output = Path::new(&target).join(output.strip_prefix(dir.path().join(name).join("target")).unwrap());
        build_and_check(&build, &output, &[("CARGO_TARGET_DIR", target.clone())]);
    }
}

#[test]
fn a_new_python_plugin_builds_and_passes_plugin_check() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let (build, output) = scaffold(dir.path(), "py-selector", "python", "selection");
    build_and_check(&build, &output, &[]);
}

#[test]
fn a_new_javascript_plugin_builds_and_passes_plugin_check() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    for (name, role) in [("js-selector", "selection"), ("js-consolidator", "consolidation")] {
        let (build, output) = scaffold(dir.path(), name, "js", role);
        build_and_check(&build.replace("npm install", "npm install --prefer-offline --no-audit --no-fund"), &output, &[]);
    }
}

#[test]
fn a_bad_name_or_an_existing_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = nodewright(&["plugin", "new", "My_Plugin", "--lang", "rust", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "error: plugin name `My_Plugin`: use lower-case letters, digits and `-`, starting with a letter\n");
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let out = nodewright(&["plugin", "new", "taken", "--lang", "python", "--dir", dir.path().to_str().unwrap()]);
    assert_eq!(text(&out.stderr), format!("error: {}: already exists\n", dir.path().join("taken").display()));
}
