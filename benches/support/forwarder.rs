//! `make bench`, the processor with the EventBridge forwarder on (`EVENT_BUS_NAME`), against
//! moto's EventBridge: a bus with a rule to a subscriber queue, as a user's stack has.
//!
//! Two processor processes side by side, one with the forwarder and one without, each with its
//! own keep-alive front to moto (so each one's requests are counted apart), invoked in turn with
//! batches of 10 (the order alternating): both CPU figures come from the same pass, under the
//! same load of the machine, so their difference is the forwarder's. The forwarder reaches
//! EventBridge through `AWS_ENDPOINT_URL_EVENTBRIDGE` = the tests' [`BusProxy`], which records
//! the entries of every PutEvents request and their sizes, then through its own front to moto.
//!
//! Included by benches/stack.rs (`#[path]`), not by `support/mod.rs`: it needs tests/common.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_eventbridge::types::Target;
use serde_json::{Value, json};
use stigg_webhooks::config::QueueUrl;

use crate::common::bus_proxy::BusProxy;
use crate::common::runtime_api::{FunctionProcess, RuntimeApi};
use crate::common::{Resources, admin_config_for, create_queue, endpoint, queue_arn, take_all, unique};
use crate::support::{Requests, cpu_ns, keep_alive_front, ms, percentile, prices, status_kb, us};
use crate::{stigg_event, wait_first_poll};

const SOURCE: &str = "stigg.webhooks";
const BATCH: usize = 10;
/// Single-record invocations per process: what a trickle of webhooks costs in wall time.
const SINGLES: usize = 50;

/// One processor process's figures over the pass.
pub struct Side {
    pub cpu_per_event_ns: f64,
    pub batch_p50: Duration,
    pub batch_p99: Duration,
    /// Batch of 1 (a trickle of webhooks): p50.
    pub single_p50: Duration,
    pub rss_kb: u64,
    /// Requests its front carried over the batches, by operation.
    pub requests: BTreeMap<String, usize>,
}

pub struct Run {
    pub events: usize,
    pub off: Side,
    pub on: Side,
    /// Entries per PutEvents request over the batches, in order.
    pub put_events: Vec<usize>,
    /// Each entry's size as EventBridge computes it.
    pub entry_bytes: Vec<usize>,
    /// Events the rule delivered to the subscriber queue.
    pub delivered: usize,
    pub batch_window_ms: u64,
}

fn sqs_record(body: &str, key: &str) -> Value {
    json!({"messageId": uuid::Uuid::new_v4().to_string(), "receiptHandle": "rh", "body": body, "attributes": {},
           "messageAttributes": {"idempotency_key": {"stringValue": key, "dataType": "String"}},
           "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events"})
}

fn batches(template: &Value, tag: &str, events: usize, size: usize) -> Vec<Value> {
    let keys: Vec<String> = (0..events).map(|i| format!("{tag}-{i}")).collect();
    keys.chunks(size)
        .map(|c| json!({"Records": c.iter().map(|k| sqs_record(&stigg_event(template, k), k)).collect::<Vec<_>>()}))
        .collect()
}

struct Proc {
    api: RuntimeApi,
    process: FunctionProcess,
    requests: Requests,
}

