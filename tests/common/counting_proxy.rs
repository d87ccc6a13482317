//! An HTTP proxy on 127.0.0.1 in front of the emulator that counts requests per AWS JSON-protocol
//! operation (`X-Amz-Target`, e.g. `AmazonSSM.GetParameter`), for a function running as a
//! separate process, where an SDK interceptor cannot reach.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
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
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let state = (counts.clone(), client, upstream);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counts, client, upstream) = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| forward(counts.clone(), client.clone(), upstream.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
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

async fn forward(
    counts: Arc<Mutex<HashMap<String, usize>>>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (mut parts, body) = req.into_parts();
    if let Some(target) = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        *counts.lock().unwrap().entry(target.to_owned()).or_default() += 1;
    }
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = format!("{upstream}{path}").parse().unwrap();
    let answer = match client.request(Request::from_parts(parts, Full::new(body))).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Response::from_parts(parts, Full::new(body))
        }
        Err(_) => Response::builder().status(502).body(Full::new(Bytes::new())).unwrap(),
    };
    Ok(answer)
}
