//! SQS adapter: sends one message with string attributes, to a standard or FIFO queue.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::config::QueueUrl;

/// A message to send. The body goes out verbatim.
#[derive(Debug)]
pub struct Outbound<'a> {
    pub body: &'a str,
    pub attributes: Vec<(&'static str, String)>,
    /// FIFO only: `MessageGroupId` and `MessageDeduplicationId`.
    pub fifo: Option<FifoIds>,
}

#[derive(Debug, Clone)]
pub struct FifoIds {
    pub group_id: String,
    pub deduplication_id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("SQS {operation} on {queue} failed: {detail}")]
pub struct QueueError {
    operation: &'static str,
    queue: String,
    detail: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl QueueError {
    /// SQS failures are worth retrying: nothing was queued.
    pub fn is_retryable(&self) -> bool {
        true
    }

    fn sqs<E, R>(operation: &'static str, queue: &QueueUrl, err: SdkError<E, R>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        Self {
            operation,
            queue: queue.as_str().to_owned(),
            detail: DisplayErrorContext(&err).to_string(),
            source: Box::new(err),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EventQueue {
    client: Client,
    url: QueueUrl,
}

impl EventQueue {
    pub fn new(client: Client, url: QueueUrl) -> Self {
        Self { client, url }
    }

    pub fn url(&self) -> &QueueUrl {
        &self.url
    }

    pub fn is_fifo(&self) -> bool {
        self.url.is_fifo()
    }

    /// One cheap request (GetQueueAttributes) so the HTTPS connection, credentials and endpoint
    /// are ready before the first event.
    pub async fn warm_up(&self) -> Result<(), QueueError> {
        self.client
            .get_queue_attributes()
            .queue_url(self.url.as_str())
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| QueueError::sqs("GetQueueAttributes", &self.url, e))?;
        Ok(())
    }

    /// Sends the message; returns the SQS message id.
    pub async fn send(&self, message: Outbound<'_>) -> Result<String, QueueError> {
        let mut request = self.client.send_message().queue_url(self.url.as_str()).message_body(message.body);
        for (name, value) in message.attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .expect("data_type is set");
            request = request.message_attributes(name, value);
        }
        if let (true, Some(ids)) = (self.url.is_fifo(), message.fifo) {
            request = request.message_group_id(ids.group_id).message_deduplication_id(ids.deduplication_id);
        }
        let out = request.send().await.map_err(|e| QueueError::sqs("SendMessage", &self.url, e))?;
        Ok(out.message_id.unwrap_or_default())
    }
}