impl Proc {
    async fn start(bin: &Path, env: Vec<(&'static str, String)>, requests: Requests) -> Self {
        let api = RuntimeApi::start(Duration::from_secs(60)).await;
        let process = FunctionProcess::spawn(bin, &api, &env);
        wait_first_poll(&api).await;
        Self { api, process, requests }
    }

    async fn invoke(&self, batch: &Value) -> Duration {
        let t = Instant::now();
        let out = self.api.invoke(batch, Duration::from_secs(60)).await.expect("batch");
        let took = t.elapsed();
        assert_eq!(out["batchItemFailures"], json!([]), "{out}");
        took
    }
}

/// `events` new events through each processor in batches of 10, then [`SINGLES`] batches of 1.
pub async fn measure(bin: &Path, template: &Value, res: &Resources, dlq: &QueueUrl, events: usize) -> Run {
    let eb = aws_sdk_eventbridge::Client::new(&admin_config_for(&endpoint()).await);
    let bus_arn = eb.create_event_bus().name(unique("bench-bus")).send().await.unwrap().event_bus_arn.unwrap();
    let subscriber = create_queue(&res.sqs, &unique("bench-subscriber"), false).await;
    let rule = unique("bench-all");
    eb.put_rule()
        .name(&rule)
        .event_bus_name(&bus_arn)
        .event_pattern(json!({"source": [SOURCE]}).to_string())
        .send()
        .await
        .unwrap();
    let target = Target::builder().id("q").arn(queue_arn(&res.sqs, &subscriber).await).build().unwrap();
    eb.put_targets().rule(&rule).event_bus_name(&bus_arn).targets(target).send().await.unwrap();

    let env = |front: &str| {
        vec![
            ("IDEMPOTENCY_TABLE", res.table.as_str().to_owned()),
            ("DEAD_LETTER_QUEUE_URL", dlq.as_str().to_owned()),
            ("AWS_ENDPOINT_URL", front.to_owned()),
            ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()),
        ]
    };
    let (off_front, off_requests) = keep_alive_front(endpoint()).await;
    let (on_front, on_requests) = keep_alive_front(endpoint()).await;
    let proxy = BusProxy::start(&on_front).await;
    let mut on_env = env(&on_front);
    // The shipped defaults otherwise (source, entry limit, batch window).
    on_env.push(("EVENT_BUS_NAME", bus_arn.clone()));
    on_env.push(("AWS_ENDPOINT_URL_EVENTBRIDGE", proxy.url()));
    let off = Proc::start(bin, env(&off_front), off_requests).await;
    let on = Proc::start(bin, on_env, on_requests).await;

    let off_batches = batches(template, "fwd-off", events, BATCH);
    let on_batches = batches(template, "fwd-on", events, BATCH);
    let (off_before, on_before) = (off.requests.snapshot(), on.requests.snapshot());
    let (off_cpu0, on_cpu0) = (cpu_ns(off.process.pid()), cpu_ns(on.process.pid()));
    let (mut off_lat, mut on_lat) = (Vec::new(), Vec::new());
    let mut delivered = 0;
    for (i, (b_off, b_on)) in off_batches.iter().zip(&on_batches).enumerate() {
        if i % 2 == 0 {
            off_lat.push(off.invoke(b_off).await);
            on_lat.push(on.invoke(b_on).await);
        } else {
            on_lat.push(on.invoke(b_on).await);
            off_lat.push(off.invoke(b_off).await);
        }
        // Taken off as it comes (both processes idle meanwhile): moto's PutEvents to an SQS
        // target slows down with the target queue's depth (~0.3 s a request at 800 messages).
        delivered += take_all(&res.sqs, &subscriber).await.len();
    }
    let off_cpu = (cpu_ns(off.process.pid()) - off_cpu0) as f64 / events as f64;
    let on_cpu = (cpu_ns(on.process.pid()) - on_cpu0) as f64 / events as f64;
    let (off_calls, on_calls) = (off.requests.since(&off_before), on.requests.since(&on_before));
    let put_events = proxy.requests();
    let entry_bytes = proxy.entry_bytes();

    let (mut off_single, mut on_single) = (Vec::new(), Vec::new());
    let off_singles = batches(template, "fwd-off-single", SINGLES, 1);
    let on_singles = batches(template, "fwd-on-single", SINGLES, 1);
    for (b_off, b_on) in off_singles.iter().zip(&on_singles) {
        off_single.push(off.invoke(b_off).await);
        on_single.push(on.invoke(b_on).await);
    }
    delivered += take_all(&res.sqs, &subscriber).await.len();

    for p in [&off, &on] {
        p.process.settled_lines().await;
        assert_eq!(p.process.count_message("event processed"), events + SINGLES);
    }
    let put = proxy.put();
    assert_eq!(put.len(), events + SINGLES, "every event put");
    assert!(put.values().all(|n| *n == 1), "every event put once");
    assert_eq!(proxy.failed(), 0);

