//! The example plugins and hostile fixtures of `plugins/`, built for the
//! tests (the bundled plugins are `nodewright_core::policy::BUILT_PLUGIN_DIR`).

/// Where the build put the example and fixture components (`NAME.wasm`).
pub const DIR: &str = env!("NODEWRIGHT_TEST_PLUGIN_DIR");
