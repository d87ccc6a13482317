//! The mirror's backfill against moto and the Stigg API stand-in: every customer and resource
//! written, resumed after an interruption without redoing finished customers, slowed (not
//! failed) by 429s, never replacing a newer webhook state, and a finished run says so.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::stigg_stand_ins::StiggApiStandIn;
use common::stigg_stand_ins::api::ENTITLEMENTS_STATE;
use common::{admin_config_for, create_mirror_table, ddb_endpoint, sdk_config_for};
use serde_json::json;
use stigg_webhooks::config::{ApiKey, TableName};
use stigg_webhooks::edge::ApiKeys;
use stigg_webhooks::mirror::sync::backfill::{Backfill, BackfillOptions, Ending, Summary};
use stigg_webhooks::mirror::{API_MESSAGE_PREFIX, Mirror, MirrorStore, SnapshotWrite, epoch_millis};
use stigg_webhooks::stigg::api::{
    ApiError, ApiSettings, CustomerDirectory, CustomerPage, EntitlementsSource, Fetched, RetryPolicy, StiggApi,
};

const KEY: &str = "server-backfill-test";
const FOREVER: Duration = Duration::from_secs(600);

struct Setup {
    stand_in: StiggApiStandIn,
    api: Arc<StiggApi>,
    ddb: aws_sdk_dynamodb::Client,
    table: TableName,
}

async fn setup() -> Setup {
    let stand_in = StiggApiStandIn::start(KEY).await;
    stand_in.seed_file(&StiggApiStandIn::fixture()).unwrap();
    let retry = RetryPolicy {
        attempts: 20,
        budget: Duration::from_secs(60),
        base: Duration::from_millis(50),
        cap: Duration::from_secs(1),
    };
    let settings = ApiSettings { retry, ..ApiSettings::patient(&stand_in.url()) };
    let api = Arc::new(StiggApi::new(Arc::new(ApiKeys::fixed(ApiKey::parse(KEY).unwrap())), settings));
    let table = create_mirror_table(&aws_sdk_dynamodb::Client::new(&admin_config_for(&ddb_endpoint()).await)).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config_for(&ddb_endpoint()).await);
    Setup { stand_in, api, ddb, table }
}

impl Setup {
    fn backfill<D: CustomerDirectory>(&self, directory: Arc<D>, options: BackfillOptions) -> Backfill<D> {
        Backfill::new(directory, self.ddb.clone(), self.table.clone(), options)
    }

    fn mirror(&self) -> Mirror {
        Mirror::new(self.ddb.clone(), self.table.clone()).consistent(true)
    }

    /// Every scope Stigg has is in the mirror, at the time Stigg answered (or, for those in
    /// `newer`, still at the mirror's own newer time).
    async fn assert_mirrored(&self, newer: &BTreeMap<String, i64>) {
        let mirror = self.mirror();
        for (customer, resource) in self.stand_in.scopes() {
            let snapshot = mirror.entitlements(&customer, resource.as_deref()).await.unwrap();
            let snapshot = snapshot.unwrap_or_else(|| panic!("{customer} {resource:?} is mirrored"));
            let state = self.stand_in.state_of(&customer, resource.as_deref()).unwrap();
            if let Some(at) = newer.get(&customer) {
                assert_eq!(snapshot.entitlements_updated_at, *at, "{customer}: the newer state stays");
                continue;
            }
            let at = epoch_millis(state["entitlementsUpdatedAt"].as_str().unwrap()).unwrap();
            assert_eq!(snapshot.entitlements_updated_at, at, "{customer} {resource:?}");
            assert_eq!(snapshot.message_id, Some(format!("{API_MESSAGE_PREFIX}{at}")));
            let features: Vec<&str> = state["entitlements"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["feature"]["refId"].as_str().unwrap())
                .collect();
            let mut expected: Vec<String> = features.iter().map(|f| f.to_string()).collect();
            expected.sort();
            assert_eq!(snapshot.features.keys().cloned().collect::<Vec<_>>(), expected, "{customer} {resource:?}");
        }
    }
}

fn options(in_flight: usize, checkpoint_every: usize) -> BackfillOptions {
    BackfillOptions { page_size: 5, in_flight, checkpoint_every, restart: false }
}

