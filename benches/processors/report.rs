//! The bench's BENCHMARKS.md section and its JSON result file (what the receivers bench's cost
//! model reads of our processor).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::events::{RECORDS, Scenario};
use crate::pass::{Outcome, PassResult, Who, mean_ms};
use crate::support::cpu_cap::{PERIOD_US, quota_us};
use crate::support::{percentile, prices};

/// The target: ours at least this many times less CPU per event than the Python peer.
pub const CPU_RATIO_TARGET: f64 = 3.0;

pub struct Settings {
    pub runs: usize,
    pub batches: usize,
    pub warm_up: usize,
    pub cap_mb: Option<u64>,
    pub elapsed: Duration,
}

pub type Runs = Vec<BTreeMap<Scenario, PassResult>>;

/// Median, min and max.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn show(v: Vec<f64>, f: impl Fn(f64) -> String) -> String {
    let (m, lo, hi) = spread(v);
    if lo == hi { f(m) } else { format!("{} ({} – {})", f(m), f(lo), f(hi)) }
}

fn sorted(lat: &[Duration]) -> Vec<Duration> {
    let mut v = lat.to_vec();
    v.sort();
    v
}

fn p_ms(o: &Outcome, q: f64) -> f64 {
    percentile(&sorted(&o.lat), q).as_secs_f64() * 1e3
}

fn requests_per_event(o: &Outcome) -> f64 {
    o.requests.values().sum::<usize>() as f64 / o.events as f64
}

fn ratio(runs: &Runs, s: Scenario, r: usize) -> f64 {
    let p = &runs[r][&s].by;
    p[&Who::Python].cpu_us_per_event() / p[&Who::Ours].cpu_us_per_event()
}

