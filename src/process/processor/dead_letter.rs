//! Sending a record to the dead-letter queue, with attributes saying why.

use aws_lambda_events::event::sqs::SqsMessage;

use crate::aws::queue::{FifoIds, MAX_MESSAGE_BYTES, Outbound, RECEIVED_AT, attributes_size, capped};
use crate::stigg::event::{StiggEvent, sha256_hex};

use super::{FailureReason, Processor, RecordOutcome, message_id, received_millis};

impl Processor {
    /// Sends the original body to the dead-letter queue with attributes saying why.
    pub(super) async fn dead_letter(
        &self,
        record: &SqsMessage,
        event: Option<(&StiggEvent, &str)>,
        reason: FailureReason,
        detail: &str,
    ) -> RecordOutcome {
        let Some(queue) = &self.dead_letters else {
            return RecordOutcome::Retry(format!("{}: no dead-letter queue configured", reason.as_str()));
        };
        let id = message_id(record);
        // SQS refuses empty bodies; a record without one carries nothing to keep anyway.
        let body = record.body.as_deref().filter(|b| !b.is_empty()).unwrap_or("null");
        let received_at = received_millis(record).map(|ms| ms.to_string());
        let source_arn = record.event_source_arn.as_deref();
        let attributes = dead_letter_attributes(body.len(), reason, detail, &id, source_arn, received_at, event);
        let fifo = queue.is_fifo().then(|| FifoIds {
            group_id: record.attributes.get("MessageGroupId").cloned().unwrap_or_else(|| "dead-letter".into()),
            deduplication_id: sha256_hex(id.as_bytes()),
        });
        match queue.send(Outbound { body, attributes, fifo }).await {
            Ok(_) => {
                tracing::warn!(reason = reason.as_str(), "record sent to the dead-letter queue");
                RecordOutcome::DeadLettered(reason)
            }
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "dead-letter send failed; leaving the record for redelivery");
                RecordOutcome::Retry("dead-letter queue unavailable".into())
            }
        }
    }
}

/// The dead-letter message's attributes, most useful first, each value capped so that the set
/// stays within [`crate::aws::queue::ATTRIBUTE_RESERVE`]; any that would take the message past
/// what SQS carries (a body close to 1 MiB) are left off, least useful first.
pub(super) fn dead_letter_attributes(
    body_bytes: usize,
    reason: FailureReason,
    detail: &str,
    message_id: &str,
    source_arn: Option<&str>,
    received_at: Option<String>,
    event: Option<(&StiggEvent, &str)>,
) -> Vec<(&'static str, String)> {
    let mut attributes = vec![("failure_reason", reason.as_str().to_owned())];
    if let Some((event, failed_handlers)) = event {
        attributes.push(("idempotency_key", event.key.to_string()));
        attributes.push(("event_type", event.event_type.to_string()));
        if !failed_handlers.is_empty() {
            attributes.push(("failed_handlers", whole_names(failed_handlers, 512)));
        }
    }
    if let Some(received_at) = received_at {
        attributes.push((RECEIVED_AT, capped(&received_at, 20)));
    }
    attributes.push(("source_message_id", capped(message_id, 128)));
    if let Some(arn) = source_arn.filter(|a| !a.is_empty()) {
        attributes.push(("source_queue_arn", capped(arn, 256)));
    }
    attributes.push(("failure_detail", capped(&printable(detail, 1024), 1024)));
    let mut left_off = Vec::new();
    while body_bytes + attributes_size(&attributes) > MAX_MESSAGE_BYTES && attributes.len() > 1 {
        left_off.extend(attributes.pop().map(|(name, _)| name));
    }
    if !left_off.is_empty() {
        tracing::warn!(left_off = %left_off.join(","), body_bytes, "dead letter too close to SQS's limit for all its attributes");
    }
    attributes
}

/// A comma list cut to at most `max` bytes at a name's end, so no name is half there.
pub(super) fn whole_names(list: &str, max: usize) -> String {
    if list.len() <= max {
        return list.to_owned();
    }
    let cut = capped(list, max);
    match cut.rfind(',') {
        Some(end) => cut[..end].to_owned(),
        None => cut,
    }
}

fn printable(s: &str, max_chars: usize) -> String {
    let out: String = s.chars().filter(|c| !c.is_control()).take(max_chars).collect();
    if out.is_empty() { "-".into() } else { out }
}
