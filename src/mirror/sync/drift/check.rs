//! [`DriftCheck`]: one run against the mirror table: the lease and cursor, each customer's
//! headers, the comparisons and their repairs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::SystemTime;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::cursor::Cursor;
use super::{
    CUSTOMERS_IN_FLIGHT, DEADLINE_MARGIN, DriftError, DriftReport, Mirrored, NOT_FOUND_GRACE, Outcome, Position,
    classify, next_position,
};
use crate::config::TableName;
use crate::mirror::{API_MESSAGE_PREFIX, MirrorError, MirrorStore, SnapshotWrite, TOMBSTONE, WriteOutcome};
use crate::mirror::{partition_key, sort_key};
use crate::stigg::api::{CustomerDirectory, EntitlementsState, Fetched};

/// The drift check: Stigg's customers (`directory`) against the mirror table.
pub struct DriftCheck<D: ?Sized> {
    pub(super) directory: Arc<D>,
    pub(super) store: MirrorStore,
    pub(super) client: Client,
    pub(super) table: TableName,
    pub(super) sample: NonZeroUsize,
    /// Deletions (customers and resources Stigg does not know) left in this run.
    pub(super) deletions_left: std::sync::atomic::AtomicU64,
}

/// The most a run deletes: max(3, a tenth of the sample). More customers "not found" in one
/// run is not lost `customer.deleted` events but a wrong answer (a server key of another Stigg
/// environment, an incident): a deletion dated now could not be undone by a backfill, so past
/// this they are counted `not_found` but left alone, with an ERROR line: the NotFound alarm.
pub fn max_deletions(sample: NonZeroUsize) -> u64 {
    (sample.get() as u64 / 10).max(3)
}

impl<D: CustomerDirectory + ?Sized> DriftCheck<D> {
    pub fn new(directory: Arc<D>, client: Client, table: TableName, sample: NonZeroUsize) -> Self {
        let store = MirrorStore::new(client.clone(), table.clone());
        let deletions_left = std::sync::atomic::AtomicU64::new(max_deletions(sample));
        Self { directory, store, client, table, sample, deletions_left }
    }

