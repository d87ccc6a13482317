//! The `processor` function: turns SQS records into [`StiggEvent`]s and runs the handlers once
//! per idempotency key, reporting partial batch failures.
//!
//! Per record:
//! - unparseable body -> dead-letter queue with the reason, acknowledged;
//! - key already processed -> skipped ("duplicate skipped"), acknowledged;
//! - key being processed by another invocation -> left for redelivery;
//! - every handler succeeds -> key marked processed, one INFO line "event processed";
//! - a handler fails -> the others still run; the claim is released with the names of those that
//!   succeeded, so a redelivery runs only the rest (see [`crate::process::handler`]);
//!   - a retryable error, a panic or the deadline -> record left for redelivery;
//!   - only permanent errors -> record to the dead-letter queue with the failing handlers named
//!     (`failed_handlers`), acknowledged; a redrive runs only those.
//!
//! Every record's handlers must finish before the invocation's deadline minus a margin (see
//! [`record_deadline`]) that leaves room for what follows the last handler: the claim's
//! completion or release, then a dead-letter send, each bounded by the SDK's operation timeout
//! ([`crate::aws::timeouts`]), and bounded again by the time left to answer. A record whose
//! handlers run out of time is a retryable failure for that record alone, and the batch response
//! still reaches Lambda, so one hung handler does not time the whole batch out (which would
//! redeliver every record of it and run its handlers again).
//!
//! Without a dead-letter queue configured, what would go there is reported as failed instead,
//! so the queue's own redrive policy moves it after `maxReceiveCount` receives.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::FutureExt;
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use std::future::Future;
use tracing::Instrument;

use crate::aws::claim::{ClaimOutcome, IdempotencyStore};
use crate::aws::queue::{EventQueue, FifoIds, MAX_MESSAGE_BYTES, Outbound, RECEIVED_AT, attributes_size, capped};
use crate::forward::config::EventSource;
use crate::forward::envelope::{self, EnvelopeError};
use crate::metrics::{self, ProcessorOutcome};
use crate::process::batch::Ticket;
use crate::process::handler::{HandlerError, HandlerRun, Handlers};
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
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
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
fn received_millis(record: &SqsMessage) -> Option<u64> {
    let attribute = record.message_attributes.get(RECEIVED_AT).and_then(|a| a.string_value.as_deref());
    attribute.or(record.attributes.get("SentTimestamp").map(String::as_str)).and_then(|ms| ms.parse().ok())
}

/// The invocation's length when the runtime reports no usable deadline (the template's
/// processor timeout); see [`crate::invocation_deadline`].
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

/// Kept back after the last write, for the runtime to post the batch response.
pub const ANSWER_SLACK: Duration = Duration::from_millis(500);

/// The time kept back from the invocation's deadline after the last handler: the claim's
/// completion or release, then a dead-letter send, each of which the SDK may take its whole
/// operation timeout over (retries included), and the answer itself.
pub fn response_margin() -> Duration {
    let operation = crate::aws::timeouts().operation_timeout().unwrap_or(Duration::from_secs(5));
    operation * 2 + ANSWER_SLACK
}

/// When every record's handlers must be done: the deadline less [`response_margin`], or less
/// half the time left when that is shorter (a short invocation still gives its handlers time;
/// what follows them is then cut to the time left, see [`Budget`]).
pub fn record_deadline(deadline: SystemTime, now: SystemTime) -> (tokio::time::Instant, Duration) {
    let left = deadline.duration_since(now).unwrap_or_default();
    let margin = response_margin().min(left / 2);
    (tokio::time::Instant::now() + (left - margin), margin)
}

/// One invocation's time, computed once per batch: the claims' lease (the deadline), when every
/// record's handlers must be done, and when the writes that follow them must be (the answer's
/// slack before the deadline).
#[derive(Debug, Clone, Copy)]
struct Budget {
    lease: SystemTime,
    records_end: tokio::time::Instant,
    answer_by: tokio::time::Instant,
}

impl Budget {
    fn new(deadline: SystemTime) -> Self {
        let now = SystemTime::now();
        let (records_end, _) = record_deadline(deadline, now);
        let left = deadline.duration_since(now).unwrap_or_default();
        let answer_by = tokio::time::Instant::now() + left.saturating_sub(ANSWER_SLACK.min(left / 4));
        Self { lease: deadline, records_end, answer_by }
    }

