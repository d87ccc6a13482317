//! What fails in the mirror ([`MirrorError`], and how the processor takes it) and what a write
//! did ([`WriteOutcome`]).

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};

use crate::mirror::MAX_ITEM_BYTES;
use crate::process::handler::HandlerError;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// DynamoDB failed (throttled, unreachable, a transaction conflict): worth another try.
    #[error("DynamoDB {operation} on the mirror table failed: {detail}")]
    Dynamo {
        operation: &'static str,
        detail: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The event lacks what the mirror needs (a customer id, any time at all): it never will.
    #[error("cannot mirror this event: {0}")]
    Malformed(String),
    /// DynamoDB refused the request itself (a `ValidationException`): it will refuse it again.
    /// Every item is sized and every key bounded before it is sent, so no valid event gets here.
    #[error("DynamoDB {operation} on the mirror table was refused: {detail}")]
    Refused {
        operation: &'static str,
        detail: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Stigg's API gave no answer on a read-through (429, 5xx, a timeout, a refused key).
    #[error("reading through to Stigg's API failed")]
    Stigg(#[source] crate::stigg::api::ApiError),
    /// A read-through failed; the fetch may have been shared with concurrent reads.
    #[error("the mirror's read-through failed")]
    ReadThrough(#[source] std::sync::Arc<MirrorError>),
    /// No snapshot of the customer (or resource), and the reader's policy is to fail.
    #[error("no mirrored entitlements for customer `{customer}`{}", resource.as_ref().map(|r| format!(", resource `{r}`")).unwrap_or_default())]
    Miss { customer: String, resource: Option<String> },
    /// One feature's entitlement over DynamoDB's item limit even gzip-compressed: a check reads
    /// one item per feature, so it cannot be split.
    #[error(
        "the entitlement of feature `{feature}` takes {bytes} bytes compressed, over DynamoDB's {MAX_ITEM_BYTES}-byte item"
    )]
    TooLarge { feature: String, bytes: usize },
}

impl MirrorError {
    pub(in crate::mirror) fn dynamo<E, R>(operation: &'static str, e: SdkError<E, R>) -> Self
    where
        E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let detail = DisplayErrorContext(&e).to_string();
        if e.as_service_error().and_then(|se| se.code()) == Some("ValidationException") {
            return Self::Refused { operation, detail, source: Box::new(e) };
        }
        Self::Dynamo { operation, detail, source: Box::new(e) }
    }
}

impl MirrorError {
    /// Whether the same read or write may succeed later (throttling, an outage, a 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Dynamo { .. } => true,
            Self::Stigg(e) => e.is_retryable(),
            Self::ReadThrough(e) => e.is_retryable(),
            Self::Malformed(_) | Self::TooLarge { .. } | Self::Refused { .. } | Self::Miss { .. } => false,
        }
    }

    /// Stigg's API error behind a failed read-through, if that is what failed.
    pub fn api_error(&self) -> Option<&crate::stigg::api::ApiError> {
        match self {
            Self::Stigg(e) => Some(e),
            Self::ReadThrough(e) => e.api_error(),
            _ => None,
        }
    }
}

impl From<MirrorError> for HandlerError {
    fn from(e: MirrorError) -> Self {
        if e.is_retryable() { HandlerError::retryable(e) } else { HandlerError::permanent(e) }
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// An equal or newer state was already there: skipped (one failed conditional write), or a
    /// newer snapshot overtook this one while it was written (its features taken back out).
    Stale,
    /// The customer was deleted after this snapshot's time.
    AfterDeletion,
    /// A usage event for a feature no snapshot holds yet: kept in the feature's `usage` only,
    /// for a snapshot that arrives later.
    UsageOnly,
    /// `customer.deleted`: the tombstone, and this many snapshots (resources) taken out.
    Deleted(usize),
}

impl WriteOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Written => "written",
            Self::Stale => "stale",
            Self::AfterDeletion => "after_deletion",
            Self::UsageOnly => "usage_only",
            Self::Deleted(_) => "deleted",
        }
    }
}
