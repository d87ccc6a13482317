//! The backfill: every customer Stigg lists, its customer-wide state and each resource's,
//! written with the same conditional writes as webhook snapshots ([`MirrorStore::write_snapshot`]),
//! so a backfill running while webhooks arrive never replaces a newer state nor undoes a
//! deletion.
//!
//! A few customers are in flight at once; the client's rate limiter and retries pace the API
//! calls. The [`checkpoint`](super::checkpoint) records the customers done in listing order (a
//! customer finished out of order counts once all before it are done; no more than
//! `in_flight` customers are past that point), saved every `checkpoint_every` of them: a run
//! stopped at any point redoes at most `in_flight + checkpoint_every - 1` customers, and a redo
//! is harmless (the same state is the same write; a newer one is kept).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;

use super::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, Counts, FAILED_SAMPLE};
use crate::config::TableName;
use crate::mirror::{MirrorError, MirrorStore, SnapshotWrite, WriteOutcome};
use crate::stigg::api::{ApiError, CustomerDirectory, EntitlementsState, Fetched};

/// Pages of customers read before giving up on a listing that never ends (10 million
/// customers at the largest page).
const MAX_PAGES: usize = 100_000;
/// This many customers failing in a row (after the client's retries each) is not about them:
/// the key, the query, or an outage longer than the retries. The run stops where the streak
/// began, so the next run does those customers again instead of passing them as failed.
pub const MAX_FAILED_IN_A_ROW: u64 = 20;

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Customers asked for per listing page (at most 100).
    pub page_size: usize,
    /// Customers fetched and written at once.
    pub in_flight: usize,
    /// Customers done between two saves of the checkpoint.
    pub checkpoint_every: usize,
    /// Start from the first customer even if a run finished or is half done.
    pub restart: bool,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        Self { page_size: 50, in_flight: 4, checkpoint_every: 5, restart: false }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Listing the customers failed after every retry: the checkpoint is saved, a later run
    /// resumes.
    #[error("listing Stigg's customers failed")]
    Listing(#[source] ApiError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Every customer failed for a while: the checkpoint stays before them (see the log's
    /// `backfill of a customer failed` lines for why).
    #[error("{in_a_row} customers in a row failed (first: {first}); stopped before them, the next run retries them")]
    FailingEveryCustomer { in_a_row: u64, first: String },
}

impl BackfillError {
    /// Whether running again later may pass (Stigg or DynamoDB unavailable), as opposed to a
    /// refused key, a second backfill at once, or a malformed checkpoint.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Listing(e) => e.is_retryable(),
            Self::Checkpoint(CheckpointError::Mirror(MirrorError::Dynamo { .. })) => true,
            Self::Checkpoint(_) => false,
            Self::FailingEveryCustomer { .. } => true,
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Everything done so far, earlier runs of the same backfill included.
    pub counts: Counts,
    /// How many customers Stigg says there are.
    pub total: Option<u64>,
    /// Customers done by this run.
    pub this_run: u64,
    pub elapsed: Duration,
    /// This run's customers per second.
    pub per_second: f64,
    pub eta: Option<Duration>,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        match self.total {
            Some(total) if total > 0 => {
                let pct = (c.customers as f64 / total as f64 * 100.0).min(100.0);
                write!(f, "{}/{total} customers ({pct:.0}%)", c.customers)?
            }
            _ => write!(f, "{} customers", c.customers)?,
        }
        write!(f, ", {:.1}/s", self.per_second)?;
        if let Some(eta) = self.eta {
            write!(f, ", ETA {}", human(eta))?;
        }
        write!(
            f,
            "; states written {}, already newer {}, after deletion {}; not found {}, failed {}",
            c.written, c.already_newer, c.after_deletion, c.not_found, c.failed
        )
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s / 60 % 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every customer is done.
    Finished,
    /// An earlier run had finished: nothing was done (`restart` starts over).
    AlreadyFinished,
    /// The time budget ran out; the next run resumes from the checkpoint.
    OutOfTime,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub ending: Ending,
    pub progress: Progress,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// Up to 20 customers that failed (their count is in `progress.counts.failed`).
    pub failed_sample: Vec<String>,
}

