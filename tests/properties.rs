//! Properties of everything the receiver does before any I/O: the request gate, key derivation
//! and secret matching. No emulator needed; proptest shrinks any counterexample it finds.

mod common;

use base64::Engine;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use stigg_webhooks::claim::{ClaimScope, WARM_UP_KEY};
use stigg_webhooks::event::{IdempotencyKey, PayloadError, WebhookPayload, sha256_hex, sqs_allows};
use stigg_webhooks::lambda_http::Request;
use stigg_webhooks::receiver::{Gate, ReceiveError};
use stigg_webhooks::secrets::SecretSet;

const SECRET: &str = "property-secret-0123456789";
const LIMIT: usize = 4096;

fn gate() -> Gate {
    Gate::new(SecretSet::parse(&format!("old-secret-abcdefghij, {SECRET}")).unwrap(), None, LIMIT)
}

/// A function-URL event from Stigg's documented address, as Lambda delivers it.
fn event_for(method: &str, headers: Value, body: &str, base64: bool) -> Value {
    common::url_event(method, headers, Some(body), base64, Some("18.119.35.43"))
}

/// The request lambda_http makes of `event`, as at run time; `None` for an event it refuses
/// or one a function URL never produces (invalid base64: see src/ingest/receiver.rs).
fn convert(event: &Value) -> Option<Request> {
    stigg_webhooks::receiver::function_url_request(&event.to_string()).ok()
}

fn post(body: String, secret: &str) -> Request {
    convert(&event_for("POST", json!({"stigg-webhooks-secret": secret}), &body, false)).expect("a valid event")
}

/// Arbitrary JSON, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,10}", inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A flat Stigg-shaped object: a string `type`, maybe ids, plus arbitrary fields of its own.
fn stigg_object() -> impl Strategy<Value = Map<String, Value>> {
    (
        "[a-zA-Z_.]{1,40}",
        prop::option::of("[ -~]{0,80}"),
        prop::option::of("[ -~]{0,80}"),
        prop::collection::btree_map("[a-z]{1,12}", json_value(), 0..6),
    )
        .prop_map(|(ty, message_id, event_id, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            m.insert("type".into(), json!(ty));
            if let Some(id) = message_id {
                m.insert("messageId".into(), json!(id));
            }
            if let Some(id) = event_id {
                m.insert("eventId".into(), json!(id));
            }
            m
        })
}

