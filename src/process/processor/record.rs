//! One record's work: parse, claim, run the pending handlers, then complete or release the claim.

use std::time::Instant;

use aws_lambda_events::event::sqs::SqsMessage;
use tracing::Instrument;

use crate::aws::claim::ClaimOutcome;
use crate::forward::envelope::EnvelopeError;
use crate::metrics::{self, ProcessorOutcome};
use crate::process::handler::{HandlerError, HandlerRun};
use crate::stigg::event::{StiggEvent, sha256_hex};

use super::{Budget, FailureReason, PoisonError, Processor, RecordOutcome, event_from_record, message_id};

impl Processor {
    pub(super) async fn process_record(&self, record: &SqsMessage, budget: Budget) -> RecordOutcome {
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
}
