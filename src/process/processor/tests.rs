//! Unit tests for the SQS batch processor.

use std::time::{Duration, UNIX_EPOCH};

use super::dead_letter::{dead_letter_attributes, whole_names};
use super::*;
use crate::aws::queue::{MAX_MESSAGE_BYTES, attributes_size};
use crate::stigg::event::StiggEvent;
use serde_json::{Value, json};

fn record(body: &str, attrs: Value) -> SqsMessage {
    serde_json::from_value(json!({
        "messageId": "m-1", "body": body, "messageAttributes": attrs,
        "attributes": {}, "eventSourceARN": "arn:aws:sqs:us-east-1:1:q"
    }))
    .unwrap()
}

#[test]
fn a_flat_stigg_body_is_an_event() {
    let body = r#"{"type":"customer.created","messageId":"k1","traceId":"t"}"#;
    let e = event_from_record(&record(body, json!({})), None).unwrap();
    assert_eq!(e.key.as_str(), "k1");
    assert_eq!(e.trace_id.as_deref(), Some("t"));
}

#[test]
fn an_sns_wrapped_body_is_unwrapped() {
    let inner = r#"{"type":"subscription.canceled","messageId":"k2"}"#;
    let body = json!({"Type": "Notification", "MessageId": "sns-1", "TopicArn": "arn:aws:sns:x", "Message": inner})
        .to_string();
    let e = event_from_record(&record(&body, json!({})), None).unwrap();
    assert_eq!(e.key.as_str(), "k2");
    assert_eq!(e.raw_json(), inner);
}

#[test]
fn an_eventbridge_event_is_read_only_as_a_replay_of_our_forwarder() {
    let envelope = json!({"version": "0", "id": "e", "detail-type": "customer.created", "source": "stigg.webhooks",
        "account": "1", "time": "2026-12-01T10:00:00Z", "region": "us-east-1", "resources": [],
        "replay-name": "stack-replay-1",
        "detail": {"type": "customer.created", "id": "c", "stiggWebhooks": {"idempotencyKey": "k9", "receivedAt": 5}}})
    .to_string();
    let ours = EventSource::parse("stigg.webhooks").unwrap();
    let mut r = record(&envelope, json!({}));
    r.attributes.insert("SentTimestamp".into(), "1764999999999".into());
    let e = event_from_record(&r, Some(&ours)).unwrap();
    assert_eq!(e.key.as_str(), "replay:stack-replay-1:k9");
    assert_eq!(e.replay.as_deref(), Some("stack-replay-1"));
    assert_eq!(e.sent_at, Some(UNIX_EPOCH + Duration::from_millis(5)), "the first receipt, not the replay's");
    assert!(event_from_record(&r, None).is_err(), "a processor that forwards nowhere reads no replay");
    let other = EventSource::parse("someone.else").unwrap();
    assert!(event_from_record(&r, Some(&other)).is_err());
}

