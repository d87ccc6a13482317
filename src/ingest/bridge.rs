//! The bridge: drains Stigg's durable-delivery queue (in Stigg's account, read with Edge API
//! credentials, see [`crate::stigg::edge`]) into our events queue, so every channel meets the same
//! processor, DLQ, metrics and once-per-key handlers.
//!
//! A message is deleted from Stigg's queue only after SQS reported it sent to ours. A crash at
//! any point leaves it in Stigg's queue, to reappear after that queue's visibility timeout and be
//! forwarded again; the processor's claim runs its handlers once either way (and once for an
//! event that also came by webhook: the key is the same).
//!
//! Credentials that Stigg's queue rejects before their stated expiration (revoked, see
//! [`crate::queue::REJECTED_CREDENTIALS`]) are dropped and fetched anew, once per invocation, and
//! the rejected call is made again; a second rejection ends the invocation with an error.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::aws::OPERATION_TIMEOUT;
use crate::aws::queue::{
    EventQueue, FifoIds, MAX_MESSAGE_BYTES, Outbound, QueueError, RECEIVED_AT, ReceiveError, SourceQueue,
    attributes_size, rejects_credentials,
};
use crate::stigg::edge::edge_error_in;
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

/// Time kept for the invocation's answer (the report and the metrics) after the last call.
const ANSWER_TIME: Duration = Duration::from_secs(1);

/// What a delete may need: the call (SQS may reject its credentials), one renewal of the
/// credentials (`identity_allowance`, the identity cache's load timeout), and the call again;
/// each call within the SDK's operation timeout ([`OPERATION_TIMEOUT`]).
pub fn delete_reserve(identity_allowance: Duration) -> Duration {
    OPERATION_TIMEOUT + identity_allowance + OPERATION_TIMEOUT
}

/// Kept back from the deadline after the last poll: one forward (a `SendMessageBatch` within
/// [`OPERATION_TIMEOUT`]) and then [`delete_reserve`]. With the bridge's 16 s identity
/// allowance: 31 s.
pub fn finish_margin(identity_allowance: Duration) -> Duration {
    OPERATION_TIMEOUT + delete_reserve(identity_allowance)
}

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

    fn outbound(&self) -> Outbound<'_> {
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
    /// Received but not forwarded: too little time was left to forward and delete them before
    /// the deadline. They reappear in Stigg's queue after its visibility timeout.
    pub deferred: usize,
    pub deleted: usize,
    pub delete_failures: usize,
    /// Times the cached credentials were dropped because Stigg's queue rejected them (0 or 1).
    pub credentials_renewed: usize,
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
    /// Stigg's queue rejected the Edge API's credentials, and new ones (fetched once per
    /// invocation) did not help or were already fetched this invocation.
    #[error("Stigg's queue rejected the Edge API's credentials ({operation}), also after fetching new ones: {detail}")]
    CredentialsRejected {
        operation: &'static str,
        detail: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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
        use aws_sdk_sqs::error::ProvideErrorMetadata as _;
        let detail = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
        if let Some(edge) = edge_error_in(&e) {
            return Self::Credentials { detail: edge.to_string(), refused: edge.is_refused(), source: e };
        }
        if rejects_credentials(e.code()) {
            return Self::CredentialsRejected { operation: "ReceiveMessage", detail, source: Box::new(e) };
        }
        Self::Receive { detail, source: e }
    }

    fn from_delete(e: QueueError) -> Self {
        if e.credentials_rejected() {
            let detail = e.to_string();
            return Self::CredentialsRejected { operation: "DeleteMessageBatch", detail, source: Box::new(e) };
        }
        Self::Delete(e)
    }
}

/// Whether this invocation may still drop Stigg's credentials and fetch new ones: once, so a
/// queue that rejects every credential ends the invocation instead of asking the Edge API in a
/// loop.
struct Renewal {
    available: bool,
}

impl Renewal {
    fn once() -> Self {
        Self { available: true }
    }