async fn run<D: CustomerDirectory>(backfill: &Backfill<D>, until: Instant) -> (Summary, Vec<String>) {
    let mut lines = vec![];
    let summary = backfill.run(until, |p| lines.push(p.to_string())).await.unwrap();
    (summary, lines)
}

#[tokio::test]
async fn every_customer_and_resource_is_written_and_a_finished_run_says_so() {
    let s = setup().await;
    let backfill = s.backfill(s.api.clone(), options(4, 5));
    let (summary, lines) = run(&backfill, Instant::now() + FOREVER).await;
    assert_eq!(summary.ending, Ending::Finished);
    let scopes = s.stand_in.scopes().len() as u64;
    let c = summary.progress.counts;
    assert_eq!((c.customers, c.written, c.not_found, c.failed), (24, scopes, 0, 0), "{c:?}");
    assert_eq!(summary.progress.total, Some(24));
    assert!(summary.finished_at_ms.is_some());
    assert!(lines.len() >= 24 / 5, "a progress line per checkpoint: {lines:?}");
    assert!(lines.last().unwrap().starts_with("24/24 customers (100%)"), "{lines:?}");
    s.assert_mirrored(&BTreeMap::new()).await;
    assert_eq!(s.stand_in.calls(ENTITLEMENTS_STATE) as u64, scopes, "one fetch per state");

    // Again: it says it is finished and asks Stigg nothing.
    s.stand_in.reset_counters();
    let (again, _) = run(&backfill, Instant::now() + FOREVER).await;
    assert_eq!(again.ending, Ending::AlreadyFinished);
    assert_eq!(again.progress.counts, c);
    assert_eq!(s.stand_in.calls(ENTITLEMENTS_STATE), 0);

    // `restart` starts over; every state is already there (the same state is the same write).
    let restarted = s.backfill(s.api.clone(), BackfillOptions { restart: true, ..options(4, 5) });
    let (over, _) = run(&restarted, Instant::now() + FOREVER).await;
    assert_eq!(over.ending, Ending::Finished);
    assert_eq!(over.progress.counts.customers, 24);
    assert_eq!(over.progress.counts.states(), scopes);
    assert!(over.started_at_ms > summary.started_at_ms);
}

#[tokio::test]
async fn an_interrupted_backfill_resumes_without_redoing_finished_customers() {
    let s = setup().await;
    s.stand_in.set_delay(Duration::from_millis(20));
    let (in_flight, every) = (3, 2);
    let backfill = Arc::new(s.backfill(s.api.clone(), options(in_flight, every)));
    let task = {
        let backfill = backfill.clone();
        tokio::spawn(async move { backfill.run(Instant::now() + FOREVER, |_| {}).await })
    };
    // Killed once 10 customers have had their customer-wide state served.
    for _ in 0..3000 {
        if s.stand_in.served_customer_wide().len() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled(), "stopped mid-way");
    let first_run = s.stand_in.served_customer_wide();
    assert!(first_run.len() >= 10 && first_run.len() < 24, "{first_run:?}");
    let checkpoint = backfill.checkpoint().await.unwrap().expect("saved while running");
    assert!(!checkpoint.is_finished());
    assert!(checkpoint.counts.customers >= 4, "{checkpoint:?}");

    s.stand_in.set_delay(Duration::ZERO);
    let (summary, _) = run(&*backfill, Instant::now() + FOREVER).await;
    assert_eq!(summary.ending, Ending::Finished);
    let served = s.stand_in.served_customer_wide();
    assert_eq!(served.len(), 24, "every customer done");
    let redone: Vec<_> = served.iter().filter(|(_, n)| **n > 1).map(|(c, _)| c).collect();
    assert!(
        redone.len() < in_flight + every,
        "only the customers in flight or not yet checkpointed are redone: {redone:?}"
    );
    for (customer, n) in &served {
        assert!(*n <= 2, "{customer} fetched {n} times");
    }
    // The counts are exact: customers done before the kill were counted once.
    let c = summary.progress.counts;
    assert_eq!((c.customers, c.states(), c.failed), (24, s.stand_in.scopes().len() as u64, 0), "{c:?}");
    s.assert_mirrored(&BTreeMap::new()).await;
}

