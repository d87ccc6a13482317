//! The mirror's read-through against the real SDK and moto: a miss fetches Stigg's state once
//! however many checks wait for it, writes it through with the webhook's ordering (an older
//! fetched state never beats a newer webhook snapshot, in either order; a stale answer never
//! undoes a deletion), remembers `CustomerNotFound`, and turns Stigg's failures into typed
//! errors, never into answers.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use serde_json::{Value, json};
use stigg_webhooks::event::StiggEvent;
use stigg_webhooks::handler::Handler;
use stigg_webhooks::mirror::{DenyReason, Mirror, MirrorError, MirrorHandler, MirrorStore, OnMiss, ReadThrough};
use stigg_webhooks::stigg::api::{ApiError, EntitlementsSource, EntitlementsState, Fetched};

const T0: i64 = 1_790_000_000_000;

fn iso(ms: i64) -> String {
    stigg_webhooks::metrics::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
}

fn entitlement(feature: &str, limit: f64, usage: f64) -> Value {
    json!({"feature": {"id": feature, "featureType": "NUMBER", "meterType": "INCREMENTAL"},
        "usageLimit": limit, "hasUnlimitedUsage": false, "hasSoftLimit": false, "currentUsage": usage})
}

/// What the fake Stigg answers next, and how.
#[derive(Clone)]
enum Answer {
    State { at: i64, limit: f64 },
    NotFound,
    Fail(u16),
}

/// Stigg's API as the read-through sees it: counts calls, answers after a delay.
struct FakeStigg {
    answers: Mutex<HashMap<String, Answer>>,
    calls: AtomicUsize,
    delay: Duration,
}

impl FakeStigg {
    fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self { answers: Mutex::default(), calls: AtomicUsize::new(0), delay })
    }

    fn set(&self, customer: &str, answer: Answer) {
        self.answers.lock().unwrap().insert(customer.to_owned(), answer);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EntitlementsSource for FakeStigg {
    async fn entitlements_state(&self, customer: &str, resource: Option<&str>) -> Result<Fetched, ApiError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let answer = self.answers.lock().unwrap().get(customer).cloned().unwrap_or(Answer::NotFound);
        match answer {
            Answer::State { at, limit } => Ok(Fetched::State(EntitlementsState {
                customer: customer.to_owned(),
                resource: resource.map(str::to_owned),
                at_ms: at,
                at_iso: iso(at),
                entitlements: vec![entitlement("api-calls", limit, 1.0)],
                access_denied_reason: None,
            })),
            Answer::NotFound => Ok(Fetched::CustomerNotFound),
            Answer::Fail(429) => Err(ApiError::RateLimited { retry_after: Some(Duration::from_secs(1)) }),
            Answer::Fail(status) => Err(ApiError::Unavailable { status }),
        }
    }
}

struct App {
    ddb: aws_sdk_dynamodb::Client,
    table: stigg_webhooks::config::TableName,
    stigg: Arc<FakeStigg>,
}

impl App {
    async fn spawn(delay: Duration) -> Self {
        let ddb = aws_sdk_dynamodb::Client::new(&sdk_config().await);
        let table = create_mirror_table(&ddb).await;
        Self { ddb, table, stigg: FakeStigg::new(delay) }
    }

    fn store(&self) -> MirrorStore {
        MirrorStore::new(self.ddb.clone(), self.table.clone())
    }

    fn read_through(&self) -> ReadThrough {
        ReadThrough::new(self.stigg.clone(), self.store())
    }

    fn mirror(&self, read_through: ReadThrough) -> Mirror {
        Mirror::new(self.ddb.clone(), self.table.clone()).consistent(true).read_through(read_through)
    }

    /// An `entitlements.updated` webhook for `customer` at `at`, through the processor's handler.
    async fn webhook(&self, customer: &str, at: i64, limit: f64) {
        let body = json!({"type": "entitlements.updated", "messageId": format!("hook-{customer}-{at}"),
            "timestamp": iso(at), "customer": {"id": customer}, "resource": null,
            "entitlements": [entitlement("api-calls", limit, 1.0)], "entitlementsUpdatedAt": iso(at)})
        .to_string();
        let event = StiggEvent::parse(&body).unwrap();
        MirrorHandler::new(self.store()).handle(&event).await.unwrap();
    }

    async fn delete(&self, customer: &str, at: i64) {
        let body = json!({"type": "customer.deleted", "messageId": format!("del-{customer}-{at}"), "timestamp": iso(at), "id": customer})
            .to_string();
        let event = StiggEvent::parse(&body).unwrap();
        MirrorHandler::new(self.store()).handle(&event).await.unwrap();
    }
}

