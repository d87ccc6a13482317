//! The receiver's HTTP contract and claim-protocol invariants, against the real SDK and moto.

mod common;

use std::time::{Duration, SystemTime};

use base64::Engine;
use common::*;
use serde_json::{Value, json};
use stigg_webhooks::claim::{ClaimOutcome, ClaimScope, IdempotencyStore};
use stigg_webhooks::config::SourceAllowList;
use stigg_webhooks::event::sha256_hex;
use stigg_webhooks::lambda_http::{Body, Response};
use stigg_webhooks::queue::EventQueue;
use stigg_webhooks::receiver::Receiver;
use stigg_webhooks::secrets::SecretSet;

const SECRET: &str = "whsec-current-0123456789";
const OLD_SECRET: &str = "whsec-previous-9876543210";

struct Options {
    fifo: bool,
    max_body_bytes: usize,
    allowed: Option<&'static str>,
    ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            fifo: false,
            max_body_bytes: stigg_webhooks::queue::MAX_EVENT_BYTES,
            allowed: None,
            ttl: Duration::from_secs(3600),
        }
    }
}

struct TestApp {
    res: Resources,
    options: Options,
    receiver: std::sync::Arc<Receiver>,
    ddb_calls: Recorder,
    sqs_calls: Recorder,
}

async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

async fn spawn_app_with(options: Options) -> TestApp {
    let res = Resources::create(options.fifo).await;
    let (ddb_calls, sqs_calls) = (Recorder::default(), Recorder::default());
    let receiver = receiver_via(&res, &options, &ddb_calls, &sqs_calls, &ddb_endpoint(), &endpoint()).await;
    TestApp { res, options, receiver: std::sync::Arc::new(receiver), ddb_calls, sqs_calls }
}

/// A receiver over the app's table and queue whose clients talk to the given endpoints (a dead
/// one simulates an outage), every call counted by the recorders.
async fn receiver_via(
    res: &Resources,
    o: &Options,
    ddb_calls: &Recorder,
    sqs_calls: &Recorder,
    ddb_endpoint: &str,
    sqs_endpoint: &str,
) -> Receiver {
    let ddb_sdk = sdk_config_for(ddb_endpoint).await;
    let sqs_sdk = sdk_config_for(sqs_endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&ddb_sdk).interceptor(ddb_calls.clone()).build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sqs_sdk).interceptor(sqs_calls.clone()).build(),
    );
    Receiver::new(
        SecretSet::parse(&format!("{OLD_SECRET},{SECRET}")).unwrap(),
        o.allowed.map(|a| SourceAllowList::parse(a).unwrap()),
        o.max_body_bytes,
        IdempotencyStore::new(ddb, res.table.clone(), o.ttl, ClaimScope::Receiver),
        EventQueue::new(sqs, res.queue.clone()),
    )
}

impl TestApp {
    async fn receiver_via(&self, ddb_endpoint: &str, sqs_endpoint: &str) -> Receiver {
        receiver_via(&self.res, &self.options, &self.ddb_calls, &self.sqs_calls, ddb_endpoint, sqs_endpoint).await
    }

    fn store(&self) -> IdempotencyStore {
        IdempotencyStore::new(self.res.ddb.clone(), self.res.table.clone(), self.options.ttl, ClaimScope::Receiver)
    }

    /// Sends a function-URL event, converted by lambda_http as at run time.
    async fn send(&self, event: Value) -> Reply {
        Reply(self.receiver.handle(url_request(&event), deadline_in(Duration::from_secs(10))).await)
    }

    async fn post(&self, body: &str) -> Reply {
        self.send(post(body)).await
    }
}

struct Reply(Response<Body>);

impl Reply {
    fn status(&self) -> i64 {
        i64::from(self.0.status().as_u16())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(self.0.body()).unwrap()
    }
}

/// Stigg's POST from its documented address, as a function-URL event.
fn post(body: &str) -> Value {
    let headers = json!({"content-type": "application/json", "stigg-webhooks-secret": SECRET});
    url_event("POST", headers, Some(body), false, Some("18.119.35.43"))
}

fn base64_post(bytes: &[u8]) -> Value {
    let mut event = post(&base64::engine::general_purpose::STANDARD.encode(bytes));
    event["isBase64Encoded"] = json!(true);
    event
}

