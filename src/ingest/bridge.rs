//! The bridge: drains Stigg's durable-delivery queue (in Stigg's account, read with Edge API
//! credentials, see [`crate::stigg::edge`]) into our events queue, so every channel meets the same
//! processor, DLQ, metrics and once-per-key handlers.
//!
//! A message is deleted from Stigg's queue only after SQS reported it sent to ours. A crash at
//! any point leaves it in Stigg's queue, to reappear after that queue's visibility timeout and be
//! forwarded again; the processor's claim runs its handlers once either way (and once for an
//! event that also came by webhook: the key is the same).

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::aws::queue::{EventQueue, FifoIds, Outbound, QueueError, ReceiveError, SourceQueue};
use crate::stigg::edge::edge_error_in;
use crate::stigg::event::{WebhookPayload, sha256_hex};

/// The `source` attribute of every message the bridge forwards.
pub const SOURCE: &str = "stigg-queue";

/// Kept back from the deadline after the last poll: one forward and one delete, each bounded by
/// the SDK's 5 s operation timeout (see [`crate::aws::timeouts`]).
pub const FINISH_MARGIN: Duration = Duration::from_secs(10);

/// What SQS accepts in one `SendMessageBatch`: 256 KiB for the whole batch (raised to 1 MiB in
/// 2025; the older limit holds everywhere, including emulators).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// One message of Stigg's, as it goes to our queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The Stigg payload (an SNS envelope unwrapped), or the body as it came when it is none.
    pub body: String,
    pub attributes: Vec<(&'static str, String)>,
    pub fifo: FifoIds,
    /// Why the body is not a Stigg payload (forwarded as-is: the processor dead-letters it).
    pub unparseable: Option<String>,
}

impl Forward {
    /// What the batch limit counts: the body and the attributes' names, types and values.
    pub fn size(&self) -> usize {
        self.body.len() + self.attributes.iter().map(|(k, v)| k.len() + v.len() + "String".len()).sum::<usize>()
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    fn outbound(&self) -> Outbound<'_> {
        Outbound { body: &self.body, attributes: self.attributes.clone(), fifo: Some(self.fifo.clone()) }
    }
}

