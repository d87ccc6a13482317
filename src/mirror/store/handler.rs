//! The processor handler ([`MirrorHandler`]): which write each event type makes, and when a
//! usage event or a deletion happened ([`event_time`]).

use std::time::SystemTime;

use async_trait::async_trait;
use serde_json::Value;

use super::snapshot::{customer_of, resource_of};
use super::{MirrorError, MirrorStore, SnapshotWrite, WriteOutcome};
use crate::mirror::epoch_millis;
use crate::process::handler::{Handler, HandlerError};
use crate::stigg::event::{EventType, StiggEvent};

/// The built-in handler: registered for `entitlements.updated`, `entitlement.usage_exceeded`
/// and `customer.deleted` when `ENTITLEMENT_MIRROR_TABLE` is set.
#[derive(Debug, Clone)]
pub struct MirrorHandler {
    store: MirrorStore,
}

impl MirrorHandler {
    /// The handler's name in `done_handlers` and `failed_handlers`.
    pub const NAME: &'static str = "entitlement-mirror";

    pub const EVENT_TYPES: [EventType; 3] =
        [EventType::EntitlementsUpdated, EventType::EntitlementUsageExceeded, EventType::CustomerDeleted];

    pub fn new(store: MirrorStore) -> Self {
        Self { store }
    }

    async fn apply(&self, event: &StiggEvent) -> Result<Option<WriteOutcome>, MirrorError> {
        let fields = event.fields();
        let outcome = match event.event_type {
            EventType::EntitlementsUpdated => self.store.write_snapshot(&SnapshotWrite::from_event(event)?).await?,
            EventType::EntitlementUsageExceeded => {
                let customer = customer_of(fields)?;
                let feature = fields
                    .get("feature")
                    .and_then(|f| f.get("id"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| MirrorError::Malformed("no feature.id".into()))?;
                let usage = fields
                    .get("currentUsage")
                    .and_then(Value::as_f64)
                    .ok_or_else(|| MirrorError::Malformed("no currentUsage".into()))?;
                let (at, _) = event_time(event)?;
                self.store.write_usage(&customer, resource_of(fields).as_deref(), feature, usage, at).await?
            }
            EventType::CustomerDeleted => {
                let customer =
                    event.customer_id.clone().ok_or_else(|| MirrorError::Malformed("no customer id".into()))?;
                let (at, iso) = event_time(event)?;
                self.store.delete_customer(&customer, at, &iso, event.key.as_str()).await?
            }
            _ => return Ok(None),
        };
        Ok(Some(outcome))
    }
}

/// When a usage event or a deletion happened (epoch ms, and as ISO 8601). Stigg's reference
/// says `timestamp` may be omitted, so: `timestamp`, else the `updatedAt` of what the event is
/// about (at the top level, else in its nested object: the deleted customer, the exceeded
/// entitlement; a usage event's customer's `updatedAt` says nothing of the usage), else when SQS
/// first reached us (`sent_at`: the receiver's or the bridge's `received_at`, else SQS's
/// `SentTimestamp`): later than the truth, never earlier, so a deletion still beats every
/// snapshot that preceded it. A deletion takes the later of its `updatedAt` and its delivery: a
/// customer's `updatedAt` is its record's last edit, which can be older than its last snapshot.
/// Only an event with none of these is malformed.
fn event_time(event: &StiggEvent) -> Result<(i64, String), MirrorError> {
    let fields = event.fields();
    let nested = if event.event_type == EventType::CustomerDeleted { "customer" } else { "entitlement" };
    if let Some(ms) = event.timestamp.as_deref().and_then(epoch_millis) {
        return Ok((ms, event.timestamp.clone().unwrap_or_default()));
    }
    let updated = [
        fields.get("updatedAt").and_then(Value::as_str),
        fields.get(nested).and_then(|v| v.get("updatedAt")).and_then(Value::as_str),
    ]
    .into_iter()
    .flatten()
    .find_map(|iso| Some((epoch_millis(iso)?, iso.to_owned())));
    let sent = event.sent_at.map(|t| {
        (
            t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0),
            crate::metrics::rfc3339(t),
        )
    });
    let chosen = match (updated, sent) {
        // A customer's `updatedAt` is its record's last edit, which can be older than its last
        // snapshot: a deletion is never older than its own delivery.
        (Some(u), Some(s)) if event.event_type == EventType::CustomerDeleted => Some(if s.0 > u.0 { s } else { u }),
        (Some(u), _) => Some(u),
        (None, s) => s,
    };
    chosen.ok_or_else(|| {
        MirrorError::Malformed("no time: no ISO 8601 timestamp or updatedAt, and no SQS SentTimestamp".into())
    })
}

