//! A message of Stigg's as it goes to our queue ([`Forward`]): the payload unwrapped, the
//! receiver's attributes and FIFO ids, attributes left out to fit SQS's limit; and the
//! `SendMessageBatch` calls it goes in ([`batches`]).

use serde_json::Value;

use crate::aws::queue::{FifoIds, MAX_MESSAGE_BYTES, Outbound, RECEIVED_AT, attributes_size};
use crate::stigg::event::{WebhookPayload, sha256_hex};

/// The `source` attribute of every message the bridge forwards.
pub const SOURCE: &str = "stigg-queue";

/// What SQS accepts in one `SendMessageBatch`, all its messages together: also 1 MiB
/// (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessageBatch.html>).
pub const MAX_BATCH_BYTES: usize = 1_048_576;

/// The attributes the bridge leaves out, in this order, of a message that would not fit
/// [`MAX_MESSAGE_BYTES`] with them. Each is redundant: `trace_id` and `event_type` repeat the
/// body's `traceId` and `type`, the processor derives the key from the body when
/// `idempotency_key` is missing (`processor::event_from_record`), and `source` only names the
/// channel. The body is never touched.
/// `received_at` goes second: without it a `customer.deleted` without a time falls back to
/// `SentTimestamp` on our queue, a little later than Stigg's.
pub const DROPPABLE_ATTRIBUTES: [&str; 5] = ["trace_id", RECEIVED_AT, "event_type", "idempotency_key", "source"];

/// One message of Stigg's, as it goes to our queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The Stigg payload (an SNS envelope unwrapped), or the body as it came when it is none.
    pub body: String,
    pub attributes: Vec<(&'static str, String)>,
    pub fifo: FifoIds,
    /// Why the body is not a Stigg payload (forwarded as-is: the processor dead-letters it).
    pub unparseable: Option<String>,
    /// Attributes left out so the message fits [`MAX_MESSAGE_BYTES`] (see
    /// [`DROPPABLE_ATTRIBUTES`]).
    pub left_out: Vec<&'static str>,
}

impl Forward {
    /// What SQS's size limits count: the body (UTF-8 bytes) and the attributes' names, data
    /// types and values.
    pub fn size(&self) -> usize {
        self.body.len() + attributes_size(&self.attributes)
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// Leaves out [`DROPPABLE_ATTRIBUTES`], in order, until the message fits
    /// [`MAX_MESSAGE_BYTES`]. A body too large on its own goes as it is, for SQS to refuse (the
    /// message then stays in Stigg's queue, counted `forward_failed`).
    fn fit(mut self) -> Self {
        for name in DROPPABLE_ATTRIBUTES {
            if self.size() <= MAX_MESSAGE_BYTES {
                break;
            }
            if let Some(i) = self.attributes.iter().position(|(k, _)| *k == name) {
                self.attributes.remove(i);
                self.left_out.push(name);
            }
        }
        self
    }

    pub(super) fn outbound(&self) -> Outbound<'_> {
        Outbound { body: &self.body, attributes: self.attributes.clone(), fifo: Some(self.fifo.clone()) }
    }
}

/// The message for our queue, with the receiver's attributes (`event_type`, `idempotency_key`,
/// `trace_id`) and `source=stigg-queue`, and the receiver's FIFO ids (so SQS's own five-minute
/// deduplication also covers an event that came both ways). Attributes are left out, never the
/// body, when the message would not fit SQS's limit otherwise (see [`DROPPABLE_ATTRIBUTES`]).
pub fn forward_of(body: &str) -> Forward {
    forward_received(body, None)
}