/// The message for our queue, with the receiver's attributes (`event_type`, `idempotency_key`,
/// `trace_id`) and `source=stigg-queue`, and the receiver's FIFO ids (so SQS's own five-minute
/// deduplication also covers an event that came both ways).
pub fn forward_of(body: &str) -> Forward {
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
    match WebhookPayload::parse(payload_text.as_bytes()) {
        Ok(payload) => {
            let mut attributes = vec![
                ("event_type", payload.event_type.to_string()),
                ("idempotency_key", payload.key.to_string()),
                ("source", SOURCE.to_owned()),
            ];
            if let Some(trace_id) = payload.trace_id() {
                attributes.push(("trace_id", trace_id.to_owned()));
            }
            let fifo =
                FifoIds { group_id: payload.fifo_group_id(), deduplication_id: payload.key.fifo_deduplication_id() };
            Forward { body: payload_text.to_owned(), attributes, fifo, unparseable: None }
        }
        Err(e) => Forward {
            body: body.to_owned(),
            attributes: vec![("source", SOURCE.to_owned())],
            fifo: FifoIds {
                group_id: "unparseable".into(),
                deduplication_id: sha256_hex(body.as_bytes())[..64].into(),
            },
            unparseable: Some(e.to_string()),
        },
    }
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

/// What one invocation did (also its response).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    pub polls: usize,
    pub empty_polls: usize,
    pub received: usize,
    pub forwarded: usize,
    /// Forwarded as-is because the body is not a Stigg payload.
    pub unparseable: usize,
    pub forward_failures: usize,
    pub deleted: usize,
    pub delete_failures: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The Edge API gave no credentials (a refused key, or an outage past the retries).
    #[error("no credentials for Stigg's queue: {detail}")]
    Credentials {
        detail: String,
        refused: bool,
        #[source]
        source: ReceiveError,
    },
    #[error("receiving from Stigg's queue failed: {detail}")]
    Receive {
        detail: String,
        #[source]
        source: ReceiveError,
    },
    /// Our queue refused a whole batch: nothing of it was deleted from Stigg's queue.
    #[error("forwarding to our events queue failed")]
    Forward(#[source] QueueError),
    #[error("deleting forwarded messages from Stigg's queue failed (they will be forwarded again)")]
    Delete(#[source] QueueError),
}

impl BridgeError {
    fn from_receive(e: ReceiveError) -> Self {
        let detail = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
        match edge_error_in(&e) {
            Some(edge) => Self::Credentials { detail: edge.to_string(), refused: edge.is_refused(), source: e },
            None => Self::Receive { detail, source: e },
        }
    }
}

pub struct Bridge {
    source: SourceQueue,
    target: EventQueue,
    wait: Duration,
    max_empty_polls: Option<usize>,
    identity_allowance: Duration,
}

impl Bridge {
    /// `identity_allowance`: how long fetching Stigg's credentials may take within one poll (the
    /// identity cache's load timeout, see [`crate::stigg::edge::load_timeout`]).
    pub fn new(
        source: SourceQueue,
        target: EventQueue,
        wait: Duration,
        max_empty_polls: Option<usize>,
        identity_allowance: Duration,
    ) -> Self {
        Self { source, target, wait: wait.min(Duration::from_secs(20)), max_empty_polls, identity_allowance }
    }

    /// Polls, forwards and deletes until [`FINISH_MARGIN`] (or a third of the time, when less is
    /// left) before `deadline`, or after `max_empty_polls` empty polls in a row. The report counts
    /// what was done even when an error ended the drain.
    pub async fn drain(&self, deadline: Instant) -> (DrainReport, Result<(), BridgeError>) {
        let mut report = DrainReport::default();
        let margin = FINISH_MARGIN.min(deadline.saturating_duration_since(Instant::now()) / 3);
        let mut empty_in_a_row = 0;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < margin + Duration::from_secs(1) {
                break Ok(());
            }
            // Whole seconds (SQS's unit), never past the margin; the whole call (credentials
            // included) also ends by the margin, so a forward and a delete still fit after it.
            let wait = self.wait.min(left - margin - Duration::from_secs(1));
            let wait = Duration::from_secs(wait.as_secs());
            report.polls += 1;
            let messages = match self.source.receive(wait, self.identity_allowance, left - margin).await {
                Ok(messages) => messages,
                Err(e) => break Err(BridgeError::from_receive(e)),
            };
            if messages.is_empty() {
                report.empty_polls += 1;
                crate::metrics::bridge_poll(false);
                empty_in_a_row += 1;
                if self.max_empty_polls.is_some_and(|max| empty_in_a_row >= max) {
                    break Ok(());
                }
                continue;
            }
            empty_in_a_row = 0;
            crate::metrics::bridge_poll(true);
            report.received += messages.len();
            if let Err(e) = self.forward_and_delete(&messages, &mut report).await {
                break Err(e);
            }
        };
        (report, result)
    }

    /// Forwards one poll's messages, then deletes from Stigg's queue exactly those SQS reported
    /// sent. A batch refused whole stops the drain after the earlier batches' deletes.
    async fn forward_and_delete(
        &self,
        messages: &[aws_sdk_sqs::types::Message],
        report: &mut DrainReport,
    ) -> Result<(), BridgeError> {
        let now = SystemTime::now();
        let forwards: Vec<Forward> = messages.iter().map(|m| forward_of(m.body().unwrap_or_default())).collect();
        let mut sent = Vec::with_capacity(messages.len());
        let mut refused = None;
        for range in batches(&forwards) {
            let outbound = forwards[range.clone()].iter().map(Forward::outbound).collect();
            let results = match self.target.send_batch(outbound).await {
                Ok(results) => results,
                Err(e) => {
                    report.forward_failures += range.len();
                    crate::metrics::bridge_messages("forward_failed", range.len());
                    refused = Some(e);
                    break;
                }
            };
            for (i, result) in range.zip(results) {
                let (message, forward) = (&messages[i], &forwards[i]);
                let key = forward.attribute("idempotency_key");
                match result {
                    Ok(()) => {
                        if let Some(reason) = &forward.unparseable {
                            report.unparseable += 1;
                            crate::metrics::bridge_messages("unparseable", 1);
                            tracing::warn!(message_id = message.message_id(), reason = %reason,
                                "not a Stigg payload; forwarded as it came, for the processor to dead-letter");
                        }
                        report.forwarded += 1;
                        crate::metrics::bridge_messages("forwarded", 1);
                        if let Some(age) = sent_age(message, now) {
                            crate::metrics::bridge_message_age(age.as_secs_f64() * 1000.0);
                        }
                        tracing::info!(
                            idempotency_key = key,
                            event_type = forward.attribute("event_type"),
                            trace_id = forward.attribute("trace_id"),
                            message_id = message.message_id(),
                            "forwarded from Stigg's queue"
                        );
                        sent.push(message.receipt_handle().unwrap_or_default());
                    }
                    Err(reason) => {
                        report.forward_failures += 1;
                        crate::metrics::bridge_messages("forward_failed", 1);
                        tracing::warn!(idempotency_key = key, message_id = message.message_id(), reason = %reason,
                            "not forwarded; left in Stigg's queue for the next poll");
                    }
                }
            }
        }
        let deleted = self.delete(&sent, report).await;
        match (refused, deleted) {
            (Some(e), _) => Err(BridgeError::Forward(e)),
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(()),
        }
    }

    async fn delete(&self, handles: &[&str], report: &mut DrainReport) -> Result<(), BridgeError> {
        if handles.is_empty() {
            return Ok(());
        }
        match self.source.delete(handles).await {
            Ok(results) => {
                for result in results {
                    match result {
                        Ok(()) => report.deleted += 1,
                        Err(reason) => {
                            report.delete_failures += 1;
                            crate::metrics::bridge_messages("delete_failed", 1);
                            tracing::warn!(reason = %reason, "forwarded but not deleted; it will be forwarded again");
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                report.delete_failures += handles.len();
                crate::metrics::bridge_messages("delete_failed", handles.len());
                Err(BridgeError::Delete(e))
            }
        }
    }
}

/// How long ago Stigg's queue received the message (`SentTimestamp`, epoch milliseconds).
fn sent_age(message: &aws_sdk_sqs::types::Message, now: SystemTime) -> Option<Duration> {
    let sent = message.attributes()?.get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp)?;
    let sent = SystemTime::UNIX_EPOCH + Duration::from_millis(sent.parse().ok()?);
    now.duration_since(sent).ok()
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

    mod partial_failures {
        use super::*;
        use crate::aws::queue::{EventQueue, SourceQueue};
        use crate::config::QueueUrl;
        use aws_sdk_sqs::Client;
        use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
        use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
        use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
        use aws_sdk_sqs::types::{
            BatchResultErrorEntry, DeleteMessageBatchResultEntry, Message, SendMessageBatchResultEntry,
        };
        use aws_smithy_mocks::{RuleMode, mock, mock_client};

        fn message(i: usize) -> Message {
            let body = json!({"type": "plan.created", "messageId": format!("m-{i}")}).to_string();
            Message::builder().message_id(format!("sqs-{i}")).receipt_handle(format!("rh-{i}")).body(body).build()
        }

        fn url(name: &str) -> QueueUrl {
            QueueUrl::parse(&format!("https://sqs.eu-west-1.amazonaws.com/1/{name}")).unwrap()
        }

        #[tokio::test]
        async fn only_the_messages_sqs_reports_sent_are_deleted_from_stiggs_queue() {
            let receive = mock!(Client::receive_message)
                .sequence()
                .output(|| ReceiveMessageOutput::builder().set_messages(Some((0..3).map(message).collect())).build())
                .output(|| ReceiveMessageOutput::builder().build())
                .build();
            let delete = mock!(Client::delete_message_batch)
                .match_requests(|r| {
                    let handles: Vec<_> = r.entries().iter().map(|e| e.receipt_handle()).collect();
                    handles == ["rh-0", "rh-2"]
                })
                .then_output(|| {
                    DeleteMessageBatchOutput::builder()
                        .successful(DeleteMessageBatchResultEntry::builder().id("0").build().unwrap())
                        .successful(DeleteMessageBatchResultEntry::builder().id("1").build().unwrap())
                        .set_failed(Some(vec![]))
                        .build()
                        .unwrap()
                });
            let source = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&receive, &delete]);
            let send = mock!(Client::send_message_batch).then_output(|| {
                let ok = |id: &str| {
                    SendMessageBatchResultEntry::builder()
                        .id(id)
                        .message_id("x")
                        .md5_of_message_body("y")
                        .build()
                        .unwrap()
                };
                let throttled = BatchResultErrorEntry::builder()
                    .id("1")
                    .code("ThrottlingException")
                    .sender_fault(false)
                    .build()
                    .unwrap();
                SendMessageBatchOutput::builder()
                    .successful(ok("0"))
                    .successful(ok("2"))
                    .failed(throttled)
                    .build()
                    .unwrap()
            });
            let target = mock_client!(aws_sdk_sqs, [&send]);
            let bridge = Bridge::new(
                SourceQueue::new(source, url("stigg")),
                EventQueue::new(target, url("events")),
                Duration::ZERO,
                Some(1),
                Duration::from_secs(1),
            );
            let (report, result) = bridge.drain(Instant::now() + Duration::from_secs(30)).await;
            result.unwrap();
            assert_eq!(delete.num_calls(), 1, "one delete, of exactly the two sent");
            assert_eq!((report.forwarded, report.forward_failures, report.deleted), (2, 1, 2), "{report:?}");
        }

        #[tokio::test]
        async fn a_batch_refused_whole_deletes_nothing_and_ends_the_drain() {
            let receive = mock!(Client::receive_message).then_output(|| {
                ReceiveMessageOutput::builder().set_messages(Some((0..3).map(message).collect())).build()
            });
            let delete = mock!(Client::delete_message_batch)
                .then_output(|| DeleteMessageBatchOutput::builder().build().unwrap());
            let source = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&receive, &delete]);
            let send = mock!(Client::send_message_batch).then_http_response(|| {
                aws_smithy_runtime_api::http::Response::new(
                    aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                    aws_smithy_types::body::SdkBody::from(
                        r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"gone"}"#,
                    ),
                )
            });
            let target = mock_client!(aws_sdk_sqs, [&send]);
            let bridge = Bridge::new(
                SourceQueue::new(source, url("stigg")),
                EventQueue::new(target, url("events")),
                Duration::ZERO,
                None,
                Duration::from_secs(1),
            );
            let (report, result) = bridge.drain(Instant::now() + Duration::from_secs(30)).await;
            assert!(matches!(result, Err(BridgeError::Forward(_))), "{result:?}");
            assert_eq!(delete.num_calls(), 0);
            assert_eq!(receive.num_calls(), 1, "the drain stopped at the refusal");
            assert_eq!((report.forwarded, report.forward_failures), (0, 3));
        }
    }

    fn sized(n: usize) -> Forward {
        Forward {
            body: "x".repeat(n),
            attributes: vec![],
            fifo: FifoIds { group_id: "g".into(), deduplication_id: "d".into() },
            unparseable: None,
        }
    }

    #[test]
    fn batches_hold_at_most_ten_messages_and_256_kib() {
        let small: Vec<_> = (0..23).map(|_| sized(10)).collect();
        assert_eq!(batches(&small), vec![0..10, 10..20, 20..23]);
        let big: Vec<_> = (0..4).map(|_| sized(100 * 1024)).collect();
        assert_eq!(batches(&big), vec![0..2, 2..4]);
        // One message at the limit on its own still goes (SQS decides).
        assert_eq!(batches(&[sized(MAX_BATCH_BYTES), sized(1)]), vec![0..1, 1..2]);
        assert!(batches(&[]).is_empty());
    }
}