    /// `call`, cut off when the invocation must answer: `None` then. The write may still land;
    /// whatever it guards ends with the claim's lease.
    async fn bounded<T>(&self, call: impl Future<Output = T>) -> Option<T> {
        tokio::time::timeout_at(self.answer_by, call).await.ok()
    }
}

/// The most record bodies handled at once, in KiB. A record's parsed payload and what a handler
/// builds from it (the mirror: an item per feature) take several times the body's size: four
/// ~1 MiB entitlement snapshots at once took 132 MiB, over a 128 MB function
/// (`limits a_batch_of_four_one_mib_events…`). Small events (a few KiB) still run
/// `max_concurrency` at once; large ones one or two at a time.
pub const BODY_KIB_IN_FLIGHT: u32 = 1536;

/// What a record's body weighs against [`BODY_KIB_IN_FLIGHT`]: its KiB, at least 1, at most all.
fn body_kib(record: &SqsMessage) -> u32 {
    let kib = record.body.as_deref().map_or(0, str::len).div_ceil(1024);
    u32::try_from(kib).unwrap_or(u32::MAX).clamp(1, BODY_KIB_IN_FLIGHT)
}

/// The processor with its clients and handlers, built once per cold start.
pub struct Processor {
    store: IdempotencyStore,
    dead_letters: Option<EventQueue>,
    handlers: Handlers,
    max_concurrency: usize,
    /// The forwarder's source, whose replays this processor reads (see [`event_from_record`]).
    replays_from: Option<EventSource>,
}

impl Processor {
    pub fn new(
        store: IdempotencyStore,
        dead_letters: Option<EventQueue>,
        handlers: Handlers,
        max_concurrency: usize,
    ) -> Self {
        Self { store, dead_letters, handlers, max_concurrency: max_concurrency.max(1), replays_from: None }
    }

