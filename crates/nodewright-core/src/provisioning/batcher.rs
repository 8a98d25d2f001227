//! Batches pending-pod arrivals: a pass starts once arrivals have been quiet
//! for `idle`, or `max` after the first arrival, whichever is first — so a
//! burst of pods is scheduled together onto fewer, better-packed nodes.

use std::time::Duration;

/// Batch windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatcherSettings {
    /// Quiet time that closes a batch.
    pub idle: Duration,
    /// Longest a batch stays open.
    pub max: Duration,
}

impl Default for BatcherSettings {
    fn default() -> Self {
        BatcherSettings { idle: Duration::from_secs(1), max: Duration::from_secs(10) }
    }
}

/// The batch window state, on whatever clock the caller uses.
#[derive(Debug, Clone)]
pub struct Batcher {
    settings: BatcherSettings,
    first: Option<Duration>,
    last: Option<Duration>,
}

impl Batcher {
    /// An empty batcher.
    pub fn new(settings: BatcherSettings) -> Self {
        Batcher { settings, first: None, last: None }
    }

    /// A pending pod appeared at `now`.
    pub fn arrival(&mut self, now: Duration) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the open batch closes, if one is open.
    pub fn due(&self) -> Option<Duration> {
        Some((self.last? + self.settings.idle).min(self.first? + self.settings.max))
    }

    /// True (and the batch is reset) when the batch is due at `now`.
    pub fn take(&mut self, now: Duration) -> bool {
        match self.due() {
            Some(due) if now >= due => {
                self.first = None;
                self.last = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn a_batch_closes_after_one_idle_second() {
        let mut b = Batcher::new(BatcherSettings::default());
        assert!(!b.take(s(0.0)));
        b.arrival(s(0.0));
        b.arrival(s(0.5));
        assert_eq!(b.due(), Some(s(1.5)));
        assert!(!b.take(s(1.4)));
        assert!(b.take(s(1.5)));
        assert_eq!(b.due(), None);
    }

    #[test]
    fn a_steady_stream_is_cut_at_ten_seconds() {
        let mut b = Batcher::new(BatcherSettings::default());
        for i in 0..30 {
            b.arrival(s(i as f64 * 0.5));
        }
        assert_eq!(b.due(), Some(s(10.0)));
        assert!(b.take(s(14.5)));
    }
}
