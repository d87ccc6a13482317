//! An HTTP proxy on 127.0.0.1 in front of the emulator that counts requests per AWS JSON-protocol
//! operation (`X-Amz-Target`, e.g. `AmazonSSM.GetParameter`), for a function running as a
//! separate process, where an SDK interceptor cannot reach.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct CountingProxy {
    addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_end_matches('/').to_owned();
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let client = upstream_client();
        let seen = counts.clone();
        let addr = serve(move |req: Request<Incoming>| {
            let (counts, client, upstream) = (seen.clone(), client.clone(), upstream.clone());
            async move {
                let (parts, body) = req.into_parts();
                if let Some(target) = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
                    *counts.lock().unwrap().entry(target.to_owned()).or_default() += 1;
                }
                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                Ok(pass_through(&client, &upstream, parts, body).await)
            }
        })
        .await;
        Self { addr, counts }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen for `target` (e.g. `AmazonSSM.GetParameter`).
    pub fn count(&self, target: &str) -> usize {
        self.counts.lock().unwrap().get(target).copied().unwrap_or(0)
    }
}

/// The HTTP client a proxy sends on with.
pub type Upstream = Client<HttpConnector, Full<Bytes>>;

pub fn upstream_client() -> Upstream {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Serves `handle` on a port of 127.0.0.1 of its own, a task per connection; its address.
pub async fn serve<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // As AWS endpoints: without it Nagle and delayed ACKs can hold a reused connection's
            // answer back ~40 ms.
            let _ = stream.set_nodelay(true);
            let handle = handle.clone();
            tokio::spawn(async move {
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(handle)).await;
            });
        }
    });
    addr
}

/// Sends a request on to `upstream` as it is; 502 when upstream does not answer.
pub async fn pass_through(
    client: &Upstream,
    upstream: &str,
    mut parts: hyper::http::request::Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
    parts.uri = format!("{upstream}{path}").parse().unwrap();
    match client.request(Request::from_parts(parts, Full::new(body))).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Response::from_parts(parts, Full::new(body))
        }
        Err(_) => Response::builder().status(502).body(Full::new(Bytes::new())).unwrap(),
    }
}
