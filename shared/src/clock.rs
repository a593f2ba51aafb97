//! Time, in the few forms the product uses: epoch seconds as a float (seed
//! 001's timestamps), epoch milliseconds (Redis scores, lock and rate
//! windows), a `Duration` in whole milliseconds (script arguments), and one
//! rounding for every latency a response reports (0.1 ms).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch as a float, the timestamp format of seed 001.
pub fn now_epoch_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

/// A duration in whole milliseconds, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A latency in milliseconds, rounded to 0.1 ms as every response reports it.
pub fn round_ms(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

/// An elapsed duration as a reported latency (see [`round_ms`]).
pub fn elapsed_ms(d: Duration) -> f64 {
    round_ms(d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_rounded_to_a_tenth_of_a_millisecond() {
        assert_eq!(round_ms(12.345), 12.3);
        assert_eq!(elapsed_ms(Duration::from_micros(1_250)), 1.3);
    }

    #[test]
    fn whole_milliseconds_saturate() {
        assert_eq!(millis(Duration::from_millis(1_500)), 1_500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