    /// One run: the next sample of customers from Stigg's listing, then as many from the
    /// mirror's own headers (customers Stigg may have deleted), until `deadline` (less
    /// [`DEADLINE_MARGIN`]).
    pub async fn run(&self, deadline: SystemTime) -> Result<DriftReport, DriftError> {
        self.deletions_left.store(max_deletions(self.sample), std::sync::atomic::Ordering::Relaxed);
        let owner = uuid::Uuid::new_v4().to_string();
        let Some(cursor) = self.lease(&owner, deadline).await.map_err(DriftError::Cursor)? else {
            tracing::info!("another drift check holds the lease: skipped");
            return Ok(DriftReport { skipped: true, ..DriftReport::default() });
        };
        let (report, next) = match self.sample(&cursor, deadline).await {
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

    /// Stigg's page at the cursor (its customers not yet done), then the mirror's next
    /// customers, checked until the deadline.
    async fn sample(&self, cursor: &Cursor, deadline: SystemTime) -> Result<(DriftReport, Cursor), DriftError> {
        let mut report = DriftReport::default();
        let limit = self.sample.get();
        let mut at = cursor.stigg.clone();
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
        let todo: Vec<String> = page.customers.iter().skip(at.offset).cloned().collect();
        let stop_at = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline);
        let done = self.check_all(&todo, stop_at, &mut report).await;
        let stigg = next_position(&at, &page, done);
        if stigg.cursor.is_none() && stigg.offset == 0 && !report.stopped_early {
            report.wrapped = true;
        }
        let mut next = Cursor { stigg, mirror: cursor.mirror.clone() };
        if report.stopped_early {
            return Ok((report, next));
        }
        let seen: HashSet<String> = todo.into_iter().collect();
        match self.mirror_sample(cursor.mirror.clone(), limit, &seen).await {
            Ok((customers, after)) => {
                let done = self.check_all(&customers, stop_at, &mut report).await;
                report.from_mirror = done as u64;
                if done == customers.len() {
                    next.mirror = after;
                }
            }
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "drift check: the mirror's customers not scanned");
                report.count(Outcome::Failed);
            }
        }
        Ok((report, next))
    }

    /// Checks `customers` a few at a time until `stop_at`; how many were checked.
    async fn check_all(&self, customers: &[String], stop_at: SystemTime, report: &mut DriftReport) -> usize {
        let mut done = 0;
        for chunk in customers.chunks(CUSTOMERS_IN_FLIGHT) {
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
        done
    }

    /// Every comparison of one customer: customer-wide, then each resource Stigg scopes
    /// entitlements by and each the mirror holds (a resource Stigg no longer lists may still
    /// hold a stale snapshot).
    pub async fn check_customer(&self, customer: &str) -> DriftReport {
        let mut report = DriftReport { customers: 1, ..DriftReport::default() };
        // Stigg first, the mirror second: a webhook that lands while Stigg answers counts as in
        // sync or ahead, not as lost.
        let customer_wide = match self.directory.entitlements_state(customer, None).await {
            Ok(fetched) => fetched,
            Err(e) => {
                tracing::warn!(customer_id = customer, error = %crate::error_chain(&e), "drift check: Stigg's API gave no answer");
                report.count(Outcome::Failed);
                return report;
            }
        };
        let mirrored = match self.mirrored(customer).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(customer_id = customer, error = %crate::error_chain(&e), "drift check: mirror unreadable");
                report.count(Outcome::Failed);
                return report;
            }
        };
        if customer_wide == Fetched::CustomerNotFound {
            let outcome = classify(
                Mirrored {
                    snapshot_at: mirrored.newest(),
                    deleted_at: mirrored.deleted_at,
                    empty: mirrored.all_empty(),
                },
                &customer_wide,
            );
            let deleted = outcome != Outcome::NotFound || self.delete(customer, mirrored.newest(), &mut report).await;
            report.count(if deleted { outcome } else { Outcome::Failed });
            return report;
        }
        self.compare(customer, None, mirrored.of(None), customer_wide, &mut report).await;

        let listed = match self.directory.resources(customer).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(customer_id = customer, error = %crate::error_chain(&e), "drift check: resources not listed");
                report.count(Outcome::Failed);
                Vec::new()
            }
        };
        let resources: BTreeSet<String> =
            listed.into_iter().chain(mirrored.headers.keys().cloned()).filter(|r| !r.is_empty()).collect();
        let mut answers = Vec::new();
        for resource in resources {
            let answer = self.directory.entitlements_state(customer, Some(&resource)).await;
            answers.push((resource, answer));
        }
        if answers.is_empty() {
            return report;
        }
        // Read again after Stigg's answers, for the same reason as above.
        let mirrored = match self.mirrored(customer).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(customer_id = customer, error = %crate::error_chain(&e), "drift check: mirror unreadable");
                answers.iter().for_each(|_| report.count(Outcome::Failed));
                return report;
            }
        };
        for (resource, answer) in answers {
            match answer {
                Ok(fetched) => {
                    self.compare(customer, Some(&resource), mirrored.of(Some(&resource)), fetched, &mut report).await
                }
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
                // A resource Stigg no longer knows while the customer is known.
                let emptied = self.empty(customer, resource, mirrored.snapshot_at, report).await;
                report.count(if emptied { outcome } else { Outcome::Failed });
                return;
            }
            (Fetched::State(state), Outcome::InSync) => {
                // Stigg confirmed the snapshot: a reader's maximum age counts from now.
                let verified = match SnapshotWrite::from_state(state) {
                    Ok(snapshot) => self.store.mark_verified(&snapshot).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = verified {
                    tracing::warn!(customer_id = customer, resource_id = resource, error = %crate::error_chain(&e),
                        "drift check: verifiedAt not stamped");
                }
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
        // Not deleted, but counted not_found: the NotFound alarm says someone must look.
        if !self.may_delete(customer, None) {
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

    /// Takes one of the run's deletions; `false` (with an ERROR line) when none is left.
    fn may_delete(&self, customer: &str, resource: Option<&str>) -> bool {
        use std::sync::atomic::Ordering;
        let took = self.deletions_left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
        if !took {
            tracing::error!(
                customer_id = customer,
                resource_id = resource,
                limit = max_deletions(self.sample),
                "drift check: more customers Stigg does not know than a run deletes (a server key of another environment?): not deleted"
            );
        }
        took
    }

    /// A resource Stigg does not know (its subscription gone): an empty snapshot at the time
    /// of the check takes its entitlements out, unless its snapshot is younger than
    /// [`NOT_FOUND_GRACE`]. `false`: DynamoDB failed.
    async fn empty(&self, customer: &str, resource: Option<&str>, at: Option<i64>, report: &mut DriftReport) -> bool {
        let now = SystemTime::now();
        let now_ms = epoch_ms(now);
        if at.is_some_and(|at| at > now_ms - NOT_FOUND_GRACE.as_millis() as i64) {
            tracing::warn!(
                customer_id = customer,
                resource_id = resource,
                mirror_at = at,
                "drift check: Stigg does not know a resource mirrored moments ago; left for a later check"
            );
            return true;
        }
        if !self.may_delete(customer, resource) {
            return true;
        }
        let empty = SnapshotWrite {
            customer: customer.to_owned(),
            resource: resource.map(str::to_owned),
            at_ms: now_ms,
            at_iso: crate::metrics::rfc3339(now),
            message_id: format!("{API_MESSAGE_PREFIX}not-found:{now_ms}"),
            features: BTreeMap::new(),
            usage_at_ms: None,
        };
        match self.store.write_snapshot(&empty).await {
            Ok(outcome) => {
                tracing::warn!(
                    customer_id = customer,
                    resource_id = resource,
                    mirror_at = at,
                    outcome = outcome.as_str(),
                    "drift check: Stigg does not know this resource: its entitlements taken out"
                );
                if outcome == WriteOutcome::Written {
                    report.repaired += 1;
                }
                true
            }
            Err(e) => {
                tracing::warn!(customer_id = customer, resource_id = resource, error = %crate::error_chain(&e),
                    "drift check: emptying the resource failed");
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
                .projection_expression("#sk, #r, #t, #d, #f")
                .expression_attribute_names("#f", "featureCount")
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
                    let header =
                        Header { at: number(item, "entitlementsUpdatedAt"), features: number(item, "featureCount") };
                    found.headers.insert(resource, header);
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(found);
            }
        }
    }
}

/// A customer's headers and tombstone as the mirror holds them.
#[derive(Debug, Default)]
struct CustomerInMirror {
    /// Resource id (`""`: customer-wide) -> its header.
    headers: BTreeMap<String, Header>,
    deleted_at: Option<i64>,
}

impl CustomerInMirror {
    /// What the mirror holds for one resource (`None`: customer-wide).
    fn of(&self, resource: Option<&str>) -> Mirrored {
        let header = self.headers.get(resource.unwrap_or_default());
        Mirrored {
            snapshot_at: header.and_then(|h| h.at),
            deleted_at: self.deleted_at,
            empty: header.is_some_and(|h| h.features == Some(0)),
        }
    }

    /// The newest snapshot of any resource.
    fn newest(&self) -> Option<i64> {
        self.headers.values().filter_map(|h| h.at).max()
    }

    /// No snapshot of the customer holds a feature.
    fn all_empty(&self) -> bool {
        self.headers.values().filter(|h| h.at.is_some()).all(|h| h.features == Some(0))
    }
}

/// One header: its snapshot's time (`None`: no snapshot, e.g. swept by a deletion) and
/// `featureCount`.
#[derive(Debug, Clone, Copy)]
struct Header {
    at: Option<i64>,
    features: Option<i64>,
}

pub(super) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|t| t.parse().ok())
}

pub(super) fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

pub(super) fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
