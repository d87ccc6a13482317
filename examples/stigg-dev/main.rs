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
//! cargo run --example stigg-dev -- api-stand-in [--addr ADDR] [--customers FILE] [--per-minute N]
//! cargo run --example stigg-dev -- mirror-backfill --table T [--api-url U] (--api-key K | --api-key-parameter P)
//!                                                [--restart] [--in-flight N] [--per-minute N] [--budget-seconds S]
//! cargo run --example stigg-dev -- replay --from T --to T --archive A [--to-handlers --queue-arn Q [--pattern P]]
//!                                       [--rules ARN,...|none] [--stack S]
//! cargo run --example stigg-dev -- subscriber --queue-url Q
//! ```
//! `send` delivers Stigg payloads the way Stigg does: a 30 s deadline per attempt; on a non-2XX
//! (or no answer) 3 retries at once, then 3 more 30 s apart, then the event is marked failed.

mod backfill;
mod bus;
mod durable;
mod mirror;
mod pump;
mod replay;
mod send;
mod setup;
mod stand_ins;

use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};

use backfill::BackfillArgs;
use bus::SubscriberArgs;
use durable::SendDurableArgs;
use mirror::MirrorArgs;
use pump::PumpArgs;
use replay::ReplayArgs;
use send::SendArgs;
use setup::SetupArgs;
use stand_ins::{ApiStandInArgs, StandInArgs};

// The same stand-ins the tests use (one source for both).
#[path = "../../tests/common/stigg_stand_ins/mod.rs"]
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
    /// Run a local stand-in of Stigg's GraphQL API (entitlements state, customers) until Ctrl-C.
    ApiStandIn(ApiStandInArgs),
    /// Fill the entitlement mirror from Stigg's API: every customer, resumable, with progress.
    MirrorBackfill(BackfillArgs),
    /// Put Stigg payload files on a durable-delivery queue, as Stigg publishes them.
    SendDurable(SendDurableArgs),
    /// Print a customer's mirrored entitlements, or Stigg's answer for one feature.
    Mirror(MirrorArgs),
    /// Replay the EventBridge archive onto its bus (optionally to this stack's handlers), with progress.
    Replay(ReplayArgs),
    /// Print one line per event reaching a rule's SQS target (the local example subscriber), then delete it.
    Subscriber(SubscriberArgs),
    /// Print Stigg's status page: uptime per component and open incidents.
    Status {
        #[arg(long, env = "STIGG_STATUS_URL", default_value = stigg_webhooks::config::DEFAULT_STATUS_URL)]
        url: String,
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
}

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    match Cli::parse().command {
        Command::Send(args) => {
            let failed = send::send(args).await?;
            if failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Pump(args) => pump::pump(args).await,
        Command::Setup(args) => setup::setup(args).await,
        Command::Poison { queue_url } => {
            let sqs = sqs().await;
            sqs.send_message().queue_url(&queue_url).message_body("{this is not a Stigg event").send().await?;
            println!("poison message sent to {queue_url}");
            Ok(())
        }
        Command::Redrive { from, to } => setup::redrive(&from, &to).await,
        Command::StandIns(args) => stand_ins::stand_ins(args).await,
        Command::ApiStandIn(args) => stand_ins::api_stand_in(args).await,
        Command::MirrorBackfill(args) => backfill::mirror_backfill(args).await,
        Command::Mirror(args) => mirror::mirror(args).await,
        Command::SendDurable(args) => durable::send_durable(args).await,
        Command::Replay(args) => {
            let now = SystemTime::now();
            if let Err(e) = replay::plan(&args, now) {
                eprintln!("replay: {e}");
                std::process::exit(2);
            }
            let events = aws_sdk_eventbridge::Client::new(&sdk().await);
            if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
                println!(
                    "note: a local emulator (AWS_ENDPOINT_URL): moto replays the whole archive at once, whatever the window and RULES"
                );
            }
            let cancel = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let report = match replay::replay(&events, &args, now, cancel, &mut |line| println!("{line}")).await {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("replay: {e}");
                    std::process::exit(1);
                }
            };
            let code = match &report.ending {
                replay::Ending::Completed => {
                    println!("replay {} completed", report.replay_name);
                    0
                }
                replay::Ending::Failed(why) => {
                    eprintln!("replay {} FAILED: {why}", report.replay_name);
                    1
                }
                replay::Ending::Cancelled(why) => {
                    eprintln!("replay {} CANCELLED: {why}", report.replay_name);
                    130
                }
            };
            if report.rule_left {
                eprintln!("the temporary rule {} is left on the bus (see above)", report.rule_name.unwrap_or_default());
                std::process::exit(if code == 0 { 1 } else { code });
            }
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Subscriber(args) => bus::subscriber(&sqs().await, args).await,
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
        .http_client(stigg_webhooks::aws::tool_http_client().expect("AWS_CA_BUNDLE names a usable PEM bundle"))
        .load()
        .await
}

async fn sqs() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk().await)
}
