//! `make bench`, side by side: our receiver and the two peers of `benches/peers/` (Python with
//! Powertools + boto3, Node.js with Powertools + SDK v3) as processes under the same Runtime API
//! emulator, against the same moto, invoked in turn (round-robin, the order rotating each round),
//! plus a moto floor: the same PutItem + SendMessage + UpdateItem straight from an SDK client.
//!
//! Each run: cold starts, a warm pass, the same warm pass with every function's CPU capped to a
//! 128 MB Lambda's share after init (cgroup v1 quota), and a shorter pass at 256 MB's share.
//! Three runs (`BENCH_RUNS`), each figure reported as the median of the runs and their spread.
//! Writes its section of BENCHMARKS.md and `benches/results/receivers-cdf.svg`.

#[allow(unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;
#[allow(dead_code)]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::runtime_api::{FunctionProcess, RuntimeApi, binary, function_url_post};
use common::*;
use serde_json::{Value, json};
use stigg_webhooks::config::QueueUrl;
use support::{Requests, cpu_model, cpu_ns, keep_alive_front, median, percentile, prices, run, status_kb};

const SECRET: &str = "bench-secret-0123456789abcdef";
const WARM_UP: usize = 50;
/// CFS period of the caps. Lambda allocates CPU in proportion to memory, one full vCPU at
/// 1,769 MB (Lambda developer guide, "Configure Lambda function memory"): a function of M MB
/// gets M/1769 of a CPU, enforced here as a quota of that share of each period.
const PERIOD_US: u64 = 20_000;
const FULL_VCPU_MB: u64 = 1769;
const BEGIN: &str = "<!-- receivers: written by `make bench` (benches/receivers.rs) -->";
const END: &str = "<!-- /receivers -->";
const SVG: &str = "benches/results/receivers-cdf.svg";
/// What the cost model assumes AWS itself takes for the receiver's three calls (PutItem,
/// SendMessage, UpdateItem) and the processor's two (PutItem, UpdateItem): moto is far slower
/// than DynamoDB and SQS, so the measured floor is subtracted and this added back.
const AWS_RECEIVER_IO_MS: f64 = 15.0;
const AWS_PROCESSOR_IO_MS: f64 = 10.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Who {
    Ours,
    /// Another build of our receiver (`BENCH_BASELINE_DIR`), for A/B rows.
    Baseline,
    /// `examples/sdk-floor.rs`: a Rust Lambda on the same runtime and SDK set-up that makes the
    /// three calls and nothing else, to show what the SDK and the runtime cost before any of our
    /// code runs.
    SdkOnly,
    Python,
    Node,
    Floor,
}

const FUNCTIONS: [Who; 5] = [Who::Ours, Who::Baseline, Who::SdkOnly, Who::Python, Who::Node];
const PEERS: [Who; 2] = [Who::Python, Who::Node];
/// The receivers the cost model prices (the SDK-only function is no receiver).
const RECEIVERS: [Who; 4] = [Who::Ours, Who::Baseline, Who::Python, Who::Node];

impl Who {
    fn label(self) -> &'static str {
        match self {
            Who::Ours => "ours (Rust)",
            Who::Baseline => "ours, baseline build",
            Who::SdkOnly => "Rust, SDK calls only",
            Who::Python => "Python peer",
            Who::Node => "Node peer",
            Who::Floor => "moto floor",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Who::Ours => "rust",
            Who::Baseline => "base",
            Who::SdkOnly => "sdk",
            Who::Python => "py",
            Who::Node => "node",
            Who::Floor => "floor",
        }
    }
}

/// Where the receivers and the peers live on disk.
struct Code {
    receiver: PathBuf,
    processor: PathBuf,
    peers: PathBuf,
    baseline: Option<PathBuf>,
    /// The SDK-only function (`examples/sdk-floor.rs`), when built.
    sdk_only: Option<PathBuf>,
    /// `BENCH_PEERS=0` leaves the peers out (quick A/B runs of our own builds).
    with_peers: bool,
}

impl Code {
    /// Who takes part, in their order in a round.
    fn everyone(&self) -> Vec<Who> {
        let mut v = vec![Who::Ours];
        if self.baseline.is_some() {
            v.push(Who::Baseline);
        }
        if self.sdk_only.is_some() {
            v.push(Who::SdkOnly);
        }
        if self.with_peers {
            v.extend([Who::Python, Who::Node]);
        }
        v.push(Who::Floor);
        v
    }
}

impl Code {
    fn command(&self, who: Who) -> Command {
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
            Who::Floor => unreachable!("the floor is no process"),
        }
    }
}

/// One participant's own table, queue and counting front to moto.
struct Target {
    who: Who,
    table: String,
    queue: QueueUrl,
    front: String,
    requests: Requests,
}

