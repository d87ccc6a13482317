//! [`StiggApi`]: Stigg's GraphQL API over HTTPS with a server key, behind a rate limiter per
//! operation and a retry policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde_json::Value;

use super::graphql::{self, Operation};
use super::limiter::{RateLimiter, RateLimits};
use super::retry::RetryPolicy;
use super::{ApiError, CustomerDirectory, CustomerPage, EntitlementsSource, Fetched};
use crate::edge::ApiKeys;

/// Stigg's GraphQL endpoint (<https://docs.stigg.io/api-and-sdks/integration/backend/graphql>).
pub const DEFAULT_API_URL: &str = "https://api.stigg.io/graphql";

/// At most this many pages of one customer's resources (100 each): a bound on a cursor that
/// never ends, far over any real customer.
const MAX_RESOURCE_PAGES: usize = 1_000;

/// How a [`StiggApi`] calls.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The GraphQL endpoint.
    pub url: String,
    /// One request, connection to last byte.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    pub limits: RateLimits,
}

impl ApiSettings {
    /// For a read on a check's path: 2 s per request, one attempt, no wait for a rate-limit
    /// slot beyond 2 s.
    pub fn fail_fast(url: &str) -> Self {
        let budget = Duration::from_secs(2);
        Self {
            url: url.to_owned(),
            request_timeout: budget,
            retry: RetryPolicy::fail_fast(budget),
            limits: RateLimits::default(),
        }
    }

    /// For the backfill: 10 s per request and [`RetryPolicy::patient`].
    pub fn patient(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::patient(),
            limits: RateLimits::default(),
        }
    }
}

/// What a client has done so far (for progress lines and benches).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ApiStats {
    /// Requests sent (retries included).
    pub requests: u64,
    /// Answers that were a rate limit (429 or `RateLimitExceeded`).
    pub rate_limited: u64,
    /// Retries started.
    pub retries: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    rate_limited: AtomicU64,
    retries: AtomicU64,
}

/// Stigg's API. Cheap to clone; clones share the key, the rate limiter and the counters.
#[derive(Clone)]
pub struct StiggApi {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
    keys: Arc<ApiKeys>,
    retry: RetryPolicy,
    limiter: RateLimiter,
    counters: Counters,
}

impl std::fmt::Debug for StiggApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StiggApi")
            .field("url", &self.inner.url)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

impl StiggApi {
    /// `keys`: the server key (fixed, or re-read from SSM when Stigg refuses it).
    pub fn new(keys: Arc<ApiKeys>, settings: ApiSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(3)))
            .user_agent(concat!("stigg-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with only timeouts and a user agent always builds");
        let inner = Inner {
            http,
            url: settings.url,
            timeout: settings.request_timeout,
            keys,
            retry: settings.retry,
            limiter: RateLimiter::new(&settings.limits),
            counters: Counters::default(),
        };
        Self { inner: Arc::new(inner) }
    }

    pub fn stats(&self) -> ApiStats {
        let c = &self.inner.counters;
        ApiStats {
            requests: c.requests.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    /// The rate the limiter allows `op` now, calls per minute (below the configured one after 429s).
    pub fn rate_now(&self, op: Operation) -> f64 {
        self.inner.limiter.per_minute(op)
    }

    /// One operation, with the limiter and the retry policy. A refused key is re-read once
    /// (a rotation) before the refusal is final.
    async fn call<T>(
        &self,
        op: Operation,
        body: &Value,
        parse: impl Fn(&[u8]) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let inner = &*self.inner;
        let policy = inner.retry;
        let started = Instant::now();
        let mut failed = 0;
        let mut reloaded = false;
        loop {
            let left = policy.budget.saturating_sub(started.elapsed());
            if let Err(wait) = inner.limiter.acquire(op, left).await {
                // Our own limiter would hold the call past its budget: as good as a 429.
                return Err(ApiError::RateLimited { retry_after: Some(wait) });
            }
            inner.counters.requests.fetch_add(1, Ordering::Relaxed);
            let error = match self.send(op, body).await.and_then(|b| parse(&b)) {
                Ok(answer) => {
                    inner.limiter.succeeded(op);
                    return Ok(answer);
                }
                Err(e) => e,
            };
            if matches!(error, ApiError::Refused { .. }) && !reloaded && inner.keys.reload_after_refusal().await {
                reloaded = true;
                continue;
            }
            failed += 1;
            let delay = policy.delay(failed, &error);
            let limited = matches!(error, ApiError::RateLimited { .. });
            if limited {
                inner.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                // Every caller of this operation waits, not only this one.
                inner.limiter.throttled(op, delay);
            }
            if !error.is_retryable() || failed >= policy.attempts || started.elapsed() + delay > policy.budget {
                return Err(error);
            }
            inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(operation = op.name(), error = %crate::error_chain(&error), attempt = failed,
                retry_in_ms = delay.as_millis() as u64, "Stigg API call failed; retrying");
            // A rate limit's wait is the limiter's hold, taken at the next acquire.
            if !limited {
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// One request: the answer's body when the status is 2xx.
    async fn send(&self, op: Operation, body: &Value) -> Result<Vec<u8>, ApiError> {
        let inner = &*self.inner;
        let key = inner.keys.current().await;
        let transport = |e: reqwest::Error| {
            if e.is_timeout() { ApiError::Timeout(inner.timeout) } else { ApiError::Transport(Box::new(e)) }
        };
        let response = inner
            .http
            .post(&inner.url)
            // <https://docs.stigg.io/api-and-sdks/api-reference/graphql/authentication>
            .header("X-API-KEY", key.expose())
            .header("x-graphql-operation-name", op.name())
            .header("accept", "application/json")
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| graphql::retry_after(v, SystemTime::now()));
        let bytes = response.bytes().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            return Err(graphql::status_error(status, retry_after, &bytes));
        }
        Ok(bytes.to_vec())
    }
}

#[async_trait]
impl EntitlementsSource for StiggApi {
    async fn entitlements_state(&self, customer: &str, resource: Option<&str>) -> Result<Fetched, ApiError> {
        let body = graphql::entitlements_state_request(customer, resource);
        self.call(Operation::EntitlementsState, &body, |b| graphql::parse_entitlements_state(b, customer, resource))
            .await
    }
}

#[async_trait]
impl CustomerDirectory for StiggApi {
    async fn customers(&self, cursor: Option<&str>, limit: usize) -> Result<CustomerPage, ApiError> {
        let body = graphql::customers_request(cursor, limit);
        self.call(Operation::Customers, &body, graphql::parse_customers).await
    }

    async fn resources(&self, customer: &str) -> Result<Vec<String>, ApiError> {
        let mut all = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_RESOURCE_PAGES {
            let body = graphql::customer_resources_request(customer, cursor.as_deref());
            let (ids, next) = self.call(Operation::CustomerResources, &body, graphql::parse_customer_resources).await?;
            all.extend(ids.into_iter().filter(|id| seen.insert(id.clone())));
            match next {
                Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
                _ => return Ok(all),
            }
        }
        Err(ApiError::Malformed(format!("more than {MAX_RESOURCE_PAGES} pages of resources")))
    }
}
