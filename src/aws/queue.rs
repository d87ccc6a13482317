//! SQS adapter: [`EventQueue`] sends messages with string attributes to a standard or FIFO
//! queue, one or a batch; [`SourceQueue`] receives and deletes, for the bridge.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    SendMessageBatchRequestEntry,
};

use crate::aws::{ATTEMPT_TIMEOUT, OPERATION_TIMEOUT, RenewableIdentityCache};
use crate::config::QueueUrl;

/// The most one SQS message carries, body and message attributes together: 1 MiB since August
/// 2025, and the default of a queue's `MaximumMessageSize` (the template still sets it, on both
/// queues): <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html>.
/// `SendMessageBatch` carries the same in total.
pub const MAX_MESSAGE_BYTES: usize = 1_048_576;

/// Kept back from [`MAX_MESSAGE_BYTES`] for the message attributes we add: the receiver's (key,
/// type, trace id) and, on the way to the dead-letter queue, the processor's on top. The largest
/// possible set is 3,754 bytes (a unit test adds it up from the caps each value is held to).
pub const ATTRIBUTE_RESERVE: usize = 8 * 1024;

/// The largest event body the stack accepts (the receiver's `MAX_BODY_BYTES` at most): it still
/// fits a message, with every attribute, on the events queue and on the dead-letter queue.
pub const MAX_EVENT_BYTES: usize = MAX_MESSAGE_BYTES - ATTRIBUTE_RESERVE;

/// The attribute that carries when an event first reached us (epoch milliseconds), set by the
/// receiver and the bridge and kept on a dead letter. SQS's `SentTimestamp` is not enough: a
/// redrive from the dead-letter queue makes "new messages with a new messageID and enqueueTime"
/// (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-configure-dead-letter-queue-redrive.html>).
pub const RECEIVED_AT: &str = "received_at";

/// What message attributes count toward a message's size: each one's name, data type
/// (`String`) and value.
pub fn attributes_size(attributes: &[(&str, String)]) -> usize {
    attributes.iter().map(|(name, value)| name.len() + "String".len() + value.len()).sum()
}

/// `value` cut to at most `max` bytes on a character boundary, so an attribute stays within the
/// reserve whatever a payload or an error message holds.
pub fn capped(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_owned();
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_owned()
}

/// A message to send. The body goes out verbatim.
#[derive(Debug)]
pub struct Outbound<'a> {
    pub body: &'a str,
    pub attributes: Vec<(&'static str, String)>,
    /// FIFO only: `MessageGroupId` and `MessageDeduplicationId`.
    pub fifo: Option<FifoIds>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// SQS's error code, when SQS answered with an error.
    code: Option<String>,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl QueueError {
    /// SQS failures are worth retrying: nothing was queued.
    pub fn is_retryable(&self) -> bool {
        true
    }

    /// SQS rejected the credentials that signed the call (see [`rejects_credentials`]).
    pub fn credentials_rejected(&self) -> bool {
        rejects_credentials(self.code.as_deref())
    }

    pub(crate) fn sqs<E, R>(operation: &'static str, queue: &QueueUrl, err: SdkError<E, R>) -> Self
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        Self {
            operation,
            queue: queue.as_str().to_owned(),
            detail: DisplayErrorContext(&err).to_string(),
            code: err.code().map(str::to_owned),
            source: Box::new(err),
        }
    }
}

/// The error codes with which SQS refuses the credentials that signed a request although they
/// have not reached their stated expiration, where credentials issued anew may pass:
/// - `ExpiredToken` (the query protocol's code, which SQS's JSON protocol keeps in its
///   `x-amzn-query-error` header) and `ExpiredTokenException` (its JSON name): the session
///   token is no longer valid
///   (<https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_control-access_disable-perms.html>);
/// - `InvalidClientTokenId`: the access key id no longer exists, e.g. its role was deleted
///   (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/CommonErrors.html>),
///   and `UnrecognizedClientException`, the JSON protocol's "security token included in the
///   request is invalid";
/// - `AccessDenied` / `AccessDeniedException`: the issuer revoked the role's sessions, which
///   denies everything to credentials issued before the revocation and nothing to later ones
///   (<https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use_revoke-sessions.html>).
///
/// Not among them: `SignatureDoesNotMatch` and `IncompleteSignature` (how the request was
/// signed, not whether the credentials still hold), `RequestExpired` (the request's timestamp:
/// a clock skew), `KmsAccessDenied` (the queue's key policy), and S3's `InvalidAccessKeyId`,
/// which SQS does not document.
pub const REJECTED_CREDENTIALS: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "AccessDenied",
    "AccessDeniedException",
];

