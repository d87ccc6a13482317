//! The shared secrets Stigg sends in the `Stigg-Webhooks-Secret` header.
//!
//! Stigg signs nothing (no HMAC, no timestamp): this header and the idempotency key are the only
//! defences, so the comparison is constant time and the secrets never reach a log.

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::metrics;

/// One or more accepted secrets. Several are live at once during a rotation.
///
/// Only SHA-256 digests are kept: comparing fixed-size digests in constant time does not leak the
/// secrets' lengths, and the plaintext does not linger in memory.
#[derive(Clone)]
pub struct SecretSet {
    digests: Vec<[u8; 32]>,
    shortest: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("no secret given (expected one or more, separated by commas)")]
    Empty,
}

/// Stigg's generated secrets are long random strings; shorter ones are worth a warning at start.
pub const RECOMMENDED_SECRET_LEN: usize = 16;

impl SecretSet {
    /// Parses a comma-separated list; blanks around each secret are ignored.
    pub fn parse(list: &str) -> Result<Self, SecretError> {
        let mut digests = Vec::new();
        let mut shortest = usize::MAX;
        for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            shortest = shortest.min(s.len());
            digests.push(Sha256::digest(s.as_bytes()).into());
        }
        if digests.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { digests, shortest })
    }

    /// True when `presented` equals one of the secrets. Every secret is compared, whatever
    /// matched, so timing says nothing about which one (or how much of one) matched.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let candidate: [u8; 32] = Sha256::digest(presented).into();
        let mut matched = Choice::from(0);
        for d in &self.digests {
            matched |= d.ct_eq(&candidate);
        }
        matched.into()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// True when some secret is shorter than [`RECOMMENDED_SECRET_LEN`] (worth a start-up warning).
    pub fn has_weak_secret(&self) -> bool {
        self.shortest < RECOMMENDED_SECRET_LEN
    }

    /// The same secrets, in any order (compares digests only).
    fn same_as(&self, other: &SecretSet) -> bool {
        let mut a = self.digests.clone();
        let mut b = other.digests.clone();
        a.sort_unstable();
        b.sort_unstable();
        a == b
    }
}

/// Why a secret list could not be read; the cause is kept for the log.
#[derive(Debug, thiserror::Error)]
#[error("reading the webhook secrets from {from} failed: {detail}")]
pub struct FetchError {
    pub from: String,
    pub detail: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Where a secret list that can change under a running function comes from (the SSM parameter
/// in production, see [`crate::aws::SecretParameter`]).
#[async_trait::async_trait]
pub trait SecretFetch: Send + Sync {
    async fn fetch(&self) -> Result<SecretSet, FetchError>;
}

/// How often a changeable list is re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// At most one read per this interval, however many unknown secrets arrive
    /// (`SECRET_REFRESH_SECONDS`).
    pub min_interval: Duration,
    /// A list older than this is re-read before it is used (`SECRET_MAX_AGE_SECONDS`).
    pub max_age: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self { min_interval: Duration::from_secs(60), max_age: Duration::from_secs(300) }
    }
}

/// The secrets a warm receiver checks against, kept fresh without a redeploy.
///
/// A rotation changes the SSM parameter, not the function, so nothing recycles the execution
/// environments: a receiver that read the list at its cold start would answer 401 to the new
/// secret until Lambda happened to recycle it, and Stigg gives up within ~2 minutes. So the list
/// is re-read (1) when a presented secret matches none of the cached ones and (2) once it is
/// older than `max_age`; both at most once per `min_interval`, so a flood of wrong secrets costs
/// one GetParameter per interval per execution environment. A failed read keeps the cached list
/// (logged at WARN, counted as `SecretRefreshes{Outcome=failed}`).
pub struct Secrets {
    current: RwLock<Arc<SecretSet>>,
    refresh: Option<Refresher>,
}

struct Refresher {
    source: Box<dyn SecretFetch>,
    policy: RefreshPolicy,
    clock: Mutex<RefreshClock>,
    /// One read at a time; others wait for it and use its result.
    in_flight: tokio::sync::Mutex<()>,
}

struct RefreshClock {
    loaded_at: Instant,
    last_attempt: Option<Instant>,
}

/// Why a re-read was attempted (logged).
#[derive(Debug, Clone, Copy)]
enum Cause {
    UnknownSecret,
    MaxAge,
}

impl Secrets {
    /// A list that never changes (an inline `STIGG_WEBHOOK_SECRET`).
    pub fn fixed(set: SecretSet) -> Self {
        warn_if_weak(&set);
        Self { current: RwLock::new(Arc::new(set)), refresh: None }
    }

