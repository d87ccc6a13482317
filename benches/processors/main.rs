//! `make bench` (alone: `make bench-processors`): our processor side by side with its Python
//! peer (`benches/peers/python/processor.py`: Powertools `BatchProcessor` with idempotency per
//! event key), both as processes under the Runtime API emulator of tests/common, against moto,
//! each with its own idempotency table. Batches of 10 SQS records, one invocation at a time per
//! function, each process capped after its warm-up to a 128 MB Lambda's CPU share; the happy
//! path and one record in ten failing. `BENCH_RUNS` runs (3) of `BENCH_BATCHES` batches (100)
//! after `BENCH_WARM_UP` batches (10).
//!
//! Writes its section of BENCHMARKS.md (`BENCH_REPORT` for another file) and the JSON the
//! receivers bench's cost model reads (`support::result_file("processors")`).

#[allow(unused_imports)]
#[path = "../../tests/common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;

/// The SQS events fed to both.
mod events;
/// One measured pass of both processors.
mod pass;
/// The BENCHMARKS.md section and the JSON result.
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use common::runtime_api::binary;
use events::{Feed, Scenario};
use pass::{Code, Moto, PassSpec};
use support::cpu_cap::CpuCap;

const BEGIN: &str = "<!-- processors: written by make bench (benches/processors) -->";
const END: &str = "<!-- /processors -->";
/// Where the section goes the first time: after the receivers' (inside the part of
/// BENCHMARKS.md that `benches/stack.rs` keeps across runs).
const AFTER: &str = "<!-- /receivers -->";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks harness-less benches for their names.
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // `make bench` copies the plain `cargo build --release` binaries to BENCH_BIN_DIR: the ones
    // cargo bench builds next to itself carry the dev-dependencies' features.
    let processor = match std::env::var_os("BENCH_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join("processor"),
        None => binary("processor"),
    };
    let code = Code {
        processor,
        peers: std::env::var_os("BENCH_PEERS_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("benches/peers")),
    };
    assert!(
        code.processor.exists(),
        "{} missing: run `make bench` (it builds the release binaries)",
        code.processor.display()
    );
    let python = code.peers.join("python/.venv/bin/python");
    assert!(python.exists(), "{} missing: run `make bench-peers`", python.display());
    let runs = env_usize("BENCH_RUNS", 3).max(1);
    let batches = env_usize("BENCH_BATCHES", 100).max(1);
    let warm_up = env_usize("BENCH_WARM_UP", 10);
    let cap_mb = CpuCap::available().then_some(128);
    if cap_mb.is_none() {
        eprintln!("no writable cgroup v1 cpu controller (needs root): the passes run uncapped");
    }
    let feed = Feed::load(&root.join("events/stigg"));
    let moto = Moto::connect().await;
    let started = Instant::now();
    let mut results = Vec::new();
    for r in 1..=runs {
        let mut run = BTreeMap::new();
        for scenario in Scenario::ALL {
            eprintln!("run {r}/{runs}: {}, {batches} batches of {} each", scenario.label(), events::RECORDS);
            let tag = format!("r{r}-{}-{}", scenario.slug(), &uuid::Uuid::new_v4().simple().to_string()[..6]);
            let spec = PassSpec { tag: &tag, scenario, warm_up, batches, cap_mb };
            run.insert(scenario, pass::run(&code, &moto, &feed, spec).await);
        }
        results.push(run);
    }
    let settings = report::Settings { runs, batches, warm_up, cap_mb, elapsed: started.elapsed() };

    let section = report::markdown(&settings, &results);
    let path = std::env::var_os("BENCH_REPORT").map(PathBuf::from).unwrap_or_else(|| root.join("BENCHMARKS.md"));
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    std::fs::write(&path, support::splice_section(&doc, BEGIN, END, &section, AFTER)).unwrap();
    let json_path = support::result_file("processors");
    std::fs::create_dir_all(json_path.parent().unwrap()).unwrap();
    let json = serde_json::to_string_pretty(&report::json(&settings, &results)).unwrap();
    std::fs::write(&json_path, json + "\n").unwrap();
    println!("{section}");
    eprintln!("wrote {} and {}", path.display(), json_path.display());
}
