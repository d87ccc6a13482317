//! One measured pass: both processors started fresh on empty tables of their own, warmed up
//! uncapped, then capped to a 128 MB Lambda's CPU share and fed the same batches in turn (who
//! goes first rotating each batch), each one invocation at a time as one Lambda instance runs
//! them; in the same rotation, the moto floor of our processor's calls.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::common::runtime_api::{FunctionProcess, RuntimeApi};
use crate::common::{admin_config_for, create_table, endpoint, sdk_config_for, unique};
use crate::events::{Batch, Feed, RECORDS, Scenario};
use crate::support::cpu_cap::CpuCap;
use crate::support::{Requests, cpu_ns, keep_alive_front, status_kb};

/// Lambda's invocation timeout for both (a capped Python batch takes about a second).
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Who {
    Ours,
    Python,
}

impl Who {
    pub const ALL: [Who; 2] = [Who::Ours, Who::Python];

    pub fn label(self) -> &'static str {
        match self {
            Who::Ours => "ours (Rust)",
            Who::Python => "Python peer",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Who::Ours => "rust",
            Who::Python => "py",
        }
    }
}

/// Where the two processors live on disk.
pub struct Code {
    pub processor: PathBuf,
    /// `benches/peers` (its `python/.venv` made by `make bench-peers`).
    pub peers: PathBuf,
}

impl Code {
    fn command(&self, who: Who) -> Command {
        match who {
            Who::Ours => Command::new(&self.processor),
            Who::Python => {
                let mut c = Command::new(self.peers.join("python/.venv/bin/python"));
                c.args(["-m", "awslambdaric", "processor.handler"]).current_dir(self.peers.join("python"));
                c
            }
        }
    }
}

/// A counting keep-alive front to moto per participant, kept for the whole bench (its counts
/// are read as differences), and the clients that create each pass's tables and run the floor.
pub struct Moto {
    fronts: BTreeMap<Who, (String, Requests)>,
    admin: aws_sdk_dynamodb::Client,
    floor: aws_sdk_dynamodb::Client,
}

impl Moto {
    pub async fn connect() -> Self {
        let mut fronts = BTreeMap::new();
        for who in Who::ALL {
            fronts.insert(who, keep_alive_front(endpoint()).await);
        }
        let (floor_front, _) = keep_alive_front(endpoint()).await;
        Self {
            fronts,
            admin: aws_sdk_dynamodb::Client::new(&admin_config_for(&endpoint()).await),
            floor: aws_sdk_dynamodb::Client::new(&sdk_config_for(&floor_front).await),
        }
    }

    /// An empty table (hash key `pk`; moto needs no TTL set): moto slows down as tables fill,
    /// so every pass starts on new ones, and drops them when done.
    async fn fresh_table(&self, who: &str) -> String {
        let table = unique(&format!("bench-proc-{who}"));
        create_table(&self.admin, &table).await;
        table
    }

    async fn drop_table(&self, table: &str) {
        let _ = self.admin.delete_table().table_name(table).send().await;
    }
}

/// One processor's figures over a pass's capped batches.
#[derive(Clone, Default)]
pub struct Outcome {
    /// Each batch's latency (invoke -> answer).
    pub lat: Vec<Duration>,
    pub events: usize,
    pub cpu_ns: u64,
    /// Records sent that must fail, and the records the answers named (checked to be those).
    pub failing_sent: usize,
    pub failed_reported: usize,
    /// `event processed` lines, checked to be one per record that must succeed.
    pub processed_logged: usize,
    /// Requests to moto, by operation.
    pub requests: BTreeMap<String, usize>,
    /// Bytes of output (log lines and their newlines).
    pub log_bytes: usize,
    pub rss_kb: u64,
    /// Share of CFS periods in which the capped process was throttled.
    pub throttled: Option<f64>,
}

impl Outcome {
    pub fn cpu_us_per_event(&self) -> f64 {
        self.cpu_ns as f64 / self.events as f64 / 1e3
    }

