//! The scheduled drift check: is the mirror what Stigg's API says, and if not, who is behind?
//!
//! Each run samples the next customers of Stigg's listing (a rolling cursor in the mirror table,
//! `pk = sync#drift`, `sk = cursor`, that wraps around at the end, so every customer is checked
//! over time), then as many customers of the mirror's own headers (a second cursor: Stigg's
//! listing never shows a customer whose `customer.deleted` was lost), and compares, per customer and resource, the header's `entitlementsUpdatedAt`
//! with Stigg's: the same ordering key the webhooks carry. The outcomes:
//!
//! - in sync: the same time (or Stigg and the mirror agree the customer does not exist): the
//!   header's `verifiedAt` is stamped, so a reader's maximum age counts from the check;
//! - behind: Stigg is newer. A webhook was lost (or is still on its way); repaired with the
//!   fetched state under the webhooks' own conditions ([`MirrorStore::write_snapshot`]).
//! - ahead: the mirror is newer. Webhooks arrive before Stigg's API answers with the new state
//!   (its answer comes from a cache): normal lag, counted, never touched.
//! - missing: no snapshot at all: written, counted apart from "behind" (a mirror enabled after
//!   the customer's last change, not a lost event).
//! - not found: Stigg does not know a customer the mirror holds (a lost `customer.deleted`):
//!   repaired with a deletion at the time of the check; or a resource the mirror holds (its
//!   subscription ended): repaired with an empty snapshot at the time of the check.
//! - failed: Stigg's API or DynamoDB gave no answer after the client's retries. Never a repair.
//!
//! Only one run works at a time: the cursor item is also a lease (a conditional write), so the
//! schedule and a manual run never check the same customers twice or race on the cursor.

use std::time::Duration;

use serde::Serialize;

use crate::mirror::MirrorError;
use crate::stigg::api::{ApiError, ApiSettings, CustomerPage, Fetched, RetryPolicy};

/// The cursor's item.
pub const CURSOR_PK: &str = "sync#drift";
pub const CURSOR_SK: &str = "cursor";

/// Stigg answers `entitlementsState` "from the cache"
/// (<https://docs.stigg.io/graphql-reference/queries/entitlementsState>): a customer created a
/// moment ago may be unknown to the API while its first webhook already reached the mirror. A
/// snapshot younger than this is never deleted on a `CustomerNotFound` (still counted).
pub const NOT_FOUND_GRACE: Duration = Duration::from_secs(15 * 60);

/// Customers checked at once: the client's rate limiter paces the calls anyway; a few in flight
/// hide the latency of each.
const CUSTOMERS_IN_FLIGHT: usize = 4;

/// A run stops taking customers this long before its deadline: a call started just before it
/// (with its retries: [`api_settings`]) and the cursor's write must still fit.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(60);

/// How the drift check calls Stigg: 10 s per request, retries within 30 s (429s back off, 5xx
/// and timeouts retried), so one stuck call never outlasts [`DEADLINE_MARGIN`]. A check that
/// still fails is counted and left for the next cycle, unlike the backfill's patience.
pub fn api_settings(url: &str) -> ApiSettings {
    let patient = ApiSettings::patient(url);
    ApiSettings {
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy { attempts: 5, budget: Duration::from_secs(30), ..patient.retry },
        ..patient
    }
}

/// What the mirror holds for one customer and resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mirrored {
    /// The header's `entitlementsUpdatedAt` (absent: no snapshot).
    pub snapshot_at: Option<i64>,
    /// The customer's tombstone's `deletedAt`.
    pub deleted_at: Option<i64>,
    /// The snapshot holds no feature (grants nothing).
    pub empty: bool,
}

/// How one comparison ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    InSync,
    Behind,
    Ahead,
    Missing,
    NotFound,
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 6] =
        [Self::InSync, Self::Behind, Self::Ahead, Self::Missing, Self::NotFound, Self::Failed];

    /// The `Outcome` dimension of `MirrorDrift`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InSync => "in_sync",
            Self::Behind => "behind",
            Self::Ahead => "ahead",
            Self::Missing => "missing",
            Self::NotFound => "not_found",
            Self::Failed => "failed",
        }
    }
}

