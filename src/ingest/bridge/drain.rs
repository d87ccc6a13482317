//! The drain: polls Stigg's queue, forwards each poll's messages to ours and deletes from Stigg's
//! queue what SQS reported sent, until the deadline's margin; and what it did ([`DrainReport`]).

use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use super::credentials::Renewal;
use super::forward::{Forward, batches, forward_received};
use super::{ANSWER_TIME, Bridge, BridgeError, finish_margin};
use crate::aws::queue::rejects_credentials;

/// What one invocation did (also its response).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    pub polls: usize,
    pub empty_polls: usize,
    pub received: usize,
    pub forwarded: usize,
    /// Forwarded as-is because the body is not a Stigg payload.
    pub unparseable: usize,
    pub forward_failures: usize,
    /// Received but not forwarded: too little time was left to forward and delete them before
    /// the deadline. They reappear in Stigg's queue after its visibility timeout.
    pub deferred: usize,
    pub deleted: usize,
    pub delete_failures: usize,
    /// Times the cached credentials were dropped because Stigg's queue rejected them (0 or 1).
    pub credentials_renewed: usize,
}

impl Bridge {
    /// Polls, forwards and deletes until [`finish_margin`] before `deadline` (31 s: a 60 s
    /// invocation polls for 29 s), or after `max_empty_polls` empty polls in a row. An invocation
    /// shorter than 1.5 margins keeps two thirds of its time instead, so it still polls for a
    /// third. The report counts what was done even when an error ended the drain.
    pub async fn drain(&self, deadline: Instant) -> (DrainReport, Result<(), BridgeError>) {
        let mut report = DrainReport::default();
        let margin =
            finish_margin(self.identity_allowance).min(deadline.saturating_duration_since(Instant::now()) * 2 / 3);
        let mut renewal = Renewal::once();
        let mut empty_in_a_row = 0;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < margin + Duration::from_secs(1) {
                break Ok(());
            }
            // Whole seconds (SQS's unit), never past the margin; the whole call (credentials
            // included) also ends by the margin, so a forward and a delete (renewing its
            // credentials if need be) still fit after it.
            let wait = self.wait.min(left - margin - Duration::from_secs(1));
            let wait = Duration::from_secs(wait.as_secs());
            report.polls += 1;
            let messages = match self.receive(wait, left - margin, &mut renewal, &mut report).await {
                Ok(messages) => messages,
                Err(e) => break Err(e),
            };
            if messages.is_empty() {
                report.empty_polls += 1;
                crate::metrics::bridge_poll(false);
                empty_in_a_row += 1;
                if self.max_empty_polls.is_some_and(|max| empty_in_a_row >= max) {
                    break Ok(());
                }
                continue;
            }
            empty_in_a_row = 0;
            crate::metrics::bridge_poll(true);
            report.received += messages.len();
            if let Err(e) = self.forward_and_delete(&messages, deadline, margin, &mut renewal, &mut report).await {
                break Err(e);
            }
        };
        (report, result)
    }

    /// One poll; when Stigg's queue rejects the credentials and this invocation has not renewed
    /// them yet, renews them and polls again (both polls within `within`).
    async fn receive(
        &self,
        wait: Duration,
        within: Duration,
        renewal: &mut Renewal,
        report: &mut DrainReport,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, BridgeError> {
        use aws_sdk_sqs::error::ProvideErrorMetadata as _;
        let started = Instant::now();
        let generation = self.source.credentials_generation();
        let first = self.source.receive(wait, self.identity_allowance, within).await;
        let result = match first {
            Err(e)
                if rejects_credentials(e.code()) && self.renew(renewal, generation, "ReceiveMessage", &e, report) =>
            {
                self.source.receive(wait, self.identity_allowance, within.saturating_sub(started.elapsed())).await
            }
            other => other,
        };
        result.map_err(|e| self.failed(BridgeError::from_receive(e)))
    }

    /// Forwards one poll's messages, then deletes from Stigg's queue exactly those SQS reported
    /// sent. A batch refused whole stops the drain after the earlier batches' deletes. A batch
    /// after the first starts only while `margin` is left before `deadline`, so the delete keeps
    /// its [`delete_reserve`](super::delete_reserve); the messages not forwarded stay in Stigg's
    /// queue.
    async fn forward_and_delete(
        &self,
        messages: &[aws_sdk_sqs::types::Message],
        deadline: Instant,
        margin: Duration,
        renewal: &mut Renewal,
        report: &mut DrainReport,
    ) -> Result<(), BridgeError> {
        let now = SystemTime::now();
        let forwards: Vec<Forward> =
            messages.iter().map(|m| forward_received(m.body().unwrap_or_default(), sent_millis(m))).collect();
        let mut sent = Vec::with_capacity(messages.len());
        let mut refused = None;
        for (n, range) in batches(&forwards).into_iter().enumerate() {
            if n > 0 && deadline.saturating_duration_since(Instant::now()) < margin {
                let rest = forwards.len() - range.start;
                report.deferred += rest;
                crate::metrics::bridge_messages("deferred", rest);
                tracing::warn!(
                    messages = rest,
                    "too little time left to forward and delete; left in Stigg's queue until its visibility timeout ends"
                );
                break;
            }
            let outbound = forwards[range.clone()].iter().map(Forward::outbound).collect();
            let results = match self.target.send_batch(outbound).await {
                Ok(results) => results,
                Err(e) => {
                    report.forward_failures += range.len();
                    crate::metrics::bridge_messages("forward_failed", range.len());
                    refused = Some(e);
                    break;
                }
            };
            for (i, result) in range.zip(results) {
                let (message, forward) = (&messages[i], &forwards[i]);
                let key = forward.attribute("idempotency_key");
                match result {
                    Ok(()) => {
                        if let Some(reason) = &forward.unparseable {
                            report.unparseable += 1;
                            crate::metrics::bridge_messages("unparseable", 1);
                            tracing::warn!(message_id = message.message_id(), reason = %reason,
                                "not a Stigg payload; forwarded as it came, for the processor to dead-letter");
                        }
                        report.forwarded += 1;
                        crate::metrics::bridge_messages("forwarded", 1);
                        if let Some(age) = sent_age(message, now) {
                            crate::metrics::bridge_message_age(age.as_secs_f64() * 1000.0);
                        }
                        if !forward.left_out.is_empty() {
                            tracing::info!(message_id = message.message_id(), bytes = forward.body.len(),
                                left_out = ?forward.left_out,
                                "forwarded without some attributes to fit SQS's 1 MiB; the body carries them");
                        }
                        tracing::info!(
                            idempotency_key = key,
                            event_type = forward.attribute("event_type"),
                            trace_id = forward.attribute("trace_id"),
                            message_id = message.message_id(),
                            "forwarded from Stigg's queue"
                        );
                        sent.push(message.receipt_handle().unwrap_or_default());
                    }
                    Err(reason) => {
                        report.forward_failures += 1;
                        crate::metrics::bridge_messages("forward_failed", 1);
                        tracing::warn!(idempotency_key = key, message_id = message.message_id(), reason = %reason,
                            "not forwarded; left in Stigg's queue for the next poll");
                    }
                }
            }
        }
        let deleted = self.delete(&sent, deadline, renewal, report).await;
        match (refused, deleted) {
            (Some(e), _) => Err(BridgeError::Forward(e)),
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(()),
        }
    }

    /// Deletes what was forwarded, before the deadline less [`ANSWER_TIME`]; when Stigg's queue
    /// rejects the credentials and this invocation has not renewed them yet, renews them and
    /// deletes again.
    async fn delete(
        &self,
        handles: &[&str],
        deadline: Instant,
        renewal: &mut Renewal,
        report: &mut DrainReport,
    ) -> Result<(), BridgeError> {
        if handles.is_empty() {
            return Ok(());
        }
        let within = || deadline.saturating_duration_since(Instant::now()).saturating_sub(ANSWER_TIME);
        let generation = self.source.credentials_generation();
        let first = self.source.delete(handles, self.identity_allowance, within()).await;
        let result = match first {
            Err(e) if e.credentials_rejected() && self.renew(renewal, generation, "DeleteMessageBatch", &e, report) => {
                self.source.delete(handles, self.identity_allowance, within()).await
            }
            other => other,
        };
        match result {
            Ok(results) => {
                for result in results {
                    match result {
                        Ok(()) => report.deleted += 1,
                        Err(reason) => {
                            report.delete_failures += 1;
                            crate::metrics::bridge_messages("delete_failed", 1);
                            tracing::warn!(reason = %reason, "forwarded but not deleted; it will be forwarded again");
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                report.delete_failures += handles.len();
                crate::metrics::bridge_messages("delete_failed", handles.len());
                Err(self.failed(BridgeError::from_delete(e)))
            }
        }
    }
}

/// When Stigg's queue received the message (`SentTimestamp`, epoch milliseconds).
fn sent_millis(message: &aws_sdk_sqs::types::Message) -> Option<u64> {
    message.attributes()?.get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp)?.parse().ok()
}

/// How long ago Stigg's queue received the message.
fn sent_age(message: &aws_sdk_sqs::types::Message, now: SystemTime) -> Option<Duration> {
    let sent = SystemTime::UNIX_EPOCH + Duration::from_millis(sent_millis(message)?);
    now.duration_since(sent).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    mod partial_failures {
        use super::*;
        use crate::aws::queue::{EventQueue, SourceQueue};
        use crate::config::QueueUrl;
        use aws_sdk_sqs::Client;
        use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
        use aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput;
        use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
        use aws_sdk_sqs::types::{
            BatchResultErrorEntry, DeleteMessageBatchResultEntry, Message, SendMessageBatchResultEntry,
        };
        use aws_smithy_mocks::{RuleMode, mock, mock_client};

        fn message(i: usize) -> Message {
            let body = json!({"type": "plan.created", "messageId": format!("m-{i}")}).to_string();
            Message::builder().message_id(format!("sqs-{i}")).receipt_handle(format!("rh-{i}")).body(body).build()
        }

        fn url(name: &str) -> QueueUrl {
            QueueUrl::parse(&format!("https://sqs.eu-west-1.amazonaws.com/1/{name}")).unwrap()
        }

        /// A bridge between two mocked clients: Stigg's queue and ours, no wait, a 1 s allowance.
        fn mocked_bridge(source: aws_sdk_sqs::Client, target: aws_sdk_sqs::Client, max_empty: Option<usize>) -> Bridge {
            Bridge::new(
                SourceQueue::new(source, url("stigg")),
                EventQueue::new(target, url("events")),
                Duration::ZERO,
                max_empty,
                Duration::from_secs(1),
            )
        }

        #[tokio::test]
        async fn only_the_messages_sqs_reports_sent_are_deleted_from_stiggs_queue() {
            let receive = mock!(Client::receive_message)
                .sequence()
                .output(|| ReceiveMessageOutput::builder().set_messages(Some((0..3).map(message).collect())).build())
                .output(|| ReceiveMessageOutput::builder().build())
                .build();
            let delete = mock!(Client::delete_message_batch)
                .match_requests(|r| {
                    let handles: Vec<_> = r.entries().iter().map(|e| e.receipt_handle()).collect();
                    handles == ["rh-0", "rh-2"]
                })
                .then_output(|| {
                    DeleteMessageBatchOutput::builder()
                        .successful(DeleteMessageBatchResultEntry::builder().id("0").build().unwrap())
                        .successful(DeleteMessageBatchResultEntry::builder().id("1").build().unwrap())
                        .set_failed(Some(vec![]))
                        .build()
                        .unwrap()
                });
            let source = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&receive, &delete]);
            let send = mock!(Client::send_message_batch).then_output(|| {
                let ok = |id: &str| {
                    SendMessageBatchResultEntry::builder()
                        .id(id)
                        .message_id("x")
                        .md5_of_message_body("y")
                        .build()
                        .unwrap()
                };
                let throttled = BatchResultErrorEntry::builder()
                    .id("1")
                    .code("ThrottlingException")
                    .sender_fault(false)
                    .build()
                    .unwrap();
                SendMessageBatchOutput::builder()
                    .successful(ok("0"))
                    .successful(ok("2"))
                    .failed(throttled)
                    .build()
                    .unwrap()
            });
            let target = mock_client!(aws_sdk_sqs, [&send]);
            let bridge = mocked_bridge(source, target, Some(1));
            let (report, result) = bridge.drain(Instant::now() + Duration::from_secs(30)).await;
            result.unwrap();
            assert_eq!(delete.num_calls(), 1, "one delete, of exactly the two sent");
            assert_eq!((report.forwarded, report.forward_failures, report.deleted), (2, 1, 2), "{report:?}");
        }

        /// SQS's answer to credentials revoked before their expiration (its JSON protocol, with
        /// the query-compatible code in `x-amzn-query-error`).
        fn access_denied() -> aws_smithy_runtime_api::http::Response {
            let mut response = aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(403).unwrap(),
                aws_smithy_types::body::SdkBody::from(
                    r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"explicit deny"}"#,
                ),
            );
            response.headers_mut().insert("x-amzn-query-error", "AccessDenied;Sender");
            response
        }

        fn sent_all() -> SendMessageBatchOutput {
            let ok = |id: String| {
                SendMessageBatchResultEntry::builder().id(id).message_id("x").md5_of_message_body("y").build().unwrap()
            };
            SendMessageBatchOutput::builder()
                .set_successful(Some((0..3).map(|i| ok(i.to_string())).collect()))
                .set_failed(Some(vec![]))
                .build()
                .unwrap()
        }

        fn deleted_all() -> DeleteMessageBatchOutput {
            DeleteMessageBatchOutput::builder()
                .set_successful(Some(
                    (0..3)
                        .map(|i| DeleteMessageBatchResultEntry::builder().id(i.to_string()).build().unwrap())
                        .collect(),
                ))
                .set_failed(Some(vec![]))
                .build()
                .unwrap()
        }

        #[tokio::test]
        async fn a_receive_whose_credentials_are_rejected_is_made_again_once() {
            let receive = mock!(Client::receive_message)
                .sequence()
                .http_response(access_denied)
                .output(|| ReceiveMessageOutput::builder().set_messages(Some((0..3).map(message).collect())).build())
                .output(|| ReceiveMessageOutput::builder().build())
                .build();
            let delete = mock!(Client::delete_message_batch).then_output(deleted_all);
            let source = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&receive, &delete]);
            let send = mock!(Client::send_message_batch).then_output(sent_all);
            let target = mock_client!(aws_sdk_sqs, [&send]);
            let bridge = mocked_bridge(source, target, Some(1));
            let (report, result) = bridge.drain(Instant::now() + Duration::from_secs(30)).await;
            result.unwrap();
            assert_eq!(receive.num_calls(), 3, "rejected, again at once with messages, then empty");
            assert_eq!((report.credentials_renewed, report.forwarded, report.deleted), (1, 3, 3), "{report:?}");
        }

        #[tokio::test]
        async fn credentials_rejected_again_after_the_renewal_end_the_drain_and_delete_nothing() {
            let receive = mock!(Client::receive_message).then_http_response(access_denied);
            let delete = mock!(Client::delete_message_batch).then_output(deleted_all);
            let source = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&receive, &delete]);
            let target = mock_client!(aws_sdk_sqs, []);
            let bridge = mocked_bridge(source, target, None);
            let (report, result) = bridge.drain(Instant::now() + Duration::from_secs(30)).await;
            match result {
                Err(BridgeError::CredentialsRejected { operation: "ReceiveMessage", .. }) => {}
                other => panic!("{other:?}"),
            }
            assert_eq!(receive.num_calls(), 2, "the first rejection renews, the second ends the drain");
            assert_eq!(delete.num_calls(), 0);
            assert_eq!(report.credentials_renewed, 1);
        }

        #[tokio::test]
        async fn a_delete_whose_credentials_are_rejected_is_made_again_once() {
            let receive = mock!(Client::receive_message)
                .sequence()
                .output(|| ReceiveMessageOutput::builder().set_messages(Some((0..3).map(message).collect())).build())
                .output(|| ReceiveMessageOutput::builder().build())
                .build();
            let delete =
                mock!(Client::delete_message_batch).sequence().http_response(access_denied).output(deleted_all).build();
            let source = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&receive, &delete]);
            let send = mock!(Client::send_message_batch).then_output(sent_all);
            let target = mock_client!(aws_sdk_sqs, [&send]);
            let bridge = mocked_bridge(source, target, Some(1));
            let (report, result) = bridge.drain(Instant::now() + Duration::from_secs(30)).await;
            result.unwrap();
            assert_eq!(delete.num_calls(), 2);
            assert_eq!((report.credentials_renewed, report.deleted, report.delete_failures), (1, 3, 0), "{report:?}");
        }

        #[tokio::test]
        async fn a_further_batch_without_time_for_it_and_the_delete_stays_in_stiggs_queue() {
            let messages: Vec<_> = (0..12).map(message).collect();
            let delete =
                mock!(Client::delete_message_batch).match_requests(|r| r.entries().len() == 10).then_output(|| {
                    let ok = |i: usize| DeleteMessageBatchResultEntry::builder().id(i.to_string()).build().unwrap();
                    DeleteMessageBatchOutput::builder()
                        .set_successful(Some((0..10).map(ok).collect()))
                        .set_failed(Some(vec![]))
                        .build()
                        .unwrap()
                });
            let source = mock_client!(aws_sdk_sqs, [&delete]);
            let send = mock!(Client::send_message_batch).then_compute_output(|r| {
                let ok = |e: &aws_sdk_sqs::types::SendMessageBatchRequestEntry| {
                    SendMessageBatchResultEntry::builder()
                        .id(e.id())
                        .message_id("x")
                        .md5_of_message_body("y")
                        .build()
                        .unwrap()
                };
                SendMessageBatchOutput::builder()
                    .set_successful(Some(r.entries().iter().map(ok).collect()))
                    .set_failed(Some(vec![]))
                    .build()
                    .unwrap()
            });
            let target = mock_client!(aws_sdk_sqs, [&send]);
            let bridge = mocked_bridge(source, target, None);
            // Twelve messages, two batches; less than the margin left once the first is sent.
            let (mut report, mut renewal) = (DrainReport::default(), Renewal::once());
            let deadline = Instant::now() + Duration::from_secs(5);
            let margin = Duration::from_secs(10);
            bridge.forward_and_delete(&messages, deadline, margin, &mut renewal, &mut report).await.unwrap();
            assert_eq!(send.num_calls(), 1, "the second batch is not started");
            assert_eq!((report.forwarded, report.deferred, report.deleted), (10, 2, 10), "{report:?}");
        }

        #[tokio::test]
        async fn a_batch_refused_whole_deletes_nothing_and_ends_the_drain() {
            let receive = mock!(Client::receive_message).then_output(|| {
                ReceiveMessageOutput::builder().set_messages(Some((0..3).map(message).collect())).build()
            });
            let delete = mock!(Client::delete_message_batch)
                .then_output(|| DeleteMessageBatchOutput::builder().build().unwrap());
            let source = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&receive, &delete]);
            let send = mock!(Client::send_message_batch).then_http_response(|| {
                aws_smithy_runtime_api::http::Response::new(
                    aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                    aws_smithy_types::body::SdkBody::from(
                        r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"gone"}"#,
                    ),
                )
            });
            let target = mock_client!(aws_sdk_sqs, [&send]);
            let bridge = mocked_bridge(source, target, None);
            let (report, result) = bridge.drain(Instant::now() + Duration::from_secs(30)).await;
            assert!(matches!(result, Err(BridgeError::Forward(_))), "{result:?}");
            assert_eq!(delete.num_calls(), 0);
            assert_eq!(receive.num_calls(), 1, "the drain stopped at the refusal");
            assert_eq!((report.forwarded, report.forward_failures), (0, 3));
        }
    }
}
