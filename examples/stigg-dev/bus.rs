//! `make dev BUS=1`: the local EventBridge side (a bus, its archive, an example rule and its
//! subscriber queue), and `subscriber`, which prints what reaches that queue.
//!
//! Self-contained (no `crate::` items): `tests/replay_tool.rs` includes this file.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use clap::Parser;
use serde_json::{Value, json};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// What `setup --bus` created (printed as `NAME=value` lines for `.local/dev/env`).
#[derive(Debug, Clone)]
pub struct LocalBus {
    pub bus_arn: String,
    pub archive_name: String,
    pub archive_arn: String,
    pub rule_name: String,
    pub subscriber_queue_url: String,
    pub source: String,
}

impl LocalBus {
    /// `NAME=value` lines: EVENT_BUS_NAME is the bus's ARN (what the processor gets in AWS).
    pub fn env_lines(&self) -> String {
        format!(
            "EVENT_BUS_NAME={arn}\nEVENT_BUS_ARN={arn}\nEVENT_SOURCE={}\nEVENT_ARCHIVE_NAME={}\nEVENT_ARCHIVE_ARN={}\n\
             EXAMPLE_RULE_NAME={}\nSUBSCRIBER_QUEUE_URL={}",
            self.source,
            self.archive_name,
            self.archive_arn,
            self.rule_name,
            self.subscriber_queue_url,
            arn = self.bus_arn,
        )
    }
}

/// Creates (or finds) the bus `name`, an archive of its `source` events, and a rule taking every
/// such event to a subscriber queue.
pub async fn setup_bus(
    events: &aws_sdk_eventbridge::Client,
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    source: &str,
    subscriber_queue: &str,
) -> Result<LocalBus, Error> {
    let bus_arn = match events.create_event_bus().name(name).send().await {
        Ok(out) => out.event_bus_arn.ok_or("CreateEventBus returned no ARN")?,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_already_exists_exception()) => {
            events.describe_event_bus().name(name).send().await?.arn.ok_or("DescribeEventBus returned no ARN")?
        }
        Err(e) => return Err(e.into()),
    };
    let pattern = json!({"source": [source]}).to_string();
    let archive_name = format!("{name}-archive");
    let archive_arn = match events
        .create_archive()
        .archive_name(&archive_name)
        .event_source_arn(&bus_arn)
        .event_pattern(&pattern)
        .description("make dev BUS=1: every event the forwarder puts")
        .send()
        .await
    {
        Ok(out) => out.archive_arn.ok_or("CreateArchive returned no ARN")?,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_already_exists_exception()) => events
            .describe_archive()
            .archive_name(&archive_name)
            .send()
            .await?
            .archive_arn
            .ok_or("DescribeArchive returned no ARN")?,
        Err(e) => return Err(e.into()),
    };
    let queue_url = sqs.create_queue().queue_name(subscriber_queue).send().await?.queue_url.unwrap_or_default();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or("the subscriber queue has no ARN")?;
    let rule_name = format!("{name}-example");
    events
        .put_rule()
        .name(&rule_name)
        .event_bus_name(&bus_arn)
        .event_pattern(&pattern)
        .description("make dev BUS=1: an example subscriber (every event, replays included)")
        .send()
        .await?;
    let targets = events
        .put_targets()
        .rule(&rule_name)
        .event_bus_name(&bus_arn)
        .targets(aws_sdk_eventbridge::types::Target::builder().id("subscriber").arn(&queue_arn).build()?)
        .send()
        .await?;
    if targets.failed_entry_count > 0 {
        return Err(format!("the example rule could not target {queue_arn}").into());
    }
    Ok(LocalBus {
        bus_arn,
        archive_name,
        archive_arn,
        rule_name,
        subscriber_queue_url: queue_url,
        source: source.to_owned(),
    })
}

#[derive(Parser)]
pub struct SubscriberArgs {
    #[arg(long, env = "SUBSCRIBER_QUEUE_URL")]
    pub queue_url: String,
    /// Stop after this many polls (default: until Ctrl-C).
    #[arg(long)]
    pub max_polls: Option<u64>,
}

/// Prints one line per event reaching the subscriber queue, then deletes it.
pub async fn subscriber(sqs: &aws_sdk_sqs::Client, args: SubscriberArgs) -> Result<(), Error> {
    let mut polls = 0u64;
    loop {
        if args.max_polls.is_some_and(|m| polls >= m) {
            return Ok(());
        }
        polls += 1;
        let receive = sqs.receive_message().queue_url(&args.queue_url).max_number_of_messages(10).wait_time_seconds(1);
        let messages = tokio::select! {
            r = receive.send() => match r {
                Ok(out) => out.messages.unwrap_or_default(),
                Err(e) => {
                    eprintln!("subscriber: receive failed: {}", aws_sdk_sqs::error::DisplayErrorContext(&e));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        for m in messages {
            println!("{}", describe_event(m.body().unwrap_or_default()));
            if let Some(handle) = m.receipt_handle() {
                sqs.delete_message().queue_url(&args.queue_url).receipt_handle(handle).send().await?;
            }
        }
    }
}

/// One line for an EventBridge event as a rule's SQS target receives it.
pub fn describe_event(body: &str) -> String {
    let Ok(Value::Object(event)) = serde_json::from_str::<Value>(body) else {
        return format!("subscriber: not an EventBridge event: {}", body.chars().take(120).collect::<String>());
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("-").to_owned();
    let detail = event.get("detail").and_then(Value::as_object);
    let key = text(detail.and_then(|d| d.get("stiggWebhooks")).and_then(|w| w.get("idempotencyKey")));
    let customer = detail
        .map(|d| {
            let mut d = d.clone();
            d.remove("stiggWebhooks");
            let raw = Value::Object(d.clone()).to_string();
            stigg_webhooks::event::WebhookPayload::from_fields(d, raw.as_bytes())
                .ok()
                .and_then(|p| p.customer_id().map(str::to_owned))
        })
        .unwrap_or_default();
    let mut line = format!(
        "subscriber: {} key={key} customer={}",
        text(event.get("detail-type")),
        customer.as_deref().unwrap_or("-")
    );
    if let Some(replay) = event.get("replay-name").and_then(Value::as_str) {
        line.push_str(&format!(" replay-name={replay}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_line_with_type_key_customer_and_replay() {
        let event = json!({
            "version": "0", "id": "e1", "detail-type": "subscription.created", "source": "stigg.webhooks",
            "detail": {"type": "subscription.created", "messageId": "m1", "customer": {"id": "customer-acme"},
                       "stiggWebhooks": {"idempotencyKey": "m1", "traceId": "t1"}}
        });
        assert_eq!(
            describe_event(&event.to_string()),
            "subscriber: subscription.created key=m1 customer=customer-acme"
        );
        let mut replayed = event.clone();
        replayed["replay-name"] = json!("stigg-local-20260301T120000");
        assert_eq!(
            describe_event(&replayed.to_string()),
            "subscriber: subscription.created key=m1 customer=customer-acme replay-name=stigg-local-20260301T120000"
        );
        let other = json!({"detail-type": "x", "detail": {}});
        assert_eq!(describe_event(&other.to_string()), "subscriber: x key=- customer=-");
        assert!(describe_event("{oops").starts_with("subscriber: not an EventBridge event"));
    }
}
