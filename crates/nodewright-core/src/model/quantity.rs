//! Kubernetes resource quantities (`500m`, `4`, `16Gi`, `1.5G`).

/// Parse a quantity into its value in base units (cores, bytes, counts).
pub fn parse_quantity(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a quantity"))?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "E" => 1e18,
        "Ei" => 1024f64.powi(6),
        other => return Err(format!("`{text}`: unknown suffix `{other}`")),
    };
    let value = value * scale;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("`{text}` must be a non-negative quantity"));
    }
    Ok(value)
}

/// Largest CPU quantity accepted, in millicores (a million cores).
pub const MAX_CPU_MILLIS: u64 = 1_000_000_000;
/// Largest byte quantity accepted (1 EiB).
pub const MAX_BYTES: u64 = 1 << 60;

/// CPU quantity in millicores.
pub fn parse_cpu_millis(text: &str) -> Result<u64, String> {
    parse_quantity(text).and_then(|cores| whole(text, cores * 1000.0, MAX_CPU_MILLIS, "1000000 cores"))
}

/// Memory (or storage) quantity in bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    parse_quantity(text).and_then(|bytes| whole(text, bytes, MAX_BYTES, "1Ei"))
}

/// `value` rounded up, refused above `max` (named `max_text`) rather than
/// saturated or wrapped.
fn whole(text: &str, value: f64, max: u64, max_text: &str) -> Result<u64, String> {
    let value = value.ceil();
    if value > max as f64 {
        return Err(format!("`{}` is larger than the largest accepted quantity ({max_text})", text.trim()));
    }
    Ok(value as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_in_kubernetes_notation() {
        assert_eq!(parse_cpu_millis("500m"), Ok(500));
        assert_eq!(parse_cpu_millis("2"), Ok(2000));
        assert_eq!(parse_cpu_millis("1.5"), Ok(1500));
        assert_eq!(parse_bytes("16Gi"), Ok(16 << 30));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("12Qi"), Err("`12Qi`: unknown suffix `Qi`".into()));
        assert_eq!(parse_bytes("lots"), Err("`lots` is not a quantity".into()));
        assert_eq!(parse_bytes("2Ei"), Err("`2Ei` is larger than the largest accepted quantity (1Ei)".into()));
        assert_eq!(parse_cpu_millis("2000000"), Err("`2000000` is larger than the largest accepted quantity (1000000 cores)".into()));
    }

    #[test]
    fn durations_too_long_to_hold_are_refused_not_panicked_on() {
        assert_eq!(parse_duration("1h30m"), Ok(std::time::Duration::from_secs(5400)));
        assert_eq!(parse_duration("2562047h"), Ok(std::time::Duration::from_secs(2_562_047 * 3600)));
        assert_eq!(parse_duration("2562048h"), Err("`2562048h` is longer than the longest accepted duration (2562047h)".into()));
        assert_eq!(
            parse_duration("99999999999999999999999h"),
            Err("`99999999999999999999999h` is longer than the longest accepted duration (2562047h)".into())
        );
        assert_eq!(checked_seconds(1e300), Err("is longer than the longest accepted duration (2562047h)".into()));
        assert_eq!(checked_seconds(f64::NAN), Err("is not a non-negative number of seconds".into()));
    }
}

/// Parse a Go-style duration (`720h`, `30s`, `1h30m`, `500ms`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(split);
        let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 30s, 15m or 720h"))?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("`{text}` is not a duration like 30s, 15m or 720h")),
        };
        total += value * seconds;
        rest = next;
    }
    checked_seconds(total).map_err(|m| format!("`{}` {m}", text.trim()))
}

/// The longest duration accepted anywhere (a Go `time.Duration` holds no more).
pub const MAX_DURATION_SECONDS: f64 = 9_223_372_036.0;

/// `seconds` as a `Duration`, refused (not panicking) when it is negative,
/// not a number, or longer than [`MAX_DURATION_SECONDS`] (about 292 years).
pub fn checked_seconds(seconds: f64) -> Result<std::time::Duration, String> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err("is not a non-negative number of seconds".into());
    }
    if seconds > MAX_DURATION_SECONDS {
        return Err("is longer than the longest accepted duration (2562047h)".into());
    }
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

#[cfg(test)]
mod duration_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations_parse_in_go_notation() {
        assert_eq!(parse_duration("720h"), Ok(Duration::from_secs(720 * 3600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3d"), Err("`3d` is not a duration like 30s, 15m or 720h".into()));
    }
}
