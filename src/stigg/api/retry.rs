//! When to call Stigg's API again after a failure: 429, 5xx, timeouts and transport failures
//! may pass; a refused key or request never does (see [`ApiError::is_retryable`]).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::ApiError;

/// How many attempts a call gets and within how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1: no retry).
    pub attempts: u32,
    /// No retry starts (nor waits for a rate-limit slot) past this time after the first attempt.
    pub budget: Duration,
    /// The first backoff's ceiling; each later one doubles it, up to `cap`.
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    /// For a read on a check's path: one attempt, and no wait for a rate-limit slot longer
    /// than `budget`: a caller gets a typed error at once, not a slow answer.
    pub fn fail_fast(budget: Duration) -> Self {
        Self { attempts: 1, budget, base: Duration::from_millis(100), cap: Duration::from_secs(1) }
    }

    /// For the backfill: up to 10 attempts within 5 minutes, backoffs up to 30 s. Stigg sends
    /// no `Retry-After` on its Edge API's 429s
    /// (<https://docs.stigg.io/api-and-sdks/integration/graphql/edge-api-rate-limits>) and
    /// documents none for api.stigg.io, so the backoff must be long enough on its own for a
    /// per-minute window to pass.
    pub fn patient() -> Self {
        Self {
            attempts: 10,
            budget: Duration::from_secs(300),
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }

    /// The wait before attempt `failed + 1` after `failed` attempts ended in `error`: the
    /// server's `Retry-After` when it sent one, else "full jitter" (a uniformly random wait up
    /// to the exponential ceiling), so clients that failed together do not retry together.
    pub fn delay(&self, failed: u32, error: &ApiError) -> Duration {
        if let ApiError::RateLimited { retry_after: Some(after) } = error {
            return *after;
        }
        let ceiling = self.ceiling(failed);
        ceiling.mul_f64(random_unit())
    }

    /// The exponential ceiling after `failed` attempts: base, 2 base, 4 base, ..., at most cap.
    pub fn ceiling(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(20);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }
}

/// A number in [0, 1) from the standard library's per-instance random hasher keys (no RNG
/// dependency for a jitter).
fn random_unit() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_honoured_else_full_jitter_under_a_doubling_ceiling() {
        let p = RetryPolicy {
            attempts: 5,
            budget: Duration::from_secs(60),
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        let after = ApiError::RateLimited { retry_after: Some(Duration::from_secs(7)) };
        assert_eq!(p.delay(1, &after), Duration::from_secs(7));
        let ceilings: Vec<_> = (1..=6).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        let unavailable = ApiError::Unavailable { status: 503 };
        let delays: Vec<_> = (0..200).map(|_| p.delay(3, &unavailable)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(400)), "{delays:?}");
        // Jittered: not one fixed value (200 draws from [0, 400 ms) are all equal with
        // probability ~0).
        assert!(delays.iter().any(|d| *d != delays[0]));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(1));
    }
}
