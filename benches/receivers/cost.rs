//! The cost model: what a million webhooks cost on AWS for each receiver (plus our processor),
//! from the capped passes' latency, the requests and the log bytes measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::RunResult;
use crate::measure::{Pass, Phase};
use crate::participants::{RECEIVERS, Who};
use crate::support::prices;

/// What the cost model assumes AWS itself takes for the receiver's three calls (PutItem,
/// SendMessage, UpdateItem) and the processor's two (PutItem, UpdateItem): moto is far slower
/// than DynamoDB and SQS, so the measured floor is subtracted and this added back.
const AWS_RECEIVER_IO_MS: f64 = 15.0;
const AWS_PROCESSOR_IO_MS: f64 = 10.0;

type Pick = fn(&RunResult) -> Option<&BTreeMap<Who, Pass>>;

/// Our processor's share of a webhook, per event.
struct ProcessorShare {
    /// Lambda invocations (1 at batches of 1; 1/10 at batches of 10).
    invocations: f64,
    billed_ms: f64,
    basis: String,
    writes: f64,
    /// The event source mapping's ReceiveMessage and DeleteMessageBatch.
    esm_requests: f64,
    log_bytes: f64,
}

/// From `make bench-processors` (benches/processors: batches of 10 at a 128 MB share), when its
/// result file is there: the processor as it runs under load, batches of 10.
fn processor_from_bench() -> Option<ProcessorShare> {
    let path = crate::support::result_file("processors");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    // Only a capped run (a 128 MB share) of the processor binary measured here, not an older one.
    if json["schema"] != 1 || json["memory_mb"] != 128 {
        eprintln!("{}: not a capped (128 MB) run; the cost model uses this bench's own processor pass", path.display());
        return None;
    }
    let binary = std::env::var_os("BENCH_BIN_DIR").map(|d| std::path::PathBuf::from(d).join("processor"));
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(result), Some(binary)) = (modified(&path), binary.as_deref().and_then(modified))
        && result < binary
    {
        eprintln!("{}: older than the processor measured here; run `make bench-processors`", path.display());
        return None;
    }
    let n = json["records_per_batch"].as_f64().filter(|n| *n >= 1.0)?;
    let ours = &json["ours"]["happy"];
    let batch = ours["mean_batch_ms"].as_f64()? - ours["floor_mean_batch_ms"].as_f64()? + AWS_PROCESSOR_IO_MS;
    let billed_batch = batch.max(1.0).ceil();
    let requests = ours["runs"][0]["requests_per_event"].as_object()?;
    let writes = requests
        .iter()
        .filter(|(op, _)| ["PutItem", "UpdateItem", "DeleteItem"].contains(&op.as_str()))
        .filter_map(|(_, v)| v.as_f64())
        .sum();
    Some(ProcessorShare {
        invocations: 1.0 / n,
        billed_ms: billed_batch / n,
        basis: format!(
            "{billed_batch:.0} ms billed per batch of {n:.0} ÷ {n:.0} (benches/processors, {})",
            json["measured_at"].as_str().unwrap_or("?")
        ),
        writes,
        esm_requests: 2.0 / n,
        log_bytes: ours["log_bytes_per_event"].as_f64()?,
    })
}

