//! The drift check against moto and the Stigg API stand-in: a deliberately corrupted mirror is
//! repaired and counted (older, missing, extra), a webhook-newer snapshot is counted ahead and
//! left alone, the cursor advances and wraps, one run at a time; and the `mirror-sync` binary
//! under the Runtime API emulator.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;
use common::runtime_api::{FunctionProcess, RuntimeApi, binary};
use common::stigg_stand_ins::StiggApiStandIn;
use common::stigg_stand_ins::api::CUSTOMERS;
use common::*;
use serde_json::json;
use stigg_webhooks::config::{ApiKey, TableName};
use stigg_webhooks::edge::ApiKeys;
use stigg_webhooks::mirror::sync::drift::{CURSOR_PK, CURSOR_SK, DriftCheck, DriftReport};
use stigg_webhooks::mirror::{MirrorStore, SnapshotWrite, epoch_millis, partition_key, sort_key};
use stigg_webhooks::stigg::api::{ApiSettings, RetryPolicy, StiggApi};

const KEY: &str = "server-drift-test-key";

struct Setup {
    stand_in: StiggApiStandIn,
    ddb: aws_sdk_dynamodb::Client,
    table: TableName,
    _serial: Option<SerialMoto>,
}

impl Setup {
    /// The `mirror-sync` binary's environment for this table and stand-in.
    fn binary_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ENTITLEMENT_MIRROR_TABLE", self.table.as_str().to_owned()),
            ("STIGG_API_KEY", KEY.to_owned()),
            ("STIGG_API_URL", self.stand_in.url()),
            ("MIRROR_DRIFT_SAMPLE_SIZE", "100".to_owned()),
            ("AWS_ENDPOINT_URL", endpoint()),
        ]
    }

    async fn new() -> Self {
        let stand_in = StiggApiStandIn::start(KEY).await;
        stand_in.seed_file(&StiggApiStandIn::fixture()).unwrap();
        let ddb = aws_sdk_dynamodb::Client::new(&sdk_config().await);
        let table = create_mirror_table(&ddb).await;
        Self { stand_in, ddb, table, _serial: None }
    }

    /// On a DynamoDB whose conditional writes are atomic per item, as DynamoDB's are: moto's
    /// threaded server let two runs both take the lease in a fresh-clone CI run.
    async fn serial() -> Self {
        let serial = SerialMoto::start().await;
        let stand_in = StiggApiStandIn::start(KEY).await;
        stand_in.seed_file(&StiggApiStandIn::fixture()).unwrap();
        let ddb = aws_sdk_dynamodb::Client::new(&admin_config_for(&serial.endpoint).await);
        let table = create_mirror_table(&ddb).await;
        Self { stand_in, ddb, table, _serial: Some(serial) }
    }

    fn check(&self, sample: usize) -> DriftCheck<StiggApi> {
        let retry = RetryPolicy {
            attempts: 2,
            budget: Duration::from_secs(5),
            base: Duration::from_millis(20),
            cap: Duration::from_millis(100),
        };
        let settings = ApiSettings { retry, ..ApiSettings::patient(&self.stand_in.url()) };
        let api = StiggApi::new(Arc::new(ApiKeys::fixed(ApiKey::parse(KEY).unwrap())), settings);
        DriftCheck::new(Arc::new(api), self.ddb.clone(), self.table.clone(), NonZeroUsize::new(sample).unwrap())
    }

    fn store(&self) -> MirrorStore {
        MirrorStore::new(self.ddb.clone(), self.table.clone())
    }

    /// Stigg's `entitlementsUpdatedAt` for a scope, epoch ms.
    fn stigg_at(&self, customer: &str, resource: Option<&str>) -> i64 {
        let state = self.stand_in.state_of(customer, resource).expect("a seeded state");
        epoch_millis(state["entitlementsUpdatedAt"].as_str().unwrap()).unwrap()
    }

    async fn item(&self, pk: &str, sk: &str) -> Option<HashMap<String, AttributeValue>> {
        self.ddb
            .get_item()
            .table_name(self.table.as_str())
            .key("pk", AttributeValue::S(pk.to_owned()))
            .key("sk", AttributeValue::S(sk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    }

    /// The header's `entitlementsUpdatedAt`.
    async fn mirror_at(&self, customer: &str, resource: Option<&str>) -> Option<i64> {
        let item = self.item(&partition_key(customer), &sort_key(resource)).await?;
        item.get("entitlementsUpdatedAt")?.as_n().ok()?.parse().ok()
    }

    /// Customers with a customer-wide state in the stand-in, and any of their resources.
    fn scoped_customers(&self) -> (String, String, String) {
        let with_state: Vec<String> =
            self.stand_in.customer_ids().into_iter().filter(|c| self.stand_in.state_of(c, None).is_some()).collect();
        assert!(with_state.len() >= 3, "the fixture has customers with states");
        (with_state[0].clone(), with_state[1].clone(), with_state[2].clone())
    }
}

fn deadline() -> SystemTime {
    SystemTime::now() + Duration::from_secs(180)
}

fn iso(ms: i64) -> String {
    stigg_webhooks::metrics::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64))
}

