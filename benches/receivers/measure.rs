//! What is measured, and how: cold starts (spawn → first `GET /next`, the RSS right then, the
//! first invocation), warm passes in turn with CPU, requests, log bytes and peak RSS per
//! participant, optionally under a cgroup v1 CPU cap at a Lambda memory size's share, and our
//! processor's pass for the cost model.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::runtime_api::{FunctionProcess, RuntimeApi};
use crate::common::{admin_config_for, create_queue, endpoint, unique};
use crate::participants::{Admin, Code, Floor, Live, Target, Who, stigg_event, wait_first_poll};
use crate::support::{cpu_ns, percentile, status_kb};

pub const WARM_UP: usize = 50;
// The cap is shared with benches/processors.
pub use crate::support::cpu_cap::{CpuCap, FULL_VCPU_MB, PERIOD_US};

#[derive(Default, Clone)]
pub struct Phase {
    pub lat: Vec<Duration>,
    pub cpu_ns: f64,
    pub requests: BTreeMap<String, usize>,
    pub log_bytes: f64,
    /// Of `log_bytes`, the EMF metric documents.
    pub emf_bytes: f64,
}

impl Phase {
    pub fn p(&self, q: f64) -> Duration {
        let mut v = self.lat.clone();
        v.sort();
        percentile(&v, q)
    }
    pub fn mean_ms(&self) -> f64 {
        self.lat.iter().map(|d| d.as_secs_f64() * 1e3).sum::<f64>() / self.lat.len() as f64
    }
    /// Lambda bills each invocation's duration rounded up to the millisecond.
    pub fn billed_ms(&self, minus_ms: f64, plus_ms: f64) -> f64 {
        self.lat.iter().map(|d| (d.as_secs_f64() * 1e3 - minus_ms + plus_ms).max(1.0).ceil()).sum::<f64>()
            / self.lat.len() as f64
    }
}

#[derive(Default, Clone)]
pub struct Pass {
    pub new: Phase,
    pub dup: Phase,
    pub rss_kb: u64,
    /// Fraction of CFS periods in which the capped function was throttled.
    pub throttled: Option<f64>,
}

pub fn per_event(before: u64, after: u64, n: usize) -> f64 {
    (after - before) as f64 / n as f64
}

/// What a warm pass delivers: `n` new events (and again as late duplicates), ids tagged `tag`,
/// at `cap_mb`'s CPU share after init, or uncapped.
pub struct PassSpec<'a> {
    pub tag: &'a str,
    pub n: usize,
    pub duplicates: bool,
    pub cap_mb: Option<u64>,
}

/// A warm pass: each function started fresh, warmed up, then (if `cap_mb`) capped, then `n` new
/// events and (if `duplicates`) the same `n` again as late duplicates, all participants in turn.
pub async fn warm_pass(
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
pub struct Cold {
    pub init: Vec<Duration>,
    /// VmRSS at the first `GET /next`, kB, one per cold start.
    pub rss_init_kb: Vec<u64>,
    pub first: Vec<Duration>,
}

/// Cold starts in turn: spawn → first `GET /next` (and the RSS then), then the first invocation
/// (a new event).
pub async fn cold_starts(
    code: &Code,
    targets: &[Target],
    template: &Value,
    tag: &str,
    n: usize,
) -> BTreeMap<Who, Cold> {
    let mut out: BTreeMap<Who, Cold> = BTreeMap::new();
    for i in 0..=n {
        for t in targets.iter().filter(|t| t.who != Who::Floor) {
            let (live, init, rss_init_kb) = Live::start(code, t).await;
            let first = live.deliver(&stigg_event(template, &format!("{tag}-cold-{}-{i}", t.who.slug())), true).await;
            drop(live);
            if i > 0 {
                // Start 0 of each only warms the page cache.
                let c = out.entry(t.who).or_default();
                c.init.push(init);
                c.rss_init_kb.push(rss_init_kb);
                c.first.push(first);
            }
        }
    }
    out
}

/// Our processor at a 128 MB share, one record per invocation (a trickle of webhooks, the
/// costliest case), for the cost model: its billed duration, writes and log bytes per event.
pub async fn processor_pass(code: &Code, target: &Target, floor: &Floor, template: &Value, n: usize) -> (Phase, Phase) {
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
