//! Stigg's Edge API as a credentials provider: short-lived AWS credentials for a durable-delivery
//! queue that Stigg provisions in its own account (Stigg guide "Getting temporary credentials
//! for event queues"):
//!
//! `GET {edge}/v1/credentials/event-queue.json?queueUrl=<url>&durationSeconds=<900..3600>` with
//! `X-API-KEY`, answering `{"accessKeyId","secretAccessKey","sessionToken","expiration"}`.
//!
//! [`EdgeCredentials`] implements the SDK's `ProvideCredentials`, so the client's identity cache
//! calls it again shortly before `expiration`: a long-running drain never signs with expired
//! credentials, and no code of ours tracks their age.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials, error::CredentialsError, future};
use aws_smithy_types::date_time::{DateTime, Format};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::{ApiKey, QueueUrl};

/// The path of the credentials endpoint under the Edge API's base URL.
pub const CREDENTIALS_PATH: &str = "/v1/credentials/event-queue.json";

/// Why the Edge API gave no credentials.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(
        "the API key cannot read this queue (Edge API answered {status}): use a full-access key or a scoped key \
         with \"Event Queue: Read\", of the account and environment the queue was provisioned in"
    )]
    Refused { status: u16 },
    #[error("the Edge API rejected the request ({status}): {detail}")]
    Rejected { status: u16, detail: String },
    #[error("the Edge API is unavailable ({status})")]
    Unavailable { status: u16 },
    #[error("the Edge API could not be reached")]
    Transport(#[source] reqwest::Error),
    #[error("the Edge API's answer is not credentials: {0}")]
    Malformed(String),
}

impl EdgeError {
    /// 5xx, 429 and transport failures may pass; a refused key or a bad request will not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Transport(_))
    }

    /// Stigg refused the key (401/403): the one failure an operator must act on.
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }

    fn from_status(status: u16, body: &str) -> Self {
        match status {
            401 | 403 => Self::Refused { status },
            429 | 500..=599 => Self::Unavailable { status },
            _ => Self::Rejected { status, detail: short(body) },
        }
    }
}

/// The first line of an error body, bounded (it is logged; it never holds the key).
fn short(body: &str) -> String {
    let line = body.lines().next().unwrap_or_default().trim();
    line.chars().take(200).collect()
}

/// Credentials for one queue, as the Edge API issued them.
#[derive(Clone)]
pub struct QueueCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: SystemTime,
}

impl std::fmt::Debug for QueueCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &crate::metrics::rfc3339(self.expiration))
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: Option<String>,
}

/// Reads an Edge API answer. The envelope is documented flat; a `data` wrapper (the shape of
/// Stigg's other REST answers) is accepted too. A missing or unreadable `expiration` is taken as
/// Stigg's shortest lifetime (900 s), so the cache renews early rather than sign with expired keys.
pub fn parse_answer(body: &[u8], fetched_at: SystemTime) -> Result<QueueCredentials, EdgeError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| EdgeError::Malformed(crate::event::JsonError::new(&e).to_string()))?;
    let value = match value.get("data") {
        Some(inner @ serde_json::Value::Object(_)) => inner.clone(),
        _ => value,
    };
    let answer: Answer =
        serde_json::from_value(value).map_err(|e| EdgeError::Malformed(crate::event::redact_quoted(&e.to_string())))?;
    if answer.access_key_id.is_empty() || answer.secret_access_key.is_empty() {
        return Err(EdgeError::Malformed("empty accessKeyId or secretAccessKey".into()));
    }
    let shortest = fetched_at + Duration::from_secs(*crate::config::CREDENTIALS_SECONDS.start());
    let expiration = match answer.expiration.as_deref().map(|s| DateTime::from_str(s, Format::DateTimeWithOffset)) {
        Some(Ok(t)) => SystemTime::try_from(t).unwrap_or(shortest),
        other => {
            tracing::warn!(expiration = ?answer.expiration, parsed = other.is_some(),
                "Edge API credentials without a readable expiration; assuming 900 s");
            shortest
        }
    };
    Ok(QueueCredentials {
        access_key_id: answer.access_key_id,
        secret_access_key: answer.secret_access_key,
        session_token: answer.session_token,
        expiration,
    })
}

/// The Edge API's credentials endpoint.
#[derive(Debug, Clone)]
pub struct EdgeApi {
    http: reqwest::Client,
    base: String,
}

