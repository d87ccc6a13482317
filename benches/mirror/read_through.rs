//! The read-through against Stigg's API stand-in: a check's latency on a hit and on a miss (one
//! API call and the write-through), and the API calls 1,000 checks cost in a miss storm (many
//! checks at once for customers the mirror has not seen, some of them unknown to Stigg).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{Value, json};
use stigg_webhooks::config::{ApiKey, TableName};
use stigg_webhooks::edge::ApiKeys;
use stigg_webhooks::mirror::{Mirror, MirrorStore, ReadThrough};
use stigg_webhooks::stigg::api::{ApiSettings, StiggApi};

use crate::common::stigg_stand_ins::api::{ENTITLEMENTS_STATE, StiggApiStandIn};
use crate::{CHECKS, percentile};

const KEY: &str = "bench-server-key";
/// Customers first read by a check (each a miss).
const MISSES: usize = 200;
/// The storm: this many customers Stigg knows and this many it does not, checked CHECKS times
/// in all, 50 at once.
const STORM_KNOWN: usize = 20;
const STORM_UNKNOWN: usize = 5;
const AT_ONCE: usize = 50;

/// Ten entitlements of GraphQL's shape, as Stigg's API answers them.
fn entitlements() -> Value {
    let list: Vec<Value> = (0..10)
        .map(|i| {
            json!({"feature": {"refId": format!("feature-{i:04}"), "displayName": format!("Feature {i}"),
            "featureType": "NUMBER", "meterType": "Incremental", "featureUnits": "call", "featureUnitsPlural": "calls"},
            "isGranted": true, "hasUnlimitedUsage": false, "hasSoftLimit": false, "usageLimit": 1000, "currentUsage": 1,
            "resetPeriod": "MONTH", "usagePeriodEnd": "2027-01-01T00:00:00.000Z"})
        })
        .collect();
    Value::Array(list)
}

fn mirror(api: &StiggApiStandIn, ddb: &aws_sdk_dynamodb::Client, table: &TableName) -> Mirror {
    let keys = ApiKeys::fixed(ApiKey::parse(KEY).unwrap());
    let client = StiggApi::new(Arc::new(keys), ApiSettings::fail_fast(&api.url()));
    Mirror::new(ddb.clone(), table.clone())
        .read_through(ReadThrough::new(Arc::new(client), MirrorStore::new(ddb.clone(), table.clone())))
}

fn summary(mut latencies: Vec<f64>) -> (f64, f64) {
    latencies.sort_by(f64::total_cmp);
    (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
}

/// Measures and returns the section's markdown.
pub async fn run() -> String {
    let crate::Recorded { table, recorder, client: ddb, .. } = crate::recorded_table().await;
    let api = StiggApiStandIn::start(KEY).await;
    let at = "2026-12-01T10:00:00.000Z";
    for i in 0..MISSES.max(STORM_KNOWN) {
        for prefix in ["miss", "storm"] {
            let id = format!("{prefix}-{i:04}");
            api.add_customer(&id, &[]);
            api.set_entitlements(&id, None, at, entitlements());
        }
    }

    // Misses: each first check of a customer fetches, writes through, answers.
    let mirror = mirror(&api, &ddb, &table);
    recorder.reset();
    let mut miss = Vec::with_capacity(MISSES);
    for i in 0..MISSES {
        let t = Instant::now();
        let access = mirror.check(&format!("miss-{i:04}"), None, "feature-0001", 1.0).await.unwrap();
        miss.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(access.has_access);
    }
    let miss_calls: BTreeMap<String, usize> = recorder.clone_counts();
    // Hits: the same customers again, now mirrored.
    let mut hit = Vec::with_capacity(CHECKS);
    recorder.reset();
    for i in 0..CHECKS {
        let t = Instant::now();
        mirror.check(&format!("miss-{:04}", i % MISSES), None, "feature-0001", 1.0).await.unwrap();
        hit.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let hit_calls = recorder.clone_counts();
    let api_calls_misses = api.calls(ENTITLEMENTS_STATE);

    // The storm: CHECKS checks, AT_ONCE at a time, over customers the mirror has not seen.
    let storm = self::mirror(&api, &ddb, &table);
    api.reset_counters();
    let ids: Vec<String> = (0..STORM_KNOWN)
        .map(|i| format!("storm-{i:04}"))
        .chain((0..STORM_UNKNOWN).map(|i| format!("unknown-{i:04}")))
        .collect();
    let started = Instant::now();
    for wave in 0..CHECKS / AT_ONCE {
        let checks = (0..AT_ONCE).map(|j| {
            let id = &ids[(wave * AT_ONCE + j) % ids.len()];
            storm.check(id, None, "feature-0001", 1.0)
        });
        for answer in futures::future::join_all(checks).await {
            answer.unwrap();
        }
    }
    let storm_wall = started.elapsed().as_secs_f64();
    let storm_calls = api.calls(ENTITLEMENTS_STATE);
    let stats = storm.read_through_stats().unwrap();
    let (joined, negative) = (stats.joined.load(Ordering::Relaxed), stats.negative_hits.load(Ordering::Relaxed));

    let list = |c: &BTreeMap<String, usize>, n: usize| {
        c.iter().map(|(op, k)| format!("{op} ×{:.2}", *k as f64 / n as f64)).collect::<Vec<_>>().join(", ")
    };
    let (hit50, hit99) = summary(hit);
    let (miss50, miss99) = summary(miss);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n### Read-through: a customer the webhooks have not brought yet\n\n`Mirror::check` with a `ReadThrough` (fetch on miss) against the Stigg API stand-in (`tests/common/stigg_stand_ins/api.rs`, no added delay) and moto; 10-feature states.\n\n| figure | measured |\n|---|---|"
    );
    let _ = writeln!(s, "| check on a hit: latency p50 / p99 ({CHECKS} checks) | {hit50:.2} ms / {hit99:.2} ms |");
    let _ = writeln!(s, "| … DynamoDB calls per check on a hit | {} |", list(&hit_calls, CHECKS));
    let _ = writeln!(
        s,
        "| check on a miss (one API call, the write-through, the answer): latency p50 / p99 ({MISSES} customers) | {miss50:.2} ms / {miss99:.2} ms |"
    );
    let _ = writeln!(
        s,
        "| … Stigg API calls / DynamoDB calls per miss | {:.2} / {} |",
        api_calls_misses as f64 / MISSES as f64,
        list(&miss_calls, MISSES)
    );
    let _ = writeln!(
        s,
        "| miss storm: {CHECKS} checks, {AT_ONCE} at a time, over {STORM_KNOWN} new customers and {STORM_UNKNOWN} Stigg does not know | **{storm_calls} API calls** per {CHECKS} checks ({joined} checks joined a fetch in flight, {negative} answered from a `CustomerNotFound` entry; {:.1} s) |",
        storm_wall
    );
    let _ = writeln!(
        s,
        "\nA miss costs one `entitlementsState` call and the snapshot's conditional writes (its header, one UpdateItem per feature, the read-back); every later check is a hit. In a storm each customer is fetched once per process (single flight) and each unknown customer once per negative TTL (60 s), so the API sees one call per customer, not per check."
    );
    s
}
