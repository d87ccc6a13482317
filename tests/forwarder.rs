//! The EventBridge forwarder on the real processor binary, against moto's EventBridge (a bus, a
//! rule to a subscriber queue, an archive, replays) behind a proxy that injects what moto cannot
//! (a failed entry, the bus down) and records every PutEvents request.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_eventbridge::types::{ReplayDestination, Target};
use common::bus_proxy::BusProxy;
use common::runtime_api::{FunctionProcess, Outcome, RuntimeApi, binary};
use common::*;
use serde_json::{Value, json};
use stigg_webhooks::config::{QueueUrl, TableName};
use stigg_webhooks::mirror::Mirror;

const SOURCE: &str = "stigg.webhooks";
const T0: i64 = 1_790_000_000_000;

fn iso(ms: i64) -> String {
    stigg_webhooks::metrics::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
}

/// A bus with a subscriber queue behind a rule for every forwarded event, an archive, the
/// processor's tables, and the proxy the processor reaches EventBridge through.
struct Stack {
    res: Resources,
    eb: aws_sdk_eventbridge::Client,
    bus_arn: String,
    archive_arn: String,
    subscriber: QueueUrl,
    dead_letters: QueueUrl,
    mirror: TableName,
    proxy: BusProxy,
    /// DynamoDB for both tables, when the test races conditional writes (see [`SerialMoto`]).
    serial: Option<SerialMoto>,
}

impl Stack {
    async fn new() -> Self {
        Self::on(None).await
    }

    /// With both tables on a DynamoDB whose conditional writes are atomic per item, as
    /// DynamoDB's are: moto's threaded server is not, and a batch's snapshots of one customer
    /// race.
    async fn serial() -> Self {
        Self::on(Some(SerialMoto::start().await)).await
    }

    async fn on(serial: Option<SerialMoto>) -> Self {
        let mut res = Resources::create(false).await;
        if let Some(serial) = &serial {
            res.ddb = aws_sdk_dynamodb::Client::new(&admin_config_for(&serial.endpoint).await);
            create_table(&res.ddb, res.table.as_str()).await;
        }
        let eb = aws_sdk_eventbridge::Client::new(&admin_config_for(&endpoint()).await);
        let bus = unique("bus");
        let bus_arn = eb.create_event_bus().name(&bus).send().await.unwrap().event_bus_arn.unwrap();
        let archive = eb
            .create_archive()
            .archive_name(unique("archive"))
            .event_source_arn(&bus_arn)
            .event_pattern(json!({"source": [SOURCE]}).to_string())
            .send()
            .await
            .unwrap();
        let subscriber = create_queue(&res.sqs, &unique("subscriber"), false).await;
        let dead_letters = create_queue(&res.sqs, &unique("dlq"), false).await;
        let target = queue_arn(&res.sqs, &subscriber).await;
        let stack = Self {
            archive_arn: archive.archive_arn.unwrap(),
            mirror: create_mirror_table(&res.ddb).await,
            proxy: BusProxy::start(&endpoint()).await,
            res,
            eb,
            bus_arn,
            subscriber,
            dead_letters,
            serial,
        };
        stack.rule(&unique("all"), json!({"source": [SOURCE]}), &target).await;
        stack
    }

    async fn rule(&self, name: &str, pattern: Value, target_arn: &str) {
        self.eb
            .put_rule()
            .name(name)
            .event_bus_name(&self.bus_arn)
            .event_pattern(pattern.to_string())
            .send()
            .await
            .unwrap();
        let target = Target::builder().id("q").arn(target_arn).build().unwrap();
        self.eb.put_targets().rule(name).event_bus_name(&self.bus_arn).targets(target).send().await.unwrap();
    }

