//! The scheduled drift check: is the mirror what Stigg's API says, and if not, who is behind?
//!
//! Each run samples the next customers of Stigg's listing (a rolling cursor in the mirror table,
//! `pk = sync#drift`, `sk = cursor`, that wraps around at the end, so every customer is checked
//! over time) and compares, per customer and resource, the header's `entitlementsUpdatedAt`
//! with Stigg's: the same ordering key the webhooks carry. The outcomes:
//!
//! - in sync: the same time (or Stigg and the mirror agree the customer does not exist);
//! - behind: Stigg is newer. A webhook was lost (or is still on its way); repaired with the
//!   fetched state under the webhooks' own conditions ([`MirrorStore::write_snapshot`]).
//! - ahead: the mirror is newer. Webhooks arrive before Stigg's API answers with the new state
//!   (its answer comes from a cache): normal lag, counted, never touched.
//! - missing: no snapshot at all: written, counted apart from "behind" (a mirror enabled after
//!   the customer's last change, not a lost event).
//! - not found: Stigg does not know a customer the mirror holds (a lost `customer.deleted`):
//!   repaired with a deletion at the time of the check.
//! - failed: Stigg's API or DynamoDB gave no answer after the client's retries. Never a repair.
//!
//! Only one run works at a time: the cursor item is also a lease (a conditional write), so the
//! schedule and a manual run never check the same customers twice or race on the cursor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::Serialize;

use crate::config::TableName;
use crate::mirror::{API_MESSAGE_PREFIX, MirrorError, MirrorStore, SnapshotWrite, TOMBSTONE, WriteOutcome};
use crate::mirror::{partition_key, sort_key};
use crate::stigg::api::{ApiError, CustomerDirectory, CustomerPage, EntitlementsState, Fetched};

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

/// A run stops taking customers this long before its deadline: one customer's checks (a few
/// calls, each with the client's retries) and the cursor's write must still fit.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(30);

/// What the mirror holds for one customer and resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mirrored {
    /// The header's `entitlementsUpdatedAt` (absent: no snapshot).
    pub snapshot_at: Option<i64>,
    /// The customer's tombstone's `deletedAt`.
    pub deleted_at: Option<i64>,
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
            Self::Cursor(e) => matches!(e, MirrorError::Dynamo { .. }),
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

/// The drift check: Stigg's customers (`directory`) against the mirror table.
pub struct DriftCheck<D: ?Sized> {
    directory: Arc<D>,
    store: MirrorStore,
    client: Client,
    table: TableName,
    sample: NonZeroUsize,
}

impl<D: CustomerDirectory + ?Sized> DriftCheck<D> {
    pub fn new(directory: Arc<D>, client: Client, table: TableName, sample: NonZeroUsize) -> Self {
        let store = MirrorStore::new(client.clone(), table.clone());
        Self { directory, store, client, table, sample }
    }

    /// One run: the next sample of customers, until `deadline` (less [`DEADLINE_MARGIN`]).
    pub async fn run(&self, deadline: SystemTime) -> Result<DriftReport, DriftError> {
        let owner = uuid::Uuid::new_v4().to_string();
        let Some(position) = self.lease(&owner, deadline).await.map_err(DriftError::Cursor)? else {
            tracing::info!("another drift check holds the lease: skipped");
            return Ok(DriftReport { skipped: true, ..DriftReport::default() });
        };
        let result = self.sample(&position, deadline).await;
        let (report, next) = match result {
            Ok(done) => done,
            Err(e) => {
                // The cursor stays where it was; the lease goes, so the next run need not wait.
                if let Err(release) = self.save(&owner, None).await {
                    tracing::warn!(error = %crate::error_chain(&release), "drift lease not released");
                }
                return Err(e);
            }
        };
        self.save(&owner, Some(&next)).await.map_err(DriftError::Cursor)?;
        Ok(report)
    }

