//! The Stigg API client against the stand-in (tests/common/stigg_stand_ins/api.rs): documented
//! answers, `CustomerNotFound` in both shapes, 429s, 5xx, slow answers, refused keys.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::stigg_stand_ins::StiggApiStandIn;
use common::stigg_stand_ins::api::{CUSTOMER_RESOURCES, CUSTOMERS, ENTITLEMENTS_STATE};
use stigg_webhooks::config::ApiKey;
use stigg_webhooks::edge::{ApiKeyFetch, ApiKeys};
use stigg_webhooks::stigg::api::{
    ApiError, ApiSettings, CustomerDirectory, EntitlementsSource, Fetched, RetryPolicy, StiggApi,
};

const KEY: &str = "server-test-key";

fn key(k: &str) -> Arc<ApiKeys> {
    Arc::new(ApiKeys::fixed(ApiKey::parse(k).unwrap()))
}

/// Short backoffs, so retries take milliseconds.
fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        budget: Duration::from_secs(30),
        base: Duration::from_millis(20),
        cap: Duration::from_millis(200),
    }
}

fn settings(stand_in: &StiggApiStandIn, retry: RetryPolicy) -> ApiSettings {
    ApiSettings { retry, ..ApiSettings::patient(&stand_in.url()) }
}

async fn seeded() -> StiggApiStandIn {
    let stand_in = StiggApiStandIn::start(KEY).await;
    stand_in.seed_file(&StiggApiStandIn::fixture()).unwrap();
    stand_in
}

#[tokio::test]
async fn states_customers_and_resources_are_read_as_documented() {
    let stand_in = seeded().await;
    let api = StiggApi::new(key(KEY), settings(&stand_in, quick(1)));

    let mut cursor: Option<String> = None;
    let mut listed = vec![];
    let mut pages = 0;
    loop {
        let page = api.customers(cursor.as_deref(), 5).await.unwrap();
        assert_eq!(page.total, Some(24));
        assert!(page.customers.len() <= 5);
        listed.extend(page.customers);
        pages += 1;
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "the listing ends");
    }
    assert_eq!(listed, stand_in.customer_ids(), "every customer once, in creation order");
    assert_eq!(pages, 5);

    let with_resources = stand_in.scopes().into_iter().find_map(|(c, r)| r.map(|_| c)).unwrap();
    let resources = api.resources(&with_resources).await.unwrap();
    let expected: Vec<String> = stand_in
        .scopes()
        .into_iter()
        .filter(|(c, r)| *c == with_resources && r.is_some())
        .map(|(_, r)| r.unwrap())
        .collect();
    assert_eq!(resources, expected);
    assert!(api.resources("customer-acme-corp").await.unwrap().is_empty());

    let Fetched::State(state) = api.entitlements_state(&with_resources, Some(&resources[0])).await.unwrap() else {
        panic!("a known customer has a state")
    };
    let sent = stand_in.state_of(&with_resources, Some(&resources[0])).unwrap();
    assert_eq!(state.at_iso, sent["entitlementsUpdatedAt"].as_str().unwrap());
    assert_eq!(state.resource.as_deref(), Some(resources[0].as_str()));
    let ids: Vec<&str> = state.entitlements.iter().map(|e| e["feature"]["id"].as_str().unwrap()).collect();
    let refs: Vec<&str> =
        sent["entitlements"].as_array().unwrap().iter().map(|e| e["feature"]["refId"].as_str().unwrap()).collect();
    assert_eq!(ids, refs, "feature.refId becomes feature.id");

    let Fetched::State(idle) = api.entitlements_state("customer-vandelay-industries", None).await.unwrap() else {
        panic!()
    };
    assert_eq!(idle.access_denied_reason.as_deref(), Some("NoActiveSubscription"));
    assert!(idle.entitlements.is_empty());
    assert_eq!(stand_in.calls(CUSTOMERS), 5);
    assert_eq!(stand_in.calls(CUSTOMER_RESOURCES), 2);
}

#[tokio::test]
async fn an_unknown_customer_is_customer_not_found_as_data_or_as_an_error() {
    let stand_in = seeded().await;
    let api = StiggApi::new(key(KEY), settings(&stand_in, quick(3)));
    assert_eq!(api.entitlements_state("nobody", None).await.unwrap(), Fetched::CustomerNotFound);
    stand_in.set_not_found_as_error(true);
    assert_eq!(api.entitlements_state("nobody", None).await.unwrap(), Fetched::CustomerNotFound);
    assert_eq!(stand_in.calls(ENTITLEMENTS_STATE), 2, "not found is an answer, never retried");
    stand_in.remove_customer("customer-acme-corp");
    assert_eq!(api.entitlements_state("customer-acme-corp", None).await.unwrap(), Fetched::CustomerNotFound);
}

