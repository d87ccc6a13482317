//! The limits a real account applies, on the real binaries under the Lambda Runtime API emulator
//! (against moto):
//! - an event up to what SQS carries is accepted, queued verbatim and processed once;
//! - a larger one is refused with 413, nothing written, one WARN line with key, type and size,
//!   and the `too_large` outcome its alarm reads;
//! - one handler's permanent failure does not keep the others from running once, and a redrive
//!   from the dead-letter queue runs only the handler that failed;
//! - a batch of events that large stays far inside a 128 MB function's memory.
//!
//! moto refuses a body over 1 MiB as SQS does, but counts neither attributes nor bytes (it
//! counts characters), so the attribute arithmetic is proved by unit tests
//! (`receiver::tests::the_largest_accepted_body_with_the_largest_attributes…`).

mod common;

use std::time::Duration;

use common::runtime_api::{FunctionProcess, RuntimeApi, binary, function_url_post};
use common::*;
use serde_json::{Value, json};

const SECRET: &str = "limits-test-secret-0123456789";
const SOURCE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:events";

fn receiver_env(res: &Resources) -> Vec<(&'static str, String)> {
    vec![
        ("STIGG_WEBHOOK_SECRET", SECRET.to_owned()),
        ("IDEMPOTENCY_TABLE", res.table.as_str().to_owned()),
        ("EVENTS_QUEUE_URL", res.queue.as_str().to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", ddb_endpoint()),
        ("AWS_ENDPOINT_URL_SQS", endpoint()),
        ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()),
    ]
}

fn processor_env(res: &Resources, dlq: &stigg_webhooks::config::QueueUrl) -> Vec<(&'static str, String)> {
    vec![
        ("IDEMPOTENCY_TABLE", res.table.as_str().to_owned()),
        ("DEAD_LETTER_QUEUE_URL", dlq.as_str().to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", ddb_endpoint()),
        ("AWS_ENDPOINT_URL_SQS", endpoint()),
        // DEBUG: the built-in LoggingHandler's "stigg event" line shows each time it runs.
        ("AWS_LAMBDA_LOG_LEVEL", "debug".to_owned()),
    ]
}

/// Stigg's documented `entitlements.updated` example grown to at least `bytes` bytes: its
/// entitlement repeated under new feature ids, with its own key (JSON that escapes inside the
/// SQS event, as a real payload does).
fn event_of_size(key: &str, bytes: usize) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/events/stigg/entitlements.updated.json");
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event["messageId"] = json!(key);
    let template = event["entitlements"][0].clone();
    let entitlement = |i: usize| {
        let mut e = template.clone();
        e["feature"]["id"] = json!(format!("feature-{i:05}"));
        e["feature"]["name"] = json!(format!("Seats \"pro\" {i}"));
        e
    };
    let mut n = 0;
    let mut entitlements = Vec::new();
    while event.to_string().len() < bytes {
        let more = ((bytes - event.to_string().len()) / 500).max(1);
        entitlements.extend((n..n + more).map(entitlement));
        n += more;
        event["entitlements"] = json!(entitlements);
    }
    event.to_string()
}