#[async_trait]
impl Handler for MirrorHandler {
    /// Fixed, so a redelivery after a refactoring still knows the mirror is done.
    fn name(&self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(Self::NAME)
    }

    async fn handle(&self, event: &StiggEvent) -> Result<(), HandlerError> {
        match self.apply(event).await {
            Ok(Some(outcome)) => {
                metrics::counter!("MirrorWrites", "Outcome" => outcome.as_str()).increment(1);
                tracing::debug!(idempotency_key = %event.key, event_type = %event.event_type,
                    customer_id = event.customer_id.as_deref(), outcome = outcome.as_str(), "entitlement mirror");
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => {
                let outcome =
                    if matches!(e, MirrorError::Dynamo { .. }) { "retryable_failure" } else { "permanent_failure" };
                metrics::counter!("MirrorWrites", "Outcome" => outcome).increment(1);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(raw: &str) -> StiggEvent {
        StiggEvent::parse(raw).unwrap()
    }

    #[test]
    fn an_event_without_timestamp_falls_back_to_updated_at_then_to_its_delivery() {
        let sent = SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_009_000);
        let cases = [
            (
                r#"{"type":"customer.deleted","id":"c","timestamp":"2026-09-21T14:13:20.000Z","updatedAt":"2020-01-01T00:00:00Z"}"#,
                1_790_000_000_000,
            ),
            // A deletion is never older than its delivery: the later of the two.
            (r#"{"type":"customer.deleted","id":"c","updatedAt":"2026-09-21T14:13:21.000Z"}"#, 1_790_000_009_000),
            (
                r#"{"type":"customer.deleted","id":"c","customer":{"updatedAt":"2026-09-21T14:13:22.000Z"}}"#,
                1_790_000_009_000,
            ),
            (r#"{"type":"customer.deleted","id":"c","updatedAt":"2026-09-21T14:13:30.000Z"}"#, 1_790_000_010_000),
            (r#"{"type":"customer.deleted","id":"c","timestamp":"soon"}"#, 1_790_000_009_000),
            (r#"{"type":"customer.deleted","id":"c"}"#, 1_790_000_009_000),
            (r#"{"type":"entitlement.usage_exceeded","updatedAt":"2026-09-21T14:13:21.000Z"}"#, 1_790_000_001_000),
            (
                r#"{"type":"entitlement.usage_exceeded","entitlement":{"updatedAt":"2026-09-21T14:13:23.000Z"}}"#,
                1_790_000_003_000,
            ),
            // A usage event's customer was updated at some point: not when the usage was.
            (
                r#"{"type":"entitlement.usage_exceeded","customer":{"updatedAt":"2020-01-01T00:00:00Z"}}"#,
                1_790_000_009_000,
            ),
        ];
        for (raw, want) in cases {
            let (ms, iso) = event_time(&event(raw).with_sent_at(Some(sent))).unwrap();
            assert_eq!(ms, want, "{raw}");
            assert_eq!(epoch_millis(&iso), Some(want), "{raw}");
        }
    }

    #[test]
    fn an_event_with_no_time_at_all_is_a_permanent_error() {
        for raw in [r#"{"type":"customer.deleted","id":"c"}"#, r#"{"type":"entitlement.usage_exceeded"}"#] {
            let e = event_time(&event(raw)).unwrap_err();
            assert!(matches!(HandlerError::from(e), HandlerError::Permanent(_)), "{raw}");
        }
    }
}