/// One customer's place in the listing.
struct Slot {
    customer: String,
    /// The cursor its page was fetched with.
    page_cursor: Option<String>,
    index: u64,
    /// The last of its page: the cursor of the page after it (`None`: the listing ends).
    ends_page: Option<Option<String>>,
    done: Option<Counts>,
}

pub struct Backfill<D> {
    directory: Arc<D>,
    store: MirrorStore,
    checkpoints: CheckpointStore,
    options: BackfillOptions,
}

impl<D: CustomerDirectory> Backfill<D> {
    pub fn new(
        directory: Arc<D>,
        client: aws_sdk_dynamodb::Client,
        table: TableName,
        options: BackfillOptions,
    ) -> Self {
        Self {
            directory,
            store: MirrorStore::new(client.clone(), table.clone()),
            checkpoints: CheckpointStore::new(client, table),
            options,
        }
    }

    /// The saved checkpoint, if any run started.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, BackfillError> {
        Ok(self.checkpoints.load().await?)
    }

    /// Runs until every customer is done or `until`; `on_progress` hears of each checkpoint
    /// saved (and of the last one, if anything changed since).
    /// Customers still in flight at `until` are left for the next run (not counted failed).
    pub async fn run(&self, until: Instant, mut on_progress: impl FnMut(&Progress)) -> Result<Summary, BackfillError> {
        let started = Instant::now();
        let opts = &self.options;
        let (in_flight, every) = (opts.in_flight.max(1), opts.checkpoint_every.max(1) as u64);
        let mut cp = match self.checkpoints.load().await? {
            Some(done) if done.is_finished() && !opts.restart => {
                let progress = progress(&done, 0, started);
                return Ok(Summary {
                    ending: Ending::AlreadyFinished,
                    progress,
                    started_at_ms: done.started_at_ms,
                    finished_at_ms: done.finished_at_ms,
                    failed_sample: done.failed_sample,
                });
            }
            Some(old) if opts.restart => Checkpoint::fresh(now_ms(), old.revision),
            Some(resumed) => resumed,
            None => Checkpoint::fresh(now_ms(), 0),
        };
        if cp.counts.customers > 0 {
            tracing::info!(customers_done = cp.counts.customers, "resuming the backfill from its checkpoint");
        }
        // The first save claims the run: a second backfill started meanwhile fails its own.
        cp.updated_at_ms = now_ms();
        self.checkpoints.save(&mut cp).await?;

        let mut this_run = 0u64;
        let mut unsaved = 0u64;
        let mut reported = false;
        let mut slots: VecDeque<Slot> = VecDeque::new();
        let mut first_seq = 0usize; // the listing position of slots[0]
        let mut queued = 0usize; // slots[..queued] have been launched
        let mut next_page = Some(cp.cursor.clone());
        let mut resuming = Some((cp.page_done, cp.last_done.clone()));
        let mut pages = 0usize;
        let mut tasks: JoinSet<(usize, Counts, Option<String>)> = JoinSet::new();
        // The failures in a row folded so far, and the checkpoint as it was before the first.
        let mut streak = 0u64;
        let mut before_streak: Option<(Checkpoint, String)> = None;
        loop {
            // Launch customers while fewer than `in_flight` are not yet folded into the
            // checkpoint (so a stop redoes at most those), reading the next page when needed.
            while queued < in_flight {
                if Instant::now() >= until {
                    break;
                }
                if queued == slots.len() {
                    let Some(cursor) = next_page.take() else { break };
                    pages += 1;
                    if pages > MAX_PAGES {
                        let detail = format!("more than {MAX_PAGES} pages of customers");
                        return Err(BackfillError::Listing(ApiError::Malformed(detail)));
                    }
                    let page = match self.directory.customers(cursor.as_deref(), opts.page_size).await {
                        Ok(page) => page,
                        Err(e) => {
                            // What is done stays done; the next run reads this page again.
                            self.save(&mut cp, &mut unsaved).await?;
                            return Err(BackfillError::Listing(e));
                        }
                    };
                    if page.next.is_some() && page.next == cursor {
                        // A listing that leads back to itself would be read forever.
                        self.save(&mut cp, &mut unsaved).await?;
                        let detail = "the customer listing's next cursor is the page's own".to_owned();
                        return Err(BackfillError::Listing(ApiError::Malformed(detail)));
                    }
                    cp.total = page.total.or(cp.total);
                    let skip = match resuming.take() {
                        Some((done, Some(last))) => {
                            page.customers.iter().position(|c| *c == last).map_or(done as usize, |i| i + 1)
                        }
                        Some((done, None)) => done as usize,
                        None => 0,
                    };
                    let n = page.customers.len();
                    if n == 0 || skip >= n {
                        // Nothing left on this page: where the checkpoint stands moves past it.
                        if slots.is_empty() {
                            cp.cursor = page.next.clone();
                            cp.page_done = 0;
                            cp.last_done = None;
                            if page.next.is_none() {
                                cp.finished_at_ms = Some(now_ms());
                            }
                        } else if let Some(last) = slots.back_mut() {
                            // The previous page's last slot now ends the listing (or leads on).
                            last.ends_page = Some(page.next.clone());
                        }
                        next_page = page.next.clone().map(Some);
                        continue;
                    }
                    for (i, customer) in page.customers.iter().enumerate().skip(skip) {
                        slots.push_back(Slot {
                            customer: customer.clone(),
                            page_cursor: cursor.clone(),
                            index: i as u64,
                            ends_page: (i + 1 == n).then(|| page.next.clone()),
                            done: None,
                        });
                    }
                    next_page = page.next.map(Some);
                }
                let seq = first_seq + queued;
                let customer = slots[queued].customer.clone();
                let (directory, store) = (self.directory.clone(), self.store.clone());
                tasks.spawn(async move {
                    let work = std::panic::AssertUnwindSafe(one_customer(&*directory, &store, &customer));
                    let (counts, failed) = futures::FutureExt::catch_unwind(work).await.unwrap_or_else(|_| {
                        tracing::error!(customer, "the backfill of a customer panicked");
                        (Counts { customers: 1, failed: 1, ..Counts::default() }, true)
                    });
                    (seq, counts, failed.then_some(customer))
                });
                queued += 1;
            }
            if tasks.is_empty() {
                break;
            }
            let joined = tokio::time::timeout_at(until.into(), tasks.join_next()).await;
            let Ok(Some(joined)) = joined else { break };
            // Tasks catch their panics and are aborted only below: a join error cannot happen.
            let Ok((seq, counts, failed)) = joined else { continue };
            if let Some(customer) = failed
                && cp.failed_sample.len() < FAILED_SAMPLE
            {
                cp.failed_sample.push(customer);
            }
            slots[seq - first_seq].done = Some(counts);
            // Fold the customers done in listing order into the checkpoint.
            while let Some(slot) = slots.front() {
                let Some(counts) = slot.done else { break };
                let slot = slots.pop_front().expect("front exists");
                first_seq += 1;
                queued -= 1;
                if counts.failed > 0 {
                    if streak == 0 {
                        before_streak = Some((cp.clone(), slot.customer.clone()));
                    }
                    streak += 1;
                } else {
                    (streak, before_streak) = (0, None);
                }
                cp.counts.add(&counts);
                this_run += 1;
                unsaved += 1;
                match slot.ends_page {
                    Some(next) => {
                        cp.finished_at_ms = next.is_none().then(now_ms);
                        cp.cursor = next;
                        cp.page_done = 0;
                        cp.last_done = None;
                    }
                    None => {
                        cp.cursor = slot.page_cursor;
                        cp.page_done = slot.index + 1;
                        cp.last_done = Some(slot.customer);
                    }
                }
            }
            if streak >= MAX_FAILED_IN_A_ROW
                && let Some((mut back, first)) = before_streak.take()
            {
                tasks.abort_all();
                (back.revision, back.failed_sample) = (cp.revision, cp.failed_sample.clone());
                self.save(&mut back, &mut unsaved).await?;
                return Err(BackfillError::FailingEveryCustomer { in_a_row: streak, first });
            }
            if unsaved >= every {
                self.save(&mut cp, &mut unsaved).await?;
                on_progress(&progress(&cp, this_run, started));
                reported = true;
            }
        }
        // Customers still in flight are dropped with the tasks: the next run does them.
        tasks.abort_all();
        let changed = unsaved > 0 || !reported;
        self.save(&mut cp, &mut unsaved).await?;
        let progress = progress(&cp, this_run, started);
        if changed {
            on_progress(&progress);
        }
        let ending = if cp.is_finished() { Ending::Finished } else { Ending::OutOfTime };
        Ok(Summary {
            ending,
            progress,
            started_at_ms: cp.started_at_ms,
            finished_at_ms: cp.finished_at_ms,
            failed_sample: cp.failed_sample,
        })
    }

    async fn save(&self, cp: &mut Checkpoint, unsaved: &mut u64) -> Result<(), BackfillError> {
        cp.updated_at_ms = now_ms();
        self.checkpoints.save(cp).await?;
        *unsaved = 0;
        Ok(())
    }
}

