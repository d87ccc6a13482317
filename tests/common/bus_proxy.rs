//! An HTTP proxy on 127.0.0.1 in front of moto's EventBridge, for a processor running as its own
//! process: it records every PutEvents request (entries per request, each entry's key), and
//! injects what moto cannot: a per-entry failure (`InternalFailure` for chosen entries, the rest
//! of the request put as usual, the answer merged in request order as EventBridge answers) and
//! the bus down (every request `500 InternalException`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::counting_proxy::{Upstream, pass_through, serve, upstream_client};

#[derive(Default)]
struct State {
    down: bool,
    /// Entries whose Detail contains the text fail this many more times.
    fail: Vec<(String, usize)>,
    /// Entries per PutEvents request that reached the proxy.
    requests: Vec<usize>,
    /// Entries put (answered with an event id), by `stiggWebhooks.idempotencyKey`.
    put: HashMap<String, usize>,
    /// Entries answered failed (injected).
    failed: usize,
    /// Each entry's size as EventBridge computes it, in request order (resends included).
    entry_bytes: Vec<usize>,
}

#[derive(Clone)]
pub struct BusProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl BusProxy {
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_end_matches('/').to_owned();
        let state: Arc<Mutex<State>> = Arc::default();
        let client = upstream_client();
        let shared = state.clone();
        let addr = serve(move |req| handle(shared.clone(), client.clone(), upstream.clone(), req)).await;
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// The next `times` entries whose Detail contains `text` are answered `InternalFailure`.
    pub fn fail_entries(&self, text: &str, times: usize) {
        self.state.lock().unwrap().fail.push((text.to_owned(), times));
    }

    /// Entries per PutEvents request, in order.
    pub fn requests(&self) -> Vec<usize> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many times each key was put.
    pub fn put(&self) -> HashMap<String, usize> {
        self.state.lock().unwrap().put.clone()
    }

    pub fn failed(&self) -> usize {
        self.state.lock().unwrap().failed
    }

    /// Each entry's size as EventBridge computes it for its limits and its 64 KB billing chunks
    /// (`Time` 14 bytes when set, then the UTF-8 bytes of `Source`, `DetailType`, `Detail`), in
    /// request order.
    pub fn entry_bytes(&self) -> Vec<usize> {
        self.state.lock().unwrap().entry_bytes.clone()
    }
}

fn key_of(entry: &Value) -> String {
    let detail: Value = entry["Detail"].as_str().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
    detail["stiggWebhooks"]["idempotencyKey"].as_str().unwrap_or_default().to_owned()
}

fn answer(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
    state: Arc<Mutex<State>>,
    client: Upstream,
    upstream: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut failed_at = Vec::new();
    let mut body = body;
    if target == "AWSEvents.PutEvents" {
        let mut request: Value = serde_json::from_slice(&body).unwrap_or_default();
        let entries = request["Entries"].as_array().cloned().unwrap_or_default();
        {
            let mut s = state.lock().unwrap();
            s.requests.push(entries.len());
            s.entry_bytes.extend(entries.iter().map(|e| {
                let text = |field: &str| e[field].as_str().unwrap_or_default().to_owned();
                let has_time = e.get("Time").is_some_and(|t| !t.is_null());
                stigg_webhooks::forward::entry::entry_size(
                    &text("Source"),
                    &text("DetailType"),
                    &text("Detail"),
                    has_time,
                )
            }));
            if s.down {
                return Ok(answer(500, json!({"__type": "InternalException", "message": "injected: the bus is down"})));
            }
            for (i, e) in entries.iter().enumerate() {
                let detail = e["Detail"].as_str().unwrap_or_default();
                if let Some(rule) = s.fail.iter_mut().find(|(text, n)| *n > 0 && detail.contains(text.as_str())) {
                    rule.1 -= 1;
                    failed_at.push(i);
                }
            }
            s.failed += failed_at.len();
        }
        let kept: Vec<Value> =
            entries.iter().enumerate().filter(|(i, _)| !failed_at.contains(i)).map(|(_, e)| e.clone()).collect();
        if kept.is_empty() {
            let results: Vec<Value> =
                entries.iter().map(|_| json!({"ErrorCode": "InternalFailure", "ErrorMessage": "injected"})).collect();
            return Ok(answer(200, json!({"FailedEntryCount": results.len(), "Entries": results})));
        }
        request["Entries"] = Value::Array(kept.clone());
        body = Bytes::from(request.to_string());
        parts.headers.remove("content-length");
        parts.headers.insert("content-length", body.len().into());
        let response = pass_through(&client, &upstream, parts, body).await;
        if response.status() != 200 {
            return Ok(response);
        }
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let upstream_answer: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let mut from_upstream = upstream_answer["Entries"].as_array().cloned().unwrap_or_default().into_iter();
        let mut merged = Vec::new();
        let mut failed = 0;
        let mut s = state.lock().unwrap();
        for (i, e) in entries.iter().enumerate() {
            if failed_at.contains(&i) {
                merged.push(json!({"ErrorCode": "InternalFailure", "ErrorMessage": "injected"}));
                failed += 1;
                continue;
            }
            let result = from_upstream.next().unwrap_or(json!({"ErrorCode": "InternalFailure"}));
            if result.get("EventId").is_some() {
                *s.put.entry(key_of(e)).or_default() += 1;
            } else {
                failed += 1;
            }
            merged.push(result);
        }
        return Ok(answer(200, json!({"FailedEntryCount": failed, "Entries": merged})));
    }
    Ok(pass_through(&client, &upstream, parts, body).await)
}
