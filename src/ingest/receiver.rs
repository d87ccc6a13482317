//! The `receiver` function: authenticates Stigg's request, validates the payload, claims its
//! idempotency key and queues the raw bytes, answering within milliseconds.
//!
//! Built on `lambda_http`, as the runtime's own function-URL examples are: the request arrives
//! as an `http::Request` (case-insensitive `HeaderMap`, body already base64-decoded, the source
//! address in the request context).
//!
//! | request                                   | answer |
//! |-------------------------------------------|--------|
//! | method other than POST                    | 405    |
//! | source IP outside `ALLOWED_SOURCE_CIDRS`  | 403    |
//! | secret header missing or wrong            | 401    |
//! | body over `MAX_BODY_BYTES` (default: what SQS carries less our attributes) | 413, one WARN line with key, type, size |
//! | not a JSON object with a string `type`    | 400    |
//! | new event                                 | 202, queued |
//! | key already completed                     | 200, not queued |
//! | key claimed by an attempt in flight       | 409    |
//! | DynamoDB or SQS failure                   | 503, claim rolled back |
//!
//! An event a function URL never produces (`isBase64Encoded: true` with invalid base64, a
//! payload that is not a function-URL event) makes `lambda_http`'s conversion fail before this
//! code runs; the runtime answers it with an invocation error (a 502 on a URL, which Stigg would
//! retry), and the process serves the next request (`tests/faults.rs`).

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use lambda_http::http::{Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{Value, json};

use crate::aws::claim::{ClaimOutcome, IdempotencyStore, StoreError};
use crate::aws::queue::{EventQueue, FifoIds, Outbound, QueueError, RECEIVED_AT};
use crate::config::SourceAllowList;
use crate::ingest::secrets::{SecretSet, Secrets};
use crate::metrics;
use crate::stigg::event::{PayloadError, WebhookPayload, sha256_hex};

/// The header Stigg puts the shared secret in (a `HeaderMap` matches it in any case).
pub const SECRET_HEADER: &str = "stigg-webhooks-secret";

/// The claim lease when a request carries no Lambda context (tests, tools): the template's
/// receiver timeout.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The caller's address, from the function URL's request context.
pub fn source_ip(request: &Request) -> Option<IpAddr> {
    #[allow(unreachable_patterns)] // other variants exist only with lambda_http features we do not enable
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(context) => context.http.source_ip.as_deref()?.parse().ok(),
        _ => None,
    }
}