    /// Reads the list once now (a failure here fails the cold start) and keeps it fresh.
    pub async fn refreshing(source: Box<dyn SecretFetch>, policy: RefreshPolicy) -> Result<Self, FetchError> {
        let set = source.fetch().await?;
        warn_if_weak(&set);
        let clock = Mutex::new(RefreshClock { loaded_at: Instant::now(), last_attempt: None });
        let refresh = Refresher { source, policy, clock, in_flight: tokio::sync::Mutex::new(()) };
        Ok(Self { current: RwLock::new(Arc::new(set)), refresh: Some(refresh) })
    }

    /// The list in force now.
    pub fn current(&self) -> Arc<SecretSet> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True when `presented` is one of the live secrets, re-reading the list first when it is
    /// too old, and once more (rate-limited) when `presented` matches none of the cached ones.
    pub async fn verify(&self, presented: &[u8]) -> bool {
        let Some(refresh) = &self.refresh else { return self.current().verify(presented) };
        if refresh.is_stale() {
            self.refresh(refresh, Cause::MaxAge).await;
        }
        if self.current().verify(presented) {
            return true;
        }
        self.refresh(refresh, Cause::UnknownSecret).await;
        self.current().verify(presented)
    }

    async fn refresh(&self, refresh: &Refresher, cause: Cause) {
        let _one_at_a_time = refresh.in_flight.lock().await;
        if !refresh.take_attempt() {
            return;
        }
        match refresh.source.fetch().await {
            Ok(set) => {
                let changed = !set.same_as(&self.current());
                warn_if_weak(&set);
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
                refresh.clock.lock().unwrap_or_else(|e| e.into_inner()).loaded_at = Instant::now();
                let outcome = if changed { "changed" } else { "unchanged" };
                tracing::info!(cause = ?cause, outcome, secrets = self.current().len(), "webhook secrets re-read");
                metrics::secret_refresh(outcome);
            }
            Err(e) => {
                tracing::warn!(cause = ?cause, error = %crate::error_chain(&e),
                    "re-reading the webhook secrets failed; keeping the cached list");
                metrics::secret_refresh("failed");
            }
        }
    }
}

/// Every list put in force is checked: Stigg's generated secrets are long random strings.
fn warn_if_weak(set: &SecretSet) {
    if set.has_weak_secret() {
        tracing::warn!("a webhook secret is shorter than {RECOMMENDED_SECRET_LEN} characters");
    }
}

impl Refresher {
    fn is_stale(&self) -> bool {
        self.clock.lock().unwrap_or_else(|e| e.into_inner()).loaded_at.elapsed() >= self.policy.max_age
    }

    /// True (and the attempt recorded) when no attempt was made within `min_interval`.
    fn take_attempt(&self) -> bool {
        let mut clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if clock.last_attempt.is_some_and(|t| now.duration_since(t) < self.policy.min_interval) {
            return false;
        }
        clock.last_attempt = Some(now);
        true
    }
}

impl From<SecretSet> for Secrets {
    fn from(set: SecretSet) -> Self {
        Self::fixed(set)
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policy = self.refresh.as_ref().map(|r| r.policy);
        f.debug_struct("Secrets").field("current", &self.current()).field("refresh", &policy).finish()
    }
}

