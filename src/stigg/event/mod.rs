//! The Stigg event domain: idempotency keys, event types, and the payload as the receiver
//! and the processor see it.
//!
//! Stigg payloads are flat JSON objects (`type`, `messageId`, `traceId`, ... plus the event's own
//! fields at the top level). Everything here parses into types so the rest of the code never
//! handles a bare string that might be invalid.

use std::fmt;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Longest key we accept. Stigg's ids are UUIDs; DynamoDB allows 2 KiB partition keys and SQS
/// 256 KiB in attributes, but a key this long is a malformed delivery, not an event.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest event type we accept (Stigg's longest documented one is 43 bytes).
pub const MAX_TYPE_BYTES: usize = 256;

/// Why a payload was refused. Every variant is a client error: the same bytes will never be
/// accepted, so the receiver answers 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("body is not valid JSON: {0}")]
    NotJson(JsonError),
    #[error("body is not valid UTF-8")]
    NotUtf8,
    #[error("body is not a JSON object")]
    NotAnObject,
    #[error("`type` is missing or not a string")]
    MissingType,
    #[error("`type` is invalid: {0}")]
    InvalidType(&'static str),
    #[error("`{field}` is invalid: {reason}")]
    InvalidKey { field: &'static str, reason: &'static str },
    #[error("body contains characters that SQS cannot carry")]
    UnsupportedCharacters,
}

/// A serde_json error as it may be logged or stored: its kind, where, and what was expected,
/// without the values serde quotes (`invalid type: string "4111 1111…", expected u32`). Errors
/// reach ERROR lines and the DLQ's `failure_detail`, where payload values must not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(String);

impl JsonError {
    pub fn new(e: &serde_json::Error) -> Self {
        let kind = match e.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "data error",
            serde_json::error::Category::Eof => "unexpected end",
        };
        Self(format!("{kind}: {}", redact_quoted(&e.to_string())))
    }
}

/// Replaces every `"…"` and `` `…` `` span (serde's quoting of values and names) with `…`.
pub fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        if c == '"' || c == '`' {
            let mut escaped = false;
            for d in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
            out.push('…');
        } else {
            out.push(c);
        }
    }
    out
}

/// Checks a string against what DynamoDB keys and SQS attribute values can carry and what a
/// human can read in a log: non-empty, bounded, no control characters.
fn check_token(s: &str, max: usize) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > max {
        return Err("too long");
    }
    if s.chars().any(|c| c.is_control() || !sqs_allows(c)) {
        return Err("contains control or unsupported characters");
    }
    Ok(())
}

/// The characters SQS accepts in message bodies and attribute values (XML 1.0 characters):
/// #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF.
pub fn sqs_allows(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The identity of one Stigg event, shared by every delivery of it.
///
/// Derived from `messageId` when present and non-empty, else `eventId`, else the SHA-256 hex of
/// the raw body (some documented Stigg events carry neither id).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses a key received from outside (a message attribute, a payload field).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        check_token(s, MAX_KEY_BYTES)?;
        Ok(Self(s.to_owned()))
    }

    /// The key of a payload that carries no id: the SHA-256 hex of its exact bytes.
    pub fn from_body(raw: &[u8]) -> Self {
        Self(sha256_hex(raw))
    }

    /// Derives the key from a parsed payload and its raw bytes.
    pub fn derive(fields: &Map<String, Value>, raw: &[u8]) -> Result<Self, PayloadError> {
        for field in ["messageId", "eventId"] {
            // A non-string or empty id is treated as absent: the next source applies.
            if let Some(Value::String(s)) = fields.get(field)
                && !s.is_empty()
            {
                return Self::parse(s).map_err(|reason| PayloadError::InvalidKey { field, reason });
            }
        }
        Ok(Self::from_body(raw))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// SQS FIFO `MessageDeduplicationId` (max 128 chars, restricted alphabet): a digest of the key.
    pub fn fifo_deduplication_id(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of some bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

macro_rules! event_types {
    ($($variant:ident => $name:literal,)+) => {
        /// A Stigg event type. Names are inconsistent across Stigg's generations and new ones
        /// appear without notice, so the set is open: anything unknown is [`EventType::Other`].
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum EventType {
            $(#[doc = concat!("`", $name, "`")] $variant,)+
            /// A type this version does not know. Normal, not an error.
            Other(String),
        }

        impl EventType {
            /// Every documented type, for tests and docs.
            pub const KNOWN: &'static [&'static str] = &[$($name),+];

            fn from_known(s: &str) -> Option<Self> {
                match s {
                    $($name => Some(Self::$variant),)+
                    _ => None,
                }
            }

            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $name,)+
                    Self::Other(s) => s,
                }
            }
        }
    };
}

