//! Per-IP and per-buyer rate limits: token buckets (GCRA, `governor`), answered 429 with
//! `Retry-After`. Keys live in a concurrent map that a background task prunes.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::error::ApiError;
use crate::domain::UserId;
use crate::metrics::{RateLimitScope as Scope, METRICS};

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

pub struct Limiter<K: Hash + Eq + Clone> {
    inner: Option<Keyed<K>>,
    scope: Scope,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// `per_second` 0 disables the limit; `burst` defaults to one second's worth.
    pub fn new(scope: Scope, per_second: u32, burst: Option<u32>) -> Self {
        let inner = NonZeroU32::new(per_second).map(|rate| {
            let burst = burst.and_then(NonZeroU32::new).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Limiter { inner, scope }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        let Some(limiter) = &self.inner else { return Ok(()) };
        limiter.check_key(key).map_err(|not_until| {
            METRICS.observe_rate_limited(self.scope);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            // Whole seconds, rounded up: Retry-After has no fractions, and 0 would invite a retry storm.
            ApiError::RateLimited((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
        })
    }

    /// Forgets keys whose buckets are full again, so the map holds only recent clients.
    pub fn prune(&self) {
        if let Some(limiter) = &self.inner {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

pub struct RateLimits {
    pub ip: Limiter<IpAddr>,
    pub user: Limiter<UserId>,
    pub trust_forwarded_for: bool,
}

impl RateLimits {
    pub fn unlimited() -> Self {
        RateLimits {
            ip: Limiter::new(Scope::Ip, 0, None),
            user: Limiter::new(Scope::User, 0, None),
            trust_forwarded_for: false,
        }
    }

    pub fn prune(&self) {
        self.ip.prune();
        self.user.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_beyond_the_bucket_is_refused_per_key() {
        let limiter = Limiter::new(Scope::Ip, 1, Some(3));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(limiter.check(&a).is_ok());
        }
        match limiter.check(&a) {
            Err(ApiError::RateLimited(seconds)) => assert_eq!(seconds, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limiter.check(&b).is_ok(), "another key has its own bucket");
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = Limiter::new(Scope::User, 0, None);
        let user = UserId::parse("u").expect("valid");
        assert!((0..10_000).all(|_| limiter.check(&user).is_ok()));
    }
}
