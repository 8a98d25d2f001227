//! Builds the bundled policy plugins under `plugins/` to `wasm32-wasip2`
//! components and hands their directory to the crate as
//! `NODEWRIGHT_PLUGIN_DIR`; they are embedded in the binary from there.
//! The examples and hostile fixtures the tests load are built by
//! `nodewright-test-plugins`, a dev-dependency, so `cargo run` does not
//! wait for them.

#[path = "build_plugins.rs"]
mod build_plugins;

/// One group per WIT world and contract version (see `build_plugins::build`).
const GROUPS: &[&[&str]] = &[
    &["cheapest", "spot-savvy", "graviton-first", "on-demand-only"],
    &["empty-only"],
    &["utilization-threshold", "savings-threshold", "balanced"],
    &["commitment-aware", "spot-diversified"],
    &["disruption-aware"],
];

fn main() {
    let dir = build_plugins::build(GROUPS);
    println!("cargo:rustc-env=NODEWRIGHT_PLUGIN_DIR={}", dir.display());
}