/// The cost section, and each receiver's total per million webhooks (USD; empty when the capped
/// passes were not run).
pub fn model(results: &[RunResult], processor: Option<&(Phase, Phase)>, events: usize) -> (String, BTreeMap<Who, f64>) {
    let mut s = String::new();
    let d = |v: std::time::Duration| v.as_secs_f64() * 1e3;
    let mut totals = BTreeMap::new();
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
            let proc = processor_from_bench().unwrap_or_else(|| {
                let billed_ms = proc_phase.billed_ms(proc_floor.mean_ms(), AWS_PROCESSOR_IO_MS);
                ProcessorShare {
                    invocations: 1.0,
                    billed_ms,
                    basis: format!("{billed_ms:.1} ms billed, batches of 1 (no `make bench-processors` result)"),
                    writes: writes(&proc_phase.requests, proc_phase.lat.len()),
                    esm_requests: 2.0,
                    log_bytes: proc_phase.log_bytes,
                }
            });
            let (proc_writes, sqs_esm) = (proc.writes, proc.esm_requests);
            let _ = writeln!(
                s,
                "The processor's share: {}.\n",
                if proc.invocations < 1.0 {
                    "as `make bench-processors` measured it (benches/processors: batches of 10 at a 128 MB share), \
                     so a tenth of an invocation, of a ReceiveMessage and of a DeleteMessageBatch per webhook"
                } else {
                    "one record per invocation (batches of 1, a trickle), from this bench's own processor pass"
                }
            );
            // The receivers measured, in their order (the header must match the cells below).
            let priced: Vec<Who> =
                RECEIVERS.into_iter().filter(|w| results.first().is_some_and(|r| r.warm.contains_key(w))).collect();
            let _ = writeln!(
                s,
                "| per million webhooks, USD | {} |",
                priced.iter().map(|w| w.label()).collect::<Vec<_>>().join(" | ")
            );
            let _ = writeln!(s, "|---|{}", "---|".repeat(priced.len()));
            let mut lines: Vec<(String, Vec<String>)> = Vec::new();
            for &who in &priced {
                let Some(w) = results.first().and_then(|r| r.warm.get(&who)) else { continue };
                let rb = billed(c128, who).unwrap_or(f64::NAN);
                let items = [
                    (
                        "Lambda requests (receiver + processor)",
                        (1.0 + proc.invocations) * prices::LAMBDA_REQUEST * 1e6,
                        format!("{:.1} × $0.20/M", 1.0 + proc.invocations),
                    ),
                    ("receiver duration, 128 MB", gb_s(rb, 128.0), format!("{rb:.1} ms billed")),
                    ("processor duration, 128 MB (ours)", gb_s(proc.billed_ms, 128.0), proc.basis.clone()),
                    (
                        "DynamoDB writes",
                        (writes(&w.new.requests, events) + proc_writes) * prices::DDB_WRU * 1e6,
                        format!("{:.1} + {proc_writes:.1} WRU", writes(&w.new.requests, events)),
                    ),
                    (
                        "SQS requests",
                        (sends(&w.new.requests, events) + sqs_esm) * prices::SQS_REQUEST * 1e6,
                        format!("{:.1} send + {sqs_esm:.1} receive/delete", sends(&w.new.requests, events)),
                    ),
                    (
                        "CloudWatch Logs (function output)",
                        (w.new.log_bytes + proc.log_bytes) * prices::LOGS_GB * 1e6 / 1e9,
                        format!("{:.0} + {:.0} B", w.new.log_bytes, proc.log_bytes),
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
            let ours = t(Who::Ours);
            let others: Vec<Who> = priced.iter().copied().filter(|w| *w != Who::Ours).collect();
            let _ = writeln!(
                s,
                "| **total** | {} |\n",
                priced
                    .iter()
                    .map(|w| if *w == Who::Ours {
                        format!("**{ours:.2}**")
                    } else {
                        format!("**{:.2}** ({:.2}× ours)", t(*w), t(*w) / ours)
                    })
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            let _ = writeln!(
                s,
                "Like for like, without the receiver's EMF metric bytes (the peers emit no metrics): ours **{:.2}**, {}.\n",
                ours - emf_usd,
                others
                    .iter()
                    .map(|w| format!("the {} {:.2} ({:.2}× ours)", w.label(), t(*w), t(*w) / (ours - emf_usd)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let _ = writeln!(
                s,
                "Our receiver writes its `Requests` metric (EMF, in the same line as the request's log fields) for every \
                 outcome but accepted: the alarms read the refusals and failures, and the dashboard derives accepted \
                 requests from the function URL's own metrics, so a new event's line carries no metric bytes (the row \
                 \"of which EMF metrics\" above counts any `_aws` block and metric-only members). The peers emit no \
                 metrics at all, so a user who wanted theirs would add Powertools Metrics and its bytes. Lambda's own \
                 platform lines (START, END, REPORT) are the same for every runtime and not counted. EMF metrics \
                 themselves are billed per metric per month, not per event.\n"
            );
            let _ = writeln!(
                s,
                "**The receiver's memory size**, from the capped passes (duration cost only, per million new events):\n"
            );
            let _ = writeln!(s, "| receiver | 128 MB: billed, USD | 256 MB: billed, USD | cheaper |");
            let _ = writeln!(s, "|---|---|---|---|");
            for &who in &priced {
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
    (s, totals)
}