    /// Events per second per function: one instance, its batches back to back.
    pub fn events_per_s(&self) -> f64 {
        self.events as f64 / self.lat.iter().map(Duration::as_secs_f64).sum::<f64>()
    }

    pub fn mean_batch_ms(&self) -> f64 {
        mean_ms(&self.lat)
    }
}

pub fn mean_ms(lat: &[Duration]) -> f64 {
    lat.iter().map(|d| d.as_secs_f64() * 1e3).sum::<f64>() / lat.len() as f64
}

pub struct PassResult {
    pub by: BTreeMap<Who, Outcome>,
    /// Per batch: as many writes as our processor makes for it (two per record processed), at its
    /// concurrency, straight from a client in this process.
    pub floor: Vec<Duration>,
}

/// A processor under the emulator.
struct Live {
    who: Who,
    api: RuntimeApi,
    process: FunctionProcess,
    table: String,
}

impl Live {
    async fn start(code: &Code, moto: &Moto, who: Who) -> Self {
        let table = moto.fresh_table(who.slug()).await;
        let api = RuntimeApi::start(TIMEOUT).await;
        // Ours without DEAD_LETTER_QUEUE_URL: poison is then reported as a batch item failure
        // and left to the queue's redrive policy, as the Python peer (which has no dead-letter
        // step) does it; with one, ours would acknowledge it after a SendMessage.
        let env = vec![
            ("IDEMPOTENCY_TABLE", table.clone()),
            ("AWS_ENDPOINT_URL", moto.fronts[&who].0.clone()),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO".to_owned()),
        ];
        let process = FunctionProcess::spawn_command(code.command(who), "processor", &api, &env);
        let start = Instant::now();
        while api.next_polls().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(30) && api.init_errors().is_empty(),
                "{}: no GET /next after 30 s: {:?}\n{}",
                who.label(),
                api.init_errors(),
                process.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Self { who, api, process, table }
    }

    /// One invocation; panics unless the answer names exactly the records that must fail (a
    /// bench that measured wrong answers would measure nothing). Returns its latency and how
    /// many records it named.
    async fn invoke(&self, batch: &Batch) -> (Duration, usize) {
        let t = Instant::now();
        let out = self.api.invoke(&batch.event, TIMEOUT + Duration::from_secs(5)).await;
        let took = t.elapsed();
        let out = out.unwrap_or_else(|e| panic!("{}: {e}\n{}", self.who.label(), self.tail()));
        let named: Vec<&str> = out["batchItemFailures"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no batchItemFailures in {out}", self.who.label()))
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap_or_default())
            .collect();
        let set: BTreeSet<String> = named.iter().map(|s| s.to_string()).collect();
        assert!(
            set == batch.failing && named.len() == set.len(),
            "{}: reported {named:?}, expected {:?}\n{}",
            self.who.label(),
            batch.failing,
            self.tail()
        );
        (took, named.len())
    }

    fn tail(&self) -> String {
        let lines = self.process.lines();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn output_bytes(&self) -> usize {
        self.process.output.lock().unwrap().iter().map(|l| l.len() + 1).sum()
    }
}

pub struct PassSpec<'a> {
    pub tag: &'a str,
    pub scenario: Scenario,
    pub warm_up: usize,
    pub batches: usize,
    /// The CPU share to cap each process to after its warm-up, if capping is possible.
    pub cap_mb: Option<u64>,
}

