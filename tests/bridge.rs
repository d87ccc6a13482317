//! The bridge binary under a Lambda Runtime API, against moto: Stigg's queue sits behind a guard
//! that admits only requests signed with unexpired credentials from the Edge API stand-in (so a
//! stale or wrong identity is refused, as Stigg's account would), our events queue is plain moto.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsMessage;
use aws_sdk_sqs::types::{Message, SendMessageBatchRequestEntry};
use common::counting_proxy::CountingProxy;
use common::runtime_api::{FunctionProcess, RuntimeApi, binary};
use common::stigg_stand_ins::{EdgeApiStandIn, SignatureGuard};
use common::*;
use serde_json::{Value, json};
use stigg_webhooks::claim::{ClaimScope, IdempotencyStore};
use stigg_webhooks::config::QueueUrl;
use stigg_webhooks::event::StiggEvent;
use stigg_webhooks::handler::{Handler, HandlerError, Handlers};
use stigg_webhooks::processor::{FailureReason, Processor, RecordOutcome};
use stigg_webhooks::queue::EventQueue;
use stigg_webhooks::receiver::Receiver;
use stigg_webhooks::secrets::{SecretSet, Secrets};

const API_KEY: &str = "stigg-server-key-for-tests";

/// Stigg's side: its queue (in moto), the Edge API stand-in, and the guard in front of the queue.
struct StiggSide {
    sqs: aws_sdk_sqs::Client,
    queue: QueueUrl,
    edge: EdgeApiStandIn,
    guard: SignatureGuard,
}

impl StiggSide {
    async fn start(lifetime: Duration) -> Self {
        let sqs = aws_sdk_sqs::Client::new(&admin_config_for(&endpoint()).await);
        let queue = create_queue(&sqs, &unique("stigg-durable"), false).await;
        let edge = EdgeApiStandIn::start(API_KEY, queue.as_str(), lifetime).await;
        let guard = SignatureGuard::start(&endpoint(), edge.clone()).await;
        Self { sqs, queue, edge, guard }
    }

    /// Puts bodies on Stigg's queue (as Stigg would, straight to moto), in batches within SQS's
    /// limits (ten messages, 1 MiB).
    async fn put(&self, bodies: &[String]) {
        let mut chunks: Vec<Vec<&String>> = vec![];
        for body in bodies {
            match chunks.last_mut() {
                Some(c) if c.len() < 10 && c.iter().map(|b| b.len()).sum::<usize>() + body.len() <= 1_048_576 => {
                    c.push(body)
                }
                _ => chunks.push(vec![body]),
            }
        }
        for chunk in chunks {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(*b).build().unwrap()
                })
                .collect();
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(self.queue.as_str())
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap();
            assert!(out.failed().is_empty(), "{:?}", out.failed());
        }
    }

    async fn depth(&self) -> usize {
        queue_depth(&self.sqs, &self.queue).await
    }

    fn env(&self, events: &QueueUrl, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("STIGG_QUEUE_URL", self.queue.as_str().to_owned()),
            ("STIGG_API_KEY", API_KEY.to_owned()),
            ("STIGG_EDGE_API_URL", self.edge.url()),
            ("STIGG_SQS_ENDPOINT_URL", self.guard.url()),
            ("EVENTS_QUEUE_URL", events.as_str().to_owned()),
            ("STIGG_CREDENTIALS_SECONDS", "900".to_owned()),
            ("BRIDGE_WAIT_SECONDS", "1".to_owned()),
            ("BRIDGE_MAX_EMPTY_POLLS", "1".to_owned()),
            ("AWS_ENDPOINT_URL", endpoint()),
            ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()),
        ];
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            if !v.is_empty() {
                env.push((k, (*v).to_owned()));
            }
        }
        env
    }
}

fn event(key: &str) -> String {
    json!({"type": "subscription.updated", "messageId": key, "traceId": format!("trace-{key}"),
        "timestamp": "2026-12-01T10:00:00.000Z", "customer": {"id": "customer-1"}})
    .to_string()
}

fn keys(messages: &[Message]) -> Vec<String> {
    messages.iter().filter_map(|m| attr(m, "idempotency_key").map(str::to_owned)).collect()
}

