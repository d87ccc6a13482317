//! The `receiver` Lambda: configuration -> clients -> handler.

use std::sync::Arc;

use lambda_http::{Error, Request, service_fn};
use stigg_webhooks::claim::{ClaimScope, IdempotencyStore};
use stigg_webhooks::config::{ConfigError, ProcessEnv, ReceiverConfig, SecretSource};
use stigg_webhooks::queue::EventQueue;
use stigg_webhooks::receiver::Receiver;
use stigg_webhooks::secrets::Secrets;
use stigg_webhooks::{aws, init_error, logging, metrics};

// One thread: Lambda gives a small function a fraction of one vCPU, and the work is I/O-bound;
// a multi-thread runtime only adds cross-thread wake-ups (measured in BENCHMARKS.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    logging::init();
    metrics::init("receiver");
    // Any configuration problem fails the cold start here, with the variable named.
    let config = ReceiverConfig::from_env(&ProcessEnv).map_err(init_error)?;
    let sdk = aws::load_sdk_config().map_err(init_error)?;
    let secrets = match config.secrets {
        SecretSource::Inline(set) => Secrets::fixed(set),
        SecretSource::Parameter { name, policy } => {
            let parameter = Box::new(aws::SecretParameter::new(&sdk, name));
            Secrets::refreshing(parameter, policy).await.map_err(|e| init_error(ConfigError::from(e)))?
        }
    };
    let store =
        IdempotencyStore::new(aws_sdk_dynamodb::Client::new(&sdk), config.table, config.ttl, ClaimScope::Receiver);
    let queue = EventQueue::new(aws_sdk_sqs::Client::new(&sdk), config.queue);
    let receiver = Receiver::new(secrets, config.allowed_sources, config.max_body_bytes, store, queue);
    if config.warm_up {
        receiver.warm_up(std::time::Duration::from_secs(2)).await;
    }
    let receiver = Arc::new(receiver);
    // run_concurrent: sequential unless Lambda sets AWS_LAMBDA_MAX_CONCURRENCY above 1.
    lambda_http::run_concurrent(service_fn(move |request: Request| {
        let receiver = receiver.clone();
        async move {
            let response = receiver.handle_request(request).await;
            metrics::flush();
            response
        }
    }))
    .await
}
