//! The way back: an EventBridge event delivered to the events queue by a rule (the temporary rule
//! of `make replay TO_HANDLERS=1`) read as the Stigg event it carries.
//!
//! An SQS target receives the event as EventBridge delivers it, the whole envelope as the message
//! body (`version`, `id`, `detail-type`, `source`, `time`, ..., `detail`), and a replayed event
//! carries `replay-name` (<https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-archive.html>).
//! From the forwarder's `detail`:
//! - the Stigg payload is `detail` less the forwarder's [`METADATA`] member;
//! - the key is the metadata's `idempotencyKey` (a key derived from the body could not be derived
//!   again: the payload's text is re-serialized), else derived as for any payload;
//! - a replayed event's key is scoped to its replay, `replay:<replay-name>:<key>`, so each replay
//!   runs every handler once more, and once only, while the original's record stays;
//! - when it first reached us is the metadata's `receivedAt`, never the replay's delivery time: an
//!   old event replayed stays old for the entitlement mirror's ordering.

use serde_json::{Map, Value};

use crate::forward::entry::METADATA;
use crate::stigg::event::{IdempotencyKey, MAX_KEY_BYTES, PayloadError, WebhookPayload, sha256_hex};

/// A Stigg event read from an EventBridge envelope.
#[derive(Debug)]
pub struct BusEvent {
    pub payload: WebhookPayload,
    /// The payload's JSON text (re-serialized from `detail`).
    pub raw: String,
    /// `replay-name`, for a replayed event.
    pub replay: Option<String>,
    /// When the event first reached the receiver (epoch ms), from the forwarder's metadata.
    pub received_at_ms: Option<u64>,
}

/// Why an envelope cannot become an event (permanent: the bytes will not change).
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("EventBridge event whose detail is not an object")]
    DetailNotAnObject,
    #[error(
        "EventBridge event forwarded with a reduced detail (the event was too large for an entry): its payload is not in the event, so no handler can run on it"
    )]
    Reduced,
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// An EventBridge event as a target receives it, not a Stigg payload (Stigg's have `type`).
pub fn is_bus_event(fields: &Map<String, Value>) -> bool {
    fields.contains_key("detail-type") && fields.contains_key("source") && fields.contains_key("detail")
}

pub fn unwrap(mut envelope: Map<String, Value>) -> Result<BusEvent, EnvelopeError> {
    let Some(Value::Object(mut detail)) = envelope.remove("detail") else {
        return Err(EnvelopeError::DetailNotAnObject);
    };
    let metadata = match detail.remove(METADATA) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if metadata.get("truncated").and_then(Value::as_bool) == Some(true) {
        return Err(EnvelopeError::Reduced);
    }
    let replay = envelope.get("replay-name").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_owned);
    let raw = Value::Object(detail.clone()).to_string();
    let mut payload = WebhookPayload::from_fields(detail, raw.as_bytes())?;
    if let Some(key) =
        metadata.get("idempotencyKey").and_then(Value::as_str).and_then(|k| IdempotencyKey::parse(k).ok())
    {
        payload.key = key;
    }
    if let Some(replay) = &replay {
        payload.key = replay_key(replay, &payload.key);
    }
    let received_at_ms = metadata.get("receivedAt").and_then(Value::as_u64);
    Ok(BusEvent { payload, raw, replay, received_at_ms })
}

/// The key of `key`'s event within one replay.
pub fn replay_key(replay: &str, key: &IdempotencyKey) -> IdempotencyKey {
    let scoped = format!("replay:{replay}:{key}");
    IdempotencyKey::parse(&scoped).unwrap_or_else(|_| {
        // Too long (a 512-byte key) or a replay name SQS cannot carry: a digest keeps it unique.
        IdempotencyKey::parse(&format!(
            "replay:{}:{}",
            sha256_hex(replay.as_bytes()),
            sha256_hex(key.as_str().as_bytes())
        ))
        .expect("two digests fit")
    })
}

// "replay:" + two SHA-256 hex digests + ":" fit a key.
const _: () = assert!(MAX_KEY_BYTES >= "replay:".len() + 64 + 1 + 64);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(detail: Value, replay: Option<&str>) -> Map<String, Value> {
        let mut e = json!({
            "version": "0", "id": "6a7e8feb", "detail-type": "subscription.created", "source": "stigg.webhooks",
            "account": "123456789012", "time": "2026-12-01T10:00:00Z", "region": "us-east-1", "resources": [],
            "detail": detail,
        });
        if let Some(r) = replay {
            e["replay-name"] = json!(r);
        }
        e.as_object().unwrap().clone()
    }

    #[test]
    fn a_forwarded_event_comes_back_with_its_key_and_first_receipt() {
        let detail = json!({"type": "subscription.created", "messageId": "m-1",
            "stiggWebhooks": {"idempotencyKey": "m-1", "receivedAt": 1_764_614_400_123u64}});
        let e = unwrap(envelope(detail, None)).unwrap();
        assert_eq!(e.payload.key.as_str(), "m-1");
        assert_eq!(e.replay, None);
        assert_eq!(e.received_at_ms, Some(1_764_614_400_123));
        assert!(!e.raw.contains("stiggWebhooks"), "the payload is Stigg's");
    }

    #[test]
    fn a_replayed_event_is_keyed_per_replay_and_a_hashed_key_survives_reserialization() {
        let detail = json!({"type": "credits.balance.usage_low", "stiggWebhooks": {"idempotencyKey": "abc123"}});
        let first = unwrap(envelope(detail.clone(), Some("stack-20261201T100000"))).unwrap();
        assert_eq!(first.payload.key.as_str(), "replay:stack-20261201T100000:abc123");
        let second = unwrap(envelope(detail, Some("stack-20261202T100000"))).unwrap();
        assert_ne!(first.payload.key, second.payload.key);
    }

    #[test]
    fn a_long_key_is_digested_and_a_reduced_detail_is_refused() {
        let long = IdempotencyKey::parse(&"k".repeat(MAX_KEY_BYTES)).unwrap();
        let key = replay_key("r", &long);
        assert!(key.as_str().len() <= MAX_KEY_BYTES && key.as_str().starts_with("replay:"));
        let reduced =
            json!({"type": "entitlements.updated", "stiggWebhooks": {"idempotencyKey": "m", "truncated": true}});
        assert!(matches!(unwrap(envelope(reduced, Some("r"))), Err(EnvelopeError::Reduced)));
        assert!(matches!(unwrap(envelope(json!("text"), None)), Err(EnvelopeError::DetailNotAnObject)));
    }

    #[test]
    fn only_an_eventbridge_envelope_is_taken_for_one() {
        assert!(is_bus_event(&envelope(json!({}), None)));
        let stigg = json!({"type": "customer.created", "messageId": "m", "source": "x", "detail": {}});
        assert!(!is_bus_event(stigg.as_object().unwrap()));
    }
}
