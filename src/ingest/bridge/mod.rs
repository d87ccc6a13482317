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
//!
//! One concern per file: `forward.rs` (a message of Stigg's as it goes to our queue, and the
//! batches it goes in), `drain.rs` (the poll, forward and delete loop, and its report),
//! `credentials.rs` (renewing credentials Stigg's queue rejects), `error.rs` ([`BridgeError`]).
//! This file holds the bridge's settings and its time budget.

mod credentials;
mod drain;
mod error;
mod forward;

use std::time::Duration;

use crate::aws::OPERATION_TIMEOUT;
use crate::aws::queue::{EventQueue, SourceQueue};

pub use drain::DrainReport;
pub use error::BridgeError;
pub use forward::{DROPPABLE_ATTRIBUTES, Forward, MAX_BATCH_BYTES, SOURCE, batches, forward_of, forward_received};

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
