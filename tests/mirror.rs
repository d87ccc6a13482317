//! The entitlement mirror against the real SDK and moto: any shuffle and duplication of
//! snapshots, usage events and deletions ends with the newest state; the processor binary with
//! `ENTITLEMENT_MIRROR_TABLE` set keeps the documented layout; two processes writing at once
//! end with the newest snapshot.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::runtime_api::{FunctionProcess, RuntimeApi, binary};
use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use stigg_webhooks::config::TableName;
use stigg_webhooks::event::StiggEvent;
use stigg_webhooks::handler::Handler;
use stigg_webhooks::mirror::{DenyReason, Mirror, MirrorHandler, MirrorStore};

fn iso(ms: i64) -> String {
    stigg_webhooks::metrics::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
}

const T0: i64 = 1_790_000_000_000;

fn resource_json(resource: Option<&str>) -> Value {
    resource.map_or(Value::Null, |r| json!({"id": r, "entityId": format!("entity-{r}")}))
}

/// `entitlements.updated` for `customer`/`resource` at `t`, features `f0..` with these usages.
fn snapshot_event(customer: &str, resource: Option<&str>, t: i64, usages: &[(usize, f64)]) -> String {
    let entitlements: Vec<Value> = usages
        .iter()
        .map(|(f, usage)| json!({
            "feature": {"id": format!("f{f}"), "featureType": "NUMBER", "meterType": "INCREMENTAL", "unit": "call", "units": "calls"},
            "usageLimit": 100, "hasUnlimitedUsage": false, "hasSoftLimit": false, "currentUsage": usage,
            "usagePeriodStart": "2026-12-01T00:00:00.000Z", "usagePeriodEnd": "2027-01-01T00:00:00.000Z", "resetPeriod": "MONTH"}))
        .collect();
    json!({"type": "entitlements.updated", "messageId": format!("snap-{customer}-{}-{t}", resource.unwrap_or("")),
        "timestamp": iso(t), "customer": {"id": customer}, "resource": resource_json(resource),
        "entitlements": entitlements, "entitlementsUpdatedAt": iso(t)})
    .to_string()
}

fn usage_event(customer: &str, resource: Option<&str>, feature: usize, t: i64, usage: f64) -> String {
    json!({"type": "entitlement.usage_exceeded", "messageId": format!("use-{customer}-{}-{feature}-{t}", resource.unwrap_or("")),
        "timestamp": iso(t), "currentUsage": usage, "usageLimit": 100, "hasUnlimitedUsage": false, "hasSoftLimit": false,
        "feature": {"id": format!("f{feature}"), "featureType": "NUMBER", "meterType": "INCREMENTAL"},
        "customer": {"id": customer}, "resource": resource_json(resource)})
    .to_string()
}

fn deletion_event(customer: &str, t: i64) -> String {
    json!({"type": "customer.deleted", "messageId": format!("del-{customer}-{t}"), "timestamp": iso(t), "id": customer, "name": "x"})
        .to_string()
}

#[derive(Debug, Clone)]
enum Op {
    Snapshot { c: usize, r: usize, t: i64, usages: Vec<(usize, f64)> },
    Usage { c: usize, r: usize, f: usize, t: i64, usage: f64 },
    Delete { c: usize, t: i64 },
}

const CUSTOMERS: [&str; 2] = ["cust-a", "cust-b"];
const RESOURCES: [Option<&str>; 2] = [None, Some("res-1")];

impl Op {
    fn body(&self) -> String {
        match self {
            Op::Snapshot { c, r, t, usages } => snapshot_event(CUSTOMERS[*c], RESOURCES[*r], *t, usages),
            Op::Usage { c, r, f, t, usage } => usage_event(CUSTOMERS[*c], RESOURCES[*r], *f, *t, *usage),
            Op::Delete { c, t } => deletion_event(CUSTOMERS[*c], *t),
        }
    }
}

/// Per (customer, resource): the snapshot's time and each feature's current usage, or none.
type State = BTreeMap<(usize, usize), Option<(i64, BTreeMap<String, f64>)>>;

