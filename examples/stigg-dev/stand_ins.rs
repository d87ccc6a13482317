//! `stand-ins`: Stigg's Edge API and status page on 127.0.0.1 until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;

use crate::{Error, stigg_stand_ins};

#[derive(Parser)]
pub(crate) struct StandInArgs {
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

pub(crate) async fn stand_ins(args: StandInArgs) -> Result<(), Error> {
    let answer: Value = serde_json::from_slice(&std::fs::read(&args.status_answer)?)?;
    let lifetime = Duration::from_secs(args.lifetime_seconds);
    let edge = stigg_stand_ins::EdgeApiStandIn::start_on(&args.edge, &args.api_key, &args.queue_url, lifetime).await;
    let status = stigg_stand_ins::StatusPageStandIn::start_on(&args.status, &answer).await;
    println!("STIGG_EDGE_API_URL={}\nSTIGG_STATUS_URL={}", edge.url(), status.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

#[derive(Parser)]
pub(crate) struct ApiStandInArgs {
    #[arg(long, default_value = "127.0.0.1:4582")]
    addr: String,
    #[arg(long, env = "STIGG_API_KEY", default_value = "local-stigg-server-key")]
    api_key: String,
    /// Customers, resources and states to answer with.
    #[arg(long, default_value = "events/stigg-api/customers.json")]
    customers: PathBuf,
    /// Calls per minute each operation allows before answering 429 (default: the stand-in's).
    #[arg(long)]
    per_minute: Option<usize>,
}

/// Stigg's GraphQL API (`entitlementsState`, `customers`, `customerResources`) until Ctrl-C.
pub(crate) async fn api_stand_in(args: ApiStandInArgs) -> Result<(), Error> {
    use stigg_stand_ins::api::{CUSTOMER_RESOURCES, CUSTOMERS, ENTITLEMENTS_STATE};
    let api = stigg_stand_ins::StiggApiStandIn::start_on(&args.addr, &args.api_key).await;
    let n = api.seed_file(&args.customers)?;
    if let Some(per_minute) = args.per_minute {
        for op in [ENTITLEMENTS_STATE, CUSTOMERS, CUSTOMER_RESOURCES] {
            api.set_limit(op, per_minute, Duration::from_secs(60));
        }
    }
    println!("STIGG_API_URL={}", api.url());
    eprintln!("Stigg API stand-in: {n} customers from {}", args.customers.display());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