event_types! {
    CustomerCreated => "customer.created",
    CustomerUpdated => "customer.updated",
    CustomerDeleted => "customer.deleted",
    SubscriptionCreated => "subscription.created",
    SubscriptionUpdated => "subscription.updated",
    SubscriptionCanceled => "subscription.canceled",
    SubscriptionExpired => "subscription.expired",
    SubscriptionTrialStarted => "subscription.trial_started",
    SubscriptionTrialEndsSoon => "subscription.trial.ends_soon",
    SubscriptionTrialConverted => "subscription.trial_converted",
    SubscriptionTrialExpired => "subscription.trial_expired",
    PlanCreated => "plan.created",
    PlanUpdated => "plan.updated",
    CouponCreated => "coupon.created",
    CouponUpdated => "coupon.updated",
    MeasurementReported => "measurement.reported",
    EntitlementsUpdated => "entitlements.updated",
    EntitlementUsageExceeded => "entitlement.usage_exceeded",
    EntityEntitlementUsageExceeded => "entity.entitlement.usage_exceeded",
    PromotionalEntitlementGranted => "promotionalEntitlement.granted",
    PromotionalEntitlementUpdated => "promotionalEntitlement.updated",
    PromotionalEntitlementExpired => "promotionalEntitlement.expired",
    CreditGrantBalanceLow => "credit_grant.balance.low",
    CreditBalanceLow => "credit_balance.low",
    CreditBalanceDepleted => "credit_balance.depleted",
    CreditsBalanceUsageLow => "credits.balance.usage_low",
    CreditsGrantUsageLow => "credits.grant.usage_low",
    CreditsGranted => "credits.granted",
    CreditsGrantUpdated => "credits.grant.updated",
    CreditsGrantDepleted => "credits.grant.depleted",
    CreditsExpired => "credits.expired",
    CreditsBalanceDepleted => "credits.balance.depleted",
    AutomaticRechargeOperationAttempted => "automatic_recharge.operation.attempted",
    CreditsAutomaticRechargeLimitExceeded => "credits.automatic_recharge_limit_exceeded",
}

/// The families of events, for handlers that care about "any subscription change" rather than
/// one generation's spelling of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventFamily {
    Customer,
    Subscription,
    Plan,
    Coupon,
    Usage,
    Entitlements,
    PromotionalEntitlement,
    Credits,
    Other,
}

impl EventType {
    /// Parses a `type` value. Any non-empty, printable string is a valid type.
    pub fn parse(s: &str) -> Result<Self, PayloadError> {
        check_token(s, MAX_TYPE_BYTES).map_err(PayloadError::InvalidType)?;
        Ok(Self::from_known(s).unwrap_or_else(|| Self::Other(s.to_owned())))
    }

    pub fn is_known(&self) -> bool {
        !matches!(self, Self::Other(_))
    }

