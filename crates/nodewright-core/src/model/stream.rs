//! Seeded random draws keyed by what they are for, so that two runs that
//! make different decisions still face the same world: the boot latency of
//! the n-th launch, whether a spot pool is reclaimed in a given hour, how a
//! family's spot price moves in a given step, each come from their own
//! stream and do not depend on the order anything else was drawn in.

/// The kinds of draw, one stream each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Boot latency, keyed by launch index.
    Boot = 1,
    /// Launch capacity failures, keyed by (offering, launch index).
    Capacity = 2,
    /// Spot reclaims, keyed by (offering, hour).
    Interruption = 3,
    /// Where in its hour a reclaim falls, keyed by (offering, hour).
    InterruptionAt = 4,
    /// Spot price moves, keyed by (family, step).
    Price = 5,
    /// Whether a rebalance recommendation precedes a reclaim, keyed by (offering, hour).
    Rebalance = 6,
    /// How long before the reclaim it comes, keyed by (offering, hour).
    RebalanceLead = 7,
    /// The hourly move of a spot pool's capacity, keyed by (offering, hour).
    SpotCapacity = 8,
    /// The random part of a NodeClaim's name, keyed by (claim index, 0).
    ClaimName = 9,
}

/// A uniform draw in [0, 1) for `stream` under `seed`, keyed by (`a`, `b`).
/// The same arguments always give the same value.
pub fn unit(seed: u64, stream: Stream, a: u64, b: u64) -> f64 {
    // 53 random bits → [0, 1).
    (bits(seed, stream, a, b) >> 11) as f64 / (1u64 << 53) as f64
}

/// 64 uniform random bits for `stream` under `seed`, keyed by (`a`, `b`).
pub fn bits(seed: u64, stream: Stream, a: u64, b: u64) -> u64 {
    let mut x = seed;
    for word in [stream as u64, a, b] {
        x = splitmix(x ^ splitmix(word));
    }
    x
}

/// A key for a name (a family, a pool), stable across runs and platforms (FNV-1a).
pub fn key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// SplitMix64's finaliser: a bijective mix of 64 bits.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_depend_on_their_key_only_and_are_uniform() {
        assert_eq!(unit(7, Stream::Boot, 3, 0), unit(7, Stream::Boot, 3, 0));
        assert_ne!(unit(7, Stream::Boot, 3, 0), unit(7, Stream::Boot, 4, 0));
        assert_ne!(unit(7, Stream::Boot, 3, 0), unit(7, Stream::Price, 3, 0));
        assert_ne!(unit(7, Stream::Boot, 3, 0), unit(8, Stream::Boot, 3, 0));
        let n = 100_000;
        let draws: Vec<f64> = (0..n).map(|i| unit(1, Stream::Interruption, i, 5)).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        let below = draws.iter().filter(|&&d| d < 0.1).count() as f64 / n as f64;
        assert!((below - 0.1).abs() < 0.01, "P(d < 0.1) = {below}");
        assert_ne!(key("m5"), key("m6"));
    }
}
