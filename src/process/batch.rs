//! Which records in progress may still reach a handler that shares one call among a batch's
//! records (the EventBridge forwarder's PutEvents).
//!
//! The processor gives each record a ticket when it starts running (it has its share of the
//! concurrency and body-size limits); a sharing handler releases its record's ticket when the
//! record joins a shared call, and a record that ends without joining releases it then. When no
//! ticket is left outstanding, every running record that could join has: the call goes at once
//! (a batch of 10 is one call, a batch of 1 does not wait). A record the limits hold back has no
//! ticket yet, so no call waits for one that cannot start before the call's records end (the
//! records of a FIFO batch run one at a time: each call carries one entry).
//!
//! The count is per process: invocations run at once in one process (`AWS_LAMBDA_MAX_CONCURRENCY`
//! above 1) hold each other's calls until their time bound; and one sharing handler per process
//! is assumed (the forwarder).

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Tickets outstanding in this process (every invocation in progress together).
fn outstanding() -> &'static watch::Sender<usize> {
    static OUTSTANDING: OnceLock<watch::Sender<usize>> = OnceLock::new();
    OUTSTANDING.get_or_init(|| watch::channel(0).0)
}

tokio::task_local! {
    static TICKET: Ticket;
}

/// A record's place among the records that may still join a shared call.
pub struct Ticket {
    released: AtomicBool,
}

impl Ticket {
    pub fn new() -> Self {
        outstanding().send_modify(|n| *n += 1);
        Self { released: AtomicBool::new(false) }
    }

    /// True when this call released it (not an earlier one).
    fn release(&self) -> bool {
        let first = !self.released.swap(true, Ordering::AcqRel);
        if first {
            outstanding().send_modify(|n| *n = n.saturating_sub(1));
        }
        first
    }

    /// Runs `record` as this ticket's record; the ticket is released when it ends at the latest.
    pub async fn scope<F: Future>(self, record: F) -> F::Output {
        TICKET.scope(self, record).await
    }
}

impl Default for Ticket {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// Called when the current record joins a shared call, or will not reach one: it holds no call
/// back any more. True when it held its ticket until now; false outside a record (a handler run
/// by hand: nothing then tells when the others have joined, and the call waits out its own
/// time bound) or when it was released already.
pub fn release_current() -> bool {
    TICKET.try_with(Ticket::release).unwrap_or(false)
}

/// True when no record in progress may still join.
pub fn all_joined_or_done() -> bool {
    *outstanding().borrow() == 0
}

/// Resolves once no record in progress may still join.
pub async fn settled() {
    let mut rx = outstanding().subscribe();
    let _ = rx.wait_for(|n| *n == 0).await;
}

/// The count is process-wide: the tests that take tickets run one at a time.
#[cfg(test)]
pub(crate) static TICKET_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;

    fn a_released_twice() -> bool {
        let t = Ticket::new();
        let _ = t.release();
        t.release()
    }

    #[tokio::test]
    async fn tickets_settle_when_every_record_joined_or_ended() {
        let _only = TICKET_TESTS.lock().await;
        let (a, b) = (Ticket::new(), Ticket::new());
        assert!(!all_joined_or_done());
        assert!(a.scope(async { release_current() }).await);
        assert!(!a_released_twice(), "a second release is not a release");
        assert!(!all_joined_or_done(), "b is still running");
        let waiter = tokio::spawn(settled());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "b holds the call back");
        b.scope(async {}).await;
        waiter.await.unwrap();
        assert!(all_joined_or_done(), "b ended without joining");
        assert!(!release_current(), "outside a record: nothing to release");
        assert!(all_joined_or_done());
    }
}
