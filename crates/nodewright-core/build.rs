//! Builds the policy plugins under `plugins/` to `wasm32-wasip2` components,
//! installing the target first when it is missing, and hands their directory
//! to the crate as `NODEWRIGHT_PLUGIN_DIR`. The bundled plugins are embedded
//! in the binary from there; the hostile fixtures are used by the tests.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use std::process::Command;

/// Plugin crates built together share one feature set of the SDK (its
/// features pick the WIT world and contract version), so they are built in
/// one group per world and version.
const GROUPS: &[&[&str]] = &[
    &[
        "cheapest",
        "spot-savvy",
        "graviton-first",
        "newest-first",
        "on-demand-only",
        "fixtures/hostile-loop",
        "fixtures/hostile-memory-bomb",
        "fixtures/hostile-deep-recursion",
        "fixtures/hostile-panic",
        "fixtures/hostile-nan-score",
        "fixtures/hostile-infinite-score",
        "fixtures/hostile-out-of-range",
        "fixtures/hostile-oversized",
        "fixtures/hostile-file-and-socket",
        "fixtures/hostile-catalog-reject",
        "fixtures/hostile-turncoat",
        "fixtures/hostile-printer",
        "fixtures/hostile-sleeper",
        "fixtures/hostile-catalog-trap",
        "fixtures/probe-environment",
    ],
    &["empty-only", "fixtures/hostile-consolidation-liar", "fixtures/hostile-strander", "fixtures/hostile-consolidation-trap"],
    &["fit-aware", "utilization-threshold", "savings-threshold", "balanced", "fixtures/hostile-what-if-flood"],
];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.parent().and_then(Path::parent).expect("crates/nodewright-core lives two levels under the workspace root");
    let plugins = root.join("plugins");
    for watched in ["plugins/Cargo.toml", "plugins/Cargo.lock", "plugins/sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    for group in GROUPS {
        for dir in *group {
            println!("cargo:rerun-if-changed={}", plugins.join(dir).display());
        }
    }

    ensure_target();

    let target_dir = root.join("target").join("plugins");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("plugins");
    fs::create_dir_all(&out_dir).expect("create OUT_DIR/plugins");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for group in GROUPS {
        let mut command = Command::new(&cargo);
        command
            .current_dir(&plugins)
            .args(["build", "--release", "--target", TARGET, "--target-dir"])
            .arg(&target_dir);
        for dir in *group {
            command.args(["-p", package(dir)]);
        }
        clean_cargo_env(&mut command);
        let status = command.status().expect("run cargo to build the plugins");
        assert!(status.success(), "building plugins {group:?} for {TARGET} failed");
        for name in group.iter().map(|dir| package(dir)) {
            let built = target_dir
                .join(TARGET)
                .join("release")
                .join(format!("{}.wasm", name.replace('-', "_")));
            fs::copy(&built, out_dir.join(format!("{name}.wasm")))
                .unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
        }
    }
    println!("cargo:rustc-env=NODEWRIGHT_PLUGIN_DIR={}", out_dir.display());
}

/// The package name of the plugin crate in `dir` (its last path component).
fn package(dir: &str) -> &str {
    dir.rsplit('/').next().unwrap_or(dir)
}

/// Installs the `wasm32-wasip2` standard library with rustup when it is missing.
fn ensure_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("run rustc --print sysroot");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    let installed = Path::new(&sysroot).join("lib/rustlib").join(TARGET).join("lib");
    if installed.is_dir() {
        return;
    }
    println!("cargo:warning=installing the {TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .expect("run rustup target add (rustup must be on PATH)");
    assert!(status.success(), "rustup target add {TARGET} failed");
}

/// The outer build's settings (target dir, flags for the host target) must
/// not leak into the nested build for another target.
fn clean_cargo_env(command: &mut Command) {
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        let leaks = (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || matches!(key.as_ref(), "RUSTFLAGS" | "RUSTDOCFLAGS" | "RUSTC_WORKSPACE_WRAPPER" | "TARGET" | "HOST" | "OUT_DIR" | "OPT_LEVEL" | "PROFILE" | "DEBUG" | "NUM_JOBS");
        if leaks {
            command.env_remove(key.as_ref());
        }
    }
}
