//! Request parsing: any function-URL event, or any body behind the right secret, must get a
//! documented status without panicking, and what is admitted is exactly the body that came in.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use stigg_webhooks::lambda_http::Request;
use stigg_webhooks::receiver::Gate;
use stigg_webhooks::secrets::SecretSet;

const SECRET: &str = "fuzz-secret-0123456789";
const LIMIT: usize = 64 * 1024;
static GATE: LazyLock<Gate> = LazyLock::new(|| Gate::new(SecretSet::parse(SECRET).unwrap(), None, LIMIT));

/// What lambda_http makes of an event, as at run time; an event it refuses, or one with invalid
/// base64 (a function URL never sends one), is skipped.
fn convert(event: &Value) -> Option<Request> {
    stigg_webhooks::receiver::function_url_request(&event.to_string()).ok()
}

fn authorised(body: String, is_base64_encoded: bool) -> Option<Request> {
    convert(&json!({
        "version": "2.0", "rawPath": "/", "rawQueryString": "", "headers": {"stigg-webhooks-secret": SECRET},
        "requestContext": {"http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "18.119.35.43", "userAgent": "x"},
                           "requestId": "r", "timeEpoch": 0, "domainName": "x"},
        "body": body, "isBase64Encoded": is_base64_encoded
    }))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (request, expected_raw) = match mode % 3 {
        // The whole Lambda event is attacker-shaped.
        0 => match serde_json::from_slice::<Value>(rest) {
            Ok(event) => (convert(&event), None),
            Err(_) => return,
        },
        // Any bytes as the body: text as is, anything else base64-encoded as a function URL does.
        1 => match std::str::from_utf8(rest) {
            Ok(text) => (authorised(text.to_owned(), false), Some(rest.to_vec())),
            Err(_) => (authorised(base64::engine::general_purpose::STANDARD.encode(rest), true), Some(rest.to_vec())),
        },
        // Any text claiming to be base64.
        _ => (authorised(String::from_utf8_lossy(rest).into_owned(), true), None),
    };
    let Some(request) = request else { return };
    match GATE.admit(request) {
        Ok(admitted) => {
            if let Some(raw) = expected_raw {
                assert_eq!(admitted.raw.as_bytes(), raw.as_slice(), "queued bytes differ from the body");
            }
            assert!(admitted.raw.len() <= LIMIT);
            let key = admitted.payload.key.as_str();
            assert!(!key.is_empty() && key.len() <= 512 && !key.chars().any(char::is_control));
        }
        Err(e) => assert!([400, 401, 405, 413].contains(&e.status()), "undocumented status {}", e.status()),
    }
});
