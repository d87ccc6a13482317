//! `send-durable`: payloads on a durable-delivery queue, as Stigg publishes them.

use std::path::PathBuf;
use std::time::SystemTime;

use clap::Parser;
use serde_json::{Value, json};

use crate::send::{load_payloads, with_fresh_ids};
use crate::{Error, sqs};

#[derive(Parser)]
pub(crate) struct SendDurableArgs {
    #[arg(long, env = "STIGG_QUEUE_URL")]
    queue_url: String,
    /// Wrap each payload in an SNS notification, as a queue subscribed to a topic receives it.
    #[arg(long)]
    sns: bool,
    /// Keep the files' own messageId/eventId (default: fresh ones, like `send`).
    #[arg(long)]
    keep_ids: bool,
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

pub(crate) async fn send_durable(args: SendDurableArgs) -> Result<(), Error> {
    let sqs = sqs().await;
    for (name, body) in load_payloads(&args.paths)? {
        let body = if args.keep_ids { body } else { with_fresh_ids(&body) };
        let key = serde_json::from_str::<Value>(&body).ok().and_then(|v| v["messageId"].as_str().map(str::to_owned));
        let message = if args.sns {
            json!({"Type": "Notification", "MessageId": uuid::Uuid::new_v4().to_string(),
                "TopicArn": "arn:aws:sns:us-east-1:000000000000:stigg-events", "Message": body,
                "Timestamp": stigg_webhooks::metrics::rfc3339(SystemTime::now()), "SignatureVersion": "1"})
            .to_string()
        } else {
            body
        };
        sqs.send_message().queue_url(&args.queue_url).message_body(message).send().await?;
        println!(
            "{name}: on Stigg's queue{} (messageId {})",
            if args.sns { " in an SNS envelope" } else { "" },
            key.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
