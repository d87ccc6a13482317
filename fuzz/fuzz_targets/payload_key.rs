//! Key derivation: for every body that parses, the key is `messageId`, else `eventId`, else the
//! SHA-256 of the exact bytes, and it is the same every time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use stigg_webhooks::event::{IdempotencyKey, WebhookPayload, sha256_hex};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(k) = IdempotencyKey::parse(s)
    {
        assert_eq!(k.as_str(), s);
    }
    let Ok(payload) = WebhookPayload::parse(data) else { return };
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(data) else {
        panic!("parsed a payload that is not a JSON object");
    };
    assert!(matches!(fields.get("type"), Some(Value::String(t)) if t == payload.event_type.as_str()));
    let id = |f: &str| fields.get(f).and_then(Value::as_str).filter(|s| !s.is_empty());
    let expected = match id("messageId").or_else(|| id("eventId")) {
        Some(id) => id.to_owned(),
        None => sha256_hex(data),
    };
    assert_eq!(payload.key.as_str(), expected);
    assert_eq!(WebhookPayload::parse(data).unwrap().key, payload.key, "derivation is deterministic");
});