    let side = |p: &Proc, cpu: f64, mut lat: Vec<Duration>, mut single: Vec<Duration>, requests| {
        lat.sort();
        single.sort();
        Side {
            cpu_per_event_ns: cpu,
            batch_p50: percentile(&lat, 0.5),
            batch_p99: percentile(&lat, 0.99),
            single_p50: percentile(&single, 0.5),
            rss_kb: status_kb(p.process.pid(), "VmHWM:"),
            requests,
        }
    };
    Run {
        events,
        off: side(&off, off_cpu, off_lat, off_single, off_calls),
        on: side(&on, on_cpu, on_lat, on_single, on_calls),
        put_events,
        entry_bytes,
        delivered,
        batch_window_ms: stigg_webhooks::forward::config::DEFAULT_BATCH_WINDOW.as_millis() as u64,
    }
}

fn service(op: &str) -> &'static str {
    match op {
        "PutEvents" => "EventBridge",
        _ if op.contains("Item") || ["Query", "Scan"].contains(&op) => "DynamoDB",
        _ if op.contains("Message") || op.contains("Queue") => "SQS",
        _ => "other",
    }
}

/// Requests per event of one service, e.g. "PutItem ×1.00, UpdateItem ×1.00", or "none".
fn per_event(requests: &BTreeMap<String, usize>, of: &str, events: usize) -> String {
    let ops: Vec<String> = requests
        .iter()
        .filter(|(op, _)| service(op) == of)
        .map(|(op, n)| format!("{op} ×{:.2}", *n as f64 / events as f64))
        .collect();
    if ops.is_empty() { "none".into() } else { ops.join(", ") }
}

fn mean(v: &[usize]) -> f64 {
    v.iter().sum::<usize>() as f64 / v.len().max(1) as f64
}

/// Billed EventBridge events per forwarded event: each 64 KB chunk of an entry is one.
pub fn billed_events_per_event(r: &Run) -> f64 {
    let chunks: usize = r.entry_bytes.iter().map(|b| b.div_ceil(prices::EVENTBRIDGE_CHUNK_BYTES).max(1)).sum();
    chunks as f64 / r.entry_bytes.len().max(1) as f64
}

pub fn mean_entry_bytes(r: &Run) -> f64 {
    mean(&r.entry_bytes)
}