pub async fn run(code: &Code, moto: &Moto, feed: &Feed, spec: PassSpec<'_>) -> PassResult {
    let PassSpec { tag, scenario, warm_up, batches, cap_mb } = spec;
    let mut live = Vec::new();
    for who in Who::ALL {
        live.push(Live::start(code, moto, who).await);
    }
    let floor_table = moto.fresh_table("floor").await;
    for i in 0..warm_up {
        let batch = feed.batch(&format!("{tag}-warm"), i, scenario);
        for l in &live {
            l.invoke(&batch).await;
        }
    }
    let caps: Vec<Option<CpuCap>> = live
        .iter()
        .map(|l| {
            cap_mb.map(|mb| {
                let c = CpuCap::new(&format!("proc-{}-{tag}", l.who.slug()), mb);
                c.add(l.process.pid());
                c
            })
        })
        .collect();
    let stat0: Vec<_> = caps.iter().map(|c| c.as_ref().map(CpuCap::stat)).collect();
    // What the warm-up printed can still be in the pipes: let it arrive before counting.
    for l in &live {
        l.process.settled_lines().await;
    }
    let processed0: Vec<usize> = live.iter().map(|l| l.process.count_message("event processed")).collect();
    let bytes0: Vec<usize> = live.iter().map(Live::output_bytes).collect();
    let cpu0: Vec<u64> = live.iter().map(|l| cpu_ns(l.process.pid())).collect();
    let req0: Vec<_> = live.iter().map(|l| moto.fronts[&l.who].1.snapshot()).collect();
    let mut out: Vec<Outcome> = vec![Outcome::default(); live.len()];
    let mut floor = Vec::with_capacity(batches);
    let mut must_succeed = 0;
    for i in 0..batches {
        let batch = feed.batch(tag, i, scenario);
        must_succeed += batch.keys.len();
        // Rotate who goes first (the floor included), so no one always follows the same neighbour.
        for k in 0..=live.len() {
            let j = (i + k) % (live.len() + 1);
            match live.get(j) {
                Some(l) => {
                    let (took, named) = l.invoke(&batch).await;
                    out[j].lat.push(took);
                    out[j].failed_reported += named;
                    out[j].failing_sent += batch.failing.len();
                }
                None => floor.push(floor_batch(&moto.floor, &floor_table, &batch).await),
            }
        }
    }
    for (j, l) in live.iter().enumerate() {
        let o = &mut out[j];
        o.events = batches * RECORDS;
        o.cpu_ns = cpu_ns(l.process.pid()) - cpu0[j];
        o.requests = moto.fronts[&l.who].1.since(&req0[j]);
        o.rss_kb = status_kb(l.process.pid(), "VmHWM:");
        if let (Some(c), Some((p0, t0, _))) = (&caps[j], stat0[j]) {
            let (p, t, _) = c.stat();
            o.throttled = Some((t - t0) as f64 / (p - p0).max(1) as f64);
        }
    }
    for (j, l) in live.iter().enumerate() {
        l.process.settled_lines().await;
        out[j].processed_logged = l.process.count_message("event processed") - processed0[j];
        out[j].log_bytes = l.output_bytes() - bytes0[j];
        assert_eq!(out[j].processed_logged, must_succeed, "{}: `event processed` lines\n{}", l.who.label(), l.tail());
    }
    if std::env::var_os("BENCH_SHOW_OUTPUT").is_some() {
        for l in &live {
            eprintln!("--- {} ---\n{}", l.who.label(), l.tail());
        }
    }
    let tables: Vec<String> = live.iter().map(|l| l.table.clone()).collect();
    drop(live);
    drop(caps);
    for t in tables.iter().chain([&floor_table]) {
        moto.drop_table(t).await;
    }
    PassResult { by: Who::ALL.into_iter().zip(out).collect(), floor }
}

/// As many writes as our processor makes for a batch, at its concurrency: a claim and a mark
/// for every record that must succeed (the poison makes none).
async fn floor_batch(ddb: &aws_sdk_dynamodb::Client, table: &str, batch: &Batch) -> Duration {
    let t = Instant::now();
    let calls = futures::stream::iter(batch.keys.iter())
        .map(|key| async move {
            assert!(crate::support::floor::claim(ddb, table, key).await.expect("floor PutItem"));
            crate::support::floor::mark(ddb, table, key).await.expect("floor UpdateItem");
        })
        .buffer_unordered(stigg_webhooks::config::DEFAULT_PROCESSOR_CONCURRENCY);
    calls.collect::<Vec<()>>().await;
    t.elapsed()
}
