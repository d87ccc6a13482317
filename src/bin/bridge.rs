//! The `bridge` Lambda (scheduled every minute): drains Stigg's durable-delivery queue into our
//! events queue. Configuration -> clients (Stigg's queue with Edge API credentials, our queue
//! with the function's role) -> drain until the deadline.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use stigg_webhooks::bridge::{Bridge, BridgeError};
use stigg_webhooks::config::{BridgeConfig, ProcessEnv};
use stigg_webhooks::edge::{self, Backoff, EdgeApi, EdgeCredentials};
use stigg_webhooks::queue::{EventQueue, SourceQueue};
use stigg_webhooks::{aws, error_chain, init_error, invocation_deadline, logging, metrics};

/// One Edge API request's limit.
const EDGE_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A refused API key is re-read from SSM at most this often (a rotation needs no redeploy).
const API_KEY_REREAD: Duration = Duration::from_secs(60);
/// The template's timeout, for runtimes that report no usable deadline.
const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    logging::init();
    metrics::init("bridge");
    let config = BridgeConfig::from_env(&ProcessEnv).map_err(init_error)?;
    let sdk = aws::load_sdk_config().map_err(init_error)?;
    let keys = aws::api_keys(&sdk, config.api_key, API_KEY_REREAD).await.map_err(init_error)?;
    let backoff = Backoff::default();
    let api = EdgeApi::new(&config.edge_api_url, EDGE_REQUEST_TIMEOUT);
    let credentials = EdgeCredentials::new(api, keys, config.stigg_queue.clone(), config.credentials_duration, backoff);
    let load_timeout = edge::load_timeout(backoff, EDGE_REQUEST_TIMEOUT);
    // Renewable: Stigg may revoke credentials before their stated expiration.
    let identity = aws::RenewableIdentityCache::new(load_timeout);
    let stigg = aws::stigg_queue_client(
        &sdk,
        credentials,
        config.stigg_queue.region(),
        config.stigg_sqs_endpoint.as_deref(),
        identity.clone(),
    );
    let bridge = Arc::new(Bridge::new(
        SourceQueue::new(stigg, config.stigg_queue).renewing(identity),
        EventQueue::new(aws_sdk_sqs::Client::new(&sdk), config.events_queue),
        config.wait,
        config.max_empty_polls.map(|n| n.get()),
        load_timeout,
    ));
    // run_concurrent: sequential unless Lambda sets AWS_LAMBDA_MAX_CONCURRENCY above 1.
    lambda_runtime::run_concurrent(service_fn(move |event: LambdaEvent<Value>| {
        let bridge = bridge.clone();
        async move {
            let deadline = invocation_deadline(event.context.deadline(), DEFAULT_BUDGET);
            let left = deadline.duration_since(SystemTime::now()).unwrap_or_default();
            let (report, result) = bridge.drain(tokio::time::Instant::now() + left).await;
            tracing::info!(
                polls = report.polls,
                empty_polls = report.empty_polls,
                received = report.received,
                forwarded = report.forwarded,
                unparseable = report.unparseable,
                forward_failures = report.forward_failures,
                deferred = report.deferred,
                deleted = report.deleted,
                delete_failures = report.delete_failures,
                credentials_renewed = report.credentials_renewed,
                "drained Stigg's queue"
            );
            metrics::flush();
            match result {
                Ok(()) => Ok(serde_json::to_value(&report)?),
                Err(e) => {
                    let what = match &e {
                        BridgeError::Credentials { refused: true, .. } => "Stigg refused the API key",
                        BridgeError::Credentials { .. } => "the Edge API gave no credentials",
                        BridgeError::CredentialsRejected { .. } => {
                            "Stigg's queue rejected the Edge API credentials, also new ones"
                        }
                        BridgeError::Receive { .. } => "Stigg's queue could not be read",
                        BridgeError::Forward(_) => "our events queue refused the forward",
                        BridgeError::Delete(_) => "Stigg's queue refused the delete",
                    };
                    tracing::error!(error = %error_chain(&e), "{what}");
                    Err(Error::from(e.to_string()))
                }
            }
        }
    }))
    .await
}
