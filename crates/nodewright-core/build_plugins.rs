//! Building plugin crates of `plugins/` to `wasm32-wasip2` components, for
//! the build scripts of `nodewright-core` (the bundled plugins it embeds)
//! and `nodewright-test-plugins` (the examples and hostile fixtures the
//! tests load). Included by both with `#[path]`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target plugins build for.
const TARGET: &str = "wasm32-wasip2";

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

/// Build `groups` (plugin crates under `plugins/`, one cargo call per
/// group: crates built together share one feature set of the SDK, whose
/// features pick the WIT world and contract version) and copy the
/// components to `OUT_DIR/plugins`, installing the target first if it is
/// missing. Returns that directory.
pub fn build(groups: &[&[&str]]) -> PathBuf {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.parent().and_then(Path::parent).expect("crates/* live two levels under the workspace root");
    let plugins = root.join("plugins");
    for watched in ["plugins/Cargo.toml", "plugins/Cargo.lock", "plugins/sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    for group in groups {
        for dir in *group {
            println!("cargo:rerun-if-changed={}", plugins.join(dir).display());
        }
    }

    ensure_target();

    let target_dir = root.join("target").join("plugins");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("plugins");
    fs::create_dir_all(&out_dir).expect("create OUT_DIR/plugins");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for group in groups {
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
    out_dir
}