struct Run {
    api: RuntimeApi,
    bridge: FunctionProcess,
}

async fn start_bridge(env: &[(&'static str, String)], timeout: Duration) -> Run {
    let api = RuntimeApi::start(timeout).await;
    let bridge = FunctionProcess::spawn(binary("bridge").as_path(), &api, env);
    Run { api, bridge }
}

impl Run {
    async fn invoke(&self) -> Result<Value, String> {
        self.api.invoke(&json!({"source": "scheduler"}), Duration::from_secs(120)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_are_drained_with_none_lost_or_duplicated() {
    let res = Resources::create(false).await;
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    let bodies: Vec<_> = (0..1000).map(|i| event(&format!("bulk-{i:04}"))).collect();
    stigg.put(&bodies).await;
    let run = start_bridge(&stigg.env(&res.queue, &[]), Duration::from_secs(120)).await;
    let started = std::time::Instant::now();
    let report = run.invoke().await.expect("the drain succeeds");
    eprintln!("bridge: 1000 messages drained against moto in {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!((report["forwarded"].as_u64(), report["deleted"].as_u64()), (Some(1000), Some(1000)), "{report}");
    assert_eq!(report["forward_failures"], 0);
    let forwarded = take_all(&res.sqs, &res.queue).await;
    let distinct: HashSet<_> = keys(&forwarded).into_iter().collect();
    assert_eq!((forwarded.len(), distinct.len()), (1000, 1000), "each message exactly once");
    assert!(
        forwarded
            .iter()
            .all(|m| attr(m, "source") == Some("stigg-queue") && attr(m, "event_type") == Some("subscription.updated"))
    );
    assert!(forwarded.iter().all(|m| attr(m, "trace_id").is_some_and(|t| t.starts_with("trace-bulk-"))));
    assert_eq!(stigg.depth().await, 0, "everything forwarded was deleted");
    assert!(stigg.guard.refused().is_empty(), "{:?}", stigg.guard.refused());
    assert_eq!(stigg.edge.requests(), 1, "one credentials fetch for the whole drain");
    assert_eq!(stigg.edge.durations(), ["900"], "STIGG_CREDENTIALS_SECONDS is what is asked for");
    let lines = run.bridge.settled_lines().await;
    assert_eq!(emf_sum(&lines, "BridgeMessages", Some(("Outcome", "forwarded"))), 1000.0);
    assert_eq!(emf_sum(&lines, "EdgeCredentialFetches", Some(("Outcome", "fetched"))), 1.0);
    assert!(emf_sum(&lines, "BridgePolls", Some(("Outcome", "empty"))) >= 1.0);
    // One age per message, in documents CloudWatch keeps whole (at most 100 values per metric).
    let (ages, most) = emf_value_counts(&lines, "BridgeMessageAge");
    assert!(most <= 100, "a document carries {most} values of one metric");
    assert_eq!(ages.iter().sum::<usize>(), 1000, "{ages:?}");
    assert!(ages.len() >= 10, "{ages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_expiring_mid_run_are_refreshed_before_they_expire_and_nothing_is_lost() {
    let res = Resources::create(false).await;
    // 20 s credentials: the SDK's identity cache renews them 10-15 s before expiry.
    let stigg = StiggSide::start(Duration::from_secs(20)).await;
    // Poll until the deadline (no early stop), while events keep arriving for 25 s or more (a
    // loaded machine puts slower): a 75 s invocation polls for its first 44 s (it keeps the
    // 31 s finish margin).
    let run = start_bridge(&stigg.env(&res.queue, &[("BRIDGE_MAX_EMPTY_POLLS", "")]), Duration::from_secs(75)).await;
    let invocation = run.api.submit(&json!({}));
    let mut sent = 0;
    for burst in 0..50 {
        stigg.put(&[event(&format!("trickle-{burst}-a")), event(&format!("trickle-{burst}-b"))]).await;
        sent += 2;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report: Value = match tokio::time::timeout(Duration::from_secs(90), invocation).await {
        Ok(Ok(common::runtime_api::Outcome::Response(body))) => serde_json::from_slice(&body).unwrap(),
        other => panic!("the drain did not succeed: {other:?}"),
    };
    assert_eq!(report["forwarded"].as_u64(), Some(sent), "{report}");
    assert!(stigg.edge.issued() >= 3, "renewed as they neared expiry: {} issued", stigg.edge.issued());
    assert!(stigg.guard.refused().is_empty(), "never signed with expired credentials: {:?}", stigg.guard.refused());
    let forwarded = keys(&take_all(&res.sqs, &res.queue).await);
    assert_eq!(forwarded.iter().collect::<HashSet<_>>().len(), sent as usize);
    assert_eq!(forwarded.len(), sent as usize);
    assert_eq!(stigg.depth().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_api_key_fails_the_invocation_says_so_and_leaves_every_message() {
    let res = Resources::create(false).await;
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    stigg.put(&[event("refused-1"), event("refused-2")]).await;
    let run = start_bridge(
        &stigg.env(&res.queue, &[("STIGG_API_KEY", "a-key-of-another-environment")]),
        Duration::from_secs(30),
    )
    .await;
    let error = run.invoke().await.expect_err("a refused key is an invocation error");
    assert!(error.contains("cannot read this queue"), "{error}");
    assert_eq!(stigg.depth().await, 2, "nothing received, nothing deleted");
    assert!(res.drain().await.is_empty());
    let lines = run.bridge.settled_lines().await;
    assert_eq!(emf_sum(&lines, "EdgeCredentialFetches", Some(("Outcome", "refused"))), 1.0);
    assert!(run.bridge.count_message("Stigg refused the API key") >= 1, "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("a-key-of-another-environment")), "the key is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_rotated_in_ssm_is_used_after_the_first_refusal_without_a_redeploy() {
    let res = Resources::create(false).await;
    // Short-lived credentials, so the second invocation asks the Edge API again.
    let stigg = StiggSide::start(Duration::from_secs(11)).await;
    let parameter = format!("/stigg-test/{}", unique("api-key"));
    put_secure_parameter(&parameter, API_KEY).await;
    let env = stigg.env(&res.queue, &[("STIGG_API_KEY", ""), ("STIGG_API_KEY_PARAMETER", &parameter)]);
    let run = start_bridge(&env, Duration::from_secs(30)).await;
    stigg.put(&[event("before-rotation")]).await;
    assert_eq!(run.invoke().await.unwrap()["forwarded"], 1);
    // The operator creates a new key in Stigg, stores it, and Stigg stops accepting the old one.
    put_secure_parameter(&parameter, "stigg-server-key-rotated").await;
    stigg.edge.set_api_key("stigg-server-key-rotated");
    // Past the first credentials' lifetime, so the next poll must ask the Edge API again.
    tokio::time::sleep(Duration::from_secs(12)).await;
    stigg.put(&[event("after-rotation")]).await;
    let report = run.invoke().await.expect("the new key is read from SSM after the refusal");
    assert_eq!(report["forwarded"], 1, "{report}");
    assert_eq!(run.bridge.count_message("the Stigg API key parameter changed; retrying with the new key"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_api_outage_is_retried_with_backoff_within_the_invocation() {
    let res = Resources::create(false).await;
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    stigg.put(&[event("outage-1")]).await;
    stigg.edge.script(&[503, 502, 500]);
    let run = start_bridge(&stigg.env(&res.queue, &[]), Duration::from_secs(30)).await;
    let report = run.invoke().await.expect("the fourth attempt succeeds");
    assert_eq!(report["forwarded"], 1);
    assert_eq!(stigg.edge.requests(), 4);
    assert_eq!(emf_sum(&run.bridge.settled_lines().await, "EdgeCredentialFetches", Some(("Outcome", "retried"))), 3.0);

    // An outage longer than the retry budget: an error, and the message stays in Stigg's queue.
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    stigg.put(&[event("outage-2")]).await;
    stigg.edge.script(&[503; 30]);
    let run = start_bridge(&stigg.env(&res.queue, &[]), Duration::from_secs(40)).await;
    let error = run.invoke().await.expect_err("no credentials within the budget");
    assert!(error.contains("unavailable"), "{error}");
    assert_eq!(stigg.depth().await, 1);
    assert_eq!(emf_sum(&run.bridge.settled_lines().await, "EdgeCredentialFetches", Some(("Outcome", "failed"))), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_our_queue_refuses_sends_nothing_is_deleted_from_stiggs_queue() {
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    stigg.put(&[event("kept-1"), event("kept-2"), event("kept-3")]).await;
    let missing = QueueUrl::parse(&format!("{}/123456789012/{}", endpoint(), unique("no-such-queue"))).unwrap();
    let run = start_bridge(&stigg.env(&missing, &[]), Duration::from_secs(30)).await;
    let error = run.invoke().await.expect_err("a refused forward fails the invocation");
    assert!(error.contains("forwarding to our events queue failed"), "{error}");
    assert_eq!(stigg.guard.admitted("AmazonSQS.DeleteMessageBatch"), 0, "no delete was even attempted");
    assert_eq!(stigg.depth().await, 3, "all three wait out the visibility timeout in Stigg's queue");
    assert_eq!(emf_sum(&run.bridge.settled_lines().await, "BridgeMessages", Some(("Outcome", "forward_failed"))), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_bridge_whose_credentials_are_revoked_fetches_new_ones_in_the_same_run_and_forwards_everything() {
    let res = Resources::create(false).await;
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    let run = start_bridge(&stigg.env(&res.queue, &[]), Duration::from_secs(30)).await;
    stigg.put(&[event("before-revocation")]).await;
    assert_eq!(run.invoke().await.expect("the first run")["forwarded"], 1);
    // Stigg revokes the credentials it issued, 15 minutes before their stated expiration.
    stigg.edge.revoke_issued();
    let bodies: Vec<_> = (0..3).map(|i| event(&format!("after-revocation-{i}"))).collect();
    stigg.put(&bodies).await;
    let report = run.invoke().await.expect("new credentials, fetched within the run");
    assert_eq!(report["credentials_renewed"], 1, "{report}");
    assert_eq!((report["forwarded"].as_u64(), report["deleted"].as_u64()), (Some(3), Some(3)), "{report}");
    assert_eq!(stigg.edge.issued(), 2, "one new credential, not one per call");
    assert_eq!(stigg.guard.refused(), ["AccessDenied ASIAEDGE00000001"], "one rejected call");
    assert_eq!(stigg.depth().await, 0);
    let forwarded = keys(&take_all(&res.sqs, &res.queue).await);
    assert_eq!(forwarded.iter().collect::<HashSet<_>>().len(), 4, "{forwarded:?}");
    assert_eq!(forwarded.len(), 4);
    let lines = run.bridge.settled_lines().await;
    assert_eq!(emf_sum(&lines, "BridgeCredentialsRejected", Some(("Outcome", "renewed"))), 1.0);
    assert_eq!(emf_sum(&lines, "EdgeCredentialFetches", Some(("Outcome", "fetched"))), 2.0);
    let renewing = "Stigg's queue rejected the Edge API credentials before their expiration; fetching new ones and trying once more";
    assert_eq!(run.bridge.count_message(renewing), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_revoked_between_the_receive_and_the_delete_are_renewed_before_deleting() {
    let res = Resources::create(false).await;
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    stigg.put(&[event("revoked-mid-1"), event("revoked-mid-2"), event("revoked-mid-3")]).await;
    stigg.guard.revoke_after_next("AmazonSQS.ReceiveMessage");
    let run = start_bridge(&stigg.env(&res.queue, &[]), Duration::from_secs(30)).await;
    let report = run.invoke().await.expect("the delete is made again with new credentials");
    assert_eq!(report["credentials_renewed"], 1, "{report}");
    assert_eq!((report["deleted"].as_u64(), report["delete_failures"].as_u64()), (Some(3), Some(0)), "{report}");
    assert_eq!(stigg.guard.refused().len(), 1, "{:?}", stigg.guard.refused());
    assert!(stigg.guard.refused()[0].starts_with("AccessDenied"), "{:?}", stigg.guard.refused());
    assert_eq!(stigg.guard.admitted("AmazonSQS.DeleteMessageBatch"), 1, "the delete that passed");
    assert_eq!(stigg.depth().await, 0, "nothing left to be forwarded again");
    assert_eq!(keys(&take_all(&res.sqs, &res.queue).await).len(), 3, "each forwarded once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_rejected_again_after_the_renewal_fail_the_run_and_the_next_run_recovers() {
    let res = Resources::create(false).await;
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    let run = start_bridge(&stigg.env(&res.queue, &[]), Duration::from_secs(30)).await;
    stigg.put(&[event("warm-up")]).await;
    assert_eq!(run.invoke().await.expect("the first run")["forwarded"], 1);
    // Stigg's queue now rejects every credential, even new ones.
    stigg.edge.revoke_issued();
    stigg.edge.revoke_on_issue(true);
    stigg.put(&[event("kept-1"), event("kept-2")]).await;
    let error = run.invoke().await.expect_err("rejected again after the renewal");
    assert!(
        error.contains("rejected the Edge API's credentials (ReceiveMessage), also after fetching new ones"),
        "{error}"
    );
    assert_eq!(stigg.edge.issued(), 2, "one renewal per run, no loop");
    assert_eq!(stigg.guard.refused().len(), 2, "{:?}", stigg.guard.refused());
    assert_eq!(stigg.depth().await, 2, "nothing received, nothing deleted");
    let lines = run.bridge.settled_lines().await;
    assert_eq!(emf_sum(&lines, "BridgeCredentialsRejected", Some(("Outcome", "renewed"))), 1.0);
    assert_eq!(emf_sum(&lines, "BridgeCredentialsRejected", Some(("Outcome", "failed"))), 1.0);
    assert_eq!(run.bridge.count_message("Stigg's queue rejected the Edge API credentials, also new ones"), 1);

    // Stigg admits new credentials again: the next run renews its rejected ones and catches up,
    // without waiting for them to expire.
    stigg.edge.revoke_on_issue(false);
    let report = run.invoke().await.expect("the next run recovers");
    assert_eq!((report["credentials_renewed"].as_u64(), report["forwarded"].as_u64()), (Some(1), Some(2)), "{report}");
    assert_eq!(stigg.depth().await, 0);
}

/// A Stigg event of exactly `bytes` (its payload padded in a field of its own).
fn event_of(key: &str, bytes: usize) -> String {
    let with = |padding: String| {
        json!({"type": "entitlements.updated", "messageId": key, "traceId": format!("trace-{key}"),
            "customer": {"id": "customer-1"}, "padding": padding})
        .to_string()
    };
    let bare = with(String::new()).len();
    let body = with("p".repeat(bytes - bare));
    assert_eq!(body.len(), bytes);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_700_kib_is_forwarded_verbatim_with_its_attributes_and_deleted() {
    let res = Resources::create(false).await;
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    let body = event_of("large-700", 700 * 1024);
    stigg.put(std::slice::from_ref(&body)).await;
    let run = start_bridge(&stigg.env(&res.queue, &[]), Duration::from_secs(30)).await;
    let report = run.invoke().await.expect("the drain succeeds");
    assert_eq!((report["forwarded"].as_u64(), report["deleted"].as_u64()), (Some(1), Some(1)), "{report}");
    let forwarded = take_all(&res.sqs, &res.queue).await;
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].body(), Some(body.as_str()), "byte for byte");
    assert_eq!(attr(&forwarded[0], "idempotency_key"), Some("large-700"));
    assert_eq!(attr(&forwarded[0], "trace_id"), Some("trace-large-700"));
    assert_eq!(stigg.depth().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_near_1_mib_is_forwarded_whole_without_the_attributes_that_do_not_fit_and_keeps_its_key() {
    let res = Resources::create(false).await;
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    // SQS's limit less a few bytes: the body fits, the bridge's attributes do not.
    let body = event_of("nearly-1-mib", 1_048_576 - 5);
    stigg.put(std::slice::from_ref(&body)).await;
    let run = start_bridge(&stigg.env(&res.queue, &[]), Duration::from_secs(30)).await;
    let report = run.invoke().await.expect("the drain succeeds");
    assert_eq!((report["forwarded"].as_u64(), report["deleted"].as_u64()), (Some(1), Some(1)), "{report}");
    let forwarded = take_all(&res.sqs, &res.queue).await;
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].body(), Some(body.as_str()), "the body is never cut");
    assert!(forwarded[0].message_attributes().is_none_or(|a| a.is_empty()), "{:?}", forwarded[0].message_attributes());
    assert_eq!(
        run.bridge.count_message("forwarded without some attributes to fit SQS's 1 MiB; the body carries them"),
        1
    );
    // The processor takes the key from the body: the same as by webhook.
    let counting = Counting::default();
    let processor = Processor::new(
        IdempotencyStore::new(res.ddb.clone(), res.table.clone(), Duration::from_secs(3600), ClaimScope::Processor),
        None,
        Handlers::new().on_all(counting.clone()),
        4,
    );
    let batch = processor.process(&[as_record(&forwarded[0])], deadline_in(Duration::from_secs(30))).await;
    assert_eq!(batch.count(|o| matches!(o, RecordOutcome::Processed)), 1);
    assert_eq!(counting.0.lock().unwrap().get("nearly-1-mib"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_over_1_mib_is_forwarded_in_batches_within_sqss_limit() {
    let res = Resources::create(false).await;
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    // 1.2 MiB in one poll: one SendMessageBatch would exceed SQS's (and moto's) 1 MiB.
    let bodies: Vec<_> = (0..3).map(|i| event_of(&format!("split-{i}"), 400 * 1024)).collect();
    stigg.put(&bodies).await;
    let ours = CountingProxy::start(&endpoint()).await;
    let run = start_bridge(&stigg.env(&res.queue, &[("AWS_ENDPOINT_URL", &ours.url())]), Duration::from_secs(30)).await;
    let report = run.invoke().await.expect("the drain succeeds");
    assert_eq!(report["polls"].as_u64().unwrap() - report["empty_polls"].as_u64().unwrap(), 1, "one poll: {report}");
    assert_eq!((report["forwarded"].as_u64(), report["forward_failures"].as_u64()), (Some(3), Some(0)), "{report}");
    assert_eq!(ours.count("AmazonSQS.SendMessageBatch"), 2, "800 KiB, then 400 KiB");
    let forwarded = take_all(&res.sqs, &res.queue).await;
    let by_key: HashMap<_, _> =
        forwarded.iter().map(|m| (attr(m, "idempotency_key").unwrap(), m.body().unwrap())).collect();
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(by_key.get(format!("split-{i}").as_str()), Some(&body.as_str()));
    }
    assert_eq!(stigg.depth().await, 0);
}

/// Counts handler runs per key.
#[derive(Clone, Default)]
struct Counting(Arc<Mutex<HashMap<String, usize>>>);

#[async_trait]
impl Handler for Counting {
    async fn handle(&self, event: &StiggEvent) -> Result<(), HandlerError> {
        *self.0.lock().unwrap().entry(event.key.to_string()).or_default() += 1;
        Ok(())
    }
}

/// An SDK message as Lambda's event source mapping hands it to the processor.
fn as_record(m: &Message) -> SqsMessage {
    let attributes: serde_json::Map<String, Value> = m
        .message_attributes()
        .map(|a| {
            a.iter().map(|(k, v)| (k.clone(), json!({"stringValue": v.string_value(), "dataType": "String"}))).collect()
        })
        .unwrap_or_default();
    serde_json::from_value(json!({
        "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": attributes,
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events", "awsRegion": "us-east-1"
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_envelopes_are_unwrapped_and_a_poison_body_reaches_the_dlq_with_its_reason() {
    let res = Resources::create(false).await;
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    let inner = event("via-sns");
    let envelope =
        json!({"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:eu-west-1:210987654321:stigg",
        "Message": inner, "Timestamp": "2026-12-01T10:00:00.000Z", "SignatureVersion": "1"})
        .to_string();
    stigg.put(&[envelope, "this is not a Stigg event".to_owned(), event("plain")]).await;
    let run = start_bridge(&stigg.env(&res.queue, &[]), Duration::from_secs(30)).await;
    let report = run.invoke().await.unwrap();
    assert_eq!((report["forwarded"].as_u64(), report["unparseable"].as_u64()), (Some(3), Some(1)), "{report}");
    let forwarded = res.drain().await;
    let unwrapped = forwarded.iter().find(|m| attr(m, "idempotency_key") == Some("via-sns")).expect("forwarded");
    assert_eq!(unwrapped.body(), Some(inner.as_str()), "the payload itself, not the envelope");
    let poison = forwarded.iter().find(|m| attr(m, "idempotency_key").is_none()).expect("forwarded as-is");
    assert_eq!(poison.body(), Some("this is not a Stigg event"));
    assert_eq!(attr(poison, "source"), Some("stigg-queue"));

    let dlq = create_queue(&res.sqs, &unique("dlq"), false).await;
    let processor = Processor::new(
        IdempotencyStore::new(res.ddb.clone(), res.table.clone(), Duration::from_secs(3600), ClaimScope::Processor),
        Some(EventQueue::new(aws_sdk_sqs::Client::new(&sdk_config().await), dlq.clone())),
        Handlers::new().on_all(Counting::default()),
        4,
    );
    let records: Vec<_> = forwarded.iter().map(as_record).collect();
    let batch = processor.process(&records, deadline_in(Duration::from_secs(30))).await;
    assert_eq!(batch.count(|o| matches!(o, RecordOutcome::Processed)), 2);
    assert_eq!(batch.count(|o| matches!(o, RecordOutcome::DeadLettered(FailureReason::Unparseable))), 1);
    let dead = drain(&res.sqs, &dlq).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some("this is not a Stigg event"));
    assert!(attr(&dead[0], "failure_detail").is_some_and(|d| d.contains("JSON")), "{:?}", dead[0].message_attributes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_by_webhook_and_by_the_queue_runs_its_handlers_once() {
    let res = Resources::create(false).await;
    let stigg = StiggSide::start(Duration::from_secs(900)).await;
    let secret = "bridge-and-webhook-secret-0123";
    let sdk = sdk_config().await;
    let receiver = Receiver::new(
        Secrets::fixed(SecretSet::parse(secret).unwrap()),
        None,
        262_144,
        IdempotencyStore::new(res.ddb.clone(), res.table.clone(), Duration::from_secs(3600), ClaimScope::Receiver),
        EventQueue::new(aws_sdk_sqs::Client::new(&sdk), res.queue.clone()),
    );
    // One event with a messageId, one keyed by the digest of its body: both channels agree.
    let by_id = event("both-ways");
    let by_digest = json!({"type": "customer.updated", "id": "customer-9", "name": "Acme"}).to_string();
    for body in [&by_id, &by_digest] {
        let headers = json!({"stigg-webhooks-secret": secret, "content-type": "application/json"});
        let request = url_request(&url_event("POST", headers, Some(body), false, Some("18.119.35.43")));
        let response = receiver.handle_request(request).await.unwrap();
        assert_eq!(response.status(), 202);
    }
    stigg.put(&[by_id.clone(), by_digest.clone()]).await;
    let run = start_bridge(&stigg.env(&res.queue, &[]), Duration::from_secs(30)).await;
    assert_eq!(run.invoke().await.unwrap()["forwarded"], 2);

    let queued = res.drain().await;
    assert_eq!(queued.len(), 4, "both channels queued both events");
    let counting = Counting::default();
    let processor = Processor::new(
        IdempotencyStore::new(res.ddb.clone(), res.table.clone(), Duration::from_secs(3600), ClaimScope::Processor),
        None,
        Handlers::new().on_all(counting.clone()),
        4,
    );
    // Separate batches, as two deliveries would arrive.
    for message in &queued {
        processor.process(&[as_record(message)], deadline_in(Duration::from_secs(30))).await;
    }
    let runs = counting.0.lock().unwrap().clone();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.values().all(|n| *n == 1), "handlers ran once per event: {runs:?}");
}