#[tokio::test]
async fn a_time_budget_stops_the_run_cleanly_and_the_next_run_resumes() {
    let s = setup().await;
    s.stand_in.set_delay(Duration::from_millis(40));
    let backfill = s.backfill(s.api.clone(), options(2, 1));
    let (stopped, lines) = run(&backfill, Instant::now() + Duration::from_millis(1200)).await;
    assert_eq!(stopped.ending, Ending::OutOfTime);
    let done = stopped.progress.counts.customers;
    assert!(done > 0 && done < 24, "{stopped:?}");
    assert!(stopped.finished_at_ms.is_none());
    let last = lines.last().unwrap();
    assert!(last.starts_with(&format!("{done}/24 customers")), "the last line says where it stopped: {last}");
    assert_eq!(backfill.checkpoint().await.unwrap().unwrap().counts, stopped.progress.counts);

    s.stand_in.set_delay(Duration::ZERO);
    let (resumed, _) = run(&backfill, Instant::now() + FOREVER).await;
    assert_eq!(resumed.ending, Ending::Finished);
    assert_eq!(resumed.progress.this_run, 24 - done, "the first run's customers are not done again");
    assert_eq!(resumed.progress.counts.customers, 24);
    assert_eq!(resumed.started_at_ms, stopped.started_at_ms, "the same backfill, resumed");
}

#[tokio::test]
async fn a_429_storm_slows_the_backfill_down_without_failures() {
    let s = setup().await;
    // Far below what the client allows itself (1,000 per minute): the stand-in refuses most.
    s.stand_in.set_limit(ENTITLEMENTS_STATE, 6, Duration::from_millis(500));
    let backfill = s.backfill(s.api.clone(), options(6, 5));
    let (summary, _) = run(&backfill, Instant::now() + FOREVER).await;
    assert_eq!(summary.ending, Ending::Finished);
    let c = summary.progress.counts;
    assert_eq!((c.customers, c.written, c.failed), (24, s.stand_in.scopes().len() as u64, 0), "{c:?}");
    assert!(s.stand_in.throttled() > 0, "the stand-in answered 429s");
    assert_eq!(s.api.stats().rate_limited as usize, s.stand_in.throttled());
    assert!(s.api.stats().retries as usize >= s.stand_in.throttled(), "every 429 was retried");
    s.assert_mirrored(&BTreeMap::new()).await;
}

#[tokio::test]
async fn newer_webhook_states_and_deletions_are_kept_and_counted() {
    let s = setup().await;
    let store = MirrorStore::new(s.ddb.clone(), s.table.clone());
    let state_at = |customer: &str| {
        epoch_millis(s.stand_in.state_of(customer, None).unwrap()["entitlementsUpdatedAt"].as_str().unwrap()).unwrap()
    };
    let webhook = |customer: &str, at_ms: i64| SnapshotWrite {
        customer: customer.into(),
        resource: None,
        at_ms,
        at_iso: stigg_webhooks::metrics::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(at_ms as u64)),
        message_id: format!("webhook-{customer}"),
        features: BTreeMap::from([(
            "feature-from-webhook".to_owned(),
            json!({"feature": {"id": "feature-from-webhook", "featureType": "BOOLEAN"}}),
        )]),
        usage_at_ms: None,
    };
    // Globex: a webhook newer than Stigg's answer got there first. Initech: an older one (Stigg
    // is newer: the backfill replaces it). Acme: deleted after Stigg's state.
    let newer_at = state_at("customer-globex") + 60_000;
    store.write_snapshot(&webhook("customer-globex", newer_at)).await.unwrap();
    store.write_snapshot(&webhook("customer-initech", state_at("customer-initech") - 60_000)).await.unwrap();
    let deleted_at = state_at("customer-acme-corp") + 1_000;
    let iso = stigg_webhooks::metrics::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(deleted_at as u64));
    store.delete_customer("customer-acme-corp", deleted_at, &iso, "webhook-deleted").await.unwrap();

    let backfill = s.backfill(s.api.clone(), options(4, 5));
    let (summary, _) = run(&backfill, Instant::now() + FOREVER).await;
    let c = summary.progress.counts;
    assert_eq!((c.already_newer, c.after_deletion, c.failed), (1, 1, 0), "{c:?}");
    assert_eq!(c.written, s.stand_in.scopes().len() as u64 - 2);

    let mirror = s.mirror();
    let globex = mirror.entitlements("customer-globex", None).await.unwrap().unwrap();
    assert_eq!(globex.message_id.as_deref(), Some("webhook-customer-globex"));
    assert_eq!(globex.features.keys().collect::<Vec<_>>(), ["feature-from-webhook"]);
    let initech = mirror.entitlements("customer-initech", None).await.unwrap().unwrap();
    assert_eq!(initech.entitlements_updated_at, state_at("customer-initech"));
    assert!(!initech.features.contains_key("feature-from-webhook"), "the older webhook's feature is gone");
    assert!(mirror.entitlements("customer-acme-corp", None).await.unwrap().is_none(), "still deleted");
}

