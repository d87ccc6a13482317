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

use std::time::SystemTime;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::FutureExt;
use lambda_runtime::LambdaEvent;

use crate::aws::claim::IdempotencyStore;
use crate::aws::queue::EventQueue;
use crate::forward::config::EventSource;
use crate::process::batch::Ticket;
use crate::process::handler::Handlers;

mod budget;
mod dead_letter;
mod parse;
mod record;
mod report;

pub use budget::{ANSWER_SLACK, BODY_KIB_IN_FLIGHT, DEFAULT_BUDGET, record_deadline, response_margin};
pub use parse::{PoisonError, event_from_record};
pub use report::{BatchReport, FailureReason, RecordOutcome};

use budget::{Budget, body_kib};
use parse::received_millis;

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
}

fn message_id(record: &SqsMessage) -> String {
    record.message_id.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests;
