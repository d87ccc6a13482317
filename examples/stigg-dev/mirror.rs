//! `mirror`: a customer's mirrored entitlements, or the answer for one feature.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;

use crate::{Error, sdk};

#[derive(Parser)]
pub(crate) struct MirrorArgs {
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
    /// Stigg's GraphQL endpoint: with a key, a miss reads through to it.
    #[arg(long, env = "STIGG_API_URL", default_value = stigg_webhooks::stigg::api::DEFAULT_API_URL)]
    api_url: String,
    /// The environment's server key (a miss reads through to Stigg's API).
    #[arg(long, env = "STIGG_API_KEY", hide_env_values = true, conflicts_with = "api_key_parameter")]
    api_key: Option<String>,
    /// An SSM SecureString holding the server key.
    #[arg(long)]
    api_key_parameter: Option<String>,
    /// What a miss does with a key: fetch (read through), deny, error.
    #[arg(long, default_value = "fetch")]
    on_miss: String,
    /// Refresh a snapshot neither written nor confirmed by Stigg for this long.
    #[arg(long)]
    max_age_seconds: Option<u64>,
}

pub(crate) async fn mirror(args: MirrorArgs) -> Result<(), Error> {
    use stigg_webhooks::mirror::{Mirror, MirrorStore, OnMiss, ReadThrough};
    use stigg_webhooks::stigg::api::{ApiSettings, StiggApi};
    let table = stigg_webhooks::config::TableName::parse(&args.table)?;
    let sdk = sdk().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let mut mirror = Mirror::new(ddb.clone(), table.clone()).consistent(!args.eventually);
    if args.api_key.is_some() || args.api_key_parameter.is_some() {
        let keys = crate::backfill::api_keys(&sdk, args.api_key.as_deref(), args.api_key_parameter.as_deref()).await?;
        let api = StiggApi::new(std::sync::Arc::new(keys), ApiSettings::fail_fast(&args.api_url));
        let on_miss = match args.on_miss.as_str() {
            "fetch" => OnMiss::Fetch,
            "deny" => OnMiss::Deny,
            "error" => OnMiss::Error,
            other => return Err(format!("--on-miss {other}: fetch, deny or error").into()),
        };
        let read_through = ReadThrough::new(std::sync::Arc::new(api), MirrorStore::new(ddb, table))
            .on_miss(on_miss)
            .max_age(args.max_age_seconds.map(Duration::from_secs));
        mirror = mirror.read_through(read_through);
    }
    let resource = args.resource.as_deref();
    if let Some(feature) = &args.feature {
        let started = Instant::now();
        let access = mirror.check(&args.customer, resource, feature, args.requested).await?;
        println!("{}", serde_json::to_string_pretty(&access)?);
        eprintln!(
            "({:.1} ms{})",
            started.elapsed().as_secs_f64() * 1000.0,
            read_through_note(
                &mirror,
                access.deny_reason != Some(stigg_webhooks::mirror::DenyReason::CustomerNotFound)
            )
        );
        return Ok(());
    }
    let started = Instant::now();
    let found = mirror.entitlements(&args.customer, resource).await?;
    eprintln!("({:.1} ms{})", started.elapsed().as_secs_f64() * 1000.0, read_through_note(&mirror, found.is_some()));
    let Some(snapshot) = found else {
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

/// ", read through to Stigg's API" when this read fetched.
fn read_through_note(mirror: &stigg_webhooks::mirror::Mirror, found: bool) -> &'static str {
    let fetched = mirror.read_through_stats().is_some_and(|s| s.fetches.load(std::sync::atomic::Ordering::Relaxed) > 0);
    match (fetched, found) {
        (true, true) => ", a miss: read through to Stigg's API and written to the mirror",
        (true, false) => ", a miss: Stigg's API does not know the customer either",
        (false, _) => ", from the mirror",
    }
}
