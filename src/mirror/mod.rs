//! The entitlement mirror: every customer's current entitlements in a DynamoDB table, kept fresh
//! by `entitlements.updated`, `entitlement.usage_exceeded` and `customer.deleted`, and never
//! rolled back by an event that arrives late (Stigg guarantees no order).
//!
//! It is a cache kept fresh by events, not a source of truth. With Stigg's API it is complete
//! from day one and proves it stays right: a [`ReadThrough`] fetches a customer the events have
//! not brought yet (and refreshes snapshots older than a reader's maximum age), the
//! [`sync::backfill`] fills every customer once, and the scheduled [`sync::drift`] check samples
//! customers, repairs what webhooks lost and counts it. All three write with the conditions
//! below: Stigg's answer never overwrites a newer webhook state nor undoes a newer deletion.
//!
//! # Table layout (a stable contract: other languages read it; `schemaVersion` 2)
//!
//! A customer's items share `pk = customer#<customer id>`. Per customer and resource, a header
//! and one item per feature: an `entitlements.updated` can be as large as SQS carries (1 MiB,
//! ~3,000 features), far over DynamoDB's 400 KB item
//! (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-items>),
//! and a check reads one feature's small item whatever the snapshot's size.
//!
//! The header, `sk = resource#<resource id>` (`resource#` for customer-wide entitlements):
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `customerId`, `resourceId` | S | the ids again (`resourceId` absent when customer-wide) |
//! | `entitlementsUpdatedAt` | N | when the current snapshot became true, epoch milliseconds (the ordering field) |
//! | `entitlementsUpdatedAtIso` | S | the same as Stigg sent it (ISO 8601) |
//! | `messageId` | S | the idempotency key of the event that wrote the snapshot |
//! | `writtenAt` | N | when the mirror wrote it, epoch milliseconds |
//! | `featureCount` | N | how many features the snapshot has |
//! | `schemaVersion` | N | 2 |
//! | `verifiedAt` | N | when Stigg's API last confirmed this snapshot, epoch ms (absent: never asked) |
//!
//! A snapshot the mirror fetched from Stigg's API (a read-through, the backfill, a drift
//! repair) has the same items, with `messageId` = `stigg-api:<entitlementsUpdatedAt ms>`.
//!
//! A feature, `sk = feature#<resource id>#<feature id>`, the resource id with `%` as `%25` and
//! `#` as `%23` (so the first `#` after it ends it; `feature##<feature id>` when customer-wide):
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `customerId`, `resourceId`, `featureId` | S | the ids |
//! | `entitlementsUpdatedAt` | N | the snapshot this entitlement is from (the ordering field); absent: no entitlement |
//! | `messageId` | S | the event of that snapshot |
//! | `entitlement` | S | the entitlement as Stigg sent it, as JSON text (`feature{id, featureType, meterType, ...}`, `usageLimit`, `hasUnlimitedUsage`, `hasSoftLimit`, `currentUsage`, `usagePeriodEnd`, `enumValues`, ..., and any field Stigg adds) |
//! | `entitlementGzip` | B | instead of `entitlement`, gzip of the same, only when it would not fit an item |
//! | `currentUsage`, `usageUpdatedAt` | N | the current usage and when it was true (epoch ms): the snapshot's, or a newer usage event's |
//! | `usage` | M | `{currentUsage: N, at: N}`: the newest usage event for that feature |
//!
//! A feature item without `entitlementsUpdatedAt` holds no entitlement (a newer snapshot dropped
//! the feature, or the customer was deleted: then it has `deletedAt`); it keeps `usage`. A deleted
//! customer leaves `pk = customer#<id>`, `sk = tombstone` with `deletedAt` (N, epoch ms),
//! `deletedAtIso` and `messageId`; its headers and features lose their snapshot attributes and
//! get `deletedAt`. An id that would make a key longer than DynamoDB allows (partition key 2,048
//! bytes, sort key 1,024; <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-partition-sort-keys>)
//! is replaced in the key by `%h<SHA-256 hex of the id>` (the items still carry the ids).
//!
//! The backfill and the drift check keep their own items under `pk = sync#<job>` (never a
//! customer's partition): `sync#backfill`/`checkpoint` and `sync#drift`/`cursor`.
//!
//! A check reads the feature's item; only when it holds no entitlement, the header (is there a
//! snapshot at all?). Headers of `schemaVersion` 1 held every feature in a `features` map and
//! usages in `usage#<feature id>` attributes: they are still read, and the next snapshot of that
//! customer and resource rewrites them (usage events meanwhile wait in the feature items for it).
//!
//! # Ordering rules (conditional writes only, no read-modify-write races)
//!
//! - A snapshot first writes its header, only if its `entitlementsUpdatedAt` is newer than the
//!   stored one (one conditional UpdateItem); an equal or older one is skipped: one failed write,
//!   nothing else. Then every feature item under the same condition on the item's own time (one
//!   conditional UpdateItem each, a few in flight). Then one strongly consistent BatchGetItem of
//!   the header and the tombstone: if a newer snapshot's header or a deletion newer than the
//!   snapshot got there meanwhile, the snapshot takes its own feature items back out (a Query
//!   finds those still of its time and event). Else one strongly consistent Query of the
//!   resource's feature items takes out the features of older snapshots that this one no longer
//!   has, and takes over usage events newer than the snapshot that arrived first. The header is
//!   the point every writer passes: of two writers, the one that passes it first either reads
//!   the other's header after its writes, or its writes came before the other's Query.
//! - A usage update changes a feature's `currentUsage` only if its time is newer than that
//!   feature's last usage and not older than the feature's snapshot.
//! - `customer.deleted` writes the tombstone (if newer than any earlier one), then removes the
//!   snapshot of each of the customer's items older than it (setting the item's `deletedAt`;
//!   `usage` stays); a later, newer snapshot (a re-created customer) is written.
//!
//! Each feature item is one snapshot's entitlement, and a check answers from one item: while a
//! snapshot is being written, some features answer from the old snapshot and some from the new
//! one, each consistent and never older than what a check saw before.