impl EdgeApi {
    /// `base` is the Edge API's URL (`https://edge.api.stigg.io`); `timeout` bounds one request.
    pub fn new(base: &str, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .user_agent(concat!("stigg-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with only timeouts and a user agent always builds");
        Self { http, base: base.trim_end_matches('/').to_owned() }
    }

    /// One request for credentials to `queue`, valid for `duration`.
    pub async fn queue_credentials(
        &self,
        key: &ApiKey,
        queue: &QueueUrl,
        duration: Duration,
    ) -> Result<QueueCredentials, EdgeError> {
        let response = self
            .http
            .get(format!("{}{CREDENTIALS_PATH}", self.base))
            .query(&[("queueUrl", queue.as_str()), ("durationSeconds", &duration.as_secs().to_string())])
            .header("X-API-KEY", key.expose())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(EdgeError::Transport)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(EdgeError::Transport)?;
        if !(200..300).contains(&status) {
            return Err(EdgeError::from_status(status, &String::from_utf8_lossy(&body)));
        }
        parse_answer(&body, SystemTime::now())
    }
}

/// Reads the API key again (from SSM), for a key rotated while the function runs.
#[async_trait::async_trait]
pub trait ApiKeyFetch: Send + Sync {
    async fn fetch(&self) -> Result<ApiKey, String>;
}

/// The API key in use, re-read at most once per `min_interval` when Stigg refuses it.
pub struct ApiKeys {
    current: Mutex<(ApiKey, Instant)>,
    fetch: Option<Box<dyn ApiKeyFetch>>,
    min_interval: Duration,
}

impl ApiKeys {
    pub fn fixed(key: ApiKey) -> Self {
        Self { current: Mutex::new((key, Instant::now())), fetch: None, min_interval: Duration::MAX }
    }

    /// Reads the key now (a failure fails the cold start) and keeps `fetch` for re-reads.
    /// The first refusal re-reads at once (the usual rotation: a new key stored, the old one
    /// revoked); later ones at most once per `min_interval`.
    pub async fn refreshing(fetch: Box<dyn ApiKeyFetch>, min_interval: Duration) -> Result<Self, String> {
        let key = fetch.fetch().await?;
        let last_read = Instant::now().checked_sub(min_interval).unwrap_or_else(Instant::now);
        Ok(Self { current: Mutex::new((key, last_read)), fetch: Some(fetch), min_interval })
    }

    pub async fn current(&self) -> ApiKey {
        self.current.lock().await.0.clone()
    }

    /// After a refusal: re-reads the key if the last read is old enough; true when it changed.
    pub(crate) async fn reload_after_refusal(&self) -> bool {
        let Some(fetch) = &self.fetch else { return false };
        let mut current = self.current.lock().await;
        if current.1.elapsed() < self.min_interval {
            return false;
        }
        current.1 = Instant::now();
        match fetch.fetch().await {
            Ok(key) if key != current.0 => {
                tracing::info!("the Stigg API key parameter changed; retrying with the new key");
                current.0 = key;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "re-reading the Stigg API key failed; keeping the one in use");
                false
            }
        }
    }
}

/// Retry schedule for a failing Edge API: exponential from `first`, all attempts within `budget`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub budget: Duration,
}

impl Default for Backoff {
    /// 0.2, 0.4, 0.8, 1.6, 3.2 s: five retries within 10 s, inside the cache's load timeout.
    fn default() -> Self {
        Self { first: Duration::from_millis(200), budget: Duration::from_secs(10) }
    }
}

/// How long the identity cache lets one [`EdgeCredentials`] load run: the backoff budget plus
/// one request.
pub fn load_timeout(backoff: Backoff, request_timeout: Duration) -> Duration {
    backoff.budget + request_timeout + Duration::from_secs(1)
}

/// An SDK credentials provider backed by the Edge API.
#[derive(Clone)]
pub struct EdgeCredentials {
    inner: Arc<Inner>,
}

struct Inner {
    api: EdgeApi,
    keys: ApiKeys,
    queue: QueueUrl,
    duration: Duration,
    backoff: Backoff,
}

impl std::fmt::Debug for EdgeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeCredentials").field("queue", &self.inner.queue).finish_non_exhaustive()
    }
}

impl EdgeCredentials {
    pub fn new(api: EdgeApi, keys: ApiKeys, queue: QueueUrl, duration: Duration, backoff: Backoff) -> Self {
        Self { inner: Arc::new(Inner { api, keys, queue, duration, backoff }) }
    }

