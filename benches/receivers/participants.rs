//! Who takes part and how each is run: our receiver (and a baseline build), the SDK-only
//! function, the peers of `benches/peers/` and the moto floor; their tables, queues and fronts to
//! moto; a function process under the Runtime API emulator.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stigg_webhooks::config::QueueUrl;

use crate::SECRET;
use crate::common::runtime_api::{FunctionProcess, RuntimeApi, function_url_post};
use crate::common::{admin_config_for, create_queue, create_table, endpoint, unique};
use crate::support::{self, Requests, status_kb};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Who {
    Ours,
    /// Another build of our receiver (`BENCH_BASELINE_DIR`), for A/B rows.
    Baseline,
    /// `examples/sdk-floor.rs`: a Rust Lambda on the same runtime and SDK set-up that makes the
    /// three calls and nothing else, to show what the SDK and the runtime cost before any of our
    /// code runs.
    SdkOnly,
    Python,
    Node,
    /// The Go peer: AWS SDK for Go v2, a static binary with its own Runtime API loop.
    Go,
    Floor,
}

pub const FUNCTIONS: [Who; 6] = [Who::Ours, Who::Baseline, Who::SdkOnly, Who::Python, Who::Node, Who::Go];
pub const PEERS: [Who; 3] = [Who::Python, Who::Node, Who::Go];
/// The receivers the cost model prices (the SDK-only function is no receiver).
pub const RECEIVERS: [Who; 5] = [Who::Ours, Who::Baseline, Who::Python, Who::Node, Who::Go];

impl Who {
    pub fn label(self) -> &'static str {
        match self {
            Who::Ours => "ours (Rust)",
            Who::Baseline => "ours, baseline build",
            Who::SdkOnly => "Rust, SDK calls only",
            Who::Python => "Python peer",
            Who::Node => "Node peer",
            Who::Go => "Go peer",
            Who::Floor => "moto floor",
        }
    }
    pub fn slug(self) -> &'static str {
        match self {
            Who::Ours => "rust",
            Who::Baseline => "base",
            Who::SdkOnly => "sdk",
            Who::Python => "py",
            Who::Node => "node",
            Who::Go => "go",
            Who::Floor => "floor",
        }
    }
}

/// Where the receivers and the peers live on disk.
pub struct Code {
    pub receiver: PathBuf,
    pub processor: PathBuf,
    pub peers: PathBuf,
    pub baseline: Option<PathBuf>,
    /// The SDK-only function (`examples/sdk-floor.rs`), when built.
    pub sdk_only: Option<PathBuf>,
    /// `BENCH_PEERS=0` leaves the peers out (quick A/B runs of our own builds).
    pub with_peers: bool,
}

impl Code {
    /// Who takes part, in their order in a round.
    pub fn everyone(&self) -> Vec<Who> {
        let mut v = vec![Who::Ours];
        if self.baseline.is_some() {
            v.push(Who::Baseline);
        }
        if self.sdk_only.is_some() {
            v.push(Who::SdkOnly);
        }
        if self.with_peers {
            v.extend([Who::Python, Who::Node]);
            if self.go_built() {
                v.push(Who::Go);
            }
        }
        v.push(Who::Floor);
        v
    }
}

impl Code {
    /// The Go peer's binary (`make bench-peers` builds it where Go can be installed).
    pub fn go_binary(&self) -> PathBuf {
        self.peers.join("go/bin/receiver")
    }

    pub fn go_built(&self) -> bool {
        self.go_binary().exists()
    }

    pub fn command(&self, who: Who) -> Command {
        match who {
            Who::Ours => Command::new(&self.receiver),
            Who::Baseline => Command::new(self.baseline.as_ref().expect("BENCH_BASELINE_DIR").join("receiver")),
            Who::SdkOnly => Command::new(self.sdk_only.as_ref().expect("the sdk-floor example")),
            Who::Python => {
                let mut c = Command::new(self.peers.join("python/.venv/bin/python"));
                c.args(["-m", "awslambdaric", "receiver.handler"]).current_dir(self.peers.join("python"));
                c
            }
            Who::Node => {
                let mut c = Command::new("sh");
                c.args(["bootstrap", "receiver.handler"]).current_dir(self.peers.join("node"));
                c
            }
            Who::Go => Command::new(self.go_binary()),
            Who::Floor => unreachable!("the floor is no process"),
        }
    }
}

/// One participant's own table, queue and counting front to moto.
pub struct Target {
    pub who: Who,
    pub table: String,
    pub queue: QueueUrl,
    pub front: String,
    pub requests: Requests,
}

impl Target {
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STIGG_WEBHOOK_SECRET", SECRET.to_owned()),
            ("IDEMPOTENCY_TABLE", self.table.clone()),
            ("EVENTS_QUEUE_URL", self.queue.as_str().to_owned()),
            ("AWS_ENDPOINT_URL", self.front.clone()),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO".to_owned()),
        ]
    }
}

