//! PutEvents calls shared by the records of one SQS batch.
//!
//! The processor runs a batch's records at once, each through its handlers; the forwarder's
//! [`Batcher::put`] of each record joins an open request. A request is sent when every record of
//! the batch that may join it has joined or ended (see [`crate::process::batch`]), when it holds
//! 10 entries (PutEvents' most), when the next entry would take the sum of its entries past the
//! limit, or [`ForwarderConfig::batch_window`] after its first entry (a bound, for a running
//! record slow to reach the forwarder), whichever comes first. The send runs in a task of its own, so a
//! record cut off by its deadline does not cancel the others' request.
//!
//! PutEvents answers per entry: "If the request contains failed entries, the response's
//! `FailedEntryCount` is non-zero and each failed entry has an `ErrorCode`", the entries in the
//! order of the request
//! (<https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html>). The failed
//! entries the docs call retryable (`InternalFailure`, `ThrottlingException`) are sent again,
//! alone, after a jittered back-off, up to [`ATTEMPTS`] times; an entry is reported put only with
//! an `EventId`, never because its request returned.
//!
//! [`ForwarderConfig::batch_window`]: crate::forward::ForwarderConfig::batch_window

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_eventbridge::error::ProvideErrorMetadata;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use tokio::sync::{Notify, oneshot};

use crate::forward::config::{EventBusName, EventSource};
use crate::forward::entry::BusEntry;
use crate::process::batch;

/// PutEvents takes 1 to 10 entries
/// (<https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html>).
pub const MAX_ENTRIES: usize = 10;

/// Sends of one entry within one handler run; then the record is retried by SQS.
pub const ATTEMPTS: u32 = 3;

/// Why an entry was not put.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct EntryFailure {
    pub code: String,
    pub message: String,
    /// Worth another delivery (throttling, an outage, a permission fixed later).
    pub retryable: bool,
    /// Sent again within this run: a failed entry the docs call retryable. Not a whole request
    /// refused: the SDK has retried that already (standard mode, 3 attempts).
    resend: bool,
}

impl EntryFailure {
    fn new(code: &str, message: &str) -> Self {
        // The docs' non-retryable codes that no later delivery fixes: the entry itself is wrong.
        // AccessDenied and NotAuthorized* are fixed by a policy change, so the record waits.
        let permanent = ["InvalidArgument", "MalformedDetail", "InvalidAccountIdException", "RedactionFailure"];
        Self {
            code: code.to_owned(),
            message: message.to_owned(),
            retryable: !permanent.contains(&code),
            resend: matches!(code, "InternalFailure" | "ThrottlingException"),
        }
    }

    /// A whole request refused: retried by SQS whatever its code (the bus, the network or a
    /// permission), as no entry of it was put.
    fn request(code: &str, message: &str) -> Self {
        Self { retryable: true, resend: false, ..Self::new(code, message) }
    }
}

type Reply = oneshot::Sender<Result<(), EntryFailure>>;

struct Waiting {
    entry: BusEntry,
    reply: Reply,
}

/// A request being filled.
struct Open {
    id: u64,
    /// A joiner ran as a processor record: it is sent once every running record has joined
    /// (or ended), not only at the window's end.
    ticketed: bool,
    waiting: Vec<Waiting>,
    bytes: usize,
    close: Arc<Notify>,
}

struct Inner {
    client: aws_sdk_eventbridge::Client,
    bus: EventBusName,
    source: EventSource,
    max_request_bytes: usize,
    window: Duration,
    open: Mutex<Option<Open>>,
    next_id: AtomicU64,
}

/// Shares PutEvents requests between concurrent [`Batcher::put`]s. Cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    inner: Arc<Inner>,
}

impl Batcher {
    pub fn new(
        client: aws_sdk_eventbridge::Client,
        bus: EventBusName,
        source: EventSource,
        max_request_bytes: usize,
        window: Duration,
    ) -> Self {
        let open = Mutex::new(None);
        let inner = Inner { client, bus, source, max_request_bytes, window, open, next_id: AtomicU64::new(0) };
        Self { inner: Arc::new(inner) }
    }

    /// Puts one entry: `Ok` once EventBridge has given it an event id.
    pub async fn put(&self, entry: BusEntry) -> Result<(), EntryFailure> {
        let (reply, answer) = oneshot::channel();
        self.join(Waiting { entry, reply });
        answer
            .await
            .unwrap_or_else(|_| Err(EntryFailure::request("request", "the PutEvents task ended without an answer")))
    }

