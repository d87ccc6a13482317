//! `make bench`, side by side: our receiver and the peers of `benches/peers/` (Python with
//! Powertools + boto3, Node.js with Powertools + SDK v3, Go with the AWS SDK for Go v2) as
//! processes under the same Runtime API emulator, against the same moto, invoked in turn
//! (round-robin, the order rotating each round), plus a moto floor: the same PutItem +
//! SendMessage + UpdateItem straight from an SDK client.
//!
//! Each run: cold starts, a warm pass, the same warm pass with every function's CPU capped to a
//! 128 MB Lambda's share after init (cgroup v1 quota), and a shorter pass at 256 MB's share.
//! Three runs (`BENCH_RUNS`), each figure reported as the median of the runs and their spread.
//! Writes its section of BENCHMARKS.md and `benches/results/receivers-cdf.svg`.
//!
//! `participants.rs`: who takes part and how each is spawned; `measure.rs`: cold starts, warm
//! and capped passes; `report.rs`: the markdown section; `cost.rs`: the cost model; `cdf.rs`:
//! the latency picture.

#[allow(unused_imports)]
#[path = "../../tests/common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;

mod cdf;
mod cost;
mod measure;
mod participants;
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use common::runtime_api::binary;
use common::{endpoint, sdk_config_for};
use measure::{Cold, CpuCap, Pass, PassSpec, cold_starts, processor_pass, warm_pass};
use participants::{Admin, Code, Floor, Target, Who};
use serde_json::Value;
use support::keep_alive_front;

pub const SECRET: &str = "bench-secret-0123456789abcdef";
// The marker keeps its old wording: it is how an existing BENCHMARKS.md section is found again.
const BEGIN: &str = "<!-- receivers: written by `make bench` (benches/receivers.rs) -->";
const END: &str = "<!-- /receivers -->";
pub const SVG: &str = "benches/results/receivers-cdf.svg";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One of a run's passes, if it was measured.
pub type Pick = fn(&RunResult) -> Option<&BTreeMap<Who, Pass>>;

pub struct RunResult {
    pub cold: BTreeMap<Who, Cold>,
    pub warm: BTreeMap<Who, Pass>,
    pub capped: Option<BTreeMap<Who, Pass>>,
    pub capped256: Option<BTreeMap<Who, Pass>>,
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
    if code.with_peers && !code.go_built() {
        eprintln!(
            "Go peer: not built ({} missing; `make bench-peers` builds it where Go can be installed): the bench runs without it",
            code.go_binary().display()
        );
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
    cdf::render(&svg_path, &results).expect("render the CDF");

    let section = report::render(&code, &results, processor.as_ref(), events, events256, cold_n, elapsed);
    let path = std::env::var_os("BENCH_REPORT").map(PathBuf::from).unwrap_or_else(|| root.join("BENCHMARKS.md"));
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let doc = support::splice_section(&doc, BEGIN, END, &section, "<!-- analysis: kept across `make bench` runs -->");
    std::fs::write(&path, doc).unwrap();
    println!("{section}");
}