/// [`forward_of`], stamped with when Stigg's queue received the message (its `SentTimestamp`,
/// epoch ms) as the receiver stamps what it accepts (`received_at`): the event's first time
/// survives a dead letter and a redrive.
pub fn forward_received(body: &str, received_at: Option<u64>) -> Forward {
    let inner = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(mut fields)) if fields.get("Type").and_then(Value::as_str) == Some("Notification") => {
            match fields.remove("Message") {
                Some(Value::String(message)) => Some(message),
                _ => None,
            }
        }
        _ => None,
    };
    let payload_text = inner.as_deref().unwrap_or(body);
    let forward = match WebhookPayload::parse(payload_text.as_bytes()) {
        Ok(payload) => {
            let mut attributes = vec![
                ("event_type", payload.event_type.to_string()),
                ("idempotency_key", payload.key.to_string()),
                ("source", SOURCE.to_owned()),
            ];
            if let Some(trace_id) = payload.trace_id() {
                attributes.push(("trace_id", trace_id.to_owned()));
            }
            if let Some(ms) = received_at {
                attributes.push((RECEIVED_AT, ms.to_string()));
            }
            let fifo =
                FifoIds { group_id: payload.fifo_group_id(), deduplication_id: payload.key.fifo_deduplication_id() };
            Forward { body: payload_text.to_owned(), attributes, fifo, unparseable: None, left_out: vec![] }
        }
        Err(e) => Forward {
            body: body.to_owned(),
            attributes: vec![("source", SOURCE.to_owned())],
            fifo: FifoIds {
                group_id: "unparseable".into(),
                deduplication_id: sha256_hex(body.as_bytes())[..64].into(),
            },
            unparseable: Some(e.to_string()),
            left_out: vec![],
        },
    };
    forward.fit()
}

