//! The status page's component-impacts endpoint.

use super::*;

/// The path the status page serves its component impacts on.
pub const STATUS_PATH: &str = "/proxy/status.stigg.io/component_impacts";

struct StatusState {
    status: u16,
    body: Vec<u8>,
    queries: Vec<String>,
}

/// The status page's component-impacts endpoint, serving a chosen answer.
#[derive(Clone)]
pub struct StatusPageStandIn {
    addr: SocketAddr,
    state: Arc<Mutex<StatusState>>,
}

impl StatusPageStandIn {
    pub async fn start(answer: &Value) -> Self {
        Self::start_on("127.0.0.1:0", answer).await
    }

    pub async fn start_on(addr: &str, answer: &Value) -> Self {
        let state =
            Arc::new(Mutex::new(StatusState { status: 200, body: answer.to_string().into_bytes(), queries: vec![] }));
        let shared = state.clone();
        let handler: Handler = Arc::new(move |parts, _body| {
            let mut s = shared.lock().unwrap();
            s.queries.push(parts.uri.query().unwrap_or_default().to_owned());
            let answer = if parts.uri.path() == STATUS_PATH {
                Response::builder()
                    .status(s.status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(s.body.clone())))
                    .unwrap()
            } else {
                json_response(404, &json!({"message": "not found"}))
            };
            Box::pin(async move { answer })
        });
        let addr = serve(addr, handler).await;
        Self { addr, state }
    }

    /// The URL to give as `STIGG_STATUS_URL`.
    pub fn url(&self) -> String {
        format!("http://{}{STATUS_PATH}", self.addr)
    }

    /// Serve `body` (any bytes: a changed shape, HTML) with `status` from now on.
    pub fn set(&self, status: u16, body: &[u8]) {
        let mut s = self.state.lock().unwrap();
        s.status = status;
        s.body = body.to_vec();
    }

    /// The query strings received (`start_at=...&end_at=...`), decoded.
    pub fn queries(&self) -> Vec<HashMap<String, String>> {
        self.state
            .lock()
            .unwrap()
            .queries
            .iter()
            .map(|q| {
                q.split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, v)| (k.to_owned(), percent_decode(v)))
                    .collect()
            })
            .collect()
    }
}
