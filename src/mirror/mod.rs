//! The entitlement mirror: every customer's current entitlements in a DynamoDB table, kept fresh
//! by `entitlements.updated`, `entitlement.usage_exceeded` and `customer.deleted`, and never
//! rolled back by an event that arrives late (Stigg guarantees no order).
//!
//! It is a cache kept fresh by events, not a source of truth: an event Stigg failed to deliver
//! is missing until the next update of that customer's entitlements.
//!
//! # Table layout (a stable contract: other languages read it; `schemaVersion` 1)
//!
//! One item per customer and resource:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `pk` | S | `customer#<customer id>` |
//! | `sk` | S | `resource#<resource id>`, or `resource#` for customer-wide entitlements |
//! | `customerId`, `resourceId` | S | the ids again (`resourceId` absent when customer-wide) |
//! | `entitlementsUpdatedAt` | N | when this set of entitlements became true, epoch milliseconds (the ordering field) |
//! | `entitlementsUpdatedAtIso` | S | the same as Stigg sent it (ISO 8601) |
//! | `messageId` | S | the idempotency key of the event that wrote the snapshot |
//! | `writtenAt` | N | when the mirror wrote it, epoch milliseconds |
//! | `schemaVersion` | N | 1 |
//! | `features` | M | feature id -> the entitlement as Stigg sent it (`feature{id, featureType, meterType, unit, units, ...}`, `usageLimit`, `hasUnlimitedUsage`, `hasSoftLimit`, `currentUsage`, `usagePeriodStart/End`, `resetPeriod`, `enumValues`, `creditBalance`, and any field Stigg adds), plus `usageUpdatedAt` (N, epoch ms: when `currentUsage` was true) |
//! | `usage#<feature id>` | M | `{currentUsage: N, at: N}`: the newest usage event for that feature |
//!
//! `features.<id>.currentUsage` is the current usage: a usage event newer than the snapshot
//! updates it (and `usage#<id>`); a snapshot written after a newer usage event had arrived takes
//! that usage over. A deleted customer leaves `pk = customer#<id>`, `sk = tombstone` with
//! `deletedAt` (N, epoch ms), `deletedAtIso` and `messageId`; its items lose their snapshot
//! attributes and get `deletedAt`. An item without `entitlementsUpdatedAt` holds no entitlements.
//!
//! # Ordering rules (conditional writes only, no read-modify-write races)
//!
//! - A snapshot is written only if its `entitlementsUpdatedAt` is newer than the stored one (one
//!   conditional UpdateItem); an equal or older one is skipped: one failed write, nothing else.
//!   After a write, one strongly consistent BatchGetItem reads the customer's tombstone and the
//!   item's usage attributes: a deletion newer than the snapshot takes it back out (conditioned on
//!   the snapshot's own time), and usage events newer than it that arrived first are taken over.
//! - A usage update changes a feature's `currentUsage` only if its `timestamp` is newer than
//!   that feature's last usage timestamp and not older than the snapshot.
//! - `customer.deleted` writes the tombstone (if newer than any earlier one), then removes the
//!   snapshot of each of the customer's items older than it (setting the item's `deletedAt`;
//!   usage attributes stay); a later, newer snapshot (a re-created customer) is written.
//!
//! The deletion's sweep and the snapshot's read-back are each linearizable per item (strongly
//! consistent), so whichever of a racing snapshot and deletion runs second sees the other.

mod access;
mod store;

pub use access::{Access, DenyReason, FeatureEntitlement, FeatureKind, Snapshot};
pub use store::{
    Mirror, MirrorError, MirrorHandler, MirrorStore, SnapshotWrite, WriteOutcome, item_size, snapshot_from_item,
};

/// `customer#<id>`.
pub fn partition_key(customer: &str) -> String {
    format!("customer#{customer}")
}

/// `resource#<id>`, or `resource#` for customer-wide entitlements.
pub fn sort_key(resource: Option<&str>) -> String {
    format!("resource#{}", resource.unwrap_or_default())
}

/// The sort key of a customer's tombstone.
pub const TOMBSTONE: &str = "tombstone";

/// DynamoDB's item size limit.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Epoch milliseconds of an ISO 8601 / RFC 3339 time (offsets allowed).
pub fn epoch_millis(iso: &str) -> Option<i64> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let t = DateTime::from_str(iso.trim(), Format::DateTimeWithOffset).ok()?;
    t.to_millis().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_and_times_follow_the_documented_layout() {
        assert_eq!(super::partition_key("c-1"), "customer#c-1");
        assert_eq!(super::sort_key(Some("r-1")), "resource#r-1");
        assert_eq!(super::sort_key(None), "resource#");
        assert_eq!(super::epoch_millis("2025-11-14T19:59:45.133Z"), Some(1_763_150_385_133));
        assert_eq!(super::epoch_millis("2025-11-14T20:59:45.133+01:00"), Some(1_763_150_385_133));
        assert_eq!(super::epoch_millis("yesterday"), None);
    }
}
