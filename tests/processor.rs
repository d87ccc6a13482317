//! The processor against the real SDK and moto: handlers once per key, partial batch failures,
//! dead-lettering with reasons, panics contained.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsMessage;
use common::fault_proxy::{Fault, FaultProxy};
use common::*;
use serde_json::{Value, json};
use stigg_webhooks::claim::{ClaimScope, IdempotencyStore};
use stigg_webhooks::config::QueueUrl;
use stigg_webhooks::event::StiggEvent;
use stigg_webhooks::handler::{Handler, HandlerError, Handlers};
use stigg_webhooks::processor::{BatchReport, FailureReason, Processor, RecordOutcome};
use stigg_webhooks::queue::EventQueue;

/// A handler whose behaviour each event picks with a `behaviour` field, counting its calls.
#[derive(Clone, Default)]
struct Scripted {
    calls: Arc<Mutex<HashMap<String, usize>>>,
}

impl Scripted {
    fn calls(&self, key: &str) -> usize {
        self.calls.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Handler for Scripted {
    async fn handle(&self, event: &StiggEvent) -> Result<(), HandlerError> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(event.key.to_string()).or_default();
            *n += 1;
            *n
        };
        match event.fields().get("behaviour").and_then(Value::as_str) {
            Some("retry_once") if n == 1 => Err(HandlerError::retryable("downstream timed out")),
            Some("permanent") => Err(HandlerError::permanent("customer does not exist in our system")),
            Some("panic") => panic!("handler bug"),
            Some("slow") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(())
            }
            // Slow enough the first time to run into the record deadline (see the deadline test).
            Some("slow_once") if n == 1 => {
                tokio::time::sleep(Duration::from_millis(13_800)).await;
                Ok(())
            }
            Some("late_permanent") => {
                tokio::time::sleep(Duration::from_millis(6_500)).await;
                Err(HandlerError::permanent("refused by a downstream rule"))
            }
            // Hung on a downstream call that never answers (only the first time).
            Some("hang_once") if n == 1 => {
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A second handler on every event, counting its successful runs: it must never run twice.
#[derive(Clone, Default)]
struct Second {
    runs: Arc<Mutex<HashMap<String, usize>>>,
}

impl Second {
    fn runs(&self, key: &str) -> usize {
        self.runs.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Handler for Second {
    async fn handle(&self, event: &StiggEvent) -> Result<(), HandlerError> {
        *self.runs.lock().unwrap().entry(event.key.to_string()).or_default() += 1;
        Ok(())
    }
}

struct TestApp {
    res: Resources,
    dlq: QueueUrl,
    handler: Scripted,
    processor: Processor,
}

async fn spawn_app() -> TestApp {
    spawn_app_with(true, &endpoint()).await
}

async fn spawn_app_with(with_dlq: bool, dlq_endpoint: &str) -> TestApp {
    let res = Resources::create(false).await;
    let dlq = create_queue(&res.sqs, &unique("dlq"), false).await;
    let handler = Scripted::default();
    let dlq_client = aws_sdk_sqs::Client::new(&sdk_config_for(dlq_endpoint).await);
    let processor = Processor::new(
        IdempotencyStore::new(res.ddb.clone(), res.table.clone(), Duration::from_secs(3600), ClaimScope::Processor),
        with_dlq.then(|| EventQueue::new(dlq_client, dlq.clone())),
        Handlers::new().on_all(handler.clone()),
        4,
    );
    TestApp { res, dlq, handler, processor }
}

impl TestApp {
    async fn process(&self, records: &[SqsMessage]) -> BatchReport {
        self.processor.process(records, deadline_in(Duration::from_secs(30))).await
    }

    async fn dead_letters(&self) -> Vec<aws_sdk_sqs::types::Message> {
        drain(&self.res.sqs, &self.dlq).await
    }
}

fn record(id: &str, body: &str) -> SqsMessage {
    record_from(id, body, "arn:aws:sqs:us-east-1:123456789012:events")
}

fn record_from(id: &str, body: &str, source_arn: &str) -> SqsMessage {
    serde_json::from_value(json!({
        "messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
        "eventSource": "aws:sqs", "eventSourceARN": source_arn, "awsRegion": "us-east-1"
    }))
    .unwrap()
}

fn event(key: &str, behaviour: &str) -> String {
    json!({"type": "subscription.canceled", "messageId": key, "traceId": "t", "customer": {"id": "c-1"}, "behaviour": behaviour})
        .to_string()
}

fn failed_ids(report: &BatchReport) -> Vec<String> {
    report.response().batch_item_failures.into_iter().map(|f| f.item_identifier).collect()
}

#[tokio::test]
async fn a_batch_with_valid_and_poison_records_processes_the_valid_and_dead_letters_the_poison() {
    let app = spawn_app().await;
    let batch = [
        record("r1", &event("k1", "ok")),
        record("r2", "this is not json"),
        record("r3", &event("k3", "ok")),
        record("r4", r#"{"no_type": true}"#),
        record("r5", &event("k5", "ok")),
    ];
    let report = app.process(&batch).await;
    assert!(failed_ids(&report).is_empty(), "poison is dead-lettered, not retried");
    assert_eq!(report.count(|o| *o == RecordOutcome::Processed), 3);
    assert_eq!(report.count(|o| *o == RecordOutcome::DeadLettered(FailureReason::Unparseable)), 2);
    let dead = app.dead_letters().await;
    assert_eq!(dead.len(), 2);
    for m in &dead {
        assert_eq!(attr(m, "failure_reason"), Some("unparseable"));
        assert!(attr(m, "failure_detail").is_some_and(|d| !d.is_empty()));
        let source = attr(m, "source_message_id").unwrap();
        let original = batch.iter().find(|r| r.message_id.as_deref() == Some(source)).unwrap();
        assert_eq!(m.body, original.body, "the original body, untouched");
    }
    for k in ["k1", "k3", "k5"] {
        assert_eq!(app.handler.calls(k), 1);
    }
}

#[tokio::test]
async fn a_handler_hung_past_the_deadline_fails_only_its_record_and_the_batch_still_answers() {
    let app = spawn_app().await;
    let batch = [
        record("r1", &event("k-ok-1", "ok")),
        record("r2", &event("k-hung", "hang_once")),
        record("r3", &event("k-ok-2", "slow")),
    ];
    let started = std::time::Instant::now();
    let deadline = deadline_in(Duration::from_secs(4));
    let report = app.processor.process(&batch, deadline).await;
    let took = started.elapsed();
    assert!(std::time::SystemTime::now() < deadline, "answered before the deadline (took {took:?})");
    assert_eq!(failed_ids(&report), ["r2"], "only the hung record is retried");
    assert_eq!(report.count(|o| *o == RecordOutcome::Processed), 2);
    // Its claim was released: the redelivery runs at once instead of waiting for the lease.
    let again = app.process(&[record("r2-again", &event("k-hung", "hang_once"))]).await;
    assert_eq!(again.count(|o| *o == RecordOutcome::Processed), 1);
    assert_eq!(app.handler.calls("k-hung"), 2);
}

/// `cargo lambda watch` (make dev) reports a fixed deadline in 1970; taken literally every record
/// would be out of time before it starts. A deadline already past falls back to the default budget.
#[tokio::test]
async fn a_deadline_reported_in_the_past_still_processes_the_batch() {
    use aws_lambda_events::event::sqs::SqsEvent;
    let app = spawn_app().await;
    let mut event = SqsEvent::default();
    event.records = vec![record("r1", &event_body("k-past-deadline"))];
    let mut context = lambda_runtime::Context::default();
    context.deadline = 600_000;
    let response = app.processor.handle_event(lambda_runtime::LambdaEvent::new(event, context)).await.unwrap();
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(app.handler.calls("k-past-deadline"), 1);
}

fn event_body(key: &str) -> String {
    event(key, "ok")
}

#[tokio::test]
async fn a_redelivered_batch_runs_handlers_once_per_key() {
    let app = spawn_app().await;
    let batch: Vec<_> = (0..6).map(|i| record(&format!("r{i}"), &event(&format!("k{i}"), "ok"))).collect();
    let first = app.process(&batch).await;
    assert_eq!(first.count(|o| *o == RecordOutcome::Processed), 6);
    // SQS delivers at least once: the same records again, with new message ids.
    let again: Vec<_> = (0..6).map(|i| record(&format!("again-{i}"), &event(&format!("k{i}"), "ok"))).collect();
    let second = app.process(&again).await;
    assert_eq!(second.count(|o| *o == RecordOutcome::Duplicate), 6);
    assert!(failed_ids(&second).is_empty());
    for i in 0..6 {
        assert_eq!(app.handler.calls(&format!("k{i}")), 1);
    }
}

#[tokio::test]
async fn a_retryable_error_is_reported_and_the_redelivery_succeeds() {
    let app = spawn_app().await;
    let batch = [record("r1", &event("k-retry", "retry_once")), record("r2", &event("k-fine", "ok"))];
    let first = app.process(&batch).await;
    assert_eq!(failed_ids(&first), ["r1"]);
    assert!(app.res.item("processed#k-retry").await.is_none(), "the claim was released");
    let second = app.process(&batch[..1]).await;
    assert!(failed_ids(&second).is_empty());
    assert_eq!(second.outcomes[0].1, RecordOutcome::Processed);
    assert_eq!(app.handler.calls("k-retry"), 2);
    assert_eq!(app.handler.calls("k-fine"), 1);
    assert!(app.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_permanent_error_lands_in_the_dead_letter_queue_with_its_reason() {
    let app = spawn_app().await;
    let body = event("k-perm", "permanent");
    let report = app.process(&[record("r1", &body)]).await;
    assert!(failed_ids(&report).is_empty(), "acknowledged, not retried forever");
    let dead = app.dead_letters().await;
    assert_eq!(dead.len(), 1);
    let m = &dead[0];
    assert_eq!(m.body.as_deref(), Some(body.as_str()));
    assert_eq!(attr(m, "failure_reason"), Some("permanent_error"));
    assert!(attr(m, "failure_detail").unwrap().contains("customer does not exist"));
    assert_eq!(attr(m, "event_type"), Some("subscription.canceled"));
    assert_eq!(attr(m, "idempotency_key"), Some("k-perm"));
    assert_eq!(attr(m, "source_message_id"), Some("r1"));
    assert!(app.res.item("processed#k-perm").await.is_none(), "released, so a redrive is processed again");
}

#[tokio::test]
async fn a_panicking_handler_fails_only_its_record() {
    let app = spawn_app().await;
    let batch = [
        record("r1", &event("k-a", "ok")),
        record("r2", &event("k-panic", "panic")),
        record("r3", &event("k-b", "ok")),
    ];
    let report = app.process(&batch).await;
    assert_eq!(failed_ids(&report), ["r2"]);
    assert_eq!(report.count(|o| *o == RecordOutcome::Processed), 2);
    assert!(app.res.item("processed#k-panic").await.is_none());
}

#[tokio::test]
async fn an_sns_wrapped_event_is_processed() {
    let app = spawn_app().await;
    let inner = event("k-sns", "ok");
    let body = json!({"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": inner}).to_string();
    let report = app.process(&[record("r1", &body)]).await;
    assert_eq!(report.outcomes[0].1, RecordOutcome::Processed);
    assert_eq!(app.handler.calls("k-sns"), 1);
}

#[tokio::test]
async fn an_unknown_event_type_is_acknowledged() {
    let app = spawn_app().await;
    let report = app.process(&[record("r1", r#"{"type":"credits.brand_new_thing","eventId":"e-1"}"#)]).await;
    assert_eq!(report.outcomes[0].1, RecordOutcome::Processed);
    assert!(failed_ids(&report).is_empty());
}

#[tokio::test]
async fn without_a_dead_letter_queue_poison_is_reported_failed_for_sqs_redrive() {
    let app = spawn_app_with(false, &endpoint()).await;
    let report = app.process(&[record("r1", "garbage"), record("r2", &event("k-perm", "permanent"))]).await;
    assert_eq!(failed_ids(&report), ["r1", "r2"]);
}

#[tokio::test]
async fn when_the_dead_letter_queue_is_unreachable_the_record_is_left_for_redelivery() {
    let app = spawn_app_with(true, DEAD_ENDPOINT).await;
    let report = app.process(&[record("r1", "garbage"), record("r2", &event("k-ok", "ok"))]).await;
    assert_eq!(failed_ids(&report), ["r1"]);
}

#[tokio::test]
async fn the_same_key_twice_in_one_batch_runs_its_handlers_once() {
    let app = spawn_app().await;
    let batch = [record("r1", &event("k-twin", "slow")), record("r2", &event("k-twin", "slow"))];
    let report = app.process(&batch).await;
    assert_eq!(report.count(|o| *o == RecordOutcome::Processed), 1);
    assert_eq!(app.handler.calls("k-twin"), 1);
    // The twin is either skipped as a duplicate or left for redelivery, which then skips it.
    let redelivered: Vec<_> = failed_ids(&report).iter().map(|id| record(id, &event("k-twin", "slow"))).collect();
    if !redelivered.is_empty() {
        let again = app.process(&redelivered).await;
        assert_eq!(again.outcomes[0].1, RecordOutcome::Duplicate);
    }
    assert_eq!(app.handler.calls("k-twin"), 1);
}

#[tokio::test]
async fn on_a_fifo_queue_a_failure_returns_the_rest_of_the_batch_unprocessed() {
    let app = spawn_app().await;
    let arn = "arn:aws:sqs:us-east-1:123456789012:events.fifo";
    let batch = [
        record_from("r1", &event("f1", "ok"), arn),
        record_from("r2", &event("f2", "retry_once"), arn),
        record_from("r3", &event("f3", "ok"), arn),
    ];
    let report = app.process(&batch).await;
    assert_eq!(failed_ids(&report), ["r2", "r3"]);
    assert_eq!(app.handler.calls("f3"), 0, "nothing overtakes the failed record");
    let again = app.process(&batch[1..]).await;
    assert!(failed_ids(&again).is_empty());
    assert_eq!(app.handler.calls("f3"), 1);
}

/// Everything this test binary logs, as JSON lines. Installed as the global subscriber once: a
/// thread-scoped one races with callsite interest registered by tests on other threads.
fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        // The production JSON layout (src/logging.rs): fields at the top level.
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .init();
        captured
    })
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn event_processed_is_logged_once_per_event_even_across_redeliveries() {
    let captured = captured_logs();
    let app = spawn_app().await;
    let batch = [record("r1", &event("k-log", "ok")), record("r2", &event("k-log2", "retry_once"))];
    app.process(&batch).await;
    app.process(&batch).await;
    app.process(&batch).await;
    // Only this test's keys: other tests log into the same buffer.
    let mine: Vec<Value> = String::from_utf8(captured.0.lock().unwrap().clone())
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| ["k-log", "k-log2"].contains(&l["idempotency_key"].as_str().unwrap_or_default()))
        .collect();
    let logs = mine.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
    let processed: Vec<&Value> = mine.iter().filter(|l| l["message"] == "event processed").collect();
    assert_eq!(processed.len(), 2, "{logs}");
    let keys: Vec<_> = processed.iter().map(|l| l["idempotency_key"].as_str().unwrap()).collect();
    assert!(keys.contains(&"k-log") && keys.contains(&"k-log2"));
    assert!(processed.iter().all(|l| l["level"] == "INFO" && l["event_type"] == "subscription.canceled"));
    assert_eq!(logs.matches("duplicate skipped").count(), 3, "k-log twice, k-log2 once");
}

/// Two handlers per event, the processor's store and dead-letter queue behind proxies that can
/// slow every request down.
struct TwoHandlers {
    res: Resources,
    dlq: QueueUrl,
    scripted: Scripted,
    second: Second,
    slow_ddb: FaultProxy,
    slow_sqs: FaultProxy,
    processor: Processor,
}

async fn spawn_two_handlers() -> TwoHandlers {
    let res = Resources::create(false).await;
    let dlq = create_queue(&res.sqs, &unique("dlq"), false).await;
    let slow_ddb = FaultProxy::start(&ddb_endpoint()).await;
    let slow_sqs = FaultProxy::start(&endpoint()).await;
    let (scripted, second) = (Scripted::default(), Second::default());
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config_for(&slow_ddb.url()).await);
    let sqs = aws_sdk_sqs::Client::new(&sdk_config_for(&slow_sqs.url()).await);
    let processor = Processor::new(
        IdempotencyStore::new(ddb, res.table.clone(), Duration::from_secs(3600), ClaimScope::Processor),
        Some(EventQueue::new(sqs, dlq.clone())),
        Handlers::new().on_all(scripted.clone()).on_all(second.clone()),
        10,
    );
    TwoHandlers { res, dlq, scripted, second, slow_ddb, slow_sqs, processor }
}

#[tokio::test]
async fn a_failing_handler_leaves_the_others_run_once_and_a_redelivery_runs_only_it() {
    let app = spawn_two_handlers().await;
    let batch = [record("r1", &event("k-two-retry", "retry_once")), record("r2", &event("k-two-perm", "permanent"))];
    let first = app.processor.process(&batch, deadline_in(Duration::from_secs(30))).await;
    assert_eq!(failed_ids(&first), ["r1"]);
    assert_eq!(first.outcomes[1].1, RecordOutcome::DeadLettered(FailureReason::PermanentError));
    for key in ["k-two-retry", "k-two-perm"] {
        assert_eq!(app.second.runs(key), 1, "{key}: the other handler ran despite the failure");
        let item = app.res.item(&format!("processed#{key}")).await.expect("the progress is kept");
        let done = item["done_handlers"].as_ss().unwrap();
        assert_eq!(done.len(), 1);
        assert!(done[0].ends_with("::Second"), "{done:?}");
    }
    let dead = drain(&app.res.sqs, &app.dlq).await;
    let failed = attr(&dead[0], "failed_handlers").unwrap();
    assert!(failed.ends_with("::Scripted") && !failed.contains("Second"), "{failed}");

    // The redelivery of r1 and a redrive of the dead letter: only Scripted runs.
    let again = [
        record("r1-again", &event("k-two-retry", "retry_once")),
        record("r2-redrive", &event("k-two-perm", "permanent")),
    ];
    let second = app.processor.process(&again, deadline_in(Duration::from_secs(30))).await;
    assert_eq!(second.outcomes[0].1, RecordOutcome::Processed);
    assert_eq!(second.outcomes[1].1, RecordOutcome::DeadLettered(FailureReason::PermanentError));
    assert_eq!(app.scripted.calls("k-two-retry"), 2);
    assert_eq!(app.scripted.calls("k-two-perm"), 2);
    for key in ["k-two-retry", "k-two-perm"] {
        assert_eq!(app.second.runs(key), 1, "{key}: never twice");
    }
    let done = app.res.item("processed#k-two-retry").await.unwrap();
    assert_eq!(done["status"].as_s().unwrap(), "COMPLETED");
    assert!(!done.contains_key("done_handlers"), "the progress goes once the event is complete");
}

#[tokio::test]
async fn the_happy_path_costs_two_writes_per_event_as_before() {
    let res = Resources::create(false).await;
    let calls = Recorder::default();
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk_config_for(&ddb_endpoint()).await)
            .interceptor(calls.clone())
            .build(),
    );
    let processor = Processor::new(
        IdempotencyStore::new(ddb, res.table.clone(), Duration::from_secs(3600), ClaimScope::Processor),
        None,
        Handlers::new().on_all(Scripted::default()).on_all(Second::default()),
        4,
    );
    let batch: Vec<_> = (0..10).map(|i| record(&format!("r{i}"), &event(&format!("k-cost-{i}"), "ok"))).collect();
    let report = processor.process(&batch, deadline_in(Duration::from_secs(30))).await;
    assert_eq!(report.count(|o| *o == RecordOutcome::Processed), 10);
    assert_eq!(
        calls.clone_counts(),
        [("UpdateItem".to_owned(), 20)].into(),
        "claim + complete per event, nothing else"
    );
}

/// DynamoDB and SQS slow down (1.8 s a request, inside the SDK's 2 s attempt timeout) while the
/// handlers run toward the deadline: the batch still answers before the deadline, each handler
/// that succeeded is recorded, and nothing runs twice or goes missing once the records come back.
/// With the old 2 s margin, the record whose handler ends near it would release its claim and
/// dead-letter (3.6 s) past the deadline, and Lambda would redeliver the whole batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dynamodb_slowed_near_the_deadline_no_handler_runs_twice_and_no_record_is_lost() {
    let app = spawn_two_handlers().await;
    let batch = [
        record("r-ok", &event("k-dl-ok", "ok")),
        record("r-retry", &event("k-dl-retry", "retry_once")),
        record("r-perm", &event("k-dl-perm", "late_permanent")),
        record("r-slow", &event("k-dl-slow", "slow_once")),
    ];
    let deadline = deadline_in(Duration::from_secs(16));
    let process = app.processor.process(&batch, deadline);
    let slow_down = async {
        // Once the four claims are written (read past the proxy), so the slowdown hits only
        // what follows the handlers.
        for _ in 0..100 {
            if app.res.items().await.len() == 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app.slow_ddb.set(Fault::SlowRequests(Duration::from_millis(1_800)));
        app.slow_sqs.set(Fault::SlowRequests(Duration::from_millis(1_800)));
    };
    let (report, ()) = tokio::join!(process, slow_down);
    assert!(std::time::SystemTime::now() < deadline, "the batch answered before the deadline");
    let outcome = |id: &str| report.outcomes.iter().find(|(i, _)| i == id).unwrap().1.clone();
    assert_eq!(outcome("r-ok"), RecordOutcome::Processed);
    assert!(matches!(outcome("r-retry"), RecordOutcome::Retry(_)));
    assert_eq!(outcome("r-perm"), RecordOutcome::DeadLettered(FailureReason::PermanentError));
    assert!(matches!(outcome("r-slow"), RecordOutcome::Retry(_)), "cut off at the record deadline");
    app.slow_ddb.set(Fault::Pass);
    app.slow_sqs.set(Fault::Pass);

    // SQS brings back what was not acknowledged (after the lease, the invocation's deadline).
    tokio::time::sleep(deadline.duration_since(std::time::SystemTime::now()).unwrap_or_default()).await;
    let retried: Vec<_> =
        batch.iter().filter(|r| failed_ids(&report).contains(r.message_id.as_ref().unwrap())).cloned().collect();
    let again = app.processor.process(&retried, deadline_in(Duration::from_secs(30))).await;
    assert!(failed_ids(&again).is_empty(), "{:?}", again.outcomes);
    for key in ["k-dl-ok", "k-dl-retry", "k-dl-perm", "k-dl-slow"] {
        assert_eq!(app.second.runs(key), 1, "{key}: the second handler ran exactly once");
    }
    assert_eq!(app.scripted.calls("k-dl-ok"), 1);
    assert_eq!(app.scripted.calls("k-dl-retry"), 2, "failed once, then succeeded");
    assert_eq!(app.scripted.calls("k-dl-slow"), 2, "cut off once, then succeeded");
    assert_eq!(drain(&app.res.sqs, &app.dlq).await.len(), 1, "the permanent failure, and only it, dead-lettered");
}

/// DynamoDB slower than the whole invocation: the claims cannot finish, and the batch still
/// answers before the deadline with every record left for redelivery and no handler run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dynamodb_slower_than_the_time_left_the_batch_still_answers_before_the_deadline() {
    let app = spawn_two_handlers().await;
    app.slow_ddb.set(Fault::SlowRequests(Duration::from_secs(10)));
    let batch = [record("r-1", &event("k-cut-1", "ok")), record("r-2", &event("k-cut-2", "ok"))];
    let deadline = deadline_in(Duration::from_secs(4));
    let report = app.processor.process(&batch, deadline).await;
    assert!(std::time::SystemTime::now() < deadline, "answered before the deadline");
    assert_eq!(failed_ids(&report), ["r-1", "r-2"], "both left for redelivery");
    assert_eq!(app.scripted.calls("k-cut-1") + app.second.runs("k-cut-2"), 0, "no handler ran unclaimed");
    app.slow_ddb.set(Fault::Pass);
}