#[tokio::test]
async fn a_miss_under_twenty_concurrent_checks_reads_through_once_and_all_answer_from_it() {
    let app = App::spawn(Duration::from_millis(300)).await;
    app.stigg.set("c-new", Answer::State { at: T0, limit: 50.0 });
    let mirror = app.mirror(app.read_through());
    let checks = (0..20).map(|_| mirror.check("c-new", None, "api-calls", 1.0));
    let answers = futures::future::join_all(checks).await;
    for a in answers {
        let a = a.unwrap();
        assert!(a.has_access, "{a:?}");
        assert_eq!(a.usage_limit, Some(50.0));
    }
    assert_eq!(app.stigg.calls(), 1, "one fetch for twenty concurrent misses");
    let stats = mirror.read_through_stats().unwrap();
    assert_eq!(stats.joined.load(Ordering::SeqCst), 19);
    // Written through: a reader without the read-through sees it.
    let plain = Mirror::new(app.ddb.clone(), app.table.clone()).consistent(true);
    let snapshot = plain.entitlements("c-new", None).await.unwrap().expect("written through");
    assert_eq!(snapshot.entitlements_updated_at, T0);
    assert!(snapshot.message_id.unwrap().starts_with(stigg_webhooks::mirror::API_MESSAGE_PREFIX));
    // The next check is a hit: no call.
    mirror.check("c-new", None, "api-calls", 1.0).await.unwrap();
    assert_eq!(app.stigg.calls(), 1);
}

#[tokio::test]
async fn an_older_fetched_state_loses_to_a_newer_webhook_that_came_first() {
    let app = App::spawn(Duration::ZERO).await;
    app.webhook("c-1", T0 + 1_000, 200.0).await;
    app.stigg.set("c-1", Answer::State { at: T0, limit: 10.0 });
    // A resource-scoped miss of the same customer does not touch the customer-wide snapshot;
    // a direct fill of the customer-wide state is refused by the newer webhook's snapshot.
    let rt = Arc::new(app.read_through());
    let filled = rt.fill("c-1", None).await.unwrap().expect("the webhook's snapshot answers");
    assert_eq!(filled.entitlements_updated_at, T0 + 1_000);
    let mirror = Mirror::new(app.ddb.clone(), app.table.clone()).consistent(true);
    let a = mirror.check("c-1", None, "api-calls", 1.0).await.unwrap();
    assert_eq!(a.usage_limit, Some(200.0), "the newer webhook state stands");
}

#[tokio::test]
async fn a_newer_webhook_after_a_fetched_older_state_replaces_it() {
    let app = App::spawn(Duration::ZERO).await;
    app.stigg.set("c-2", Answer::State { at: T0, limit: 10.0 });
    let mirror = app.mirror(app.read_through());
    assert_eq!(mirror.check("c-2", None, "api-calls", 1.0).await.unwrap().usage_limit, Some(10.0));
    app.webhook("c-2", T0 + 1_000, 200.0).await;
    assert_eq!(mirror.check("c-2", None, "api-calls", 1.0).await.unwrap().usage_limit, Some(200.0));
    // And the older webhook of the fetched state's own time, redelivered late, changes nothing.
    app.webhook("c-2", T0, 10.0).await;
    assert_eq!(mirror.check("c-2", None, "api-calls", 1.0).await.unwrap().usage_limit, Some(200.0));
    assert_eq!(app.stigg.calls(), 1);
}

#[tokio::test]
async fn a_stale_api_answer_does_not_undo_a_deletion() {
    let app = App::spawn(Duration::ZERO).await;
    app.webhook("c-3", T0, 10.0).await;
    app.delete("c-3", T0 + 5_000).await;
    // Stigg's API still answers the state from before the deletion (its cache lags).
    app.stigg.set("c-3", Answer::State { at: T0 + 1_000, limit: 10.0 });
    let mirror = app.mirror(app.read_through());
    let a = mirror.check("c-3", None, "api-calls", 1.0).await.unwrap();
    assert!(!a.has_access);
    assert_eq!(a.deny_reason, Some(DenyReason::CustomerNotFound));
    // Remembered: the next checks do not call Stigg again within the TTL.
    mirror.check("c-3", None, "api-calls", 1.0).await.unwrap();
    assert_eq!(app.stigg.calls(), 1);
    // A state newer than the deletion (the customer re-created) is written.
    app.stigg.set("c-3", Answer::State { at: T0 + 9_000, limit: 30.0 });
    let rt = Arc::new(app.read_through());
    rt.fill("c-3", None).await.unwrap().expect("re-created");
    let a = app.mirror(app.read_through()).check("c-3", None, "api-calls", 1.0).await.unwrap();
    assert_eq!(a.usage_limit, Some(30.0));
}

#[tokio::test]
async fn customer_not_found_is_remembered_so_a_flood_of_checks_is_one_call_per_ttl() {
    let app = App::spawn(Duration::ZERO).await;
    let mirror = app.mirror(app.read_through().negative_ttl(Duration::from_secs(60)));
    for _ in 0..200 {
        let a = mirror.check("nobody", None, "api-calls", 1.0).await.unwrap();
        assert_eq!(a.deny_reason, Some(DenyReason::CustomerNotFound));
    }
    assert_eq!(app.stigg.calls(), 1);
    assert_eq!(mirror.read_through_stats().unwrap().negative_hits.load(Ordering::SeqCst), 199);
    // After the TTL Stigg is asked again (a customer created meanwhile is found).
    let short = app.mirror(app.read_through().negative_ttl(Duration::from_millis(100)));
    short.check("nobody", None, "api-calls", 1.0).await.unwrap();
    short.check("nobody", None, "api-calls", 1.0).await.unwrap();
    assert_eq!(app.stigg.calls(), 2);
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.stigg.set("nobody", Answer::State { at: T0, limit: 10.0 });
    assert!(short.check("nobody", None, "api-calls", 1.0).await.unwrap().has_access);
    assert_eq!(app.stigg.calls(), 3);
}

