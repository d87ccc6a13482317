//! Reading through to Stigg's API when the mirror has no snapshot (a customer the webhooks have
//! not touched since the mirror was turned on) or when the snapshot is older than the reader
//! accepts.
//!
//! Stigg's own persistent cache (Node.js SDK and Sidecar) falls back to the API on a miss
//! (<https://docs.stigg.io/api-and-sdks/integration/backend/sidecar>); this one also writes what
//! it fetched through, with the conditional writes of a webhook snapshot: a fetched state never
//! overwrites a newer one and never undoes a deletion newer than itself
//! ([`super::MirrorStore::write_snapshot`]).
//!
//! - One fetch per customer and resource at a time in a process: concurrent misses join it.
//! - `CustomerNotFound` is remembered for [`ReadThrough::negative_ttl`]: a flood of checks for
//!   an unknown customer is one API call per TTL, not one per check.
//! - A failed fetch (429, 5xx, a timeout) is an error for the caller, never an answer; with a
//!   maximum age, the stale snapshot is answered instead when [`ReadThrough::serve_stale`] allows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::access::{FeatureEntitlement, Snapshot};
use super::store::{MirrorError, MirrorStore, SnapshotWrite, WriteOutcome};
use crate::stigg::api::{EntitlementsSource, Fetched};

/// What a read does when the mirror holds no snapshot for the customer (or resource).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMiss {
    /// Fetch it from Stigg's API, write it through, answer from it.
    #[default]
    Fetch,
    /// Answer "customer not found" (no access) without calling Stigg: the mirror as it was.
    Deny,
    /// Fail with [`MirrorError::Miss`]: the caller decides (its own fallback, a 503).
    Error,
}

/// Entries an [`Expiring`] keeps at most (an unknown customer, a refreshed key): a flood of
/// distinct ids beyond it still goes through the API client's rate limiter, it only stops
/// being remembered.
const MAX_ENTRIES: usize = 10_000;
/// A stale snapshot is refreshed at most this often per key, whatever the refresh's outcome: a
/// failing API (or one whose answer the mirror cannot stamp as confirmed) is not asked again on
/// every read.
const REFRESH_COOLDOWN: Duration = Duration::from_secs(10);

type Key = (String, Option<String>);
/// A fetch's result, shared by every read that joined it.
type Filled = Result<Option<Arc<Snapshot>>, Arc<MirrorError>>;

/// Counters of what the read-through did in this process (tests, benches, logs).
#[derive(Debug, Default)]
pub struct ReadThroughStats {
    /// Calls to Stigg's API.
    pub fetches: AtomicU64,
    /// Reads that joined a fetch already in flight instead of starting one.
    pub joined: AtomicU64,
    /// Reads answered "not found" from a negative entry.
    pub negative_hits: AtomicU64,
    /// Background refreshes of a snapshot older than the maximum age.
    pub refreshes: AtomicU64,
    /// Answers from a snapshot older than the maximum age, given while its refresh ran.
    pub served_stale: AtomicU64,
}

/// The read-through of a [`super::Mirror`] (see the module docs).
pub struct ReadThrough {
    source: Arc<dyn EntitlementsSource>,
    store: MirrorStore,
    on_miss: OnMiss,
    max_age: Option<Duration>,
    serve_stale: bool,
    negative_ttl: Duration,
    flights: Mutex<HashMap<Key, Shared<BoxFuture<'static, Filled>>>>,
    /// Keys Stigg answered `CustomerNotFound` for, until their TTL.
    negative: Expiring,
    /// Keys refreshed in the background, until their cooldown ends.
    refreshed: Expiring,
    stats: ReadThroughStats,
}

impl std::fmt::Debug for ReadThrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadThrough")
            .field("on_miss", &self.on_miss)
            .field("max_age", &self.max_age)
            .field("serve_stale", &self.serve_stale)
            .field("negative_ttl", &self.negative_ttl)
            .finish_non_exhaustive()
    }
}