fn status(r: &Result<stigg_webhooks::receiver::Admitted, ReceiveError>) -> u16 {
    r.as_ref().map(|_| 202).unwrap_or_else(ReceiveError::status)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any function-URL event (any method, headers, body, base64 or not) gets one of the
    /// documented statuses, without panicking.
    #[test]
    fn any_event_gets_a_documented_status_and_never_panics(
        method in prop_oneof![Just("POST".to_owned()), "[A-Z]{1,8}"],
        headers in prop::collection::btree_map("[a-zA-Z-]{1,24}", "[ -~]{0,40}", 0..6),
        with_secret in any::<bool>(),
        body in json_value().prop_map(|v| v.to_string()),
        b64 in any::<bool>(),
    ) {
        let mut headers: Map<String, Value> = headers.into_iter().map(|(k, v)| (k, json!(v))).collect();
        if with_secret {
            headers.insert("Stigg-Webhooks-Secret".into(), json!(SECRET));
        }
        let body = if b64 { base64::engine::general_purpose::STANDARD.encode(&body) } else { body };
        let Some(request) = convert(&event_for(&method, Value::Object(headers), &body, b64)) else { return Ok(()) };
        let s = status(&gate().admit(request));
        prop_assert!([202, 400, 401, 405, 413].contains(&s), "status {s}");
    }

    /// Arbitrary bytes and headers: no panic; without the right secret, never past 401.
    #[test]
    fn without_a_matching_secret_nothing_is_admitted(
        method in prop_oneof![Just("POST".to_owned()), "[A-Za-z]{0,8}"],
        secret in ".{0,40}",
        body in ".{0,600}",
        b64 in any::<bool>(),
    ) {
        prop_assume!(secret.trim() != SECRET && secret.trim() != "old-secret-abcdefghij");
        let Some(request) = convert(&event_for(&method, json!({"stigg-webhooks-secret": secret}), &body, b64)) else {
            return Ok(());
        };
        let s = status(&gate().admit(request));
        prop_assert!(s == 401 || s == 405, "status {s}");
    }

    /// With the secret, every flat object with a string `type` is admitted and queued verbatim.
    #[test]
    fn every_stigg_shaped_object_is_admitted_byte_for_byte(object in stigg_object()) {
        let body = Value::Object(object).to_string();
        prop_assume!(body.len() <= LIMIT);
        let result = gate().admit(post(body.clone(), SECRET));
        // Arbitrary strings can hold U+FFFE/U+FFFF, which JSON carries but SQS refuses: such a
        // body is refused as such, and for no other reason.
        if !body.chars().all(sqs_allows) {
            prop_assert!(
                matches!(result, Err(ReceiveError::InvalidPayload(PayloadError::UnsupportedCharacters))),
                "{:?}", result.map(|a| a.raw)
            );
            return Ok(());
        }
        match result {
            Ok(admitted) => prop_assert_eq!(admitted.raw, body),
            // The only other refusal for such an object: an id that cannot be a key.
            Err(ReceiveError::InvalidPayload(e)) => prop_assert!(e.to_string().contains("Id"), "{e}"),
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    /// Base64 is transport only: the same bytes admit the same raw text either way.
    #[test]
    fn base64_and_plain_bodies_are_admitted_alike(object in stigg_object()) {
        let body = Value::Object(object).to_string();
        prop_assume!(body.len() <= LIMIT);
        let plain = gate().admit(post(body.clone(), SECRET)).map(|a| (a.raw, a.payload.key));
        let encoded = base64::engine::general_purpose::STANDARD.encode(&body);
        let request = convert(&event_for("POST", json!({"stigg-webhooks-secret": SECRET}), &encoded, true)).unwrap();
        let encoded = gate().admit(request).map(|a| (a.raw, a.payload.key));
        prop_assert_eq!(plain.map_err(|e| e.status()), encoded.map_err(|e| e.status()));
    }

    /// Bodies over the limit are refused as too large, whatever they contain.
    #[test]
    fn bodies_over_the_limit_are_413(extra in 1usize..2000, fill in "[a-z]") {
        let body = format!("{{\"type\":\"x\",\"p\":\"{}\"}}", fill.repeat(LIMIT + extra));
        prop_assert_eq!(status(&gate().admit(post(body, SECRET))), 413);
    }

    /// Key derivation: `messageId`, else `eventId`, else the body digest; the same bytes always
    /// give the same key, and an id-less body's key is its SHA-256.
    #[test]
    fn the_key_follows_message_id_then_event_id_then_body_digest(object in stigg_object()) {
        let raw = Value::Object(object.clone()).to_string();
        let Ok(payload) = WebhookPayload::parse(raw.as_bytes()) else { return Ok(()) };
        let id = |f: &str| object.get(f).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        let expected = id("messageId").or_else(|| id("eventId")).unwrap_or_else(|| sha256_hex(raw.as_bytes()));
        prop_assert_eq!(payload.key.as_str(), expected.as_str());
        prop_assert_eq!(WebhookPayload::parse(raw.as_bytes()).unwrap().key, payload.key);
    }

    /// Distinct ids never collide, and an id can never pose as another body's digest key
    /// unless it is literally that digest.
    #[test]
    /// No key a payload can carry lands in another record kind's space: a `messageId` of
    /// `processed#X` must not read as X's processor record, and nothing is the warm-up key.
    fn record_kinds_never_share_a_partition_key(
        a in "(accepted#|processed#|warm-up|#)?[ -~]{0,40}",
        b in "(accepted#|processed#|warm-up|#)?[ -~]{0,40}",
    ) {
        let (Ok(ka), Ok(kb)) = (IdempotencyKey::parse(&a), IdempotencyKey::parse(&b)) else { return Ok(()) };
        for sa in ClaimScope::ALL {
            prop_assert_ne!(sa.partition_key(&ka), WARM_UP_KEY);
            for sb in ClaimScope::ALL {
                let same = sa.partition_key(&ka) == sb.partition_key(&kb);
                prop_assert_eq!(same, sa == sb && ka == kb, "{:?}/{} vs {:?}/{}", sa, a, sb, b);
            }
        }
    }

    #[test]
    fn distinct_message_ids_give_distinct_keys(a in "[ -~]{1,60}", b in "[ -~]{1,60}") {
        prop_assume!(a != b);
        let ka = IdempotencyKey::parse(&a).unwrap();
        let kb = IdempotencyKey::parse(&b).unwrap();
        prop_assert_ne!(ka, kb);
    }

    /// Keys accepted from outside are bounded and free of control characters.
    #[test]
    fn parsed_keys_are_bounded_and_printable(s in "\\PC{0,600}|.{0,600}") {
        if let Ok(k) = IdempotencyKey::parse(&s) {
            prop_assert!(!k.as_str().is_empty() && k.as_str().len() <= 512);
            prop_assert!(!k.as_str().chars().any(char::is_control));
        }
    }

    /// Every secret of a rotation list is accepted, with or without blanks around it; anything
    /// else is refused.
    #[test]
    fn every_listed_secret_matches_and_nothing_else_does(
        secrets in prop::collection::vec("[!-+--~]{1,40}", 1..5),
        probe in "[ -~]{0,40}",
    ) {
        let set = SecretSet::parse(&secrets.join(" , ")).unwrap();
        for s in &secrets {
            prop_assert!(set.verify(s.as_bytes()));
        }
        prop_assert_eq!(set.verify(probe.as_bytes()), secrets.contains(&probe));
    }
}

/// What the receiver and the processor make of one body: the result of each parse, reduced to
/// what either reads (the receiver's parse builds only these fields).
type View = Result<Vec<Option<String>>, PayloadError>;

fn parsed_view(r: Result<WebhookPayload, PayloadError>) -> View {
    r.map(|p| {
        vec![
            Some(p.key.to_string()),
            Some(p.event_type.to_string()),
            p.trace_id().map(str::to_owned),
            p.timestamp().map(str::to_owned),
            p.customer_id().map(str::to_owned),
            Some(p.fifo_group_id()),
        ]
    })
}

fn both_parses(raw: &[u8]) -> (View, View) {
    (parsed_view(WebhookPayload::admit(raw)), parsed_view(WebhookPayload::parse(raw)))
}

/// An object whose keys are mostly the ones the receiver's parse builds, with any values.
fn read_heavy_object() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("type".to_owned()),
        Just("messageId".to_owned()),
        Just("eventId".to_owned()),
        Just("traceId".to_owned()),
        Just("timestamp".to_owned()),
        Just("id".to_owned()),
        Just("customerId".to_owned()),
        Just("entityId".to_owned()),
        Just("customer".to_owned()),
        "[a-zA-Z]{1,8}",
    ];
    let value = prop_oneof![
        "customer\\.[a-z]{1,8}|[a-z_.]{1,20}".prop_map(Value::String),
        "[ -~]{0,20}".prop_map(Value::String),
        json_value(),
        "[ -~]{0,12}".prop_map(|id| json!({"id": id, "name": "n"})),
    ];
    prop::collection::vec((key, value), 0..10).prop_map(|pairs| Value::Object(pairs.into_iter().collect()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// The receiver's parse (only the fields it reads built) accepts and refuses exactly what the
    /// processor's full parse does, with the same key, type, trace id, customer and FIFO group.
    #[test]
    fn the_receivers_parse_agrees_with_the_full_parse_on_any_json(v in prop_oneof![read_heavy_object(), json_value()]) {
        let raw = v.to_string();
        let (admitted, parsed) = both_parses(raw.as_bytes());
        prop_assert_eq!(admitted, parsed, "{}", raw);
    }

    /// Also on bodies that are broken JSON: cut short, or with a byte changed.
    #[test]
    fn the_receivers_parse_agrees_with_the_full_parse_on_broken_json(
        v in read_heavy_object(),
        cut in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in prop_oneof![Just(b'"'), Just(b'\\'), Just(b'{'), Just(b'}'), Just(b'['), Just(b','), Just(b':'), Just(b'e'), any::<u8>()],
    ) {
        let raw = v.to_string().into_bytes();
        let (admitted, parsed) = both_parses(&raw[..cut.index(raw.len() + 1)]);
        prop_assert_eq!(admitted, parsed);
        let mut changed = raw.clone();
        if !changed.is_empty() {
            let i = at.index(changed.len());
            changed[i] = byte;
        }
        let (admitted, parsed) = both_parses(&changed);
        prop_assert_eq!(admitted, parsed, "{}", String::from_utf8_lossy(&changed));
    }
}
