//! Faults injected for real: function binaries run as processes under a Lambda Runtime API
//! emulator, killed mid-flight; DynamoDB and SQS behind a proxy that refuses, delays or
//! throttles; Stigg's full retry schedule against an SQS outage. Each test states a guarantee.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::fault_proxy::{Fault, FaultProxy};
use common::runtime_api::{FunctionProcess, RuntimeApi, binary, function_url_post};
use common::*;
use serde_json::{Value, json};
use stigg_webhooks::claim::{ClaimScope, IdempotencyStore};
use stigg_webhooks::config::{QueueUrl, TableName};
use stigg_webhooks::handler::{Handlers, LoggingHandler};
use stigg_webhooks::lambda_http::Request;
use stigg_webhooks::processor::{Processor, RecordOutcome};
use stigg_webhooks::queue::EventQueue;
use stigg_webhooks::receiver::Receiver;
use stigg_webhooks::secrets::SecretSet;

const SECRET: &str = "fault-suite-secret-0123456789";

fn receiver_env(res: &Resources, ddb: &str, sqs: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STIGG_WEBHOOK_SECRET", SECRET.to_owned()),
        ("IDEMPOTENCY_TABLE", res.table.as_str().to_owned()),
        ("EVENTS_QUEUE_URL", res.queue.as_str().to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", ddb.to_owned()),
        ("AWS_ENDPOINT_URL_SQS", sqs.to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()),
    ]
}

fn processor_env(res: &Resources, dlq: &str) -> Vec<(&'static str, String)> {
    vec![
        ("IDEMPOTENCY_TABLE", res.table.as_str().to_owned()),
        ("DEAD_LETTER_QUEUE_URL", dlq.to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", ddb_endpoint()),
        ("AWS_ENDPOINT_URL_SQS", endpoint()),
        ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()),
    ]
}

fn function_url_event(body: &str) -> Value {
    function_url_post(SECRET, body)
}

fn event(key: &str) -> String {
    json!({"type": "subscription.updated", "messageId": key, "traceId": "t", "customer": {"id": "c"}}).to_string()
}

/// Plays Lambda's SQS event source mapping: receives up to 10 messages, invokes the processor
/// process, deletes every message it did not report as failed. Returns once `expected` messages
/// were delivered and the queue is then found empty (so extras would be seen), or at `timeout`.
async fn pump_into_processor(
    sqs: &aws_sdk_sqs::Client,
    queue: &QueueUrl,
    api: &RuntimeApi,
    expected: usize,
    timeout: Duration,
) -> usize {
    let arn = "arn:aws:sqs:us-east-1:123456789012:events";
    let started = Instant::now();
    let mut delivered = 0;
    while started.elapsed() < timeout {
        let messages = receive_batch(sqs, queue).await;
        if messages.is_empty() {
            if delivered >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attrs: serde_json::Map<String, Value> = m
                    .message_attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, json!({"stringValue": v.string_value(), "dataType": "String"})))
                    .collect();
                json!({"messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
                       "attributes": {}, "messageAttributes": attrs, "eventSource": "aws:sqs", "eventSourceARN": arn})
            })
            .collect();
        let out = api.invoke(&json!({"Records": records}), Duration::from_secs(60)).await.expect("processor answers");
        assert_eq!(out["batchItemFailures"], json!([]), "{out}");
        delete_received(sqs, queue, &messages).await;
        delivered += messages.len();
    }
    delivered
}