/// Whether an SQS error code says the request's credentials were refused (see
/// [`REJECTED_CREDENTIALS`]).
pub fn rejects_credentials(code: Option<&str>) -> bool {
    code.is_some_and(|c| REJECTED_CREDENTIALS.contains(&c))
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
        let mut request = self
            .client
            .send_message()
            .queue_url(self.url.as_str())
            .message_body(message.body)
            .set_message_attributes(Some(string_attributes(message.attributes)));
        if let (true, Some(ids)) = (self.url.is_fifo(), message.fifo) {
            request = request.message_group_id(ids.group_id).message_deduplication_id(ids.deduplication_id);
        }
        let out = request.send().await.map_err(|e| QueueError::sqs("SendMessage", &self.url, e))?;
        Ok(out.message_id.unwrap_or_default())
    }

    /// Sends up to ten messages in one `SendMessageBatch`. `Err` when the call itself failed
    /// (nothing was sent); otherwise one result per message, in order: SQS reports each entry's
    /// success or failure on its own, and a failed entry was not queued.
    pub async fn send_batch(&self, messages: Vec<Outbound<'_>>) -> Result<Vec<Result<(), String>>, QueueError> {
        let count = messages.len();
        let entries = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(m.body)
                    .set_message_attributes(Some(string_attributes(m.attributes)));
                if let (true, Some(ids)) = (self.url.is_fifo(), m.fifo) {
                    entry = entry.message_group_id(ids.group_id).message_deduplication_id(ids.deduplication_id);
                }
                entry.build().expect("id and body are set")
            })
            .collect();
        let out = self
            .client
            .send_message_batch()
            .queue_url(self.url.as_str())
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| QueueError::sqs("SendMessageBatch", &self.url, e))?;
        let failed = out.failed().iter().map(|f| (f.id(), f.code(), f.message()));
        Ok(entry_results(count, out.successful().iter().map(|s| s.id()), failed))
    }
}

/// One result per batch entry (ids are the entries' indexes). An entry SQS reports neither way
/// counts as failed: only a reported success may lead to a delete.
fn entry_results<'a>(
    count: usize,
    successful: impl Iterator<Item = &'a str>,
    failed: impl Iterator<Item = (&'a str, &'a str, Option<&'a str>)>,
) -> Vec<Result<(), String>> {
    let mut results: Vec<Result<(), String>> = vec![Err("SQS reported no result for this entry".into()); count];
    for id in successful {
        if let Some(slot) = id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
            *slot = Ok(());
        }
    }
    for (id, code, message) in failed {
        if let Some(slot) = id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
            *slot = Err(format!("{code}: {}", message.unwrap_or_default()));
        }
    }
    results
}

