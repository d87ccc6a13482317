//! Developer tool for the local stack and for operations (never shipped in a Lambda zip).
//!
//! ```text
//! cargo run --example stigg-dev -- send [--url U] [--secret S] [--fast] [--duplicates N]
//!                                     [--copies N] [--concurrency N] [--shuffle] PATH...
//! cargo run --example stigg-dev -- pump --queue-url Q --invoke-url I
//! cargo run --example stigg-dev -- setup --table T --queue Q --dlq D
//! cargo run --example stigg-dev -- poison --queue-url Q
//! cargo run --example stigg-dev -- redrive --from DLQ_URL --to QUEUE_URL
//! cargo run --example stigg-dev -- stand-ins --queue-url STIGG_QUEUE_URL [--edge ADDR] [--status ADDR]
//! cargo run --example stigg-dev -- send-durable --queue-url STIGG_QUEUE_URL [--sns] [--keep-ids] PATH...
//! cargo run --example stigg-dev -- status [--url URL] [--hours 24]
//! cargo run --example stigg-dev -- mirror --table T --customer C [--resource R] [--feature F [--requested N]]
//! ```
//! `send` delivers Stigg payloads the way Stigg does: a 30 s deadline per attempt; on a non-2XX
//! (or no answer) 3 retries at once, then 3 more 30 s apart, then the event is marked failed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

// The same stand-ins the tests use (one source for both).
#[path = "../tests/common/stigg_stand_ins.rs"]
mod stigg_stand_ins;

#[derive(Parser)]
#[command(about = "Stigg webhooks: delivery simulator and local-stack tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Deliver Stigg payload files (or every .json in folders) to a receiver, as Stigg does.
    Send(SendArgs),
    /// Local stand-in for Lambda's SQS event source: poll, invoke the processor, delete successes.
    Pump(PumpArgs),
    /// Create the local table, events queue and dead-letter queue (idempotent).
    Setup(SetupArgs),
    /// Put an unparseable message on a queue (to watch it reach the dead-letter queue).
    Poison {
        #[arg(long)]
        queue_url: String,
    },
    /// Move every message from a dead-letter queue back to its source queue.
    Redrive {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Run local stand-ins of Stigg's Edge API (queue credentials) and status page until Ctrl-C.
    StandIns(StandInArgs),
    /// Put Stigg payload files on a durable-delivery queue, as Stigg publishes them.
    SendDurable(SendDurableArgs),
    /// Print a customer's mirrored entitlements, or Stigg's answer for one feature.
    Mirror(MirrorArgs),
    /// Print Stigg's status page: uptime per component and open incidents.
    Status {
        #[arg(long, env = "STIGG_STATUS_URL", default_value = stigg_webhooks::config::DEFAULT_STATUS_URL)]
        url: String,
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
}

#[derive(Parser)]
struct MirrorArgs {
    #[arg(long, env = "ENTITLEMENT_MIRROR_TABLE")]
    table: String,
    #[arg(long)]
    customer: String,
    /// A resource id (default: the customer-wide entitlements).
    #[arg(long)]
    resource: Option<String>,
    /// Answer for this feature (access, limit, remaining) instead of listing them all.
    #[arg(long)]
    feature: Option<String>,
    #[arg(long, default_value_t = 0.0)]
    requested: f64,
    /// Eventually consistent reads (as most services would); default: strongly consistent.
    #[arg(long)]
    eventually: bool,
}

#[derive(Parser)]
struct StandInArgs {
    /// The queue the Edge API stand-in issues credentials for.
    #[arg(long)]
    queue_url: String,
    #[arg(long, env = "STIGG_API_KEY", default_value = "local-stigg-server-key")]
    api_key: String,
    #[arg(long, default_value = "127.0.0.1:4580")]
    edge: String,
    #[arg(long, default_value = "127.0.0.1:4581")]
    status: String,
    /// How long issued credentials live (Stigg: 900-3600 s).
    #[arg(long, default_value_t = 900)]
    lifetime_seconds: u64,
    /// The status page's answer.
    #[arg(long, default_value = "events/status/component_impacts.json")]
    status_answer: PathBuf,
}

#[derive(Parser)]
struct SendDurableArgs {
    #[arg(long, env = "STIGG_QUEUE_URL")]
    queue_url: String,
    /// Wrap each payload in an SNS notification, as a queue subscribed to a topic receives it.
    #[arg(long)]
    sns: bool,
    /// Keep the files' own messageId/eventId (default: fresh ones, like `send`).
    #[arg(long)]
    keep_ids: bool,
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Parser, Clone)]
struct SendArgs {
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

#[derive(Parser)]
struct PumpArgs {
    #[arg(long)]
    queue_url: String,
    #[arg(long, default_value = "http://127.0.0.1:9000/2015-03-31/functions/processor/invocations")]
    invoke_url: String,
    #[arg(long, default_value_t = 10)]
    batch_size: i32,
    /// Seconds a received batch stays invisible (a failed record comes back after this).
    #[arg(long, default_value_t = 5)]
    visibility_timeout: i32,
    /// Stop after this many polls (default: until Ctrl-C).
    #[arg(long)]
    max_polls: Option<u64>,
}

#[derive(Parser)]
struct SetupArgs {
    #[arg(long, default_value = "stigg-idempotency")]
    table: String,
    #[arg(long, default_value = "stigg-events")]
    queue: String,
    #[arg(long, default_value = "stigg-events-dlq")]
    dlq: String,
    /// Receives before SQS moves a failing message to the dead-letter queue.
    #[arg(long, default_value_t = 3)]
    max_receive_count: u32,
    /// Also create a local stand-in for Stigg's durable-delivery queue with this name.
    #[arg(long)]
    stigg_queue: Option<String>,
    /// Also create the entitlement mirror's table with this name.
    #[arg(long)]
    mirror_table: Option<String>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    match Cli::parse().command {
        Command::Send(args) => {
            let failed = send(args).await?;
            if failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Pump(args) => pump(args).await,
        Command::Setup(args) => setup(args).await,
        Command::Poison { queue_url } => {
            let sqs = sqs().await;
            sqs.send_message().queue_url(&queue_url).message_body("{this is not a Stigg event").send().await?;
            println!("poison message sent to {queue_url}");
            Ok(())
        }
        Command::Redrive { from, to } => redrive(&from, &to).await,
        Command::StandIns(args) => stand_ins(args).await,
        Command::Mirror(args) => mirror(args).await,
        Command::SendDurable(args) => send_durable(args).await,
        Command::Status { url, hours } => {
            let window = Duration::from_secs(hours * 3600);
            let page = stigg_webhooks::status::StatusPage::new(&url, Duration::from_secs(10));
            match page.fetch(SystemTime::now(), window).await {
                Ok(report) => {
                    print!("{}", report.table(window));
                    println!("\n(from {url})");
                    Ok(())
                }
                Err(e) => Err(format!("{url}: {}", stigg_webhooks::error_chain(&e)).into()),
            }
        }
    }
}

async fn sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(stigg_webhooks::aws::http_client())
        .load()
        .await
}

async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk().await)
}