/// The newest state per (customer, resource): the newest snapshot newer than the customer's last
/// deletion, each feature's usage from the newest usage event not older than that snapshot.
fn expected(ops: &[Op]) -> State {
    let mut out = BTreeMap::new();
    for c in 0..CUSTOMERS.len() {
        let deleted = ops
            .iter()
            .filter_map(|o| match o {
                Op::Delete { c: dc, t } if *dc == c => Some(*t),
                _ => None,
            })
            .max();
        for r in 0..RESOURCES.len() {
            let newest = ops
                .iter()
                .filter_map(|o| match o {
                    Op::Snapshot { c: sc, r: sr, t, usages }
                        if *sc == c && *sr == r && deleted.is_none_or(|d| *t > d) =>
                    {
                        Some((*t, usages))
                    }
                    _ => None,
                })
                .max_by_key(|(t, _)| *t);
            let state = newest.map(|(t, usages)| {
                let features = usages
                    .iter()
                    .map(|(f, own)| {
                        let newer = ops
                            .iter()
                            .filter_map(|o| match o {
                                Op::Usage { c: uc, r: ur, f: uf, t: ut, usage }
                                    if *uc == c && *ur == r && uf == f && *ut > t =>
                                {
                                    Some((*ut, *usage))
                                }
                                _ => None,
                            })
                            .max_by_key(|(ut, _)| *ut);
                        (format!("f{f}"), newer.map_or(*own, |(_, u)| u))
                    })
                    .collect();
                (t, features)
            });
            out.insert((c, r), state);
        }
    }
    out
}