fn lines_with(lines: &[String], message: &str) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with(message)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_700_kib_event_is_accepted_queued_verbatim_and_processed_once() {
    let res = Resources::create(false).await;
    let dlq = create_queue(&res.sqs, &unique("dlq"), false).await;
    let receiver_api = RuntimeApi::start(Duration::from_secs(10)).await;
    let _receiver = FunctionProcess::spawn(binary("receiver").as_path(), &receiver_api, &receiver_env(&res));
    let body = event_of_size("k-700k", 700 * 1024);
    let answer = receiver_api.invoke(&function_url_post(SECRET, &body), Duration::from_secs(10)).await.unwrap();
    assert_eq!(answer["statusCode"], 202, "{answer}");

    let messages = res.drain().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body(), Some(body.as_str()), "queued byte for byte");
    assert_eq!(attr(&messages[0], "idempotency_key"), Some("k-700k"));

    let processor_api = RuntimeApi::start(Duration::from_secs(60)).await;
    let processor = FunctionProcess::spawn(binary("processor").as_path(), &processor_api, &processor_env(&res, &dlq));
    let batch = json!({"Records": [lambda_record(&messages[0], SOURCE_ARN)]});
    for _ in 0..2 {
        // The second invocation is a redelivery of the same record: a duplicate, skipped.
        let out = processor_api.invoke(&batch, Duration::from_secs(60)).await.expect("processor answers");
        assert_eq!(out["batchItemFailures"], json!([]), "{out}");
    }
    let lines = processor.settled_lines().await;
    assert_eq!(lines_with(&lines, "event processed").len(), 1, "processed once");
    assert_eq!(lines_with(&lines, "stigg event").len(), 1, "the handler ran once");
    assert_eq!(lines_with(&lines, "duplicate skipped").len(), 1);
    assert!(drain(&res.sqs, &dlq).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_what_sqs_carries_is_refused_with_413_nothing_written_and_one_warn_line() {
    let res = Resources::create(false).await;
    let api = RuntimeApi::start(Duration::from_secs(10)).await;
    let receiver = FunctionProcess::spawn(binary("receiver").as_path(), &api, &receiver_env(&res));
    let body = event_of_size("k-too-large", 1_100 * 1024);
    let answer = api.invoke(&function_url_post(SECRET, &body), Duration::from_secs(10)).await.unwrap();
    assert_eq!(answer["statusCode"], 413, "{answer}");

    assert!(res.items().await.is_empty(), "no claim written");
    assert!(res.drain().await.is_empty(), "nothing queued");
    let lines = receiver.settled_lines().await;
    let warned = lines_with(&lines, "event larger than the queue carries");
    assert_eq!(warned.len(), 1, "{lines:?}");
    let fields = &warned[0];
    assert_eq!(fields["idempotency_key"], "k-too-large");
    assert_eq!(fields["event_type"], "entitlements.updated");
    assert_eq!(fields["body_bytes"].as_u64(), Some(body.len() as u64));
    assert_eq!(fields["limit"].as_u64(), Some(stigg_webhooks::queue::MAX_EVENT_BYTES as u64));
    assert!(!lines.iter().any(|l| l.contains("feature-00001")), "the body is never logged");
    assert_eq!(emf_sum(&lines, "Requests", Some(("Outcome", "too_large"))), 1.0, "the alarm's metric");

    // The largest accepted body, to the byte, is queued: the limit is what the queue carries.
    let mut at_limit = event_of_size("k-at-limit", 10);
    let padding = stigg_webhooks::queue::MAX_EVENT_BYTES - at_limit.len();
    at_limit.insert_str(at_limit.len() - 1, &format!(",\"pad\":\"{}\"", "x".repeat(padding - 9)));
    assert_eq!(at_limit.len(), stigg_webhooks::queue::MAX_EVENT_BYTES);
    let answer = api.invoke(&function_url_post(SECRET, &at_limit), Duration::from_secs(10)).await.unwrap();
    assert_eq!(answer["statusCode"], 202, "{answer}");
    assert_eq!(res.drain().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_mirror_failure_leaves_the_other_handlers_run_once_and_a_redrive_runs_only_the_mirror() {
    let res = Resources::create(false).await;
    let dlq = create_queue(&res.sqs, &unique("dlq"), false).await;
    let mirror = create_mirror_table(&res.ddb).await;
    let api = RuntimeApi::start(Duration::from_secs(60)).await;
    let mut env = processor_env(&res, &dlq);
    env.push(("ENTITLEMENT_MIRROR_TABLE", mirror.as_str().to_owned()));
    let processor = FunctionProcess::spawn(binary("processor").as_path(), &api, &env);

    // No customer at all: no time or id fallback can make this a mirror write.
    let body = json!({"type": "customer.deleted", "messageId": "k-no-customer", "traceId": "t"}).to_string();
    let sent = res.sqs.send_message().queue_url(res.queue.as_str()).message_body(&body).send().await.unwrap();
    let received = res.drain().await;
    assert_eq!(received[0].message_id(), sent.message_id());
    let out = api.invoke(&json!({"Records": [lambda_record(&received[0], SOURCE_ARN)]}), Duration::from_secs(60)).await;
    assert_eq!(out.unwrap()["batchItemFailures"], json!([]), "dead-lettered, not retried");

    let dead = drain(&res.sqs, &dlq).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(attr(&dead[0], "failure_reason"), Some("permanent_error"));
    assert_eq!(attr(&dead[0], "failed_handlers"), Some("entitlement-mirror"));
    assert_eq!(dead[0].body(), Some(body.as_str()), "the body dead-lettered verbatim");
    let lines = processor.settled_lines().await;
    assert_eq!(lines_with(&lines, "stigg event").len(), 1, "the logging handler ran despite the mirror");
    let failed = lines_with(&lines, "handler failed permanently");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["handler"], "entitlement-mirror");

    // A redrive: the dead letter goes back to the events queue as it is, attributes included.
    let redriven = json!({"Records": [lambda_record(&dead[0], SOURCE_ARN)]});
    let seen = lines.len();
    let out = api.invoke(&redriven, Duration::from_secs(60)).await.expect("processor answers");
    assert_eq!(out["batchItemFailures"], json!([]));
    let lines = processor.settled_lines().await;
    let after = &lines[seen..];
    assert_eq!(lines_with(after, "stigg event").len(), 0, "the logging handler does not run again");
    assert_eq!(lines_with(after, "handler failed permanently").len(), 1, "only the mirror ran (and failed again)");
    assert_eq!(drain(&res.sqs, &dlq).await.len(), 1, "back in the dead-letter queue, named again");
}

/// Peak resident memory of a process (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kb / 1024.0
}

/// Lambda cuts an SQS batch at its 6 MB payload: four events of ~1 MiB (their JSON escaped
/// inside the SQS event) is about the most one invocation carries. Processed at once (record concurrency 10) with the mirror on, the
/// processor must stay well inside the template's 128 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_four_one_mib_events_stays_far_inside_128_mb() {
    let res = Resources::create(false).await;
    let dlq = create_queue(&res.sqs, &unique("dlq"), false).await;
    let mirror = create_mirror_table(&res.ddb).await;
    for i in 0..4 {
        let body = event_of_size(&format!("k-mib-{i}"), stigg_webhooks::queue::MAX_EVENT_BYTES - 40 * 1024);
        res.sqs.send_message().queue_url(res.queue.as_str()).message_body(body).send().await.unwrap();
    }
    let messages = res.drain().await;
    assert_eq!(messages.len(), 4);
    let records: Vec<Value> = messages.iter().map(|m| lambda_record(m, SOURCE_ARN)).collect();
    let batch = json!({"Records": records});
    assert!(batch.to_string().len() < 6_000_000, "what Lambda would hand over in one invocation");

    let api = RuntimeApi::start(Duration::from_secs(120)).await;
    let mut env = processor_env(&res, &dlq);
    env.retain(|(k, _)| *k != "AWS_LAMBDA_LOG_LEVEL");
    env.push(("ENTITLEMENT_MIRROR_TABLE", mirror.as_str().to_owned()));
    let processor = FunctionProcess::spawn(binary("processor").as_path(), &api, &env);
    let out = api.invoke(&batch, Duration::from_secs(120)).await.expect("processor answers");
    assert_eq!(out["batchItemFailures"], json!([]), "{out}");
    let peak = peak_rss_mib(processor.pid());
    println!("processor peak RSS with four ~1 MiB events and the mirror: {peak:.1} MiB");
    assert!(peak < 96.0, "peak RSS {peak:.1} MiB leaves too little of 128 MB");
    let lines = processor.settled_lines().await;
    let failed: Vec<_> = lines.iter().filter(|l| l.contains("failed")).take(3).collect();
    assert_eq!(lines_with(&lines, "event processed").len(), 4, "{failed:?}");
}
