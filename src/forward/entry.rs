//! What one Stigg event becomes on the bus.
//!
//! - `Source`: the configured source (`stigg.webhooks`); `DetailType`: Stigg's `type`;
//! - `Time`: the event's own `timestamp` when it has one (else PutEvents' time);
//! - `Detail`: Stigg's payload as Stigg sent it, byte for byte, with one member appended,
//!   [`METADATA`]: `{"idempotencyKey", "traceId", "receivedAt"}`, so a rule can match on the key
//!   or the trace id and a consumer can drop a duplicate (EventBridge delivers at least once).
//!
//! An event whose entry would pass the entry limit is forwarded with a **reduced detail**: the
//! identifying fields (`type`, `messageId`, `eventId`, `customerId`, `traceId`, `timestamp`)
//! and the metadata with `"truncated": true` and the payload's size. Why not a claim check in
//! S3 (which EventBridge's guide suggests above the limit): since EventBridge takes 1 MB events
//! the receiver's own cap (SQS's 1 MiB less the attributes' reserve, 1,040,384 bytes) leaves a band
//! of some 40 KB above the limit; a bucket, a second SDK and every consumer's read access (kept in
//! step with the archive's retention, or a replay would carry dangling pointers) is a lot to carry
//! for that band. A reduced event still says which customer changed; the consumer reads the state
//! from Stigg's API (or the entitlement mirror). It is counted (`EventsForwarded`,
//! `Outcome=reduced`), alarmed, and logged with its key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::forward::config::EventSource;
use crate::stigg::event::StiggEvent;

/// The member appended to every forwarded detail.
pub const METADATA: &str = "stiggWebhooks";

/// `DetailType` is free-form up to 128 characters
/// (<https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEventsRequestEntry.html>);
/// Stigg's longest documented type is 43 bytes, and we accept up to 256.
pub const MAX_DETAIL_TYPE_CHARS: usize = 128;

/// What `Time` weighs in an entry's size, when set: "If specified, the Time parameter is 14
/// bytes" (<https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevent-size.html>).
const TIME_BYTES: usize = 14;

/// A reduced detail's fields are capped: a customer id could be anything.
const MAX_REDUCED_FIELD_BYTES: usize = 1024;

/// One event, ready for PutEvents.
#[derive(Debug, Clone, PartialEq)]
pub struct BusEntry {
    pub detail_type: String,
    pub detail: String,
    pub time: Option<SystemTime>,
    /// The detail is the reduced one: the event was too large for an entry.
    pub reduced: bool,
    /// The entry's size as EventBridge computes it (see [`entry_size`]).
    pub size: usize,
}

/// Builds entries for one source and entry limit.
#[derive(Debug, Clone)]
pub struct EntryShape {
    source: EventSource,
    max_entry_bytes: usize,
}

impl EntryShape {
    pub fn new(source: EventSource, max_entry_bytes: usize) -> Self {
        Self { source, max_entry_bytes }
    }

    pub fn source(&self) -> &EventSource {
        &self.source
    }

    pub fn entry(&self, event: &StiggEvent) -> BusEntry {
        let detail_type: String = event.event_type.as_str().chars().take(MAX_DETAIL_TYPE_CHARS).collect();
        let time = event.timestamp.as_deref().and_then(crate::mirror::epoch_millis).and_then(|ms| {
            let ms = u64::try_from(ms).ok()?;
            Some(UNIX_EPOCH + Duration::from_millis(ms))
        });
        let metadata = metadata(event);
        let whole = append_member(event.raw_json(), METADATA, &metadata);
        let size = entry_size(self.source.as_str(), &detail_type, &whole, time.is_some());
        if size <= self.max_entry_bytes {
            return BusEntry { detail_type, detail: whole, time, reduced: false, size };
        }
        let detail = reduced_detail(event, metadata);
        let size = entry_size(self.source.as_str(), &detail_type, &detail, time.is_some());
        BusEntry { detail_type, detail, time, reduced: true, size }
    }
}

/// An entry's size as EventBridge computes it: `Time` 14 bytes when set, then the UTF-8 bytes of
/// `Source`, `DetailType`, `Detail` (and of each `Resources` entry: we set none)
/// (<https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevent-size.html>).
pub fn entry_size(source: &str, detail_type: &str, detail: &str, has_time: bool) -> usize {
    (if has_time { TIME_BYTES } else { 0 }) + source.len() + detail_type.len() + detail.len()
}

fn metadata(event: &StiggEvent) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("idempotencyKey".into(), Value::String(event.key.as_str().to_owned()));
    if let Some(trace) = &event.trace_id {
        m.insert("traceId".into(), Value::String(trace.clone()));
    }
    if let Some(ms) = event.sent_at.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
        m.insert("receivedAt".into(), json!(ms.as_millis() as u64));
    }
    m
}

/// `raw` (a JSON object's text) with `"name": value` appended before its closing brace: every
/// byte Stigg sent stays where it was.
fn append_member(raw: &str, name: &str, value: &Map<String, Value>) -> String {
    let body = raw.trim_end();
    let inner = body.strip_suffix('}').map(str::trim_end).unwrap_or(body);
    let member = format!("{}:{}", Value::String(name.to_owned()), Value::Object(value.clone()));
    let mut out = String::with_capacity(inner.len() + member.len() + 2);
    out.push_str(inner);
    if !inner.ends_with('{') {
        out.push(',');
    }
    out.push_str(&member);
    out.push('}');
    out
}