/// Why [`function_url_request`] refused an event.
#[derive(Debug, thiserror::Error)]
pub enum NotAFunctionUrlEvent {
    #[error("not a function-URL event: {0}")]
    Shape(#[source] serde_json::Error),
    #[error("isBase64Encoded is true but the body is not base64")]
    InvalidBase64,
}

/// The request `lambda_http` makes of a function-URL event, as the runtime does, but refusing
/// what its conversion would panic on (a body flagged base64 that is not). For tests, fuzzing
/// and tools that replay recorded events.
pub fn function_url_request(event: &str) -> Result<Request, NotAFunctionUrlEvent> {
    use base64::Engine;
    let value: Value = serde_json::from_str(event).map_err(NotAFunctionUrlEvent::Shape)?;
    if value["isBase64Encoded"] == json!(true)
        && let Some(body) = value["body"].as_str()
        && base64::engine::general_purpose::STANDARD.decode(body).is_err()
    {
        return Err(NotAFunctionUrlEvent::InvalidBase64);
    }
    lambda_http::request::from_str(event).map_err(NotAFunctionUrlEvent::Shape)
}

fn presented_secret(request: &Request) -> &[u8] {
    request.headers().get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default()
}

/// Why a request was not accepted. Each variant knows its HTTP status; the cause stays in the
/// log, the answer says only what the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("source address not allowed")]
    ForbiddenSource,
    #[error("missing or invalid Stigg-Webhooks-Secret")]
    Unauthorized,
    #[error("body larger than {limit} bytes")]
    TooLarge {
        limit: usize,
        size: usize,
        /// The event's key and type, when the body parses: for the log line, never the answer.
        event: Option<(String, String)>,
    },
    #[error("invalid payload: {0}")]
    InvalidPayload(#[from] PayloadError),
    #[error("another delivery of this event is being processed; retry later")]
    InFlight,
    #[error("idempotency store unavailable")]
    Store(#[source] StoreError),
    #[error("event queue unavailable")]
    Queue(#[source] QueueError),
}

impl ReceiveError {
    pub fn status(&self) -> u16 {
        match self {
            Self::MethodNotAllowed => 405,
            Self::ForbiddenSource => 403,
            Self::Unauthorized => 401,
            Self::TooLarge { .. } => 413,
            Self::InvalidPayload(_) => 400,
            Self::InFlight => 409,
            Self::Store(_) | Self::Queue(_) => 503,
        }
    }

    /// The outcome name used in logs and metrics.
    pub fn outcome(&self) -> metrics::ReceiverOutcome {
        use metrics::ReceiverOutcome as O;
        match self {
            Self::MethodNotAllowed => O::MethodNotAllowed,
            Self::ForbiddenSource => O::Forbidden,
            Self::Unauthorized => O::Unauthorized,
            Self::TooLarge { .. } => O::TooLarge,
            Self::InvalidPayload(_) => O::Invalid,
            Self::InFlight => O::Conflict,
            Self::Store(_) | Self::Queue(_) => O::DependencyFailure,
        }
    }

    /// What the caller is told: enough to fix a bad request, nothing about our internals.
    fn public_message(&self) -> String {
        match self {
            Self::Store(_) | Self::Queue(_) => "temporarily unavailable; retry".to_owned(),
            other => other.to_string(),
        }
    }
}

/// What happened to an authenticated, valid event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Newly claimed and queued.
    Enqueued,
    /// Already accepted earlier; nothing queued.
    Duplicate { same_payload: bool },
}

/// The checks a request passes before any I/O, except the secret: method and source before it,
/// size and payload after it. Pure and synchronous.
#[derive(Debug, Clone)]
pub struct Checks {
    allowed_sources: Option<SourceAllowList>,
    max_body_bytes: usize,
}

impl Checks {
    pub fn new(allowed_sources: Option<SourceAllowList>, max_body_bytes: usize) -> Self {
        Self { allowed_sources, max_body_bytes }
    }

    /// Method and source address: refused before the secret is even looked at.
    pub fn origin(&self, request: &Request) -> Result<(), ReceiveError> {
        if request.method() != Method::POST {
            return Err(ReceiveError::MethodNotAllowed);
        }
        if let Some(allowed) = &self.allowed_sources
            && !source_ip(request).is_some_and(|ip| allowed.allows(ip))
        {
            return Err(ReceiveError::ForbiddenSource);
        }
        Ok(())
    }

    /// Size and payload, once the secret matched. The body is what the caller sent (a function
    /// URL base64-encodes binary bodies and `lambda_http` has decoded them). Valid JSON is valid
    /// UTF-8, so a body that is not UTF-8 is refused as the invalid payload it is.
    pub fn body(&self, body: Body) -> Result<Admitted, ReceiveError> {
        let limit = self.max_body_bytes;
        if body.len() > limit {
            // Only the type and ids: the whole tree of a body up to the function URL's 6 MB
            // would take tens of MB of a 128 MB function.
            let event = WebhookPayload::identify(body.as_ref()).map(|(key, event_type)| (key.to_string(), event_type));
            return Err(ReceiveError::TooLarge { limit, size: body.len(), event });
        }
        let raw = match body {
            Body::Text(text) => text,
            Body::Binary(bytes) => String::from_utf8(bytes).map_err(|_| PayloadError::NotUtf8)?,
            // Empty, and any kind a later lambda_http adds: no JSON object in it.
            _ => String::new(),
        };
        let payload = WebhookPayload::admit(raw.as_bytes())?;
        Ok(Admitted { payload, raw })
    }
}

/// Every check with a fixed secret list: what the receiver does before any I/O, pure and
/// synchronous, so it is fuzzed and property-tested on its own.
#[derive(Debug, Clone)]
pub struct Gate {
    secrets: SecretSet,
    checks: Checks,
}

/// A request that passed the gate: the validated payload and the exact text to queue.
#[derive(Debug)]
pub struct Admitted {
    pub payload: WebhookPayload,
    pub raw: String,
}

impl Gate {
    pub fn new(secrets: SecretSet, allowed_sources: Option<SourceAllowList>, max_body_bytes: usize) -> Self {
        Self { secrets, checks: Checks::new(allowed_sources, max_body_bytes) }
    }

    pub fn admit(&self, request: Request) -> Result<Admitted, ReceiveError> {
        self.checks.origin(&request)?;
        if !self.secrets.verify(presented_secret(&request)) {
            return Err(ReceiveError::Unauthorized);
        }
        self.checks.body(request.into_body())
    }
}

/// The receiver with its clients, built once per cold start and borrowed by every invocation.
#[derive(Debug)]
pub struct Receiver {
    checks: Checks,
    secrets: Secrets,
    store: IdempotencyStore,
    queue: EventQueue,
}

/// Fields of the one log line per request.
#[derive(Default)]
struct RequestLog {
    key: Option<String>,
    event_type: Option<String>,
    trace_id: Option<String>,
}

impl Receiver {
    /// `secrets`: a fixed [`SecretSet`] or a refreshing [`Secrets`] (the SSM parameter).
    pub fn new(
        secrets: impl Into<Secrets>,
        allowed_sources: Option<SourceAllowList>,
        max_body_bytes: usize,
        store: IdempotencyStore,
        queue: EventQueue,
    ) -> Self {
        Self { checks: Checks::new(allowed_sources, max_body_bytes), secrets: secrets.into(), store, queue }
    }

    /// Opens the DynamoDB and SQS connections during the cold start, so the first webhook does
    /// not pay for TLS handshakes. Best effort and bounded: a failure here is only logged, the
    /// first request then connects as usual.
    pub async fn warm_up(&self, within: Duration) {
        let both = futures::future::join(self.store.warm_up(), self.queue.warm_up());
        match tokio::time::timeout(within, both).await {
            Ok((Ok(()), Ok(()))) => tracing::debug!("connections warmed up"),
            Ok((store, queue)) => {
                let cause = store.err().map(|e| e.to_string()).or(queue.err().map(|e| e.to_string()));
                tracing::warn!(error = cause.unwrap_or_default(), "warm-up request failed; continuing");
            }
            Err(_) => tracing::warn!("warm-up timed out; continuing"),
        }
    }

    /// The Lambda entry point (`lambda_http::run(service_fn(...))`): never fails, every
    /// outcome is an HTTP answer. The claim's lease is the invocation's deadline.
    pub async fn handle_request(&self, request: Request) -> Result<Response<Body>, std::convert::Infallible> {
        let reported = request.lambda_context_ref().map(|c| c.deadline()).unwrap_or(SystemTime::UNIX_EPOCH);
        let deadline = crate::invocation_deadline(reported, DEFAULT_LEASE);
        Ok(self.handle(request, deadline).await)
    }

    /// Handles one request; `deadline` is when the invocation ends (the claim's lease).
    pub async fn handle(&self, request: Request, deadline: SystemTime) -> Response<Body> {
        let started = Instant::now();
        let request_id = request.lambda_context_ref().map(|c| c.request_id.clone());
        let mut log = RequestLog::default();
        let result = self.receive(request, deadline, &mut log).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let (status, outcome, body) = match &result {
            Ok(Accepted::Enqueued) => {
                (202, metrics::ReceiverOutcome::Accepted, json!({"status": "accepted", "idempotencyKey": log.key}))
            }
            Ok(Accepted::Duplicate { .. }) => {
                (200, metrics::ReceiverOutcome::Duplicate, json!({"status": "duplicate", "idempotencyKey": log.key}))
            }
            Err(e) => (e.status(), e.outcome(), json!({"error": e.public_message()})),
        };
        if let Err(e @ (ReceiveError::Store(_) | ReceiveError::Queue(_))) = &result {
            tracing::error!(idempotency_key = log.key.as_deref(), error = %crate::error_chain(e), "dependency failure");
        }
        metrics::receiver_request(&metrics::RequestLine {
            outcome,
            status,
            latency_ms,
            idempotency_key: log.key.as_deref(),
            event_type: log.event_type.as_deref(),
            trace_id: log.trace_id.as_deref(),
            request_id: request_id.as_deref(),
        });
        response(status, &body, status == 405)
    }

    async fn receive(
        &self,
        request: Request,
        deadline: SystemTime,
        log: &mut RequestLog,
    ) -> Result<Accepted, ReceiveError> {
        self.checks.origin(&request)?;
        if !self.secrets.verify(presented_secret(&request)).await {
            return Err(ReceiveError::Unauthorized);
        }
        let Admitted { payload, raw } = self.checks.body(request.into_body()).inspect_err(|e| {
            if let ReceiveError::TooLarge { limit, size, event } = e {
                log.key = event.as_ref().map(|(key, _)| key.clone());
                log.event_type = event.as_ref().map(|(_, event_type)| event_type.clone());
                // Stigg retries a 413 and then gives the event up: this line is what an operator
                // needs to ask Stigg for it (never the body).
                tracing::warn!(
                    idempotency_key = log.key.as_deref(),
                    event_type = log.event_type.as_deref(),
                    body_bytes = size,
                    limit,
                    "event larger than the queue carries; refused"
                );
            }
        })?;
        log.key = Some(payload.key.to_string());
        log.event_type = Some(payload.event_type.to_string());
        log.trace_id = payload.trace_id().map(str::to_owned);
        self.accept(&payload, &raw, deadline).await
    }

    /// Claim, enqueue, complete. The order is what makes a 2XX mean "in the queue".
    async fn accept(
        &self,
        payload: &WebhookPayload,
        raw: &str,
        deadline: SystemTime,
    ) -> Result<Accepted, ReceiveError> {
        let fingerprint = sha256_hex(raw.as_bytes());
        let claim = match self.store.claim(&payload.key, &fingerprint, deadline).await.map_err(ReceiveError::Store)? {
            ClaimOutcome::Claimed(claim) => claim,
            ClaimOutcome::InFlight => return Err(ReceiveError::InFlight),
            ClaimOutcome::Completed { same_payload } => {
                if !same_payload {
                    tracing::warn!(idempotency_key = %payload.key, event_type = %payload.event_type,
                        "duplicate key with a different body; the first delivery stands, this one is not queued");
                }
                return Ok(Accepted::Duplicate { same_payload });
            }
        };
        let attributes = queue_attributes(payload, SystemTime::now());
        let fifo = self.queue.is_fifo().then(|| FifoIds {
            group_id: payload.fifo_group_id(),
            deduplication_id: payload.key.fifo_deduplication_id(),
        });
        if let Err(send_error) = self.queue.send(Outbound { body: raw, attributes, fifo }).await {
            // Roll back so that Stigg's retry is accepted at once. If even that fails, the lease
            // (this invocation's deadline) bounds how long retries see 409.
            if let Err(e) = self.store.release(claim).await {
                tracing::error!(idempotency_key = %payload.key, error = %crate::error_chain(&e),
                    "claim not rolled back; it is taken over after its lease");
            }
            return Err(ReceiveError::Queue(send_error));
        }
        if let Err(e) = self.store.complete(claim).await {
            // The event is safe in the queue: answer 2XX. A later delivery may queue it again;
            // the processor's own claim runs its handlers once.
            tracing::warn!(idempotency_key = %payload.key, error = %crate::error_chain(&e),
                "event queued but its completion was not recorded");
        }
        Ok(Accepted::Enqueued)
    }
}

/// The message attributes the receiver queues an event with: its key, type and trace id (so
/// consumers route without parsing), and when it was received (`received_at`, epoch ms), which
/// survives a dead letter and a redrive where SQS's own `SentTimestamp` does not.
pub fn queue_attributes(payload: &WebhookPayload, received: SystemTime) -> Vec<(&'static str, String)> {
    let mut attributes = vec![
        ("event_type", payload.event_type.to_string()),
        ("idempotency_key", payload.key.to_string()),
        (RECEIVED_AT, epoch_millis(received).to_string()),
    ];
    if let Some(trace_id) = payload.trace_id() {
        attributes.push(("trace_id", trace_id.to_owned()));
    }
    attributes
}

fn epoch_millis(t: SystemTime) -> u128 {
    t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn response(status: u16, body: &Value, allow_post: bool) -> Response<Body> {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json");
    if allow_post {
        builder = builder.header(header::ALLOW, "POST");
    }
    builder.body(Body::Text(body.to_string())).expect("a status and static headers always build")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(event: Value) -> Request {
        function_url_request(&event.to_string()).expect("a function-URL event")
    }

    #[test]
    fn function_url_events_are_read_by_lambda_http() {
        let r = request(json!({
            "version": "2.0", "rawPath": "/", "rawQueryString": "",
            "headers": {"Stigg-Webhooks-Secret": "s", "content-type": "application/json"},
            "requestContext": {"http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "18.119.35.43", "userAgent": "x"},
                               "timeEpoch": 1, "requestId": "r", "domainName": "x.lambda-url.us-east-1.on.aws"},
            "body": "eyJ0eXBlIjoieCJ9",
            "isBase64Encoded": true
        }));
        assert_eq!(r.method(), Method::POST);
        assert_eq!(presented_secret(&r), b"s", "header names match in any case");
        assert_eq!(source_ip(&r), Some("18.119.35.43".parse().unwrap()));
        assert_eq!(r.body().as_ref(), br#"{"type":"x"}"#, "base64 bodies arrive decoded");
    }

    #[test]
    fn every_error_maps_to_its_documented_status() {
        assert_eq!(ReceiveError::MethodNotAllowed.status(), 405);
        assert_eq!(ReceiveError::ForbiddenSource.status(), 403);
        assert_eq!(ReceiveError::Unauthorized.status(), 401);
        assert_eq!(ReceiveError::TooLarge { limit: 1, size: 2, event: None }.status(), 413);
        assert_eq!(ReceiveError::InvalidPayload(PayloadError::NotAnObject).status(), 400);
        assert_eq!(ReceiveError::InFlight.status(), 409);
    }

    #[test]
    fn the_largest_accepted_body_with_the_largest_attributes_fits_an_sqs_message() {
        use crate::aws::queue::{MAX_EVENT_BYTES, MAX_MESSAGE_BYTES, attributes_size};
        use crate::stigg::event::{MAX_KEY_BYTES, MAX_TYPE_BYTES};
        let raw = json!({"type": "t".repeat(MAX_TYPE_BYTES), "messageId": "k".repeat(MAX_KEY_BYTES),
                         "traceId": "r".repeat(MAX_KEY_BYTES)})
        .to_string();
        let payload = WebhookPayload::parse(raw.as_bytes()).unwrap();
        let attributes = queue_attributes(&payload, SystemTime::now());
        assert_eq!(attributes.len(), 4, "trace id kept at its longest");
        assert!(MAX_EVENT_BYTES + attributes_size(&attributes) <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn an_oversized_body_is_named_by_its_type_and_ids_without_the_full_parse() {
        // U+FFFF makes the full parse refuse the body (SQS cannot carry it); the 413 path reads
        // only the type and ids, so the operator still gets the key to ask Stigg for.
        let body = format!(
            r#"{{"type":"subscription.created","messageId":"m-1","note":"{}{}"}}"#,
            '\u{FFFF}',
            "x".repeat(100)
        );
        assert!(WebhookPayload::parse(body.as_bytes()).is_err());
        match Checks::new(None, 64).body(Body::Text(body)) {
            Err(ReceiveError::TooLarge { event: Some((key, event_type)), .. }) => {
                assert_eq!((key.as_str(), event_type.as_str()), ("m-1", "subscription.created"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn responses_are_small_json_and_405_names_the_allowed_method() {
        let r = response(405, &json!({"error": "method not allowed"}), true);
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "POST");
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}
