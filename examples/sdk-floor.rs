//! The least a Rust receiver on the SDK can do: a Lambda function (`lambda_runtime`, one
//! thread, our SDK set-up) that makes the moto floor's three calls per event (conditional
//! PutItem, SendMessage with two attributes, UpdateItem; a late duplicate stops at the refused
//! PutItem) and nothing else: no secret, no validation, no payload parse beyond finding the
//! `messageId`, no logs, no metrics, no `lambda_http`.
//!
//! `make bench` runs it next to our receiver (`benches/receivers.rs`), so the report shows how
//! much of our CPU per event the runtime and the SDK take before any of our own code runs.
//! Never deployed.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::MessageAttributeValue;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde::Deserialize;
use stigg_webhooks::aws::load_sdk_config;

/// The only field of the function URL event read here.
#[derive(Deserialize)]
struct UrlEvent {
    body: String,
}

fn message_id(body: &str) -> &str {
    let start = body.find("\"messageId\"").and_then(|i| body[i + 11..].find('"').map(|j| i + 11 + j + 1));
    start.and_then(|s| body[s..].find('"').map(|e| &body[s..s + e])).unwrap_or("none")
}

fn attr(v: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder().data_type("String").string_value(v).build().expect("type and value are set")
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let sdk = load_sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let table = std::env::var("IDEMPOTENCY_TABLE")?;
    let queue = std::env::var("EVENTS_QUEUE_URL")?;
    let (ddb, sqs, table, queue) = (&ddb, &sqs, table.as_str(), queue.as_str());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<UrlEvent>| async move {
        let body = event.payload.body;
        let key = message_id(&body);
        let claimed = ddb
            .put_item()
            .table_name(table)
            .item("pk", AttributeValue::S(key.to_owned()))
            .item("state", AttributeValue::S("in_flight".into()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match claimed {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                return Ok::<_, Error>(serde_json::json!({"statusCode": 200}));
            }
            Err(e) => return Err(e.into()),
        }
        sqs.send_message()
            .queue_url(queue)
            .message_body(body.as_str())
            .message_attributes("event_type", attr("subscription.created"))
            .message_attributes("idempotency_key", attr(key))
            .send()
            .await?;
        ddb.update_item()
            .table_name(table)
            .key("pk", AttributeValue::S(key.to_owned()))
            .update_expression("SET #s = :q")
            .expression_attribute_names("#s", "state")
            .expression_attribute_values(":q", AttributeValue::S("queued".into()))
            .send()
            .await?;
        Ok(serde_json::json!({"statusCode": 202}))
    }))
    .await
}