fn reduced_detail(event: &StiggEvent, mut metadata: Map<String, Value>) -> String {
    let mut detail = Map::new();
    let fields = event.fields();
    for name in ["type", "messageId", "eventId", "traceId", "timestamp"] {
        if let Some(v) = fields.get(name).filter(|v| v.as_str().is_some_and(|s| s.len() <= MAX_REDUCED_FIELD_BYTES)) {
            detail.insert(name.into(), v.clone());
        }
    }
    if let Some(customer) = event.customer_id.as_deref().filter(|c| c.len() <= MAX_REDUCED_FIELD_BYTES) {
        detail.insert("customerId".into(), Value::String(customer.to_owned()));
    }
    metadata.insert("truncated".into(), Value::Bool(true));
    metadata.insert("bytes".into(), json!(event.raw_json().len()));
    detail.insert(METADATA.into(), Value::Object(metadata));
    Value::Object(detail).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(max: usize) -> EntryShape {
        EntryShape::new(EventSource::parse("stigg.webhooks").unwrap(), max)
    }

    fn event(raw: &str) -> StiggEvent {
        StiggEvent::parse(raw).unwrap().with_sent_at(Some(UNIX_EPOCH + Duration::from_millis(1_764_614_400_123)))
    }

    #[test]
    fn the_detail_is_stiggs_payload_byte_for_byte_with_the_metadata_appended() {
        let raw = r#"{ "type":"subscription.created", "messageId":"m-1","traceId":"t-1",
            "timestamp":"2026-12-01T10:00:00.000Z", "customer": {"id":"c-1"} }  "#;
        let entry = shape(1_000_000).entry(&event(raw));
        assert!(entry.detail.starts_with(&raw.trim_end()[..raw.trim_end().len() - 1].trim_end().to_string()));
        let detail: Value = serde_json::from_str(&entry.detail).unwrap();
        assert_eq!(detail["customer"]["id"], "c-1");
        assert_eq!(
            detail[METADATA],
            json!({"idempotencyKey": "m-1", "traceId": "t-1", "receivedAt": 1_764_614_400_123u64})
        );
        assert_eq!(entry.detail_type, "subscription.created");
        assert_eq!(entry.time, Some(UNIX_EPOCH + Duration::from_millis(1_796_119_200_000)));
        assert!(!entry.reduced);
        assert_eq!(entry.size, 14 + "stigg.webhooks".len() + entry.detail_type.len() + entry.detail.len());
    }

    #[test]
    fn an_event_without_a_time_or_a_message_id_keeps_its_derived_key() {
        let raw = r#"{"type":"credits.balance.usage_low"}"#;
        let e = event(raw);
        let entry = shape(1_000_000).entry(&e);
        assert_eq!(entry.time, None);
        let detail: Value = serde_json::from_str(&entry.detail).unwrap();
        assert_eq!(detail[METADATA]["idempotencyKey"], e.key.as_str(), "the SHA-256 of the body");
        assert_eq!(entry.size, "stigg.webhooks".len() + entry.detail_type.len() + entry.detail.len());
    }

    #[test]
    fn an_event_too_large_for_an_entry_gets_the_reduced_detail_with_its_key_and_customer() {
        let big = "x".repeat(300_000);
        let raw = format!(
            r#"{{"type":"entitlements.updated","messageId":"m-big","customerId":"c-9","timestamp":"2026-12-01T10:00:00Z","entitlements":"{big}"}}"#
        );
        let entry = shape(262_144).entry(&event(&raw));
        assert!(entry.reduced);
        assert!(entry.size < 1024, "{}", entry.size);
        let detail: Value = serde_json::from_str(&entry.detail).unwrap();
        assert_eq!(detail["messageId"], "m-big");
        assert_eq!(detail["customerId"], "c-9");
        assert_eq!(detail["type"], "entitlements.updated");
        assert_eq!(detail[METADATA]["truncated"], true);
        assert_eq!(detail[METADATA]["bytes"], raw.len());
        assert!(detail.get("entitlements").is_none());
        assert!(!shape(1_000_000).entry(&event(&raw)).reduced, "fits the 1 MB limit");
    }

    #[test]
    fn appending_works_on_any_object_text() {
        let m: Map<String, Value> = [("k".to_owned(), json!("v"))].into_iter().collect();
        assert_eq!(append_member("{}", "x", &m), r#"{"x":{"k":"v"}}"#);
        assert_eq!(append_member("{\"a\":1}\n", "x", &m), r#"{"a":1,"x":{"k":"v"}}"#);
        assert_eq!(append_member("{ \"a\" : [ ] }", "x", &m), r#"{ "a" : [ ],"x":{"k":"v"}}"#);
    }

    #[test]
    fn a_long_type_is_cut_to_what_detail_type_takes() {
        let t = "t".repeat(200);
        let entry = shape(1_000_000).entry(&event(&format!(r#"{{"type":"{t}","messageId":"m"}}"#)));
        assert_eq!(entry.detail_type.len(), MAX_DETAIL_TYPE_CHARS);
    }
}