    fn join(&self, waiting: Waiting) {
        let inner = &self.inner;
        let mut open = inner.open.lock().unwrap_or_else(PoisonError::into_inner);
        let fits = open
            .as_ref()
            .is_some_and(|o| o.waiting.len() < MAX_ENTRIES && o.bytes + waiting.entry.size <= inner.max_request_bytes);
        if !fits && let Some(full) = open.take() {
            // Its task sends it now, and this entry starts the next request.
            full.close.notify_one();
            self.spawn_closed(full);
        }
        match open.as_mut() {
            Some(o) => {
                o.bytes += waiting.entry.size;
                o.waiting.push(waiting);
                o.ticketed |= batch::release_current();
                if o.waiting.len() == MAX_ENTRIES || (o.ticketed && batch::all_joined_or_done()) {
                    let full = open.take().expect("just filled");
                    full.close.notify_one();
                    self.spawn_closed(full);
                }
            }
            None => {
                let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
                let close = Arc::new(Notify::new());
                let ticketed = batch::release_current();
                let bytes = waiting.entry.size;
                *open = Some(Open { id, ticketed, bytes, waiting: vec![waiting], close: close.clone() });
                let this = self.clone();
                tokio::spawn(async move {
                    // Sent when every record that may join has (or ended) and a joiner was a
                    // processor record, when full (closed by the entry that filled it), or when
                    // the window ends: whichever comes first.
                    let window = tokio::time::sleep(this.inner.window);
                    tokio::pin!(window);
                    tokio::select! {
                        () = batch::settled() => {
                            let ticketed = {
                                let slot = this.inner.open.lock().unwrap_or_else(PoisonError::into_inner);
                                slot.as_ref().is_some_and(|o| o.id == id && o.ticketed)
                            };
                            if !ticketed {
                                // No joiner said when the others are in: the window decides.
                                tokio::select! {
                                    () = close.notified() => {}
                                    () = &mut window => {}
                                }
                            }
                        }
                        () = close.notified() => {}
                        () = &mut window => {}
                    }
                    let open = {
                        let mut slot = this.inner.open.lock().unwrap_or_else(PoisonError::into_inner);
                        if slot.as_ref().is_some_and(|o| o.id == id) { slot.take() } else { None }
                    };
                    // None: closed early and sent by whoever closed it.
                    if let Some(open) = open {
                        this.send(open.waiting).await;
                    }
                });
            }
        }
    }

    /// A request closed before its window ended: sent at once, in a task of its own.
    fn spawn_closed(&self, closed: Open) {
        let this = self.clone();
        tokio::spawn(async move { this.send(closed.waiting).await });
    }

