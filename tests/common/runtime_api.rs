//! A Lambda Runtime API emulator on 127.0.0.1, to run the real function binaries as processes
//! (the way Lambda runs them), plus a function-URL front that turns plain HTTP requests into
//! payload-format-2.0 invocations. Shared by the fault tests and `make bench`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// How an invocation ended.
#[derive(Debug)]
pub enum Outcome {
    Response(Vec<u8>),
    Error(Vec<u8>),
}

struct Invocation {
    id: String,
    payload: Vec<u8>,
    deadline_ms: u128,
    respond: oneshot::Sender<Outcome>,
}

struct State {
    pending_tx: mpsc::UnboundedSender<Invocation>,
    pending_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    in_flight: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// When each `GET /next` arrived (cold-init measurements).
    next_polls: Mutex<Vec<Instant>>,
    init_errors: Mutex<Vec<String>>,
    timeout: Duration,
    counter: Mutex<u64>,
}

impl State {
    fn submit(&self, payload: &Value, timeout: Duration) -> oneshot::Receiver<Outcome> {
        let (respond, rx) = oneshot::channel();
        let id = {
            let mut c = self.counter.lock().unwrap();
            *c += 1;
            format!("req-{:08}", *c)
        };
        let deadline_ms = (SystemTime::now() + timeout).duration_since(UNIX_EPOCH).unwrap().as_millis();
        let payload = serde_json::to_vec(payload).unwrap();
        self.pending_tx.send(Invocation { id, payload, deadline_ms, respond }).ok();
        rx
    }
}

#[derive(Clone)]
pub struct RuntimeApi {
    state: Arc<State>,
    addr: SocketAddr,
}

impl RuntimeApi {
    /// Starts the emulator; `timeout` is each invocation's deadline (Lambda's function timeout).
    pub async fn start(timeout: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (pending_tx, pending_rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            pending_tx,
            pending_rx: tokio::sync::Mutex::new(pending_rx),
            in_flight: Mutex::new(HashMap::new()),
            next_polls: Mutex::new(Vec::new()),
            init_errors: Mutex::new(Vec::new()),
            timeout,
            counter: Mutex::new(0),
        });
        let accept_state = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| route(state.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Self { state, addr }
    }

    /// `host:port`, for `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// The function URL in front of this function.
    pub fn function_url(&self) -> String {
        format!("http://{}/lambda-url/function/", self.addr)
    }

    /// Queues an invocation; the receiver resolves when a process answers.
    pub fn submit(&self, payload: &Value) -> oneshot::Receiver<Outcome> {
        self.submit_with_timeout(payload, self.state.timeout)
    }

    pub fn submit_with_timeout(&self, payload: &Value, timeout: Duration) -> oneshot::Receiver<Outcome> {
        self.state.submit(payload, timeout)
    }

    /// Invokes and waits for the answer (at most `wait`).
    pub async fn invoke(&self, payload: &Value, wait: Duration) -> Result<Value, String> {
        match tokio::time::timeout(wait, self.submit(payload)).await {
            Ok(Ok(Outcome::Response(body))) => serde_json::from_slice(&body).map_err(|e| e.to_string()),
            Ok(Ok(Outcome::Error(body))) => Err(String::from_utf8_lossy(&body).into_owned()),
            Ok(Err(_)) => Err("invocation dropped".into()),
            Err(_) => Err("no answer in time".into()),
        }
    }

    pub fn next_polls(&self) -> Vec<Instant> {
        self.state.next_polls.lock().unwrap().clone()
    }