    /// Fetches credentials: retries what may pass with backoff, re-reads a refused key once.
    pub async fn fetch(&self) -> Result<QueueCredentials, EdgeError> {
        let inner = &self.inner;
        let started = Instant::now();
        let mut delay = inner.backoff.first;
        let mut reloaded = false;
        loop {
            let key = inner.keys.current().await;
            let error = match inner.api.queue_credentials(&key, &inner.queue, inner.duration).await {
                Ok(credentials) => {
                    crate::metrics::edge_credentials("fetched");
                    tracing::info!(access_key_id = %credentials.access_key_id,
                        expiration = %crate::metrics::rfc3339(credentials.expiration), "queue credentials from the Edge API");
                    return Ok(credentials);
                }
                Err(e) => e,
            };
            if error.is_refused() && !reloaded && inner.keys.reload_after_refusal().await {
                reloaded = true;
                continue;
            }
            if error.is_retryable() && started.elapsed() + delay < inner.backoff.budget {
                crate::metrics::edge_credentials("retried");
                tracing::warn!(error = %crate::error_chain(&error), retry_in_ms = delay.as_millis() as u64,
                    "Edge API credentials request failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                continue;
            }
            let outcome = if error.is_refused() { "refused" } else { "failed" };
            crate::metrics::edge_credentials(outcome);
            tracing::error!(queue = %inner.queue.as_str(), error = %crate::error_chain(&error),
                "no credentials for Stigg's queue");
            return Err(error);
        }
    }

    async fn provide(&self) -> provider::Result {
        match self.fetch().await {
            Ok(c) => Ok(Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                Some(c.session_token).filter(|t| !t.is_empty()),
                Some(c.expiration),
                "StiggEdgeApi",
            )),
            Err(e) if e.is_refused() => Err(CredentialsError::invalid_configuration(e)),
            Err(e) => Err(CredentialsError::provider_error(e)),
        }
    }
}

impl ProvideCredentials for EdgeCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.provide())
    }
}

/// The [`EdgeError`] somewhere in an SDK error's chain of causes, if a credentials load failed.
pub fn edge_error_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a EdgeError> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(edge) = err.downcast_ref::<EdgeError>() {
            return Some(edge);
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_documented_answer_is_read_with_its_expiration() {
        let body = br#"{"accessKeyId":"ASIA1","secretAccessKey":"s3cr3t","sessionToken":"tok","expiration":"2025-08-03T09:58:08.468Z"}"#;
        let c = parse_answer(body, at(NOW)).unwrap();
        assert_eq!((c.access_key_id.as_str(), c.session_token.as_str()), ("ASIA1", "tok"));
        let expected = SystemTime::UNIX_EPOCH + Duration::from_millis(1_754_215_088_468);
        assert_eq!(c.expiration, expected);
        assert!(!format!("{c:?}").contains("s3cr3t"), "the secret key is never printed");
    }

    #[test]
    fn offsets_a_data_wrapper_and_a_missing_expiration_are_tolerated() {
        let body = br#"{"data":{"accessKeyId":"A","secretAccessKey":"S","sessionToken":"T","expiration":"2026-12-01T10:00:00+01:00"}}"#;
        let c = parse_answer(body, at(NOW)).unwrap();
        assert_eq!(c.expiration, at(1_796_119_200 - 3600));
        let body = br#"{"accessKeyId":"A","secretAccessKey":"S","sessionToken":"T"}"#;
        assert_eq!(parse_answer(body, at(NOW)).unwrap().expiration, at(NOW + 900));
        let body = br#"{"accessKeyId":"A","secretAccessKey":"S","sessionToken":"T","expiration":"soon"}"#;
        assert_eq!(parse_answer(body, at(NOW)).unwrap().expiration, at(NOW + 900));
    }

    #[test]
    fn an_answer_that_is_not_credentials_is_malformed_and_names_no_value() {
        for body in [
            &br#"<html>"#[..],
            br#"{"accessKeyId":"A"}"#,
            br#"{"accessKeyId":"","secretAccessKey":"","sessionToken":""}"#,
        ] {
            assert!(matches!(parse_answer(body, at(NOW)), Err(EdgeError::Malformed(_))));
        }
        let err =
            parse_answer(br#"{"accessKeyId":7,"secretAccessKey":"hunter2","sessionToken":"x"}"#, at(NOW)).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn status_codes_map_to_refused_retryable_or_rejected() {
        assert!(EdgeError::from_status(401, "").is_refused());
        assert!(EdgeError::from_status(403, "").is_refused());
        assert!(!EdgeError::from_status(403, "").is_retryable());
        for status in [429, 500, 502, 503, 504] {
            assert!(EdgeError::from_status(status, "").is_retryable(), "{status}");
        }
        let rejected = EdgeError::from_status(400, "queueUrl does not belong to this environment\nmore");
        assert!(!rejected.is_retryable() && !rejected.is_refused());
        assert!(rejected.to_string().contains("does not belong"), "{rejected}");
        assert!(EdgeError::from_status(401, "").to_string().contains("cannot read this queue"));
    }

    #[test]
    fn an_edge_error_is_found_through_the_sdk_error_chain() {
        let e = CredentialsError::invalid_configuration(EdgeError::Refused { status: 401 });
        let edge = edge_error_in(&e).expect("found through the chain");
        assert!(edge.is_refused());
        let other = std::io::Error::other("boom");
        assert!(edge_error_in(&other).is_none());
    }
}
