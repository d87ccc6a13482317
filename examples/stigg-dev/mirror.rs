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
}

pub(crate) async fn mirror(args: MirrorArgs) -> Result<(), Error> {
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