async fn receive_batch(sqs: &aws_sdk_sqs::Client, queue: &QueueUrl) -> Vec<aws_sdk_sqs::types::Message> {
    sqs.receive_message()
        .queue_url(queue.as_str())
        .max_number_of_messages(10)
        .visibility_timeout(120)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_killed_after_its_claim_is_taken_over_after_the_lease_and_the_event_is_queued() {
    let res = Resources::create(false).await;
    let slow_sqs = FaultProxy::start(&endpoint()).await;
    slow_sqs.set(Fault::Delay(Duration::from_secs(30)));
    let lease = Duration::from_secs(4);
    let api = RuntimeApi::start(lease).await;
    let mut doomed = FunctionProcess::spawn(
        binary("receiver").as_path(),
        &api,
        &receiver_env(&res, &ddb_endpoint(), &slow_sqs.url()),
    );
    let _first = api.submit(&function_url_event(&event("k-crash")));
    // The claim is written, the send hangs on slow SQS: kill the process right there.
    wait_for("the claim", Duration::from_secs(30), async || res.item("accepted#k-crash").await.is_some()).await;
    doomed.kill();
    let killed_at = Instant::now();
    let item = res.item("accepted#k-crash").await.unwrap();
    assert_eq!(item["status"].as_s().unwrap(), "IN_PROGRESS");

    let _healthy =
        FunctionProcess::spawn(binary("receiver").as_path(), &api, &receiver_env(&res, &ddb_endpoint(), &endpoint()));
    let early = api.invoke(&function_url_event(&event("k-crash")), Duration::from_secs(30)).await.unwrap();
    assert_eq!(early["statusCode"], 409, "the dead attempt's lease is still live");
    tokio::time::sleep(lease.saturating_sub(killed_at.elapsed()) + Duration::from_millis(300)).await;
    let retry = api.invoke(&function_url_event(&event("k-crash")), Duration::from_secs(30)).await.unwrap();
    assert_eq!(retry["statusCode"], 202, "{retry}");
    let messages = res.drain().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(attr(&messages[0], "idempotency_key"), Some("k-crash"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_deliveries_over_four_receiver_processes_give_one_enqueue_and_one_event_processed() {
    let res = Resources::create(false).await;
    let dlq = create_queue(&res.sqs, &unique("dlq"), false).await;
    let receivers = RuntimeApi::start(Duration::from_secs(10)).await;
    let procs: Vec<_> = (0..4)
        .map(|_| {
            FunctionProcess::spawn(
                binary("receiver").as_path(),
                &receivers,
                &receiver_env(&res, &ddb_endpoint(), &endpoint()),
            )
        })
        .collect();
    // Warm all four so the deliveries really overlap.
    let warm: Vec<_> = (0..4).map(|i| receivers.submit(&function_url_event(&event(&format!("warm-{i}"))))).collect();
    for w in warm {
        w.await.unwrap();
    }
    assert_eq!(res.drain().await.len(), 4);
    let deliveries: Vec<_> = (0..20).map(|_| receivers.submit(&function_url_event(&event("k-storm")))).collect();
    let mut statuses = Vec::new();
    for d in deliveries {
        let common::runtime_api::Outcome::Response(body) = d.await.unwrap() else { panic!("function error") };
        statuses.push(serde_json::from_slice::<Value>(&body).unwrap()["statusCode"].as_i64().unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| [200, 202, 409].contains(s)), "{statuses:?}");
    // One line per request: `webhook accepted` for the 4 warm-up events and the storm's one
    // 202, `webhook handled` (with its outcome and metric) for the other 19.
    let served = |p: &FunctionProcess| p.count_message("webhook accepted") + p.count_message("webhook handled");
    assert_eq!(procs.iter().map(|p| p.count_message("webhook accepted")).sum::<usize>(), 5);
    assert_eq!(procs.iter().map(served).sum::<usize>(), 24);
    assert!(procs.iter().filter(|p| served(p) > 1).count() >= 2, "spread over processes");

    let processors = RuntimeApi::start(Duration::from_secs(30)).await;
    let processor =
        FunctionProcess::spawn(binary("processor").as_path(), &processors, &processor_env(&res, dlq.as_str()));
    assert_eq!(pump_into_processor(&res.sqs, &res.queue, &processors, 1, Duration::from_secs(60)).await, 1);
    assert_eq!(processor.count_message("event processed"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_distinct_events_through_the_stack_are_each_processed_exactly_once() {
    let res = Resources::create(false).await;
    let dlq = create_queue(&res.sqs, &unique("dlq"), false).await;
    let receivers = RuntimeApi::start(Duration::from_secs(10)).await;
    let _procs: Vec<_> = (0..4)
        .map(|_| {
            FunctionProcess::spawn(
                binary("receiver").as_path(),
                &receivers,
                &receiver_env(&res, &ddb_endpoint(), &endpoint()),
            )
        })
        .collect();
    let n = 1000;
    let started = Instant::now();
    // Consume while delivering, as the event source mapping does (and moto's SQS slows with depth).
    let processors = RuntimeApi::start(Duration::from_secs(30)).await;
    let processor =
        FunctionProcess::spawn(binary("processor").as_path(), &processors, &processor_env(&res, dlq.as_str()));
    let pump = tokio::spawn({
        let (sqs, queue, api) = (res.sqs.clone(), res.queue.clone(), processors.clone());
        async move { pump_into_processor(&sqs, &queue, &api, n, Duration::from_secs(600)).await }
    });
    let mut accepted = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let pending: Vec<_> =
            chunk.iter().map(|i| receivers.submit(&function_url_event(&event(&format!("bulk-{i}"))))).collect();
        for p in pending {
            let common::runtime_api::Outcome::Response(body) = p.await.unwrap() else { panic!("function error") };
            if serde_json::from_slice::<Value>(&body).unwrap()["statusCode"] == 202 {
                accepted += 1;
            }
        }
    }
    assert_eq!(accepted, n);
    assert_eq!(pump.await.unwrap(), n, "every event delivered to the processor once");
    eprintln!("{n} events received and processed in {:?}", started.elapsed());
    // What the processor printed before its last answer can still be in the pipe.
    let processed: HashSet<String> = processor
        .settled_lines()
        .await
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "event processed")
        .map(|v| v["idempotency_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(processor.count_message("event processed"), n, "one line per event");
    assert_eq!(processed.len(), n, "every key, once");
}

#[tokio::test]
async fn when_dynamodb_throttles_the_sdk_retries_within_budget_then_503_with_no_partial_state() {
    let res = Resources::create(false).await;
    let proxy = FaultProxy::start(&ddb_endpoint()).await;
    proxy.set(Fault::Throttle);
    let receiver = receiver_via(&res, &proxy.url(), &endpoint()).await;
    let started = Instant::now();
    let reply = receiver.handle(post(&event("k-throttled")), deadline_in(Duration::from_secs(10))).await;
    assert_eq!(reply.status(), 503);
    assert_eq!(proxy.throttled(), 3, "three attempts: the SDK's standard retry budget");
    assert!(started.elapsed() < Duration::from_secs(8), "inside the receiver's timeout");
    assert!(res.items().await.is_empty());
    assert!(res.drain().await.is_empty());
    proxy.set(Fault::Pass);
    let reply = receiver.handle(post(&event("k-throttled")), deadline_in(Duration::from_secs(10))).await;
    assert_eq!(reply.status(), 202);
}

#[tokio::test]
async fn when_sqs_refuses_connections_the_claim_is_rolled_back_and_the_retry_after_recovery_is_queued_once() {
    let res = Resources::create(false).await;
    let proxy = FaultProxy::start(&endpoint()).await;
    let receiver = receiver_via(&res, &ddb_endpoint(), &proxy.url()).await;
    proxy.set(Fault::Refuse);
    let reply = receiver.handle(post(&event("k-outage")), deadline_in(Duration::from_secs(10))).await;
    assert_eq!(reply.status(), 503);
    assert!(proxy.refused() >= 3, "the SDK retried");
    assert!(res.items().await.is_empty(), "claim rolled back");
    proxy.set(Fault::Pass);
    let reply = receiver.handle(post(&event("k-outage")), deadline_in(Duration::from_secs(10))).await;
    assert_eq!(reply.status(), 202);
    assert_eq!(res.drain().await.len(), 1);
}

#[tokio::test]
async fn a_duplicate_re_sent_after_a_lost_completion_still_runs_handlers_once() {
    let res = Resources::create(false).await;
    let dlq = create_queue(&res.sqs, &unique("dlq"), false).await;
    let calls = Recorder::default();
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk_config_for(&ddb_endpoint()).await)
            .interceptor(calls.clone())
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let receiver = Receiver::new(
        SecretSet::parse(SECRET).unwrap(),
        None,
        stigg_webhooks::queue::MAX_EVENT_BYTES,
        IdempotencyStore::new(ddb, res.table.clone(), Duration::from_secs(3600), ClaimScope::Receiver),
        EventQueue::new(sqs.clone(), res.queue.clone()),
    );
    calls.fail_when("UpdateItem", "COMPLETED");
    // Lease of 300 ms: the completion is lost, so once the lease passes a retry is queued again.
    assert_eq!(receiver.handle(post(&event("k-lost")), deadline_in(Duration::from_millis(300))).await.status(), 202);
    tokio::time::sleep(Duration::from_millis(400)).await;
    calls.heal();
    assert_eq!(receiver.handle(post(&event("k-lost")), deadline_in(Duration::from_secs(10))).await.status(), 202);
    let messages = res.drain().await;
    assert_eq!(messages.len(), 2, "the event was queued twice");
    // The two copies are claimed at once: on a DynamoDB whose conditional writes are atomic per
    // item, as DynamoDB's are (moto's threaded server's are not: it let both claim, now and then).
    // The processor's records (`processed#`) never read the receiver's (`accepted#`).
    let serial = SerialMoto::start().await;
    let serial_ddb = aws_sdk_dynamodb::Client::new(&admin_config_for(&serial.endpoint).await);
    let processed = unique("processed");
    create_table(&serial_ddb, &processed).await;
    let processor = Processor::new(
        IdempotencyStore::new(
            serial_ddb,
            TableName::parse(&processed).unwrap(),
            Duration::from_secs(3600),
            ClaimScope::Processor,
        ),
        Some(EventQueue::new(sqs, dlq)),
        Handlers::new().on_all(LoggingHandler),
        4,
    );
    let records: Vec<_> = messages
        .iter()
        .map(|m| {
            serde_json::from_value(json!({"messageId": m.message_id, "body": m.body, "messageAttributes": {
                "idempotency_key": {"stringValue": attr(m, "idempotency_key"), "dataType": "String"}}}))
            .unwrap()
        })
        .collect();
    let report = processor.process(&records, deadline_in(Duration::from_secs(30))).await;
    assert_eq!(report.count(|o| *o == RecordOutcome::Processed), 1);
    assert_eq!(report.count(|o| matches!(o, RecordOutcome::Duplicate | RecordOutcome::Retry(_))), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stiggs_whole_retry_schedule_rides_out_a_45_second_sqs_outage() {
    let res = Resources::create(false).await;
    let proxy = FaultProxy::start(&endpoint()).await;
    let api = RuntimeApi::start(Duration::from_secs(10)).await;
    // One process per concurrent delivery, as Lambda scales out: a single busy process would make
    // the emulator answer 502 for deliveries queued behind slow 503s.
    let _receivers: Vec<_> = (0..5)
        .map(|_| {
            FunctionProcess::spawn(
                binary("receiver").as_path(),
                &api,
                &receiver_env(&res, &ddb_endpoint(), &proxy.url()),
            )
        })
        .collect();
    let dir = std::env::temp_dir().join(unique("outage"));
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..5 {
        std::fs::write(dir.join(format!("e{i}.json")), event(&format!("k-outage-{i}"))).unwrap();
    }
    proxy.set(Fault::Refuse);
    let outage = tokio::spawn({
        let mode = proxy;
        async move {
            tokio::time::sleep(Duration::from_secs(45)).await;
            mode.set(Fault::Pass);
            mode
        }
    });
    // Stigg's real timings: 1 attempt, 3 at once, 3 more 30 s apart.
    let sim = tokio::process::Command::new(binary("examples/stigg-dev"))
        .args(["send", "--url", &api.function_url(), "--secret", SECRET, "--concurrency", "5"])
        .arg(&dir)
        .output()
        .await
        .expect("run the simulator");
    let proxy = outage.await.unwrap();
    let out = String::from_utf8_lossy(&sim.stdout);
    assert!(sim.status.success(), "{out}{}", String::from_utf8_lossy(&sim.stderr));
    assert!(out.contains("accepted=5 duplicate=0 failed=0"), "{out}");
    for line in out.lines().filter(|l| l.starts_with('e')) {
        let attempts: usize = line.split("attempts=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!((5..=7).contains(&attempts), "accepted on a spaced retry after the outage: {line}");
        assert!(!line.contains("502"), "every failed attempt is a clean 503: {line}");
    }
    assert!(proxy.refused() > 0);
    assert_eq!(res.drain().await.len(), 5);
    std::fs::remove_dir_all(dir).ok();
}

/// lambda_http converts the event before the receiver's code runs. A body flagged base64 that is
/// not base64 (a function URL never sends one: it encodes bodies itself) makes that conversion
/// panic; with `panic = "unwind"` the runtime answers an invocation error (a 502 on a function
/// URL, which Stigg would retry) and the same process serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_a_function_url_never_sends_is_an_invocation_error_and_the_process_serves_on() {
    let res = Resources::create(false).await;
    let api = RuntimeApi::start(Duration::from_secs(10)).await;
    let receiver =
        FunctionProcess::spawn(binary("receiver").as_path(), &api, &receiver_env(&res, &ddb_endpoint(), &endpoint()));
    let mut bad_base64 = function_url_event(&event("k-b64"));
    bad_base64["body"] = json!("%%% not base64 %%%");
    bad_base64["isBase64Encoded"] = json!(true);
    let error = api.invoke(&bad_base64, Duration::from_secs(10)).await.expect_err("an invocation error, not an answer");
    assert!(error.contains("errorType") || error.contains("errorMessage"), "{error}");
    let not_an_http_event = json!({"Records": []});
    api.invoke(&not_an_http_event, Duration::from_secs(10)).await.expect_err("not a function-URL event");
    let after = api.invoke(&function_url_event(&event("k-after")), Duration::from_secs(10)).await.unwrap();
    assert_eq!(after["statusCode"], 202, "the process survived and serves Stigg");
    assert_eq!(res.drain().await.len(), 1, "nothing was queued for the refused events");
    drop(receiver);
}

// --- helpers shared with the in-process tests above ---

fn post(body: &str) -> Request {
    url_request(&function_url_event(body))
}

async fn receiver_via(res: &Resources, ddb: &str, sqs: &str) -> Receiver {
    Receiver::new(
        SecretSet::parse(SECRET).unwrap(),
        None,
        stigg_webhooks::queue::MAX_EVENT_BYTES,
        IdempotencyStore::new(
            aws_sdk_dynamodb::Client::new(&sdk_config_for(ddb).await),
            res.table.clone(),
            Duration::from_secs(3600),
            ClaimScope::Receiver,
        ),
        EventQueue::new(aws_sdk_sqs::Client::new(&sdk_config_for(sqs).await), res.queue.clone()),
    )
}
