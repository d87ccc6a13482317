//! `make bench-mirror` (also part of `make bench`): the entitlement mirror against moto, in a
//! release build. `check` latency and the client's CPU per check, the DynamoDB calls each kind
//! of event costs, and the item size by number of features. Writes its section of
//! BENCHMARKS.md (between the mirror markers, inside the part `make bench` keeps).
//!
//! Latency includes moto (a Python emulator, far slower than DynamoDB): it bounds what the code
//! adds. CPU is this process's own (getrusage), so it does not depend on moto's speed.

#[allow(unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use stigg_webhooks::event::StiggEvent;
use stigg_webhooks::handler::Handler;
use stigg_webhooks::mirror::{Mirror, MirrorHandler, MirrorStore, item_size};

const CHECKS: usize = 1000;
const BEGIN: &str = "<!-- mirror: written by `make bench-mirror` -->";
const END: &str = "<!-- /mirror -->";

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc (ticks of 1/100 s are too coarse: use rusage).
    let mut usage = std::mem::MaybeUninit::<libc_rusage>::zeroed();
    unsafe { getrusage(0, usage.as_mut_ptr()) };
    let u = unsafe { usage.assume_init() };
    (u.utime_sec + u.stime_sec) as f64 + (u.utime_usec + u.stime_usec) as f64 / 1e6
}

#[repr(C)]
struct libc_rusage {
    utime_sec: i64,
    utime_usec: i64,
    stime_sec: i64,
    stime_usec: i64,
    rest: [i64; 14],
}

unsafe extern "C" {
    fn getrusage(who: i32, usage: *mut libc_rusage) -> i32;
}

fn iso(ms: i64) -> String {
    stigg_webhooks::metrics::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
}

