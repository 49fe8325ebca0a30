//! Log lines a failure can repeat per request (a full disk, a backend down) are throttled: one
//! line per interval, carrying how many were suppressed since the last, so an outage under a
//! stampede costs a few lines a second instead of hundreds of thousands.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::domain::now_millis;

pub struct Throttle {
    every_ms: i64,
    next_at: AtomicI64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub const fn new(every_ms: i64) -> Self {
        Throttle {
            every_ms,
            next_at: AtomicI64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        let now = now_millis();
        let next = self.next_at.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_at
                .compare_exchange(next, now + self.every_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_counted() {
        let throttle = Throttle::new(60_000);
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..999 {
            assert_eq!(throttle.allow(), None);
        }
        throttle.next_at.store(0, Ordering::Relaxed);
        assert_eq!(throttle.allow(), Some(999));
    }
}
