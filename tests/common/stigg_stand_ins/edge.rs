//! The Edge API's queue-credentials endpoint and the guard in front of the "Stigg queue".

use super::*;

#[derive(Default)]
struct EdgeState {
    api_key: String,
    queue_url: String,
    lifetime: Duration,
    /// Answers to give before the normal ones (status codes), first first.
    scripted: Vec<u16>,
    requests: usize,
    /// Issued access key id -> (session token, expiration).
    issued: HashMap<String, (String, SystemTime)>,
    /// Access key ids revoked before their expiration.
    revoked: HashSet<String>,
    /// Credentials are revoked as they are issued (a queue that admits none).
    revoke_on_issue: bool,
    durations: Vec<String>,
}

/// The Edge API's `GET /v1/credentials/event-queue.json`: checks `X-API-KEY` and `queueUrl`
/// (401 for a wrong key, 400 for another queue, as Stigg checks the queue belongs to the key's
/// environment) and issues fresh credentials expiring after the chosen lifetime.
#[derive(Clone)]
pub struct EdgeApiStandIn {
    addr: SocketAddr,
    state: Arc<Mutex<EdgeState>>,
}

impl EdgeApiStandIn {
    pub async fn start(api_key: &str, queue_url: &str, lifetime: Duration) -> Self {
        Self::start_on("127.0.0.1:0", api_key, queue_url, lifetime).await
    }

