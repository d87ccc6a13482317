//! Stigg's API with a server key, for the entitlement mirror: a customer's (or resource's)
//! entitlements state, and the customer listing a backfill pages through.
//!
//! [`StiggApi`] is the GraphQL client ([`graphql`]: the documents and the reading of answers;
//! [`limiter`]: a token bucket per operation; [`retry`]: when to call again). The mirror builds
//! on the two traits, so its tests use fakes.

use std::time::Duration;

mod client;
pub mod graphql;
pub mod limiter;
pub mod retry;

pub use client::{ApiSettings, ApiStats, DEFAULT_API_URL, StiggApi};
pub use graphql::Operation;
pub use limiter::RateLimits;
pub use retry::RetryPolicy;

use async_trait::async_trait;
use serde_json::Value;

/// A customer's (or one resource's) entitlements as Stigg's API answers them, in the shape the
/// mirror stores: each entitlement as an `entitlements.updated` webhook carries it (`feature.id`,
/// `featureType`, `meterType`, `usageLimit`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct EntitlementsState {
    pub customer: String,
    pub resource: Option<String>,
    /// `entitlementsUpdatedAt`: the ordering key the webhooks carry, epoch milliseconds.
    pub at_ms: i64,
    /// The same as Stigg sent it (ISO 8601).
    pub at_iso: String,
    /// In the webhook's shape.
    pub entitlements: Vec<Value>,
    /// `accessDeniedReason` of the whole state (`NoActiveSubscription`, `CustomerIsArchived`).
    pub access_denied_reason: Option<String>,
}

/// What Stigg answered for a customer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    State(EntitlementsState),
    /// Stigg does not know the customer (`CustomerNotFound`).
    CustomerNotFound,
}

/// One page of the customer listing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CustomerPage {
    pub customers: Vec<String>,
    /// The cursor of the next page; `None` on the last page.
    pub next: Option<String>,
    /// How many customers there are, when Stigg says.
    pub total: Option<u64>,
}

/// Why Stigg's API gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 429: over the operation's rate limit.
    #[error("Stigg's API is rate limiting this key (429)")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx.
    #[error("Stigg's API is unavailable ({status})")]
    Unavailable { status: u16 },
    #[error("Stigg's API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Stigg's API could not be reached")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// 401/403: the key is wrong or lacks the permission.
    #[error("Stigg's API refused the key ({status}): use the environment's server (full access) key")]
    Refused { status: u16 },
    /// Any other refusal (4xx, a GraphQL error): the same request will be refused again.
    #[error("Stigg's API rejected the request ({status}): {detail}")]
    Rejected { status: u16, detail: String },
    #[error("Stigg's API answer is not what its documentation says: {0}")]
    Malformed(String),
}

impl ApiError {
    /// 429, 5xx, timeouts and transport failures may pass; a refused key or request will not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable { .. } | Self::Timeout(_) | Self::Transport(_))
    }
}

/// Where the mirror reads a customer's state on a miss (Stigg's API; a fake in unit tests).
#[async_trait]
pub trait EntitlementsSource: Send + Sync + 'static {
    async fn entitlements_state(&self, customer: &str, resource: Option<&str>) -> Result<Fetched, ApiError>;
}

/// What a backfill and the drift check page through.
#[async_trait]
pub trait CustomerDirectory: EntitlementsSource {
    /// One page of customers after `cursor` (the first page for `None`), at most `limit`.
    async fn customers(&self, cursor: Option<&str>, limit: usize) -> Result<CustomerPage, ApiError>;
    /// The resources the customer's entitlements are scoped by (their subscriptions'
    /// `resourceId`s); empty when all are customer-wide.
    async fn resources(&self, customer: &str) -> Result<Vec<String>, ApiError>;
}
