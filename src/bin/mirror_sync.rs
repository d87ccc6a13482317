//! The `mirror-sync` Lambda: the entitlement mirror against Stigg's API. Scheduled (off by
//! default), one drift check per run; on request, `{"action":"drift"}` or
//! `{"action":"backfill","restart":false}`. Configuration -> clients (the mirror table, Stigg's
//! API with the server key) -> [`MirrorSync`].

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use stigg_webhooks::config::{MirrorSyncConfig, ProcessEnv};
use stigg_webhooks::mirror::sync::drift::{self, DriftCheck};
use stigg_webhooks::mirror::sync::invocation::{self, MirrorSync};
use stigg_webhooks::stigg::api::StiggApi;
use stigg_webhooks::{aws, error_chain, init_error, invocation_deadline, logging, metrics};

/// A refused server key is re-read from SSM at most this often (a rotation needs no redeploy).
const API_KEY_REREAD: Duration = Duration::from_secs(60);
/// The template's timeout, for runtimes that report no usable deadline.
const DEFAULT_BUDGET: Duration = Duration::from_secs(900);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    logging::init();
    metrics::init("mirror-sync");
    let config = MirrorSyncConfig::from_env(&ProcessEnv).map_err(init_error)?;
    let sdk = aws::load_sdk_config().map_err(init_error)?;
    let keys = aws::api_keys(&sdk, config.api_key, API_KEY_REREAD).await.map_err(init_error)?;
    let keys = Arc::new(keys);
    // One client per job: the drift check gives up sooner than the backfill.
    let drift_api = StiggApi::new(keys.clone(), drift::api_settings(&config.api_url));
    let backfill_api = StiggApi::new(keys, invocation::backfill_api_settings(&config.api_url));
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let check = DriftCheck::new(Arc::new(drift_api), ddb.clone(), config.table.clone(), config.drift_sample);
    let sync = Arc::new(MirrorSync::new(check, Arc::new(backfill_api), ddb, config.table));
    // run_concurrent: sequential unless Lambda sets AWS_LAMBDA_MAX_CONCURRENCY above 1.
    lambda_runtime::run_concurrent(service_fn(move |event: LambdaEvent<Value>| {
        let sync = sync.clone();
        async move {
            let deadline = invocation_deadline(event.context.deadline(), DEFAULT_BUDGET);
            let result = sync.handle(&event.payload, deadline).await;
            metrics::flush();
            result.map_err(|e| {
                tracing::error!(error = %error_chain(&e), retryable = e.is_retryable(), "mirror-sync failed");
                Error::from(e.to_string())
            })
        }
    }))
    .await
}
