//! `make bench`: the release binaries of both functions as real processes under the Lambda
//! Runtime API emulator of tests/common, against moto. Writes BENCHMARKS.md.
//!
//! Latencies include moto (a Python emulator, far slower than DynamoDB/SQS): they bound what the
//! code adds, they are not AWS latencies. CPU time is read from /proc for the function process
//! only, so it does not depend on moto's speed.

#[allow(unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;
/// The processor with the EventBridge forwarder on, side by side with it off.
#[path = "support/forwarder.rs"]
mod forwarder;
#[allow(dead_code)]
mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::runtime_api::{FunctionProcess, RuntimeApi, binary, function_url_post};
use common::*;
use serde_json::{Value, json};
use stigg_webhooks::claim::{ClaimScope, IdempotencyStore};
use stigg_webhooks::config::QueueUrl;
use stigg_webhooks::handler::{Handlers, LoggingHandler};
use stigg_webhooks::processor::Processor;
use stigg_webhooks::queue::EventQueue;
use stigg_webhooks::receiver::Receiver;
use stigg_webhooks::secrets::SecretSet;
use support::{cpu_model, cpu_ns, keep_alive_front, median, ms, percentile, prices, run, status_kb, us};

const SECRET: &str = "bench-secret-0123456789abcdef";
const COLD_STARTS: usize = 25;
const WARM_EVENTS: usize = 1000;

fn receiver_env(res: &Bench) -> Vec<(&'static str, String)> {
    vec![
        ("STIGG_WEBHOOK_SECRET", SECRET.to_owned()),
        ("IDEMPOTENCY_TABLE", res.table.clone()),
        ("EVENTS_QUEUE_URL", res.queue.as_str().to_owned()),
        ("AWS_ENDPOINT_URL", res.front.clone()),
        ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()),
    ]
}

fn processor_env(res: &Bench, dlq: &QueueUrl) -> Vec<(&'static str, String)> {
    vec![
        ("IDEMPOTENCY_TABLE", res.table.clone()),
        ("DEAD_LETTER_QUEUE_URL", dlq.as_str().to_owned()),
        ("AWS_ENDPOINT_URL", res.front.clone()),
        ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()),
    ]
}

