//! `send`: the Stigg delivery simulator.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{Value, json};

use crate::{Error, sdk};

#[derive(Parser, Clone)]
pub(crate) struct SendArgs {
    #[arg(long, default_value = "http://127.0.0.1:9000/lambda-url/receiver/")]
    url: String,
    /// The webhook secret (default: $STIGG_WEBHOOK_SECRET, else the local dev secret).
    #[arg(long)]
    secret: Option<String>,
    /// Read the secret from this SSM parameter instead (a deployed stack's; the last secret of
    /// a rotation list is the one Stigg sends).
    #[arg(long, conflicts_with = "secret")]
    secret_parameter: Option<String>,
    /// Send the files' own messageId/eventId. By default every delivery gets fresh ones, as
    /// Stigg's "Send test event" does, so a file can be sent again and again.
    #[arg(long)]
    keep_ids: bool,
    /// Divide Stigg's waits between retries by 100 (30 s becomes 0.3 s).
    #[arg(long)]
    fast: bool,
    /// Also send every event this many extra times with the same ids (as Stigg's at-least-once
    /// delivery may): each extra delivery is answered as a duplicate.
    #[arg(long, default_value_t = 0)]
    duplicates: usize,
    /// Send this many distinct copies of each payload (messageId suffixed with the copy number).
    #[arg(long, default_value_t = 1)]
    copies: usize,
    /// Deliveries in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Deliver in a random order (Stigg guarantees no ordering).
    #[arg(long)]
    shuffle: bool,
    /// Print only the summary.
    #[arg(long)]
    quiet: bool,
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// Stigg's schedule: the first attempt, 3 retries at once, then 3 retries 30 s apart.
const IMMEDIATE_RETRIES: usize = 3;
const SPACED_RETRIES: usize = 3;
const SPACING: Duration = Duration::from_secs(30);
const DEADLINE: Duration = Duration::from_secs(30);

struct Delivery {
    label: String,
    body: String,
}

#[derive(Debug)]
struct Report {
    label: String,
    statuses: Vec<String>,
    final_status: Option<u16>,
    /// The receiver's `idempotencyKey`, from its answer.
    key: Option<String>,
    latency: Duration,
}

/// Why the receiver answered "duplicate", as far as this run can tell.
fn duplicate_reason(report: &Report, reports: &[Report]) -> String {
    let accepted_here = reports.iter().find(|r| r.final_status == Some(202) && r.key == report.key && r.key.is_some());
    if let Some(first) = accepted_here {
        return format!("same ids as {} in this run", first.label);
    }
    if report.statuses.len() > 1 {
        return "an earlier attempt of this delivery was accepted; its answer was lost".into();
    }
    "these ids were accepted before this run (--keep-ids re-sends a delivered event)".into()
}

pub(crate) fn load_payloads(paths: &[PathBuf]) -> Result<Vec<(String, String)>, Error> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(path.clone());
        }
    }
    files
        .iter()
        .map(|f| Ok((display(f), std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?)))
        .collect()
}