impl Target {
    fn env(&self) -> Vec<(&'static str, String)> {
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
struct Floor {
    ddb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
}

impl Floor {
    async fn claim(&self, t: &Target, key: &str) -> bool {
        support::floor::claim(&self.ddb, &t.table, key).await.expect("floor PutItem")
    }

    async fn new_event(&self, t: &Target, key: &str, body: &str, event_type: &str) {
        assert!(self.claim(t, key).await, "floor key {key} was claimed before");
        support::floor::enqueue(&self.sqs, t.queue.as_str(), body, event_type, key).await.expect("floor SendMessage");
        self.mark(t, key).await;
    }

    async fn mark(&self, t: &Target, key: &str) {
        support::floor::mark(&self.ddb, &t.table, key).await.expect("floor UpdateItem");
    }
}

/// Creates each pass's tables and queues, and deletes the last pass's: moto slows down as its
/// tables and queues fill (the floor's p50 rose from 19 to 53 ms over two passes on shared
/// ones), so every pass starts empty, as the first did.
struct Admin {
    ddb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
}

impl Admin {
    async fn new() -> Self {
        let admin = admin_config_for(&endpoint()).await;
        Self { ddb: aws_sdk_dynamodb::Client::new(&admin), sqs: aws_sdk_sqs::Client::new(&admin) }
    }

    async fn fresh(&self, who: Who) -> (String, QueueUrl) {
        let table = unique(&format!("bench-{}", who.slug()));
        // Powertools reads `expires_at` for TTL; moto needs no TTL set for the bench.
        create_table(&self.ddb, &table).await;
        (table, create_queue(&self.sqs, &unique(&format!("bench-{}", who.slug())), false).await)
    }

    async fn renew(&self, targets: &mut [Target]) {
        for t in targets {
            let _ = self.ddb.delete_table().table_name(&t.table).send().await;
            let _ = self.sqs.delete_queue().queue_url(t.queue.as_str()).send().await;
            (t.table, t.queue) = self.fresh(t.who).await;
        }
    }
}

/// A cgroup v1 CPU group holding one process at `memory_mb`'s share of a CPU. Removed on drop
/// (after its process is gone: a group with tasks cannot be removed).
struct CpuCap {
    dir: PathBuf,
}

impl CpuCap {
    const ROOT: &'static str = "/sys/fs/cgroup/cpu";

    fn available() -> bool {
        Path::new(Self::ROOT).join("cgroup.procs").exists()
            && std::fs::create_dir_all(Path::new(Self::ROOT).join("stigg-bench-probe")).is_ok()
            && std::fs::remove_dir(Path::new(Self::ROOT).join("stigg-bench-probe")).is_ok()
    }

    fn new(name: &str, memory_mb: u64) -> Self {
        let dir = Path::new(Self::ROOT).join(format!("stigg-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the cgroup (root and cgroup v1 cpu needed)");
        std::fs::write(dir.join("cpu.cfs_period_us"), PERIOD_US.to_string()).unwrap();
        std::fs::write(dir.join("cpu.cfs_quota_us"), (PERIOD_US * memory_mb / FULL_VCPU_MB).to_string()).unwrap();
        Self { dir }
    }

    /// Moves the process (all its threads, and any it starts later) into the group.
    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    /// (periods, periods throttled, ns throttled) from `cpu.stat`.
    fn stat(&self) -> (u64, u64, u64) {
        let s = std::fs::read_to_string(self.dir.join("cpu.stat")).unwrap_or_default();
        let get = |k: &str| s.lines().find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse().ok())).unwrap_or(0);
        (get("nr_periods "), get("nr_throttled "), get("throttled_time "))
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // Anything left (the process should be dead by now) goes back to the root group first.
        if let Ok(pids) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in pids.split_whitespace() {
                let _ = std::fs::write(Path::new(Self::ROOT).join("cgroup.procs"), pid);
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

fn stigg_event(template: &Value, id: &str) -> String {
    let mut e = template.clone();
    e["messageId"] = json!(id);
    e.to_string()
}

async fn wait_first_poll(api: &RuntimeApi, who: Who, p: &FunctionProcess) -> Instant {
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
struct Live<'a> {
    target: &'a Target,
    api: RuntimeApi,
    process: FunctionProcess,
}

impl<'a> Live<'a> {
    async fn start(code: &Code, target: &'a Target) -> (Self, Duration) {
        let api = RuntimeApi::start(Duration::from_secs(60)).await;
        let process = FunctionProcess::spawn_command(code.command(target.who), "receiver", &api, &target.env());
        let polled = wait_first_poll(&api, target.who, &process).await;
        let init = polled - process.started;
        (Self { target, api, process }, init)
    }

    /// One delivery; panics on an answer that is not the expected one (a bench that measured
    /// errors would be measuring nothing).
    async fn deliver(&self, body: &str, new: bool) -> Duration {
        let t = Instant::now();
        let out = self.api.invoke(&function_url_post(SECRET, body), Duration::from_secs(60)).await;
        let took = t.elapsed();
        let status = out.as_ref().ok().and_then(|o| o["statusCode"].as_u64());
        let ok = if new { status == Some(202) } else { status.is_some_and(|s| (200..300).contains(&s)) };
        assert!(ok, "{}: {out:?}\n{}", self.target.who.label(), self.process.lines().join("\n"));
        took
    }

    /// Bytes written so far (lines with their newline), and of those the EMF documents'.
    fn output_bytes(&self) -> (usize, usize) {
        let out = self.process.output.lock().unwrap();
        let bytes = |emf: bool| out.iter().filter(|l| !emf || l.starts_with("{\"_aws\"")).map(|l| l.len() + 1).sum();
        (bytes(false), bytes(true))
    }
}

#[derive(Default, Clone)]
struct Phase {
    lat: Vec<Duration>,
    cpu_ns: f64,
    requests: BTreeMap<String, usize>,
    log_bytes: f64,
    /// Of `log_bytes`, the EMF metric documents.
    emf_bytes: f64,
}

impl Phase {
    fn p(&self, q: f64) -> Duration {
        let mut v = self.lat.clone();
        v.sort();
        percentile(&v, q)
    }
    fn mean_ms(&self) -> f64 {
        self.lat.iter().map(|d| d.as_secs_f64() * 1e3).sum::<f64>() / self.lat.len() as f64
    }
    /// Lambda bills each invocation's duration rounded up to the millisecond.
    fn billed_ms(&self, minus_ms: f64, plus_ms: f64) -> f64 {
        self.lat.iter().map(|d| (d.as_secs_f64() * 1e3 - minus_ms + plus_ms).max(1.0).ceil()).sum::<f64>()
            / self.lat.len() as f64
    }
}

#[derive(Default, Clone)]
struct Pass {
    new: Phase,
    dup: Phase,
    rss_kb: u64,
    /// Fraction of CFS periods in which the capped function was throttled.
    throttled: Option<f64>,
}

fn per_event(before: u64, after: u64, n: usize) -> f64 {
    (after - before) as f64 / n as f64
}

/// What a warm pass delivers: `n` new events (and again as late duplicates), ids tagged `tag`,
/// at `cap_mb`'s CPU share after init, or uncapped.
struct PassSpec<'a> {
    tag: &'a str,
    n: usize,
    duplicates: bool,
    cap_mb: Option<u64>,
}

/// A warm pass: each function started fresh, warmed up, then (if `cap_mb`) capped, then `n` new
/// events and (if `duplicates`) the same `n` again as late duplicates, all participants in turn.
async fn warm_pass(
    code: &Code,
    admin: &Admin,
    targets: &mut [Target],
    floor: &Floor,
    template: &Value,
    spec: PassSpec<'_>,
) -> BTreeMap<Who, Pass> {
    let PassSpec { tag, n, duplicates, cap_mb } = spec;
    // Every pass starts on empty tables and queues (see `Admin`).
    admin.renew(targets).await;
    let targets = &*targets;
    let mut live = Vec::new();
    for t in targets.iter().filter(|t| t.who != Who::Floor) {
        live.push(Live::start(code, t).await.0);
    }
    let floor_target = targets.iter().find(|t| t.who == Who::Floor).unwrap();
    let body = |who: Who, i: usize| stigg_event(template, &format!("{tag}-{}-{i}", who.slug()));
    for i in 0..WARM_UP {
        for l in &live {
            l.deliver(&body(l.target.who, usize::MAX - i), true).await;
        }
    }
    let caps: Vec<Option<CpuCap>> = live
        .iter()
        .map(|l| {
            cap_mb.map(|mb| {
                let c = CpuCap::new(&format!("{}-{tag}", l.target.who.slug()), mb);
                c.add(l.process.pid());
                c
            })
        })
        .collect();
    let cap_stat0: Vec<_> = caps.iter().map(|c| c.as_ref().map(CpuCap::stat)).collect();
    let everyone: Vec<Who> = targets.iter().map(|t| t.who).collect();
    let mut out: BTreeMap<Who, Pass> = everyone.iter().map(|w| (*w, Pass::default())).collect();
    let phases: &[bool] = if duplicates { &[true, false] } else { &[true] };
    for &new in phases {
        let cpu0: Vec<u64> = live.iter().map(|l| cpu_ns(l.process.pid())).collect();
        let req0: Vec<_> = targets.iter().map(|t| t.requests.snapshot()).collect();
        let log0: Vec<_> = live.iter().map(Live::output_bytes).collect();
        for i in 0..n {
            // Rotate who goes first, so no one always follows the same neighbour.
            for k in 0..everyone.len() {
                let who = everyone[(i + k) % everyone.len()];
                let took = if who == Who::Floor {
                    let key = format!("{tag}-floor-{i}");
                    let t = Instant::now();
                    if new {
                        floor.new_event(floor_target, &key, &body(who, i), "subscription.created").await;
                    } else {
                        assert!(!floor.claim(floor_target, &key).await, "floor duplicate {key} was new");
                    }
                    t.elapsed()
                } else {
                    let l = live.iter().find(|l| l.target.who == who).unwrap();
                    l.deliver(&body(who, i), new).await
                };
                let p = out.get_mut(&who).unwrap();
                if new { &mut p.new } else { &mut p.dup }.lat.push(took);
            }
        }
        for (j, l) in live.iter().enumerate() {
            let p = out.get_mut(&l.target.who).unwrap();
            let phase = if new { &mut p.new } else { &mut p.dup };
            phase.cpu_ns = per_event(cpu0[j], cpu_ns(l.process.pid()), n);
            let (bytes, emf) = l.output_bytes();
            phase.log_bytes = (bytes - log0[j].0) as f64 / n as f64;
            phase.emf_bytes = (emf - log0[j].1) as f64 / n as f64;
        }
        for (j, t) in targets.iter().enumerate() {
            let p = out.get_mut(&t.who).unwrap();
            if new { &mut p.new } else { &mut p.dup }.requests = t.requests.since(&req0[j]);
        }
    }
    for (j, l) in live.iter().enumerate() {
        let p = out.get_mut(&l.target.who).unwrap();
        p.rss_kb = status_kb(l.process.pid(), "VmHWM:");
        if let (Some(c), Some((p0, t0, _))) = (&caps[j], cap_stat0[j]) {
            let (p1, t1, _) = c.stat();
            p.throttled = Some((t1 - t0) as f64 / (p1 - p0).max(1) as f64);
        }
    }
    if std::env::var_os("BENCH_SHOW_OUTPUT").is_some() {
        for l in &live {
            let lines = l.process.lines();
            eprintln!("{}: last lines\n{}", l.target.who.label(), lines[lines.len().saturating_sub(4)..].join("\n"));
        }
    }
    drop(live); // kills the processes, then the groups can go
    drop(caps);
    out
}

#[derive(Default, Clone)]
struct Cold {
    init: Vec<Duration>,
    first: Vec<Duration>,
}

/// Cold starts in turn: spawn → first `GET /next`, then the first invocation (a new event).
async fn cold_starts(code: &Code, targets: &[Target], template: &Value, tag: &str, n: usize) -> BTreeMap<Who, Cold> {
    let mut out: BTreeMap<Who, Cold> = BTreeMap::new();
    for i in 0..=n {
        for t in targets.iter().filter(|t| t.who != Who::Floor) {
            let (live, init) = Live::start(code, t).await;
            let first = live.deliver(&stigg_event(template, &format!("{tag}-cold-{}-{i}", t.who.slug())), true).await;
            drop(live);
            if i > 0 {
                // Start 0 of each only warms the page cache.
                let c = out.entry(t.who).or_default();
                c.init.push(init);
                c.first.push(first);
            }
        }
    }
    out
}

/// Our processor at a 128 MB share, one record per invocation (a trickle of webhooks, the
/// costliest case), for the cost model: its billed duration, writes and log bytes per event.
async fn processor_pass(code: &Code, target: &Target, floor: &Floor, template: &Value, n: usize) -> (Phase, Phase) {
    let api = RuntimeApi::start(Duration::from_secs(60)).await;
    let admin = aws_sdk_sqs::Client::new(&admin_config_for(&endpoint()).await);
    let dlq = create_queue(&admin, &unique("bench-dlq"), false).await;
    let env = vec![
        ("IDEMPOTENCY_TABLE", target.table.clone()),
        ("DEAD_LETTER_QUEUE_URL", dlq.as_str().to_owned()),
        ("AWS_ENDPOINT_URL", target.front.clone()),
        ("AWS_LAMBDA_LOG_LEVEL", "INFO".to_owned()),
    ];
    let process = FunctionProcess::spawn(&code.processor, &api, &env);
    wait_first_poll(&api, Who::Ours, &process).await;
    let record = |key: &str| {
        json!({"Records": [{"messageId": uuid::Uuid::new_v4().to_string(), "receiptHandle": "rh",
            "body": stigg_event(template, key), "attributes": {},
            "messageAttributes": {"idempotency_key": {"stringValue": key, "dataType": "String"}},
            "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events"}]})
    };
    for i in 0..WARM_UP {
        api.invoke(&record(&format!("proc-warm-{i}")), Duration::from_secs(60)).await.unwrap();
    }
    let cap = CpuCap::available().then(|| {
        let c = CpuCap::new("processor", 128);
        c.add(process.pid());
        c
    });
    let (mut phase, mut floor_phase) = (Phase::default(), Phase::default());
    let cpu0 = cpu_ns(process.pid());
    let req0 = target.requests.snapshot();
    let bytes0: usize = process.lines().iter().map(|l| l.len() + 1).sum();
    for i in 0..n {
        let key = format!("proc-{i}");
        let t = Instant::now();
        let out = api.invoke(&record(&key), Duration::from_secs(60)).await.unwrap();
        phase.lat.push(t.elapsed());
        assert_eq!(out["batchItemFailures"], json!([]), "{out}");
        // The processor's floor: its claim and its completion mark, straight from a client.
        let t = Instant::now();
        let fk = format!("proc-floor-{i}");
        assert!(floor.claim(target, &fk).await);
        floor.mark(target, &fk).await;
        floor_phase.lat.push(t.elapsed());
    }
    phase.cpu_ns = per_event(cpu0, cpu_ns(process.pid()), n);
    phase.requests = target.requests.since(&req0);
    phase.log_bytes = (process.lines().iter().map(|l| l.len() + 1).sum::<usize>() - bytes0) as f64 / n as f64;
    drop(process);
    drop(cap);
    (phase, floor_phase)
}

/// One of a run's passes, if it was measured.
type Pick = fn(&RunResult) -> Option<&BTreeMap<Who, Pass>>;

struct RunResult {
    cold: BTreeMap<Who, Cold>,
    warm: BTreeMap<Who, Pass>,
    capped: Option<BTreeMap<Who, Pass>>,
    capped256: Option<BTreeMap<Who, Pass>>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks harness-less benches for their names.
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = std::env::var_os("BENCH_BIN_DIR").map(PathBuf::from);
    let bin = |name: &str| bin_dir.as_ref().map(|d| d.join(name)).unwrap_or_else(|| binary(name));
    let code = Code {
        receiver: bin("receiver"),
        processor: bin("processor"),
        peers: std::env::var_os("BENCH_PEERS_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("benches/peers")),
        baseline: std::env::var_os("BENCH_BASELINE_DIR").map(PathBuf::from),
        sdk_only: Some(bin_dir.as_ref().map_or_else(|| binary("examples/sdk-floor"), |d| d.join("sdk-floor")))
            .filter(|p| p.exists()),
        with_peers: std::env::var("BENCH_PEERS").map_or(true, |v| v != "0"),
    };
    for (what, p) in [
        ("receiver (run `make bench`: it builds it)", code.receiver.clone()),
        ("processor", code.processor.clone()),
        ("Python peer's venv (run `make bench-peers`)", code.peers.join("python/.venv/bin/python")),
        ("Node peer's node_modules (run `make bench-peers`)", code.peers.join("node/node_modules")),
    ]
    .into_iter()
    .filter(|(what, _)| code.with_peers || !what.contains("peer"))
    {
        assert!(p.exists(), "{what}: {} missing", p.display());
    }
    if code.sdk_only.is_none() {
        eprintln!("the sdk-floor example is not built (`make bench` builds it): the SDK-only row is left out");
    }
    let runs = env_usize("BENCH_RUNS", 3);
    let events = env_usize("BENCH_EVENTS", 1000);
    let events256 = env_usize("BENCH_EVENTS_256", 300);
    let cold_n = env_usize("BENCH_COLD_STARTS", 20);
    // `BENCH_CAP=0` skips the capped passes (quick runs, profiles under valgrind).
    let can_cap = CpuCap::available() && std::env::var("BENCH_CAP").map_or(true, |v| v != "0");
    if !can_cap {
        eprintln!("no writable cgroup v1 cpu controller (needs root): the capped passes are skipped");
    }
    let template: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("events/stigg/subscription.created.json")).unwrap())
            .unwrap();

    let admin = Admin::new().await;
    let mut targets = Vec::new();
    for who in code.everyone() {
        let (table, queue) = admin.fresh(who).await;
        let (front, requests) = keep_alive_front(endpoint()).await;
        targets.push(Target { who, table, queue, front, requests });
    }
    let floor_front = &targets.iter().find(|t| t.who == Who::Floor).unwrap().front;
    let floor_config = sdk_config_for(floor_front).await;
    let floor =
        Floor { ddb: aws_sdk_dynamodb::Client::new(&floor_config), sqs: aws_sdk_sqs::Client::new(&floor_config) };

    let started = Instant::now();
    let mut results = Vec::new();
    for r in 1..=runs {
        let tag = format!("r{r}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
        eprintln!("run {r}/{runs}: {cold_n} cold starts each ({:.0} s so far)", started.elapsed().as_secs_f64());
        let cold = cold_starts(&code, &targets, &template, &tag, cold_n).await;
        eprintln!("run {r}/{runs}: warm, {events} new events + {events} late duplicates each");
        let (warm_tag, capped_tag, capped256_tag) = (format!("{tag}-w"), format!("{tag}-c"), format!("{tag}-c256"));
        let pass =
            async |targets: &mut Vec<Target>, spec| warm_pass(&code, &admin, targets, &floor, &template, spec).await;
        let warm = pass(&mut targets, PassSpec { tag: &warm_tag, n: events, duplicates: true, cap_mb: None }).await;
        let (mut capped, mut capped256) = (None, None);
        if can_cap {
            eprintln!("run {r}/{runs}: the same, capped to a 128 MB Lambda's CPU share");
            let spec = PassSpec { tag: &capped_tag, n: events, duplicates: true, cap_mb: Some(128) };
            capped = Some(pass(&mut targets, spec).await);
            eprintln!("run {r}/{runs}: {events256} new events each at a 256 MB Lambda's CPU share");
            let spec = PassSpec { tag: &capped256_tag, n: events256, duplicates: false, cap_mb: Some(256) };
            capped256 = Some(pass(&mut targets, spec).await);
        }
        results.push(RunResult { cold, warm, capped, capped256 });
    }
    eprintln!("our processor at 128 MB's share, for the cost model");
    let processor = if can_cap {
        admin.renew(&mut targets).await;
        Some(processor_pass(&code, &targets[0], &floor, &template, events256).await)
    } else {
        None
    };
    let elapsed = started.elapsed();

    let svg_path = root.join(SVG);
    std::fs::create_dir_all(svg_path.parent().unwrap()).unwrap();
    plot::cdf(&svg_path, &results).expect("render the CDF");

    let section = render(&code, &results, processor.as_ref(), events, events256, cold_n, elapsed);
    let path = std::env::var_os("BENCH_REPORT").map(PathBuf::from).unwrap_or_else(|| root.join("BENCHMARKS.md"));
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let doc = support::splice_section(&doc, BEGIN, END, &section, "<!-- analysis: kept across `make bench` runs -->");
    std::fs::write(&path, doc).unwrap();
    println!("{section}");
}

mod plot {
    use super::*;
    use plotters::prelude::*;

    fn colour(who: Who) -> RGBColor {
        match who {
            Who::Ours => RGBColor(0xd9, 0x5f, 0x02),
            Who::Baseline => RGBColor(0x99, 0x44, 0x99),
            Who::SdkOnly => RGBColor(0xe7, 0x29, 0x8a),
            Who::Python => RGBColor(0x1f, 0x77, 0xb4),
            Who::Node => RGBColor(0x2c, 0xa0, 0x2c),
            Who::Floor => RGBColor(0x55, 0x55, 0x55),
        }
    }

    /// Latency CDFs of every participant, all runs pooled: warm and capped, new events and late
    /// duplicates, on a log time axis (the receivers differ by multiples, not milliseconds).
    pub fn cdf(path: &Path, results: &[RunResult]) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1200, 860)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(
            "Stigg webhook receivers: latency per delivery (CDF, all runs), same moto, same Runtime API emulator",
            ("sans-serif", 20),
        )?;
        let panels = root.split_evenly((2, 2));
        let passes: [(&str, Pick, bool); 4] = [
            ("warm, uncapped: new events", |r| Some(&r.warm), true),
            ("warm, uncapped: late duplicates", |r| Some(&r.warm), false),
            ("CPU capped to a 128 MB Lambda's share: new events", |r| r.capped.as_ref(), true),
            ("CPU capped to a 128 MB Lambda's share: late duplicates", |r| r.capped.as_ref(), false),
        ];
        for (area, (title, pick, new)) in panels.iter().zip(passes) {
            let mut series: Vec<(Who, Vec<f64>)> = Vec::new();
            for who in FUNCTIONS.into_iter().chain([Who::Floor]) {
                let mut v: Vec<f64> = results
                    .iter()
                    .filter_map(pick)
                    .filter_map(|p| p.get(&who))
                    .flat_map(|p| if new { &p.new } else { &p.dup }.lat.iter().map(|d| d.as_secs_f64() * 1e3))
                    .collect();
                if v.is_empty() {
                    continue;
                }
                v.sort_by(|a, b| a.total_cmp(b));
                series.push((who, v));
            }
            if series.is_empty() {
                area.draw(&Text::new(format!("{title}: not measured"), (20, 40), ("sans-serif", 16)))?;
                continue;
            }
            let lo = series.iter().map(|(_, v)| v[0]).fold(f64::MAX, f64::min).max(0.1) * 0.8;
            // The top 0.5 % is cut off the axis so one stall does not squash the rest.
            let hi = series.iter().map(|(_, v)| v[(v.len() * 995 / 1000).min(v.len() - 1)]).fold(0.0, f64::max) * 1.2;
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(44)
                .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)?;
            chart
                .configure_mesh()
                .x_desc("latency, ms (log scale)")
                .y_desc("fraction of deliveries")
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| format!("{v:.1}"))
                .draw()?;
            for (who, v) in &series {
                let n = v.len() as f64;
                let step = (v.len() / 400).max(1);
                let points: Vec<(f64, f64)> = v
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % step == 0 || *i == v.len() - 1)
                    .map(|(i, x)| (x.clamp(lo, hi), (i + 1) as f64 / n))
                    .collect();
                let c = colour(*who);
                chart
                    .draw_series(LineSeries::new(points, c.stroke_width(2)))?
                    .label(format!("{} (p50 {:.1} ms)", who.label(), v[v.len() / 2]))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    }
}