    pub fn family(&self) -> EventFamily {
        use EventType::*;
        match self {
            CustomerCreated | CustomerUpdated | CustomerDeleted => EventFamily::Customer,
            SubscriptionCreated
            | SubscriptionUpdated
            | SubscriptionCanceled
            | SubscriptionExpired
            | SubscriptionTrialStarted
            | SubscriptionTrialEndsSoon
            | SubscriptionTrialConverted
            | SubscriptionTrialExpired => EventFamily::Subscription,
            PlanCreated | PlanUpdated => EventFamily::Plan,
            CouponCreated | CouponUpdated => EventFamily::Coupon,
            MeasurementReported | EntitlementUsageExceeded | EntityEntitlementUsageExceeded => EventFamily::Usage,
            EntitlementsUpdated => EventFamily::Entitlements,
            PromotionalEntitlementGranted | PromotionalEntitlementUpdated | PromotionalEntitlementExpired => {
                EventFamily::PromotionalEntitlement
            }
            CreditGrantBalanceLow
            | CreditBalanceLow
            | CreditBalanceDepleted
            | CreditsBalanceUsageLow
            | CreditsGrantUsageLow
            | CreditsGranted
            | CreditsGrantUpdated
            | CreditsGrantDepleted
            | CreditsExpired
            | CreditsBalanceDepleted
            | AutomaticRechargeOperationAttempted
            | CreditsAutomaticRechargeLimitExceeded => EventFamily::Credits,
            Other(_) => EventFamily::Other,
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// serde_json has already checked UTF-8; SQS additionally refuses U+FFFE/U+FFFF, which JSON
/// strings may carry raw. Refused here rather than failing at SendMessage forever.
fn refuse_unsupported_characters(raw: &[u8]) -> Result<(), PayloadError> {
    if raw.windows(3).any(|w| w == [0xEF, 0xBF, 0xBE] || w == [0xEF, 0xBF, 0xBF]) {
        return Err(PayloadError::UnsupportedCharacters);
    }
    Ok(())
}

/// A payload that passed validation: a flat JSON object with a valid `type` and a key.
/// The raw bytes are what gets queued; the parsed map is kept for the few fields we read.
#[derive(Debug, Clone)]
pub struct WebhookPayload {
    pub key: IdempotencyKey,
    pub event_type: EventType,
    /// Every top-level field ([`WebhookPayload::parse`], the processor's); only those the
    /// methods read ([`WebhookPayload::admit`], the receiver's).
    pub fields: Map<String, Value>,
}

impl WebhookPayload {
    /// Parses and validates a raw body.
    pub fn parse(raw: &[u8]) -> Result<Self, PayloadError> {
        let value: Value = serde_json::from_slice(raw).map_err(|e| PayloadError::NotJson(JsonError::new(&e)))?;
        let Value::Object(fields) = value else {
            return Err(PayloadError::NotAnObject);
        };
        refuse_unsupported_characters(raw)?;
        Self::from_fields(fields, raw)
    }

    /// Validates an already parsed object (the processor parses SNS wrappers first).
    pub fn from_fields(fields: Map<String, Value>, raw: &[u8]) -> Result<Self, PayloadError> {
        let event_type = match fields.get("type") {
            Some(Value::String(s)) => EventType::parse(s)?,
            _ => return Err(PayloadError::MissingType),
        };
        let key = IdempotencyKey::derive(&fields, raw)?;
        Ok(Self { key, event_type, fields })
    }

    fn str_field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
    }

    /// `traceId`, when it is a printable string (it is only ever logged and forwarded).
    pub fn trace_id(&self) -> Option<&str> {
        self.str_field("traceId").filter(|s| check_token(s, MAX_KEY_BYTES).is_ok())
    }

    pub fn timestamp(&self) -> Option<&str> {
        self.str_field("timestamp")
    }

    /// The customer this event is about, by the id your systems know it by: for `customer.*`
    /// events the top-level `id`, for the others `customer.id`, else `customerId`. Never
    /// `entityId`: that is Stigg's internal UUID of the entity, not the customer's id.
    pub fn customer_id(&self) -> Option<&str> {
        let nested = || self.fields.get("customer").and_then(|c| c.get("id")).and_then(Value::as_str);
        let top_level = (self.event_type.family() == EventFamily::Customer).then(|| self.str_field("id")).flatten();
        top_level.or_else(|| nested().filter(|s| !s.is_empty())).or_else(|| self.str_field("customerId"))
    }

    /// SQS FIFO `MessageGroupId`: the customer (so one customer's events stay in order and
    /// customers don't block each other). An event without a customer id is grouped by its
    /// `entityId` (one entity's events stay in order), and a catalog event with neither (plans,
    /// coupons) by its family (`plan`, `coupon`; the type for unknown types). Values SQS would
    /// refuse (over 128 chars or outside its alphabet) are replaced by their digest.
    pub fn fifo_group_id(&self) -> String {
        let raw = self
            .customer_id()
            .or_else(|| self.str_field("entityId"))
            .unwrap_or_else(|| self.event_type.family().group_name().unwrap_or(self.event_type.as_str()));
        let valid = !raw.is_empty()
            && raw.len() <= 128
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b.is_ascii_punctuation());
        if valid { raw.to_owned() } else { sha256_hex(raw.as_bytes()) }
    }
}

impl EventFamily {
    /// The FIFO group of this family's events that concern no customer or entity.
    fn group_name(self) -> Option<&'static str> {
        Some(match self {
            Self::Customer => "customer",
            Self::Subscription => "subscription",
            Self::Plan => "plan",
            Self::Coupon => "coupon",
            Self::Usage => "usage",
            Self::Entitlements => "entitlements",
            Self::PromotionalEntitlement => "promotionalEntitlement",
            Self::Credits => "credits",
            Self::Other => return None,
        })
    }
}