// ---------------------------------------------------------------------------------------------
// send: the Stigg delivery simulator

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

fn load_payloads(paths: &[PathBuf]) -> Result<Vec<(String, String)>, Error> {
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
fn with_fresh_ids(body: &str) -> String {
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

async fn send(args: SendArgs) -> Result<usize, Error> {
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

// ---------------------------------------------------------------------------------------------
// pump: Lambda's SQS event source, locally

async fn pump(args: PumpArgs) -> Result<(), Error> {
    let sqs = sqs().await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let arn = queue_arn(&sqs, &args.queue_url).await?;
    let region = arn.split(':').nth(3).unwrap_or("us-east-1").to_owned();
    println!("pump: {} -> {}", args.queue_url, args.invoke_url);
    let mut polls = 0u64;
    loop {
        if args.max_polls.is_some_and(|m| polls >= m) {
            return Ok(());
        }
        polls += 1;
        let receive = sqs
            .receive_message()
            .queue_url(&args.queue_url)
            .max_number_of_messages(args.batch_size)
            .wait_time_seconds(1)
            .visibility_timeout(args.visibility_timeout)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All);
        let messages = tokio::select! {
            r = receive.send() => match r {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => {
                    eprintln!("pump: receive failed: {}", aws_sdk_sqs::error::DisplayErrorContext(&e));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        if messages.is_empty() {
            continue;
        }
        let records: Vec<Value> = messages.iter().map(|m| sqs_record(m, &arn, &region)).collect();
        let event = json!({ "Records": records });
        let failed: Vec<String> = match http.post(&args.invoke_url).json(&event).send().await {
            Ok(resp) if resp.status().is_success() && resp.headers().get("x-amz-function-error").is_none() => {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                match body.get("batchItemFailures").and_then(Value::as_array) {
                    Some(items) => items
                        .iter()
                        .filter_map(|i| i.get("itemIdentifier").and_then(Value::as_str).map(str::to_owned))
                        .collect(),
                    // Lambda treats any other answer as success for the whole batch.
                    None => Vec::new(),
                }
            }
            Ok(resp) => {
                eprintln!("pump: invocation failed ({}); the whole batch returns after the timeout", resp.status());
                messages.iter().filter_map(|m| m.message_id.clone()).collect()
            }
            Err(e) => {
                eprintln!("pump: invocation failed ({e}); the whole batch returns after the timeout");
                messages.iter().filter_map(|m| m.message_id.clone()).collect()
            }
        };
        let mut deleted = 0;
        for m in &messages {
            if m.message_id.as_ref().is_some_and(|id| failed.contains(id)) {
                continue;
            }
            if let Some(handle) = &m.receipt_handle {
                sqs.delete_message().queue_url(&args.queue_url).receipt_handle(handle).send().await?;
                deleted += 1;
            }
        }
        // Quiet when all went well: the processor's own "event processed" lines tell that story.
        if !failed.is_empty() {
            println!("pump: batch of {} -> {} deleted, {} left for redelivery", messages.len(), deleted, failed.len());
        }
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, Error> {
    let attrs = sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::QueueArn).send().await?;
    attrs
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| "queue has no ARN".into())
}

/// One record of the event Lambda's SQS integration sends.
fn sqs_record(m: &aws_sdk_sqs::types::Message, arn: &str, region: &str) -> Value {
    let attributes: HashMap<String, String> = m
        .attributes
        .as_ref()
        .map(|a| a.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect())
        .unwrap_or_default();
    let message_attributes: HashMap<String, Value> = m
        .message_attributes
        .as_ref()
        .map(|a| {
            a.iter()
                .map(|(k, v)| {
                    (k.clone(), json!({"stringValue": v.string_value(), "stringListValues": [], "binaryListValues": [], "dataType": v.data_type()}))
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
        "attributes": attributes, "messageAttributes": message_attributes, "md5OfBody": m.md5_of_body,
        "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": region
    })
}

// ---------------------------------------------------------------------------------------------
// setup, redrive

async fn setup(args: SetupArgs) -> Result<(), Error> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveSpecification,
    };
    let sdk = sdk().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let created = ddb
        .create_table()
        .table_name(&args.table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("pk").attribute_type(ScalarAttributeType::S).build()?,
        )
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build()?)
        .send()
        .await;
    match created {
        Ok(_) => {
            ddb.update_time_to_live()
                .table_name(&args.table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder().attribute_name("expires_at").enabled(true).build()?,
                )
                .send()
                .await?;
        }
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(e) => return Err(e.into()),
    }
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = sqs.create_queue().queue_name(&args.dlq).send().await?.queue_url.unwrap_or_default();
    let dlq_arn = queue_arn(&sqs, &dlq).await?;
    let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": args.max_receive_count}).to_string();
    let queue = sqs
        .create_queue()
        .queue_name(&args.queue)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await?
        .queue_url
        .unwrap_or_default();
    println!("IDEMPOTENCY_TABLE={}\nEVENTS_QUEUE_URL={queue}\nDEAD_LETTER_QUEUE_URL={dlq}", args.table);
    if let Some(name) = args.mirror_table {
        let key =
            |n: &str| AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build();
        let created = ddb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(key("pk")?)
            .attribute_definitions(key("sk")?)
            .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build()?)
            .key_schema(KeySchemaElement::builder().attribute_name("sk").key_type(KeyType::Range).build()?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => return Err(e.into()),
        }
        println!("ENTITLEMENT_MIRROR_TABLE={name}");
    }
    if let Some(name) = args.stigg_queue {
        let url = sqs.create_queue().queue_name(name).send().await?.queue_url.unwrap_or_default();
        println!("STIGG_QUEUE_URL={url}");
    }
    Ok(())
}

async fn redrive(from: &str, to: &str) -> Result<(), Error> {
    let sqs = sqs().await;
    let (source, destination) = (queue_arn(&sqs, from).await?, queue_arn(&sqs, to).await?);
    // SQS's own message-move task where the endpoint has it (AWS); a plain move elsewhere (moto).
    match sqs.start_message_move_task().source_arn(&source).destination_arn(&destination).send().await {
        Ok(task) => {
            println!("redrive: message-move task started ({})", task.task_handle.unwrap_or_default());
            return Ok(());
        }
        Err(e) => eprintln!(
            "redrive: no message-move task on this endpoint ({}); moving messages one by one",
            e.as_service_error().and_then(|e| e.meta().code()).unwrap_or("unsupported")
        ),
    }
    // Move only what is there now: a message that fails again and returns to the dead-letter
    // queue while we work must not be moved round and round.
    let depth = sqs
        .get_queue_attributes()
        .queue_url(from)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages).and_then(|n| n.parse::<usize>().ok()))
        .unwrap_or(0);
    let mut moved = 0;
    while moved < depth {
        let out = sqs
            .receive_message()
            .queue_url(from)
            .max_number_of_messages((depth - moved).min(10) as i32)
            .visibility_timeout(30)
            .message_attribute_names("All")
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let mut send = sqs.send_message().queue_url(to).message_body(m.body.clone().unwrap_or_default());
            // The failure attributes described the last failure, not the event.
            for (k, v) in m.message_attributes.unwrap_or_default() {
                if !k.starts_with("failure_") && !k.starts_with("source_") {
                    send = send.message_attributes(k, v);
                }
            }
            if to.ends_with(".fifo") {
                let id = m.message_id.clone().unwrap_or_default();
                send = send
                    .message_group_id("redrive")
                    .message_deduplication_id(stigg_webhooks::event::sha256_hex(id.as_bytes()));
            }
            send.send().await?;
            if let Some(handle) = m.receipt_handle {
                sqs.delete_message().queue_url(from).receipt_handle(handle).send().await?;
            }
            moved += 1;
        }
    }
    println!("redrive: moved {moved} message(s) from {from} to {to}");
    Ok(())
}