/// The mirror against Stigg's answer for one customer and resource.
pub fn classify(mirrored: Mirrored, stigg: &Fetched) -> Outcome {
    match (stigg, mirrored.snapshot_at) {
        // An empty snapshot grants what an unknown customer or resource does: nothing.
        (Fetched::CustomerNotFound, Some(_)) if mirrored.empty => Outcome::InSync,
        (Fetched::CustomerNotFound, Some(_)) => Outcome::NotFound,
        // Neither knows the customer (never mirrored, or its deletion was).
        (Fetched::CustomerNotFound, None) => Outcome::InSync,
        (Fetched::State(state), Some(at)) if at == state.at_ms => Outcome::InSync,
        (Fetched::State(state), Some(at)) if at < state.at_ms => Outcome::Behind,
        (Fetched::State(_), Some(_)) => Outcome::Ahead,
        // A deletion the mirror holds is newer than Stigg's state: the API has not caught up.
        (Fetched::State(state), None) if mirrored.deleted_at.is_some_and(|d| d >= state.at_ms) => Outcome::Ahead,
        (Fetched::State(_), None) => Outcome::Missing,
    }
}

/// What one run did: every comparison counts once in exactly one outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DriftReport {
    /// Customers sampled.
    pub customers: u64,
    /// Of them, from the mirror's own headers (after Stigg's listing's sample).
    pub from_mirror: u64,
    /// Comparisons (a customer-wide state, or one resource's).
    pub checked: u64,
    pub in_sync: u64,
    pub behind: u64,
    pub ahead: u64,
    pub missing: u64,
    pub not_found: u64,
    pub failed: u64,
    /// Repairs that changed the mirror (a behind or missing snapshot written, a deletion).
    pub repaired: u64,
    /// The listing reached its end in this run: the next run starts from the first customer.
    pub wrapped: bool,
    /// The deadline came before the sample was done (the cursor keeps the rest for next time).
    pub stopped_early: bool,
    /// Another run held the lease: this one did nothing.
    pub skipped: bool,
}

impl DriftReport {
    fn count(&mut self, outcome: Outcome) {
        self.checked += 1;
        *match outcome {
            Outcome::InSync => &mut self.in_sync,
            Outcome::Behind => &mut self.behind,
            Outcome::Ahead => &mut self.ahead,
            Outcome::Missing => &mut self.missing,
            Outcome::NotFound => &mut self.not_found,
            Outcome::Failed => &mut self.failed,
        } += 1;
    }

    pub fn of(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::InSync => self.in_sync,
            Outcome::Behind => self.behind,
            Outcome::Ahead => self.ahead,
            Outcome::Missing => self.missing,
            Outcome::NotFound => self.not_found,
            Outcome::Failed => self.failed,
        }
    }

    fn merge(&mut self, other: &DriftReport) {
        self.customers += other.customers;
        self.checked += other.checked;
        self.in_sync += other.in_sync;
        self.behind += other.behind;
        self.ahead += other.ahead;
        self.missing += other.missing;
        self.not_found += other.not_found;
        self.failed += other.failed;
        self.repaired += other.repaired;
    }

    /// A run whose every comparison failed compared nothing: as good as not running.
    pub fn completed(&self) -> bool {
        !self.skipped && (self.checked == 0 || self.failed < self.checked)
    }

    /// `MirrorDrift` per outcome, `MirrorDriftChecked`, `MirrorDriftRuns` (see
    /// [`crate::metrics::mirror_drift`]).
    pub fn record_metrics(&self) {
        let run = if self.skipped {
            "skipped"
        } else if self.completed() {
            "completed"
        } else {
            "failed"
        };
        crate::metrics::mirror_drift_run(run);
        crate::metrics::mirror_drift_checked(self.checked);
        for outcome in Outcome::ALL {
            crate::metrics::mirror_drift(outcome.as_str(), self.of(outcome));
        }
    }
}

/// Why a run did not get to compare anything.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// The cursor (and lease) item could not be read or written.
    #[error("the drift check's cursor could not be read or written")]
    Cursor(#[source] MirrorError),
    /// Stigg's customer listing failed after the client's retries.
    #[error("Stigg's customer listing failed")]
    Listing(#[source] ApiError),
}

impl DriftError {
    /// DynamoDB throttling or an outage, Stigg's 429 or 5xx: the next scheduled run may pass.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Cursor(e) => e.is_retryable(),
            Self::Listing(e) => e.is_retryable(),
        }
    }
}

/// Where in Stigg's listing the next run starts: the page's cursor (`None`: the first page) and
/// how many customers of that page are done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    pub cursor: Option<String>,
    pub offset: usize,
}

/// The position after `done` customers of `page` (fetched at `at`, of which `at.offset` were
/// skipped) were checked.
pub fn next_position(at: &Position, page: &CustomerPage, done: usize) -> Position {
    let taken = at.offset + done;
    if taken < page.customers.len() {
        return Position { cursor: at.cursor.clone(), offset: taken };
    }
    Position { cursor: page.next.clone(), offset: 0 }
}

mod check;
mod cursor;