fn event(message_id: &str) -> String {
    json!({"type": "subscription.created", "messageId": message_id, "traceId": "trace-1",
           "customer": {"id": "customer-1"}, "id": "sub-1"})
    .to_string()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/events/stigg/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

async fn assert_nothing_written(app: &TestApp) {
    assert!(app.res.items().await.is_empty(), "no claim may be written");
    assert!(app.res.drain().await.is_empty(), "nothing may be queued");
}

#[tokio::test]
async fn a_new_event_is_queued_verbatim_with_its_attributes() {
    let app = spawn_app().await;
    let body = fixture("subscription.created.json");
    let reply = app.post(&body).await;
    assert_eq!(reply.status(), 202);
    assert_eq!(reply.json()["idempotencyKey"], "a6ce...");
    let messages = app.res.drain().await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.body.as_deref(), Some(body.as_str()), "the raw bytes, verbatim");
    assert_eq!(attr(m, "event_type"), Some("subscription.created"));
    assert_eq!(attr(m, "idempotency_key"), Some("a6ce..."));
    assert_eq!(attr(m, "trace_id"), Some("549a..."));
    let item = app.res.item("accepted#a6ce...").await.expect("claim recorded");
    assert_eq!(item["status"].as_s().unwrap(), "COMPLETED");
    assert!(item.contains_key("expires_at"));
    assert!(!item.contains_key("lease_expires_at"));
}

#[tokio::test]
async fn every_documented_example_is_accepted() {
    let app = spawn_app().await;
    for name in [
        "customer.updated.json",
        "entitlement.usage_exceeded.json",
        "entitlements.updated.json",
        "subscription.trial_expired.json",
    ] {
        // The docs reuse one placeholder messageId; make each example its own event.
        let mut v: Value = serde_json::from_str(&fixture(name)).unwrap();
        v["messageId"] = json!(name);
        assert_eq!(app.post(&v.to_string()).await.status(), 202, "{name}");
    }
    assert_eq!(app.res.drain().await.len(), 4);
}

