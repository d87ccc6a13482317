//! A batch's budgets: the invocation's time (deadlines and margins) and the record bodies in flight.

use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::SqsMessage;

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
pub(super) struct Budget {
    pub(super) lease: SystemTime,
    pub(super) records_end: tokio::time::Instant,
    pub(super) answer_by: tokio::time::Instant,
}

impl Budget {
    pub(super) fn new(deadline: SystemTime) -> Self {
        let now = SystemTime::now();
        let (records_end, _) = record_deadline(deadline, now);
        let left = deadline.duration_since(now).unwrap_or_default();
        let answer_by = tokio::time::Instant::now() + left.saturating_sub(ANSWER_SLACK.min(left / 4));
        Self { lease: deadline, records_end, answer_by }
    }

    /// `call`, cut off when the invocation must answer: `None` then. The write may still land;
    /// whatever it guards ends with the claim's lease.
    pub(super) async fn bounded<T>(&self, call: impl Future<Output = T>) -> Option<T> {
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
pub(super) fn body_kib(record: &SqsMessage) -> u32 {
    let kib = record.body.as_deref().map_or(0, str::len).div_ceil(1024);
    u32::try_from(kib).unwrap_or(u32::MAX).clamp(1, BODY_KIB_IN_FLIGHT)
}