fn snapshot(customer: &str, t: i64, features: usize) -> String {
    let entitlements: Vec<_> = (0..features)
        .map(|i| {
            json!({"feature": {"entityId": "4ff99f8c-fdb0-42a0-b3ac-aef46630cedf", "id": format!("feature-{i:04}"),
            "name": "Cloud storage", "description": "", "featureType": "NUMBER", "meterType": "INCREMENTAL",
            "unit": "Tb", "units": "Tbs", "status": "NEW", "enumConfiguration": null},
            "usageLimit": 1000, "hasUnlimitedUsage": false, "hasSoftLimit": false, "currentUsage": 17,
            "usagePeriodAnchor": "2026-12-01T00:00:00.000Z", "usagePeriodStart": "2026-12-01T00:00:00.000Z",
            "usagePeriodEnd": "2027-01-01T00:00:00.000Z", "resetPeriod": "MONTH",
            "resetPeriodConfiguration": {"accordingTo": "SubscriptionStart"}, "enumValues": null})
        })
        .collect();
    json!({"type": "entitlements.updated", "messageId": format!("m-{customer}-{t}"), "timestamp": iso(t),
        "customer": {"id": customer}, "resource": null, "entitlements": entitlements, "entitlementsUpdatedAt": iso(t)})
    .to_string()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let admin = aws_sdk_dynamodb::Client::new(&admin_config_for(&ddb_endpoint()).await);
    let table = create_mirror_table(&admin).await;
    let recorder = Recorder::default();
    let sdk = sdk_config_for(&ddb_endpoint()).await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk).interceptor(recorder.clone()).build(),
    );
    let handler = MirrorHandler::new(MirrorStore::new(client.clone(), table.clone()));

    // Calls per event.
    let t0 = 1_790_000_000_000i64;
    let mut calls: Vec<(&str, BTreeMap<String, usize>)> = Vec::new();
    let usage = |t: i64, v: f64| {
        json!({"type": "entitlement.usage_exceeded", "messageId": format!("u-{t}"), "timestamp": iso(t),
        "currentUsage": v, "feature": {"id": "feature-0001"}, "customer": {"id": "bench-customer"}, "resource": null})
        .to_string()
    };
    let events = [
        ("new snapshot (100 features)", snapshot("bench-customer", t0 + 10_000, 100)),
        ("stale snapshot (older than the stored one)", snapshot("bench-customer", t0, 100)),
        ("usage event newer than the snapshot", usage(t0 + 20_000, 42.0)),
        ("stale usage event", usage(t0 + 15_000, 41.0)),
        (
            "usage event before any snapshot (other customer)",
            json!({"type": "entitlement.usage_exceeded", "messageId": "u-x",
            "timestamp": iso(t0), "currentUsage": 1, "feature": {"id": "f"}, "customer": {"id": "early"}})
            .to_string(),
        ),
        (
            "customer.deleted (1 item)",
            json!({"type": "customer.deleted", "messageId": "d-1", "timestamp": iso(t0 + 30_000),
            "id": "bench-customer"})
            .to_string(),
        ),
        ("late snapshot after the deletion", snapshot("bench-customer", t0 + 25_000, 100)),
    ];
    for (what, body) in &events {
        recorder.reset();
        handler.handle(&StiggEvent::parse(body).unwrap()).await.unwrap();
        calls.push((what, recorder.clone_counts()));
    }

    // check latency and CPU, on a small and a large snapshot (moto's time grows with the item).
    let mirror = Mirror::new(client.clone(), table.clone());
    let mut checks = Vec::new();
    for features in [10usize, 100] {
        let customer = format!("check-{features}");
        handler.handle(&StiggEvent::parse(&snapshot(&customer, t0, features)).unwrap()).await.unwrap();
        for _ in 0..50 {
            mirror.check(&customer, None, "feature-0001", 1.0).await.unwrap();
        }
        let mut latencies = Vec::with_capacity(CHECKS);
        let cpu_before = cpu_seconds();
        let started = Instant::now();
        for i in 0..CHECKS {
            let t = Instant::now();
            let access = mirror.check(&customer, None, &format!("feature-{:04}", i % features), 1.0).await.unwrap();
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(access.has_access);
        }
        let wall = started.elapsed().as_secs_f64();
        let cpu_us = (cpu_seconds() - cpu_before) / CHECKS as f64 * 1e6;
        latencies.sort_by(f64::total_cmp);
        checks.push((
            features,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            cpu_us,
            CHECKS as f64 / wall,
        ));
    }
    let sizes: Vec<(usize, usize)> = [10usize, 100, 500]
        .iter()
        .map(|&k| {
            let event = StiggEvent::parse(&snapshot("size", t0, k)).unwrap();
            let write = stigg_webhooks::mirror::SnapshotWrite::from_event(&event).unwrap();
            (k, item_size(&write.item(0)))
        })
        .collect();

    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}\n## The entitlement mirror (`make bench-mirror`)\n");
    let _ = writeln!(s, "Release build, this process against moto on 127.0.0.1 ({}).\n", std::env::consts::ARCH);
    let _ = writeln!(s, "| figure | measured |\n|---|---|");
    for (features, p50, p99, cpu_us, rate) in &checks {
        let _ = writeln!(
            s,
            "| `Mirror::check` on a {features}-feature snapshot: latency p50 / p99 ({CHECKS} checks, eventually consistent) | {p50:.2} ms / {p99:.2} ms |"
        );
        let _ = writeln!(
            s,
            "| … client CPU per check (getrusage of this process) / checks per second, one client | {cpu_us:.0} µs / {rate:.0} |"
        );
    }
    for (k, bytes) in &sizes {
        let _ = writeln!(
            s,
            "| item size, {k} features | {bytes} B ({:.1} % of the 400 KB limit) |",
            *bytes as f64 / 4096.0
        );
    }
    let _ = writeln!(s, "\nDynamoDB calls per event (counted at the SDK):\n\n| event | calls |\n|---|---|");
    for (what, c) in &calls {
        let list = c.iter().map(|(op, n)| format!("{op} ×{n}")).collect::<Vec<_>>().join(", ");
        let _ = writeln!(s, "| {what} | {list} |");
    }
    let _ = writeln!(
        s,
        "\nThe latency is mostly moto's: it copies and serializes the whole item in Python for every GetItem, so it grows with the item although `check` asks for one feature (a projection). DynamoDB answers a GetItem in single-digit milliseconds. The client CPU is the SDK call (signing, HTTP, parsing) plus the check."
    );
    let kb100 = sizes.iter().find(|(k, _)| *k == 100).map_or(0, |(_, b)| b.div_ceil(1024));
    let _ = writeln!(
        s,
        "\nA stale event costs one failed conditional write and nothing else. A written snapshot costs one UpdateItem and one strongly consistent BatchGetItem (the tombstone and the item's usage attributes); on-demand, an UpdateItem of an item of N KB is N write units, so a 100-feature snapshot (~{kb100} KB) is ~{kb100} WRU.\n{END}"
    );
    println!("{s}");

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) => format!("{}{}{}", &old[..a], s.trim_end(), &old[b + END.len()..]),
        _ => format!("{}\n{}\n", old.trim_end(), s.trim_end()),
    };
    std::fs::write(&path, new).unwrap();
}