    fn env(&self, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("IDEMPOTENCY_TABLE", self.res.table.as_str().to_owned()),
            ("ENTITLEMENT_MIRROR_TABLE", self.mirror.as_str().to_owned()),
            ("DEAD_LETTER_QUEUE_URL", self.dead_letters.as_str().to_owned()),
            ("EVENT_BUS_NAME", self.bus_arn.clone()),
            ("AWS_ENDPOINT_URL", endpoint()),
            ("AWS_ENDPOINT_URL_EVENTBRIDGE", self.proxy.url()),
            ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()),
            ("AWS_ENDPOINT_URL_DYNAMODB", self.serial.as_ref().map_or_else(ddb_endpoint, |s| s.endpoint.clone())),
            // The window only bounds the wait for a slow record: a batch's records share one
            // request because the processor says when all of them have joined or ended (a batch
            // of 1 does not wait: see the bench and the batcher's unit test). A loaded CI machine
            // once took more than the default 250 ms to bring a cold process's mirror records to
            // the forwarder, so the bound here is generous.
            ("EVENT_BUS_BATCH_WINDOW_MS", "5000".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    }

    async fn processor(&self, extra: &[(&'static str, &str)]) -> Processor {
        let api = RuntimeApi::start(Duration::from_secs(60)).await;
        let process = FunctionProcess::spawn(binary("processor").as_path(), &api, &self.env(extra));
        Processor { api, process }
    }

    /// The subscriber's messages, as EventBridge events.
    async fn delivered(&self) -> Vec<Value> {
        drain(&self.res.sqs, &self.subscriber)
            .await
            .iter()
            .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
            .collect()
    }

    /// Replays the whole archive to the events queue (the rule `make replay TO_HANDLERS=1`
    /// creates), and returns the records as Lambda would hand them to the processor.
    async fn replay_to_handlers(&self, name: &str) -> Vec<Value> {
        let queue_arn = queue_arn(&self.res.sqs, &self.res.queue).await;
        self.rule(&format!("{name}-rule"), json!({"replay-name": [name]}), &queue_arn).await;
        let now = aws_smithy_types::DateTime::from(std::time::SystemTime::now());
        self.eb
            .start_replay()
            .replay_name(name)
            .event_source_arn(&self.archive_arn)
            .event_start_time(aws_smithy_types::DateTime::from_secs(0))
            .event_end_time(now)
            .destination(ReplayDestination::builder().arn(&self.bus_arn).build().unwrap())
            .send()
            .await
            .unwrap();
        let messages = drain(&self.res.sqs, &self.res.queue).await;
        messages.iter().map(|m| lambda_record(m, "arn:aws:sqs:us-east-1:123456789012:events")).collect()
    }

    async fn done_handlers(&self, key: &str) -> BTreeSet<String> {
        let item = self.res.item(&format!("processed#{key}")).await.unwrap_or_default();
        item.get("done_handlers").and_then(|v| v.as_ss().ok()).map(|s| s.iter().cloned().collect()).unwrap_or_default()
    }
}

struct Processor {
    api: RuntimeApi,
    process: FunctionProcess,
}

impl Processor {
    /// Delivers the records as one batch and asserts none was reported failed, showing the
    /// processor's WARN and ERROR lines (the cause) when one was.
    async fn deliver_all(&self, records: &[Value]) {
        let failed = self.deliver(records).await;
        if !failed.is_empty() {
            let causes: Vec<String> =
                self.process.lines().into_iter().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
            panic!("records reported failed: {failed:?}\n{}", causes.join("\n"));
        }
    }

    /// Delivers the records as one batch; the ids the processor reported failed.
    async fn deliver(&self, records: &[Value]) -> Vec<String> {
        let wait = self.api.submit(&json!({"Records": records}));
        let body = match tokio::time::timeout(Duration::from_secs(60), wait).await {
            Ok(Ok(Outcome::Response(body))) => body,
            other => panic!("invocation failed: {other:?}"),
        };
        let v: Value = serde_json::from_slice(&body).unwrap();
        v["batchItemFailures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap().into())
            .collect()
    }
}

fn record(body: &str, id: &str) -> Value {
    json!({"messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": T0.to_string()}, "messageAttributes": {},
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events", "awsRegion": "us-east-1"})
}

/// Stigg's documented examples (events/stigg), each under a fresh message id.
fn fixtures(n: usize, tag: &str) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir("events/stigg").unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    (0..n)
        .map(|i| {
            let mut e: Value =
                serde_json::from_str(&std::fs::read_to_string(&files[i % files.len()]).unwrap()).unwrap();
            e["messageId"] = json!(format!("{tag}-{i}"));
            e
        })
        .collect()
}

fn snapshot(customer: &str, t: i64, feature: &str) -> Value {
    json!({"type": "entitlements.updated", "messageId": format!("snap-{customer}-{t}"), "timestamp": iso(t),
        "customer": {"id": customer}, "resource": null, "entitlementsUpdatedAt": iso(t),
        "entitlements": [{"feature": {"id": feature, "featureType": "BOOLEAN"}, "hasUnlimitedUsage": false}]})
}

fn detail_key(event: &Value) -> String {
    event["detail"]["stiggWebhooks"]["idempotencyKey"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_events_reach_the_bus_once_each_with_the_documented_envelope_a_put_per_batch() {
    let s = Stack::new().await;
    let p = s.processor(&[]).await;
    let mut events = fixtures(24, "fwd");
    // One without any id: its key is the SHA-256 of the body, and the bus carries it.
    events.push(json!({"type": "credits.balance.usage_low", "customerId": "c-hash", "timestamp": iso(T0)}));
    let records: Vec<Value> =
        events.iter().enumerate().map(|(i, e)| record(&e.to_string(), &format!("sqs-{i}"))).collect();
    for batch in records.chunks(10) {
        p.deliver_all(batch).await;
    }
    assert_eq!(s.proxy.requests(), [10, 10, 5], "one PutEvents per SQS batch");

    let delivered = s.delivered().await;
    assert_eq!(delivered.len(), 25);
    let by_key: HashMap<String, &Value> = delivered.iter().map(|d| (detail_key(d), d)).collect();
    assert_eq!(by_key.len(), 25, "each once");
    for (i, sent) in events.iter().enumerate() {
        let key = sent["messageId"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| stigg_webhooks::event::sha256_hex(sent.to_string().as_bytes()));
        let got = by_key.get(&key).unwrap_or_else(|| panic!("event {i} ({key}) not on the bus"));
        assert_eq!(got["source"], SOURCE);
        assert_eq!(got["detail-type"], sent["type"]);
        let mut detail = got["detail"].clone();
        let metadata = detail.as_object_mut().unwrap().remove("stiggWebhooks").unwrap();
        assert_eq!(&detail, sent, "the detail is Stigg's payload");
        assert_eq!(metadata["idempotencyKey"], key.as_str());
        assert_eq!(metadata["receivedAt"], T0, "when it first reached the queue");
        if let Some(trace) = sent.get("traceId") {
            assert_eq!(&metadata["traceId"], trace);
        }
    }
    assert_eq!(s.proxy.put().values().sum::<usize>(), 25);

    // SQS delivers the batch again: every record a duplicate, nothing put again.
    for batch in records.chunks(10) {
        p.deliver_all(batch).await;
    }
    assert_eq!(s.proxy.requests().len(), 3);
    assert!(s.delivered().await.is_empty());
    let lines = p.process.settled_lines().await;
    assert_eq!(emf_sum(&lines, "EventsForwarded", Some(("Outcome", "forwarded"))), 25.0);
    assert_eq!(emf_sum(&lines, "PutEventsCalls", None), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_entry_is_sent_again_alone_and_an_entry_failing_throughout_retries_only_its_record() {
    let s = Stack::new().await;
    let p = s.processor(&[]).await;
    let events = fixtures(5, "partial");
    s.proxy.fail_entries("partial-1", 1);
    // Fails every attempt of this run (3), then goes through on the redelivery.
    s.proxy.fail_entries("partial-3", 3);
    let records: Vec<Value> =
        events.iter().enumerate().map(|(i, e)| record(&e.to_string(), &format!("sqs-{i}"))).collect();
    assert_eq!(p.deliver(&records).await, ["sqs-3"], "only the record whose entry never went through");
    assert_eq!(s.proxy.requests(), [5, 2, 1], "then the failed entries alone");
    assert_eq!(s.done_handlers("partial-3").await, BTreeSet::from(["logging".to_owned()]), "the rest ran");

    p.deliver_all(&records[3..4]).await;
    assert_eq!(s.proxy.requests().len(), 4);
    let put = s.proxy.put();
    assert_eq!(put.len(), 5);
    assert!(put.values().all(|n| *n == 1), "each put once: {put:?}");
    assert_eq!(s.delivered().await.len(), 5);
    let lines = p.process.settled_lines().await;
    assert_eq!(emf_sum(&lines, "EventsForwarded", Some(("Outcome", "failed"))), 1.0);
    assert_eq!(emf_sum(&lines, "EventsForwarded", Some(("Outcome", "forwarded"))), 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_bus_down_only_the_forwarder_retries_and_the_other_handlers_ran_once() {
    let s = Stack::new().await;
    let p = s.processor(&[]).await;
    let events: Vec<Value> = (0..4).map(|i| snapshot(&format!("c-down-{i}"), T0, "f-1")).collect();
    let records: Vec<Value> =
        events.iter().enumerate().map(|(i, e)| record(&e.to_string(), &format!("sqs-{i}"))).collect();
    s.proxy.set_down(true);
    assert_eq!(p.deliver(&records).await.len(), 4, "every record comes back for the forwarder");
    for e in &events {
        let done = s.done_handlers(e["messageId"].as_str().unwrap()).await;
        assert_eq!(done, BTreeSet::from(["entitlement-mirror".to_owned(), "logging".to_owned()]));
    }
    let down = p.process.settled_lines().await;
    assert_eq!(emf_sum(&down, "MirrorWrites", None), 4.0);

    s.proxy.set_down(false);
    p.deliver_all(&records).await;
    let lines = p.process.settled_lines().await;
    assert_eq!(emf_sum(&lines, "MirrorWrites", None), 4.0, "the mirror did not run again");
    assert_eq!(s.proxy.put().len(), 4);
    assert_eq!(s.delivered().await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_700_kib_event_is_forwarded_whole_and_above_the_entry_limit_it_is_reduced_counted_and_logged() {
    let s = Stack::new().await;
    let big = |id: &str| {
        json!({"type": "entitlements.updated", "messageId": id, "timestamp": iso(T0), "customer": {"id": "c-big"},
            "entitlementsUpdatedAt": iso(T0), "entitlements": [], "padding": "x".repeat(700 * 1024)})
    };
    // 1 MB entries (the default): two 700 KiB events cannot share a request.
    let p = s.processor(&[]).await;
    let records = [record(&big("big-1").to_string(), "sqs-1"), record(&big("big-2").to_string(), "sqs-2")];
    p.deliver_all(&records).await;
    assert_eq!(s.proxy.requests(), [1, 1]);
    let delivered = s.delivered().await;
    assert_eq!(delivered.len(), 2);
    assert!(delivered.iter().all(|d| d["detail"]["padding"].as_str().unwrap().len() == 700 * 1024), "whole");

    // Where entries are limited to 256 KiB: the reduced detail, counted and logged.
    let limited = s.processor(&[("EVENT_BUS_MAX_ENTRY_BYTES", "262144")]).await;
    limited.deliver_all(&[record(&big("big-3").to_string(), "sqs-3")]).await;
    let delivered = s.delivered().await;
    assert_eq!(delivered.len(), 1);
    let detail = &delivered[0]["detail"];
    assert_eq!(detail["messageId"], "big-3");
    assert_eq!(detail["customerId"], "c-big");
    assert_eq!(detail["stiggWebhooks"]["truncated"], true);
    assert!(detail["stiggWebhooks"]["bytes"].as_u64().unwrap() > 700 * 1024);
    assert!(detail.get("padding").is_none());
    let lines = limited.process.settled_lines().await;
    assert_eq!(emf_sum(&lines, "EventsForwarded", Some(("Outcome", "reduced"))), 1.0);
    assert!(lines.iter().any(|l| l.contains("reduced detail") && l.contains("big-3")), "a WARN names the key");

    // Replayed to the handlers, a reduced event is skipped and counted, never run: its payload
    // was never on the bus (the live run had it), and no redrive could change that.
    let replayed = s.replay_to_handlers(&unique("replay-reduced")).await;
    assert_eq!(replayed.len(), 3);
    limited.deliver_all(&replayed).await;
    assert!(drain(&s.res.sqs, &s.dead_letters).await.is_empty());
    let lines = limited.process.settled_lines().await;
    assert_eq!(emf_sum(&lines, "ReplaySkipped", Some(("Reason", "reduced"))), 1.0);
    let processed = lines.iter().filter(|l| l.contains("event processed") && l.contains("replay-reduced")).count();
    assert_eq!(processed, 2, "the two whole ones ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_replay_to_the_handlers_runs_them_once_more_never_puts_again_and_never_rolls_the_mirror_back() {
    let s = Stack::serial().await;
    let p = s.processor(&[]).await;
    // The customer's older snapshot (f-old) and the newer (f-new), then three other events.
    let mut events = vec![snapshot("c-replay", T0, "f-old"), snapshot("c-replay", T0 + 60_000, "f-new")];
    events.extend(fixtures(3, "replayed"));
    let records: Vec<Value> =
        events.iter().enumerate().map(|(i, e)| record(&e.to_string(), &format!("sqs-{i}"))).collect();
    p.deliver_all(&records).await;
    assert_eq!(s.delivered().await.len(), 5);
    let puts_before = s.proxy.put();

    // What a reader of the mirror sees (Stigg's semantics), not the items' layout.
    let mirror = |s: &Stack| {
        let reader = Mirror::new(s.res.ddb.clone(), s.mirror.clone()).consistent(true);
        async move {
            let snapshot = reader.entitlements("c-replay", None).await.unwrap().expect("mirrored");
            (snapshot.entitlements_updated_at, snapshot.features.keys().cloned().collect::<Vec<_>>())
        }
    };
    let newest = (T0 + 60_000, vec!["f-new".to_owned()]);
    assert_eq!(mirror(&s).await, newest, "the newer snapshot is mirrored");

    for n in 1..=2 {
        let name = unique(&format!("stack-replay-{n}"));
        let replayed = s.replay_to_handlers(&name).await;
        assert_eq!(replayed.len(), 5, "every archived event came back");
        assert!(replayed.iter().all(|r| r["body"].as_str().unwrap().contains(&name)), "marked with replay-name");
        // Delivered twice, as SQS may: handlers run once per event for this replay.
        p.deliver_all(&replayed).await;
        p.deliver_all(&replayed).await;
        for e in &events {
            let key = e["messageId"].as_str().unwrap();
            let item = s.res.item(&format!("processed#replay:{name}:{key}")).await;
            assert!(item.is_some(), "replay {n} ran {key}'s handlers");
        }
        let lines = p.process.settled_lines().await;
        let processed = lines.iter().filter(|l| l.contains("event processed") && l.contains(&name)).count();
        let duplicates = lines.iter().filter(|l| l.contains("duplicate skipped") && l.contains(&name)).count();
        assert_eq!((processed, duplicates), (5, 5), "once per event per replay");
        assert_eq!(s.proxy.put(), puts_before, "the forwarder does not put a replayed event again");
        // The subscriber's rule gets the replay itself (EventBridge's doing), nothing more.
        assert_eq!(s.delivered().await.len(), 5);
        assert_eq!(
            mirror(&s).await,
            newest,
            "the older snapshot replayed after the newer did not roll the mirror back"
        );
    }
}