/// Distinct times for every operation (equal times have no defined winner).
fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (0..2usize, 0..2usize, prop::collection::btree_map(0..3usize, 0..50u32, 0..3))
            .prop_map(|(c, r, usages)| Op::Snapshot { c, r, t: 0, usages: usages.into_iter().map(|(f, u)| (f, u as f64)).collect() }),
        4 => (0..2usize, 0..2usize, 0..3usize, 0..90u32).prop_map(|(c, r, f, u)| Op::Usage { c, r, f, t: 0, usage: u as f64 }),
        1 => (0..2usize).prop_map(|c| Op::Delete { c, t: 0 }),
    ];
    (prop::collection::vec(op, 1..14), any::<u64>()).prop_map(|(ops, seed)| {
        let mut times: Vec<i64> = (0..ops.len() as i64).map(|i| T0 + i * 1000).collect();
        // Times drawn without replacement in a seeded order, so the arrival order (below) and
        // the time order differ.
        let mut state = seed | 1;
        for i in (1..times.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            times.swap(i, (state % (i as u64 + 1)) as usize);
        }
        ops.into_iter()
            .zip(times)
            .map(|(op, t)| match op {
                Op::Snapshot { c, r, usages, .. } => Op::Snapshot { c, r, t, usages },
                Op::Usage { c, r, f, usage, .. } => Op::Usage { c, r, f, t, usage },
                Op::Delete { c, .. } => Op::Delete { c, t },
            })
            .collect()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn actual(mirror: &Mirror) -> State {
    let mut out = BTreeMap::new();
    for (c, customer) in CUSTOMERS.iter().enumerate() {
        for (r, resource) in RESOURCES.iter().enumerate() {
            let snapshot = mirror.entitlements(customer, *resource).await.unwrap();
            out.insert(
                (c, r),
                snapshot.map(|s| {
                    let features =
                        s.features.values().map(|f| (f.feature_id.clone(), f.current_usage.unwrap())).collect();
                    (s.entitlements_updated_at, features)
                }),
            );
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_shuffle_and_duplication_ends_with_the_newest_state(
        ops in ops_strategy(),
        duplicates in prop::collection::vec(0..14usize, 0..6),
        order_seed in any::<u64>(),
    ) {
        runtime().block_on(async {
            let ddb = aws_sdk_dynamodb::Client::new(&admin_config_for(&ddb_endpoint()).await);
            let table = create_mirror_table(&ddb).await;
            let handler = MirrorHandler::new(MirrorStore::new(ddb.clone(), table.clone()));
            // Deliveries: every event once, some again, in a shuffled order.
            let mut deliveries: Vec<&Op> = ops.iter().collect();
            deliveries.extend(duplicates.iter().filter_map(|i| ops.get(*i)));
            let mut state = order_seed | 1;
            for i in (1..deliveries.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                deliveries.swap(i, (state % (i as u64 + 1)) as usize);
            }
            for op in deliveries {
                let event = StiggEvent::parse(&op.body()).unwrap();
                handler.handle(&event).await.unwrap();
            }
            let mirror = Mirror::new(ddb.clone(), table).consistent(true);
            prop_assert_eq!(actual(&mirror).await, expected(&ops), "ops: {:?}", ops);
            Ok(())
        })?;
    }
}

async fn raw_item(
    ddb: &aws_sdk_dynamodb::Client,
    table: &TableName,
    pk: &str,
    sk: &str,
) -> Option<HashMap<String, AttributeValue>> {
    ddb.get_item()
        .table_name(table.as_str())
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

#[tokio::test]
async fn a_stale_snapshot_costs_one_failed_conditional_write_and_nothing_else() {
    let recorder = Recorder::default();
    let sdk = sdk_config_for(&ddb_endpoint()).await;
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk).interceptor(recorder.clone()).build(),
    );
    let table = create_mirror_table(&aws_sdk_dynamodb::Client::new(&admin_config_for(&ddb_endpoint()).await)).await;
    let handler = MirrorHandler::new(MirrorStore::new(ddb, table));
    let newer = StiggEvent::parse(&snapshot_event("cust-w", None, T0 + 5000, &[(0, 3.0)])).unwrap();
    let older = StiggEvent::parse(&snapshot_event("cust-w", None, T0, &[(0, 1.0)])).unwrap();
    handler.handle(&newer).await.unwrap();
    let written = recorder.clone_counts();
    recorder.reset();
    handler.handle(&older).await.unwrap();
    let stale = recorder.clone_counts();
    eprintln!("mirror calls: newer snapshot {written:?}, stale snapshot {stale:?}");
    assert_eq!(stale, BTreeMap::from([("UpdateItem".to_owned(), 1)]), "one failed write and nothing else");
    assert_eq!(
        written,
        BTreeMap::from([("BatchGetItem".to_owned(), 1), ("Query".to_owned(), 1), ("UpdateItem".to_owned(), 2)]),
        "the header, the features, one read-back of the header and one Query of the features"
    );
    recorder.reset();
    let late_usage = StiggEvent::parse(&usage_event("cust-w", None, 0, T0 + 1000, 9.0)).unwrap();
    handler.handle(&late_usage).await.unwrap();
    assert_eq!(
        recorder.clone_counts(),
        BTreeMap::from([("UpdateItem".to_owned(), 1)]),
        "a stale usage event: one failed write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processor_binary_keeps_the_documented_layout_and_two_processes_end_with_the_newest() {
    // Both tables on a DynamoDB that makes each conditional write atomic, as DynamoDB does.
    let serial = SerialMoto::start().await;
    let ddb = aws_sdk_dynamodb::Client::new(&admin_config_for(&serial.endpoint).await);
    let idempotency = TableName::parse(&unique("idem")).unwrap();
    create_table(&ddb, idempotency.as_str()).await;
    let table = create_mirror_table(&ddb).await;
    let env = |table: &TableName| {
        vec![
            ("IDEMPOTENCY_TABLE", idempotency.as_str().to_owned()),
            ("ENTITLEMENT_MIRROR_TABLE", table.as_str().to_owned()),
            ("AWS_ENDPOINT_URL", endpoint()),
            ("AWS_ENDPOINT_URL_DYNAMODB", serial.endpoint.clone()),
            ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()),
        ]
    };
    // Two processor processes, each fed its own interleaving of old and new snapshots (and
    // duplicates) for the same customer, at the same time.
    let apis = [RuntimeApi::start(Duration::from_secs(60)).await, RuntimeApi::start(Duration::from_secs(60)).await];
    let _processes: Vec<_> =
        apis.iter().map(|api| FunctionProcess::spawn(binary("processor").as_path(), api, &env(&table))).collect();
    let times: Vec<i64> = (0..40).map(|i| T0 + i * 1000).collect();
    let record = |body: String, i: usize| {
        json!({"messageId": format!("sqs-{i}"), "receiptHandle": format!("rh-{i}"), "body": body,
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events", "awsRegion": "us-east-1"})
    };
    let mut batches: [Vec<Value>; 2] = [vec![], vec![]];
    for (i, t) in times.iter().enumerate() {
        // Each snapshot also has one of f2, f3, f4: the newest (39) ends with f2 alone.
        let body = snapshot_event("cust-race", Some("res-1"), *t, &[(0, i as f64), (1, 1.0), (2 + i % 3, 1.0)]);
        // Process 0 gets them newest first, process 1 oldest first; both get every other one twice.
        batches[0].insert(0, record(body.clone(), i));
        batches[1].push(record(body, 100 + i));
    }
    // Both processes at once; records they report failed (retryable) are delivered again, as SQS
    // would.
    let mut pending: Vec<(usize, Vec<Value>)> =
        batches.iter().enumerate().flat_map(|(p, b)| b.chunks(10).map(move |c| (p, c.to_vec()))).collect();
    let mut redelivered = 0;
    for _round in 0..10 {
        if pending.is_empty() {
            break;
        }
        let waits: Vec<_> =
            pending.iter().map(|(p, chunk)| (*p, chunk.clone(), apis[*p].submit(&json!({"Records": chunk})))).collect();
        let mut again = Vec::new();
        for (p, chunk, wait) in waits {
            let body = match tokio::time::timeout(Duration::from_secs(60), wait).await {
                Ok(Ok(common::runtime_api::Outcome::Response(body))) => body,
                other => panic!("invocation failed: {other:?}"),
            };
            let v: Value = serde_json::from_slice(&body).unwrap();
            let failed: Vec<&str> = v["batchItemFailures"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|f| f["itemIdentifier"].as_str())
                .collect();
            let retry: Vec<Value> =
                chunk.into_iter().filter(|r| failed.contains(&r["messageId"].as_str().unwrap())).collect();
            redelivered += retry.len();
            if !retry.is_empty() {
                again.push((p, retry));
            }
        }
        pending = again;
    }
    assert!(pending.is_empty(), "still failing after 10 deliveries: {pending:?}");
    eprintln!("mirror race: {redelivered} of 80 records redelivered after a retryable failure");
    let item = raw_item(&ddb, &table, "customer#cust-race", "resource#res-1").await.expect("the header exists");
    let newest = *times.last().unwrap();
    assert_eq!(item["entitlementsUpdatedAt"].as_n().unwrap(), &newest.to_string());
    assert_eq!(item["entitlementsUpdatedAtIso"].as_s().unwrap(), &iso(newest));
    assert_eq!(item["customerId"].as_s().unwrap(), "cust-race");
    assert_eq!(item["resourceId"].as_s().unwrap(), "res-1");
    assert_eq!(item["schemaVersion"].as_n().unwrap(), "2");
    assert_eq!(item["featureCount"].as_n().unwrap(), "3");
    assert!(item["messageId"].as_s().unwrap().ends_with(&newest.to_string()));
    assert!(!item.contains_key("features"), "a header holds no features");
    let number = |v: &AttributeValue| v.as_n().unwrap().parse::<f64>().unwrap();
    let f0 = raw_item(&ddb, &table, "customer#cust-race", "feature#res-1#f0").await.expect("one item per feature");
    assert_eq!(number(&f0["currentUsage"]), 39.0);
    assert_eq!(f0["usageUpdatedAt"].as_n().unwrap(), &newest.to_string());
    assert_eq!(f0["entitlementsUpdatedAt"].as_n().unwrap(), &newest.to_string());
    assert_eq!((f0["featureId"].as_s().unwrap(), f0["resourceId"].as_s().unwrap()), (&"f0".into(), &"res-1".into()));
    let entitlement: Value = serde_json::from_str(f0["entitlement"].as_s().unwrap()).unwrap();
    assert_eq!(entitlement["feature"]["featureType"], "NUMBER");
    let mirror = Mirror::new(ddb.clone(), table.clone()).consistent(true);
    let features: Vec<String> =
        mirror.entitlements("cust-race", Some("res-1")).await.unwrap().unwrap().features.into_keys().collect();
    assert_eq!(features, ["f0", "f1", "f2"], "the features older snapshots had and the newest has not are out");

    // A usage event newer than the snapshot, then a deletion, then a late old snapshot: the
    // customer stays deleted.
    let api = &apis[0];
    let invoke = |body: String, id: &'static str| {
        let mut r = record(body, 0);
        r["messageId"] = json!(id);
        let batch = json!({"Records": [r]});
        async move { api.invoke(&batch, Duration::from_secs(30)).await }
    };
    invoke(usage_event("cust-race", Some("res-1"), 0, newest + 500, 77.0), "u1").await.unwrap();
    let f0 = raw_item(&ddb, &table, "customer#cust-race", "feature#res-1#f0").await.unwrap();
    assert_eq!(number(&f0["currentUsage"]), 77.0);
    assert_eq!(f0["usage"].as_m().unwrap()["at"].as_n().unwrap(), &(newest + 500).to_string());
    invoke(deletion_event("cust-race", newest + 1000), "d1").await.unwrap();
    invoke(snapshot_event("cust-race", Some("res-1"), newest + 800, &[(0, 1.0)]), "late").await.unwrap();
    let tombstone = raw_item(&ddb, &table, "customer#cust-race", "tombstone").await.expect("a tombstone");
    assert_eq!(tombstone["deletedAt"].as_n().unwrap(), &(newest + 1000).to_string());
    assert!(mirror.entitlements("cust-race", Some("res-1")).await.unwrap().is_none(), "not resurrected");
    // Re-created: a snapshot newer than the deletion is written.
    invoke(snapshot_event("cust-race", Some("res-1"), newest + 2000, &[(0, 5.0)]), "again").await.unwrap();
    let access = mirror.check("cust-race", Some("res-1"), "f0", 95.0).await.unwrap();
    assert!(access.has_access && access.remaining == Some(95.0), "{access:?}");
    assert!(!mirror.check("cust-race", Some("res-1"), "f0", 96.0).await.unwrap().has_access);
}

/// The first attempt of an event did its first write and then failed (a throttle, a timeout):
/// its redelivery must finish the job, not count as stale.
#[tokio::test]
async fn a_redelivered_deletion_or_snapshot_finishes_what_the_failed_attempt_started() {
    let ddb = aws_sdk_dynamodb::Client::new(&admin_config_for(&ddb_endpoint()).await);
    let table = create_mirror_table(&ddb).await;
    let handler = MirrorHandler::new(MirrorStore::new(ddb.clone(), table.clone()));
    let mirror = Mirror::new(ddb.clone(), table.clone()).consistent(true);
    let tombstone = |customer: &str, t: i64| {
        ddb.put_item()
            .table_name(table.as_str())
            .item("pk", AttributeValue::S(format!("customer#{customer}")))
            .item("sk", AttributeValue::S("tombstone".into()))
            .item("deletedAt", AttributeValue::N(t.to_string()))
            .send()
    };
    // A deletion whose tombstone was written but whose sweep failed.
    handler.handle(&StiggEvent::parse(&snapshot_event("c-del", Some("r"), T0, &[(0, 1.0)])).unwrap()).await.unwrap();
    tombstone("c-del", T0 + 1000).await.unwrap();
    handler.handle(&StiggEvent::parse(&deletion_event("c-del", T0 + 1000)).unwrap()).await.unwrap();
    assert!(mirror.entitlements("c-del", Some("r")).await.unwrap().is_none(), "the retried deletion swept");

    // An older snapshot written for a customer deleted meanwhile, whose read-back failed.
    tombstone("c-snap", T0 + 5000).await.unwrap();
    let body = snapshot_event("c-snap", None, T0, &[(0, 1.0)]);
    let write = stigg_webhooks::mirror::SnapshotWrite::from_event(&StiggEvent::parse(&body).unwrap()).unwrap();
    for item in write.items(0).unwrap() {
        ddb.put_item().table_name(table.as_str()).set_item(Some(item)).send().await.unwrap();
    }
    assert!(mirror.entitlements("c-snap", None).await.unwrap().is_some(), "the half-done first attempt");
    handler.handle(&StiggEvent::parse(&body).unwrap()).await.unwrap();
    assert!(mirror.entitlements("c-snap", None).await.unwrap().is_none(), "the redelivery saw the deletion");
    let access = mirror.check("c-snap", None, "f0", 0.0).await.unwrap();
    assert_eq!(access.deny_reason, Some(DenyReason::CustomerNotFound), "its feature went too");

    // A snapshot whose first attempt wrote its header, then was swept by a newer deletion, then
    // wrote features after the sweep and was cut off: its redelivery's header is refused, and
    // the features it left must not keep granting access to the deleted customer.
    let body = snapshot_event("c-late", None, T0, &[(0, 1.0), (1, 2.0)]);
    handler.handle(&StiggEvent::parse(&body).unwrap()).await.unwrap();
    handler.handle(&StiggEvent::parse(&deletion_event("c-late", T0 + 1000)).unwrap()).await.unwrap();
    let write = stigg_webhooks::mirror::SnapshotWrite::from_event(&StiggEvent::parse(&body).unwrap()).unwrap();
    for item in write.items(0).unwrap().into_iter().filter(|i| i["sk"].as_s().is_ok_and(|k| k.starts_with("feature#")))
    {
        ddb.put_item().table_name(table.as_str()).set_item(Some(item)).send().await.unwrap();
    }
    let leaked = mirror.check("c-late", None, "f0", 0.0).await.unwrap();
    assert!(leaked.has_access, "the first attempt's late feature writes");
    handler.handle(&StiggEvent::parse(&body).unwrap()).await.unwrap();
    let access = mirror.check("c-late", None, "f0", 0.0).await.unwrap();
    assert!(!access.has_access, "the redelivery took its own features back out");
}

/// Up to what SQS carries (1 MiB): 3,000 features of this suite's entitlement shape are a
/// ~0.9 MB `entitlements.updated`. Every feature is mirrored, a check still reads one small item,
/// and a late snapshot, a usage event and a deletion apply as on a small one.
#[tokio::test]
async fn a_snapshot_of_3000_features_is_mirrored_and_a_check_reads_one_small_item() {
    let recorder = Recorder::default();
    // Generous timeouts: moto took more than the functions' 5 s to answer the Query of 3,000
    // items on a loaded fresh-clone CI run (DynamoDB pages it in 1 MB pages of milliseconds);
    // the functions' own timeouts are exercised by the fault suite.
    let sdk = admin_config_for(&ddb_endpoint()).await;
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk).interceptor(recorder.clone()).build(),
    );
    let table = create_mirror_table(&aws_sdk_dynamodb::Client::new(&admin_config_for(&ddb_endpoint()).await)).await;
    let handler = MirrorHandler::new(MirrorStore::new(ddb.clone(), table.clone()));
    let handle = |body: String| {
        let handler = handler.clone();
        async move { handler.handle(&StiggEvent::parse(&body).unwrap()).await }
    };
    let started = std::time::Instant::now();
    let usages: Vec<(usize, f64)> = (0..3000).map(|f| (f, (f % 50) as f64)).collect();
    let body = snapshot_event("cust-big", Some("res-1"), T0, &usages);
    assert!(body.len() > 850_000 && body.len() < 1_000_000, "{} bytes", body.len());
    recorder.reset();
    handle(body).await.expect("a snapshot the queue carries is mirrored");
    let writes = recorder.clone_counts();
    eprintln!("3,000-feature snapshot: {writes:?} in {:.1} s against moto", started.elapsed().as_secs_f64());
    assert_eq!(writes["UpdateItem"], 3001, "the header and one write per feature");

    let mirror = Mirror::new(ddb.clone(), table.clone());
    recorder.reset();
    let access = mirror.check("cust-big", Some("res-1"), "f2999", 1.0).await.unwrap();
    assert!(access.has_access && access.current_usage == Some(49.0) && access.remaining == Some(51.0), "{access:?}");
    assert_eq!(recorder.clone_counts(), BTreeMap::from([("GetItem".to_owned(), 1)]), "one read per check");
    let item = raw_item(&ddb, &table, "customer#cust-big", "feature#res-1#f2999").await.unwrap();
    let bytes = stigg_webhooks::mirror::item_size(&item);
    assert!(bytes < 1024, "{bytes} B: half a read unit eventually consistent");
    let consistent = Mirror::new(ddb.clone(), table.clone()).consistent(true);
    let snapshot = consistent.entitlements("cust-big", Some("res-1")).await.unwrap().expect("mirrored");
    assert_eq!(snapshot.features.len(), 3000);
    assert_eq!(snapshot.features["f1234"].current_usage, Some(34.0));

    // A late older snapshot: one refused write. A usage event: one write.
    recorder.reset();
    handle(snapshot_event("cust-big", Some("res-1"), T0 - 1000, &usages)).await.unwrap();
    assert_eq!(recorder.clone_counts(), BTreeMap::from([("UpdateItem".to_owned(), 1)]), "stale: nothing else");
    handle(usage_event("cust-big", Some("res-1"), 2998, T0 + 3000, 99.0)).await.unwrap();
    let used = consistent.check("cust-big", Some("res-1"), "f2998", 2.0).await.unwrap();
    assert!(!used.has_access && used.current_usage == Some(99.0), "{used:?}");
    recorder.reset();
    let none = consistent.check("cust-big", Some("res-1"), "f3000", 1.0).await.unwrap();
    assert_eq!(none.deny_reason, Some(DenyReason::NoFeatureEntitlement), "{none:?}");
    assert_eq!(recorder.count("GetItem"), 2, "no entitlement: the feature, then the header");

    // The deletion sweeps all 3,000 (a newer snapshot dropping features removes them the same
    // way: the shuffle property and the two-process race cover it on fewer features).
    handle(deletion_event("cust-big", T0 + 4000)).await.unwrap();
    assert!(consistent.entitlements("cust-big", Some("res-1")).await.unwrap().is_none());
    let gone = consistent.check("cust-big", Some("res-1"), "f0", 0.0).await.unwrap();
    assert_eq!(gone.deny_reason, Some(DenyReason::CustomerNotFound));
    let f0 = raw_item(&ddb, &table, "customer#cust-big", "feature#res-1#f0").await.unwrap();
    assert!(f0.contains_key("deletedAt") && !f0.contains_key("entitlement"), "every feature swept");
    eprintln!("3,000 features against moto: {:.1} s", started.elapsed().as_secs_f64());
}

/// `timestamp` may be omitted (Stigg's reference): `customer.deleted` and
/// `entitlement.usage_exceeded` then take `updatedAt`, else when SQS received them.
#[tokio::test]
async fn a_deletion_or_usage_event_without_timestamp_applies_at_updated_at_or_its_delivery() {
    let ddb = aws_sdk_dynamodb::Client::new(&admin_config_for(&ddb_endpoint()).await);
    let table = create_mirror_table(&ddb).await;
    let handler = MirrorHandler::new(MirrorStore::new(ddb.clone(), table.clone()));
    let mirror = Mirror::new(ddb.clone(), table.clone()).consistent(true);
    let sent = |ms: i64| Some(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64));
    let without_timestamp = |body: String| {
        let mut v: Value = serde_json::from_str(&body).unwrap();
        v.as_object_mut().unwrap().remove("timestamp");
        v
    };
    for customer in ["c-upd", "c-sent"] {
        handler.handle(&StiggEvent::parse(&snapshot_event(customer, None, T0, &[(0, 1.0)])).unwrap()).await.unwrap();
    }

    // Usage: `updatedAt`, then the delivery.
    let mut usage = without_timestamp(usage_event("c-upd", None, 0, T0, 7.0));
    usage["updatedAt"] = json!(iso(T0 + 100));
    let event = StiggEvent::parse(&usage.to_string()).unwrap().with_sent_at(sent(T0 + 9000));
    handler.handle(&event).await.expect("no timestamp is no error");
    let access = mirror.check("c-upd", None, "f0", 0.0).await.unwrap();
    assert_eq!(access.current_usage, Some(7.0));
    let f0 = raw_item(&ddb, &table, "customer#c-upd", "feature##f0").await.unwrap();
    assert_eq!(f0["usageUpdatedAt"].as_n().unwrap(), &(T0 + 100).to_string(), "at its updatedAt");
    let usage = without_timestamp(usage_event("c-sent", None, 0, T0, 8.0));
    let event = StiggEvent::parse(&usage.to_string()).unwrap().with_sent_at(sent(T0 + 200));
    handler.handle(&event).await.unwrap();
    assert_eq!(mirror.check("c-sent", None, "f0", 0.0).await.unwrap().current_usage, Some(8.0));

    // Deletion: `updatedAt`, then the delivery.
    let mut deletion = without_timestamp(deletion_event("c-upd", T0));
    deletion["updatedAt"] = json!(iso(T0 + 300));
    handler.handle(&StiggEvent::parse(&deletion.to_string()).unwrap()).await.expect("no timestamp is no error");
    let tombstone = raw_item(&ddb, &table, "customer#c-upd", "tombstone").await.expect("tombstoned");
    assert_eq!(tombstone["deletedAt"].as_n().unwrap(), &(T0 + 300).to_string());
    assert_eq!(tombstone["deletedAtIso"].as_s().unwrap(), &iso(T0 + 300));
    assert!(mirror.entitlements("c-upd", None).await.unwrap().is_none());
    let deletion = without_timestamp(deletion_event("c-sent", T0));
    let event = StiggEvent::parse(&deletion.to_string()).unwrap().with_sent_at(sent(T0 + 5000));
    handler.handle(&event).await.unwrap();
    let tombstone = raw_item(&ddb, &table, "customer#c-sent", "tombstone").await.expect("tombstoned");
    assert_eq!(tombstone["deletedAt"].as_n().unwrap(), &(T0 + 5000).to_string());
    assert!(mirror.entitlements("c-sent", None).await.unwrap().is_none());

    // Ordering holds at the delivery's time: a late snapshot from before it stays out, one
    // after it (a re-created customer) is written.
    handler.handle(&StiggEvent::parse(&snapshot_event("c-sent", None, T0 + 4000, &[(0, 1.0)])).unwrap()).await.unwrap();
    assert!(mirror.entitlements("c-sent", None).await.unwrap().is_none(), "not resurrected");
    handler.handle(&StiggEvent::parse(&snapshot_event("c-sent", None, T0 + 6000, &[(0, 2.0)])).unwrap()).await.unwrap();
    let access = mirror.check("c-sent", None, "f0", 0.0).await.unwrap();
    assert!(access.has_access && access.current_usage == Some(2.0), "{access:?}");
    // Nothing to go by at all: permanent.
    let deletion = without_timestamp(deletion_event("c-none", T0));
    let e = handler.handle(&StiggEvent::parse(&deletion.to_string()).unwrap()).await.unwrap_err();
    assert!(matches!(e, stigg_webhooks::handler::HandlerError::Permanent(_)), "{e:?}");
}

/// JSON as schema 1 stored an entitlement (a DynamoDB map).
fn attribute(v: &Value) -> AttributeValue {
    match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(t) => AttributeValue::S(t.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(attribute).collect()),
        Value::Object(o) => AttributeValue::M(o.iter().map(|(k, v)| (k.clone(), attribute(v))).collect()),
    }
}

