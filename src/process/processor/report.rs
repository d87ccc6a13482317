//! What happened to each record of a batch, and the batch response reporting the retries.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};

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
