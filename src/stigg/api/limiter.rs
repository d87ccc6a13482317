//! A client-side rate limiter per operation: a token bucket kept below Stigg's per-operation,
//! per-minute limit (<https://docs.stigg.io/api-and-sdks/integration/graphql/rate-limits>),
//! that halves its rate when Stigg answers 429 anyway (another client shares the key's limit)
//! and climbs back as calls pass.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::graphql::Operation;

/// Calls per minute per operation that this client allows itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    per_minute: BTreeMap<Operation, u32>,
}

/// Stigg documents no limit for `entitlementsState`, `customers` or `customerResources` on
/// api.stigg.io (not documented; assumed the read tier of its table, 1,500-3,000 per minute
/// for `subscriptions`, `getCustomerByRefId`). 1,000 per minute stays comfortably below the
/// lowest of them and leaves room for the key's other users.
pub const DEFAULT_PER_MINUTE: u32 = 1_000;

impl Default for RateLimits {
    fn default() -> Self {
        Self::uniform(DEFAULT_PER_MINUTE)
    }
}

impl RateLimits {
    /// The same limit for every operation (at least 1 per minute).
    pub fn uniform(per_minute: u32) -> Self {
        Self { per_minute: Operation::ALL.iter().map(|op| (*op, per_minute.max(1))).collect() }
    }

    pub fn with(mut self, op: Operation, per_minute: u32) -> Self {
        self.per_minute.insert(op, per_minute.max(1));
        self
    }

    pub fn per_minute(&self, op: Operation) -> u32 {
        self.per_minute.get(&op).copied().unwrap_or(DEFAULT_PER_MINUTE)
    }
}

/// One operation's bucket. Tokens may go negative: a caller reserves the next free slot and
/// sleeps until it, so waiters are served in order without polling.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// The configured rate, tokens per second.
    ceiling: f64,
    /// The rate now: the ceiling, or less after 429s.
    rate: f64,
    /// One second's worth (at least one call): the burst allowed after a quiet time.
    capacity: f64,
    tokens: f64,
    last: Instant,
    /// No call before this (a 429's `Retry-After`, or its backoff).
    hold_until: Option<Instant>,
}

impl Bucket {
    pub fn new(per_minute: u32, now: Instant) -> Self {
        let ceiling = f64::from(per_minute.max(1)) / 60.0;
        let capacity = ceiling.max(1.0);
        Self { ceiling, rate: ceiling, capacity, tokens: capacity, last: now, hold_until: None }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// How long a call at `now` has to wait for its slot; the slot is reserved only when that
    /// is at most `max_wait` (else nothing is taken and the wait is returned as the error).
    pub fn reserve(&mut self, now: Instant, max_wait: Duration) -> Result<Duration, Duration> {
        self.refill(now);
        let held = self.hold_until.map(|t| t.saturating_duration_since(now)).unwrap_or_default();
        let short = (1.0 - self.tokens).max(0.0);
        let wait = held.max(Duration::from_secs_f64(short / self.rate));
        if wait > max_wait {
            return Err(wait);
        }
        self.tokens -= 1.0;
        Ok(wait)
    }

    /// Stigg answered 429: halve the rate (down to 1/32 of the ceiling) and call nothing more
    /// for `hold`. The 429s of calls already in flight during a hold are the same overload:
    /// they extend the hold but halve nothing more.
    pub fn throttled(&mut self, now: Instant, hold: Duration) {
        self.refill(now);
        if self.hold_until.is_none_or(|t| t <= now) {
            self.rate = (self.rate / 2.0).max(self.ceiling / 32.0);
        }
        self.tokens = self.tokens.min(0.0);
        let until = now.checked_add(hold).unwrap_or(now);
        self.hold_until = Some(self.hold_until.map_or(until, |t| t.max(until)));
    }

    /// A call passed: climb back towards the ceiling, 1/50 of it per call.
    pub fn succeeded(&mut self) {
        self.rate = (self.rate + self.ceiling / 50.0).min(self.ceiling);
    }

    /// The rate now, calls per minute.
    pub fn per_minute(&self) -> f64 {
        self.rate * 60.0
    }
}

/// A bucket per operation.
#[derive(Debug)]
pub struct RateLimiter {
    buckets: BTreeMap<Operation, Mutex<Bucket>>,
}

impl RateLimiter {
    pub fn new(limits: &RateLimits) -> Self {
        let now = Instant::now();
        let buckets = Operation::ALL.iter().map(|op| (*op, Mutex::new(Bucket::new(limits.per_minute(*op), now))));
        Self { buckets: buckets.collect() }
    }