impl ReadThrough {
    /// Fetch on miss, no maximum age, stale answers allowed, 60 s negative entries.
    pub fn new(source: Arc<dyn EntitlementsSource>, store: MirrorStore) -> Self {
        Self {
            source,
            store,
            on_miss: OnMiss::Fetch,
            max_age: None,
            serve_stale: true,
            negative_ttl: Duration::from_secs(60),
            flights: Mutex::default(),
            negative: Expiring::default(),
            refreshed: Expiring::default(),
            stats: ReadThroughStats::default(),
        }
    }

    pub fn on_miss(mut self, policy: OnMiss) -> Self {
        self.on_miss = policy;
        self
    }

    /// A snapshot neither written nor confirmed by Stigg's API for longer than this is
    /// refreshed: in the background of the answer (which comes from the snapshot at hand).
    pub fn max_age(mut self, age: Option<Duration>) -> Self {
        self.max_age = age;
        self
    }

    /// Whether a read whose refresh fails answers from the stale snapshot (default) or fails.
    pub fn serve_stale(mut self, on: bool) -> Self {
        self.serve_stale = on;
        self
    }

    /// How long `CustomerNotFound` is remembered. A customer created in Stigg meanwhile is
    /// found at the latest this long after, or at once by its first webhook.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    pub fn policy(&self) -> OnMiss {
        self.on_miss
    }

    pub fn max_age_setting(&self) -> Option<Duration> {
        self.max_age
    }

    pub fn serves_stale(&self) -> bool {
        self.serve_stale
    }

    pub fn stats(&self) -> &ReadThroughStats {
        &self.stats
    }

    /// Whether a snapshot last written or confirmed at `fresh_at` (epoch ms) is too old.
    pub fn is_stale(&self, fresh_at: Option<i64>, now: SystemTime) -> bool {
        let Some(max) = self.max_age else { return false };
        let now_ms = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        fresh_at.is_none_or(|at| now_ms.saturating_sub(at) > max.as_millis() as i64)
    }

    /// Stigg's current state of the customer (or resource), written through; `None` when Stigg
    /// does not know the customer or the mirror holds a deletion newer than Stigg's state.
    /// Concurrent calls for the same key share one fetch.
    pub async fn fill(
        self: &Arc<Self>,
        customer: &str,
        resource: Option<&str>,
    ) -> Result<Option<Arc<Snapshot>>, MirrorError> {
        let key: Key = (customer.to_owned(), resource.map(str::to_owned));
        if self.negative.contains(&key) {
            self.stats.negative_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        let flight = {
            let mut flights = self.flights.lock().expect("flights lock");
            if let Some(flight) = flights.get(&key) {
                self.stats.joined.fetch_add(1, Ordering::Relaxed);
                flight.clone()
            } else {
                let this = Arc::clone(self);
                let k = key.clone();
                let flight = async move {
                    let result = this.fetch(&k).await.map_err(Arc::new);
                    this.flights.lock().expect("flights lock").remove(&k);
                    result
                }
                .boxed()
                .shared();
                flights.insert(key, flight.clone());
                flight
            }
        };
        flight.await.map_err(MirrorError::ReadThrough)
    }

    /// Refreshes in the background: the caller answers from what it has. A refresh already in
    /// flight for the key is not started twice.
    pub fn refresh_in_background(self: &Arc<Self>, customer: &str, resource: Option<&str>) {
        let key: Key = (customer.to_owned(), resource.map(str::to_owned));
        // Checked and remembered at once: of two reads at the same moment, one refreshes.
        if !self.refreshed.insert_new(key, REFRESH_COOLDOWN) {
            return;
        }
        self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        let this = Arc::clone(self);
        let (customer, resource) = (customer.to_owned(), resource.map(str::to_owned));
        tokio::spawn(async move {
            if let Err(e) = this.fill(&customer, resource.as_deref()).await {
                tracing::warn!(customer, resource, error = %crate::error_chain(&e), "refreshing a stale mirror snapshot failed");
            }
        });
    }

    pub(super) fn count_served_stale(&self) {
        self.stats.served_stale.fetch_add(1, Ordering::Relaxed);
    }

    /// One API call and its write-through.
    async fn fetch(&self, key: &Key) -> Result<Option<Arc<Snapshot>>, MirrorError> {
        let (customer, resource) = (key.0.as_str(), key.1.as_deref());
        self.stats.fetches.fetch_add(1, Ordering::Relaxed);
        let state = match self.source.entitlements_state(customer, resource).await.map_err(MirrorError::Stigg)? {
            Fetched::State(state) => state,
            Fetched::CustomerNotFound => {
                tracing::info!(customer, resource, "Stigg does not know this customer: remembered as not found");
                self.negative.insert(key.clone(), self.negative_ttl);
                return Ok(None);
            }
        };
        let write = SnapshotWrite::from_state(&state)?;
        let outcome = match self.store.write_snapshot(&write).await {
            Ok(outcome) => outcome,
            // Stigg answered: that answer stands even when the mirror cannot keep it (throttled,
            // a role without the mirror's write actions). The next miss asks Stigg again.
            Err(e) => {
                tracing::error!(customer, resource, error = %crate::error_chain(&e), "read-through: Stigg's state could not be written to the mirror; answered from it");
                return Ok(Some(Arc::new(snapshot_of(&write))));
            }
        };
        tracing::info!(
            customer,
            resource,
            outcome = outcome.as_str(),
            features = write.features.len(),
            "read through to Stigg's API"
        );
        match outcome {
            WriteOutcome::Written => Ok(Some(Arc::new(snapshot_of(&write)))),
            // The mirror holds the same state or a newer one (a webhook got there first): that
            // one is the answer; it is confirmed fresh as of now when it is Stigg's state itself.
            WriteOutcome::Stale => {
                self.store.mark_verified(&write).await?;
                let table = (self.store.client(), self.store.table());
                Ok(super::reader::read_entitlements(table.0, table.1, customer, resource, true).await?.map(Arc::new))
            }
            // Deleted after Stigg's state was true: the deletion stands.
            WriteOutcome::AfterDeletion => {
                self.negative.insert(key.clone(), self.negative_ttl);
                Ok(None)
            }
            WriteOutcome::UsageOnly | WriteOutcome::Deleted(_) => {
                unreachable!("write_snapshot answers Written, Stale or AfterDeletion")
            }
        }
    }
}

