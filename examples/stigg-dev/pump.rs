//! `pump`: Lambda's SQS event source, locally.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use clap::Parser;
use serde_json::{Value, json};

use crate::{Error, sqs};

#[derive(Parser)]
pub(crate) struct PumpArgs {
    #[arg(long)]
    queue_url: String,
    #[arg(long, default_value = "http://127.0.0.1:9000/2015-03-31/functions/processor/invocations")]
    invoke_url: String,
    #[arg(long, default_value_t = 10)]
    batch_size: i32,
    /// Seconds a received batch stays invisible (a failed record comes back after this).
    #[arg(long, default_value_t = 5)]
    visibility_timeout: i32,
    /// Stop after this many polls (default: until Ctrl-C).
    #[arg(long)]
    max_polls: Option<u64>,
}

pub(crate) async fn pump(args: PumpArgs) -> Result<(), Error> {
    let sqs = sqs().await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let arn = queue_arn(&sqs, &args.queue_url).await?;
    let region = arn.split(':').nth(3).unwrap_or("us-east-1").to_owned();
    println!("pump: {} -> {}", args.queue_url, args.invoke_url);
    let mut polls = 0u64;
    loop {
        if args.max_polls.is_some_and(|m| polls >= m) {
            return Ok(());
        }
        polls += 1;
        let receive = sqs
            .receive_message()
            .queue_url(&args.queue_url)
            .max_number_of_messages(args.batch_size)
            .wait_time_seconds(1)
            .visibility_timeout(args.visibility_timeout)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All);
        let messages = tokio::select! {
            r = receive.send() => match r {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => {
                    eprintln!("pump: receive failed: {}", aws_sdk_sqs::error::DisplayErrorContext(&e));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        if messages.is_empty() {
            continue;
        }
        let records: Vec<Value> = messages.iter().map(|m| sqs_record(m, &arn, &region)).collect();
        let event = json!({ "Records": records });
        let failed: Vec<String> = match http.post(&args.invoke_url).json(&event).send().await {
            Ok(resp) if resp.status().is_success() && resp.headers().get("x-amz-function-error").is_none() => {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                match body.get("batchItemFailures").and_then(Value::as_array) {
                    Some(items) => items
                        .iter()
                        .filter_map(|i| i.get("itemIdentifier").and_then(Value::as_str).map(str::to_owned))
                        .collect(),
                    // Lambda treats any other answer as success for the whole batch.
                    None => Vec::new(),
                }
            }
            Ok(resp) => {
                eprintln!("pump: invocation failed ({}); the whole batch returns after the timeout", resp.status());
                messages.iter().filter_map(|m| m.message_id.clone()).collect()
            }
            Err(e) => {
                eprintln!("pump: invocation failed ({e}); the whole batch returns after the timeout");
                messages.iter().filter_map(|m| m.message_id.clone()).collect()
            }
        };
        let mut deleted = 0;
        for m in &messages {
            if m.message_id.as_ref().is_some_and(|id| failed.contains(id)) {
                continue;
            }
            if let Some(handle) = &m.receipt_handle {
                sqs.delete_message().queue_url(&args.queue_url).receipt_handle(handle).send().await?;
                deleted += 1;
            }
        }
        // Quiet when all went well: the processor's own "event processed" lines tell that story.
        if !failed.is_empty() {
            println!("pump: batch of {} -> {} deleted, {} left for redelivery", messages.len(), deleted, failed.len());
        }
    }
}

pub(crate) async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, Error> {
    let attrs = sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::QueueArn).send().await?;
    attrs
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| "queue has no ARN".into())
}

/// One record of the event Lambda's SQS integration sends.
fn sqs_record(m: &aws_sdk_sqs::types::Message, arn: &str, region: &str) -> Value {
    let attributes: HashMap<String, String> = m
        .attributes
        .as_ref()
        .map(|a| a.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect())
        .unwrap_or_default();
    let message_attributes: HashMap<String, Value> = m
        .message_attributes
        .as_ref()
        .map(|a| {
            a.iter()
                .map(|(k, v)| {
                    (k.clone(), json!({"stringValue": v.string_value(), "stringListValues": [], "binaryListValues": [], "dataType": v.data_type()}))
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
        "attributes": attributes, "messageAttributes": message_attributes, "md5OfBody": m.md5_of_body,
        "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": region
    })
}
