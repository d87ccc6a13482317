//! A TCP proxy on 127.0.0.1 in front of the emulator that injects faults per service:
//! refuse (connections closed at once, existing ones cut), delay, or answer DynamoDB-style
//! throttling errors. The SDK sees real network behaviour, not a mock.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Refuse,
    Delay(Duration),
    /// Every request's bytes held for this long before they go upstream, on open connections
    /// too (a dependency that slows down mid-invocation, while the SDK reuses its connections).
    SlowRequests(Duration),
    /// Every request answered `400 ThrottlingException` (DynamoDB's JSON protocol).
    Throttle,
}

pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Fault>,
    requests_refused: Arc<AtomicUsize>,
    requests_throttled: Arc<AtomicUsize>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watcher) = watch::channel(Fault::Pass);
        let refused = Arc::new(AtomicUsize::new(0));
        let throttled = Arc::new(AtomicUsize::new(0));
        let (r, t) = (refused.clone(), throttled.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut watcher = watcher.clone();
                let (r, t) = (r.clone(), t.clone());
                tokio::spawn(async move {
                    let fault = *watcher.borrow_and_update();
                    match fault {
                        Fault::Refuse => {
                            r.fetch_add(1, Ordering::SeqCst);
                            drop(client);
                        }
                        Fault::Throttle => throttle(client, &t, &watcher).await,
                        Fault::Pass | Fault::Delay(_) | Fault::SlowRequests(_) => {
                            if let Fault::Delay(d) = fault {
                                tokio::time::sleep(d).await;
                            }
                            let Ok(server) = TcpStream::connect(upstream).await else { return };
                            let (mut client_read, mut client_write) = client.into_split();
                            let (mut server_read, mut server_write) = server.into_split();
                            let passing =
                                |f: &Fault| matches!(f, Fault::Pass | Fault::Delay(_) | Fault::SlowRequests(_));
                            let slow = watcher.clone();
                            let upstream_bound = async move {
                                let mut chunk = vec![0u8; 64 * 1024];
                                loop {
                                    let n = match client_read.read(&mut chunk).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(n) => n,
                                    };
                                    let current = *slow.borrow();
                                    if let Fault::SlowRequests(d) = current {
                                        tokio::time::sleep(d).await;
                                    }
                                    if server_write.write_all(&chunk[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            };
                            // Cut the connection when the mode turns to a fault, as an outage would.
                            tokio::select! {
                                _ = upstream_bound => {}
                                _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
                                _ = async { while watcher.changed().await.is_ok() {
                                        if !passing(&watcher.borrow()) { break; }
                                    } } => {}
                            }
                        }
                    }
                });
            }
        });
        Self { addr, mode, requests_refused: refused, requests_throttled: throttled }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        self.mode.send_replace(fault);
    }

    pub fn refused(&self) -> usize {
        self.requests_refused.load(Ordering::SeqCst)
    }

    pub fn throttled(&self) -> usize {
        self.requests_throttled.load(Ordering::SeqCst)
    }
}

/// Answers every request on the connection with a throttling error.
async fn throttle(mut client: TcpStream, count: &AtomicUsize, mode: &watch::Receiver<Fault>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Read one request: headers, then Content-Length bytes of body.
        let header_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let headers = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
        let length: usize = headers
            .lines()
            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
            .unwrap_or(0);
        while buf.len() < header_end + length {
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..header_end + length);
        if *mode.borrow() != Fault::Throttle {
            // The fault is over: drop this connection so the client opens a clean one.
            return;
        }
        count.fetch_add(1, Ordering::SeqCst);
        let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"Rate of requests exceeds the allowed throughput."}"#;
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: throttled\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if client.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}