/// The report's section: the processor with and without the forwarder, from the same pass.
pub fn section(r: &Run, main_cpu_ns: f64) -> String {
    let ok = |pass: bool| if pass { "✅" } else { "❌" };
    let batches = r.events.div_ceil(BATCH);
    let requests = r.put_events.len();
    let mut histogram: BTreeMap<usize, usize> = BTreeMap::new();
    for n in &r.put_events {
        *histogram.entry(*n).or_default() += 1;
    }
    let histogram =
        histogram.iter().rev().map(|(entries, n)| format!("{entries} entries ×{n}")).collect::<Vec<_>>().join(", ");
    let (min, max) =
        (r.entry_bytes.iter().min().copied().unwrap_or(0), r.entry_bytes.iter().max().copied().unwrap_or(0));
    let mut s = String::new();
    let _ = writeln!(s, "## The processor with the EventBridge forwarder on\n");
    let _ = writeln!(
        s,
        "Two processor processes side by side, without and with `EVENT_BUS_NAME` (moto's EventBridge: a bus with one rule to a subscriber queue; the shipped defaults: source `{SOURCE}`, batch window {} ms), each with its own keep-alive front to moto, invoked in turn with the same {} events in batches of {BATCH} (the order alternating), then {SINGLES} batches of 1 each. CPU is measured as for the processor above, both columns in the same pass. PutEvents requests and entries are counted by a proxy in front of moto's EventBridge (`AWS_ENDPOINT_URL_EVENTBRIDGE`), the other requests by each process's front.\n",
        r.batch_window_ms, r.events
    );
    let _ = writeln!(s, "| figure | forwarder off | forwarder on | |");
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(
        s,
        "| CPU time per event (batches of {BATCH}) | {} | {} | {}{} ({:+.0} %) |",
        us(r.off.cpu_per_event_ns),
        us(r.on.cpu_per_event_ns),
        if r.on.cpu_per_event_ns >= r.off.cpu_per_event_ns { "+" } else { "−" },
        us((r.on.cpu_per_event_ns - r.off.cpu_per_event_ns).abs()),
        (r.on.cpu_per_event_ns / r.off.cpu_per_event_ns - 1.0) * 100.0
    );
    let _ = writeln!(
        s,
        "| latency per batch of {BATCH}, p50 / p99 | {} / {} | {} / {} | |",
        ms(r.off.batch_p50),
        ms(r.off.batch_p99),
        ms(r.on.batch_p50),
        ms(r.on.batch_p99)
    );
    let _ = writeln!(
        s,
        "| latency of a batch of 1, p50 (its request goes once its one record joined: PutEvents on moto) | {} | {} | +{} |",
        ms(r.off.single_p50),
        ms(r.on.single_p50),
        ms(r.on.single_p50.saturating_sub(r.off.single_p50))
    );
    let _ = writeln!(
        s,
        "| peak RSS (VmHWM) | {:.1} MB | {:.1} MB | |",
        r.off.rss_kb as f64 / 1024.0,
        r.on.rss_kb as f64 / 1024.0
    );
    for of in ["DynamoDB", "SQS", "EventBridge"] {
        let _ = writeln!(
            s,
            "| {of} requests per event | {} | {} | |",
            per_event(&r.off.requests, of, r.events),
            per_event(&r.on.requests, of, r.events)
        );
    }
    let _ = writeln!(
        s,
        "| PutEvents requests per batch of {BATCH} (target: one per batch, not one per event) | | {:.2} ({requests} for {batches} batches) | {} |",
        requests as f64 / batches as f64,
        ok(requests <= batches)
    );
    let _ = writeln!(
        s,
        "| entries per PutEvents request: mean (distribution) | | {:.2} ({histogram}) | |",
        mean(&r.put_events)
    );
    let _ = writeln!(
        s,
        "| entry size as EventBridge computes it: mean (min – max) | | {:.0} B ({min} B – {max} B): {:.2} billed events each | |",
        mean(&r.entry_bytes),
        billed_events_per_event(r)
    );
    let _ = writeln!(
        s,
        "| events the rule delivered to its subscriber queue | | {} of {} | {} |\n",
        r.delivered,
        r.events + SINGLES,
        ok(r.delivered == r.events + SINGLES)
    );
    let _ = writeln!(
        s,
        "The processor figure of the tables above ({}, forwarder off) comes from its own pass earlier in the run; the two columns here come from one pass, so their difference is the forwarder's whatever else the machine was doing.\n",
        us(main_cpu_ns)
    );
    s
}

/// The cost model's rows for the forwarder, per million webhooks, and what they add (the
/// forwarder: its wait and its events put; the archive's ingestion).
pub fn cost_rows(r: &Run) -> (String, f64, f64) {
    let billed = billed_events_per_event(r);
    let wait = r.on.single_p50.saturating_sub(r.off.single_p50);
    let duration = wait.as_secs_f64() * (128.0 / 1024.0) * prices::LAMBDA_ARM_GB_S * 1e6;
    let events = billed * prices::EVENTBRIDGE_EVENT * 1e6;
    let bytes = mean_entry_bytes(r);
    let archive = bytes * 1e6 / 1e9 * prices::EVENTBRIDGE_ARCHIVE_GB;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| Lambda duration, the forwarder's wait | +{} per processor invocation measured at a batch of 1 (the worst case, as above: PutEvents on moto; the {} ms window is only a bound, not waited) × 0.125 GB × ${}/GB-s | {duration:.2} |",
        ms(wait),
        r.batch_window_ms,
        prices::LAMBDA_ARM_GB_S
    );
    let _ = writeln!(
        s,
        "| EventBridge custom events, forwarder on (`EVENT_BUS_NAME`) | $1.00 per million events put, each 64 KB chunk of an entry billed as one event ([pricing](https://aws.amazon.com/eventbridge/pricing/)); entries measured {bytes:.0} B on average, under 64 KB: {billed:.2} event per webhook | {events:.2} |"
    );
    let _ = writeln!(
        s,
        "| EventBridge archive ingestion, optional (an archive on the bus) | {bytes:.0} B per event measured (the entry's size) × $0.10/GB ([pricing](https://aws.amazon.com/eventbridge/pricing/)); storage then ${}/GB-month of retention | {archive:.2} |",
        prices::EVENTBRIDGE_ARCHIVE_STORAGE_GB_MONTH
    );
    (s, duration + events, archive)
}