/// One customer: its customer-wide state, then its resources' (resources of a customer Stigg
/// does not know are not asked for). Returns the counts and whether it failed; a failure
/// (after the client's retries) is logged and counted, and the run goes on.
async fn one_customer<D: CustomerDirectory + ?Sized>(
    directory: &D,
    store: &MirrorStore,
    customer: &str,
) -> (Counts, bool) {
    let mut counts = Counts { customers: 1, ..Counts::default() };
    match customer_states(directory, store, customer, &mut counts).await {
        Ok(()) => (counts, false),
        Err(e) => {
            tracing::warn!(customer, error = %crate::error_chain(&*e), "backfill of a customer failed");
            counts.failed = 1;
            (counts, true)
        }
    }
}

type CustomerError = Box<dyn std::error::Error + Send + Sync>;

async fn customer_states<D: CustomerDirectory + ?Sized>(
    directory: &D,
    store: &MirrorStore,
    customer: &str,
    counts: &mut Counts,
) -> Result<(), CustomerError> {
    match directory.entitlements_state(customer, None).await? {
        Fetched::CustomerNotFound => {
            counts.not_found = 1;
            return Ok(());
        }
        Fetched::State(state) => write(store, &state, counts).await?,
    }
    for resource in directory.resources(customer).await? {
        match directory.entitlements_state(customer, Some(&resource)).await? {
            // Removed between the listing and the fetch: nothing to write.
            Fetched::CustomerNotFound => {}
            Fetched::State(state) => write(store, &state, counts).await?,
        }
    }
    Ok(())
}

