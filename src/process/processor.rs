//! The `processor` function: turns SQS records into [`StiggEvent`]s and runs the handlers once
//! per idempotency key, reporting partial batch failures.
//!
//! Per record:
//! - unparseable body -> dead-letter queue with the reason, acknowledged;
//! - key already processed -> skipped ("duplicate skipped"), acknowledged;
//! - key being processed by another invocation -> left for redelivery;
//! - handlers succeed -> key marked processed, one INFO line "event processed";
//! - retryable error or panic -> claim released, record left for redelivery;
//! - permanent error -> claim released, record to the dead-letter queue, acknowledged.
//!
//! Every record must finish before the invocation's deadline minus a margin (see
//! [`record_deadline`]): a record whose handlers run out of time is a retryable failure for that
//! record alone, its claim is released, and the batch response still reaches Lambda, so one hung
//! handler does not time the whole batch out (which would redeliver every record of it).
//!
//! Without a dead-letter queue configured, what would go there is reported as failed instead,
//! so the queue's own redrive policy moves it after `maxReceiveCount` receives.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::FutureExt;
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tracing::Instrument;

use crate::aws::claim::{ClaimOutcome, IdempotencyStore};
use crate::aws::queue::{EventQueue, FifoIds, Outbound};
use crate::metrics::{self, ProcessorOutcome};
use crate::process::handler::{HandlerError, Handlers};
use crate::stigg::event::{IdempotencyKey, JsonError, PayloadError, StiggEvent, WebhookPayload, sha256_hex};

/// Why a record could not be turned into an event. Permanent: the bytes will not change.
#[derive(Debug, thiserror::Error)]
pub enum PoisonError {
    #[error("record has no body")]
    NoBody,
    #[error("SNS notification without a string Message")]
    EmptyNotification,
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// Why a record was dead-lettered (the `failure_reason` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    Unparseable,
    PermanentError,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unparseable => "unparseable",
            Self::PermanentError => "permanent_error",
        }
    }
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    Processed,
    Duplicate,
    /// Reported in `batchItemFailures`: SQS delivers it again.
    Retry(String),
    /// Sent to the dead-letter queue and acknowledged.
    DeadLettered(FailureReason),
}

/// Outcomes of one batch, in record order, by SQS message id.
#[derive(Debug, Default)]
pub struct BatchReport {
    pub outcomes: Vec<(String, RecordOutcome)>,
}