fn empty_snapshot(customer: &str, resource: Option<&str>, at_ms: i64, message_id: &str) -> SnapshotWrite {
    SnapshotWrite {
        customer: customer.to_owned(),
        resource: resource.map(str::to_owned),
        at_ms,
        at_iso: iso(at_ms),
        message_id: message_id.to_owned(),
        features: BTreeMap::new(),
        usage_at_ms: None,
    }
}

/// A snapshot granting one feature.
fn granting(customer: &str, at_ms: i64, message_id: &str) -> SnapshotWrite {
    let mut w = empty_snapshot(customer, None, at_ms, message_id);
    w.features.insert("feature-x".into(), json!({"feature": {"id": "feature-x"}, "hasUnlimitedUsage": true}));
    w
}

fn scopes_of(report: &DriftReport) -> u64 {
    report.in_sync + report.behind + report.ahead + report.missing + report.not_found + report.failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_mirror_is_repaired_and_counted_and_a_webhook_newer_snapshot_is_left_alone() {
    let s = Setup::new().await;
    let scopes = s.stand_in.scopes().len() as u64;
    let check = s.check(100);

    // An empty mirror: every scope is missing, and written.
    let first = check.run(deadline()).await.unwrap();
    assert_eq!((first.customers, first.checked, first.missing), (24, scopes, scopes), "{first:?}");
    assert_eq!((first.repaired, first.failed, first.behind), (scopes, 0, 0), "{first:?}");
    assert!(first.wrapped, "one page held every customer");
    let second = check.run(deadline()).await.unwrap();
    assert_eq!((second.in_sync, second.repaired), (scopes, 0), "{second:?}");
    let (confirmed, _, _) = s.scoped_customers();
    let header = s.item(&partition_key(&confirmed), &sort_key(None)).await.unwrap();
    assert!(header.contains_key("verifiedAt"), "an in-sync snapshot is stamped verified: {header:?}");

    let (older, missing, ahead) = s.scoped_customers();
    // Older: the header rolled back by hand (as a lost webhook would have left it).
    s.ddb
        .update_item()
        .table_name(s.table.as_str())
        .key("pk", AttributeValue::S(partition_key(&older)))
        .key("sk", AttributeValue::S(sort_key(None)))
        .update_expression("SET entitlementsUpdatedAt = :old")
        .expression_attribute_values(":old", AttributeValue::N("1000".into()))
        .send()
        .await
        .unwrap();
    // Missing: the header gone.
    s.ddb
        .delete_item()
        .table_name(s.table.as_str())
        .key("pk", AttributeValue::S(partition_key(&missing)))
        .key("sk", AttributeValue::S(sort_key(None)))
        .send()
        .await
        .unwrap();
    // Ahead: a webhook newer than what Stigg's API answers.
    let webhook_at = s.stigg_at(&ahead, None) + 60_000;
    s.store().write_snapshot(&empty_snapshot(&ahead, None, webhook_at, "webhook-newer")).await.unwrap();
    // Extra: a resource Stigg does not know, mirrored long ago.
    let old = epoch_millis("2026-01-02T00:00:00.000Z").unwrap();
    let extra = SnapshotWrite { resource: Some("resource-gone".into()), ..granting(&older, old, "webhook-old") };
    s.store().write_snapshot(&extra).await.unwrap();

    let third = check.run(deadline()).await.unwrap();
    assert_eq!((third.behind, third.missing, third.ahead, third.not_found), (1, 1, 1, 1), "{third:?}");
    assert_eq!((third.failed, third.repaired, third.in_sync), (0, 3, scopes - 3), "{third:?}");
    assert_eq!(scopes_of(&third), third.checked);
    assert_eq!(s.mirror_at(&older, None).await, Some(s.stigg_at(&older, None)), "repaired to Stigg's state");
    assert_eq!(s.mirror_at(&missing, None).await, Some(s.stigg_at(&missing, None)), "written again");
    assert_eq!(s.mirror_at(&ahead, None).await, Some(webhook_at), "the newer webhook stands");
    let feature = stigg_webhooks::mirror::feature_sort_key(Some("resource-gone"), "feature-x");
    let gone = s.item(&partition_key(&older), &feature).await.unwrap();
    assert!(!gone.contains_key("entitlement"), "the unknown resource's entitlement is taken out: {gone:?}");

    // The emptied resource grants what Stigg's "not found" does: nothing more to repair.
    let fourth = check.run(deadline()).await.unwrap();
    assert_eq!((fourth.ahead, fourth.in_sync, fourth.repaired), (1, scopes, 0), "{fourth:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_advances_a_sample_at_a_time_and_wraps_so_every_customer_is_checked() {
    let s = Setup::new().await;
    let check = s.check(10);
    let runs: Vec<DriftReport> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(check.run(deadline()).await.unwrap());
        }
        v
    };
    // From Stigg's listing; the mirror's side re-checks customers mirrored by earlier runs.
    let sizes: Vec<(u64, bool)> = runs.iter().map(|r| (r.customers - r.from_mirror, r.wrapped)).collect();
    assert_eq!(sizes, [(10, false), (10, false), (4, true)]);
    assert_eq!(runs[0].from_mirror, 0, "the first run's customers were all just checked");
    assert_eq!(runs[1].from_mirror, 10, "the second run's mirror side: the first run's customers");
    let served = s.stand_in.served_customer_wide();
    assert_eq!(served.len(), 24, "every customer: {served:?}");
    let cursor = s.item(CURSOR_PK, CURSOR_SK).await.unwrap();
    assert!(!cursor.contains_key("cursor") && !cursor.contains_key("leaseOwner"), "back at the start: {cursor:?}");

    // Wrapped: the first ten again.
    s.stand_in.reset_counters();
    let again = check.run(deadline()).await.unwrap();
    assert_eq!(
        (again.customers - again.from_mirror, again.in_sync, again.missing),
        (10, again.checked, 0),
        "{again:?}"
    );
    let first_ten: Vec<String> = s.stand_in.customer_ids().into_iter().take(10).collect();
    let served = s.stand_in.served_customer_wide();
    assert!(first_ten.iter().all(|c| served.get(c) == Some(&1)), "{served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_run_at_a_time_and_a_failed_listing_moves_nothing() {
    let s = Setup::new().await;
    let check = s.check(5);
    // Another run's lease, not yet expired.
    let until = SystemTime::now() + Duration::from_secs(600);
    s.ddb
        .put_item()
        .table_name(s.table.as_str())
        .item("pk", AttributeValue::S(CURSOR_PK.into()))
        .item("sk", AttributeValue::S(CURSOR_SK.into()))
        .item("leaseOwner", AttributeValue::S("other-run".into()))
        .item(
            "leaseUntil",
            AttributeValue::N(until.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis().to_string()),
        )
        .send()
        .await
        .unwrap();
    let skipped = check.run(deadline()).await.unwrap();
    assert!(skipped.skipped && skipped.checked == 0, "{skipped:?}");
    assert_eq!(s.stand_in.calls(CUSTOMERS), 0, "a skipped run asks Stigg nothing");

    // The lease expired (its run died): taken over.
    s.ddb
        .update_item()
        .table_name(s.table.as_str())
        .key("pk", AttributeValue::S(CURSOR_PK.into()))
        .key("sk", AttributeValue::S(CURSOR_SK.into()))
        .update_expression("SET leaseUntil = :past")
        .expression_attribute_values(":past", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    // Stigg's listing fails beyond the client's retries: an error, the cursor stays.
    s.stand_in.fail_next(10, 503);
    let e = check.run(deadline()).await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let cursor = s.item(CURSOR_PK, CURSOR_SK).await.unwrap();
    assert!(!cursor.contains_key("cursor") && !cursor.contains_key("leaseOwner"), "lease released: {cursor:?}");
    // The faults the failed run left (two attempts each) fail the next runs the same way.
    let mut next = None;
    for _ in 0..5 {
        if let Ok(r) = check.run(deadline()).await {
            next = Some(r);
            break;
        }
    }
    let next = next.expect("runs pass once Stigg answers");
    assert_eq!((next.customers, next.failed), (5, 0), "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_stigg_does_not_know_is_deleted_unless_it_was_mirrored_moments_ago() {
    let s = Setup::new().await;
    let check = s.check(5);
    let long_ago = epoch_millis("2026-01-02T00:00:00.000Z").unwrap();
    s.store().write_snapshot(&granting("customer-ghost", long_ago, "m-1")).await.unwrap();
    let report = check.check_customer("customer-ghost").await;
    assert_eq!((report.not_found, report.repaired), (1, 1), "{report:?}");
    let tombstone = s.item(&partition_key("customer-ghost"), "tombstone").await.expect("deleted");
    assert!(tombstone["messageId"].as_s().unwrap().starts_with("stigg-api:not-found:"), "{tombstone:?}");
    assert_eq!(s.mirror_at("customer-ghost", None).await, None);
    // Already deleted: both agree now.
    assert_eq!(check.check_customer("customer-ghost").await.in_sync, 1);

    // A webhook of a customer Stigg's API does not know yet: counted, not deleted.
    let now = epoch_millis(&stigg_webhooks::metrics::rfc3339(SystemTime::now())).unwrap();
    s.store().write_snapshot(&granting("customer-new", now, "m-2")).await.unwrap();
    let report = check.check_customer("customer-new").await;
    assert_eq!((report.not_found, report.repaired), (1, 0), "{report:?}");
    assert_eq!(s.mirror_at("customer-new", None).await, Some(now));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_a_drift_check_per_scheduled_event_and_refuses_what_it_cannot_do() {
    let s = Setup::new().await;
    let api = RuntimeApi::start(Duration::from_secs(120)).await;
    let mut env = s.binary_env();
    env.push(("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()));
    let process = FunctionProcess::spawn(binary("mirror-sync").as_path(), &api, &env);
    let scheduled = json!({"version": "0", "id": "e-1", "detail-type": "Scheduled Event", "source": "aws.scheduler",
        "account": "123456789012", "time": "2026-12-04T12:00:00Z", "region": "us-east-1", "resources": [], "detail": {}});
    let answer = api.invoke(&scheduled, Duration::from_secs(120)).await.unwrap();
    let scopes = s.stand_in.scopes().len() as u64;
    assert_eq!(answer["report"]["missing"], scopes, "{answer}");
    let answer = api.invoke(&json!({"action": "drift"}), Duration::from_secs(120)).await.unwrap();
    assert_eq!(answer["report"]["in_sync"], scopes, "{answer}");
    let refused = api.invoke(&json!({"action": "purge"}), Duration::from_secs(30)).await.unwrap_err();
    assert!(refused.contains("unknown request"), "{refused}");
    // Stigg's listing failing beyond the drift client's 5 attempts: a failed invocation and run.
    s.stand_in.fail_next(5, 503);
    let failed = api.invoke(&json!({"action": "drift"}), Duration::from_secs(120)).await.unwrap_err();
    assert!(failed.contains("customer listing failed"), "{failed}");

    let lines = process.settled_lines().await;
    assert_eq!(emf_sum(&lines, "MirrorDrift", Some(("Outcome", "missing"))), scopes as f64);
    assert_eq!(emf_sum(&lines, "MirrorDrift", Some(("Outcome", "in_sync"))), scopes as f64);
    assert_eq!(emf_sum(&lines, "MirrorDriftRuns", Some(("Outcome", "completed"))), 2.0);
    assert_eq!(
        emf_sum(&lines, "MirrorDriftRuns", Some(("Outcome", "failed"))),
        1.0,
        "what the not-running alarm misses"
    );
    assert_eq!(emf_sum(&lines, "MirrorDriftChecked", None), 2.0 * scopes as f64);
    assert!(!lines.iter().any(|l| l.contains(KEY)), "the key is never logged");
    assert!(api.init_errors().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_check_the_sample_once() {
    let s = Setup::serial().await;
    // Slow answers: the two runs overlap for certain.
    s.stand_in.set_delay(Duration::from_millis(50));
    let (a, b) = (s.check(10), s.check(10));
    let (a, b) = tokio::join!(a.run(deadline()), b.run(deadline()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.skipped != b.skipped, "exactly one run works: {a:?} {b:?}");
    let served = s.stand_in.served_customer_wide();
    assert_eq!(served.len(), 10, "{served:?}");
    assert!(served.values().all(|n| *n == 1), "no customer checked twice: {served:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_backfills_on_request_and_the_drift_check_then_finds_everything_in_sync() {
    let s = Setup::new().await;
    let api = RuntimeApi::start(Duration::from_secs(300)).await;
    let env = s.binary_env();
    let _process = FunctionProcess::spawn(binary("mirror-sync").as_path(), &api, &env);
    let answer = api.invoke(&json!({"action": "backfill"}), Duration::from_secs(300)).await.unwrap();
    assert_eq!(answer["ending"], "finished", "{answer}");
    assert_eq!(answer["resume"], false, "{answer}");
    assert_eq!(answer["progress"]["customers"], 24, "{answer}");
    assert_eq!(answer["progress"]["failed"], 0, "{answer}");
    let again = api.invoke(&json!({"action": "backfill", "restart": false}), Duration::from_secs(60)).await.unwrap();
    assert_eq!(again["ending"], "already_finished", "{again}");

    let scopes = s.stand_in.scopes().len() as u64;
    let drift = api.invoke(&json!({"action": "drift"}), Duration::from_secs(120)).await.unwrap();
    assert_eq!(drift["report"]["in_sync"], scopes, "{drift}");
    assert_eq!(drift["report"]["checked"], scopes, "{drift}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_only_the_mirror_holds_is_found_from_the_mirrors_side_and_deleted() {
    let s = Setup::new().await;
    // A customer Stigg deleted long ago whose customer.deleted never arrived.
    let long_ago = epoch_millis("2026-01-02T00:00:00.000Z").unwrap();
    s.store().write_snapshot(&granting("customer-deleted-in-stigg", long_ago, "m-1")).await.unwrap();
    let report = s.check(100).run(deadline()).await.unwrap();
    assert_eq!((report.from_mirror, report.not_found, report.failed), (1, 1, 0), "{report:?}");
    assert!(s.item(&partition_key("customer-deleted-in-stigg"), "tombstone").await.is_some(), "deleted");
    assert_eq!(s.mirror_at("customer-deleted-in-stigg", None).await, None);
    // Deleted: the mirror's side no longer samples it.
    let next = s.check(100).run(deadline()).await.unwrap();
    assert_eq!((next.from_mirror, next.not_found), (0, 0), "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_deletes_at_most_a_tenth_of_its_sample_when_stigg_knows_nobody_it_is_asked_about() {
    let s = Setup::new().await;
    // Ten mirrored customers Stigg does not know: a server key of another environment, say.
    let long_ago = epoch_millis("2026-01-02T00:00:00.000Z").unwrap();
    for i in 0..10 {
        s.store().write_snapshot(&granting(&format!("customer-elsewhere-{i}"), long_ago, "m-1")).await.unwrap();
    }
    let report = s.check(30).run(deadline()).await.unwrap();
    assert_eq!(report.from_mirror, 10, "{report:?}");
    // max(3, 30 / 10) deleted; all ten counted not found (the alarm), seven left alone.
    assert_eq!((report.not_found, report.failed), (10, 0), "{report:?}");
    let mut kept = 0;
    for i in 0..10 {
        if s.mirror_at(&format!("customer-elsewhere-{i}"), None).await.is_some() {
            kept += 1;
        }
    }
    assert_eq!(kept, 7);
}
