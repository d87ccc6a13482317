//! `mirror-backfill`: fill the entitlement mirror from Stigg's API, every customer, resumable
//! (the checkpoint is in the mirror table; the same command continues a stopped run).

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use clap::Parser;
use stigg_webhooks::config::{ApiKey, ApiKeySource, TableName};
use stigg_webhooks::edge::ApiKeys;
use stigg_webhooks::mirror::sync::backfill::{Backfill, BackfillOptions, Ending};
use stigg_webhooks::stigg::api::{ApiSettings, DEFAULT_API_URL, RateLimits, StiggApi, limiter::DEFAULT_PER_MINUTE};

use crate::{Error, sdk};

#[derive(Parser)]
pub(crate) struct BackfillArgs {
    #[arg(long, env = "ENTITLEMENT_MIRROR_TABLE")]
    table: String,
    /// Stigg's GraphQL endpoint.
    #[arg(long, env = "STIGG_API_URL", default_value = DEFAULT_API_URL)]
    api_url: String,
    /// The environment's server key (default: read from --api-key-parameter).
    #[arg(long, env = "STIGG_API_KEY", hide_env_values = true, conflicts_with = "api_key_parameter")]
    api_key: Option<String>,
    /// An SSM SecureString holding the server key (a deployed stack's StiggApiKeyParameterName).
    #[arg(long)]
    api_key_parameter: Option<String>,
    /// Start over from the first customer, even after a finished run.
    #[arg(long)]
    restart: bool,
    /// Customers fetched and written at once.
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Customers per listing page (at most 100).
    #[arg(long, default_value_t = 50)]
    page_size: usize,
    /// Customers done between two checkpoint saves.
    #[arg(long, default_value_t = 5)]
    checkpoint_every: usize,
    /// Calls per minute per API operation this client allows itself.
    #[arg(long, default_value_t = DEFAULT_PER_MINUTE)]
    per_minute: u32,
    /// Stop cleanly after this many seconds (run the same command again to continue).
    #[arg(long)]
    budget_seconds: Option<u64>,
}

/// The server key given inline, or read from an SSM SecureString (re-read when Stigg refuses it).
pub(crate) async fn api_keys(
    sdk: &aws_config::SdkConfig,
    key: Option<&str>,
    parameter: Option<&str>,
) -> Result<ApiKeys, Error> {
    let source = match (key, parameter) {
        (Some(key), _) => ApiKeySource::Inline(ApiKey::parse(key)?),
        (None, Some(name)) => ApiKeySource::Parameter(name.to_owned()),
        (None, None) => return Err("give --api-key or --api-key-parameter".into()),
    };
    Ok(stigg_webhooks::aws::api_keys(sdk, source, Duration::from_secs(60)).await?)
}

pub(crate) async fn mirror_backfill(args: BackfillArgs) -> Result<(), Error> {
    let sdk = sdk().await;
    let keys = api_keys(&sdk, args.api_key.as_deref(), args.api_key_parameter.as_deref()).await?;
    let settings = ApiSettings { limits: RateLimits::uniform(args.per_minute), ..ApiSettings::patient(&args.api_url) };
    let api = Arc::new(StiggApi::new(Arc::new(keys), settings));
    let table = TableName::parse(&args.table)?;
    let options = BackfillOptions {
        page_size: args.page_size,
        in_flight: args.in_flight,
        checkpoint_every: args.checkpoint_every,
        restart: args.restart,
    };
    let backfill = Backfill::new(api.clone(), aws_sdk_dynamodb::Client::new(&sdk), table, options);
    let until = Instant::now() + Duration::from_secs(args.budget_seconds.unwrap_or(365 * 24 * 3600));
    println!("mirror-backfill: {} -> table {}", args.api_url, args.table);
    let run = backfill.run(until, |p| println!("backfill: {p}"));
    let summary = tokio::select! {
        summary = run => summary?,
        _ = tokio::signal::ctrl_c() => {
            println!("interrupted: the checkpoint keeps what is done; run the same command to continue");
            return Ok(());
        }
    };
    let c = summary.progress.counts;
    let stats = api.stats();
    match summary.ending {
        Ending::AlreadyFinished => {
            let at = summary
                .finished_at_ms
                .map(|ms| stigg_webhooks::metrics::rfc3339(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)));
            println!(
                "the backfill already finished at {} ({} customers); --restart (RESTART=1) starts over",
                at.as_deref().unwrap_or("?"),
                c.customers
            );
            return Ok(());
        }
        Ending::OutOfTime => println!("stopped at the time budget; run the same command to continue"),
        Ending::Finished => println!("backfill finished"),
    }
    let per_customer = if c.customers > 0 { c.states() as f64 / c.customers as f64 } else { 0.0 };
    println!(
        "summary: {} customers ({} this run, {:.1}/s): states written {}, already newer {}, after deletion {} \
         ({per_customer:.2} states per customer); not found {}, failed {}",
        c.customers,
        summary.progress.this_run,
        summary.progress.per_second,
        c.written,
        c.already_newer,
        c.after_deletion,
        c.not_found,
        c.failed
    );
    println!(
        "Stigg API: {} requests, {} rate limited (429), {} retries",
        stats.requests, stats.rate_limited, stats.retries
    );
    if !summary.failed_sample.is_empty() {
        println!("failed customers (up to 20): {}", summary.failed_sample.join(", "));
    }
    Ok(())
}