impl BatchReport {
    pub fn response(&self) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for (id, outcome) in &self.outcomes {
            if matches!(outcome, RecordOutcome::Retry(_)) && !id.is_empty() {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id.clone();
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    pub fn count(&self, f: impl Fn(&RecordOutcome) -> bool) -> usize {
        self.outcomes.iter().filter(|(_, o)| f(o)).count()
    }
}

/// Reads a record's body as a Stigg event: a flat Stigg payload, or one wrapped in an SNS
/// notification. The `idempotency_key` message attribute (set by the receiver) wins over the
/// key derived from the body, so both paths agree even for hash-keyed events.
pub fn event_from_record(record: &SqsMessage) -> Result<StiggEvent, PoisonError> {
    let body = record.body.as_deref().ok_or(PoisonError::NoBody)?;
    let value: Value = serde_json::from_str(body).map_err(|e| PayloadError::NotJson(JsonError::new(&e)))?;
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
    Ok(StiggEvent::new(payload, raw))
}

/// The invocation's length when the runtime reports no usable deadline (the template's
/// processor timeout); see [`crate::invocation_deadline`].
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

/// The most time kept back from the invocation's deadline for releasing claims and answering.
pub const RESPONSE_MARGIN: Duration = Duration::from_secs(2);

/// When every record of an invocation must be done: the deadline less [`RESPONSE_MARGIN`], or
/// less a quarter of the time left when that is shorter (a nearly spent invocation still keeps
/// some time to answer).
pub fn record_deadline(deadline: SystemTime, now: SystemTime) -> (tokio::time::Instant, Duration) {
    let left = deadline.duration_since(now).unwrap_or_default();
    let margin = RESPONSE_MARGIN.min(left / 4);
    (tokio::time::Instant::now() + (left - margin), margin)
}

/// One invocation's time, computed once per batch: the claims' lease (the deadline) and when
/// every record of the batch must be done.
#[derive(Debug, Clone, Copy)]
struct Budget {
    lease: SystemTime,
    records_end: tokio::time::Instant,
    margin: Duration,
}

impl Budget {
    fn new(deadline: SystemTime) -> Self {
        let (records_end, margin) = record_deadline(deadline, SystemTime::now());
        Self { lease: deadline, records_end, margin }
    }
}

/// The processor with its clients and handlers, built once per cold start.
pub struct Processor {
    store: IdempotencyStore,
    dead_letters: Option<EventQueue>,
    handlers: Handlers,
    max_concurrency: usize,
}

impl Processor {
    pub fn new(
        store: IdempotencyStore,
        dead_letters: Option<EventQueue>,
        handlers: Handlers,
        max_concurrency: usize,
    ) -> Self {
        Self { store, dead_letters, handlers, max_concurrency: max_concurrency.max(1) }
    }

    /// The Lambda entry point.
    pub async fn handle_event(
        &self,
        event: LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, std::convert::Infallible> {
        let deadline = crate::invocation_deadline(event.context.deadline(), DEFAULT_BUDGET);
        // Boxed: the nested future types otherwise exceed rustc's layout depth limit in `main`.
        Ok(self.process(&event.payload.records, deadline).boxed().await.response())
    }

    /// Processes a batch; `deadline` (the invocation's) is the lease of every claim taken.
    pub async fn process(&self, records: &[SqsMessage], deadline: SystemTime) -> BatchReport {
        let budget = Budget::new(deadline);
        let fifo = records.iter().any(|r| r.event_source_arn.as_deref().is_some_and(|a| a.ends_with(".fifo")));
        let outcomes = if fifo {
            self.process_in_order(records, budget).await
        } else {
            // At most `max_concurrency` records in flight; join_all keeps record order.
            let permits = tokio::sync::Semaphore::new(self.max_concurrency);
            let permits = &permits;
            let records: Vec<_> = records
                .iter()
                .map(|r| async move {
                    let _permit = permits.acquire().await.expect("the semaphore is never closed");
                    self.process_record(r, budget).await
                })
                .collect();
            futures::future::join_all(records).await
        };
        BatchReport { outcomes: records.iter().map(message_id).zip(outcomes).collect() }
    }

    /// FIFO queues: one record at a time, and once one fails the rest of the batch is returned
    /// unprocessed, so no event overtakes an earlier one of its group.
    async fn process_in_order(&self, records: &[SqsMessage], budget: Budget) -> Vec<RecordOutcome> {
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            if outcomes.iter().any(|o| matches!(o, RecordOutcome::Retry(_))) {
                outcomes.push(RecordOutcome::Retry("an earlier record of this FIFO batch failed".into()));
                continue;
            }
            outcomes.push(self.process_record(record, budget).await);
        }
        outcomes
    }

    async fn process_record(&self, record: &SqsMessage, budget: Budget) -> RecordOutcome {
        let span = tracing::info_span!("record", message_id = %message_id(record));
        async {
            let started = Instant::now();
            let outcome = self.process_one(record, budget).await;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let metric = match &outcome {
                RecordOutcome::Processed => ProcessorOutcome::Processed,
                RecordOutcome::Duplicate => ProcessorOutcome::Duplicate,
                RecordOutcome::Retry(_) => ProcessorOutcome::RetryableFailure,
                RecordOutcome::DeadLettered(_) => ProcessorOutcome::PermanentFailure,
            };
            metrics::processor(metric, latency_ms);
            outcome
        }
        .instrument(span)
        .await
    }

    async fn process_one(&self, record: &SqsMessage, budget: Budget) -> RecordOutcome {
        let started = Instant::now();
        if tokio::time::Instant::now() >= budget.records_end {
            // Waited for a permit until no time was left: leave it for redelivery untouched.
            tracing::warn!("no time left in this invocation for this record; will retry");
            return RecordOutcome::Retry("no time left in this invocation".into());
        }
        let event = match event_from_record(record) {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "unparseable record");
                return self.dead_letter(record, None, FailureReason::Unparseable, &e.to_string()).await;
            }
        };
        let fingerprint = sha256_hex(event.raw_json().as_bytes());
        let claim = match self.store.claim(&event.key, &fingerprint, budget.lease).await {
            Ok(ClaimOutcome::Claimed(claim)) => claim,
            Ok(ClaimOutcome::Completed { .. }) => {
                tracing::info!(idempotency_key = %event.key, event_type = %event.event_type, "duplicate skipped");
                return RecordOutcome::Duplicate;
            }
            Ok(ClaimOutcome::InFlight) => {
                tracing::info!(idempotency_key = %event.key, "event in flight in another invocation; retrying later");
                return RecordOutcome::Retry("in flight elsewhere".into());
            }
            Err(e) => {
                tracing::error!(idempotency_key = %event.key, error = %crate::error_chain(&e), "claim failed");
                return RecordOutcome::Retry("idempotency store unavailable".into());
            }
        };
        let run = AssertUnwindSafe(self.handlers.run(&event)).catch_unwind();
        let failure = match tokio::time::timeout_at(budget.records_end, run).await {
            Err(_elapsed) => {
                tracing::warn!(idempotency_key = %event.key, event_type = %event.event_type,
                    "handlers ran out of time before the invocation deadline; will retry");
                HandlerError::retryable("handlers did not finish before the invocation deadline")
            }
            Ok(Ok(Ok(handlers))) => {
                if let Err(e) = self.store.complete(claim).await {
                    // Handlers ran: acknowledge. The lease keeps the key until the deadline.
                    tracing::warn!(idempotency_key = %event.key, error = %crate::error_chain(&e),
                        "handlers ran but completion was not recorded");
                }
                tracing::info!(
                    idempotency_key = %event.key,
                    event_type = %event.event_type,
                    trace_id = event.trace_id.as_deref(),
                    handlers,
                    latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "event processed"
                );
                return RecordOutcome::Processed;
            }
            Ok(Ok(Err(e))) => e,
            Ok(Err(panic)) => HandlerError::retryable(format!("handler panicked: {}", panic_message(&*panic))),
        };
        // Bounded so a slow release cannot eat the time kept to answer; an unreleased claim
        // ends with its lease (the deadline) anyway.
        let release_within =
            budget.margin.max(budget.records_end.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(release_within, self.store.release(claim)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(idempotency_key = %event.key, error = %crate::error_chain(&e),
                "claim not released; redelivery waits for its lease"),
            Err(_) => tracing::warn!(idempotency_key = %event.key, "claim release timed out; it ends with its lease"),
        }
        match failure {
            HandlerError::Retryable(e) => {
                tracing::warn!(idempotency_key = %event.key, event_type = %event.event_type, error = %e, "handler failed; will retry");
                RecordOutcome::Retry(e.to_string())
            }
            HandlerError::Permanent(e) => {
                tracing::error!(idempotency_key = %event.key, event_type = %event.event_type, error = %e, "handler failed permanently");
                self.dead_letter(record, Some(&event), FailureReason::PermanentError, &e.to_string()).await
            }
        }
    }

    /// Sends the original body to the dead-letter queue with attributes saying why.
    async fn dead_letter(
        &self,
        record: &SqsMessage,
        event: Option<&StiggEvent>,
        reason: FailureReason,
        detail: &str,
    ) -> RecordOutcome {
        let Some(queue) = &self.dead_letters else {
            return RecordOutcome::Retry(format!("{}: no dead-letter queue configured", reason.as_str()));
        };
        let id = message_id(record);
        let mut attributes = vec![
            ("failure_reason", reason.as_str().to_owned()),
            ("failure_detail", printable(detail, 1024)),
            ("source_message_id", id.clone()),
        ];
        if let Some(arn) = record.event_source_arn.as_deref().filter(|a| !a.is_empty()) {
            attributes.push(("source_queue_arn", arn.to_owned()));
        }
        if let Some(event) = event {
            attributes.push(("event_type", event.event_type.to_string()));
            attributes.push(("idempotency_key", event.key.to_string()));
        }
        let fifo = queue.is_fifo().then(|| FifoIds {
            group_id: record.attributes.get("MessageGroupId").cloned().unwrap_or_else(|| "dead-letter".into()),
            deduplication_id: sha256_hex(id.as_bytes()),
        });
        // SQS refuses empty bodies; a record without one carries nothing to keep anyway.
        let body = record.body.as_deref().filter(|b| !b.is_empty()).unwrap_or("null");
        match queue.send(Outbound { body, attributes, fifo }).await {
            Ok(_) => {
                tracing::warn!(reason = reason.as_str(), "record sent to the dead-letter queue");
                RecordOutcome::DeadLettered(reason)
            }
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "dead-letter send failed; leaving the record for redelivery");
                RecordOutcome::Retry("dead-letter queue unavailable".into())
            }
        }
    }
}