    fn take(&mut self) -> bool {
        std::mem::take(&mut self.available)
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
    /// `identity_allowance`: how long fetching Stigg's credentials may take within one call (the
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

    /// Polls, forwards and deletes until [`finish_margin`] before `deadline` (31 s: a 60 s
    /// invocation polls for 29 s), or after `max_empty_polls` empty polls in a row. An invocation
    /// shorter than 1.5 margins keeps two thirds of its time instead, so it still polls for a
    /// third. The report counts what was done even when an error ended the drain.
    pub async fn drain(&self, deadline: Instant) -> (DrainReport, Result<(), BridgeError>) {
        let mut report = DrainReport::default();
        let margin =
            finish_margin(self.identity_allowance).min(deadline.saturating_duration_since(Instant::now()) * 2 / 3);
        let mut renewal = Renewal::once();
        let mut empty_in_a_row = 0;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < margin + Duration::from_secs(1) {
                break Ok(());
            }
            // Whole seconds (SQS's unit), never past the margin; the whole call (credentials
            // included) also ends by the margin, so a forward and a delete (renewing its
            // credentials if need be) still fit after it.
            let wait = self.wait.min(left - margin - Duration::from_secs(1));
            let wait = Duration::from_secs(wait.as_secs());
            report.polls += 1;
            let messages = match self.receive(wait, left - margin, &mut renewal, &mut report).await {
                Ok(messages) => messages,
                Err(e) => break Err(e),
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
            if let Err(e) = self.forward_and_delete(&messages, deadline, margin, &mut renewal, &mut report).await {
                break Err(e);
            }
        };
        (report, result)
    }

    /// One poll; when Stigg's queue rejects the credentials and this invocation has not renewed
    /// them yet, renews them and polls again (both polls within `within`).
    async fn receive(
        &self,
        wait: Duration,
        within: Duration,
        renewal: &mut Renewal,
        report: &mut DrainReport,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, BridgeError> {
        use aws_sdk_sqs::error::ProvideErrorMetadata as _;
        let started = Instant::now();
        let generation = self.source.credentials_generation();
        let first = self.source.receive(wait, self.identity_allowance, within).await;
        let result = match first {
            Err(e)
                if rejects_credentials(e.code()) && self.renew(renewal, generation, "ReceiveMessage", &e, report) =>
            {
                self.source.receive(wait, self.identity_allowance, within.saturating_sub(started.elapsed())).await
            }
            other => other,
        };
        result.map_err(|e| self.failed(BridgeError::from_receive(e)))
    }

    /// Drops the credentials SQS rejected, if this invocation still may: true when the call is
    /// to be made again.
    fn renew(
        &self,
        renewal: &mut Renewal,
        generation: u64,
        operation: &'static str,
        error: &(dyn std::error::Error + 'static),
        report: &mut DrainReport,
    ) -> bool {
        if !renewal.take() {
            return false;
        }
        report.credentials_renewed += 1;
        crate::metrics::bridge_credentials_rejected("renewed");
        // false: a concurrent invocation already renewed them since this call began.
        let dropped = self.source.renew_credentials(generation);
        tracing::warn!(operation, dropped, error = %crate::error_chain(error),
            "Stigg's queue rejected the Edge API credentials before their expiration; fetching new ones and trying once more");
        true
    }

    /// Counts a rejection that no renewal fixed (the error ends the invocation).
    fn failed(&self, e: BridgeError) -> BridgeError {
        if matches!(e, BridgeError::CredentialsRejected { .. }) {
            crate::metrics::bridge_credentials_rejected("failed");
        }
        e
    }

    /// Forwards one poll's messages, then deletes from Stigg's queue exactly those SQS reported
    /// sent. A batch refused whole stops the drain after the earlier batches' deletes. A batch
    /// after the first starts only while `margin` is left before `deadline`, so the delete keeps
    /// its [`delete_reserve`]; the messages not forwarded stay in Stigg's queue.
    async fn forward_and_delete(
        &self,
        messages: &[aws_sdk_sqs::types::Message],
        deadline: Instant,
        margin: Duration,
        renewal: &mut Renewal,
        report: &mut DrainReport,
    ) -> Result<(), BridgeError> {
        let now = SystemTime::now();
        let forwards: Vec<Forward> =
            messages.iter().map(|m| forward_received(m.body().unwrap_or_default(), sent_millis(m))).collect();
        let mut sent = Vec::with_capacity(messages.len());
        let mut refused = None;
        for (n, range) in batches(&forwards).into_iter().enumerate() {
            if n > 0 && deadline.saturating_duration_since(Instant::now()) < margin {
                let rest = forwards.len() - range.start;
                report.deferred += rest;
                crate::metrics::bridge_messages("deferred", rest);
                tracing::warn!(
                    messages = rest,
                    "too little time left to forward and delete; left in Stigg's queue until its visibility timeout ends"
                );
                break;
            }
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
                        if !forward.left_out.is_empty() {
                            tracing::info!(message_id = message.message_id(), bytes = forward.body.len(),
                                left_out = ?forward.left_out,
                                "forwarded without some attributes to fit SQS's 1 MiB; the body carries them");
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
        let deleted = self.delete(&sent, deadline, renewal, report).await;
        match (refused, deleted) {
            (Some(e), _) => Err(BridgeError::Forward(e)),
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(()),
        }
    }

    /// Deletes what was forwarded, before the deadline less [`ANSWER_TIME`]; when Stigg's queue
    /// rejects the credentials and this invocation has not renewed them yet, renews them and
    /// deletes again.
    async fn delete(
        &self,
        handles: &[&str],
        deadline: Instant,
        renewal: &mut Renewal,
        report: &mut DrainReport,
    ) -> Result<(), BridgeError> {
        if handles.is_empty() {
            return Ok(());
        }
        let within = || deadline.saturating_duration_since(Instant::now()).saturating_sub(ANSWER_TIME);
        let generation = self.source.credentials_generation();
        let first = self.source.delete(handles, self.identity_allowance, within()).await;
        let result = match first {
            Err(e) if e.credentials_rejected() && self.renew(renewal, generation, "DeleteMessageBatch", &e, report) => {
                self.source.delete(handles, self.identity_allowance, within()).await
            }
            other => other,
        };
        match result {
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
                Err(self.failed(BridgeError::from_delete(e)))
            }
        }
    }
}

/// When Stigg's queue received the message (`SentTimestamp`, epoch milliseconds).
fn sent_millis(message: &aws_sdk_sqs::types::Message) -> Option<u64> {
    message.attributes()?.get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp)?.parse().ok()
}

/// How long ago Stigg's queue received the message.
fn sent_age(message: &aws_sdk_sqs::types::Message, now: SystemTime) -> Option<Duration> {
    let sent = SystemTime::UNIX_EPOCH + Duration::from_millis(sent_millis(message)?);
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

        /// A bridge between two mocked clients: Stigg's queue and ours, no wait, a 1 s allowance.
        fn mocked_bridge(source: aws_sdk_sqs::Client, target: aws_sdk_sqs::Client, max_empty: Option<usize>) -> Bridge {
            Bridge::new(
                SourceQueue::new(source, url("stigg")),
                EventQueue::new(target, url("events")),
                Duration::ZERO,
                max_empty,
                Duration::from_secs(1),
            )
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
            let bridge = mocked_bridge(source, target, Some(1));
            let (report, result) = bridge.drain(Instant::now() + Duration::from_secs(30)).await;
            result.unwrap();
            assert_eq!(delete.num_calls(), 1, "one delete, of exactly the two sent");
            assert_eq!((report.forwarded, report.forward_failures, report.deleted), (2, 1, 2), "{report:?}");
        }

        /// SQS's answer to credentials revoked before their expiration (its JSON protocol, with
        /// the query-compatible code in `x-amzn-query-error`).
        fn access_denied() -> aws_smithy_runtime_api::http::Response {
            let mut response = aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(403).unwrap(),
                aws_smithy_types::body::SdkBody::from(
                    r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"explicit deny"}"#,
                ),
            );
            response.headers_mut().insert("x-amzn-query-error", "AccessDenied;Sender");
            response
        }

        fn sent_all() -> SendMessageBatchOutput {
            let ok = |id: String| {
                SendMessageBatchResultEntry::builder().id(id).message_id("x").md5_of_message_body("y").build().unwrap()
            };
            SendMessageBatchOutput::builder()
                .set_successful(Some((0..3).map(|i| ok(i.to_string())).collect()))
                .set_failed(Some(vec![]))
                .build()
                .unwrap()
        }

        fn deleted_all() -> DeleteMessageBatchOutput {
            DeleteMessageBatchOutput::builder()
                .set_successful(Some(
                    (0..3)
                        .map(|i| DeleteMessageBatchResultEntry::builder().id(i.to_string()).build().unwrap())
                        .collect(),
                ))
                .set_failed(Some(vec![]))
                .build()
                .unwrap()
        }

        #[tokio::test]
        async fn a_receive_whose_credentials_are_rejected_is_made_again_once() {
            let receive = mock!(Client::receive_message)
                .sequence()
                .http_response(access_denied)
                .output(|| ReceiveMessageOutput::builder().set_messages(Some((0..3).map(message).collect())).build())
                .output(|| ReceiveMessageOutput::builder().build())
                .build();
            let delete = mock!(Client::delete_message_batch).then_output(deleted_all);
            let source = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&receive, &delete]);
            let send = mock!(Client::send_message_batch).then_output(sent_all);
            let target = mock_client!(aws_sdk_sqs, [&send]);
            let bridge = mocked_bridge(source, target, Some(1));
            let (report, result) = bridge.drain(Instant::now() + Duration::from_secs(30)).await;
            result.unwrap();
            assert_eq!(receive.num_calls(), 3, "rejected, again at once with messages, then empty");
            assert_eq!((report.credentials_renewed, report.forwarded, report.deleted), (1, 3, 3), "{report:?}");
        }

        #[tokio::test]
        async fn credentials_rejected_again_after_the_renewal_end_the_drain_and_delete_nothing() {
            let receive = mock!(Client::receive_message).then_http_response(access_denied);
            let delete = mock!(Client::delete_message_batch).then_output(deleted_all);
            let source = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&receive, &delete]);
            let target = mock_client!(aws_sdk_sqs, []);
            let bridge = mocked_bridge(source, target, None);
            let (report, result) = bridge.drain(Instant::now() + Duration::from_secs(30)).await;
            match result {
                Err(BridgeError::CredentialsRejected { operation: "ReceiveMessage", .. }) => {}
                other => panic!("{other:?}"),
            }
            assert_eq!(receive.num_calls(), 2, "the first rejection renews, the second ends the drain");
            assert_eq!(delete.num_calls(), 0);
            assert_eq!(report.credentials_renewed, 1);
        }

        #[tokio::test]
        async fn a_delete_whose_credentials_are_rejected_is_made_again_once() {
            let receive = mock!(Client::receive_message)
                .sequence()
                .output(|| ReceiveMessageOutput::builder().set_messages(Some((0..3).map(message).collect())).build())
                .output(|| ReceiveMessageOutput::builder().build())
                .build();
            let delete =
                mock!(Client::delete_message_batch).sequence().http_response(access_denied).output(deleted_all).build();
            let source = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&receive, &delete]);
            let send = mock!(Client::send_message_batch).then_output(sent_all);
            let target = mock_client!(aws_sdk_sqs, [&send]);
            let bridge = mocked_bridge(source, target, Some(1));
            let (report, result) = bridge.drain(Instant::now() + Duration::from_secs(30)).await;
            result.unwrap();
            assert_eq!(delete.num_calls(), 2);
            assert_eq!((report.credentials_renewed, report.deleted, report.delete_failures), (1, 3, 0), "{report:?}");
        }

        #[tokio::test]
        async fn a_further_batch_without_time_for_it_and_the_delete_stays_in_stiggs_queue() {
            let messages: Vec<_> = (0..12).map(message).collect();
            let delete =
                mock!(Client::delete_message_batch).match_requests(|r| r.entries().len() == 10).then_output(|| {
                    let ok = |i: usize| DeleteMessageBatchResultEntry::builder().id(i.to_string()).build().unwrap();
                    DeleteMessageBatchOutput::builder()
                        .set_successful(Some((0..10).map(ok).collect()))
                        .set_failed(Some(vec![]))
                        .build()
                        .unwrap()
                });
            let source = mock_client!(aws_sdk_sqs, [&delete]);
            let send = mock!(Client::send_message_batch).then_compute_output(|r| {
                let ok = |e: &aws_sdk_sqs::types::SendMessageBatchRequestEntry| {
                    SendMessageBatchResultEntry::builder()
                        .id(e.id())
                        .message_id("x")
                        .md5_of_message_body("y")
                        .build()
                        .unwrap()
                };
                SendMessageBatchOutput::builder()
                    .set_successful(Some(r.entries().iter().map(ok).collect()))
                    .set_failed(Some(vec![]))
                    .build()
                    .unwrap()
            });
            let target = mock_client!(aws_sdk_sqs, [&send]);
            let bridge = mocked_bridge(source, target, None);
            // Twelve messages, two batches; less than the margin left once the first is sent.
            let (mut report, mut renewal) = (DrainReport::default(), Renewal::once());
            let deadline = Instant::now() + Duration::from_secs(5);
            let margin = Duration::from_secs(10);
            bridge.forward_and_delete(&messages, deadline, margin, &mut renewal, &mut report).await.unwrap();
            assert_eq!(send.num_calls(), 1, "the second batch is not started");
            assert_eq!((report.forwarded, report.deferred, report.deleted), (10, 2, 10), "{report:?}");
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
            let bridge = mocked_bridge(source, target, None);
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

    #[test]
    fn the_finish_margin_holds_a_forward_and_a_delete_renewing_its_credentials() {
        let allowance =
            crate::stigg::edge::load_timeout(crate::stigg::edge::Backoff::default(), Duration::from_secs(5));
        assert_eq!(allowance, Duration::from_secs(16));
        // A forward, a rejected delete, a renewal, the delete again.
        assert_eq!(delete_reserve(allowance), Duration::from_secs(5 + 16 + 5));
        assert_eq!(finish_margin(allowance), Duration::from_secs(5 + 5 + 16 + 5));
    }
}