/// The `[profile.release]` settings as written in Cargo.toml (read, not restated, so the report
/// cannot drift from the build). `CARGO_PROFILE_RELEASE_*` overrides are the caller's to mention.
fn release_profile() -> String {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap_or_default();
    manifest
        .lines()
        .skip_while(|l| l.trim() != "[profile.release]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the functions under test point.
struct Bench {
    table: String,
    queue: QueueUrl,
    front: String,
}

/// A realistic Stigg payload (the documented subscription.created example) with a fresh id.
fn stigg_event(template: &Value, id: &str) -> String {
    let mut e = template.clone();
    e["messageId"] = json!(id);
    e.to_string()
}

fn function_url_event(body: &str) -> Value {
    function_url_post(SECRET, body)
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

async fn wait_first_poll(api: &RuntimeApi) -> Instant {
    let start = Instant::now();
    loop {
        if let Some(t) = api.next_polls().first() {
            return *t;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no GET /next: {:?}", api.init_errors());
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

struct ColdStarts {
    init: Vec<Duration>,
    first_invocation: Vec<Duration>,
}

/// Cold starts: process start -> first `GET /next`, then the first invocation's latency.
async fn cold_starts(bin: &Path, env: &[(&str, String)], invocation: impl Fn(usize) -> Value) -> ColdStarts {
    let mut out = ColdStarts { init: vec![], first_invocation: vec![] };
    for i in 0..=COLD_STARTS {
        let api = RuntimeApi::start(Duration::from_secs(30)).await;
        let mut p = FunctionProcess::spawn(bin, &api, env);
        let polled = wait_first_poll(&api).await;
        let init = polled - p.started;
        let t = Instant::now();
        api.invoke(&invocation(i), Duration::from_secs(30)).await.expect("first invocation");
        let first = t.elapsed();
        p.kill();
        if i > 0 {
            // Run 0 only warms the page cache.
            out.init.push(init);
            out.first_invocation.push(first);
        }
    }
    out
}

struct Warm {
    p50: Duration,
    p99: Duration,
    cpu_per_event_ns: f64,
}

async fn warm_run(api: &RuntimeApi, pid: u32, events: &[Value], expect: u64) -> Warm {
    let cpu0 = cpu_ns(pid);
    let mut lat = Vec::with_capacity(events.len());
    for e in events {
        let t = Instant::now();
        let out = api.invoke(e, Duration::from_secs(30)).await.expect("invocation");
        lat.push(t.elapsed());
        assert_eq!(out["statusCode"].as_u64(), Some(expect), "{out}");
    }
    let cpu = cpu_ns(pid) - cpu0;
    lat.sort();
    Warm { p50: percentile(&lat, 0.5), p99: percentile(&lat, 0.99), cpu_per_event_ns: cpu as f64 / events.len() as f64 }
}

fn size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

/// Wire requests per operation for one new event, one late duplicate, and one processed event,
/// counted by an SDK interceptor around the same library code the binaries run.
async fn request_counts(res: &Resources, template: &Value) -> [Counts; 3] {
    let ddb_calls = Recorder::default();
    let sqs_calls = Recorder::default();
    let sdk = sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk).interceptor(ddb_calls.clone()).build(),
    );
    let sqs =
        aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(&sdk).interceptor(sqs_calls.clone()).build());
    let receiver = Receiver::new(
        SecretSet::parse(SECRET).unwrap(),
        None,
        262_144,
        IdempotencyStore::new(ddb.clone(), res.table.clone(), Duration::from_secs(3600), ClaimScope::Receiver),
        EventQueue::new(sqs.clone(), res.queue.clone()),
    );
    let body = stigg_event(template, "count-1");
    let deadline = || deadline_in(Duration::from_secs(10));
    let snapshot = |d: &Recorder, s: &Recorder| (d.clone_counts(), s.clone_counts());
    assert_eq!(receiver.handle(url_request(&function_url_event(&body)), deadline()).await.status(), 202);
    let new = snapshot(&ddb_calls, &sqs_calls);
    ddb_calls.reset();
    sqs_calls.reset();
    assert_eq!(receiver.handle(url_request(&function_url_event(&body)), deadline()).await.status(), 200);
    let dup = snapshot(&ddb_calls, &sqs_calls);
    ddb_calls.reset();
    sqs_calls.reset();
    let processor = Processor::new(
        IdempotencyStore::new(ddb, res.table.clone(), Duration::from_secs(3600), ClaimScope::Processor),
        Some(EventQueue::new(sqs, res.queue.clone())),
        Handlers::new().on_all(LoggingHandler),
        4,
    );
    let record = serde_json::from_value(json!({"messageId": "m", "body": body,
        "messageAttributes": {"idempotency_key": {"stringValue": "count-1", "dataType": "String"}}}))
    .unwrap();
    let report = processor.process(&[record], deadline()).await;
    assert_eq!(report.response().batch_item_failures.len(), 0);
    let processed = snapshot(&ddb_calls, &sqs_calls);
    [new, dup, processed]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks harness-less benches for their names.
    }
    // `make bench` copies the plain `cargo build --release` binaries here: the ones cargo bench
    // builds next to itself carry the dev-dependencies' features, so they are not what ships.
    let bin = |name: &str| match std::env::var_os("BENCH_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join(name),
        None => binary(name),
    };
    let receiver_bin = bin("receiver");
    let processor_bin = bin("processor");
    for b in [&receiver_bin, &processor_bin] {
        assert!(b.exists(), "{} missing: run `make bench` (it builds the release binaries)", b.display());
    }
    let template: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/events/stigg/subscription.created.json"))
            .unwrap(),
    )
    .unwrap();
    let res = Resources::create(false).await;
    let dlq = create_queue(&res.sqs, &unique("dlq"), false).await;
    let bench = Bench {
        table: res.table.as_str().to_owned(),
        queue: res.queue.clone(),
        front: keep_alive_front(endpoint()).await.0,
    };
    let renv = receiver_env(&bench);
    let penv = processor_env(&bench, &dlq);

    eprintln!("receiver: {COLD_STARTS} cold starts");
    let rcold =
        cold_starts(&receiver_bin, &renv, |i| function_url_event(&stigg_event(&template, &format!("cold-{i}")))).await;
    eprintln!("receiver: {COLD_STARTS} cold starts with the connection warm-up");
    let mut cold_env = renv.clone();
    cold_env.push(("WARM_UP_CONNECTIONS", "true".into()));
    let rcold_warmed =
        cold_starts(&receiver_bin, &cold_env, |i| function_url_event(&stigg_event(&template, &format!("coldnw-{i}"))))
            .await;

    eprintln!("receiver: {WARM_EVENTS} new events, then {WARM_EVENTS} late duplicates");
    let api = RuntimeApi::start(Duration::from_secs(30)).await;
    let receiver = FunctionProcess::spawn(&receiver_bin, &api, &renv);
    wait_first_poll(&api).await;
    let warmup: Vec<Value> =
        (0..50).map(|i| function_url_event(&stigg_event(&template, &format!("warmup-{i}")))).collect();
    warm_run(&api, receiver.pid(), &warmup, 202).await;
    let events: Vec<Value> =
        (0..WARM_EVENTS).map(|i| function_url_event(&stigg_event(&template, &format!("warm-{i}")))).collect();
    let accepted = warm_run(&api, receiver.pid(), &events, 202).await;
    let duplicates = warm_run(&api, receiver.pid(), &events, 200).await;
    let receiver_rss_kb = status_kb(receiver.pid(), "VmHWM:");
    let log_bytes: usize = receiver.lines().iter().map(|l| l.len() + 1).sum();
    // Every invocation this process served: warm-up, new events, duplicates.
    let log_invocations = warmup.len() + 2 * events.len();
    drop(receiver);

    eprintln!("processor: cold starts, then every queued event in batches of 10");
    let sqs_record = |body: &str, key: &str| {
        json!({"messageId": uuid::Uuid::new_v4().to_string(), "receiptHandle": "rh", "body": body, "attributes": {},
               "messageAttributes": {"idempotency_key": {"stringValue": key, "dataType": "String"}},
               "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events"})
    };
    let pcold = cold_starts(&processor_bin, &penv, |i| {
        let key = format!("pcold-{i}");
        json!({"Records": [sqs_record(&stigg_event(&template, &key), &key)]})
    })
    .await;
    let papi = RuntimeApi::start(Duration::from_secs(60)).await;
    let processor = FunctionProcess::spawn(&processor_bin, &papi, &penv);
    wait_first_poll(&papi).await;
    let batches: Vec<Value> = (0..WARM_EVENTS)
        .collect::<Vec<_>>()
        .chunks(10)
        .map(|c| {
            let records: Vec<Value> = c
                .iter()
                .map(|i| {
                    let key = format!("proc-{i}");
                    sqs_record(&stigg_event(&template, &key), &key)
                })
                .collect();
            json!({"Records": records})
        })
        .collect();
    let cpu0 = cpu_ns(processor.pid());
    let mut batch_lat = Vec::new();
    for b in &batches {
        let t = Instant::now();
        let out = papi.invoke(b, Duration::from_secs(60)).await.expect("batch");
        batch_lat.push(t.elapsed());
        assert_eq!(out["batchItemFailures"], json!([]), "{out}");
    }
    let processor_cpu_ns = (cpu_ns(processor.pid()) - cpu0) as f64 / WARM_EVENTS as f64;
    // The last batch's lines can still be in the pipe when its answer arrives.
    processor.settled_lines().await;
    assert_eq!(processor.count_message("event processed"), WARM_EVENTS);
    let processor_rss_kb = status_kb(processor.pid(), "VmHWM:");
    drop(processor);
    batch_lat.sort();

    // `make profile` sets BENCH_FORWARDER=off: its processor profile stays the plain processor's.
    let forwarder = if std::env::var("BENCH_FORWARDER").is_ok_and(|v| v == "off") {
        None
    } else {
        eprintln!(
            "processor: {WARM_EVENTS} events in batches of 10 with the EventBridge forwarder on and off, side by side"
        );
        Some(forwarder::measure(&processor_bin, &template, &res, &dlq, WARM_EVENTS).await)
    };

    eprintln!("requests per event");
    let [new, dup, processed] = request_counts(&res, &template).await;

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let sizes = [
        ("receiver", "x86_64", size(&receiver_bin)),
        ("processor", "x86_64", size(&processor_bin)),
        ("receiver", "arm64 (`make build`)", size(&root.join("target/lambda/receiver/bootstrap"))),
        ("processor", "arm64 (`make build`)", size(&root.join("target/lambda/processor/bootstrap"))),
    ];

    let report = render(Report {
        rcold,
        rcold_warmed,
        pcold,
        accepted,
        duplicates,
        receiver_rss_kb,
        processor_rss_kb,
        processor_cpu_ns,
        batch_p50: percentile(&batch_lat, 0.5),
        batch_p99: percentile(&batch_lat, 0.99),
        counts: [new, dup, processed],
        sizes: sizes.to_vec(),
        log_bytes_per_request: log_bytes as f64 / log_invocations as f64,
        forwarder,
    });
    // Hand-written analysis below the marker survives re-runs.
    const MARKER: &str = "<!-- analysis: kept across `make bench` runs -->";
    // `make profile` runs this harness under callgrind and points the report elsewhere.
    let path = std::env::var_os("BENCH_REPORT").map(PathBuf::from).unwrap_or_else(|| root.join("BENCHMARKS.md"));
    let kept = std::fs::read_to_string(&path).ok().and_then(|old| old.find(MARKER).map(|i| old[i..].to_owned()));
    let report = format!("{report}\n{}", kept.unwrap_or_else(|| format!("{MARKER}\n")));
    std::fs::write(&path, &report).unwrap();
    println!("{report}");
}

type Counts = (std::collections::BTreeMap<String, usize>, std::collections::BTreeMap<String, usize>);

struct Report {
    rcold: ColdStarts,
    rcold_warmed: ColdStarts,
    pcold: ColdStarts,
    accepted: Warm,
    duplicates: Warm,
    receiver_rss_kb: u64,
    processor_rss_kb: u64,
    processor_cpu_ns: f64,
    batch_p50: Duration,
    batch_p99: Duration,
    counts: [Counts; 3],
    sizes: Vec<(&'static str, &'static str, Option<u64>)>,
    log_bytes_per_request: f64,
    forwarder: Option<forwarder::Run>,
}

fn render(r: Report) -> String {
    let cpu_model = cpu_model();
    let rinit = median(r.rcold.init.clone());
    let rfirst = median(r.rcold.first_invocation.clone());
    let pinit = median(r.pcold.init.clone());
    let pfirst = median(r.pcold.first_invocation.clone());
    let ok = |pass: bool| if pass { "✅" } else { "❌" };
    let writes = |c: &Counts| {
        c.0.iter()
            .filter(|(op, _)| ["PutItem", "UpdateItem", "DeleteItem"].contains(&op.as_str()))
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    let reads = |c: &Counts| {
        c.0.iter().filter(|(op, _)| ["GetItem", "Query", "Scan"].contains(&op.as_str())).map(|(_, n)| n).sum::<usize>()
    };
    let list = |m: &std::collections::BTreeMap<String, usize>| {
        if m.is_empty() {
            "none".to_owned()
        } else {
            m.iter().map(|(k, v)| format!("{k} ×{v}")).collect::<Vec<_>>().join(", ")
        }
    };
    let stripped_receiver = r.sizes[0].2.unwrap_or(u64::MAX);
    let rss_max = r.receiver_rss_kb.max(r.processor_rss_kb);

    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Produced by `make bench` (release binaries as processes under a local Lambda Runtime API, against moto). Re-run it to refresh this file.\n"
    );
    let _ = writeln!(
        s,
        "- Machine: {cpu_model}, {} cores, Linux {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        run("uname", &["-r"])
    );
    let _ = writeln!(s, "- Toolchain: {}; profile `release` ({})", run("rustc", &["--version"]), release_profile());
    let _ = writeln!(
        s,
        "- Payload: `events/stigg/subscription.created.json` with a fresh `messageId` per event ({} bytes)",
        stigg_event(
            &serde_json::from_str(
                &std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/events/stigg/subscription.created.json"
                ))
                .unwrap()
            )
            .unwrap(),
            "warm-0"
        )
        .len()
    );
    let _ = writeln!(
        s,
        "- Cold starts: {COLD_STARTS} per function (after one discarded run). Warm: {WARM_EVENTS} distinct events, one at a time, after 50 warm-up events.\n"
    );

    let _ = writeln!(s, "## Against the targets\n");
    let _ = writeln!(s, "| figure | target | measured | |");
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(
        s,
        "| receiver cold init (median, process start → first `GET /next`) | ≤ 15 ms | {} | {} |",
        ms(rinit),
        ok(rinit <= Duration::from_millis(15))
    );
    let _ = writeln!(
        s,
        "| receiver CPU per accepted event | ≤ 150 µs | {} | {} |",
        us(r.accepted.cpu_per_event_ns),
        ok(r.accepted.cpu_per_event_ns <= 150_000.0)
    );
    let _ = writeln!(
        s,
        "| peak RSS, either function | ≤ 25 MB | receiver {:.1} MB, processor {:.1} MB | {} |",
        r.receiver_rss_kb as f64 / 1024.0,
        r.processor_rss_kb as f64 / 1024.0,
        ok(rss_max <= 25 * 1024)
    );
    let _ = writeln!(
        s,
        "| stripped receiver binary (x86_64) | ≤ 8 MB | {} | {} |",
        mb(stripped_receiver),
        ok(stripped_receiver <= 8_000_000)
    );
    for (what, max_writes, counts) in [("new event", 2, &r.counts[0]), ("late duplicate", 1, &r.counts[1])] {
        let _ = writeln!(
            s,
            "| DynamoDB per {what} | ≤ {}, 0 reads | {}, {} | {} |",
            plural(max_writes, "write"),
            plural(writes(counts), "write"),
            plural(reads(counts), "read"),
            ok(writes(counts) <= max_writes && reads(counts) == 0)
        );
    }
    let _ = writeln!(s);

    let _ = writeln!(s, "## All figures\n");
    let _ = writeln!(s, "| figure | receiver | processor |");
    let _ = writeln!(s, "|---|---|---|");
    let _ = writeln!(
        s,
        "| cold init, median (min – max) | {} ({} – {}) | {} ({} – {}) |",
        ms(rinit),
        ms(*r.rcold.init.iter().min().unwrap()),
        ms(*r.rcold.init.iter().max().unwrap()),
        ms(pinit),
        ms(*r.pcold.init.iter().min().unwrap()),
        ms(*r.pcold.init.iter().max().unwrap())
    );
    let _ = writeln!(
        s,
        "| first invocation after a cold start, median | {} (1 new event) | {} (batch of 1) |",
        ms(rfirst),
        ms(pfirst)
    );
    let _ = writeln!(
        s,
        "| receiver with the connection warm-up (`WARM_UP_CONNECTIONS=true`): cold init / first invocation, medians | {} / {} | |",
        ms(median(r.rcold_warmed.init.clone())),
        ms(median(r.rcold_warmed.first_invocation.clone()))
    );
    let _ = writeln!(
        s,
        "| warm latency p50 / p99 | new event {} / {}; duplicate {} / {} | batch of 10: {} / {} |",
        ms(r.accepted.p50),
        ms(r.accepted.p99),
        ms(r.duplicates.p50),
        ms(r.duplicates.p99),
        ms(r.batch_p50),
        ms(r.batch_p99)
    );
    let _ = writeln!(
        s,
        "| CPU time per event | new {}; duplicate {} | processed {} |",
        us(r.accepted.cpu_per_event_ns),
        us(r.duplicates.cpu_per_event_ns),
        us(r.processor_cpu_ns)
    );
    let _ = writeln!(
        s,
        "| peak RSS (VmHWM) | {:.1} MB | {:.1} MB |",
        r.receiver_rss_kb as f64 / 1024.0,
        r.processor_rss_kb as f64 / 1024.0
    );
    for (arch_idx, arch) in [(0, "x86_64"), (2, "arm64 (`make build`)")] {
        let fmt = |o: Option<u64>| o.map(mb).unwrap_or_else(|| "not built (run `make build`)".into());
        let _ = writeln!(
            s,
            "| stripped binary, {arch} | {} | {} |",
            fmt(r.sizes[arch_idx].2),
            fmt(r.sizes[arch_idx + 1].2)
        );
    }
    let _ = writeln!(
        s,
        "| DynamoDB requests | new: {}; late duplicate: {} | per event: {} |",
        list(&r.counts[0].0),
        list(&r.counts[1].0),
        list(&r.counts[2].0)
    );
    let _ = writeln!(
        s,
        "| SQS requests (by the function) | new: {}; late duplicate: {} | per event: {} |\n",
        list(&r.counts[0].1),
        list(&r.counts[1].1),
        list(&r.counts[2].1)
    );
    let _ = writeln!(
        s,
        "Latencies are dominated by moto (Python); on AWS the same calls take a few ms each. The functions reach moto through a keep-alive front in the harness (moto closes every connection; AWS keeps them open), so connections are reused as on AWS. CPU time is the function process's own (all threads, `/proc/<pid>/task/*/schedstat`), so it does not depend on the emulator. Requests are counted by an SDK interceptor around the same library code the binaries run.\n"
    );
    if let Some(f) = &r.forwarder {
        s.push_str(&forwarder::section(f, r.processor_cpu_ns));
    }

    // Cost model: per million webhooks, each a new event processed once.
    let ddb_writes = (writes(&r.counts[0]) + writes(&r.counts[2])) as f64;
    let sqs_send = (r.counts[0].1.values().sum::<usize>() + r.counts[2].1.values().sum::<usize>()) as f64;
    // The event source mapping receives and deletes in batches of up to 10; with a trickle of
    // webhooks batches are often of 1, so 2 requests per event is the cautious figure.
    let sqs_esm = 2.0;
    let aws_receiver_ms = 20.0; // PutItem + SendMessage + UpdateItem on AWS, ~5–8 ms each
    let aws_processor_ms = 15.0; // PutItem + handlers + UpdateItem
    let gb = 128.0 / 1024.0;
    let lambda = 2.0 * prices::LAMBDA_REQUEST * 1e6
        + (aws_receiver_ms + aws_processor_ms) / 1e3 * gb * prices::LAMBDA_ARM_GB_S * 1e6;
    let ddb = ddb_writes * prices::DDB_WRU * 1e6;
    let sqs = (sqs_send + sqs_esm) * prices::SQS_REQUEST * 1e6;
    let logs = 2.0 * r.log_bytes_per_request * 1e6 / 1e9 * prices::LOGS_GB;
    let _ = writeln!(s, "## Cost per million webhooks on AWS\n");
    let _ = writeln!(
        s,
        "Each webhook a new event, accepted by the receiver and processed once, both functions arm64 with 128 MB. Prices: {}.\n",
        prices::CHECKED
    );
    let _ = writeln!(s, "| item | basis | USD per million |");
    let _ = writeln!(s, "|---|---|---|");
    let _ = writeln!(
        s,
        "| Lambda requests | 2 invocations (receiver; processor, batch of 1 worst case) × $0.20/M | {:.2} |",
        2.0 * prices::LAMBDA_REQUEST * 1e6
    );
    let _ = writeln!(
        s,
        "| Lambda duration | assumed {aws_receiver_ms} ms + {aws_processor_ms} ms billed on AWS (I/O bound: the CPU measured above is 1–2 ms; the rest is waiting on DynamoDB and SQS) × 0.125 GB × ${}/GB-s | {:.2} |",
        prices::LAMBDA_ARM_GB_S,
        lambda - 2.0 * prices::LAMBDA_REQUEST * 1e6
    );
    let _ =
        writeln!(s, "| DynamoDB on-demand | {ddb_writes} writes measured (items < 1 KB) × $0.625/M WRU | {ddb:.2} |");
    let _ = writeln!(
        s,
        "| SQS standard | {sqs_send} send measured + ~{sqs_esm} event-source-mapping receive/delete × $0.40/M | {sqs:.2} |"
    );
    let _ = writeln!(
        s,
        "| CloudWatch Logs | {:.0} bytes of log per invocation measured × 2 × $0.50/GB | {logs:.2} |",
        r.log_bytes_per_request
    );
    let total = lambda + ddb + sqs + logs;
    match &r.forwarder {
        None => {
            let _ = writeln!(s, "| **total** | | **{total:.2}** |\n");
        }
        Some(f) => {
            let _ = writeln!(s, "| **total** | | **{total:.2}** |");
            let (rows, events, archive) = forwarder::cost_rows(f);
            s.push_str(&rows);
            let _ = writeln!(
                s,
                "| **total with the forwarder** (and with its archive) | | **{:.2}** ({:.2}) |\n",
                total + events,
                total + events + archive
            );
        }
    }
    let _ = writeln!(
        s,
        "A late duplicate costs one receiver invocation and one conditional write: about ${:.2} per million. Lambda's INIT phase is billed too since 2025-08; at the measured cold init it is negligible.",
        prices::LAMBDA_REQUEST * 1e6 + prices::DDB_WRU * 1e6 + 10.0 / 1e3 * gb * prices::LAMBDA_ARM_GB_S * 1e6
    );
    s
}
