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
