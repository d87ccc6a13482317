//! The forwarder: one handler among the others, with their "once" (see
//! [`crate::process::handler`]). An entry EventBridge refused fails this handler alone: the
//! record comes back for it, and the handlers that succeeded are not run again; an entry put is
//! recorded as this handler's success and not put again on a redelivery. A crash between the
//! put and that record puts it again: consumers drop duplicates on
//! `detail.stiggWebhooks.idempotencyKey` (EventBridge itself delivers at least once).
//!
//! A replayed event (one that came back from the bus with `replay-name`) is not put again: the
//! replay already brought it to the bus's rules.

use std::borrow::Cow;

use async_trait::async_trait;

use crate::forward::batcher::Batcher;
use crate::forward::config::ForwarderConfig;
use crate::forward::entry::EntryShape;
use crate::process::handler::{Handler, HandlerError};
use crate::stigg::event::StiggEvent;

pub struct Forwarder {
    shape: EntryShape,
    batcher: Batcher,
}

impl Forwarder {
    /// The name its success is recorded under: fixed, so a deploy never re-puts events.
    pub const NAME: &'static str = "eventbridge-forwarder";

    pub fn new(client: aws_sdk_eventbridge::Client, config: ForwarderConfig) -> Self {
        let shape = EntryShape::new(config.source.clone(), config.max_entry_bytes);
        let batcher = Batcher::new(client, config.bus, config.source, config.max_entry_bytes, config.batch_window);
        Self { shape, batcher }
    }
}

#[async_trait]
impl Handler for Forwarder {
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(Self::NAME)
    }

    fn shares_calls(&self) -> bool {
        true
    }

    async fn handle(&self, event: &StiggEvent) -> Result<(), HandlerError> {
        if let Some(replay) = &event.replay {
            crate::process::batch::release_current();
            tracing::debug!(idempotency_key = %event.key, replay, "replayed event: not put on the bus again");
            return Ok(());
        }
        let entry = self.shape.entry(event);
        let (reduced, size) = (entry.reduced, entry.size);
        match self.batcher.put(entry).await {
            Ok(()) => {
                let outcome = if reduced { "reduced" } else { "forwarded" };
                metrics::counter!("EventsForwarded", "Outcome" => outcome).increment(1);
                if reduced {
                    tracing::warn!(idempotency_key = %event.key, event_type = %event.event_type,
                        bytes = event.raw_json().len(), entry_bytes = size,
                        "event larger than an EventBridge entry: put with a reduced detail (detail.stiggWebhooks.truncated)");
                }
                Ok(())
            }
            Err(failure) => {
                metrics::counter!("EventsForwarded", "Outcome" => "failed").increment(1);
                tracing::warn!(idempotency_key = %event.key, event_type = %event.event_type,
                    code = %failure.code, "EventBridge did not take the event");
                Err(if failure.retryable { HandlerError::retryable(failure) } else { HandlerError::permanent(failure) })
            }
        }
    }
}
