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
use stigg_webhooks::mirror::{Mirror, MirrorHandler, MirrorStore};

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
        BTreeMap::from([("BatchGetItem".to_owned(), 1), ("UpdateItem".to_owned(), 1)]),
        "a write and one read-back"
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
        let body = snapshot_event("cust-race", Some("res-1"), *t, &[(0, i as f64), (1, 1.0)]);
        // Process 0 gets them newest first, process 1 oldest first; both get every other one twice.
        batches[0].insert(0, record(body.clone(), i));
        batches[1].push(record(body, 100 + i));
    }
    // Both processes at once; records they report failed (a transaction conflict between them is
    // retryable) are delivered again, as SQS would.
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
    eprintln!("mirror race: {redelivered} of 80 records redelivered after a retryable failure (transaction conflicts)");
    let item = raw_item(&ddb, &table, "customer#cust-race", "resource#res-1").await.expect("the item exists");
    let newest = *times.last().unwrap();
    assert_eq!(item["entitlementsUpdatedAt"].as_n().unwrap(), &newest.to_string());
    assert_eq!(item["entitlementsUpdatedAtIso"].as_s().unwrap(), &iso(newest));
    assert_eq!(item["customerId"].as_s().unwrap(), "cust-race");
    assert_eq!(item["resourceId"].as_s().unwrap(), "res-1");
    assert_eq!(item["schemaVersion"].as_n().unwrap(), "1");
    assert!(item["messageId"].as_s().unwrap().ends_with(&newest.to_string()));
    let features = item["features"].as_m().unwrap();
    let number = |v: &AttributeValue| v.as_n().unwrap().parse::<f64>().unwrap();
    assert_eq!(number(&features["f0"].as_m().unwrap()["currentUsage"]), 39.0);
    assert_eq!(features["f0"].as_m().unwrap()["feature"].as_m().unwrap()["featureType"].as_s().unwrap(), "NUMBER");
    assert_eq!(features["f0"].as_m().unwrap()["usageUpdatedAt"].as_n().unwrap(), &newest.to_string());

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
    let item = raw_item(&ddb, &table, "customer#cust-race", "resource#res-1").await.unwrap();
    assert_eq!(number(&item["features"].as_m().unwrap()["f0"].as_m().unwrap()["currentUsage"]), 77.0);
    assert_eq!(item["usage#f0"].as_m().unwrap()["at"].as_n().unwrap(), &(newest + 500).to_string());
    invoke(deletion_event("cust-race", newest + 1000), "d1").await.unwrap();
    invoke(snapshot_event("cust-race", Some("res-1"), newest + 800, &[(0, 1.0)]), "late").await.unwrap();
    let tombstone = raw_item(&ddb, &table, "customer#cust-race", "tombstone").await.expect("a tombstone");
    assert_eq!(tombstone["deletedAt"].as_n().unwrap(), &(newest + 1000).to_string());
    let mirror = Mirror::new(ddb.clone(), table.clone()).consistent(true);
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
    let mut put = ddb.put_item().table_name(table.as_str());
    for (k, v) in write.item(0) {
        put = put.item(k, v);
    }
    put.send().await.unwrap();
    assert!(mirror.entitlements("c-snap", None).await.unwrap().is_some(), "the half-done first attempt");
    handler.handle(&StiggEvent::parse(&body).unwrap()).await.unwrap();
    assert!(mirror.entitlements("c-snap", None).await.unwrap().is_none(), "the redelivery saw the deletion");
}