fn message_id(record: &SqsMessage) -> String {
    record.message_id.clone().unwrap_or_default()
}

fn printable(s: &str, max_chars: usize) -> String {
    let out: String = s.chars().filter(|c| !c.is_control()).take(max_chars).collect();
    if out.is_empty() { "-".into() } else { out }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(body: &str, attrs: Value) -> SqsMessage {
        serde_json::from_value(json!({
            "messageId": "m-1", "body": body, "messageAttributes": attrs,
            "attributes": {}, "eventSourceARN": "arn:aws:sqs:us-east-1:1:q"
        }))
        .unwrap()
    }

    #[test]
    fn a_flat_stigg_body_is_an_event() {
        let e = event_from_record(&record(r#"{"type":"customer.created","messageId":"k1","traceId":"t"}"#, json!({})))
            .unwrap();
        assert_eq!(e.key.as_str(), "k1");
        assert_eq!(e.trace_id.as_deref(), Some("t"));
    }

    #[test]
    fn an_sns_wrapped_body_is_unwrapped() {
        let inner = r#"{"type":"subscription.canceled","messageId":"k2"}"#;
        let body = json!({"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:x", "Message": inner})
            .to_string();
        let e = event_from_record(&record(&body, json!({}))).unwrap();
        assert_eq!(e.key.as_str(), "k2");
        assert_eq!(e.raw_json(), inner);
    }

    #[test]
    fn the_receivers_key_attribute_wins() {
        let attrs = json!({"idempotency_key": {"stringValue": "from-receiver", "dataType": "String"}});
        let e = event_from_record(&record(r#"{"type":"x","messageId":"from-body"}"#, attrs)).unwrap();
        assert_eq!(e.key.as_str(), "from-receiver");
    }

    #[test]
    fn anything_else_is_poison() {
        for body in [
            "",
            "nope",
            "[1]",
            r#"{"Type":"Notification"}"#,
            r#"{"Type":"Notification","Message":"[]"}"#,
            r#"{"no":"type"}"#,
        ] {
            assert!(event_from_record(&record(body, json!({}))).is_err(), "{body}");
        }
    }

    #[tokio::test]
    async fn records_end_before_the_deadline_with_a_margin_to_answer() {
        let now = SystemTime::now();
        let (end, margin) = record_deadline(now + Duration::from_secs(60), now);
        assert_eq!(margin, RESPONSE_MARGIN);
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        assert!(left <= Duration::from_secs(58) && left > Duration::from_secs(57), "{left:?}");
        let (_, margin) = record_deadline(now + Duration::from_secs(2), now);
        assert_eq!(margin, Duration::from_millis(500));
        let (end, margin) = record_deadline(now - Duration::from_secs(1), now);
        assert_eq!(margin, Duration::ZERO);
        assert!(end <= tokio::time::Instant::now());
    }

    #[test]
    fn only_retries_are_reported_and_never_with_an_empty_id() {
        let report = BatchReport {
            outcomes: vec![
                ("a".into(), RecordOutcome::Processed),
                ("b".into(), RecordOutcome::Retry("x".into())),
                ("c".into(), RecordOutcome::DeadLettered(FailureReason::Unparseable)),
                ("".into(), RecordOutcome::Retry("x".into())),
            ],
        };
        let ids: Vec<_> = report.response().batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
        assert_eq!(ids, ["b"]);
    }
}
