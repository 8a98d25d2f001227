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
        other => return Err(format!("`{text}`: unknown suffix `{other}`")),
    };
    let value = value * scale;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("`{text}` must be a non-negative quantity"));
    }
    Ok(value)
}

/// CPU quantity in millicores.
pub fn parse_cpu_millis(text: &str) -> Result<u64, String> {
    parse_quantity(text).map(|cores| (cores * 1000.0).ceil() as u64)
}

/// Memory (or storage) quantity in bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    parse_quantity(text).map(|bytes| bytes.ceil() as u64)
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
    Ok(std::time::Duration::from_secs_f64(total))
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
