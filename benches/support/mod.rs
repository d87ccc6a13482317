//! What the benches share: a keep-alive front for moto that counts the requests it carries, and
//! the /proc readings (CPU time, peak RSS) of a function process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Requests seen by a [`keep_alive_front`], by operation (`X-Amz-Target`, e.g. `PutItem`).
#[derive(Clone, Default)]
pub struct Requests(Arc<Mutex<BTreeMap<String, usize>>>);

impl Requests {
    pub fn snapshot(&self) -> BTreeMap<String, usize> {
        self.0.lock().unwrap().clone()
    }

    /// Requests since `before`, by operation (operations with none left out).
    pub fn since(&self, before: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
        self.snapshot()
            .into_iter()
            .map(|(op, n)| {
                let d = n - before.get(&op).copied().unwrap_or(0);
                (op, d)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// A keep-alive HTTP/1.1 front for moto. moto's server (werkzeug) closes the connection after
/// every response, which AWS endpoints do not: without this front each SDK request would pay a
/// TCP connect, a resolver hop and a new connection, and the CPU figures would measure moto
/// rather than the functions. The front runs in the bench process, so its own CPU is not counted
/// against the functions. It also counts the requests it carries, by operation: the same count
/// for every client, whatever its language.
pub async fn keep_alive_front(upstream: String) -> (String, Requests) {
    use hyper::body::Incoming;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    type Body = http_body_util::Either<Incoming, http_body_util::Full<hyper::body::Bytes>>;
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build(connector);
    let requests = Requests::default();
    let counts = requests.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms to every reused connection.
            let _ = stream.set_nodelay(true);
            let (client, upstream, counts) = (client.clone(), upstream.clone(), counts.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let client = client.clone();
                    let target = req
                        .headers()
                        .get("x-amz-target")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|t| t.rsplit('.').next())
                        .map(str::to_owned);
                    let path = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
                    let uri: hyper::Uri = format!("{upstream}{path}").parse().unwrap();
                    let counts = counts.clone();
                    async move {
                        let (mut head, body) = req.into_parts();
                        head.uri = uri;
                        let req = match target {
                            Some(op) => {
                                *counts.0.lock().unwrap().entry(op).or_default() += 1;
                                hyper::Request::from_parts(head, http_body_util::Either::Left(body))
                            }
                            // An SDK on the query protocol (the Go SDK v2 as Debian packages it, for
                            // SQS) names the operation in its form body: `Action=SendMessage&...`.
                            None => {
                                let body =
                                    http_body_util::BodyExt::collect(body).await.map_err(|e| e.to_string())?.to_bytes();
                                let op = form_action(&body).unwrap_or("other").to_owned();
                                *counts.0.lock().unwrap().entry(op).or_default() += 1;
                                hyper::Request::from_parts(
                                    head,
                                    http_body_util::Either::Right(http_body_util::Full::new(body)),
                                )
                            }
                        };
                        // moto answers `Connection: close`; a keep-alive endpoint would not say so.
                        let response = client.request(req).await.map_err(|e| e.to_string())?;
                        let (mut head, body) = response.into_parts();
                        head.headers.remove(hyper::header::CONNECTION);
                        // Whole, then one write: moto's werkzeug writes the head and the body
                        // separately, and streamed through they would reach the client as two
                        // segments (two wake-ups) where an AWS endpoint's small answer is one.
                        let body = http_body_util::BodyExt::collect(body).await.map_err(|e| e.to_string())?.to_bytes();
                        Ok::<_, String>(hyper::Response::from_parts(head, http_body_util::Full::new(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (format!("http://{addr}"), requests)
}

/// The `Action` of a query-protocol request's form body.
fn form_action(body: &[u8]) -> Option<&str> {
    std::str::from_utf8(body).ok()?.split('&').find_map(|kv| kv.strip_prefix("Action="))
}

/// CPU time (user + system) of a process, all threads, from the scheduler's ns counters.
pub fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    for task in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
            total += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

/// A `/proc/<pid>/status` figure in kB (`VmHWM:` is the peak RSS).
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap()))
        .unwrap()
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub fn us(ns: f64) -> String {
    format!("{:.0} µs", ns / 1e3)
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_else(|| "?".into())
}

/// Replaces the part of `doc` between `begin` and `end` (markers included) with `section`, or
/// inserts it right after `after` (or at the end) when the document has none yet.
pub fn splice_section(doc: &str, begin: &str, end: &str, section: &str, after: &str) -> String {
    let block = format!("{begin}\n{section}\n{end}");
    if let (Some(b), Some(e)) = (doc.find(begin), doc.find(end))
        && b < e
    {
        return format!("{}{block}{}", &doc[..b], &doc[e + end.len()..]);
    }
    match doc.find(after) {
        Some(i) => {
            let at = i + after.len();
            format!("{}\n\n{block}\n{}", &doc[..at], &doc[at..])
        }
        None => format!("{doc}\n{block}\n"),
    }
}

/// Public list prices used for the cost model (us-east-1). This machine has no internet, so they
/// are written down with the date they were last checked, not fetched.
pub mod floor;

/// A Lambda's CPU share for one process (cgroup v1 quota).
pub mod cpu_cap;

/// Where a bench leaves figures another bench reads (`benches/processors` writes
/// `processors.json`, the receivers' cost model reads it): `BENCH_RESULTS_DIR`, else
/// `bench-results/` in the target directory (`CARGO_TARGET_DIR`, else `target/`).
pub fn result_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("BENCH_RESULTS_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
            .join("bench-results")
    });
    dir.join(format!("{name}.json"))
}

pub mod prices {
    pub const CHECKED: &str =
        "AWS public pricing pages, us-east-1, as of 2026-11 (unchanged since the Nov 2024 DynamoDB on-demand cut)";
    /// Lambda arm64: per GB-second, and per request.
    pub const LAMBDA_ARM_GB_S: f64 = 0.000_013_333_4;
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    /// DynamoDB on-demand: per write request unit (items < 1 KB: one WRU per write).
    pub const DDB_WRU: f64 = 0.625 / 1e6;
    /// SQS standard queue: per request (64 KB chunk).
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
    /// CloudWatch Logs ingestion, per GB.
    pub const LOGS_GB: f64 = 0.50;
    /// EventBridge custom events: $1.00 per million events put, each 64 KB chunk of an entry
    /// billed as one event (<https://aws.amazon.com/eventbridge/pricing/>).
    pub const EVENTBRIDGE_EVENT: f64 = 1.00 / 1e6;
    pub const EVENTBRIDGE_CHUNK_BYTES: usize = 64 * 1024;
    /// EventBridge archive: event processing (ingestion) per GB, then storage per GB-month
    /// (<https://aws.amazon.com/eventbridge/pricing/>).
    pub const EVENTBRIDGE_ARCHIVE_GB: f64 = 0.10;
    pub const EVENTBRIDGE_ARCHIVE_STORAGE_GB_MONTH: f64 = 0.023;
}