    /// The page at `position`, its customers not yet done, checked until the deadline.
    async fn sample(&self, position: &Position, deadline: SystemTime) -> Result<(DriftReport, Position), DriftError> {
        let mut report = DriftReport::default();
        let limit = self.sample.get();
        let mut at = position.clone();
        let mut page = self.directory.customers(at.cursor.as_deref(), limit).await.map_err(DriftError::Listing)?;
        if at.offset >= page.customers.len() && at.cursor.is_some() {
            // Past the end (the listing shrank, or the last page was done): start over.
            report.wrapped = page.next.is_none();
            at = if page.next.is_some() {
                Position { cursor: page.next.clone(), offset: 0 }
            } else {
                Position::default()
            };
            page = self.directory.customers(at.cursor.as_deref(), limit).await.map_err(DriftError::Listing)?;
        }
        let todo: Vec<&String> = page.customers.iter().skip(at.offset).collect();
        let stop_at = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline);
        let mut done = 0;
        for chunk in todo.chunks(CUSTOMERS_IN_FLIGHT) {
            if SystemTime::now() >= stop_at {
                report.stopped_early = true;
                break;
            }
            let reports = futures::future::join_all(chunk.iter().map(|c| self.check_customer(c))).await;
            for r in &reports {
                report.merge(r);
            }
            done += chunk.len();
        }
        let next = next_position(&at, &page, done);
        if next.cursor.is_none() && next.offset == 0 && !report.stopped_early {
            report.wrapped = true;
        }
        Ok((report, next))
    }

    /// Every comparison of one customer: customer-wide, then each resource Stigg scopes
    /// entitlements by and each the mirror holds (a resource Stigg no longer lists may still
    /// hold a stale snapshot).
    pub async fn check_customer(&self, customer: &str) -> DriftReport {
        let mut report = DriftReport { customers: 1, ..DriftReport::default() };
        let mirrored = match self.mirrored(customer).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(customer_id = customer, error = %crate::error_chain(&e), "drift check: mirror unreadable");
                report.count(Outcome::Failed);
                return report;
            }
        };
        let of = |resource: Option<&str>| Mirrored {
            snapshot_at: mirrored.headers.get(resource.unwrap_or_default()).copied().flatten(),
            deleted_at: mirrored.deleted_at,
        };
        let customer_wide = match self.directory.entitlements_state(customer, None).await {
            Ok(fetched) => fetched,
            Err(e) => {
                tracing::warn!(customer_id = customer, error = %crate::error_chain(&e), "drift check: Stigg's API gave no answer");
                report.count(Outcome::Failed);
                return report;
            }
        };
        if customer_wide == Fetched::CustomerNotFound {
            let outcome =
                classify(Mirrored { snapshot_at: mirrored.newest(), deleted_at: mirrored.deleted_at }, &customer_wide);
            let deleted = outcome != Outcome::NotFound || self.delete(customer, mirrored.newest(), &mut report).await;
            report.count(if deleted { outcome } else { Outcome::Failed });
            return report;
        }
        self.compare(customer, None, of(None), customer_wide, &mut report).await;

        let listed = match self.directory.resources(customer).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(customer_id = customer, error = %crate::error_chain(&e), "drift check: resources not listed");
                report.count(Outcome::Failed);
                Vec::new()
            }
        };
        let resources: BTreeSet<&str> = listed
            .iter()
            .map(String::as_str)
            .chain(mirrored.headers.keys().map(String::as_str))
            .filter(|r| !r.is_empty())
            .collect();
        for resource in resources {
            match self.directory.entitlements_state(customer, Some(resource)).await {
                Ok(fetched) => self.compare(customer, Some(resource), of(Some(resource)), fetched, &mut report).await,
                Err(e) => {
                    tracing::warn!(customer_id = customer, resource_id = resource, error = %crate::error_chain(&e),
                        "drift check: Stigg's API gave no answer");
                    report.count(Outcome::Failed);
                }
            }
        }
        report
    }

    /// One comparison, and its repair.
    async fn compare(
        &self,
        customer: &str,
        resource: Option<&str>,
        mirrored: Mirrored,
        fetched: Fetched,
        report: &mut DriftReport,
    ) {
        let outcome = classify(mirrored, &fetched);
        let state = match (&fetched, outcome) {
            (Fetched::State(state), Outcome::Behind | Outcome::Missing) => state,
            (_, Outcome::NotFound) => {
                // A resource unknown while the customer is known: nothing to delete; counted.
                tracing::warn!(
                    customer_id = customer,
                    resource_id = resource,
                    "drift check: Stigg does not know this resource"
                );
                report.count(outcome);
                return;
            }
            (Fetched::State(state), Outcome::Ahead) => {
                tracing::debug!(
                    customer_id = customer,
                    resource_id = resource,
                    mirror_at = mirrored.snapshot_at,
                    stigg_at = state.at_ms,
                    "drift check: mirror ahead of Stigg's API"
                );
                report.count(outcome);
                return;
            }
            _ => {
                report.count(outcome);
                return;
            }
        };
        match self.repair(state).await {
            Ok(written) => {
                if outcome == Outcome::Behind {
                    // What the runbook starts from: which customer, how far behind.
                    tracing::warn!(
                        customer_id = customer,
                        resource_id = resource,
                        mirror_at = mirrored.snapshot_at,
                        stigg_at = state.at_ms,
                        written = written.as_str(),
                        "drift check: mirror behind Stigg (a lost webhook?)"
                    );
                } else {
                    tracing::info!(
                        customer_id = customer,
                        resource_id = resource,
                        stigg_at = state.at_ms,
                        written = written.as_str(),
                        "drift check: snapshot missing from the mirror"
                    );
                }
                if written == WriteOutcome::Written {
                    report.repaired += 1;
                }
                report.count(outcome);
            }
            Err(e) => {
                tracing::warn!(customer_id = customer, resource_id = resource, error = %crate::error_chain(&e),
                    "drift check: repair failed");
                report.count(Outcome::Failed);
            }
        }
    }

    async fn repair(&self, state: &EntitlementsState) -> Result<WriteOutcome, MirrorError> {
        self.store.write_snapshot(&SnapshotWrite::from_state(state)?).await
    }

    /// A customer Stigg does not know: deleted at the time of the check, unless its newest
    /// snapshot is younger than [`NOT_FOUND_GRACE`]. `false`: DynamoDB failed.
    async fn delete(&self, customer: &str, newest: Option<i64>, report: &mut DriftReport) -> bool {
        let now = SystemTime::now();
        let now_ms = epoch_ms(now);
        let grace = NOT_FOUND_GRACE.as_millis() as i64;
        if newest.is_some_and(|at| at > now_ms - grace) {
            tracing::warn!(
                customer_id = customer,
                mirror_at = newest,
                "drift check: Stigg does not know a customer mirrored moments ago; left for a later check"
            );
            return true;
        }
        let message_id = format!("{API_MESSAGE_PREFIX}not-found:{now_ms}");
        match self.store.delete_customer(customer, now_ms, &crate::metrics::rfc3339(now), &message_id).await {
            Ok(outcome) => {
                tracing::warn!(
                    customer_id = customer,
                    mirror_at = newest,
                    outcome = outcome.as_str(),
                    "drift check: Stigg does not know this customer (a lost customer.deleted?): deleted"
                );
                if matches!(outcome, WriteOutcome::Deleted(_)) {
                    report.repaired += 1;
                }
                true
            }
            Err(e) => {
                tracing::warn!(customer_id = customer, error = %crate::error_chain(&e), "drift check: deletion failed");
                false
            }
        }
    }

    /// The customer's headers (resource id, `""` customer-wide -> `entitlementsUpdatedAt`) and
    /// tombstone: one strongly consistent Query of the sort keys from `resource#` on, which are
    /// exactly the headers and the tombstone (`feature#...` sorts before them), never the
    /// feature items.
    async fn mirrored(&self, customer: &str) -> Result<CustomerInMirror, MirrorError> {
        let mut found = CustomerInMirror::default();
        let mut start = None;
        let from = sort_key(None);
        loop {
            let page = self
                .client
                .query()
                .table_name(self.table.as_str())
                .key_condition_expression("#pk = :pk AND #sk >= :from")
                .projection_expression("#sk, #r, #t, #d")
                .expression_attribute_names("#pk", "pk")
                .expression_attribute_names("#sk", "sk")
                .expression_attribute_names("#r", "resourceId")
                .expression_attribute_names("#t", "entitlementsUpdatedAt")
                .expression_attribute_names("#d", "deletedAt")
                .expression_attribute_values(":pk", AttributeValue::S(partition_key(customer)))
                .expression_attribute_values(":from", AttributeValue::S(from.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| MirrorError::dynamo("Query", e))?;
            for item in page.items() {
                let sk = text(item, "sk").unwrap_or_default();
                if sk == TOMBSTONE {
                    found.deleted_at = number(item, "deletedAt");
                } else if let Some(key_resource) = sk.strip_prefix("resource#") {
                    // The item's own id: a key holds a digest in place of a very long one.
                    let resource = text(item, "resourceId").unwrap_or(key_resource).to_owned();
                    found.headers.insert(resource, number(item, "entitlementsUpdatedAt"));
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(found);
            }
        }
    }

    /// Takes the lease (until `deadline`) and reads the position, in one conditional write.
    /// `None`: another run holds an unexpired lease.
    async fn lease(&self, owner: &str, deadline: SystemTime) -> Result<Option<Position>, MirrorError> {
        let now = epoch_ms(SystemTime::now());
        let result = self
            .client
            .update_item()
            .table_name(self.table.as_str())
            .set_key(Some(cursor_key()))
            .update_expression("SET #lu = :until, #lo = :owner, #started = :now")
            .condition_expression("attribute_not_exists(#lu) OR #lu < :now")
            .expression_attribute_names("#lu", "leaseUntil")
            .expression_attribute_names("#lo", "leaseOwner")
            .expression_attribute_names("#started", "lastStartedAt")
            .expression_attribute_values(":until", n(epoch_ms(deadline)))
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                let offset = number(&item, "offset").and_then(|o| usize::try_from(o).ok()).unwrap_or(0);
                Ok(Some(Position { cursor: text(&item, "cursor").map(str::to_owned), offset }))
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => Ok(None),
            Err(e) => Err(MirrorError::dynamo("UpdateItem", e)),
        }
    }

    /// Releases the lease, and moves the cursor to `next` when given. A lease that expired and
    /// was taken by another run is left to it (its cursor wins).
    async fn save(&self, owner: &str, next: Option<&Position>) -> Result<(), MirrorError> {
        let mut set = vec!["#done = :now"];
        let mut remove = vec!["#lu", "#lo"];
        let mut request = self
            .client
            .update_item()
            .table_name(self.table.as_str())
            .set_key(Some(cursor_key()))
            .condition_expression("#lo = :owner")
            .expression_attribute_names("#lu", "leaseUntil")
            .expression_attribute_names("#lo", "leaseOwner")
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .expression_attribute_values(":now", n(epoch_ms(SystemTime::now())));
        match next {
            Some(next) => {
                request = request
                    .expression_attribute_names("#done", "lastCompletedAt")
                    .expression_attribute_names("#c", "cursor")
                    .expression_attribute_names("#o", "offset")
                    .expression_attribute_values(":o", n(next.offset as i64));
                set.push("#o = :o");
                match &next.cursor {
                    Some(cursor) => {
                        set.push("#c = :c");
                        request = request.expression_attribute_values(":c", AttributeValue::S(cursor.clone()));
                    }
                    None => remove.push("#c"),
                }
            }
            None => request = request.expression_attribute_names("#done", "lastFailedAt"),
        }
        let result =
            request.update_expression(format!("SET {} REMOVE {}", set.join(", "), remove.join(", "))).send().await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => {
                tracing::warn!("drift check: the lease expired and another run took it; its cursor stands");
                Ok(())
            }
            Err(e) => Err(MirrorError::dynamo("UpdateItem", e)),
        }
    }
}

/// A customer's headers and tombstone as the mirror holds them.
#[derive(Debug, Default)]
struct CustomerInMirror {
    /// Resource id (`""`: customer-wide) -> the header's snapshot time (`None`: no snapshot,
    /// e.g. swept by a deletion).
    headers: BTreeMap<String, Option<i64>>,
    deleted_at: Option<i64>,
}

impl CustomerInMirror {
    /// The newest snapshot of any resource.
    fn newest(&self) -> Option<i64> {
        self.headers.values().flatten().copied().max()
    }
}

fn cursor_key() -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(CURSOR_PK.to_owned())),
        ("sk".to_owned(), AttributeValue::S(CURSOR_SK.to_owned())),
    ])
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|t| t.parse().ok())
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        Mirrored { snapshot_at, deleted_at }
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
    fn only_throttling_and_outages_are_worth_the_next_run() {
        assert!(DriftError::Listing(ApiError::Unavailable { status: 503 }).is_retryable());
        assert!(!DriftError::Listing(ApiError::Refused { status: 401 }).is_retryable());
        assert!(!DriftError::Cursor(MirrorError::Malformed("x".into())).is_retryable());
    }
}