#[tokio::test]
async fn an_unknown_event_type_is_accepted_and_queued() {
    let app = spawn_app().await;
    let reply = app.post(r#"{"type":"credits.something_brand_new","messageId":"m-unknown"}"#).await;
    assert_eq!(reply.status(), 202);
    let messages = app.res.drain().await;
    assert_eq!(attr(&messages[0], "event_type"), Some("credits.something_brand_new"));
}

#[tokio::test]
async fn an_event_without_message_id_is_keyed_by_event_id_then_by_body_hash() {
    let app = spawn_app().await;
    assert_eq!(app.post(r#"{"type":"x.y","eventId":"evt-7"}"#).await.json()["idempotencyKey"], "evt-7");
    let body = r#"{"type":"subscription.trial_expired","id":"subscription-id"}"#;
    let reply = app.post(body).await;
    assert_eq!(reply.status(), 202);
    assert_eq!(reply.json()["idempotencyKey"], sha256_hex(body.as_bytes()));
    assert_eq!(app.post(body).await.status(), 200, "the same bytes again are a duplicate");
    let messages = app.res.drain().await;
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| attr(m, "trace_id").is_none()));
}

#[tokio::test]
async fn a_base64_encoded_body_is_decoded_and_queued_as_the_raw_json() {
    let app = spawn_app().await;
    let body = event("m-b64");
    assert_eq!(app.send(base64_post(body.as_bytes())).await.status(), 202);
    assert_eq!(app.res.drain().await[0].body.as_deref(), Some(body.as_str()));
}

#[tokio::test]
async fn methods_other_than_post_get_405() {
    let app = spawn_app().await;
    for method in ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
        let mut request = post(&event("m-1"));
        request["requestContext"]["http"]["method"] = json!(method);
        let reply = app.send(request).await;
        assert_eq!(reply.status(), 405, "{method}");
        assert_eq!(reply.0.headers()["allow"], "POST");
    }
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn a_missing_or_wrong_secret_gets_401_and_writes_nothing() {
    let app = spawn_app().await;
    let cases: [Option<&str>; 5] =
        [None, Some(""), Some("wrong"), Some(&SECRET[..SECRET.len() - 1]), Some(" whsec-current-0123456789x")];
    for secret in cases {
        let mut request = post(&event("m-1"));
        let headers = request["headers"].as_object_mut().unwrap();
        headers.remove("stigg-webhooks-secret");
        if let Some(s) = secret {
            headers.insert("stigg-webhooks-secret".into(), json!(s));
        }
        assert_eq!(app.send(request).await.status(), 401, "{secret:?}");
    }
    assert_eq!(app.ddb_calls.total() + app.sqs_calls.total(), 0, "no AWS call before authentication");
    assert_nothing_written(&app).await;
}

#[tokio::test]
async fn the_secret_header_name_matches_in_any_case_and_every_rotated_secret_works() {
    let app = spawn_app().await;
    for (i, (name, secret)) in
        [("Stigg-Webhooks-Secret", SECRET), ("STIGG-WEBHOOKS-SECRET", OLD_SECRET), ("stigg-webhooks-secret", SECRET)]
            .into_iter()
            .enumerate()
    {
        let event = url_event("POST", json!({name: secret}), Some(&event(&format!("m-case-{i}"))), false, None);
        assert_eq!(app.send(event).await.status(), 202, "{name}");
    }
}

#[tokio::test]
async fn a_source_outside_the_allowed_cidrs_gets_403() {
    let app = spawn_app_with(Options { allowed: Some("18.119.35.43/32"), ..Default::default() }).await;
    for ip in [Some("10.0.0.1"), Some("not-an-ip"), None] {
        let mut request = post(&event("m-ip"));
        request["requestContext"]["http"]["sourceIp"] = json!(ip);
        assert_eq!(app.send(request).await.status(), 403, "{ip:?}");
    }
    assert_nothing_written(&app).await;
    assert_eq!(app.post(&event("m-ip")).await.status(), 202, "Stigg's documented address passes");
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_and_one_at_the_limit_is_accepted() {
    let app = spawn_app_with(Options { max_body_bytes: 1024, ..Default::default() }).await;
    let padded = |len: usize| {
        let base = r#"{"type":"t","messageId":"m-size","pad":""}"#;
        format!(r#"{{"type":"t","messageId":"m-size","pad":"{}"}}"#, "x".repeat(len - base.len()))
    };
    assert_eq!(app.post(&padded(1025)).await.status(), 413);
    assert_eq!(app.send(base64_post(padded(1025).as_bytes())).await.status(), 413);
    assert_nothing_written(&app).await;
    assert_eq!(app.post(&padded(1024)).await.status(), 202);
}

#[tokio::test]
async fn malformed_payloads_get_400_and_write_nothing() {
    let app = spawn_app().await;
    let cases = [
        "",
        "not json",
        "[]",
        "[{\"type\":\"x\"}]",
        "\"string\"",
        "42",
        "null",
        "{}",
        r#"{"type":1}"#,
        r#"{"type":null}"#,
        r#"{"type":""}"#,
        r#"{"messageId":"m"}"#,
        r#"{"type":"x","messageId":"a\u0001b"}"#,
    ];
    for body in cases {
        let reply = app.post(body).await;
        assert_eq!(reply.status(), 400, "{body:?}");
        assert!(reply.json()["error"].as_str().unwrap().starts_with("invalid payload"));
    }
    assert_eq!(app.send(base64_post(b"{\"type\":\"\xff\"}")).await.status(), 400, "not UTF-8");
    assert_nothing_written(&app).await;
}

/// One table of every malformed request the receiver can meet, each as a whole function-URL
/// event, with the documented status; none of them may write anything anywhere.
#[tokio::test]
async fn every_malformed_request_gets_its_documented_status_and_writes_nothing() {
    let app = spawn_app_with(Options { max_body_bytes: 4096, ..Options::default() }).await;
    let ok = event("m-ok");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let deep = format!("{{\"type\":\"x\",\"n\":{}{}}}", "[".repeat(200), "]".repeat(200));
    let huge_id = json!({"type": "x", "messageId": "m".repeat(513)}).to_string();
    let req = |method: &str, headers: Value, body: &str, base64: bool| {
        url_event(method, headers, Some(body), base64, Some("18.119.35.43"))
    };
    let auth = json!({"stigg-webhooks-secret": SECRET});
    let cases: Vec<(&str, Value, u16)> = vec![
        ("GET", req("GET", auth.clone(), &ok, false), 405),
        ("PUT", req("PUT", auth.clone(), &ok, false), 405),
        ("DELETE", req("DELETE", auth.clone(), &ok, false), 405),
        ("HEAD", req("HEAD", auth.clone(), &ok, false), 405),
        ("no secret header", req("POST", json!({}), &ok, false), 401),
        ("empty secret", req("POST", json!({"stigg-webhooks-secret": ""}), &ok, false), 401),
        ("wrong secret", req("POST", json!({"stigg-webhooks-secret": "guess"}), &ok, false), 401),
        ("secret with a suffix", req("POST", json!({"stigg-webhooks-secret": format!("{SECRET}x")}), &ok, false), 401),
        (
            "two secrets joined",
            req("POST", json!({"stigg-webhooks-secret": format!("{OLD_SECRET},{SECRET}")}), &ok, false),
            401,
        ),
        ("secret in another header", req("POST", json!({"x-stigg-webhooks-secret": SECRET}), &ok, false), 401),
        (
            "oversized body",
            req("POST", auth.clone(), &format!("{{\"type\":\"x\",\"p\":\"{}\"}}", "a".repeat(5000)), false),
            413,
        ),
        ("oversized base64 body", req("POST", auth.clone(), &b64(&[b'a'; 6000]), true), 413),
        ("no body", url_event("POST", auth.clone(), None, false, Some("18.119.35.43")), 400),
        ("empty body", req("POST", auth.clone(), "", false), 400),
        ("not JSON", req("POST", auth.clone(), "type=subscription.created", false), 400),
        ("truncated JSON", req("POST", auth.clone(), "{\"type\":\"x\"", false), 400),
        ("JSON array", req("POST", auth.clone(), "[{\"type\":\"x\"}]", false), 400),
        ("JSON string", req("POST", auth.clone(), "\"subscription.created\"", false), 400),
        ("JSON number", req("POST", auth.clone(), "42", false), 400),
        ("JSON null", req("POST", auth.clone(), "null", false), 400),
        ("type missing", req("POST", auth.clone(), "{\"messageId\":\"m\"}", false), 400),
        ("type a number", req("POST", auth.clone(), "{\"type\":7}", false), 400),
        ("type an object", req("POST", auth.clone(), "{\"type\":{\"name\":\"x\"}}", false), 400),
        ("type empty", req("POST", auth.clone(), "{\"type\":\"\"}", false), 400),
        ("messageId huge", req("POST", auth.clone(), &huge_id, false), 400),
        (
            "messageId with a control character",
            req("POST", auth.clone(), r#"{"type":"x","messageId":"a\u0007"}"#, false),
            400,
        ),
        ("invalid UTF-8", req("POST", auth.clone(), &b64(b"{\"type\":\"\xc3\x28\"}"), true), 400),
        ("deeply nested JSON", req("POST", auth.clone(), &deep, false), 400),
        ("U+FFFF in a string", req("POST", auth.clone(), "{\"type\":\"x\",\"n\":\"\u{FFFF}\"}", false), 400),
    ];
    for (name, request, expected) in cases {
        let reply = app.send(request).await;
        assert_eq!(reply.status(), i64::from(expected), "{name}");
        assert!(reply.json()["error"].is_string(), "{name}: a small JSON error body");
    }
    assert_eq!(app.ddb_calls.total() + app.sqs_calls.total(), 0, "no AWS call for a malformed request");
    assert_nothing_written(&app).await;
    // Header-name case never matters, and the control case is accepted.
    for name in ["Stigg-Webhooks-Secret", "STIGG-WEBHOOKS-SECRET", "sTiGg-WeBhOoKs-SeCrEt"] {
        let reply = app.send(req("POST", json!({name: SECRET}), &event(name), false)).await;
        assert_eq!(reply.status(), 202, "{name}");
    }
}

#[tokio::test]
async fn a_late_duplicate_gets_2xx_costs_one_write_and_queues_nothing() {
    let app = spawn_app().await;
    assert_eq!(app.post(&event("m-dup")).await.status(), 202);
    assert_eq!(app.ddb_calls.count("PutItem"), 1, "a new event: the claim, a PutItem");
    assert_eq!(app.ddb_calls.count("UpdateItem"), 1, "and its completion");
    app.ddb_calls.reset();
    app.sqs_calls.reset();
    let reply = app.post(&event("m-dup")).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.json()["status"], "duplicate");
    assert_eq!(app.ddb_calls.count("PutItem"), 1, "the claim");
    assert_eq!(app.ddb_calls.total(), 1, "no read after the failed conditional write");
    assert_eq!(app.sqs_calls.total(), 0);
    assert_eq!(app.res.drain().await.len(), 1);
}

#[tokio::test]
async fn a_reused_key_with_a_different_body_is_acknowledged_but_not_queued() {
    let app = spawn_app().await;
    assert_eq!(app.post(&event("m-reuse")).await.status(), 202);
    let other = json!({"type": "subscription.canceled", "messageId": "m-reuse"}).to_string();
    assert_eq!(app.post(&other).await.status(), 200);
    let messages = app.res.drain().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(attr(&messages[0], "event_type"), Some("subscription.created"));
}

#[tokio::test]
async fn a_key_is_accepted_again_once_its_ttl_has_passed() {
    // Expiry is in whole seconds: a 1 s TTL could end between the first post and the duplicate
    // on a loaded machine (a fresh-clone CI run saw it), 3 s cannot.
    let app = spawn_app_with(Options { ttl: Duration::from_secs(3), ..Default::default() }).await;
    assert_eq!(app.post(&event("m-ttl")).await.status(), 202);
    assert_eq!(app.post(&event("m-ttl")).await.status(), 200);
    // DynamoDB sweeps expired items lazily (up to days later): the claim must treat them as gone.
    tokio::time::sleep(Duration::from_millis(4100)).await;
    assert!(app.res.item("accepted#m-ttl").await.is_some(), "the emulator keeps the expired item");
    assert_eq!(app.post(&event("m-ttl")).await.status(), 202);
    assert_eq!(app.res.drain().await.len(), 2);
}

#[tokio::test]
async fn an_in_flight_claim_gets_409_and_a_crashed_one_is_taken_over_after_its_lease() {
    let app = spawn_app().await;
    // A process that claimed the key and died before sending: its lease ends at its deadline.
    let crashed =
        app.store().claim(&"m-crash".parse_key(), "h", SystemTime::now() + Duration::from_millis(700)).await.unwrap();
    assert!(matches!(crashed, ClaimOutcome::Claimed(_)));
    drop(crashed);
    let reply = app.post(&event("m-crash")).await;
    assert_eq!(reply.status(), 409);
    assert!(app.res.drain().await.is_empty());
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(app.post(&event("m-crash")).await.status(), 202);
    let messages = app.res.drain().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(attr(&messages[0], "idempotency_key"), Some("m-crash"));
}

#[tokio::test]
async fn when_sqs_refuses_the_claim_is_rolled_back_and_the_retry_is_accepted() {
    let app = spawn_app().await;
    let broken = app.receiver_via(&ddb_endpoint(), DEAD_ENDPOINT).await;
    let reply = broken.handle(url_request(&post(&event("m-sqs-down"))), deadline_in(Duration::from_secs(10))).await;
    assert_eq!(reply.status(), 503);
    assert!(!String::from_utf8_lossy(reply.body()).contains("127.0.0.1"), "no internal detail in the answer");
    assert!(app.sqs_calls.count("SendMessage") >= 2, "the SDK retried before giving up");
    assert!(app.res.items().await.is_empty(), "no claim left behind");
    // Stigg retries after the outage: accepted at once, queued once.
    assert_eq!(app.post(&event("m-sqs-down")).await.status(), 202);
    assert_eq!(app.res.drain().await.len(), 1);
}

#[tokio::test]
async fn when_dynamodb_refuses_the_answer_is_503_and_nothing_is_queued() {
    let app = spawn_app().await;
    let broken = app.receiver_via(DEAD_ENDPOINT, &endpoint()).await;
    let reply = broken.handle(url_request(&post(&event("m-ddb-down"))), deadline_in(Duration::from_secs(10))).await;
    assert_eq!(reply.status(), 503);
    assert_eq!(app.sqs_calls.total(), 0);
    assert!(app.res.drain().await.is_empty());
    assert_eq!(app.post(&event("m-ddb-down")).await.status(), 202);
}

#[tokio::test]
async fn when_the_completion_write_fails_after_the_send_the_event_is_still_acknowledged() {
    let app = spawn_app().await;
    app.ddb_calls.fail_when("UpdateItem", "COMPLETED");
    assert_eq!(app.post(&event("m-complete-fails")).await.status(), 202);
    assert_eq!(app.res.drain().await.len(), 1, "the event is in the queue");
    let item = app.res.item("accepted#m-complete-fails").await.unwrap();
    assert_eq!(item["status"].as_s().unwrap(), "IN_PROGRESS", "the lease guards the key until the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_deliveries_of_one_key_are_queued_exactly_once() {
    let app = spawn_app().await;
    // The claims race on a DynamoDB whose conditional writes are atomic per item, as DynamoDB's
    // are: moto's threaded server let two of them win on a loaded CI run (see `SerialMoto`).
    let serial = SerialMoto::start().await;
    if serial.endpoint != ddb_endpoint() {
        create_table(&aws_sdk_dynamodb::Client::new(&admin_config_for(&serial.endpoint).await), app.res.table.as_str())
            .await;
    }
    let receiver = std::sync::Arc::new(
        receiver_via(&app.res, &app.options, &app.ddb_calls, &app.sqs_calls, &serial.endpoint, &endpoint()).await,
    );
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            let receiver = receiver.clone();
            tokio::spawn(async move {
                receiver
                    .handle(url_request(&post(&event("m-race"))), deadline_in(Duration::from_secs(10)))
                    .await
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| [200, 202, 409].contains(s)), "{statuses:?}");
    assert_eq!(app.res.drain().await.len(), 1);
}

#[tokio::test]
async fn a_fifo_queue_gets_the_customer_as_group_and_a_digest_of_the_key_as_deduplication_id() {
    let app = spawn_app_with(Options { fifo: true, ..Default::default() }).await;
    assert_eq!(app.post(&event("m-fifo")).await.status(), 202);
    assert_eq!(app.post(r#"{"type":"plan.created","messageId":"m-plan"}"#).await.status(), 202);
    let messages = app.res.drain().await;
    assert_eq!(messages.len(), 2);
    let sys = |m: &aws_sdk_sqs::types::Message, a| m.attributes.as_ref().unwrap().get(&a).cloned();
    use aws_sdk_sqs::types::MessageSystemAttributeName as A;
    let by_key = |k| messages.iter().find(|m| attr(m, "idempotency_key") == Some(k)).unwrap();
    assert_eq!(sys(by_key("m-fifo"), A::MessageGroupId).as_deref(), Some("customer-1"));
    assert_eq!(sys(by_key("m-fifo"), A::MessageDeduplicationId), Some(sha256_hex(b"m-fifo")));
    assert_eq!(sys(by_key("m-plan"), A::MessageGroupId).as_deref(), Some("plan"));
}

#[tokio::test]
async fn secrets_can_be_read_from_an_ssm_secure_string() {
    let sdk = sdk_config().await;
    let name = format!("/stigg/{}", unique("secret"));
    aws_sdk_ssm::Client::new(&admin_config_for(&endpoint()).await)
        .put_parameter()
        .name(&name)
        .value(format!("{OLD_SECRET},{SECRET}"))
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    use stigg_webhooks::secrets::SecretFetch;
    let set = stigg_webhooks::aws::SecretParameter::new(&sdk, &name).fetch().await.unwrap();
    assert!(set.verify(SECRET.as_bytes()) && set.verify(OLD_SECRET.as_bytes()));
    let err = stigg_webhooks::aws::SecretParameter::new(&sdk, "/stigg/missing").fetch().await.unwrap_err();
    assert!(err.to_string().contains("/stigg/missing"));
}

trait ParseKey {
    fn parse_key(&self) -> stigg_webhooks::event::IdempotencyKey;
}

impl ParseKey for str {
    fn parse_key(&self) -> stigg_webhooks::event::IdempotencyKey {
        stigg_webhooks::event::IdempotencyKey::parse(self).unwrap()
    }
}