    pub fn init_errors(&self) -> Vec<String> {
        self.state.init_errors.lock().unwrap().clone()
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder().status(status).body(Full::new(body.into())).unwrap()
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if path == "/2018-06-01/runtime/invocation/next" && method == Method::GET {
        state.next_polls.lock().unwrap().push(Instant::now());
        let invocation = state.pending_rx.lock().await.recv().await;
        let Some(inv) = invocation else { return Ok(reply(StatusCode::GONE, "")) };
        state.in_flight.lock().unwrap().insert(inv.id.clone(), inv.respond);
        let response = Response::builder()
            .status(StatusCode::OK)
            .header("lambda-runtime-aws-request-id", &inv.id)
            .header("lambda-runtime-deadline-ms", inv.deadline_ms.to_string())
            .header("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:123456789012:function:test")
            .header("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Sampled=0")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(inv.payload)))
            .unwrap();
        return Ok(response);
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if let Some(rest) = path.strip_prefix("/2018-06-01/runtime/invocation/") {
        let (id, kind) = rest.split_once('/').unwrap_or((rest, ""));
        let sender = state.in_flight.lock().unwrap().remove(id);
        if let Some(sender) = sender {
            let outcome =
                if kind == "response" { Outcome::Response(body.to_vec()) } else { Outcome::Error(body.to_vec()) };
            let _ = sender.send(outcome);
        }
        return Ok(reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#));
    }
    if path == "/2018-06-01/runtime/init/error" {
        state.init_errors.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
        return Ok(reply(StatusCode::ACCEPTED, r#"{"status":"OK"}"#));
    }
    Ok(function_url(&state, &parts, body).await)
}

/// A plain HTTP request turned into a function-URL invocation (payload format 2.0) and the
/// function's answer turned back into HTTP, as Lambda's function URLs do. The source address is
/// 127.0.0.1 unless the test sets `x-test-source-ip`.
async fn function_url(state: &Arc<State>, parts: &hyper::http::request::Parts, body: Bytes) -> Response<Full<Bytes>> {
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let value = value.to_str().unwrap_or_default().to_owned();
        // Function URLs join repeated headers with commas.
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let source_ip = headers.get("x-test-source-ip").and_then(Value::as_str).unwrap_or("127.0.0.1").to_owned();
    let (text, is_b64) = match std::str::from_utf8(&body) {
        Ok(t) => (t.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(&body), true),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let event = json!({
        "version": "2.0", "routeKey": "$default", "rawPath": parts.uri.path(), "rawQueryString": "",
        "headers": headers,
        "requestContext": {"accountId": "anonymous", "apiId": "local", "domainName": "127.0.0.1",
            "requestId": format!("url-{now}"), "timeEpoch": now as u64,
            "http": {"method": parts.method.as_str(), "path": parts.uri.path(), "protocol": "HTTP/1.1",
                     "sourceIp": source_ip, "userAgent": "test"}},
        "body": if body.is_empty() { Value::Null } else { Value::String(text) },
        "isBase64Encoded": is_b64,
    });
    match tokio::time::timeout(state.timeout + Duration::from_secs(1), state.submit(&event, state.timeout)).await {
        Ok(Ok(Outcome::Response(out))) => {
            let out: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
            let status = out["statusCode"].as_u64().unwrap_or(200) as u16;
            let mut body = out["body"].as_str().unwrap_or_default().as_bytes().to_vec();
            if out["isBase64Encoded"].as_bool() == Some(true) {
                body = base64::engine::general_purpose::STANDARD.decode(&body).unwrap_or_default();
            }
            let mut response = Response::builder().status(status);
            if let Some(h) = out["headers"].as_object() {
                for (k, v) in h {
                    response = response.header(k, v.as_str().unwrap_or_default());
                }
            }
            response.body(Full::new(Bytes::from(body))).unwrap()
        }
        // Lambda answers 502 when the function fails or gives no answer.
        _ => reply(StatusCode::BAD_GATEWAY, r#"{"message":"Internal Server Error"}"#),
    }
}

/// A function binary running as a process against a [`RuntimeApi`], its output captured.
/// Killed when dropped.
pub struct FunctionProcess {
    child: Child,
    pub output: Arc<Mutex<Vec<String>>>,
    pub started: Instant,
}

impl FunctionProcess {
    /// Starts `binary` with Lambda's environment plus `env`.
    pub fn spawn(binary: &Path, api: &RuntimeApi, env: &[(&str, String)]) -> Self {
        let name = binary.file_name().unwrap().to_string_lossy().into_owned();
        Self::spawn_command(Command::new(binary), &name, api, env)
    }

    /// Starts `cmd` (any Lambda runtime: a binary, `python -m awslambdaric …`, `node …`) as
    /// function `name` with Lambda's environment plus `env`.
    pub fn spawn_command(mut cmd: Command, name: &str, api: &RuntimeApi, env: &[(&str, String)]) -> Self {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", api.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test-stream")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/test")
            .env("AWS_REGION", "us-east-1")
            // Lambda sets both; boto3 reads only this one.
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_LAMBDA_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn function binary");
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line);
                }
            });
        }
        Self { child, output, started }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process dies wherever it is, as when Lambda kills a sandbox.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn lines(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// The output once it has stopped growing for 200 ms (at most 5 s): what a process printed
    /// before answering an invocation can still be in its pipe when the answer arrives.
    pub async fn settled_lines(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = self.output.lock().unwrap().len();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.output.lock().unwrap().len();
            if now == seen || Instant::now() > deadline {
                return self.lines();
            }
            seen = now;
        }
    }

    /// Lines whose JSON `message` (or text) is `message`.
    pub fn count_message(&self, message: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| serde_json::from_str::<Value>(l).map(|v| v["message"] == message).unwrap_or(false))
            .count()
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A function-URL (payload 2.0) POST of `body` from Stigg's documented address, as Lambda hands
/// it to the receiver.
pub fn function_url_post(secret: &str, body: &str) -> Value {
    let headers = json!({"stigg-webhooks-secret": secret, "content-type": "application/json", "user-agent": "Stigg"});
    super::url_event("POST", headers, Some(body), false, Some("18.119.35.43"))
}

/// The path of a binary of this package built by `cargo test` / `cargo bench`.
pub fn binary(name: &str) -> std::path::PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}