    pub async fn start_on(addr: &str, api_key: &str, queue_url: &str, lifetime: Duration) -> Self {
        let state = Arc::new(Mutex::new(EdgeState {
            api_key: api_key.to_owned(),
            queue_url: queue_url.to_owned(),
            lifetime,
            ..Default::default()
        }));
        let shared = state.clone();
        let handler: Handler = Arc::new(move |parts, _body| {
            let answer = edge_answer(&shared, &parts);
            Box::pin(async move { answer })
        });
        let addr = serve(addr, handler).await;
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_lifetime(&self, lifetime: Duration) {
        self.state.lock().unwrap().lifetime = lifetime;
    }

    pub fn set_api_key(&self, key: &str) {
        self.state.lock().unwrap().api_key = key.to_owned();
    }

    /// The next answers are these statuses (e.g. `[503, 503]`), then normal ones again.
    pub fn script(&self, statuses: &[u16]) {
        self.state.lock().unwrap().scripted = statuses.to_vec();
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// How many distinct credentials were issued.
    pub fn issued(&self) -> usize {
        self.state.lock().unwrap().issued.len()
    }

    /// The `durationSeconds` values asked for.
    pub fn durations(&self) -> Vec<String> {
        self.state.lock().unwrap().durations.clone()
    }

    /// Stigg revokes every credential issued so far, before its stated expiration, as IAM's
    /// "revoke active sessions" does for a role: credentials issued later are not affected.
    pub fn revoke_issued(&self) {
        let mut state = self.state.lock().unwrap();
        let issued: Vec<String> = state.issued.keys().cloned().collect();
        state.revoked.extend(issued);
    }

    /// Revokes one credential.
    pub fn revoke(&self, access_key_id: &str) {
        self.state.lock().unwrap().revoked.insert(access_key_id.to_owned());
    }

    /// While on, every credential issued is revoked at once.
    pub fn revoke_on_issue(&self, on: bool) {
        self.state.lock().unwrap().revoke_on_issue = on;
    }

    /// Whether `access_key_id` + `token` were issued here, have not expired and are not revoked.
    pub fn is_valid(&self, access_key_id: &str, token: Option<&str>) -> Result<(), &'static str> {
        let state = self.state.lock().unwrap();
        match state.issued.get(access_key_id) {
            None => Err("UnrecognizedClientException"),
            Some((issued_token, _)) if Some(issued_token.as_str()) != token => Err("InvalidClientTokenId"),
            Some((_, expiration)) if *expiration <= SystemTime::now() => Err("ExpiredToken"),
            Some(_) if state.revoked.contains(access_key_id) => Err("AccessDenied"),
            Some(_) => Ok(()),
        }
    }
}

fn edge_answer(state: &Mutex<EdgeState>, parts: &hyper::http::request::Parts) -> Response<Full<Bytes>> {
    let mut state = state.lock().unwrap();
    state.requests += 1;
    if parts.uri.path() != "/v1/credentials/event-queue.json" {
        return json_response(404, &json!({"message": "not found"}));
    }
    if !state.scripted.is_empty() {
        let status = state.scripted.remove(0);
        return json_response(status, &json!({"message": format!("scripted {status}")}));
    }
    let key = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if key != state.api_key {
        return json_response(401, &json!({"message": "Unauthorized"}));
    }
    let query = parts.uri.query().unwrap_or_default();
    if query_param(query, "queueUrl").as_deref() != Some(state.queue_url.as_str()) {
        return json_response(400, &json!({"message": "Queue does not belong to this environment"}));
    }
    if let Some(d) = query_param(query, "durationSeconds") {
        state.durations.push(d);
    }
    let n = state.issued.len() + 1;
    let access_key_id = format!("ASIAEDGE{n:08}");
    let token = format!("edge-session-{n}-{}", uuid::Uuid::new_v4().simple());
    let expiration = SystemTime::now() + state.lifetime;
    state.issued.insert(access_key_id.clone(), (token.clone(), expiration));
    if state.revoke_on_issue {
        state.revoked.insert(access_key_id.clone());
    }
    json_response(
        200,
        &json!({"accessKeyId": access_key_id, "secretAccessKey": format!("secret-{n}"),
            "sessionToken": token, "expiration": iso(expiration)}),
    )
}

/// SQS's answer to a request signed with revoked credentials. Revoking a role's sessions attaches
/// a deny-all policy for credentials issued before it
/// (<https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_revoke-sessions.html>), so SQS
/// answers `AccessDeniedException` (403, its JSON protocol) with the query-compatible code
/// `AccessDenied` in `x-amzn-query-error`, which the SDK reports as the error's code.
fn access_denied(akid: &str) -> Response<Full<Bytes>> {
    let body = json!({"__type": "com.amazon.coral.service#AccessDeniedException",
        "message": format!("User: {akid} is not authorized to perform: sqs:* with an explicit deny in an identity-based policy")});
    let mut response = json_response(403, &body);
    response.headers_mut().insert("x-amzn-query-error", "AccessDenied;Sender".parse().unwrap());
    response
}

/// A proxy in front of the emulator that admits only requests signed with credentials the Edge
/// API stand-in issued and that are still valid, answering others as SQS does (`ExpiredToken`,
/// `AccessDenied` for revoked ones, ...). It stands for Stigg's account: only Stigg's credentials
/// open it.
#[derive(Clone)]
pub struct SignatureGuard {
    addr: SocketAddr,
    refused: Arc<Mutex<Vec<String>>>,
    admitted: Arc<Mutex<HashMap<String, usize>>>,
    revoke_after: Arc<Mutex<Option<String>>>,
}

impl SignatureGuard {
    pub async fn start(upstream: &str, edge: EdgeApiStandIn) -> Self {
        let upstream = upstream.trim_end_matches('/').to_owned();
        let refused: Arc<Mutex<Vec<String>>> = Arc::default();
        let admitted: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let revoke_after: Arc<Mutex<Option<String>>> = Arc::default();
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let (r, a, ra) = (refused.clone(), admitted.clone(), revoke_after.clone());
        let handler: Handler = Arc::new(move |mut parts, body| {
            let (edge, client, upstream, refused, admitted, revoke_after) =
                (edge.clone(), client.clone(), upstream.clone(), r.clone(), a.clone(), ra.clone());
            Box::pin(async move {
                let auth = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
                let akid =
                    auth.split("Credential=").nth(1).and_then(|c| c.split('/').next()).unwrap_or_default().to_owned();
                let token = parts.headers.get("x-amz-security-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
                if let Err(code) = edge.is_valid(&akid, token.as_deref()) {
                    refused.lock().unwrap().push(format!("{code} {akid}"));
                    if code == "AccessDenied" {
                        return access_denied(&akid);
                    }
                    return json_response(
                        400,
                        &json!({"__type": format!("com.amazon.coral.service#{code}"), "message": "not signed with valid Stigg credentials"}),
                    );
                }
                let target =
                    parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                *admitted.lock().unwrap().entry(target.clone()).or_default() += 1;
                let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
                parts.uri = format!("{upstream}{path}").parse().unwrap();
                let response = match client.request(Request::from_parts(parts, Full::new(body))).await {
                    Ok(response) => {
                        let (parts, body) = response.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        Response::from_parts(parts, Full::new(body))
                    }
                    Err(_) => Response::builder().status(502).body(Full::new(Bytes::new())).unwrap(),
                };
                let mut after = revoke_after.lock().unwrap();
                if after.as_deref() == Some(target.as_str()) {
                    *after = None;
                    edge.revoke(&akid);
                }
                response
            })
        });
        let addr = serve("127.0.0.1:0", handler).await;
        Self { addr, refused, admitted, revoke_after }
    }

    /// Once the next request for `target` (`AmazonSQS.ReceiveMessage`) is answered, Stigg revokes
    /// the credentials that signed it: the call after it is the first to be rejected.
    pub fn revoke_after_next(&self, target: &str) {
        *self.revoke_after.lock().unwrap() = Some(target.to_owned());
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests refused, with the reason and the access key id.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }

    /// Admitted requests for an operation (`AmazonSQS.ReceiveMessage`).
    pub fn admitted(&self, target: &str) -> usize {
        self.admitted.lock().unwrap().get(target).copied().unwrap_or(0)
    }
}