fn display(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The payload as Stigg's "Send test event" sends it: a fresh `messageId`, and a fresh `eventId`
/// when it has one; everything else as in the file. Not a JSON object: sent as is.
pub(crate) fn with_fresh_ids(body: &str) -> String {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(body) else { return body.to_owned() };
    static SENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SENT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("{:x}-{:x}-{n}", nanos(), std::process::id());
    map.insert("messageId".into(), json!(format!("sim-{id}")));
    if map.contains_key("eventId") {
        map.insert("eventId".into(), json!(format!("sim-event-{id}")));
    }
    Value::Object(map).to_string()
}

/// A distinct copy of a payload: its `messageId` (or `eventId`) gets a suffix.
fn copy_of(body: &str, copy: usize) -> String {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(body) else { return body.to_owned() };
    for field in ["messageId", "eventId"] {
        if let Some(Value::String(id)) = map.get(field) {
            let id = format!("{id}-{copy}");
            map.insert(field.into(), Value::String(id));
            return Value::Object(map).to_string();
        }
    }
    map.insert("messageId".into(), json!(format!("sim-{copy}-{}", nanos())));
    Value::Object(map).to_string()
}

fn nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

/// A small xorshift shuffle: no need for a random-number crate to reorder deliveries.
fn shuffle<T>(items: &mut [T]) {
    let mut state = (nanos() as u64) | 1;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        items.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

/// The last secret of a comma list: during a rotation that is the new one, which Stigg sends.
fn sent_secret(list: &str) -> String {
    list.split(',').map(str::trim).rfind(|s| !s.is_empty()).unwrap_or_default().to_owned()
}

async fn secret_from_parameter(name: &str) -> Result<String, Error> {
    let out =
        aws_sdk_ssm::Client::new(&sdk().await).get_parameter().name(name).with_decryption(true).send().await.map_err(
            |e| format!("reading the secret from SSM parameter {name}: {}", aws_sdk_ssm::error::DisplayErrorContext(e)),
        )?;
    let value = out.parameter().and_then(|p| p.value()).ok_or_else(|| format!("SSM parameter {name} has no value"))?;
    Ok(sent_secret(value))
}

pub(crate) async fn send(args: SendArgs) -> Result<usize, Error> {
    let secret = match &args.secret_parameter {
        Some(name) => secret_from_parameter(name).await?,
        None => args
            .secret
            .clone()
            .or_else(|| std::env::var("STIGG_WEBHOOK_SECRET").ok())
            .map(|s| sent_secret(&s))
            .unwrap_or_else(|| "local-dev-secret-change-me".into()),
    };
    let mut deliveries = Vec::new();
    for (label, body) in load_payloads(&args.paths)? {
        for copy in 0..args.copies {
            let body = if args.keep_ids {
                if args.copies > 1 { copy_of(&body, copy) } else { body.clone() }
            } else {
                with_fresh_ids(&body)
            };
            let label = if args.copies > 1 { format!("{label}#{copy}") } else { label.clone() };
            for dup in 0..=args.duplicates {
                let label = if dup > 0 { format!("{label} (duplicate {dup})") } else { label.clone() };
                deliveries.push(Delivery { label, body: body.clone() });
            }
        }
    }
    if args.shuffle {
        shuffle(&mut deliveries);
    }
    let client = reqwest::Client::builder().timeout(DEADLINE).build()?;
    let spacing = if args.fast { SPACING / 100 } else { SPACING };
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for d in deliveries {
        let (client, url, secret) = (client.clone(), args.url.clone(), secret.clone());
        // Taken here, in delivery order, so deliveries start in order (the original before its
        // duplicates at --concurrency 1), whichever task the runtime polls first.
        let permit = semaphore.clone().acquire_owned().await.expect("open semaphore");
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            deliver(&client, &url, &secret, d, spacing).await
        }));
    }
    let mut reports = Vec::new();
    for t in tasks {
        reports.push(t.await?);
    }
    for r in &reports {
        if !args.quiet {
            let outcome = match r.final_status {
                Some(202) => "accepted".to_owned(),
                Some(200) => "duplicate".to_owned(),
                Some(s) if (200..300).contains(&s) => format!("ok ({s})"),
                _ => "FAILED".to_owned(),
            };
            let why = if r.final_status == Some(200) {
                format!("  ({})", duplicate_reason(r, &reports))
            } else {
                String::new()
            };
            println!(
                "{:<48} {:<10} {:.0?} attempts={} [{}] key={}{why}",
                r.label,
                outcome,
                r.latency,
                r.statuses.len(),
                r.statuses.join(","),
                r.key.as_deref().unwrap_or("-")
            );
        }
    }
    let elapsed = started.elapsed();
    let ok = |r: &&Report| r.final_status.is_some_and(|s| (200..300).contains(&s));
    let accepted = reports.iter().filter(|r| r.final_status == Some(202)).count();
    let duplicates = reports.iter().filter(|r| r.final_status == Some(200)).count();
    let failed = reports.len() - reports.iter().filter(ok).count();
    let attempts: usize = reports.iter().map(|r| r.statuses.len()).sum();
    let mut latencies: Vec<_> = reports.iter().filter(ok).map(|r| r.latency).collect();
    latencies.sort();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    println!(
        "summary: deliveries={} accepted={accepted} duplicate={duplicates} failed={failed} attempts={attempts} \
         p50={:?} p99={:?} elapsed={elapsed:.2?}",
        reports.len(),
        pct(0.50).copied().unwrap_or_default(),
        pct(0.99).copied().unwrap_or_default(),
    );
    Ok(failed)
}

async fn deliver(client: &reqwest::Client, url: &str, secret: &str, d: Delivery, spacing: Duration) -> Report {
    let mut statuses = Vec::new();
    let started = Instant::now();
    let waits = std::iter::once(Duration::ZERO)
        .chain(std::iter::repeat_n(Duration::ZERO, IMMEDIATE_RETRIES))
        .chain(std::iter::repeat_n(spacing, SPACED_RETRIES));
    for wait in waits {
        tokio::time::sleep(wait).await;
        let attempt = Instant::now();
        let result = client
            .post(url)
            .header("content-type", "application/json")
            .header("stigg-webhooks-secret", secret)
            .body(d.body.clone())
            .send()
            .await;
        match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                statuses.push(status.to_string());
                if resp.status().is_success() {
                    let latency = attempt.elapsed();
                    let answer: Value = resp.json().await.unwrap_or(Value::Null);
                    let key = answer["idempotencyKey"].as_str().map(str::to_owned);
                    return Report { label: d.label, statuses, final_status: Some(status), key, latency };
                }
            }
            Err(e) if e.is_timeout() => statuses.push("timeout".into()),
            Err(_) => statuses.push("conn-error".into()),
        }
    }
    Report { label: d.label, statuses, final_status: None, key: None, latency: started.elapsed() }
}
