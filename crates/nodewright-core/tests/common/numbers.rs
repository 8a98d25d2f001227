//! A proptest strategy shared by the parser property tests of every crate.

use proptest::prelude::*;

/// Numbers as a user might write them: huge, tiny, negative, exponents,
/// special values, leading dots, garbage.
pub fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        (1u32..400).prop_map(|e| format!("1e{e}")),
        (1u32..60).prop_map(|n| "9".repeat(n as usize)),
        Just("NaN".to_string()),
        Just("-0".to_string()),
        Just(".5".to_string()),
        "[0-9.eE+-]{0,12}",
    ]
}