/// Keys remembered for a while, at most [`MAX_ENTRIES`] (expired ones make room first).
#[derive(Default)]
struct Expiring(Mutex<HashMap<Key, Instant>>);

impl Expiring {
    /// Whether `key` is remembered and not yet expired.
    fn contains(&self, key: &Key) -> bool {
        let mut map = self.0.lock().expect("expiring lock");
        match map.get(key) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    /// Remembers `key` for `ttl` from now (unless full of live entries).
    fn insert(&self, key: Key, ttl: Duration) {
        self.remember(key, ttl, true);
    }

    /// [`Self::insert`] if `key` is not remembered yet; `false` (nothing changed) when it is.
    fn insert_new(&self, key: Key, ttl: Duration) -> bool {
        self.remember(key, ttl, false)
    }

    fn remember(&self, key: Key, ttl: Duration, renew: bool) -> bool {
        let mut map = self.0.lock().expect("expiring lock");
        let now = Instant::now();
        if !renew && map.get(&key).is_some_and(|until| *until > now) {
            return false;
        }
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, until| *until > now);
        }
        if map.len() < MAX_ENTRIES {
            map.insert(key, now + ttl);
        }
        true
    }
}

/// The snapshot a write put in the mirror, as a read would answer it.
fn snapshot_of(write: &SnapshotWrite) -> Snapshot {
    Snapshot {
        customer_id: write.customer.clone(),
        resource_id: write.resource.clone(),
        entitlements_updated_at: write.at_ms,
        message_id: Some(write.message_id.clone()),
        features: write.features.iter().map(|(id, e)| (id.clone(), FeatureEntitlement::from_json(id, e))).collect(),
    }
}