pub use check::DriftCheck;
pub use cursor::Cursor;

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::stigg::api::EntitlementsState;

    fn state(at_ms: i64) -> Fetched {
        Fetched::State(EntitlementsState {
            customer: "c-1".into(),
            resource: None,
            at_ms,
            at_iso: crate::metrics::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms as u64)),
            entitlements: Vec::new(),
            access_denied_reason: None,
        })
    }

    fn mirrored(snapshot_at: Option<i64>, deleted_at: Option<i64>) -> Mirrored {
        Mirrored { snapshot_at, deleted_at, empty: false }
    }

    #[test]
    fn the_mirror_is_compared_with_stigg_by_the_webhooks_ordering_key() {
        let cases = [
            (mirrored(Some(10), None), state(10), Outcome::InSync),
            (mirrored(Some(9), None), state(10), Outcome::Behind),
            (mirrored(Some(11), None), state(10), Outcome::Ahead),
            (mirrored(None, None), state(10), Outcome::Missing),
            // A re-created customer: its deletion is older than Stigg's state.
            (mirrored(None, Some(9)), state(10), Outcome::Missing),
            // The mirror's deletion is newer than Stigg's answer: the API lags, nothing to undo.
            (mirrored(None, Some(10)), state(10), Outcome::Ahead),
            (mirrored(None, Some(11)), state(10), Outcome::Ahead),
            // A snapshot newer than a deletion (re-created) is compared like any other.
            (mirrored(Some(12), Some(11)), state(12), Outcome::InSync),
            (mirrored(Some(12), Some(11)), state(13), Outcome::Behind),
            (mirrored(Some(10), None), Fetched::CustomerNotFound, Outcome::NotFound),
            (mirrored(None, None), Fetched::CustomerNotFound, Outcome::InSync),
            (mirrored(None, Some(5)), Fetched::CustomerNotFound, Outcome::InSync),
            // Emptied when Stigg stopped knowing it: nothing left to repair.
            (Mirrored { empty: true, ..mirrored(Some(10), None) }, Fetched::CustomerNotFound, Outcome::InSync),
        ];
        for (m, fetched, want) in cases {
            assert_eq!(classify(m, &fetched), want, "{m:?} vs {fetched:?}");
        }
    }

    #[test]
    fn each_comparison_counts_once_and_a_run_of_only_failures_did_not_complete() {
        let mut r = DriftReport::default();
        for o in Outcome::ALL {
            r.count(o);
        }
        assert_eq!(r.checked, 6);
        assert!(Outcome::ALL.iter().all(|o| r.of(*o) == 1));
        assert!(r.completed());
        let mut failing = DriftReport::default();
        failing.count(Outcome::Failed);
        failing.count(Outcome::Failed);
        assert!(!failing.completed(), "a rejected key fails every check: not a completed run");
        assert!(DriftReport::default().completed(), "an empty listing is checked in full");
        assert!(!DriftReport { skipped: true, ..DriftReport::default() }.completed());
    }

    fn page(customers: &[&str], next: Option<&str>) -> CustomerPage {
        CustomerPage {
            customers: customers.iter().map(|c| (*c).to_owned()).collect(),
            next: next.map(str::to_owned),
            total: None,
        }
    }

    #[test]
    fn the_cursor_moves_to_the_next_page_keeps_a_partial_page_and_wraps_at_the_end() {
        let start = Position::default();
        let p = page(&["a", "b", "c"], Some("c"));
        assert_eq!(next_position(&start, &p, 3), Position { cursor: Some("c".into()), offset: 0 });
        // Cut short by the deadline: the same page again, after what was done.
        assert_eq!(next_position(&start, &p, 2), Position { cursor: None, offset: 2 });
        let resumed = Position { cursor: Some("x".into()), offset: 2 };
        assert_eq!(next_position(&resumed, &p, 1), Position { cursor: Some("c".into()), offset: 0 });
        // The last page: back to the first.
        assert_eq!(next_position(&resumed, &page(&["y", "z", "w"], None), 1), Position::default());
        assert_eq!(next_position(&start, &page(&[], None), 0), Position::default());
    }

    #[test]
    fn a_call_and_its_retries_end_before_the_run_stops_taking_customers() {
        let s = api_settings("http://127.0.0.1:1/graphql");
        assert!(s.retry.budget + s.request_timeout < DEADLINE_MARGIN, "{s:?}");
    }

    #[test]
    fn only_throttling_and_outages_are_worth_the_next_run() {
        assert!(DriftError::Listing(ApiError::Unavailable { status: 503 }).is_retryable());
        assert!(!DriftError::Listing(ApiError::Refused { status: 401 }).is_retryable());
        assert!(!DriftError::Cursor(MirrorError::Malformed("x".into())).is_retryable());
    }
}