#[tokio::test]
async fn rate_limited_calls_wait_for_retry_after_and_all_pass() {
    let stand_in = seeded().await;
    stand_in.set_limit(ENTITLEMENTS_STATE, 3, Duration::from_secs(1));
    let api = StiggApi::new(key(KEY), settings(&stand_in, quick(10)));
    let customers = stand_in.customer_ids();
    let calls = customers.iter().take(8).map(|c| api.entitlements_state(c, None));
    let answers = futures::future::join_all(calls).await;
    for a in &answers {
        assert!(matches!(a, Ok(Fetched::State(_))), "{a:?}");
    }
    assert!(stand_in.throttled() > 0, "the stand-in's limit was hit");
    let stats = api.stats();
    assert_eq!(stats.rate_limited as usize, stand_in.throttled());
    assert!(api.rate_now(stigg_webhooks::stigg::api::Operation::EntitlementsState) < 1000.0, "the limiter slowed down");
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_and_a_fail_fast_client_gets_a_typed_error() {
    let stand_in = seeded().await;
    stand_in.set_limit(ENTITLEMENTS_STATE, 1, Duration::from_secs(60));
    stand_in.set_retry_after(false);
    let fail_fast = StiggApi::new(key(KEY), ApiSettings::fail_fast(&stand_in.url()));
    assert!(fail_fast.entitlements_state("customer-acme-corp", None).await.is_ok());
    let e = fail_fast.entitlements_state("customer-globex", None).await.unwrap_err();
    assert!(matches!(e, ApiError::RateLimited { retry_after: None }), "{e:?}");
    assert_eq!(stand_in.calls(ENTITLEMENTS_STATE), 2, "one attempt each");

    // A patient client with a small budget backs off (no Retry-After to follow) and gives up
    // within it.
    let retry = RetryPolicy { budget: Duration::from_millis(600), ..quick(50) };
    let patient = StiggApi::new(key(KEY), settings(&stand_in, retry));
    let started = Instant::now();
    let e = patient.entitlements_state("customer-globex", None).await.unwrap_err();
    assert!(matches!(e, ApiError::RateLimited { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "gave up within its budget: {:?}", started.elapsed());
    assert!(patient.stats().retries >= 1);
}

#[tokio::test]
async fn server_errors_are_retried_within_the_attempts_then_reported() {
    let stand_in = seeded().await;
    let api = StiggApi::new(key(KEY), settings(&stand_in, quick(3)));
    stand_in.fail_next(2, 503);
    assert!(matches!(api.entitlements_state("customer-acme-corp", None).await, Ok(Fetched::State(_))));
    assert_eq!(stand_in.calls(ENTITLEMENTS_STATE), 3);

    stand_in.fail_next(5, 500);
    let e = api.customers(None, 10).await.unwrap_err();
    assert!(matches!(e, ApiError::Unavailable { status: 500 }), "{e:?}");
    assert_eq!(stand_in.calls(CUSTOMERS), 3, "three attempts, no more");
    // The two faults left pass within the next call's attempts.
    stand_in.reset_counters();
    assert!(api.customers(None, 10).await.is_ok());
    assert_eq!(stand_in.calls(CUSTOMERS), 3);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retryable() {
    let stand_in = seeded().await;
    stand_in.set_delay(Duration::from_millis(800));
    let api = StiggApi::new(
        key(KEY),
        ApiSettings { request_timeout: Duration::from_millis(100), ..ApiSettings::fail_fast(&stand_in.url()) },
    );
    let e = api.entitlements_state("customer-acme-corp", None).await.unwrap_err();
    assert!(matches!(e, ApiError::Timeout(d) if d == Duration::from_millis(100)), "{e:?}");
    assert!(e.is_retryable());
}

/// The SSM parameter: the old key at the cold start, the new one at every later read.
#[derive(Default)]
struct Rotated(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl ApiKeyFetch for Rotated {
    async fn fetch(&self) -> Result<ApiKey, String> {
        let reads = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(ApiKey::parse(if reads == 0 { "server-old" } else { KEY }).unwrap())
    }
}

#[tokio::test]
async fn a_refused_key_is_never_retried_but_a_rotated_one_is_re_read() {
    let stand_in = seeded().await;
    let api = StiggApi::new(key("server-wrong"), settings(&stand_in, quick(5)));
    let e = api.entitlements_state("customer-acme-corp", None).await.unwrap_err();
    assert!(matches!(e, ApiError::Refused { status: 401 }), "{e:?}");
    assert_eq!(stand_in.calls(ENTITLEMENTS_STATE), 1);

    // The key in SSM was rotated: the refusal re-reads it once and the call passes.
    let stand_in = seeded().await;
    let keys = ApiKeys::refreshing(Box::new(Rotated::default()), Duration::from_secs(60)).await.unwrap();
    let api = StiggApi::new(Arc::new(keys), settings(&stand_in, quick(1)));
    assert!(api.entitlements_state("customer-acme-corp", None).await.is_ok());
    assert_eq!(stand_in.calls(ENTITLEMENTS_STATE), 2, "refused once, then passed with the new key");

    // A request Stigg rejects (400) is not retried either.
    stand_in.fail_next(1, 400);
    stand_in.reset_counters();
    let e = api.customers(None, 5).await.unwrap_err();
    assert!(matches!(e, ApiError::Rejected { status: 400, .. }), "{e:?}");
    assert_eq!(stand_in.calls(CUSTOMERS), 1);
}