/// The moto floor: what a receiver cannot avoid, the same three calls from a client in this
/// process (a conditional PutItem, a SendMessage with the two attributes, an UpdateItem).
pub struct Floor {
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl Floor {
    pub async fn claim(&self, t: &Target, key: &str) -> bool {
        support::floor::claim(&self.ddb, &t.table, key).await.expect("floor PutItem")
    }

    pub async fn new_event(&self, t: &Target, key: &str, body: &str, event_type: &str) {
        assert!(self.claim(t, key).await, "floor key {key} was claimed before");
        support::floor::enqueue(&self.sqs, t.queue.as_str(), body, event_type, key).await.expect("floor SendMessage");
        self.mark(t, key).await;
    }

    pub async fn mark(&self, t: &Target, key: &str) {
        support::floor::mark(&self.ddb, &t.table, key).await.expect("floor UpdateItem");
    }
}

/// Creates each pass's tables and queues, and deletes the last pass's: moto slows down as its
/// tables and queues fill (the floor's p50 rose from 19 to 53 ms over two passes on shared
/// ones), so every pass starts empty, as the first did.
pub struct Admin {
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl Admin {
    pub async fn new() -> Self {
        let admin = admin_config_for(&endpoint()).await;
        Self { ddb: aws_sdk_dynamodb::Client::new(&admin), sqs: aws_sdk_sqs::Client::new(&admin) }
    }

    pub async fn fresh(&self, who: Who) -> (String, QueueUrl) {
        let table = unique(&format!("bench-{}", who.slug()));
        // Powertools reads `expires_at` for TTL; moto needs no TTL set for the bench.
        create_table(&self.ddb, &table).await;
        (table, create_queue(&self.sqs, &unique(&format!("bench-{}", who.slug())), false).await)
    }

    pub async fn renew(&self, targets: &mut [Target]) {
        for t in targets {
            let _ = self.ddb.delete_table().table_name(&t.table).send().await;
            let _ = self.sqs.delete_queue().queue_url(t.queue.as_str()).send().await;
            (t.table, t.queue) = self.fresh(t.who).await;
        }
    }
}

pub fn stigg_event(template: &Value, id: &str) -> String {
    let mut e = template.clone();
    e["messageId"] = json!(id);
    e.to_string()
}

pub async fn wait_first_poll(api: &RuntimeApi, who: Who, p: &FunctionProcess) -> Instant {
    let start = Instant::now();
    loop {
        if let Some(t) = api.next_polls().first() {
            return *t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30) && api.init_errors().is_empty(),
            "{}: no GET /next after 30 s: {:?}\n{}",
            who.label(),
            api.init_errors(),
            p.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// A function under the emulator.
pub struct Live<'a> {
    pub target: &'a Target,
    pub api: RuntimeApi,
    pub process: FunctionProcess,
}

impl<'a> Live<'a> {
    /// Spawns the function and waits for its first `GET /next`: the cold init, and the RSS right
    /// after init (the process is then blocked on that poll, before any event).
    pub async fn start(code: &Code, target: &'a Target) -> (Self, Duration, u64) {
        let api = RuntimeApi::start(Duration::from_secs(60)).await;
        let process = FunctionProcess::spawn_command(code.command(target.who), "receiver", &api, &target.env());
        let polled = wait_first_poll(&api, target.who, &process).await;
        let rss_init_kb = status_kb(process.pid(), "VmRSS:");
        let init = polled - process.started;
        (Self { target, api, process }, init, rss_init_kb)
    }

    /// One delivery; panics on an answer that is not the expected one (a bench that measured
    /// errors would be measuring nothing).
    pub async fn deliver(&self, body: &str, new: bool) -> Duration {
        let t = Instant::now();
        let out = self.api.invoke(&function_url_post(SECRET, body), Duration::from_secs(60)).await;
        let took = t.elapsed();
        let status = out.as_ref().ok().and_then(|o| o["statusCode"].as_u64());
        let ok = if new { status == Some(202) } else { status.is_some_and(|s| (200..300).contains(&s)) };
        assert!(ok, "{}: {out:?}\n{}", self.target.who.label(), self.process.lines().join("\n"));
        took
    }

    /// Bytes written so far (lines with their newline), and of those the EMF metrics': a whole
    /// line for a document alone, the `_aws` block and the metric-only members (`Function`, the
    /// metric values) for a log line that is also a document (ours since issue 24).
    pub fn output_bytes(&self) -> (usize, usize) {
        let out = self.process.output.lock().unwrap();
        let total = out.iter().map(|l| l.len() + 1).sum();
        let emf = out.iter().map(|l| metric_bytes(l)).sum();
        (total, emf)
    }
}

fn metric_bytes(line: &str) -> usize {
    let Ok(serde_json::Value::Object(mut doc)) = serde_json::from_str::<serde_json::Value>(line) else { return 0 };
    let Some(aws) = doc.remove("_aws") else { return 0 };
    if !doc.contains_key("message") {
        return line.len() + 1;
    }
    let mut names: Vec<String> = vec!["Function".into()];
    for directive in aws["CloudWatchMetrics"].as_array().into_iter().flatten() {
        for metric in directive["Metrics"].as_array().into_iter().flatten() {
            names.extend(metric["Name"].as_str().map(str::to_owned));
        }
    }
    for name in names {
        doc.remove(&name);
    }
    line.len().saturating_sub(serde_json::Value::Object(doc).to_string().len())
}