/// The stand-in's listing with two more customers: one Stigg no longer knows, one whose state
/// Stigg refuses to give (a 400 is never retried).
struct WithStrangers(Arc<StiggApi>);

#[async_trait]
impl EntitlementsSource for WithStrangers {
    async fn entitlements_state(&self, customer: &str, resource: Option<&str>) -> Result<Fetched, ApiError> {
        if customer == "customer-refused" {
            return Err(ApiError::Rejected { status: 400, detail: "bad request".into() });
        }
        self.0.entitlements_state(customer, resource).await
    }
}

#[async_trait]
impl CustomerDirectory for WithStrangers {
    async fn customers(&self, cursor: Option<&str>, limit: usize) -> Result<CustomerPage, ApiError> {
        let mut page = self.0.customers(cursor, limit).await?;
        if page.next.is_none() {
            page.customers.extend(["customer-gone".to_owned(), "customer-refused".to_owned()]);
        }
        Ok(page)
    }

    async fn resources(&self, customer: &str) -> Result<Vec<String>, ApiError> {
        self.0.resources(customer).await
    }
}

#[tokio::test]
async fn unknown_and_failing_customers_are_counted_and_the_run_goes_on() {
    let s = setup().await;
    let backfill = s.backfill(Arc::new(WithStrangers(s.api.clone())), options(4, 5));
    let (summary, _) = run(&backfill, Instant::now() + FOREVER).await;
    assert_eq!(summary.ending, Ending::Finished);
    let c = summary.progress.counts;
    assert_eq!((c.customers, c.not_found, c.failed), (26, 1, 1), "{c:?}");
    assert_eq!(summary.failed_sample, ["customer-refused"]);
    s.assert_mirrored(&BTreeMap::new()).await;
}

/// Stigg's API with `entitlementsState` down (an outage longer than the client's retries).
struct StatesDown(Arc<StiggApi>);

#[async_trait]
impl EntitlementsSource for StatesDown {
    async fn entitlements_state(&self, _: &str, _: Option<&str>) -> Result<Fetched, ApiError> {
        Err(ApiError::Unavailable { status: 503 })
    }
}

#[async_trait]
impl CustomerDirectory for StatesDown {
    async fn customers(&self, cursor: Option<&str>, limit: usize) -> Result<CustomerPage, ApiError> {
        self.0.customers(cursor, limit).await
    }

    async fn resources(&self, customer: &str) -> Result<Vec<String>, ApiError> {
        self.0.resources(customer).await
    }
}

#[tokio::test]
async fn when_every_customer_fails_the_run_stops_before_them_and_the_next_run_does_them() {
    let s = setup().await;
    let backfill = s.backfill(Arc::new(StatesDown(s.api.clone())), options(2, 1));
    let e = backfill.run(Instant::now() + FOREVER, |_| {}).await.unwrap_err();
    assert!(
        matches!(e, stigg_webhooks::mirror::sync::backfill::BackfillError::FailingEveryCustomer { in_a_row, .. } if in_a_row >= 20),
        "{e}"
    );
    assert!(e.is_retryable());
    let cp = backfill.checkpoint().await.unwrap().expect("saved");
    assert_eq!((cp.counts.customers, cp.counts.failed), (0, 0), "nothing passed as failed: {cp:?}");
    assert!(!cp.is_finished());
    // Stigg answers again: the next run does every customer.
    let (summary, _) = run(&s.backfill(s.api.clone(), options(4, 5)), Instant::now() + FOREVER).await;
    assert_eq!(summary.ending, Ending::Finished);
    assert_eq!(summary.progress.counts.failed, 0);
    s.assert_mirrored(&BTreeMap::new()).await;
}
