//! The moto floor's three calls: what a receiver cannot avoid per new event (a conditional
//! PutItem, a SendMessage with the two attributes, an UpdateItem; a late duplicate is the one
//! refused PutItem). One copy for the floor of `benches/receivers/` and the SDK-only function
//! of `examples/sdk-floor.rs`, so both make exactly the same requests.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::operation::send_message::SendMessageError;
use aws_sdk_sqs::types::MessageAttributeValue;

/// Claims `key`: `Ok(false)` when it was claimed before (a late duplicate).
pub async fn claim(ddb: &aws_sdk_dynamodb::Client, table: &str, key: &str) -> Result<bool, SdkError<PutItemError>> {
    let now_s = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let r = ddb
        .put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(key.to_owned()))
        .item("state", AttributeValue::S("in_flight".into()))
        .item("expires_at", AttributeValue::N(now_s.to_string()))
        .condition_expression("attribute_not_exists(pk)")
        .send()
        .await;
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
        Err(e) => Err(e),
    }
}

pub async fn enqueue(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    body: &str,
    event_type: &str,
    key: &str,
) -> Result<(), aws_sdk_sqs::error::SdkError<SendMessageError>> {
    let attr = |v: &str| {
        MessageAttributeValue::builder().data_type("String").string_value(v).build().expect("type and value are set")
    };
    sqs.send_message()
        .queue_url(queue_url)
        .message_body(body)
        .message_attributes("event_type", attr(event_type))
        .message_attributes("idempotency_key", attr(key))
        .send()
        .await?;
    Ok(())
}

pub async fn mark(ddb: &aws_sdk_dynamodb::Client, table: &str, key: &str) -> Result<(), SdkError<UpdateItemError>> {
    ddb.update_item()
        .table_name(table)
        .key("pk", AttributeValue::S(key.to_owned()))
        .update_expression("SET #s = :q")
        .expression_attribute_names("#s", "state")
        .expression_attribute_values(":q", AttributeValue::S("queued".into()))
        .send()
        .await?;
    Ok(())
}