    fn bucket(&self, op: Operation) -> std::sync::MutexGuard<'_, Bucket> {
        // A poisoned bucket only held numbers: keep using them.
        self.buckets[&op].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for `op`'s next slot, unless that is more than `max_wait` away: then returns how
    /// long it would have been, having taken nothing.
    pub async fn acquire(&self, op: Operation, max_wait: Duration) -> Result<(), Duration> {
        let wait = self.bucket(op).reserve(Instant::now(), max_wait)?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    pub fn throttled(&self, op: Operation, hold: Duration) {
        self.bucket(op).throttled(Instant::now(), hold);
    }

    pub fn succeeded(&self, op: Operation) {
        self.bucket(op).succeeded();
    }

    /// `op`'s rate now, calls per minute (lower than configured after 429s).
    pub fn per_minute(&self, op: Operation) -> f64 {
        self.bucket(op).per_minute()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LIMIT: Duration = Duration::from_secs(3600);

    #[test]
    fn a_burst_of_one_seconds_worth_then_one_slot_per_interval() {
        let t0 = Instant::now();
        let mut b = Bucket::new(600, t0); // 10 per second
        for _ in 0..10 {
            assert_eq!(b.reserve(t0, NO_LIMIT), Ok(Duration::ZERO));
        }
        // Reserved slots are handed out in order, 100 ms apart.
        let waits: Vec<_> = (0..3).map(|_| b.reserve(t0, NO_LIMIT).unwrap().as_millis()).collect();
        assert_eq!(waits, [100, 200, 300]);
        // A second later the reservations are paid back and one more second's worth accrues,
        // never more than the capacity.
        let later = t0 + Duration::from_secs(10);
        let free = (0..20).take_while(|_| b.reserve(later, Duration::ZERO).is_ok()).count();
        assert_eq!(free, 10);
    }

    #[test]
    fn a_wait_over_the_callers_limit_takes_nothing() {
        let t0 = Instant::now();
        let mut b = Bucket::new(60, t0); // 1 per second
        assert!(b.reserve(t0, Duration::ZERO).is_ok());
        let wait = b.reserve(t0, Duration::from_millis(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // Nothing was reserved by the refusal: the next caller still waits one second.
        assert_eq!(b.reserve(t0, NO_LIMIT), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn a_429_holds_calls_back_halves_the_rate_and_successes_restore_it() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1200, t0);
        b.throttled(t0, Duration::from_secs(2));
        assert_eq!(b.per_minute(), 600.0);
        assert_eq!(b.reserve(t0, NO_LIMIT), Ok(Duration::from_secs(2)));
        b.throttled(t0 + Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(b.per_minute(), 600.0, "a 429 during the hold halves nothing more");
        let after = t0 + Duration::from_secs(3);
        for _ in 0..10 {
            b.throttled(after, Duration::ZERO);
        }
        assert_eq!(b.per_minute(), 1200.0 / 32.0, "never below 1/32 of the configured rate");
        for _ in 0..100 {
            b.succeeded();
        }
        assert_eq!(b.per_minute(), 1200.0, "never above the configured rate");
    }

    #[test]
    fn limits_are_per_operation_with_a_default() {
        let limits = RateLimits::default().with(Operation::Customers, 30);
        assert_eq!(limits.per_minute(Operation::Customers), 30);
        assert_eq!(limits.per_minute(Operation::EntitlementsState), DEFAULT_PER_MINUTE);
        assert_eq!(RateLimits::uniform(0).per_minute(Operation::CustomerResources), 1);
    }
}
