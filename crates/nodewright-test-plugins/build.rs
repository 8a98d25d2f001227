//! Builds the example plugins and the hostile fixtures under `plugins/` to
//! `wasm32-wasip2` components for the tests, and hands their directory to
//! the crate as `NODEWRIGHT_TEST_PLUGIN_DIR`.

#[path = "../nodewright-core/build_plugins.rs"]
mod build_plugins;

/// One group per WIT world and contract version (see `build_plugins::build`).
const GROUPS: &[&[&str]] = &[
    &[
        "newest-first",
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
    &["fixtures/hostile-consolidation-liar", "fixtures/hostile-strander", "fixtures/hostile-consolidation-trap"],
    &["fit-aware", "fixtures/hostile-what-if-flood"],
    &["fixtures/backlog-spot"],
];

fn main() {
    let dir = build_plugins::build(GROUPS);
    println!("cargo:rustc-env=NODEWRIGHT_TEST_PLUGIN_DIR={}", dir.display());
}