async fn write(store: &MirrorStore, state: &EntitlementsState, counts: &mut Counts) -> Result<(), MirrorError> {
    match store.write_snapshot(&SnapshotWrite::from_state(state)?).await? {
        WriteOutcome::Written => counts.written += 1,
        WriteOutcome::Stale => counts.already_newer += 1,
        WriteOutcome::AfterDeletion => counts.after_deletion += 1,
        // A snapshot write has no other outcome.
        other => tracing::warn!(outcome = other.as_str(), "unexpected outcome of a snapshot write"),
    }
    Ok(())
}

fn progress(cp: &Checkpoint, this_run: u64, started: Instant) -> Progress {
    let elapsed = started.elapsed();
    let per_second = if elapsed.as_secs_f64() > 0.0 { this_run as f64 / elapsed.as_secs_f64() } else { 0.0 };
    let eta = match cp.total {
        _ if cp.is_finished() => Some(Duration::ZERO),
        Some(total) if per_second > 0.0 => {
            Some(Duration::from_secs_f64(total.saturating_sub(cp.counts.customers) as f64 / per_second))
        }
        _ => None,
    };
    Progress { counts: cp.counts, total: cp.total, this_run, elapsed, per_second, eta }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_says_how_far_how_fast_and_what_happened() {
        let p = Progress {
            counts: Counts {
                customers: 120,
                written: 130,
                already_newer: 2,
                after_deletion: 0,
                not_found: 1,
                failed: 0,
            },
            total: Some(500),
            this_run: 100,
            elapsed: Duration::from_secs(10),
            per_second: 10.0,
            eta: Some(Duration::from_secs(38)),
        };
        assert_eq!(
            p.to_string(),
            "120/500 customers (24%), 10.0/s, ETA 0m38s; states written 130, already newer 2, after deletion 0; not found 1, failed 0"
        );
        let cp = Checkpoint { counts: p.counts, total: Some(500), ..Checkpoint::fresh(0, 0) };
        let started = Instant::now() - Duration::from_secs(10);
        let eta = progress(&cp, 100, started).eta.unwrap().as_secs_f64();
        assert!((37.0..=38.5).contains(&eta), "380 left at ~10/s: {eta}");
        assert_eq!(human(Duration::from_secs(7322)), "2h02m");
    }
}
