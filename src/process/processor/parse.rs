//! Reading an SQS record as a Stigg event (flat, SNS-wrapped or a replay), or why it is poison.

use std::time::{Duration, UNIX_EPOCH};

use aws_lambda_events::event::sqs::SqsMessage;
use serde_json::Value;

use crate::aws::queue::RECEIVED_AT;
use crate::forward::config::EventSource;
use crate::forward::envelope::{self, EnvelopeError};
use crate::stigg::event::{IdempotencyKey, JsonError, PayloadError, StiggEvent, WebhookPayload};

/// Why a record could not be turned into an event. Permanent: the bytes will not change.
#[derive(Debug, thiserror::Error)]
pub enum PoisonError {
    #[error("record has no body")]
    NoBody,
    #[error("SNS notification without a string Message")]
    EmptyNotification,
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// Reads a record's body as a Stigg event: a flat Stigg payload, one wrapped in an SNS
/// notification, or one the forwarder put on an EventBridge bus and a rule delivered back (a
/// replay: see [`crate::forward::envelope`]). The `idempotency_key` message attribute (set by
/// the receiver) wins over the key derived from the body, so both paths agree even for
/// hash-keyed events. An EventBridge event is read only as a replay of this stack's forwarder
/// (`replays_from`: its source); without one, it is poison.
pub fn event_from_record(record: &SqsMessage, replays_from: Option<&EventSource>) -> Result<StiggEvent, PoisonError> {
    let body = record.body.as_deref().ok_or(PoisonError::NoBody)?;
    let value: Value = serde_json::from_str(body).map_err(|e| PayloadError::NotJson(JsonError::new(&e)))?;
    let value = match value {
        Value::Object(fields) if envelope::is_bus_event(&fields) => {
            let source = replays_from.ok_or(EnvelopeError::NotOurs("this processor forwards to no bus"))?;
            // arn:aws:sqs:<region>:<account>:<queue>
            let account =
                record.event_source_arn.as_deref().and_then(|a| a.split(':').nth(4)).filter(|a| !a.is_empty());
            let bus = envelope::unwrap(fields, envelope::Expected { source: source.as_str(), account })?;
            // Never the replay's own SentTimestamp: an old event replayed stays old.
            let first_received = bus.received_at_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
            let mut event = StiggEvent::new(bus.payload, bus.raw).with_sent_at(first_received);
            event.replay = bus.replay;
            return Ok(event);
        }
        value => value,
    };
    let (raw, mut payload) = match value {
        Value::Object(mut fields) if fields.get("Type").and_then(Value::as_str) == Some("Notification") => {
            let Some(Value::String(inner)) = fields.remove("Message") else {
                return Err(PoisonError::EmptyNotification);
            };
            let payload = WebhookPayload::parse(inner.as_bytes())?;
            (inner, payload)
        }
        Value::Object(fields) => {
            let payload = WebhookPayload::from_fields(fields, body.as_bytes())?;
            (body.to_owned(), payload)
        }
        _ => return Err(PayloadError::NotAnObject.into()),
    };
    let attribute_key = record
        .message_attributes
        .get("idempotency_key")
        .and_then(|a| a.string_value.as_deref())
        .and_then(|k| IdempotencyKey::parse(k).ok());
    if let Some(key) = attribute_key {
        payload.key = key;
    }
    let received = received_millis(record).map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    Ok(StiggEvent::new(payload, raw).with_sent_at(received))
}

/// When the event first reached us, in epoch milliseconds: the `received_at` attribute the
/// receiver and the bridge set (it survives a dead letter and a redrive), else SQS's
/// `SentTimestamp` system attribute, which Lambda's SQS event carries on every record.
pub(super) fn received_millis(record: &SqsMessage) -> Option<u64> {
    let attribute = record.message_attributes.get(RECEIVED_AT).and_then(|a| a.string_value.as_deref());
    attribute.or(record.attributes.get("SentTimestamp").map(String::as_str)).and_then(|ms| ms.parse().ok())
}