    /// Reads EventBridge events of this source delivered back by a replay (`make replay
    /// TO_HANDLERS=1`); without it they are poison.
    pub fn accepting_replays_from(mut self, source: EventSource) -> Self {
        self.replays_from = Some(source);
        self
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
            // At most `max_concurrency` records in flight, and at most BODY_BYTES_IN_FLIGHT of
            // their bodies; join_all keeps record order.
            let permits = tokio::sync::Semaphore::new(self.max_concurrency);
            let bytes = tokio::sync::Semaphore::new(BODY_KIB_IN_FLIGHT as usize);
            let (permits, bytes) = (&permits, &bytes);
            // A record's ticket once it may run: a handler sharing one call among the batch (the
            // forwarder) then knows which records may still join it (see `process::batch`), and
            // none waits for a record the limits hold back.
            let records: Vec<_> = records
                .iter()
                .map(|r| async move {
                    let _permit = permits.acquire().await.expect("the semaphore is never closed");
                    let _bytes = bytes.acquire_many(body_kib(r)).await.expect("the semaphore is never closed");
                    Ticket::new().scope(self.process_record(r, budget)).await
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
            // A ticket per record as it starts: no record waits for one that cannot start yet.
            outcomes.push(Ticket::new().scope(self.process_record(record, budget)).await);
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
        let event = match event_from_record(record, self.replays_from.as_ref()) {
            Ok(event) => event,
            Err(PoisonError::Envelope(EnvelopeError::Reduced)) => {
                // The live run had the whole payload; the bus never did. Nothing to run, nothing
                // a redrive would fix: acknowledged and counted, not dead-lettered.
                tracing::warn!(message_id = %message_id(record),
                    "replayed event was forwarded with a reduced detail (too large for an entry): its handlers cannot run on it; skipped");
                ::metrics::counter!("ReplaySkipped", "Reason" => "reduced").increment(1);
                return RecordOutcome::Duplicate;
            }
            Err(e) => {
                crate::process::batch::release_current();
                tracing::warn!(error = %e, "unparseable record");
                let detail = e.to_string();
                let dead_letter = self.dead_letter(record, None, FailureReason::Unparseable, &detail);
                return budget
                    .bounded(dead_letter)
                    .await
                    .unwrap_or_else(|| RecordOutcome::Retry("dead-letter send cut off by the deadline".into()));
            }
        };
        let fingerprint = sha256_hex(event.raw_json().as_bytes());
        let Some(claimed) = budget.bounded(self.store.claim(&event.key, &fingerprint, budget.lease)).await else {
            // Whatever the write did, its lease (the deadline) ends it; the record comes back.
            tracing::warn!(idempotency_key = %event.key, "claim cut off by the deadline; will retry");
            return RecordOutcome::Retry("claim cut off by the invocation deadline".into());
        };
        let claim = match claimed {
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
        let done_before = claim.done().clone();
        let run = self.handlers.run_pending(&event, &done_before, Some(budget.records_end)).await;
        // Past every handler: the claim's writes that follow hold no shared call back.
        crate::process::batch::release_current();
        if run.is_complete() {
            match budget.bounded(self.store.complete(claim)).await {
                Some(Ok(())) => {}
                // Handlers ran: acknowledge. The lease keeps the key until the deadline.
                Some(Err(e)) => tracing::warn!(idempotency_key = %event.key, error = %crate::error_chain(&e),
                    "handlers ran but completion was not recorded"),
                None => tracing::warn!(idempotency_key = %event.key,
                    "handlers ran; completion not recorded before the deadline"),
            }
            tracing::info!(
                idempotency_key = %event.key,
                event_type = %event.event_type,
                trace_id = event.trace_id.as_deref(),
                handlers = run.ran(),
                // Only on a redelivery that skipped handlers done before (None is not logged).
                skipped = (!run.skipped.is_empty()).then_some(run.skipped.len()),
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                "event processed"
            );
            return RecordOutcome::Processed;
        }
        self.record_failures(&event, &run);
        let done = run.done(&done_before);
        let succeeded_now = run.succeeded.len();
        match budget.bounded(self.store.release_keeping(claim, &done)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::error!(idempotency_key = %event.key, error = %crate::error_chain(&e), succeeded_now,
                "claim not released; redelivery waits for its lease, and the handlers that succeeded run again")
            }
            None => tracing::warn!(idempotency_key = %event.key, succeeded_now,
                "claim release cut off by the deadline; the handlers that succeeded may run again"),
        }
        let pending = run.pending().join(",");
        if run.is_retryable() {
            tracing::warn!(idempotency_key = %event.key, event_type = %event.event_type, handlers = %pending,
                "handlers failed; will retry those");
            return RecordOutcome::Retry(format!("handlers pending: {pending}"));
        }
        let detail = run.failed.iter().map(|f| format!("{}: {}", f.handler, f.error)).collect::<Vec<_>>().join("; ");
        tracing::error!(idempotency_key = %event.key, event_type = %event.event_type, handlers = %pending,
            "handlers failed permanently; dead-lettering the event");
        let dead_letter = self.dead_letter(record, Some((&event, &pending)), FailureReason::PermanentError, &detail);
        budget.bounded(dead_letter).await.unwrap_or_else(|| {
            tracing::warn!(idempotency_key = %event.key, "dead-letter send cut off by the deadline; will retry");
            RecordOutcome::Retry("dead-letter send cut off by the deadline".into())
        })
    }

    /// One log line per failed handler: its name and error (never the payload).
    fn record_failures(&self, event: &StiggEvent, run: &HandlerRun) {
        for failure in &run.failed {
            let error = crate::error_chain(&failure.error);
            match failure.error {
                HandlerError::Retryable(_) => {
                    tracing::warn!(idempotency_key = %event.key, event_type = %event.event_type,
                    handler = %failure.handler, error, "handler failed")
                }
                HandlerError::Permanent(_) => {
                    tracing::error!(idempotency_key = %event.key, event_type = %event.event_type,
                    handler = %failure.handler, error, "handler failed permanently")
                }
            }
            metrics::handler_failure(matches!(failure.error, HandlerError::Permanent(_)));
        }
        if !run.not_run.is_empty() {
            tracing::warn!(idempotency_key = %event.key, handlers = %run.not_run.join(","),
                "handlers not started before the invocation deadline; will retry");
        }
    }

    /// Sends the original body to the dead-letter queue with attributes saying why.
    async fn dead_letter(
        &self,
        record: &SqsMessage,
        event: Option<(&StiggEvent, &str)>,
        reason: FailureReason,
        detail: &str,
    ) -> RecordOutcome {
        let Some(queue) = &self.dead_letters else {
            return RecordOutcome::Retry(format!("{}: no dead-letter queue configured", reason.as_str()));
        };
        let id = message_id(record);
        // SQS refuses empty bodies; a record without one carries nothing to keep anyway.
        let body = record.body.as_deref().filter(|b| !b.is_empty()).unwrap_or("null");
        let received_at = received_millis(record).map(|ms| ms.to_string());
        let source_arn = record.event_source_arn.as_deref();
        let attributes = dead_letter_attributes(body.len(), reason, detail, &id, source_arn, received_at, event);
        let fifo = queue.is_fifo().then(|| FifoIds {
            group_id: record.attributes.get("MessageGroupId").cloned().unwrap_or_else(|| "dead-letter".into()),
            deduplication_id: sha256_hex(id.as_bytes()),
        });
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

/// The dead-letter message's attributes, most useful first, each value capped so that the set
/// stays within [`crate::aws::queue::ATTRIBUTE_RESERVE`]; any that would take the message past
/// what SQS carries (a body close to 1 MiB) are left off, least useful first.
fn dead_letter_attributes(
    body_bytes: usize,
    reason: FailureReason,
    detail: &str,
    message_id: &str,
    source_arn: Option<&str>,
    received_at: Option<String>,
    event: Option<(&StiggEvent, &str)>,
) -> Vec<(&'static str, String)> {
    let mut attributes = vec![("failure_reason", reason.as_str().to_owned())];
    if let Some((event, failed_handlers)) = event {
        attributes.push(("idempotency_key", event.key.to_string()));
        attributes.push(("event_type", event.event_type.to_string()));
        if !failed_handlers.is_empty() {
            attributes.push(("failed_handlers", whole_names(failed_handlers, 512)));
        }
    }
    if let Some(received_at) = received_at {
        attributes.push((RECEIVED_AT, capped(&received_at, 20)));
    }
    attributes.push(("source_message_id", capped(message_id, 128)));
    if let Some(arn) = source_arn.filter(|a| !a.is_empty()) {
        attributes.push(("source_queue_arn", capped(arn, 256)));
    }
    attributes.push(("failure_detail", capped(&printable(detail, 1024), 1024)));
    let mut left_off = Vec::new();
    while body_bytes + attributes_size(&attributes) > MAX_MESSAGE_BYTES && attributes.len() > 1 {
        left_off.extend(attributes.pop().map(|(name, _)| name));
    }
    if !left_off.is_empty() {
        tracing::warn!(left_off = %left_off.join(","), body_bytes, "dead letter too close to SQS's limit for all its attributes");
    }
    attributes
}

/// A comma list cut to at most `max` bytes at a name's end, so no name is half there.
fn whole_names(list: &str, max: usize) -> String {
    if list.len() <= max {
        return list.to_owned();
    }
    let cut = capped(list, max);
    match cut.rfind(',') {
        Some(end) => cut[..end].to_owned(),
        None => cut,
    }
}

fn message_id(record: &SqsMessage) -> String {
    record.message_id.clone().unwrap_or_default()
}

fn printable(s: &str, max_chars: usize) -> String {
    let out: String = s.chars().filter(|c| !c.is_control()).take(max_chars).collect();
    if out.is_empty() { "-".into() } else { out }
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
        let body = r#"{"type":"customer.created","messageId":"k1","traceId":"t"}"#;
        let e = event_from_record(&record(body, json!({})), None).unwrap();
        assert_eq!(e.key.as_str(), "k1");
        assert_eq!(e.trace_id.as_deref(), Some("t"));
    }

    #[test]
    fn an_sns_wrapped_body_is_unwrapped() {
        let inner = r#"{"type":"subscription.canceled","messageId":"k2"}"#;
        let body = json!({"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:x", "Message": inner})
            .to_string();
        let e = event_from_record(&record(&body, json!({})), None).unwrap();
        assert_eq!(e.key.as_str(), "k2");
        assert_eq!(e.raw_json(), inner);
    }

    #[test]
    fn an_eventbridge_event_is_read_only_as_a_replay_of_our_forwarder() {
        let envelope = json!({"version": "0", "id": "e", "detail-type": "customer.created", "source": "stigg.webhooks",
            "account": "1", "time": "2026-12-01T10:00:00Z", "region": "us-east-1", "resources": [],
            "replay-name": "stack-replay-1",
            "detail": {"type": "customer.created", "id": "c", "stiggWebhooks": {"idempotencyKey": "k9", "receivedAt": 5}}})
        .to_string();
        let ours = EventSource::parse("stigg.webhooks").unwrap();
        let mut r = record(&envelope, json!({}));
        r.attributes.insert("SentTimestamp".into(), "1764999999999".into());
        let e = event_from_record(&r, Some(&ours)).unwrap();
        assert_eq!(e.key.as_str(), "replay:stack-replay-1:k9");
        assert_eq!(e.replay.as_deref(), Some("stack-replay-1"));
        assert_eq!(e.sent_at, Some(UNIX_EPOCH + Duration::from_millis(5)), "the first receipt, not the replay's");
        assert!(event_from_record(&r, None).is_err(), "a processor that forwards nowhere reads no replay");
        let other = EventSource::parse("someone.else").unwrap();
        assert!(event_from_record(&r, Some(&other)).is_err());
    }

    #[test]
    fn the_queues_sent_timestamp_is_kept() {
        let mut r = record(r#"{"type":"customer.deleted","messageId":"k"}"#, json!({}));
        r.attributes.insert("SentTimestamp".into(), "1764614400123".into());
        let e = event_from_record(&r, None).unwrap();
        assert_eq!(e.sent_at, Some(UNIX_EPOCH + Duration::from_millis(1_764_614_400_123)));
    }

    #[test]
    fn the_receivers_key_attribute_wins() {
        let attrs = json!({"idempotency_key": {"stringValue": "from-receiver", "dataType": "String"}});
        let e = event_from_record(&record(r#"{"type":"x","messageId":"from-body"}"#, attrs), None).unwrap();
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
            assert!(event_from_record(&record(body, json!({})), None).is_err(), "{body}");
        }
    }

    #[tokio::test]
    async fn records_end_before_the_deadline_with_a_margin_to_answer() {
        let now = SystemTime::now();
        let (end, margin) = record_deadline(now + Duration::from_secs(60), now);
        assert_eq!(margin, Duration::from_millis(10_500), "two 5 s SDK operations and the answer");
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        assert!(left <= Duration::from_millis(49_500) && left > Duration::from_millis(48_500), "{left:?}");
        let (_, margin) = record_deadline(now + Duration::from_secs(2), now);
        assert_eq!(margin, Duration::from_secs(1));
        let (end, margin) = record_deadline(now - Duration::from_secs(1), now);
        assert_eq!(margin, Duration::ZERO);
        assert!(end <= tokio::time::Instant::now());
    }

    #[test]
    fn the_largest_dead_letter_attributes_fit_the_reserve() {
        use crate::aws::queue::{ATTRIBUTE_RESERVE, MAX_EVENT_BYTES};
        use crate::stigg::event::{MAX_KEY_BYTES, MAX_TYPE_BYTES};
        let raw = json!({"type": "t".repeat(MAX_TYPE_BYTES), "messageId": "k".repeat(MAX_KEY_BYTES)}).to_string();
        let event = StiggEvent::parse(&raw).unwrap();
        let handlers = "h".repeat(2000);
        let attributes = dead_letter_attributes(
            MAX_EVENT_BYTES,
            FailureReason::PermanentError,
            &"é".repeat(5000),
            &"m".repeat(500),
            Some(&"a".repeat(2000)),
            Some(u64::MAX.to_string()),
            Some((&event, &handlers)),
        );
        assert_eq!(attributes.len(), 8, "nothing left off at the largest accepted body");
        assert!(attributes_size(&attributes) <= 3_754, "{}", attributes_size(&attributes));
        assert!(attributes_size(&attributes) <= ATTRIBUTE_RESERVE);
        // The receiver's attributes (key, type, trace id) are a subset of the same caps.
        const { assert!(MAX_KEY_BYTES * 2 + MAX_TYPE_BYTES + 64 <= ATTRIBUTE_RESERVE) };
    }

    #[test]
    fn a_body_near_the_limit_keeps_the_attributes_that_fit() {
        let attributes =
            dead_letter_attributes(MAX_MESSAGE_BYTES - 40, FailureReason::Unparseable, "bad", "m", None, None, None);
        assert_eq!(attributes, [("failure_reason", "unparseable".to_owned())]);
        assert!(MAX_MESSAGE_BYTES - 40 + attributes_size(&attributes) <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn failed_handlers_are_cut_at_a_names_end() {
        assert_eq!(whole_names("a,b", 512), "a,b");
        assert_eq!(whole_names("alpha,beta,gamma", 12), "alpha,beta");
    }

    #[test]
    fn the_receivers_received_at_wins_over_the_queues_sent_timestamp() {
        let attrs = json!({"received_at": {"stringValue": "1764614400000", "dataType": "String"}});
        let mut r = record(r#"{"type":"customer.deleted","messageId":"k"}"#, attrs);
        r.attributes.insert("SentTimestamp".into(), "1764999999999".into());
        let e = event_from_record(&r, None).unwrap();
        assert_eq!(
            e.sent_at,
            Some(UNIX_EPOCH + Duration::from_millis(1_764_614_400_000)),
            "a redrive keeps the first time"
        );
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
