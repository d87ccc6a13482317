//! Local stand-ins for Stigg's services, on 127.0.0.1: the Edge API's queue-credentials endpoint
//! and a guard in front of the "Stigg queue" that admits only requests signed with credentials the
//! stand-in issued, that have not expired and that Stigg has not revoked ([`edge`]); the status
//! page's component-impacts endpoint ([`status`]); Stigg's GraphQL API for the entitlement
//! mirror ([`api`]).
//! Used by the tests and by `make dev DURABLE=1` / `MIRROR=1` (examples/stigg-dev includes this
//! folder).
#![allow(dead_code)]

pub mod api;
pub mod edge;
pub mod status;

// The stand-ins by name, as before the split; each test uses some of them.
#[allow(unused_imports)]
pub use {
    api::StiggApiStandIn,
    edge::{EdgeApiStandIn, SignatureGuard},
    status::{STATUS_PATH, StatusPageStandIn},
};

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

type Answer = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;
type Handler = Arc<dyn Fn(hyper::http::request::Parts, Bytes) -> Answer + Send + Sync>;

/// Serves `handler` on `addr` (127.0.0.1, port 0 for any) until the process ends.
async fn serve(addr: &str, handler: Handler) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.expect("bind a loopback port");
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        Ok::<_, Infallible>(handler(parts, body).await)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    local
}

fn json_response(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3339 with milliseconds, as the Edge API writes `expiration`.
fn iso(t: SystemTime) -> String {
    stigg_webhooks::metrics::rfc3339(t)
}