impl fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretSet({} secrets, redacted)", self.digests.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_secret_of_a_rotation() {
        let set = SecretSet::parse(" old-secret-123 , new-secret-456 ").unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.verify(b"old-secret-123"));
        assert!(set.verify(b"new-secret-456"));
    }

    #[test]
    fn refuses_anything_else() {
        let set = SecretSet::parse("old-secret-123,new-secret-456").unwrap();
        for bad in [
            &b""[..],
            b"old-secret-12",
            b"old-secret-1234",
            b"OLD-SECRET-123",
            b"old-secret-123,new-secret-456",
            b" old-secret-123",
        ] {
            assert!(!set.verify(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn an_empty_list_is_a_configuration_error() {
        assert_eq!(SecretSet::parse("").unwrap_err(), SecretError::Empty);
        assert_eq!(SecretSet::parse(" , ,").unwrap_err(), SecretError::Empty);
        assert!(SecretSet::parse("long-enough-secret,short").unwrap().has_weak_secret());
        assert!(!SecretSet::parse("long-enough-secret").unwrap().has_weak_secret());
    }

    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A parameter whose value the test changes, counting reads.
    #[derive(Clone)]
    struct Parameter {
        value: Arc<Mutex<Result<String, String>>>,
        reads: Arc<AtomicUsize>,
    }

    impl Parameter {
        fn new(value: &str) -> Self {
            Self { value: Arc::new(Mutex::new(Ok(value.to_owned()))), reads: Arc::default() }
        }

        fn set(&self, value: Result<&str, &str>) {
            *self.value.lock().unwrap() = value.map(str::to_owned).map_err(str::to_owned);
        }

        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl SecretFetch for Parameter {
        async fn fetch(&self) -> Result<SecretSet, FetchError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let value = self.value.lock().unwrap().clone();
            value.map(|v| SecretSet::parse(&v).unwrap()).map_err(|detail| FetchError {
                from: "test".into(),
                detail,
                source: None,
            })
        }
    }

    fn policy(min_interval_ms: u64, max_age_ms: u64) -> RefreshPolicy {
        RefreshPolicy {
            min_interval: Duration::from_millis(min_interval_ms),
            max_age: Duration::from_millis(max_age_ms),
        }
    }

    #[tokio::test]
    async fn a_new_secret_is_picked_up_by_a_warm_receiver_without_a_restart() {
        let param = Parameter::new("old-secret-0123456789");
        let secrets = Secrets::refreshing(Box::new(param.clone()), policy(0, 3_600_000)).await.unwrap();
        assert!(secrets.verify(b"old-secret-0123456789").await);
        param.set(Ok("old-secret-0123456789,new-secret-0123456789"));
        assert!(secrets.verify(b"new-secret-0123456789").await, "an unknown secret triggers a re-read");
        param.set(Ok("new-secret-0123456789"));
        assert!(secrets.verify(b"new-secret-0123456789").await);
        assert_eq!(param.reads(), 2, "known secrets cause no reads");
    }

    #[tokio::test]
    async fn a_flood_of_wrong_secrets_costs_one_read_per_interval() {
        let param = Parameter::new("the-secret-0123456789");
        let secrets = Secrets::refreshing(Box::new(param.clone()), policy(200, 3_600_000)).await.unwrap();
        for i in 0..500 {
            assert!(!secrets.verify(format!("guess-{i}").as_bytes()).await);
        }
        assert_eq!(param.reads(), 2, "the cold-start read and one re-read");
        tokio::time::sleep(Duration::from_millis(250)).await;
        for i in 0..500 {
            assert!(!secrets.verify(format!("guess-{i}").as_bytes()).await);
        }
        assert_eq!(param.reads(), 3);
    }

    #[tokio::test]
    async fn concurrent_unknown_secrets_share_one_read() {
        let param = Parameter::new("the-secret-0123456789");
        let secrets = Secrets::refreshing(Box::new(param.clone()), policy(60_000, 3_600_000)).await.unwrap();
        let attempts = (0..50).map(|i| {
            let secrets = &secrets;
            async move { secrets.verify(format!("guess-{i}").as_bytes()).await }
        });
        assert!(futures::future::join_all(attempts).await.iter().all(|ok| !ok));
        assert_eq!(param.reads(), 2);
    }

    #[tokio::test]
    async fn a_list_past_its_max_age_is_re_read_before_use() {
        let param = Parameter::new("old-secret-0123456789");
        let secrets = Secrets::refreshing(Box::new(param.clone()), policy(0, 100)).await.unwrap();
        param.set(Ok("new-secret-0123456789"));
        assert!(secrets.verify(b"old-secret-0123456789").await, "still fresh: the cached list is used");
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!secrets.verify(b"old-secret-0123456789").await, "rotated out once the list aged");
        assert_eq!(param.reads(), 3, "cold start, max-age re-read, re-read for the unknown secret");
    }

    #[tokio::test]
    async fn a_failed_re_read_keeps_the_cached_list() {
        let param = Parameter::new("the-secret-0123456789");
        let secrets = Secrets::refreshing(Box::new(param.clone()), policy(0, 0)).await.unwrap();
        param.set(Err("AccessDenied"));
        assert!(secrets.verify(b"the-secret-0123456789").await);
        assert!(!secrets.verify(b"wrong").await);
        assert!(param.reads() >= 3);
    }

    #[tokio::test]
    async fn an_inline_list_is_never_re_read() {
        let secrets = Secrets::fixed(SecretSet::parse("the-secret-0123456789").unwrap());
        assert!(!secrets.verify(b"wrong").await);
        assert!(secrets.verify(b"the-secret-0123456789").await);
        assert!(!format!("{secrets:?}").contains("the-secret"));
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let set = SecretSet::parse("super-secret-value").unwrap();
        let shown = format!("{set:?}");
        assert!(!shown.contains("super-secret-value"));
        assert!(shown.contains("redacted"));
    }
}