#[tokio::test]
async fn stiggs_429_and_5xx_are_typed_errors_never_answers() {
    let app = App::spawn(Duration::ZERO).await;
    let mirror = app.mirror(app.read_through());
    for status in [429, 503] {
        app.stigg.set("c-4", Answer::Fail(status));
        let e = mirror.check("c-4", None, "api-calls", 1.0).await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        match (status, e.api_error()) {
            (429, Some(ApiError::RateLimited { .. })) | (503, Some(ApiError::Unavailable { status: 503 })) => {}
            other => panic!("{other:?}"),
        }
    }
    // Not remembered as not found: the next check once Stigg answers reads through.
    app.stigg.set("c-4", Answer::State { at: T0, limit: 5.0 });
    assert!(mirror.check("c-4", None, "api-calls", 1.0).await.unwrap().has_access);
}

#[tokio::test]
async fn the_deny_and_error_policies_never_call_stigg() {
    let app = App::spawn(Duration::ZERO).await;
    app.stigg.set("c-5", Answer::State { at: T0, limit: 5.0 });
    let deny = app.mirror(app.read_through().on_miss(OnMiss::Deny));
    assert_eq!(
        deny.check("c-5", None, "api-calls", 1.0).await.unwrap().deny_reason,
        Some(DenyReason::CustomerNotFound)
    );
    assert!(deny.entitlements("c-5", None).await.unwrap().is_none());
    let error = app.mirror(app.read_through().on_miss(OnMiss::Error));
    assert!(matches!(error.check("c-5", None, "api-calls", 1.0).await, Err(MirrorError::Miss { .. })));
    assert_eq!(app.stigg.calls(), 0);
}

#[tokio::test]
async fn a_snapshot_older_than_the_maximum_age_is_answered_and_refreshed_in_the_background() {
    let app = App::spawn(Duration::from_millis(200)).await;
    app.webhook("c-6", T0, 10.0).await;
    app.stigg.set("c-6", Answer::State { at: T0 + 1_000, limit: 99.0 });
    // The webhook was written just now: a maximum age of 0 makes it stale at once.
    let mirror = app.mirror(app.read_through().max_age(Some(Duration::ZERO)));
    let a = mirror.check("c-6", None, "api-calls", 1.0).await.unwrap();
    assert_eq!(a.usage_limit, Some(10.0), "answered from the snapshot at hand");
    let stats = mirror.read_through_stats().unwrap();
    assert_eq!(stats.served_stale.load(Ordering::SeqCst), 1);
    for _ in 0..50 {
        if stats.fetches.load(Ordering::SeqCst) == 1 && app.stigg.calls() == 1 {
            let plain = Mirror::new(app.ddb.clone(), app.table.clone()).consistent(true);
            if plain.entitlements("c-6", None).await.unwrap().unwrap().entitlements_updated_at == T0 + 1_000 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the background refresh did not write Stigg's newer state");
}

#[tokio::test]
async fn without_stale_answers_a_failed_refresh_is_an_error() {
    let app = App::spawn(Duration::ZERO).await;
    app.webhook("c-7", T0, 10.0).await;
    app.stigg.set("c-7", Answer::Fail(503));
    let strict = app.mirror(app.read_through().max_age(Some(Duration::ZERO)).serve_stale(false));
    assert!(strict.check("c-7", None, "api-calls", 1.0).await.unwrap_err().is_retryable());
    // A fresh-enough snapshot needs no call at all.
    let relaxed = app.mirror(app.read_through().max_age(Some(Duration::from_secs(3600))));
    assert_eq!(relaxed.check("c-7", None, "api-calls", 1.0).await.unwrap().usage_limit, Some(10.0));
    assert_eq!(app.stigg.calls(), 1);
}

#[tokio::test]
async fn a_failing_refresh_is_not_retried_on_every_read_of_a_stale_snapshot() {
    let app = App::spawn(Duration::ZERO).await;
    app.webhook("c-8", T0, 10.0).await;
    app.stigg.set("c-8", Answer::Fail(503));
    let mirror = app.mirror(app.read_through().max_age(Some(Duration::ZERO)));
    for _ in 0..50 {
        assert_eq!(mirror.check("c-8", None, "api-calls", 1.0).await.unwrap().usage_limit, Some(10.0));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.stigg.calls(), 1, "one refresh per cooldown, not one per read");
    assert_eq!(mirror.read_through_stats().unwrap().served_stale.load(Ordering::SeqCst), 50);
}
