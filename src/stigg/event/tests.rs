//! Unit tests for event keys, the type catalog and payloads.

use super::*;

fn parse(s: &str) -> Result<WebhookPayload, PayloadError> {
    WebhookPayload::parse(s.as_bytes())
}

#[test]
fn a_body_is_identified_without_its_tree_as_parse_would_key_it() {
    for raw in [
        r#"{"type":"entitlements.updated","messageId":"m-1","entitlements":[{"a":1}]}"#,
        r#"{"type":"x","messageId":"","eventId":"e-2"}"#,
        r#"{"type":"x","messageId":null,"big":[1,2,3]}"#,
        r#"{"type":"x","messageId":[[1],{"a":[2]}],"eventId":"e-3"}"#,
        r#"{"type":"x","messageId":{"id":"m"},"eventId":7}"#,
    ] {
        let parsed = parse(raw).unwrap();
        let (key, event_type) = WebhookPayload::identify(raw.as_bytes()).unwrap();
        assert_eq!(key, parsed.key, "{raw}");
        assert_eq!(event_type, parsed.event_type.to_string());
    }
    assert!(WebhookPayload::identify(br#"{"messageId":"m"}"#).is_none());
    assert!(WebhookPayload::identify(b"[1]").is_none());
    assert!(WebhookPayload::identify(br#" ["subscription.created","m-1"]"#).is_none());
}

#[test]
fn key_is_message_id_when_present() {
    let p = parse(r#"{"type":"customer.updated","messageId":"m-1","eventId":"e-1"}"#).unwrap();
    assert_eq!(p.key.as_str(), "m-1");
}

#[test]
fn key_falls_back_to_event_id_when_message_id_missing_or_empty() {
    let p = parse(r#"{"type":"x","eventId":"e-1"}"#).unwrap();
    assert_eq!(p.key.as_str(), "e-1");
    let p = parse(r#"{"type":"x","messageId":"","eventId":"e-2"}"#).unwrap();
    assert_eq!(p.key.as_str(), "e-2");
    let p = parse(r#"{"type":"x","messageId":null,"eventId":"e-3"}"#).unwrap();
    assert_eq!(p.key.as_str(), "e-3");
}

#[test]
fn key_falls_back_to_sha256_of_the_exact_body() {
    let body = r#"{"type":"subscription.trial_expired","id":"s"}"#;
    let p = parse(body).unwrap();
    assert_eq!(p.key.as_str(), sha256_hex(body.as_bytes()));
    assert_eq!(p.key.as_str().len(), 64);
    // A byte of whitespace is another body, hence another key.
    let q = parse(&format!("{body} ")).unwrap();
    assert_ne!(p.key, q.key);
}

#[test]
fn oversized_or_control_character_keys_are_refused() {
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    let err = parse(&format!(r#"{{"type":"x","messageId":"{long}"}}"#)).unwrap_err();
    assert!(matches!(err, PayloadError::InvalidKey { field: "messageId", .. }));
    let err = parse(r#"{"type":"x","messageId":"a\u0000b"}"#).unwrap_err();
    assert!(matches!(err, PayloadError::InvalidKey { .. }));
    assert!(parse(&format!(r#"{{"type":"x","messageId":"{}"}}"#, "k".repeat(MAX_KEY_BYTES))).is_ok());
}

#[test]
fn non_objects_and_missing_types_are_refused() {
    assert!(matches!(parse("[1,2]"), Err(PayloadError::NotAnObject)));
    assert!(matches!(parse("\"s\""), Err(PayloadError::NotAnObject)));
    assert!(matches!(parse("12"), Err(PayloadError::NotAnObject)));
    assert!(matches!(parse("null"), Err(PayloadError::NotAnObject)));
    assert!(matches!(parse("{"), Err(PayloadError::NotJson(_))));
    assert!(matches!(parse(""), Err(PayloadError::NotJson(_))));
    assert!(matches!(parse(r#"{"messageId":"m"}"#), Err(PayloadError::MissingType)));
    assert!(matches!(parse(r#"{"type":7}"#), Err(PayloadError::MissingType)));
    assert!(matches!(parse(r#"{"type":""}"#), Err(PayloadError::InvalidType(_))));
    assert!(matches!(WebhookPayload::parse(b"{\"type\":\"\xff\"}"), Err(PayloadError::NotJson(_))));
}

#[test]
fn json_errors_keep_the_kind_and_place_but_not_the_values() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Card {
        number: u32,
        kind: Kind,
    }
    #[derive(Debug, serde::Deserialize)]
    enum Kind {
        Visa,
    }
    for (raw, kept) in [
        (r#"{"number":"4111-1111-1111-1111","kind":"Visa"}"#, "invalid type: string …, expected u32"),
        (r#"{"number":1,"kind":"Secret\"Brand"}"#, "unknown variant …"),
        (r#"{"number":-4111111111111111,"kind":"Visa"}"#, "invalid value: integer …"),
    ] {
        let e = serde_json::from_str::<Card>(raw).unwrap_err();
        let shown = JsonError::new(&e).to_string();
        assert!(shown.starts_with("data error: "), "{shown}");
        assert!(shown.contains(kept), "{shown}");
        assert!(shown.contains("line 1 column"), "{shown}");
        for value in ["4111", "Secret", "Brand"] {
            assert!(!shown.contains(value), "{shown}");
        }
    }
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(parse(&body), Err(PayloadError::NotJson(_))));
}

#[test]
fn characters_sqs_refuses_are_refused() {
    assert_eq!(parse("{\"type\":\"x\",\"n\":\"\u{FFFF}\"}").unwrap_err(), PayloadError::UnsupportedCharacters);
}

#[test]
fn every_documented_type_is_known_and_round_trips() {
    for name in EventType::KNOWN {
        let t = EventType::parse(name).unwrap();
        assert!(t.is_known(), "{name}");
        assert_eq!(t.as_str(), *name);
        assert_ne!(t.family(), EventFamily::Other, "{name}");
    }
    assert_eq!(EventType::KNOWN.len(), 34);
}

#[test]
fn unknown_types_are_kept_verbatim() {
    let t = EventType::parse("credits.something_new").unwrap();
    assert_eq!(t, EventType::Other("credits.something_new".into()));
    assert_eq!(t.family(), EventFamily::Other);
}

#[test]
fn customer_id_is_the_top_level_id_of_customer_events_and_customer_id_elsewhere() {
    let p = parse(r#"{"type":"customer.updated","id":"c0","entityId":"uuid"}"#).unwrap();
    assert_eq!(p.customer_id(), Some("c0"));
    let p = parse(r#"{"type":"subscription.created","id":"sub-1","customer":{"id":"c1"},"customerId":"c2"}"#).unwrap();
    assert_eq!(p.customer_id(), Some("c1"), "a subscription's own id is not its customer");
    let p = parse(r#"{"type":"x","customerId":"c2","entityId":"c3"}"#).unwrap();
    assert_eq!(p.customer_id(), Some("c2"));
    let p = parse(r#"{"type":"subscription.trial_expired","id":"sub-1","entityId":"uuid"}"#).unwrap();
    assert_eq!(p.customer_id(), None, "entityId is Stigg's internal id, not the customer's");
    assert_eq!(p.fifo_group_id(), "uuid");
    for (t, group) in
        [("plan.created", "plan"), ("plan.updated", "plan"), ("coupon.created", "coupon"), ("new.kind", "new.kind")]
    {
        let p = parse(&format!(r#"{{"type":"{t}","id":"p-1"}}"#)).unwrap();
        assert_eq!(p.customer_id(), None);
        assert_eq!(p.fifo_group_id(), group, "{t}");
    }
}

/// One customer, one FIFO group, across every pair of Stigg's documented examples.
#[test]
fn every_pair_of_documented_examples_for_one_customer_shares_a_fifo_group() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/events/stigg");
    let examples: Vec<(String, WebhookPayload)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                WebhookPayload::parse(&std::fs::read(&p).unwrap()).unwrap(),
            )
        })
        .collect();
    let group = |name: &str| examples.iter().find(|(n, _)| n == name).unwrap().1.fifo_group_id();
    assert_eq!(group("customer.updated.json"), "customer-test-id");
    assert_eq!(group("subscription.created.json"), "customer-test-id");
    for (a, pa) in &examples {
        for (b, pb) in &examples {
            if let (Some(ca), Some(cb)) = (pa.customer_id(), pb.customer_id()) {
                assert_eq!(ca == cb, pa.fifo_group_id() == pb.fifo_group_id(), "{a} / {b}");
            }
        }
    }
}

#[test]
fn fifo_group_id_is_always_acceptable_to_sqs() {
    let p = parse(r#"{"type":"x","customer":{"id":"ünïcode customer"}}"#).unwrap();
    let g = p.fifo_group_id();
    assert_eq!(g.len(), 64);
    assert!(g.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn documented_examples_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/events/stigg");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let raw = std::fs::read(&path).unwrap();
        let p = WebhookPayload::parse(&raw).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert!(p.event_type.is_known(), "{path:?}");
        assert!(p.trace_id().is_some());
        n += 1;
    }
    assert!(n >= 5);
}

/// Bodies where a tree and a skipping reader could part ways: the receiver's parse refuses and
/// accepts each exactly as the full parse does.
#[test]
fn the_receivers_parse_agrees_with_the_full_parse_where_readers_differ() {
    let deep = |n: usize| format!(r#"{{"type":"x","a":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
    let deep_objects = |n: usize| format!(r#"{{"type":"x","a":{}1{}}}"#, r#"{"a":"#.repeat(n), "}".repeat(n));
    let cases: Vec<String> = [
        r#"{"type":"x","a":"\ud800"}"#,
        r#"{"type":"x","a":"\udc00\ud800"}"#,
        r#"{"type":"x","a":"\ud83d\ude00"}"#,
        r#"{"type":"x","a":"\x"}"#,
        r#"{"type":"x","a":1e400}"#,
        r#"{"type":"x","a":-1e400}"#,
        r#"{"type":"x","a":123456789012345678901234567890}"#,
        r#"{"type":"x","a":01}"#,
        r#"{"type":"x","a":1.}"#,
        r#"{"type":"x","type":"y","messageId":"m1","messageId":"m2"}"#,
        r#"{"type":"x","customer":[1,{"id":"c"}],"entityId":"e"}"#,
        r#"{"type":"customer.updated","id":"c-1","customer":{"id":"c-2"}}"#,
        r#"{"type":"x","$serde_json::private::RawValue":"[1]"}"#,
        r#"{"$serde_json::private::RawValue":"{\"type\":\"x\"}"}"#,
        r#"{"$serde_json::private::RawValue":"{"}"#,
        r#"{"type":"x","a":{"$serde_json::private::RawValue":"not json"}}"#,
        r#"{"type":"x","a":{"$serde_json::private::RawValue":"[1]"}}"#,
        r#"{"type":"x","a":{"b":1,"$serde_json::private::RawValue":"x"}}"#,
        r#"{"type":"x","customer":{"$serde_json::private::RawValue":"{\"id\":\"c\"}"}}"#,
        r#"{"type":"x","a":{"\ud800":1}}"#,
        "{\"type\":\"x\",\"a\":{\"k\u{1}\":1}}",
        "{\"type\":\"x\",\"a\":\"tab\tin a string\"}",
        "{\"type\":\"x\",\"a\":\"\u{FFFF}\"}",
        "\u{FEFF}{\"type\":\"x\"}",
        r#"{"type":"x"} trailing"#,
        r#"{"type":"x"}   "#,
        r#"{"type":"x",}"#,
        r#"{"type":"x" "a":1}"#,
        r#"{"type":1}"#,
        r#"{}"#,
        r#"[]"#,
        r#"[1,2"#,
        r#""type""#,
        "null",
        "",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([deep(126), deep(127), deep(128), deep(200), deep_objects(126), deep_objects(127), deep_objects(128)])
    .collect();
    let bytes: Vec<Vec<u8>> = cases
        .iter()
        .map(|c| c.clone().into_bytes())
        .chain([b"{\"type\":\"x\",\"a\":\"\xff\"}".to_vec(), b"{\"type\":\"x\",\"\xc3\":1}".to_vec()])
        .collect();
    for raw in &bytes {
        let admitted = WebhookPayload::admit(raw);
        let parsed = WebhookPayload::parse(raw);
        let shown = String::from_utf8_lossy(raw);
        match (&admitted, &parsed) {
            (Ok(a), Ok(p)) => {
                assert_eq!(
                    (&a.key, &a.event_type, a.trace_id(), a.timestamp(), a.customer_id(), a.fifo_group_id()),
                    (&p.key, &p.event_type, p.trace_id(), p.timestamp(), p.customer_id(), p.fifo_group_id()),
                    "{shown}"
                );
            }
            (a, p) => assert_eq!(a.as_ref().err(), p.as_ref().err(), "{shown}"),
        }
    }
    assert!(parse(&deep_objects(126)).is_ok() && parse(&deep_objects(128)).is_err(), "both limits exercised");
    assert!(matches!(parse(&deep(200)), Err(PayloadError::NotJson(_))), "the nesting limit is exercised");
    assert!(parse(&deep(126)).is_ok());
}

#[test]
fn the_receivers_parse_builds_only_the_fields_it_reads() {
    let raw = r#"{"type":"subscription.created","messageId":"m-1","traceId":"t","customer":{"id":"c"},"plan":{"id":"p"},"items":[1,2,3]}"#;
    let admitted = WebhookPayload::admit(raw.as_bytes()).unwrap();
    let mut built: Vec<&str> = admitted.fields.keys().map(String::as_str).collect();
    built.sort_unstable();
    assert_eq!(built, ["customer", "messageId", "traceId", "type"]);
}