/// A figure over the runs: the median of the runs' values and their range.
fn spread(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => "—".into(),
        1 => fmt(v[0]),
        _ => format!("{} ({}–{})", fmt(v[v.len() / 2]), fmt(v[0]), fmt(v[v.len() - 1])),
    }
}

fn f_ms(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0} ms") } else { format!("{v:.1} ms") }
}
fn f_us(v: f64) -> String {
    format!("{v:.0} µs")
}
fn f_mib(v: f64) -> String {
    format!("{v:.1} MiB")
}
fn f_x(v: f64) -> String {
    format!("{v:.1}×")
}
fn f_pct(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

fn render(
    code: &Code,
    results: &[RunResult],
    processor: Option<&(Phase, Phase)>,
    events: usize,
    events256: usize,
    cold_n: usize,
    elapsed: Duration,
) -> String {
    let ok = |pass: bool| if pass { "✅" } else { "❌" };
    let everyone = code.everyone();
    let others: Vec<Who> = everyone.iter().copied().filter(|w| ![Who::Ours, Who::Floor].contains(w)).collect();
    let peers: Vec<Who> = everyone.iter().copied().filter(|w| PEERS.contains(w)).collect();
    let d = |v: Duration| v.as_secs_f64() * 1e3;
    // A figure of one participant in every run.
    let each = |who: Who, f: &dyn Fn(&RunResult, Who) -> Option<f64>| -> Vec<f64> {
        results.iter().filter_map(|r| f(r, who)).collect()
    };
    let cold_init = |r: &RunResult, w: Who| r.cold.get(&w).map(|c| d(median(c.init.clone())));
    let cold_first = |r: &RunResult, w: Who| r.cold.get(&w).map(|c| d(median(c.first.clone())));
    let warm = |q: f64, new: bool| {
        move |r: &RunResult, w: Who| r.warm.get(&w).map(|p| d(if new { &p.new } else { &p.dup }.p(q)))
    };
    let capped = |q: f64, new: bool| {
        move |r: &RunResult, w: Who| r.capped.as_ref()?.get(&w).map(|p| d(if new { &p.new } else { &p.dup }.p(q)))
    };
    let capped256 = |q: f64| move |r: &RunResult, w: Who| r.capped256.as_ref()?.get(&w).map(|p| d(p.new.p(q)));
    let cpu =
        |new: bool| move |r: &RunResult, w: Who| r.warm.get(&w).map(|p| if new { &p.new } else { &p.dup }.cpu_ns / 1e3);
    let cpu_capped = |new: bool| {
        move |r: &RunResult, w: Who| r.capped.as_ref()?.get(&w).map(|p| if new { &p.new } else { &p.dup }.cpu_ns / 1e3)
    };
    let rss = |r: &RunResult, w: Who| {
        [Some(&r.warm), r.capped.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|p| p.get(&w))
            .map(|p| p.rss_kb as f64 / 1024.0)
            .reduce(f64::max)
    };
    let throttled = |r: &RunResult, w: Who| r.capped.as_ref()?.get(&w)?.throttled;
    let log_bytes = |r: &RunResult, w: Who| r.warm.get(&w).map(|p| p.new.log_bytes);
    let emf_bytes = |r: &RunResult, w: Who| r.warm.get(&w).map(|p| p.new.emf_bytes);

    let mut s = String::new();
    let _ = writeln!(s, "## Side by side with the peers\n");
    let _ = writeln!(
        s,
        "Written by `make bench` (`benches/receivers.rs`) in {:.0} min. Our receiver and the peers of `benches/peers/` \
         (the receiver as a typical AWS user writes it: Python {} with Powertools idempotency + boto3, Node.js {} with \
         Powertools for TypeScript + SDK v3), each a process under the same Runtime API emulator, against the same moto \
         through the same kind of keep-alive front, invoked in turn: every round delivers one event to each, the order \
         rotating, plus the **moto floor** (the same conditional PutItem, SendMessage and UpdateItem straight from an SDK \
         client in the bench process, uncapped; for a late duplicate, the one refused PutItem).\n",
        elapsed.as_secs_f64() / 60.0,
        run(
            &code.peers.join("python/.venv/bin/python").to_string_lossy(),
            &["-c", "import platform; print(platform.python_version())"]
        ),
        run("node", &["--version"]),
    );
    if everyone.contains(&Who::SdkOnly) {
        let _ = writeln!(
            s,
            "**Rust, SDK calls only** is `examples/sdk-floor.rs`: a function on the same Lambda runtime and SDK set-up as \
             ours (one thread, the same HTTP client, timeouts and retries) that makes the floor's three calls per event and \
             nothing else: no secret check, no validation, no logs, no metrics, no `lambda_http`. Its CPU is what the \
             runtime and the SDK cost before any receiver code runs, so a peer's figure over its figure is the most any \
             receiver on this SDK can reach.\n"
        );
    }
    let _ = writeln!(
        s,
        "- Machine: {}, {} cores, Linux {}; {} runs. Each run: {cold_n} cold starts each (after one discarded), then a warm \
         pass of {events} new events and {events} late duplicates each (after {WARM_UP} warm-up events), then the same \
         pass with each function's CPU capped after init to a 128 MB Lambda's share (cgroup v1: {}/{PERIOD_US} µs, \
         128/{FULL_VCPU_MB} of a CPU), then {events256} new events at 256 MB's share ({}/{PERIOD_US} µs).",
        cpu_model(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        run("uname", &["-r"]),
        results.len(),
        PERIOD_US * 128 / FULL_VCPU_MB,
        PERIOD_US * 256 / FULL_VCPU_MB,
    );
    let _ = writeln!(
        s,
        "- CPU is the function process's own, all threads (`/proc/<pid>/task/*/schedstat`), over the pass, divided by its \
         events: a runtime's background work (GC, timers) counts. Each figure is the median of the runs, with the range \
         of the runs in brackets; a ratio is the peer's figure over ours in the same run.\n"
    );

    // Targets, run by run.
    let ratio_to = |f: &dyn Fn(&RunResult, Who) -> Option<f64>, peer: Who, base: Who| -> Vec<f64> {
        results.iter().filter_map(|r| Some(f(r, peer)? / f(r, base)?)).collect()
    };
    let ratio_runs = |f: &dyn Fn(&RunResult, Who) -> Option<f64>, peer: Who| ratio_to(f, peer, Who::Ours);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let list = |v: &[f64], fmt: &dyn Fn(f64) -> String| v.iter().map(|x| fmt(*x)).collect::<Vec<_>>().join(", ");
    // Two decimals where a ratio is held against 5×: 4.96× is not "5.0×".
    let x2 = |x: f64| format!("{x:.2}×");
    let _ = writeln!(s, "### Against the targets (every run)\n");
    let _ = writeln!(s, "| target | run by run | |");
    let _ = writeln!(s, "|---|---|---|");
    // Ours against the target, then, for reference, what no receiver on this runtime and SDK can
    // beat: the same ratio for the function that makes the three calls and nothing else.
    let bases = [Some(Who::Ours), everyone.contains(&Who::SdkOnly).then_some(Who::SdkOnly)];
    for base in bases.into_iter().flatten() {
        for (what, new) in [("accepted event", true), ("late duplicate", false)] {
            for peer in peers.iter().copied() {
                let r = ratio_to(&cpu(new), peer, base);
                let five = !r.is_empty() && min(&r) >= 5.0;
                let (target, verdict) = if base == Who::Ours {
                    (format!("CPU per {what}: ours ≥ 5× below the {}", peer.label()), ok(five))
                } else {
                    let target = format!(
                        "for reference, CPU per {what}: the {} ÷ the Rust function that only makes the SDK calls",
                        peer.label()
                    );
                    (target, if five { "≥ 5×" } else { "< 5×" })
                };
                let _ = writeln!(s, "| {target} | {} | {verdict} |", list(&r, &x2));
            }
        }
    }
    let floor_ratio = |q: f64, limit: f64| -> (Vec<f64>, bool) {
        let v: Vec<f64> = results
            .iter()
            .filter_map(|r| Some(capped(q, true)(r, Who::Ours)? / capped(q, true)(r, Who::Floor)?))
            .collect();
        let pass = !v.is_empty() && max(&v) <= limit;
        (v, pass)
    };
    for (q, name, limit) in [(0.5, "p50", 1.3), (0.99, "p99", 2.0)] {
        let (v, pass) = floor_ratio(q, limit);
        let _ = writeln!(
            s,
            "| new event at 128 MB's share: our warm {name} within {limit}× of the moto floor's {name} | {} | {} |",
            if v.is_empty() {
                "not measured (needs root and cgroup v1)".into()
            } else {
                list(&v, &|x| format!("{x:.2}×"))
            },
            ok(pass)
        );
    }
    let init = each(Who::Ours, &cold_init);
    let _ = writeln!(s, "| our cold init (median) ≤ 10 ms | {} | {} |", list(&init, &f_ms), ok(max(&init) <= 10.0));
    let r = each(Who::Ours, &rss);
    let _ = writeln!(s, "| our peak RSS ≤ 12 MiB | {} | {} |", list(&r, &f_mib), ok(max(&r) <= 12.0));
    let size = std::fs::metadata(&code.receiver).map(|m| m.len()).unwrap_or(u64::MAX);
    let _ = writeln!(
        s,
        "| our stripped receiver ≤ 8 MB (x86_64, the binary measured) | {:.2} MB | {} |\n",
        size as f64 / 1e6,
        ok(size <= 8_000_000)
    );

    // Every figure, every participant.
    let _ = writeln!(s, "### All figures\n");
    let _ = writeln!(
        s,
        "| figure | {} | {} |",
        everyone.iter().map(|w| w.label()).collect::<Vec<_>>().join(" | "),
        others.iter().map(|w| format!("{} ÷ ours", w.label())).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "|---|{}", "---|".repeat(everyone.len() + others.len()));
    let row = |s: &mut String, name: &str, f: &dyn Fn(&RunResult, Who) -> Option<f64>, fmt: &dyn Fn(f64) -> String| {
        let cell = |w: Who| {
            let v = each(w, f);
            if v.is_empty() { "—".to_owned() } else { spread(&v, fmt) }
        };
        let ratio = |w: Who| {
            let v = ratio_runs(f, w);
            if v.is_empty() { "—".to_owned() } else { spread(&v, f_x) }
        };
        let cells: Vec<String> = everyone.iter().map(|w| cell(*w)).chain(others.iter().map(|w| ratio(*w))).collect();
        let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
    };
    row(&mut s, "cold init (spawn → first `GET /next`), median", &cold_init, &f_ms);
    row(&mut s, "first invocation after a cold start, median", &cold_first, &f_ms);
    row(&mut s, "warm p50, new event", &warm(0.5, true), &f_ms);
    row(&mut s, "warm p99, new event", &warm(0.99, true), &f_ms);
    row(&mut s, "warm p50, late duplicate", &warm(0.5, false), &f_ms);
    row(&mut s, "warm p99, late duplicate", &warm(0.99, false), &f_ms);
    row(&mut s, "**CPU per accepted event**", &cpu(true), &f_us);
    row(&mut s, "**CPU per late duplicate**", &cpu(false), &f_us);
    row(&mut s, "peak RSS (VmHWM)", &rss, &f_mib);
    row(&mut s, "log bytes per accepted event", &log_bytes, &|v| format!("{v:.0} B"));
    row(&mut s, "of which EMF metrics", &emf_bytes, &|v| format!("{v:.0} B"));
    row(&mut s, "**128 MB share: p50, new event**", &capped(0.5, true), &f_ms);
    row(&mut s, "128 MB share: p99, new event", &capped(0.99, true), &f_ms);
    row(&mut s, "128 MB share: p50, late duplicate", &capped(0.5, false), &f_ms);
    row(&mut s, "128 MB share: p99, late duplicate", &capped(0.99, false), &f_ms);
    row(&mut s, "128 MB share: CPU per accepted event", &cpu_capped(true), &f_us);
    row(&mut s, "128 MB share: periods throttled", &throttled, &f_pct);
    row(&mut s, "256 MB share: p50, new event", &capped256(0.5), &f_ms);
    row(&mut s, "256 MB share: p99, new event", &capped256(0.99), &f_ms);
    let reqs = |who: Who, new: bool| {
        results
            .first()
            .and_then(|r| r.warm.get(&who))
            .map(|p| {
                let ph = if new { &p.new } else { &p.dup };
                ph.requests
                    .iter()
                    .map(|(op, n)| format!("{op} ×{:.2}", *n as f64 / events as f64))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    for (name, new) in [("requests to moto per new event", true), ("requests to moto per late duplicate", false)] {
        let cells: Vec<String> = everyone.iter().map(|w| reqs(*w, new)).collect();
        let _ = writeln!(s, "| {name} | {} |{}", cells.join(" | "), " |".repeat(others.len()));
    }
    let _ = writeln!(
        s,
        "\nRequests are counted by each participant's front to moto, by `X-Amz-Target`, whatever the client's language. \
         Latency is per delivery as the emulator sees it (invocation queued → response posted) and includes moto, which \
         is far slower than DynamoDB and SQS: compare it with the floor, not with AWS.\n"
    );
    let _ = writeln!(s, "![Latency CDFs of the three receivers and the moto floor, uncapped and capped]({SVG})\n");

    // Cost model.
    let _ = writeln!(s, "### Cost per million webhooks, from these measurements\n");
    let _ = writeln!(
        s,
        "Each webhook a new event: the receiver, then our processor (the peers come without one, so the processor's \
         share is ours in every column), arm64. Billed duration per invocation = the capped run's latency, minus the moto \
         floor's mean (moto is slower than AWS), plus what AWS takes for the same calls ({AWS_RECEIVER_IO_MS:.0} ms for \
         the receiver's three, {AWS_PROCESSOR_IO_MS:.0} ms for the processor's two: an assumption, no AWS here), rounded \
         up to the ms per invocation as Lambda bills. Requests and log bytes as measured. Prices: {}.\n",
        prices::CHECKED
    );
    let pooled = |pick: Pick, who: Who| -> Option<Phase> {
        let mut out = Phase::default();
        for p in results.iter().filter_map(pick).filter_map(|m| m.get(&who)) {
            out.lat.extend(&p.new.lat);
        }
        (!out.lat.is_empty()).then_some(out)
    };
    let floor_mean = |pick: Pick| pooled(pick, Who::Floor).map(|p| p.mean_ms());
    let c128: Pick = |r| r.capped.as_ref();
    let c256: Pick = |r| r.capped256.as_ref();
    let billed =
        |pick, who| -> Option<f64> { Some(pooled(pick, who)?.billed_ms(floor_mean(pick)?, AWS_RECEIVER_IO_MS)) };
    let gb_s = |ms: f64, mb: f64| ms / 1e3 * mb / 1024.0 * prices::LAMBDA_ARM_GB_S * 1e6;
    match processor {
        None => {
            let _ = writeln!(s, "Not computed: the capped runs need root and a cgroup v1 cpu controller.\n");
        }
        Some((proc_phase, proc_floor)) => {
            let proc_billed = proc_phase.billed_ms(proc_floor.mean_ms(), AWS_PROCESSOR_IO_MS);
            let writes = |m: &BTreeMap<String, usize>, n: usize| {
                m.iter()
                    .filter(|(op, _)| ["PutItem", "UpdateItem", "DeleteItem"].contains(&op.as_str()))
                    .map(|(_, c)| *c)
                    .sum::<usize>() as f64
                    / n as f64
            };
            let sends = |m: &BTreeMap<String, usize>, n: usize| {
                m.iter().filter(|(op, _)| op.starts_with("SendMessage")).map(|(_, c)| *c).sum::<usize>() as f64
                    / n as f64
            };
            let proc_writes = writes(&proc_phase.requests, proc_phase.lat.len());
            let sqs_esm = 2.0; // the event source mapping's receive + delete, batches of 1 at a trickle
            let _ = writeln!(s, "| per million webhooks, USD | ours (Rust) | Python peer | Node peer |");
            let _ = writeln!(s, "|---|---|---|---|");
            let mut totals = BTreeMap::new();
            let mut lines: Vec<(String, Vec<String>)> = Vec::new();
            for who in RECEIVERS {
                let w = results.first().and_then(|r| r.warm.get(&who));
                let Some(w) = w else { continue };
                let rb = billed(c128, who).unwrap_or(f64::NAN);
                let items = [
                    (
                        "Lambda requests (receiver + processor)",
                        2.0 * prices::LAMBDA_REQUEST * 1e6,
                        "2 × $0.20/M".to_owned(),
                    ),
                    ("receiver duration, 128 MB", gb_s(rb, 128.0), format!("{rb:.1} ms billed")),
                    (
                        "processor duration, 128 MB (ours)",
                        gb_s(proc_billed, 128.0),
                        format!("{proc_billed:.1} ms billed"),
                    ),
                    (
                        "DynamoDB writes",
                        (writes(&w.new.requests, events) + proc_writes) * prices::DDB_WRU * 1e6,
                        format!("{:.1} + {proc_writes:.1} WRU", writes(&w.new.requests, events)),
                    ),
                    (
                        "SQS requests",
                        (sends(&w.new.requests, events) + sqs_esm) * prices::SQS_REQUEST * 1e6,
                        format!("{:.1} send + {sqs_esm:.0} receive/delete", sends(&w.new.requests, events)),
                    ),
                    (
                        "CloudWatch Logs (function output)",
                        (w.new.log_bytes + proc_phase.log_bytes) * prices::LOGS_GB * 1e6 / 1e9,
                        format!("{:.0} + {:.0} B", w.new.log_bytes, proc_phase.log_bytes),
                    ),
                ];
                for (i, (name, usd, basis)) in items.iter().enumerate() {
                    if lines.len() <= i {
                        lines.push((name.to_string(), Vec::new()));
                    }
                    lines[i].1.push(format!("{usd:.3} ({basis})"));
                    *totals.entry(who).or_insert(0.0) += usd;
                }
            }
            for (name, cells) in &lines {
                let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
            }
            let t = |w: Who| totals.get(&w).copied().unwrap_or(f64::NAN);
            let emf_usd = results
                .first()
                .and_then(|r| r.warm.get(&Who::Ours))
                .map_or(0.0, |w| w.new.emf_bytes * prices::LOGS_GB * 1e6 / 1e9);
            let _ = writeln!(
                s,
                "| **total** | **{:.2}** | **{:.2}** ({:.2}× ours) | **{:.2}** ({:.2}× ours) |\n",
                t(Who::Ours),
                t(Who::Python),
                t(Who::Python) / t(Who::Ours),
                t(Who::Node),
                t(Who::Node) / t(Who::Ours)
            );
            let _ = writeln!(
                s,
                "Like for like, without the receiver's EMF metric bytes (the peers emit no metrics): ours **{:.2}**, \
                 the Python peer {:.2} ({:.2}× ours), the Node peer {:.2} ({:.2}× ours).\n",
                t(Who::Ours) - emf_usd,
                t(Who::Python),
                t(Who::Python) / (t(Who::Ours) - emf_usd),
                t(Who::Node),
                t(Who::Node) / (t(Who::Ours) - emf_usd)
            );
            let _ = writeln!(
                s,
                "Our log bytes include its EMF metric documents (the `Requests` and `ReceiverLatency` metrics the alarms and \
                 dashboard read; the row \"of which EMF metrics\" above): the peers emit no metrics at all, so a user who \
                 wanted theirs would add Powertools Metrics and its bytes. Lambda's own platform lines (START, END, REPORT) \
                 are the same for every runtime and not counted. EMF metrics themselves are billed per metric per month, \
                 not per event.\n"
            );
            let _ = writeln!(
                s,
                "**The receiver's memory size**, from the capped passes (duration cost only, per million new events):\n"
            );
            let _ = writeln!(s, "| receiver | 128 MB: billed, USD | 256 MB: billed, USD | cheaper |");
            let _ = writeln!(s, "|---|---|---|---|");
            for who in RECEIVERS {
                let (b128, b256) = (billed(c128, who), billed(c256, who));
                if let (Some(a), Some(b)) = (b128, b256) {
                    let (u128, u256) = (gb_s(a, 128.0), gb_s(b, 256.0));
                    let _ = writeln!(
                        s,
                        "| {} | {a:.1} ms, {u128:.3} | {b:.1} ms, {u256:.3} | {} |",
                        who.label(),
                        if u128 <= u256 { "128 MB" } else { "256 MB" }
                    );
                }
            }
            let _ = writeln!(
                s,
                "\nOur processor at 128 MB's share, one record per invocation: {:.1} ms p50 on moto against its floor's {:.1} ms, \
                 {:.0} µs CPU per event, {}.\n",
                d(proc_phase.p(0.5)),
                d(proc_floor.p(0.5)),
                proc_phase.cpu_ns / 1e3,
                proc_phase
                    .requests
                    .iter()
                    .map(|(op, n)| format!("{op} ×{:.1}", *n as f64 / proc_phase.lat.len() as f64))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    s
}