pub fn markdown(set: &Settings, runs: &Runs) -> String {
    let mut s = String::new();
    let share = match set.cap_mb {
        Some(mb) => format!(
            "then each process capped to a {mb} MB Lambda's CPU share (cgroup v1 quota: {}/{PERIOD_US} µs)",
            quota_us(mb)
        ),
        None => "then **uncapped** (no writable cgroup v1 cpu controller: run as root for the 128 MB share)".into(),
    };
    let _ = writeln!(s, "## The processor, side by side (`benches/processors`)\n");
    let _ = writeln!(
        s,
        "Our `processor` (the release build) and the Python peer `benches/peers/python/processor.py` (Powertools \
         `BatchProcessor` with idempotency per event key in DynamoDB, boto3), as processes under the same Runtime API \
         emulator against the same moto, each with its own idempotency table (new for every pass) and a keep-alive \
         front that counts its requests. SQS events as the event source mapping sends them, batches of {RECORDS}: the \
         Stigg events of `events/stigg/` in turn, each with a fresh `messageId` and the message attributes our \
         receiver queues it with. One invocation at a time per function (one Lambda instance), the two in turn, who \
         goes first rotating. Each pass: {} warm-up batches uncapped, {share}, and {} batches. **One in ten failing**: \
         one record per batch is a Stigg event cut short (not JSON); every answer is checked to name it, and only \
         it, in `batchItemFailures` (ours runs without `DEAD_LETTER_QUEUE_URL`, so it reports poison as a failure \
         and leaves it to the queue's redrive policy, as the peer does), and the `event processed` lines to be one \
         per other record. Events per second = events ÷ the function's own batch latencies summed. {} of both \
         scenarios ({:.0} s in all); each figure is the median of the runs (min – max).\n",
        set.warm_up,
        set.batches,
        if set.runs == 1 { "1 run".to_owned() } else { format!("{} runs", set.runs) },
        set.elapsed.as_secs_f64()
    );

    let _ = writeln!(s, "### Against the target\n");
    let _ = writeln!(s, "| target | {} | {} |", Scenario::Happy.label(), Scenario::Failing.label());
    let _ = writeln!(s, "|---|---|---|");
    let cells: Vec<String> = Scenario::ALL
        .iter()
        .map(|&sc| {
            let rs: Vec<f64> = (0..runs.len()).map(|r| ratio(runs, sc, r)).collect();
            let pass = rs.iter().all(|&x| x >= CPU_RATIO_TARGET);
            let list = rs.iter().map(|x| format!("{x:.1}×")).collect::<Vec<_>>().join(", ");
            format!("{list} {}", if pass { "✅" } else { "❌" })
        })
        .collect();
    let _ = writeln!(
        s,
        "| ours ≥ {CPU_RATIO_TARGET:.0}× less CPU per event than the Python peer, run by run | {} | {} |\n",
        cells[0], cells[1]
    );

    let _ = writeln!(s, "### Figures\n");
    let cols: Vec<(Scenario, Who)> =
        Scenario::ALL.iter().flat_map(|&sc| Who::ALL.iter().map(move |&w| (sc, w))).collect();
    let _ = writeln!(
        s,
        "| figure | {} |",
        cols.iter().map(|(sc, w)| format!("{}, {}", w.label(), sc.label())).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "|---|{}", "---|".repeat(cols.len()));
    let row = |s: &mut String, name: &str, f: &dyn Fn(&Outcome) -> f64, fmt: &dyn Fn(f64) -> String| {
        let cells: Vec<String> =
            cols.iter().map(|(sc, w)| show(runs.iter().map(|r| f(&r[sc].by[w])).collect(), fmt)).collect();
        let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
    };
    let f_us = |v: f64| format!("{v:.0} µs");
    let f_ms = |v: f64| format!("{v:.1} ms");
    let at = set.cap_mb.map_or("uncapped".to_owned(), |mb| format!("{mb} MB share"));
    row(&mut s, "**CPU per event**", &Outcome::cpu_us_per_event, &f_us);
    row(&mut s, &format!("**events per second per function** ({at})"), &Outcome::events_per_s, &|v| format!("{v:.1}"));
    row(&mut s, "batch of 10: mean", &Outcome::mean_batch_ms, &f_ms);
    row(&mut s, "batch of 10: p50", &|o| p_ms(o, 0.5), &f_ms);
    row(&mut s, "batch of 10: p99", &|o| p_ms(o, 0.99), &f_ms);
    let reported: Vec<String> = cols
        .iter()
        .map(|(sc, w)| {
            let per_run: Vec<String> = runs
                .iter()
                .map(|r| {
                    let o = &r[sc].by[w];
                    format!("{} of {}", o.failed_reported, o.failing_sent)
                })
                .collect();
            per_run.join(", ")
        })
        .collect();
    let _ = writeln!(s, "| records reported failed, of those failing (each run) | {} |", reported.join(" | "));
    row(&mut s, "requests to moto per event", &requests_per_event, &|v| format!("{v:.2}"));
    let ops: Vec<String> = cols
        .iter()
        .map(|(sc, w)| {
            let o = &runs[0][sc].by[w];
            o.requests
                .iter()
                .map(|(op, n)| format!("{op} {:.2}", *n as f64 / o.events as f64))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    let _ = writeln!(s, "| of which, by operation (first run) | {} |", ops.join(" | "));
    row(&mut s, "peak RSS (VmHWM)", &|o| o.rss_kb as f64 / 1024.0, &|v| format!("{v:.1} MiB"));
    row(&mut s, "output per event (log lines)", &|o| o.log_bytes as f64 / o.events as f64, &|v| format!("{v:.0} B"));
    if set.cap_mb.is_some() {
        row(&mut s, "periods throttled", &|o| o.throttled.unwrap_or(f64::NAN) * 100.0, &|v| format!("{v:.0} %"));
    }
    let floor: Vec<String> = cols
        .iter()
        .map(|(sc, w)| match w {
            Who::Ours => show(runs.iter().map(|r| mean_ms(&r[sc].floor)).collect(), f_ms),
            Who::Python => String::new(),
        })
        .collect();
    let _ = writeln!(s, "| moto floor of our calls per batch, mean | {} |\n", floor.join(" | "));

    let _ = writeln!(s, "Run by run:\n");
    let _ = writeln!(s, "| run | scenario | CPU per event, ours / Python | ratio | events/s, ours / Python |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (r, run) in runs.iter().enumerate() {
        for sc in Scenario::ALL {
            let (o, p) = (&run[&sc].by[&Who::Ours], &run[&sc].by[&Who::Python]);
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} / {:.0} µs | {:.1}× | {:.1} / {:.1} |",
                r + 1,
                sc.label(),
                o.cpu_us_per_event(),
                p.cpu_us_per_event(),
                ratio(runs, sc, r),
                o.events_per_s(),
                p.events_per_s()
            );
        }
    }
    let _ = writeln!(
        s,
        "\nLatencies and events per second include moto (a Python emulator, far slower than DynamoDB): they are what \
         each function achieves here, CPU-bound as much as I/O-bound at this share; CPU time is each process's own \
         (all threads, `/proc/<pid>/task/*/schedstat`), so it does not depend on moto's speed. The moto floor is as \
         many writes as our processor makes for a batch (two per record processed: a conditional PutItem and an \
         UpdateItem, where ours makes two UpdateItems), at its concurrency of {}, straight from a client in the bench \
         process, uncapped. Lambda prices the duration per GB-second \
         (${}/GB-s arm64), so at 128 MB, CPU saved is billed time saved once the I/O wait is paid.",
        stigg_webhooks::config::DEFAULT_PROCESSOR_CONCURRENCY,
        prices::LAMBDA_ARM_GB_S
    );
    s
}