async fn stand_ins(args: StandInArgs) -> Result<(), Error> {
    let answer: Value = serde_json::from_slice(&std::fs::read(&args.status_answer)?)?;
    let lifetime = Duration::from_secs(args.lifetime_seconds);
    let edge = stigg_stand_ins::EdgeApiStandIn::start_on(&args.edge, &args.api_key, &args.queue_url, lifetime).await;
    let status = stigg_stand_ins::StatusPageStandIn::start_on(&args.status, &answer).await;
    println!("STIGG_EDGE_API_URL={}\nSTIGG_STATUS_URL={}", edge.url(), status.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn send_durable(args: SendDurableArgs) -> Result<(), Error> {
    let sqs = sqs().await;
    for (name, body) in load_payloads(&args.paths)? {
        let body = if args.keep_ids { body } else { with_fresh_ids(&body) };
        let key = serde_json::from_str::<Value>(&body).ok().and_then(|v| v["messageId"].as_str().map(str::to_owned));
        let message = if args.sns {
            json!({"Type": "Notification", "MessageId": uuid::Uuid::new_v4().to_string(),
                "TopicArn": "arn:aws:sns:us-east-1:000000000000:stigg-events", "Message": body,
                "Timestamp": stigg_webhooks::metrics::rfc3339(SystemTime::now()), "SignatureVersion": "1"})
            .to_string()
        } else {
            body
        };
        sqs.send_message().queue_url(&args.queue_url).message_body(message).send().await?;
        println!(
            "{name}: on Stigg's queue{} (messageId {})",
            if args.sns { " in an SNS envelope" } else { "" },
            key.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

async fn mirror(args: MirrorArgs) -> Result<(), Error> {
    use stigg_webhooks::mirror::Mirror;
    let table = stigg_webhooks::config::TableName::parse(&args.table)?;
    let mirror = Mirror::new(aws_sdk_dynamodb::Client::new(&sdk().await), table).consistent(!args.eventually);
    let resource = args.resource.as_deref();
    if let Some(feature) = &args.feature {
        let started = Instant::now();
        let access = mirror.check(&args.customer, resource, feature, args.requested).await?;
        println!("{}", serde_json::to_string_pretty(&access)?);
        eprintln!("(the feature's item, {:.1} ms)", started.elapsed().as_secs_f64() * 1000.0);
        return Ok(());
    }
    let Some(snapshot) = mirror.entitlements(&args.customer, resource).await? else {
        println!(
            "no entitlements mirrored for customer {} {}",
            args.customer,
            resource.map_or("(customer-wide)".to_owned(), |r| format!("resource {r}"))
        );
        return Ok(());
    };
    let updated = stigg_webhooks::metrics::rfc3339(
        UNIX_EPOCH + Duration::from_millis(snapshot.entitlements_updated_at.max(0) as u64),
    );
    println!(
        "customer {}  resource {}  entitlementsUpdatedAt {updated}  (age {} s)  messageId {}",
        snapshot.customer_id,
        snapshot.resource_id.as_deref().unwrap_or("-"),
        snapshot.age(SystemTime::now()).as_secs(),
        snapshot.message_id.as_deref().unwrap_or("-")
    );
    println!("{:<32} {:<9} {:>10} {:>10} {:>10}  PERIOD END", "FEATURE", "KIND", "LIMIT", "USAGE", "REMAINING");
    for f in snapshot.features.values() {
        let a = snapshot.check(&f.feature_id, 0.0, SystemTime::now());
        let num = |v: Option<f64>| v.map_or("-".to_owned(), |v| v.to_string());
        let limit = if f.has_unlimited_usage { "unlimited".to_owned() } else { num(f.usage_limit) };
        println!(
            "{:<32} {:<9} {:>10} {:>10} {:>10}  {}",
            f.feature_id,
            format!("{:?}", f.kind).to_lowercase(),
            limit,
            num(f.current_usage),
            num(a.remaining),
            f.usage_period_end.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
