//! Property test: every command-line value parses or is refused, never a panic.

use clap::Parser;
use proptest::prelude::*;

#[path = "../../nodewright-core/tests/common/numbers.rs"]
mod numbers;
use numbers::number_text;

proptest! {
    #[test]
    fn command_line_values_parse_or_are_refused(value in number_text(), latency_low in number_text(), latency_high in number_text()) {
        for flag in ["--selection-timeout-ms", "--consolidation-timeout-ms", "--memory-limit-mib", "--rollback-window", "--rollback-failure-percent"] {
            let _ = nodewright::cli::Cli::try_parse_from(["nodewright", "plugin", "list", flag, value.as_str()]);
        }
        let range = format!("{latency_low}-{latency_high}");
        let _ = nodewright::cli::Cli::try_parse_from(["nodewright", "simulate", "--boot-latency", range.as_str()]);
        let _ = nodewright::cli::Cli::try_parse_from(["nodewright", "simulate", "--interruption-scale", value.as_str()]);
        let time = format!("{value}s");
        let _ = nodewright::cli::Cli::try_parse_from(["nodewright", "plugin", "bench", "x.wasm", "--time", time.as_str()]);
    }
}