fn figures(o: &Outcome) -> Value {
    json!({
        "mean_batch_ms": o.mean_batch_ms(),
        "p50_batch_ms": p_ms(o, 0.5),
        "p99_batch_ms": p_ms(o, 0.99),
        "cpu_us_per_event": o.cpu_us_per_event(),
        "events_per_s": o.events_per_s(),
        "requests_per_event": o.requests.iter().map(|(op, n)| (op.clone(), json!(*n as f64 / o.events as f64))).collect::<serde_json::Map<_, _>>(),
        "log_bytes_per_event": o.log_bytes as f64 / o.events as f64,
        "peak_rss_mib": o.rss_kb as f64 / 1024.0,
        "failing_sent": o.failing_sent,
        "failed_reported": o.failed_reported,
        "events": o.events,
    })
}

/// Per processor and scenario: the medians over the runs of the figures the cost model uses,
/// and every run's figures.
pub fn json(set: &Settings, runs: &Runs) -> Value {
    let mut by = serde_json::Map::new();
    for who in Who::ALL {
        let mut scenarios = serde_json::Map::new();
        for sc in Scenario::ALL {
            let outcomes: Vec<&Outcome> = runs.iter().map(|r| &r[&sc].by[&who]).collect();
            let med = |f: fn(&Outcome) -> f64| spread(outcomes.iter().map(|o| f(o)).collect()).0;
            let mut v = json!({
                "mean_batch_ms": med(Outcome::mean_batch_ms),
                "cpu_us_per_event": med(Outcome::cpu_us_per_event),
                "events_per_s": med(Outcome::events_per_s),
                "log_bytes_per_event": med(|o| o.log_bytes as f64 / o.events as f64),
                "runs": outcomes.iter().map(|o| figures(o)).collect::<Vec<_>>(),
            });
            if who == Who::Ours {
                v["floor_mean_batch_ms"] = json!(spread(runs.iter().map(|r| mean_ms(&r[&sc].floor)).collect()).0);
                v["floor_runs_ms"] = json!(runs.iter().map(|r| mean_ms(&r[&sc].floor)).collect::<Vec<_>>());
            }
            scenarios.insert(sc.slug().to_owned(), v);
        }
        by.insert(
            match who {
                Who::Ours => "ours",
                Who::Python => "python",
            }
            .to_owned(),
            Value::Object(scenarios),
        );
    }
    json!({
        "schema": 1,
        "bench": "benches/processors",
        "measured_at": stigg_webhooks::metrics::rfc3339(std::time::SystemTime::now()),
        "memory_mb": set.cap_mb,
        "cpu_quota_us": set.cap_mb.map(quota_us),
        "cpu_period_us": PERIOD_US,
        "records_per_batch": RECORDS,
        "batches_per_run": set.batches,
        "runs": set.runs,
        "processor_concurrency": stigg_webhooks::config::DEFAULT_PROCESSOR_CONCURRENCY,
        "ours": by["ours"],
        "python": by["python"],
    })
}