mod access;
mod read_through;
mod reader;
mod store;
pub mod sync;

pub use access::{Access, DenyReason, FeatureEntitlement, FeatureKind, Snapshot};
pub use read_through::{OnMiss, ReadThrough, ReadThroughStats};
pub use reader::{Mirror, feature_from_item, snapshot_from_item};
pub use store::{API_MESSAGE_PREFIX, MirrorError, MirrorHandler, MirrorStore, SnapshotWrite, WriteOutcome, item_size};

/// `customer#<id>`.
pub fn partition_key(customer: &str) -> String {
    format!("customer#{}", bounded(customer, 2048 - "customer#".len()))
}

/// The header's `resource#<id>`, or `resource#` for customer-wide entitlements.
pub fn sort_key(resource: Option<&str>) -> String {
    format!("resource#{}", bounded(resource.unwrap_or_default(), 1024 - "resource#".len()))
}

/// A feature's `feature#<escaped resource id>#<feature id>`.
pub fn feature_sort_key(resource: Option<&str>, feature: &str) -> String {
    // 8 + 400 + 1 + 600 bytes at most: within the 1,024 of a sort key.
    format!("{}{}", feature_prefix(resource), bounded(feature, 600))
}

/// What every feature key of a customer's resource starts with: `feature#<escaped resource id>#`.
pub fn feature_prefix(resource: Option<&str>) -> String {
    let resource = resource.unwrap_or_default();
    let escaped = resource.replace('%', "%25").replace('#', "%23");
    // The digest of the id itself: an escaped id never starts with `%h` (its `%` are `%25`, `%23`).
    let part = if escaped.len() <= 400 { escaped } else { bounded(resource, 0) };
    format!("feature#{part}#")
}

/// `id`, or `%h<its SHA-256>` when longer than `max` bytes.
fn bounded(id: &str, max: usize) -> String {
    if id.len() <= max { id.to_owned() } else { format!("%h{}", crate::stigg::event::sha256_hex(id.as_bytes())) }
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
        assert_eq!(super::feature_sort_key(Some("r-1"), "f#1"), "feature#r-1#f#1");
        assert_eq!(super::feature_sort_key(None, "f-1"), "feature##f-1");
        assert_eq!(super::feature_prefix(Some("a#b%c")), "feature#a%23b%25c#");
        assert_eq!(super::epoch_millis("2025-11-14T19:59:45.133Z"), Some(1_763_150_385_133));
        assert_eq!(super::epoch_millis("2025-11-14T20:59:45.133+01:00"), Some(1_763_150_385_133));
        assert_eq!(super::epoch_millis("yesterday"), None);
    }

    #[test]
    fn keys_stay_within_dynamodbs_key_lengths_whatever_the_ids() {
        let long = "x".repeat(5000);
        assert!(super::partition_key(&long).len() <= 2048);
        assert!(super::sort_key(Some(&long)).len() <= 1024);
        let k = super::feature_sort_key(Some(&"#".repeat(1000)), &long);
        assert!(k.len() <= 1024 && k.starts_with("feature#%h"), "{k}");
        assert_ne!(super::feature_sort_key(Some("a"), &long), super::feature_sort_key(Some("a"), &"y".repeat(5000)));
        // Resources whose ids only differ after `#` never share a prefix.
        assert!(!super::feature_sort_key(Some("a#b"), "c").starts_with(&super::feature_prefix(Some("a"))));
    }
}
