//! The least a Rust receiver on the SDK can do: a Lambda function (`lambda_runtime`, one
//! thread, our SDK set-up) that makes the moto floor's three calls per event (conditional
//! PutItem, SendMessage with two attributes, UpdateItem; a late duplicate stops at the refused
//! PutItem) and nothing else: no secret, no validation, no payload parse beyond finding the
//! `messageId`, no logs, no metrics, no `lambda_http`.
//!
//! `make bench` runs it next to our receiver (`benches/receivers/`), so the report shows how
//! much of our CPU per event the runtime and the SDK take before any of our own code runs.
//! Never deployed.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::Deserialize;
use stigg_webhooks::aws::load_sdk_config;

// The same three calls as the bench's moto floor, from the same code.
#[path = "../benches/support/floor.rs"]
mod floor;

/// The only field of the function URL event read here.
#[derive(Deserialize)]
struct UrlEvent {
    body: String,
}

fn message_id(body: &str) -> &str {
    const FIELD: &str = "\"messageId\"";
    let start = body.find(FIELD).map(|i| i + FIELD.len()).and_then(|i| body[i..].find('"').map(|j| i + j + 1));
    start.and_then(|s| body[s..].find('"').map(|e| &body[s..s + e])).unwrap_or("none")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let sdk = load_sdk_config()?;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let table = std::env::var("IDEMPOTENCY_TABLE")?;
    let queue = std::env::var("EVENTS_QUEUE_URL")?;
    let (ddb, sqs, table, queue) = (&ddb, &sqs, table.as_str(), queue.as_str());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<UrlEvent>| async move {
        let body = event.payload.body;
        let key = message_id(&body);
        if !floor::claim(ddb, table, key).await? {
            return Ok::<_, Error>(serde_json::json!({"statusCode": 200}));
        }
        floor::enqueue(sqs, queue, &body, "subscription.created", key).await?;
        floor::mark(ddb, table, key).await?;
        Ok(serde_json::json!({"statusCode": 202}))
    }))
    .await
}