mod admit;
#[cfg(test)]
mod tests;

/// An event as the processor's handlers see it: identity, type, the common envelope fields, and
/// the raw JSON kept whole (typed views are parsed from it on demand, see [`crate::stigg::views`]).
#[derive(Debug, Clone)]
pub struct StiggEvent {
    pub key: IdempotencyKey,
    pub event_type: EventType,
    pub trace_id: Option<String>,
    pub timestamp: Option<String>,
    pub customer_id: Option<String>,
    /// When the message reached our queue (SQS's `SentTimestamp`), for events that carry no time
    /// of their own: an event is never older than its own delivery. `None` outside SQS.
    pub sent_at: Option<std::time::SystemTime>,
    /// The EventBridge replay that brought this event back (`replay-name`), when it is a replay:
    /// its key is then scoped to the replay (see [`crate::forward::envelope`]).
    pub replay: Option<String>,
    fields: Map<String, Value>,
    raw: String,
}

impl StiggEvent {
    /// Builds the event from a validated payload and the exact JSON text it came from.
    pub fn new(payload: WebhookPayload, raw: String) -> Self {
        Self {
            trace_id: payload.trace_id().map(str::to_owned),
            timestamp: payload.timestamp().map(str::to_owned),
            customer_id: payload.customer_id().map(str::to_owned),
            sent_at: None,
            replay: None,
            key: payload.key,
            event_type: payload.event_type,
            fields: payload.fields,
            raw,
        }
    }

    /// Parses a raw Stigg payload (tests, tools).
    pub fn parse(raw: &str) -> Result<Self, PayloadError> {
        Ok(Self::new(WebhookPayload::parse(raw.as_bytes())?, raw.to_owned()))
    }

    /// The same event, stamped with the time it first reached us (see [`Self::sent_at`]).
    pub fn with_sent_at(mut self, sent_at: Option<std::time::SystemTime>) -> Self {
        self.sent_at = sent_at;
        self
    }

    /// Every top-level field of the payload.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The payload exactly as Stigg sent it.
    pub fn raw_json(&self) -> &str {
        &self.raw
    }

    pub fn family(&self) -> EventFamily {
        self.event_type.family()
    }
}