    /// Sends the entries, resends the ones worth it, and answers every waiter.
    async fn send(&self, mut waiting: Vec<Waiting>) {
        for attempt in 1..=ATTEMPTS {
            let results = self.put_events(&waiting).await;
            let mut again = Vec::new();
            for (w, result) in waiting.into_iter().zip(results) {
                match result {
                    Err(f) if f.resend && attempt < ATTEMPTS => again.push(w),
                    result => {
                        let _ = w.reply.send(result);
                    }
                }
            }
            if again.is_empty() {
                return;
            }
            tracing::debug!(entries = again.len(), attempt, "PutEvents entries failed; sending them again");
            waiting = again;
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// One PutEvents request: a result per entry, in order.
    async fn put_events(&self, waiting: &[Waiting]) -> Vec<Result<(), EntryFailure>> {
        let inner = &self.inner;
        let entries = waiting.iter().map(|w| {
            let e = &w.entry;
            PutEventsRequestEntry::builder()
                .event_bus_name(inner.bus.as_str())
                .source(inner.source.as_str())
                .detail_type(&e.detail_type)
                .detail(&e.detail)
                .set_time(e.time.map(aws_smithy_types::DateTime::from))
                .build()
        });
        metrics::counter!("PutEventsCalls").increment(1);
        match inner.client.put_events().set_entries(Some(entries.collect())).send().await {
            Ok(out) => {
                let answered = out.entries();
                (0..waiting.len())
                    .map(|i| match answered.get(i) {
                        Some(r) if r.event_id().is_some_and(|id| !id.is_empty()) => Ok(()),
                        Some(r) => Err(EntryFailure::new(
                            r.error_code().unwrap_or("InternalFailure"),
                            r.error_message().unwrap_or("no event id and no error"),
                        )),
                        None => Err(EntryFailure::new("InternalFailure", "no result for this entry")),
                    })
                    .collect()
            }
            Err(e) => {
                let code = e.code().unwrap_or("request").to_owned();
                let message = crate::error_chain(&e);
                tracing::warn!(entries = waiting.len(), code, error = %message, "PutEvents failed");
                vec![Err(EntryFailure::request(&code, &message)); waiting.len()]
            }
        }
    }
}

/// Full jitter, 100 ms doubling: "Exponential Backoff And Jitter", AWS Architecture Blog.
fn backoff(attempt: u32) -> Duration {
    let cap = 100u64 << attempt.min(6);
    let jitter = u64::from(uuid::Uuid::new_v4().as_u128() as u16) % cap.max(1);
    Duration::from_millis(jitter.max(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_eventbridge::Client;
    use aws_sdk_eventbridge::operation::put_events::PutEventsOutput;
    use aws_sdk_eventbridge::types::PutEventsResultEntry;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn entry(size: usize) -> BusEntry {
        BusEntry { detail_type: "t".into(), detail: "{}".into(), time: None, reduced: false, size }
    }

    fn batcher(client: Client, max_request_bytes: usize) -> Batcher {
        let (bus, source) = (EventBusName::parse("b").unwrap(), EventSource::parse("stigg.webhooks").unwrap());
        Batcher::new(client, bus, source, max_request_bytes, Duration::from_millis(20))
    }

    fn ok() -> PutEventsResultEntry {
        PutEventsResultEntry::builder().event_id("e").build()
    }

    fn failed(code: &str) -> PutEventsResultEntry {
        PutEventsResultEntry::builder().error_code(code).error_message("m").build()
    }

    fn output(entries: Vec<PutEventsResultEntry>) -> PutEventsOutput {
        let failed = entries.iter().filter(|e| e.error_code().is_some()).count() as i32;
        PutEventsOutput::builder().set_entries(Some(entries)).failed_entry_count(failed).build()
    }

    async fn put_all(b: &Batcher, sizes: &[usize]) -> Vec<Result<(), EntryFailure>> {
        futures::future::join_all(sizes.iter().map(|s| b.put(entry(*s)))).await
    }

    #[tokio::test]
    async fn concurrent_puts_share_requests_of_at_most_ten_entries() {
        let ten = mock!(Client::put_events)
            .match_requests(|r| r.entries().len() == 10)
            .then_output(|| output((0..10).map(|_| ok()).collect()));
        let two = mock!(Client::put_events)
            .match_requests(|r| r.entries().len() == 2)
            .then_output(|| output(vec![ok(), ok()]));
        let b = batcher(mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&ten, &two]), 1_000_000);
        let results = put_all(&b, &[100; 12]).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!((ten.num_calls(), two.num_calls()), (1, 1), "12 entries, two requests");
    }

    #[tokio::test]
    async fn records_in_the_processor_send_once_all_joined_or_ended_without_waiting_the_window() {
        use crate::process::batch::{TICKET_TESTS, Ticket};
        let _only = TICKET_TESTS.lock().await;
        let two = mock!(Client::put_events)
            .match_requests(|r| r.entries().len() == 2)
            .then_output(|| output(vec![ok(), ok()]));
        let (bus, source) = (EventBusName::parse("b").unwrap(), EventSource::parse("stigg.webhooks").unwrap());
        let window = Duration::from_secs(10);
        let client = mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&two]);
        let b = Batcher::new(client, bus, source, 1_000_000, window);
        let started = tokio::time::Instant::now();
        // Three records: two join, the third ends without reaching the forwarder.
        let join = |b: &Batcher| {
            let b = b.clone();
            Ticket::new().scope(async move { b.put(entry(10)).await })
        };
        let (first, second, ()) =
            tokio::join!(join(&b), join(&b), Ticket::new().scope(tokio::time::sleep(Duration::from_millis(5))));
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(two.num_calls(), 1);
        // Milliseconds against a 10 s window: a functional check, not a timing one.
        assert!(started.elapsed() < window, "sent once the third record ended: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_request_never_passes_the_size_limit() {
        let one =
            mock!(Client::put_events).match_requests(|r| r.entries().len() == 1).then_output(|| output(vec![ok()]));
        let b = batcher(mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&one]), 1000);
        let results = put_all(&b, &[700, 700, 700]).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(one.num_calls(), 3, "each alone: two would pass 1000 bytes");
    }

    #[tokio::test]
    async fn a_throttled_entry_is_sent_again_alone_and_only_a_put_entry_is_ok() {
        let three = mock!(Client::put_events)
            .match_requests(|r| r.entries().len() == 3)
            .then_output(|| output(vec![ok(), failed("ThrottlingException"), failed("MalformedDetail")]));
        let again =
            mock!(Client::put_events).match_requests(|r| r.entries().len() == 1).then_output(|| output(vec![ok()]));
        let b = batcher(mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&three, &again]), 1_000_000);
        let results = put_all(&b, &[10, 10, 10]).await;
        assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
        let malformed = results[2].as_ref().unwrap_err();
        assert_eq!(malformed.code, "MalformedDetail");
        assert!(!malformed.retryable, "the entry itself is wrong: a redelivery would not help");
        assert_eq!((three.num_calls(), again.num_calls()), (1, 1), "only the throttled entry again");
    }

    #[tokio::test]
    async fn an_entry_still_failing_after_every_attempt_is_a_retryable_failure() {
        let internal = mock!(Client::put_events).then_output(|| output(vec![failed("InternalFailure")]));
        let b = batcher(mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&internal]), 1_000_000);
        let result = b.put(entry(10)).await.unwrap_err();
        assert!(result.retryable);
        assert_eq!(internal.num_calls(), ATTEMPTS as usize);
    }
}