#[test]
fn the_queues_sent_timestamp_is_kept() {
    let mut r = record(r#"{"type":"customer.deleted","messageId":"k"}"#, json!({}));
    r.attributes.insert("SentTimestamp".into(), "1764614400123".into());
    let e = event_from_record(&r, None).unwrap();
    assert_eq!(e.sent_at, Some(UNIX_EPOCH + Duration::from_millis(1_764_614_400_123)));
}

#[test]
fn the_receivers_key_attribute_wins() {
    let attrs = json!({"idempotency_key": {"stringValue": "from-receiver", "dataType": "String"}});
    let e = event_from_record(&record(r#"{"type":"x","messageId":"from-body"}"#, attrs), None).unwrap();
    assert_eq!(e.key.as_str(), "from-receiver");
}

#[test]
fn anything_else_is_poison() {
    for body in [
        "",
        "nope",
        "[1]",
        r#"{"Type":"Notification"}"#,
        r#"{"Type":"Notification","Message":"[]"}"#,
        r#"{"no":"type"}"#,
    ] {
        assert!(event_from_record(&record(body, json!({})), None).is_err(), "{body}");
    }
}

#[tokio::test]
async fn records_end_before_the_deadline_with_a_margin_to_answer() {
    let now = SystemTime::now();
    let (end, margin) = record_deadline(now + Duration::from_secs(60), now);
    assert_eq!(margin, Duration::from_millis(10_500), "two 5 s SDK operations and the answer");
    let left = end.saturating_duration_since(tokio::time::Instant::now());
    assert!(left <= Duration::from_millis(49_500) && left > Duration::from_millis(48_500), "{left:?}");
    let (_, margin) = record_deadline(now + Duration::from_secs(2), now);
    assert_eq!(margin, Duration::from_secs(1));
    let (end, margin) = record_deadline(now - Duration::from_secs(1), now);
    assert_eq!(margin, Duration::ZERO);
    assert!(end <= tokio::time::Instant::now());
}

#[test]
fn the_largest_dead_letter_attributes_fit_the_reserve() {
    use crate::aws::queue::{ATTRIBUTE_RESERVE, MAX_EVENT_BYTES};
    use crate::stigg::event::{MAX_KEY_BYTES, MAX_TYPE_BYTES};
    let raw = json!({"type": "t".repeat(MAX_TYPE_BYTES), "messageId": "k".repeat(MAX_KEY_BYTES)}).to_string();
    let event = StiggEvent::parse(&raw).unwrap();
    let handlers = "h".repeat(2000);
    let attributes = dead_letter_attributes(
        MAX_EVENT_BYTES,
        FailureReason::PermanentError,
        &"é".repeat(5000),
        &"m".repeat(500),
        Some(&"a".repeat(2000)),
        Some(u64::MAX.to_string()),
        Some((&event, &handlers)),
    );
    assert_eq!(attributes.len(), 8, "nothing left off at the largest accepted body");
    assert!(attributes_size(&attributes) <= 3_754, "{}", attributes_size(&attributes));
    assert!(attributes_size(&attributes) <= ATTRIBUTE_RESERVE);
    // The receiver's attributes (key, type, trace id) are a subset of the same caps.
    const { assert!(MAX_KEY_BYTES * 2 + MAX_TYPE_BYTES + 64 <= ATTRIBUTE_RESERVE) };
}

#[test]
fn a_body_near_the_limit_keeps_the_attributes_that_fit() {
    let attributes =
        dead_letter_attributes(MAX_MESSAGE_BYTES - 40, FailureReason::Unparseable, "bad", "m", None, None, None);
    assert_eq!(attributes, [("failure_reason", "unparseable".to_owned())]);
    assert!(MAX_MESSAGE_BYTES - 40 + attributes_size(&attributes) <= MAX_MESSAGE_BYTES);
}

#[test]
fn failed_handlers_are_cut_at_a_names_end() {
    assert_eq!(whole_names("a,b", 512), "a,b");
    assert_eq!(whole_names("alpha,beta,gamma", 12), "alpha,beta");
}

#[test]
fn the_receivers_received_at_wins_over_the_queues_sent_timestamp() {
    let attrs = json!({"received_at": {"stringValue": "1764614400000", "dataType": "String"}});
    let mut r = record(r#"{"type":"customer.deleted","messageId":"k"}"#, attrs);
    r.attributes.insert("SentTimestamp".into(), "1764999999999".into());
    let e = event_from_record(&r, None).unwrap();
    assert_eq!(
        e.sent_at,
        Some(UNIX_EPOCH + Duration::from_millis(1_764_614_400_000)),
        "a redrive keeps the first time"
    );
}

#[test]
fn only_retries_are_reported_and_never_with_an_empty_id() {
    let report = BatchReport {
        outcomes: vec![
            ("a".into(), RecordOutcome::Processed),
            ("b".into(), RecordOutcome::Retry("x".into())),
            ("c".into(), RecordOutcome::DeadLettered(FailureReason::Unparseable)),
            ("".into(), RecordOutcome::Retry("x".into())),
        ],
    };
    let ids: Vec<_> = report.response().batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
    assert_eq!(ids, ["b"]);
}