/// A table written by the previous layout (every feature in the header) still answers, and the
/// next snapshot moves the customer to one item per feature, usage included.
#[tokio::test]
async fn a_schema_1_item_is_read_until_the_next_snapshot_rewrites_it() {
    let ddb = aws_sdk_dynamodb::Client::new(&admin_config_for(&ddb_endpoint()).await);
    let table = create_mirror_table(&ddb).await;
    let handler = MirrorHandler::new(MirrorStore::new(ddb.clone(), table.clone()));
    let mirror = Mirror::new(ddb.clone(), table.clone()).consistent(true);
    let old: Value = serde_json::from_str(&snapshot_event("c-v1", None, T0, &[(0, 5.0), (1, 1.0)])).unwrap();
    let features = old["entitlements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["feature"]["id"].as_str().unwrap().to_owned(), attribute(e)))
        .collect();
    let usage = |u: &str, at: i64| {
        AttributeValue::M(HashMap::from([
            ("currentUsage".to_owned(), AttributeValue::N(u.into())),
            ("at".to_owned(), AttributeValue::N(at.to_string())),
        ]))
    };
    ddb.put_item()
        .table_name(table.as_str())
        .item("pk", AttributeValue::S("customer#c-v1".into()))
        .item("sk", AttributeValue::S("resource#".into()))
        .item("customerId", AttributeValue::S("c-v1".into()))
        .item("entitlementsUpdatedAt", AttributeValue::N(T0.to_string()))
        .item("messageId", AttributeValue::S("v1".into()))
        .item("schemaVersion", AttributeValue::N("1".into()))
        .item("features", AttributeValue::M(features))
        // A usage event newer than the next snapshot, recorded by the previous layout.
        .item("usage#f1", usage("60", T0 + 2000))
        .send()
        .await
        .unwrap();
    let access = mirror.check("c-v1", None, "f0", 95.0).await.unwrap();
    assert!(access.has_access && access.current_usage == Some(5.0), "{access:?}");
    assert_eq!(mirror.entitlements("c-v1", None).await.unwrap().unwrap().features.len(), 2);

    handler
        .handle(&StiggEvent::parse(&snapshot_event("c-v1", None, T0 + 1000, &[(0, 6.0), (1, 2.0)])).unwrap())
        .await
        .unwrap();
    let header = raw_item(&ddb, &table, "customer#c-v1", "resource#").await.unwrap();
    assert!(!header.contains_key("features") && !header.contains_key("usage#f1"), "{header:?}");
    assert_eq!(header["schemaVersion"].as_n().unwrap(), "2");
    let snapshot = mirror.entitlements("c-v1", None).await.unwrap().unwrap();
    assert_eq!(snapshot.features["f0"].current_usage, Some(6.0));
    assert_eq!(snapshot.features["f1"].current_usage, Some(60.0), "the newer usage carried over");
}
