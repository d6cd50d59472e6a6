//! A warning that a hostile or broken peer could repeat thousands of times a second, logged
//! at most once per period with a count of the ones held back.

use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Logs a warning at most once per [`Throttle::PERIOD`], counting those held back.
#[derive(Default)]
pub struct Throttle {
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    /// The shortest time between two warnings of one throttle.
    pub const PERIOD: Duration = Duration::from_secs(10);

    /// Logs `what` as a warning unless one was logged within the period. Returns whether it
    /// was logged.
    pub fn warn(&self, what: &str) -> bool {
        let mut s = self.state.lock();
        if s.0.is_some_and(|t| t.elapsed() < Self::PERIOD) {
            s.1 += 1;
            return false;
        }
        let held_back = std::mem::take(&mut s.1);
        s.0 = Some(Instant::now());
        drop(s);
        if held_back > 0 {
            tracing::warn!(
                "{what} (and {held_back} more like it in the last {:?})",
                Self::PERIOD
            );
        } else {
            tracing::warn!("{what}");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_burst_logs_once() {
        let t = super::Throttle::default();
        assert!(t.warn("first"));
        assert!(!t.warn("second"));
        assert!(!t.warn("third"));
    }
}
