//! Request parsing: any function-URL event, or any body behind the right secret, must get a
//! documented status without panicking, and what is admitted is exactly the body that came in.
#![no_main]

use std::collections::HashMap;
use std::sync::LazyLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use stigg_webhooks::receiver::{Gate, HttpRequest};
use stigg_webhooks::secrets::SecretSet;

const SECRET: &str = "fuzz-secret-0123456789";
const LIMIT: usize = 64 * 1024;
static GATE: LazyLock<Gate> = LazyLock::new(|| Gate::new(SecretSet::parse(SECRET).unwrap(), None, LIMIT));

fn authorised(body: String, is_base64_encoded: bool) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        headers: HashMap::from([("stigg-webhooks-secret".to_owned(), SECRET.to_owned())]),
        body: Some(body),
        is_base64_encoded,
        source_ip: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let (request, expected_raw) = match mode % 3 {
        // The whole Lambda event is attacker-shaped.
        0 => match serde_json::from_slice(rest) {
            Ok(event) => (HttpRequest::from_event(event), None),
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