/// Splits forwards into `SendMessageBatch` calls: at most ten and [`MAX_BATCH_BYTES`] each.
pub fn batches(forwards: &[Forward]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, f) in forwards.iter().enumerate() {
        let size = f.size();
        if i > start && (i - start == 10 || bytes + size > MAX_BATCH_BYTES) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < forwards.len() {
        out.push(start..forwards.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EVENT: &str =
        r#"{"type":"subscription.created","messageId":"msg-1","traceId":"t-1","customer":{"id":"customer-7"}}"#;

    #[test]
    fn a_stigg_payload_is_forwarded_verbatim_with_the_receivers_attributes() {
        let f = forward_of(EVENT);
        assert_eq!(f.body, EVENT);
        assert_eq!(f.attribute("idempotency_key"), Some("msg-1"));
        assert_eq!(f.attribute("event_type"), Some("subscription.created"));
        assert_eq!(f.attribute("trace_id"), Some("t-1"));
        assert_eq!(f.attribute("source"), Some("stigg-queue"));
        assert_eq!(f.fifo.group_id, "customer-7");
        assert!(f.unparseable.is_none());
    }

    #[test]
    fn an_sns_envelope_is_unwrapped_to_the_payload_it_carries() {
        let envelope = json!({"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:eu-west-1:1:t",
            "Message": EVENT, "Timestamp": "2026-12-01T00:00:00.000Z"})
        .to_string();
        let f = forward_of(&envelope);
        assert_eq!(f.body, EVENT, "the inner payload, byte for byte");
        assert_eq!(f.attribute("idempotency_key"), Some("msg-1"));
    }

    #[test]
    fn a_body_that_is_not_a_stigg_payload_goes_as_it_came_with_its_reason() {
        for body in ["not json", r#"{"no":"type"}"#, r#"{"Type":"Notification","Message":"{broken"}"#, "[1,2]"] {
            let f = forward_of(body);
            assert_eq!(f.body, body);
            assert_eq!(f.attribute("idempotency_key"), None, "{body}");
            assert_eq!(f.attribute("source"), Some("stigg-queue"));
            assert!(f.unparseable.is_some(), "{body}");
            assert_eq!(f.fifo.deduplication_id.len(), 64);
        }
    }

    #[test]
    fn the_same_event_gets_the_same_key_and_dedup_id_as_by_webhook() {
        let by_webhook = WebhookPayload::parse(EVENT.as_bytes()).unwrap();
        let f = forward_of(EVENT);
        assert_eq!(f.attribute("idempotency_key"), Some(by_webhook.key.as_str()));
        assert_eq!(f.fifo.deduplication_id, by_webhook.key.fifo_deduplication_id());
        // No messageId, no eventId: the key is the body's digest, on both channels.
        let hashed = r#"{"type":"customer.updated","id":"c-1"}"#;
        assert_eq!(
            forward_of(hashed).attribute("idempotency_key"),
            Some(WebhookPayload::parse(hashed.as_bytes()).unwrap().key.as_str())
        );
    }

    fn sized(n: usize) -> Forward {
        Forward {
            body: "x".repeat(n),
            attributes: vec![],
            fifo: FifoIds { group_id: "g".into(), deduplication_id: "d".into() },
            unparseable: None,
            left_out: vec![],
        }
    }

    #[test]
    fn batches_hold_at_most_ten_messages_and_1_mib() {
        assert_eq!(MAX_BATCH_BYTES, 1_048_576, "SQS's documented limit, attributes included");
        let small: Vec<_> = (0..23).map(|_| sized(10)).collect();
        assert_eq!(batches(&small), vec![0..10, 10..20, 20..23]);
        let big: Vec<_> = (0..4).map(|_| sized(400 * 1024)).collect();
        assert_eq!(batches(&big), vec![0..2, 2..4]);
        // 256 KiB each: four fit where the old 256 KiB limit sent one per call.
        let quarter: Vec<_> = (0..5).map(|_| sized(256 * 1024)).collect();
        assert_eq!(batches(&quarter), vec![0..4, 4..5]);
        // One message at the limit on its own still goes (SQS decides).
        assert_eq!(batches(&[sized(MAX_BATCH_BYTES), sized(1)]), vec![0..1, 1..2]);
        assert!(batches(&[]).is_empty());
    }

    /// A Stigg payload of exactly `bytes`, padded in a field of its own.
    fn payload_of(bytes: usize) -> String {
        let bare = json!({"type": "entitlements.updated", "messageId": "big-1", "traceId": "trace-big-1",
            "customer": {"id": "customer-7"}, "padding": ""})
        .to_string();
        let padded = json!({"type": "entitlements.updated", "messageId": "big-1", "traceId": "trace-big-1",
            "customer": {"id": "customer-7"}, "padding": "p".repeat(bytes - bare.len())})
        .to_string();
        assert_eq!(padded.len(), bytes);
        padded
    }

    #[test]
    fn a_700_kib_event_keeps_every_attribute() {
        let f = forward_of(&payload_of(700 * 1024));
        assert_eq!(f.body.len(), 700 * 1024);
        assert!(f.left_out.is_empty(), "{:?}", f.left_out);
        assert_eq!(f.attributes.len(), 4);
        assert!(f.size() <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn an_event_near_1_mib_goes_whole_with_only_the_attributes_that_fit() {
        // Room for every attribute but the trace id (`name + "String" + value` each).
        let small = forward_of(&payload_of(1000));
        let attributes = small.size() - 1000;
        let trace = "trace_id".len() + "String".len() + "trace-big-1".len();
        let body = payload_of(MAX_MESSAGE_BYTES - (attributes - trace));
        let f = forward_of(&body);
        assert_eq!(f.body, body, "the body is never touched");
        assert_eq!(f.left_out, ["trace_id"]);
        assert!(f.size() <= MAX_MESSAGE_BYTES, "{}", f.size());
        assert_eq!(f.attribute("idempotency_key"), Some("big-1"));

        // No room for any attribute: the body alone, which SQS accepts.
        let body = payload_of(MAX_MESSAGE_BYTES - 5);
        let f = forward_of(&body);
        assert_eq!(f.body, body);
        let present: Vec<_> = DROPPABLE_ATTRIBUTES.into_iter().filter(|a| *a != RECEIVED_AT).collect();
        assert_eq!(f.left_out, present, "forward_of stamps no received_at");
        assert_eq!(f.size(), body.len());
        let stamped = forward_received(&payload_of(1000), Some(1_764_614_400_000));
        assert_eq!(stamped.attribute(RECEIVED_AT), Some("1764614400000"));
    }

    #[test]
    fn without_its_idempotency_key_attribute_an_event_gets_the_same_key_from_its_body() {
        use aws_lambda_events::event::sqs::SqsMessage;
        for body in [payload_of(MAX_MESSAGE_BYTES - 5), r#"{"type":"customer.updated","id":"c-1"}"#.to_owned()] {
            let key = WebhookPayload::parse(body.as_bytes()).unwrap().key;
            let record: SqsMessage = serde_json::from_value(json!({"messageId": "m", "body": body})).unwrap();
            assert!(record.message_attributes.is_empty());
            let event = crate::processor::event_from_record(&record, None).unwrap();
            assert_eq!(event.key, key, "the key the bridge would have sent as an attribute");
        }
    }
}
