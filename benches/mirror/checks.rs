//! The mirror's own figures: DynamoDB calls per kind of event, the largest snapshot's write,
//! `check` latency, CPU and read units on 10, 100 and 3,000 features, the item sizes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use serde_json::json;
use stigg_webhooks::event::StiggEvent;
use stigg_webhooks::handler::Handler;
use stigg_webhooks::mirror::{Mirror, MirrorHandler, MirrorStore, SnapshotWrite, item_size};

use crate::{CHECKS, cpu_seconds, iso, percentile};

/// `entitlements.updated` with `features` entitlements: Stigg's full shape (the documented
/// example's fields), or `compact` (tests/mirror.rs's: the fields a check reads), whose 3,000
/// features (~0.9 MB) still fit SQS's 1 MiB where the full shape's (~1.7 MB) do not.
pub fn snapshot(customer: &str, t: i64, features: usize, compact: bool) -> String {
    let entitlements: Vec<_> = (0..features)
        .map(|i| {
            if compact {
                return json!({"feature": {"id": format!("feature-{i:04}"), "featureType": "NUMBER", "meterType": "INCREMENTAL",
                "unit": "call", "units": "calls"}, "usageLimit": 1000, "hasUnlimitedUsage": false, "hasSoftLimit": false,
                "currentUsage": 17, "usagePeriodStart": "2026-12-01T00:00:00.000Z", "usagePeriodEnd": "2027-01-01T00:00:00.000Z",
                "resetPeriod": "MONTH"});
            }
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

/// On-demand write units of writing these items: 1 per KB of each, rounded up, per
/// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html>
/// (moto reports no real consumed capacity).
fn write_units(items: &[std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>]) -> usize {
    items.iter().map(|i| item_size(i).div_ceil(1024).max(1)).sum()
}

/// Read units of a strongly consistent Query returning these items: 1 per 4 KB of their sum.
fn query_read_units(items: &[std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>]) -> usize {
    items.iter().map(item_size).sum::<usize>().div_ceil(4096)
}

/// Measures and returns the section's markdown.
pub async fn run() -> String {
    let crate::Recorded { admin, table, recorder, client } = crate::recorded_table().await;
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
        ("new snapshot (100 features)", snapshot("bench-customer", t0 + 10_000, 100, false)),
        ("stale snapshot (older than the stored one)", snapshot("bench-customer", t0, 100, false)),
        ("usage event newer than the snapshot", usage(t0 + 20_000, 42.0)),
        ("stale usage event", usage(t0 + 15_000, 41.0)),
        (
            "usage event before any snapshot (other customer)",
            json!({"type": "entitlement.usage_exceeded", "messageId": "u-x",
            "timestamp": iso(t0), "currentUsage": 1, "feature": {"id": "f"}, "customer": {"id": "early"}})
            .to_string(),
        ),
        (
            "customer.deleted (100 features)",
            json!({"type": "customer.deleted", "messageId": "d-1", "timestamp": iso(t0 + 30_000),
            "id": "bench-customer"})
            .to_string(),
        ),
        ("late snapshot after the deletion", snapshot("bench-customer", t0 + 25_000, 100, false)),
    ];
    for (what, body) in &events {
        recorder.reset();
        handler.handle(&StiggEvent::parse(body).unwrap()).await.unwrap();
        calls.push((what, recorder.clone_counts()));
    }

    // The largest snapshot the queue carries: 3,000 features (~0.9 MB). What its write costs.
    let big_body = snapshot("check-3000", t0, 3000, true);
    let big_write = SnapshotWrite::from_event(&StiggEvent::parse(&big_body).unwrap()).unwrap();
    let big_items = big_write.items(0).unwrap();
    recorder.reset();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    handler.handle(&StiggEvent::parse(&big_body).unwrap()).await.unwrap();
    let big = (recorder.clone_counts(), cpu_seconds() - cpu_before, started.elapsed().as_secs_f64());
    recorder.reset();
    handler.handle(&StiggEvent::parse(&snapshot("check-3000", t0 - 1, 3000, true)).unwrap()).await.unwrap();
    let big_stale = recorder.clone_counts();

    // check latency, CPU and read units, on a small, a larger and the largest snapshot.
    let mirror = Mirror::new(client.clone(), table.clone());
    let mut checks = Vec::new();
    for (features, compact) in [(10usize, false), (100, false), (3000, true)] {
        let customer = format!("check-{features}");
        if features != 3000 {
            handler.handle(&StiggEvent::parse(&snapshot(&customer, t0, features, compact)).unwrap()).await.unwrap();
        }
        for _ in 0..50 {
            mirror.check(&customer, None, "feature-0001", 1.0).await.unwrap();
        }
        let mut latencies = Vec::with_capacity(CHECKS);
        recorder.reset();
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
        assert_eq!(recorder.clone_counts(), BTreeMap::from([("GetItem".to_owned(), CHECKS)]), "one read per check");
        // The item a check reads, as stored: a read unit per 4 KB, half that eventually consistent.
        let item = admin
            .get_item()
            .table_name(table.as_str())
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("customer#{customer}")))
            .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("feature##feature-0001".into()))
            .send()
            .await
            .unwrap()
            .item
            .expect("one item per feature");
        let bytes = item_size(&item);
        latencies.sort_by(f64::total_cmp);
        checks.push((
            features,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            cpu_us,
            CHECKS as f64 / wall,
            bytes,
            bytes.div_ceil(4096) as f64 / 2.0,
        ));
    }
    let header_bytes = item_size(&big_items[0]);
    let sizes: Vec<(&str, usize)> = [("full", false), ("compact", true)]
        .into_iter()
        .map(|(shape, compact)| {
            let event = StiggEvent::parse(&snapshot("size", t0, 1, compact)).unwrap();
            let write = SnapshotWrite::from_event(&event).unwrap();
            (shape, item_size(&write.items(0).unwrap()[1]))
        })
        .collect();

    let mut s = String::new();
    let _ = writeln!(s, "Release build, this process against moto on 127.0.0.1 ({}).\n", std::env::consts::ARCH);
    let _ = writeln!(s, "| figure | measured |\n|---|---|");
    for (features, p50, p99, cpu_us, rate, bytes, units) in &checks {
        let shape = if *features == 3000 { "compact" } else { "full" };
        let _ = writeln!(
            s,
            "| `Mirror::check` on a {features}-feature snapshot ({shape} shape): latency p50 / p99 ({CHECKS} checks, eventually consistent) | {p50:.2} ms / {p99:.2} ms |"
        );
        let _ = writeln!(
            s,
            "| … client CPU per check (getrusage of this process) / checks per second, one client | {cpu_us:.0} µs / {rate:.0} |"
        );
        let _ = writeln!(
            s,
            "| … read per check: one GetItem of a {bytes}-byte item | {units} read units (eventually consistent; {} strongly) |",
            units * 2.0
        );
    }
    let (big_calls, cpu, wall) = &big;
    let list =
        |c: &BTreeMap<String, usize>| c.iter().map(|(op, n)| format!("{op} ×{n}")).collect::<Vec<_>>().join(", ");
    let features = &big_items[1..];
    let _ = writeln!(
        s,
        "| 3,000-feature snapshot ({} KB event, compact shape): calls | {} |",
        big_body.len() / 1024,
        list(big_calls)
    );
    let _ = writeln!(
        s,
        "| … write units (1 per KB of each item written) / read units (the read-back's 2 strongly consistent reads and the Query of {} KB of features) | {} WRU / {} RRU |",
        features.iter().map(item_size).sum::<usize>() / 1024,
        write_units(&big_items),
        2 + query_read_units(features)
    );
    let _ = writeln!(s, "| … client CPU / wall time against moto | {:.2} s / {wall:.1} s |", cpu);
    let _ = writeln!(s, "| … the same snapshot again, older than the stored one | {} |", list(&big_stale));
    let _ = writeln!(s, "| header item | {header_bytes} B |");
    for (shape, bytes) in &sizes {
        let _ = writeln!(s, "| feature item, {shape} shape | {bytes} B ({} write unit) |", bytes.div_ceil(1024));
    }
    let _ = writeln!(
        s,
        "\nDynamoDB calls per event, 100 features of the full shape (counted at the SDK):\n\n| event | calls |\n|---|---|"
    );
    for (what, c) in &calls {
        let _ = writeln!(s, "| {what} | {} |", list(c));
    }
    let _ = writeln!(
        s,
        "\nThe latency is mostly moto's (a Python emulator; DynamoDB answers a GetItem in single-digit milliseconds), and so is the wall time of the large write: moto takes several milliseconds per UpdateItem. The client CPU is the SDK calls (signing, HTTP, parsing) plus the check."
    );
    let _ = writeln!(
        s,
        "\nA check reads one item of one feature, so its latency and cost do not grow with the snapshot: half a read unit eventually consistent, for 10 features as for 3,000. A stale event costs one failed conditional write and nothing else. A written snapshot costs its header, one conditional UpdateItem per feature (a few in flight), one strongly consistent BatchGetItem (header and tombstone) and one Query of the resource's features (removing the features it no longer has, taking over newer usage). A customer's items share a partition, which DynamoDB serves at up to 1,000 write units a second: the 3,000-feature snapshot's write units take about {:.1} s of it on AWS.",
        write_units(&big_items) as f64 / 1000.0
    );
    s
}