fn string_attributes(attributes: Vec<(&'static str, String)>) -> HashMap<String, MessageAttributeValue> {
    attributes
        .into_iter()
        .map(|(name, value)| {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .expect("data_type is set");
            (name.to_owned(), value)
        })
        .collect()
}

pub type ReceiveError =
    SdkError<aws_sdk_sqs::operation::receive_message::ReceiveMessageError, aws_smithy_runtime_api::http::Response>;

/// A queue we consume (the bridge's view of Stigg's durable-delivery queue).
#[derive(Debug, Clone)]
pub struct SourceQueue {
    client: Client,
    url: QueueUrl,
    /// The identity cache of `client`, when its credentials can be renewed on demand.
    identity: Option<RenewableIdentityCache>,
}

impl SourceQueue {
    pub fn new(client: Client, url: QueueUrl) -> Self {
        Self { client, url, identity: None }
    }

    /// `identity` is the cache `client` was built with (see [`crate::aws::stigg_queue_client`]):
    /// [`renew_credentials`](Self::renew_credentials) empties it.
    pub fn renewing(mut self, identity: RenewableIdentityCache) -> Self {
        self.identity = Some(identity);
        self
    }

    pub fn url(&self) -> &QueueUrl {
        &self.url
    }

    /// The generation of the credentials in use (read before a call, see
    /// [`renew_credentials`](Self::renew_credentials)).
    pub fn credentials_generation(&self) -> u64 {
        self.identity.as_ref().map_or(0, RenewableIdentityCache::generation)
    }

    /// Drops the cached credentials, so the next call fetches new ones, unless another call
    /// already did since `generation`. True when this call dropped them.
    pub fn renew_credentials(&self, generation: u64) -> bool {
        self.identity.as_ref().is_some_and(|identity| identity.renew(generation))
    }

    /// One long poll of up to ten messages, with their system attributes (`SentTimestamp`).
    /// A long poll legitimately holds the request open for `wait`, and the SDK resolves
    /// credentials inside the attempt (a refresh may take `identity_allowance`), so both are
    /// added to the usual limits; `within` caps the whole call (the invocation's deadline).
    pub async fn receive(
        &self,
        wait: Duration,
        identity_allowance: Duration,
        within: Duration,
    ) -> Result<Vec<Message>, ReceiveError> {
        let operation = (wait + identity_allowance + Duration::from_secs(10)).min(within);
        let attempt = (wait + identity_allowance + Duration::from_secs(5)).min(operation);
        let out = self
            .client
            .receive_message()
            .queue_url(self.url.as_str())
            .max_number_of_messages(10)
            .wait_time_seconds(wait.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(bounded(attempt, operation)))
            .send()
            .await?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Deletes messages by receipt handle in one `DeleteMessageBatch` (at most ten); one result
    /// per handle, in order. The usual limits plus `identity_allowance` (the credentials may be
    /// due for renewal, which happens inside the attempt), all within `within`.
    pub async fn delete(
        &self,
        receipt_handles: &[&str],
        identity_allowance: Duration,
        within: Duration,
    ) -> Result<Vec<Result<(), String>>, QueueError> {
        let operation = (OPERATION_TIMEOUT + identity_allowance).min(within);
        let attempt = (ATTEMPT_TIMEOUT + identity_allowance).min(operation);
        let entries = receipt_handles
            .iter()
            .enumerate()
            .map(|(i, handle)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(*handle)
                    .build()
                    .expect("set")
            })
            .collect();
        let out = self
            .client
            .delete_message_batch()
            .queue_url(self.url.as_str())
            .set_entries(Some(entries))
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(bounded(attempt, operation)))
            .send()
            .await
            .map_err(|e| QueueError::sqs("DeleteMessageBatch", &self.url, e))?;
        let failed = out.failed().iter().map(|f| (f.id(), f.code(), f.message()));
        Ok(entry_results(receipt_handles.len(), out.successful().iter().map(|s| s.id()), failed))
    }
}

fn bounded(attempt: Duration, operation: Duration) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(attempt)
        .operation_timeout(operation)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_expired_or_unknown_credentials_are_rejections_a_bad_signature_is_not() {
        for code in ["ExpiredToken", "InvalidClientTokenId", "AccessDenied", "AccessDeniedException"] {
            assert!(rejects_credentials(Some(code)), "{code}");
        }
        for code in ["SignatureDoesNotMatch", "RequestExpired", "KmsAccessDenied", "ThrottlingException"] {
            assert!(!rejects_credentials(Some(code)), "{code}");
        }
        assert!(!rejects_credentials(None), "a transport failure is no rejection");
    }
}
