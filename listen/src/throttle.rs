//! At most one log line per interval for events that can repeat thousands of times a second
//! (accept errors, evictions), with a count of the lines held back in between.

use std::time::Duration;

use tokio::time::Instant;

/// Lets one event through per interval and counts the ones it holds back.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// One event per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            held: 0,
        }
    }

    /// Whether an event at `now` may be logged: `Some(held)` with the number of events held
    /// back since the last one that was, or `None` (it is counted as held back).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_with_the_count_of_those_held_back() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut throttle = Throttle::new(Duration::from_secs(5));
        assert_eq!(throttle.admit(at(0)), Some(0));
        for ms in 1..=1000 {
            assert_eq!(throttle.admit(at(ms)), None);
        }
        assert_eq!(throttle.admit(at(4_999)), None);
        assert_eq!(throttle.admit(at(5_000)), Some(1001));
        assert_eq!(throttle.admit(at(20_000)), Some(0));
    }
}
