//! A snapshot to write ([`SnapshotWrite`]): read from an `entitlements.updated` event or from
//! Stigg's API, and its items (a header and one per feature) as the layout in [`crate::mirror`]
//! has them.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Value};

use super::attributes::{Item, gzip, item_size, n, number_attribute, s};
use super::{MirrorError, SCHEMA_VERSION, now_ms};
use crate::mirror::{MAX_ITEM_BYTES, epoch_millis, feature_sort_key, partition_key, sort_key};
use crate::stigg::api::EntitlementsState;
use crate::stigg::event::StiggEvent;

/// Room kept in a feature item for what later events add to it (`usage`, `deletedAt`).
const FEATURE_ITEM_BYTES: usize = MAX_ITEM_BYTES - 1024;

/// A snapshot to write, read from an `entitlements.updated` event.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotWrite {
    pub customer: String,
    pub resource: Option<String>,
    pub at_ms: i64,
    pub at_iso: String,
    pub message_id: String,
    /// Feature id -> the entitlement as Stigg sent it.
    pub features: BTreeMap<String, Value>,
    /// When the entitlements' `currentUsage` was true, when not at `at_ms`: a state fetched from
    /// Stigg's API carries the usage of the moment it was fetched, which a usage event older
    /// than that must not overwrite (`entitlementsUpdatedAt` does not move with usage).
    pub usage_at_ms: Option<i64>,
}

impl SnapshotWrite {
    pub fn from_event(event: &StiggEvent) -> Result<Self, MirrorError> {
        let fields = event.fields();
        let customer = customer_of(fields)?;
        let at_iso = fields
            .get("entitlementsUpdatedAt")
            .and_then(Value::as_str)
            .ok_or_else(|| MirrorError::Malformed("no entitlementsUpdatedAt".into()))?
            .to_owned();
        let at_ms = epoch_millis(&at_iso)
            .ok_or_else(|| MirrorError::Malformed("entitlementsUpdatedAt is not ISO 8601".into()))?;
        let features = features_of(fields.get("entitlements").and_then(Value::as_array).into_iter().flatten())?;
        Ok(Self {
            customer,
            resource: resource_of(fields),
            at_ms,
            at_iso,
            message_id: event.key.to_string(),
            features,
            usage_at_ms: None,
        })
    }

    /// A state read from Stigg's API (a read-through, the backfill, a drift repair), written
    /// with the same conditions as a webhook's snapshot. Its `messageId` is
    /// `stigg-api:<entitlementsUpdatedAt ms>`: the same state fetched twice is the same write.
    pub fn from_state(state: &EntitlementsState) -> Result<Self, MirrorError> {
        if state.customer.is_empty() {
            return Err(MirrorError::Malformed("no customer id".into()));
        }
        Ok(Self {
            customer: state.customer.clone(),
            resource: state.resource.clone().filter(|r| !r.is_empty()),
            at_ms: state.at_ms,
            at_iso: state.at_iso.clone(),
            message_id: format!("{API_MESSAGE_PREFIX}{}", state.at_ms),
            // An archived customer is "no longer eligible for entitlements"
            // (https://docs.stigg.io/graphql-reference/types/EntitlementsStateAccessDeniedReason):
            // mirrored as a snapshot without features, whatever the list holds.
            features: if state.access_denied_reason.as_deref() == Some("CustomerIsArchived") {
                BTreeMap::new()
            } else {
                features_of(state.entitlements.iter())?
            },
            usage_at_ms: Some(now_ms().max(state.at_ms)),
        })
    }

    /// When the snapshot's usages were true.
    pub fn usage_at(&self) -> i64 {
        self.usage_at_ms.unwrap_or(self.at_ms).max(self.at_ms)
    }

    /// The header as written.
    pub fn header(&self, written_at: i64) -> Item {
        let mut item = HashMap::from([
            ("pk".to_owned(), s(partition_key(&self.customer))),
            ("sk".to_owned(), s(sort_key(self.resource.as_deref()))),
            ("customerId".to_owned(), s(&self.customer)),
            ("entitlementsUpdatedAt".to_owned(), n(self.at_ms)),
            ("entitlementsUpdatedAtIso".to_owned(), s(&self.at_iso)),
            ("messageId".to_owned(), s(&self.message_id)),
            ("writtenAt".to_owned(), n(written_at)),
            ("featureCount".to_owned(), n(self.features.len() as i64)),
            ("schemaVersion".to_owned(), n(SCHEMA_VERSION)),
        ]);
        if let Some(resource) = &self.resource {
            item.insert("resourceId".to_owned(), s(resource));
        }
        item
    }

    /// One feature's item as written (without the `usage` it may already have). An entitlement
    /// that would not fit an item is kept gzip-compressed (`entitlementGzip`): JSON shrinks
    /// several times, so any entitlement a 1 MiB event can realistically carry fits.
    pub fn feature_item(&self, feature: &str, entitlement: &Value) -> Result<Item, MirrorError> {
        let mut item = HashMap::from([
            ("pk".to_owned(), s(partition_key(&self.customer))),
            ("sk".to_owned(), s(feature_sort_key(self.resource.as_deref(), feature))),
            ("customerId".to_owned(), s(&self.customer)),
            ("featureId".to_owned(), s(feature)),
            ("entitlementsUpdatedAt".to_owned(), n(self.at_ms)),
            ("messageId".to_owned(), s(&self.message_id)),
            ("usageUpdatedAt".to_owned(), n(self.usage_at())),
            ("entitlement".to_owned(), s(entitlement.to_string())),
        ]);
        if let Some(resource) = &self.resource {
            item.insert("resourceId".to_owned(), s(resource));
        }
        // A usage DynamoDB cannot hold as a number stays in the entitlement's JSON only.
        if let Some(usage) = entitlement.get("currentUsage").and_then(Value::as_f64).and_then(number_attribute) {
            item.insert("currentUsage".to_owned(), usage);
        }
        if item_size(&item) > FEATURE_ITEM_BYTES {
            let json = entitlement.to_string();
            item.remove("entitlement");
            item.insert("entitlementGzip".to_owned(), AttributeValue::B(Blob::new(gzip(json.as_bytes()))));
            let bytes = item_size(&item);
            if bytes > FEATURE_ITEM_BYTES {
                return Err(MirrorError::TooLarge { feature: feature.to_owned(), bytes });
            }
        }
        Ok(item)
    }

    /// Every item of the snapshot as written: the header, then one per feature.
    pub fn items(&self, written_at: i64) -> Result<Vec<Item>, MirrorError> {
        let mut items = vec![self.header(written_at)];
        for (id, entitlement) in &self.features {
            items.push(self.feature_item(id, entitlement)?);
        }
        Ok(items)
    }
}

/// The `messageId` of a snapshot the mirror fetched from Stigg's API starts with this.
pub const API_MESSAGE_PREFIX: &str = "stigg-api:";

/// Feature id -> entitlement of a list of entitlements in the webhook's shape.
fn features_of<'a>(list: impl Iterator<Item = &'a Value>) -> Result<BTreeMap<String, Value>, MirrorError> {
    let mut features = BTreeMap::new();
    for (i, e) in list.enumerate() {
        let id = e
            .get("feature")
            .and_then(|f| f.get("id"))
            .and_then(Value::as_str)
            .ok_or_else(|| MirrorError::Malformed(format!("entitlements[{i}] has no feature.id")))?;
        features.insert(id.to_owned(), e.clone());
    }
    Ok(features)
}

/// The customer's id: `customer.id`, else `customerId`.
pub(super) fn customer_of(fields: &Map<String, Value>) -> Result<String, MirrorError> {
    fields
        .get("customer")
        .and_then(|c| c.get("id"))
        .or_else(|| fields.get("customerId"))
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| MirrorError::Malformed("no customer.id".into()))
}

/// `resource.id`; `None` for customer-wide entitlements (`resource` null or absent).
pub(super) fn resource_of(fields: &Map<String, Value>) -> Option<String> {
    fields
        .get("resource")
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::handler::HandlerError;
    use serde_json::json;

    fn entitlement(i: usize) -> Value {
        json!({"feature": {"entityId": "4ff99f8c-fdb0-42a0-b3ac-aef46630cedf", "id": format!("feature-{i:04}-cloud-storage"),
            "name": "1 TB cloud storage", "description": "", "featureType": "NUMBER", "meterType": "INCREMENTAL",
            "unit": "Tbs", "units": "Gbs", "status": "NEW", "enumConfiguration": null},
            "usageLimit": 1000, "hasUnlimitedUsage": false, "hasSoftLimit": false, "currentUsage": 17,
            "usagePeriodAnchor": "2025-11-01T00:00:00.000Z", "usagePeriodStart": "2025-11-01T00:00:00.000Z",
            "usagePeriodEnd": "2025-12-01T00:00:00.000Z", "resetPeriod": "MONTH",
            "resetPeriodConfiguration": {"accordingTo": "SubscriptionStart"}, "enumValues": null})
    }

    pub(crate) fn snapshot_of(features: usize) -> SnapshotWrite {
        SnapshotWrite {
            customer: "f29e950f-99cb-4f06-8395-434fb5259a58".into(),
            resource: Some("device-34ea9346-4a37-4c5d-82b1-0e42c45dcd77".into()),
            at_ms: 1_763_150_385_133,
            at_iso: "2025-11-14T19:59:45.133Z".into(),
            message_id: "ce2605be-8eed-41cf-912c-def052682dbe".into(),
            features: (0..features).map(|i| (format!("feature-{i:04}-cloud-storage"), entitlement(i))).collect(),
            usage_at_ms: None,
        }
    }

    /// Any size the queue carries: 3,000 features, about 1.7 MB in the full shape above (more
    /// than SQS's 1 MiB), are 3,001 items of under a kilobyte each.
    #[test]
    fn a_snapshot_of_any_size_is_a_small_header_and_one_small_item_per_feature() {
        let items = snapshot_of(3000).items(0).unwrap();
        assert_eq!(items.len(), 3001);
        let largest = items.iter().map(item_size).max().unwrap();
        eprintln!("header {} B, largest feature item {largest} B", item_size(&items[0]));
        assert!(item_size(&items[0]) < 400 && largest < 1024, "one write unit each");
        let feature = crate::mirror::feature_from_item(&items[3000]).unwrap();
        assert_eq!((feature.feature_id.as_str(), feature.usage_limit), ("feature-2999-cloud-storage", Some(1000.0)));
        assert_eq!((feature.current_usage, feature.usage_updated_at), (Some(17.0), Some(1_763_150_385_133)));
    }

    #[test]
    fn an_entitlement_too_large_for_an_item_is_kept_compressed() {
        let values: Vec<String> = (0..40_000).map(|i| format!("region-{i:05}")).collect();
        let mut w = snapshot_of(0);
        let mut e = entitlement(0);
        e["enumValues"] = json!(values);
        assert!(e.to_string().len() > MAX_ITEM_BYTES);
        w.features.insert("feature-0000-cloud-storage".into(), e);
        let item = w.feature_item("feature-0000-cloud-storage", &w.features["feature-0000-cloud-storage"]).unwrap();
        assert!(item.contains_key("entitlementGzip") && !item.contains_key("entitlement"));
        assert!(item_size(&item) < MAX_ITEM_BYTES, "{} B", item_size(&item));
        let read = crate::mirror::feature_from_item(&item).unwrap();
        assert_eq!(read.enum_values.len(), 40_000);
        assert_eq!(read.current_usage, Some(17.0));
    }

    #[test]
    fn an_entitlement_too_large_even_compressed_is_a_permanent_error_before_any_write() {
        // Random hex: gzip gets it to about half, still over the item limit.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: String = (0..1_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from_digit((x % 16) as u32, 16).unwrap()
            })
            .collect();
        let mut e = entitlement(0);
        e["feature"]["description"] = json!(noise);
        let e = snapshot_of(0).feature_item("f", &e).unwrap_err();
        assert!(matches!(e, MirrorError::TooLarge { ref feature, .. } if feature == "f"), "{e}");
        assert!(matches!(HandlerError::from(e), HandlerError::Permanent(_)));
    }

    #[test]
    fn numbers_dynamodb_cannot_hold_are_never_sent() {
        assert_eq!(number_attribute(17.0), Some(AttributeValue::N("17.0".into())));
        assert_eq!(number_attribute(0.0), Some(AttributeValue::N("0.0".into())));
        assert!(number_attribute(1e300).is_none() && number_attribute(1e-200).is_none());
        assert!(number_attribute(f64::NAN).is_none());
        let mut e = entitlement(0);
        e["currentUsage"] = json!(1e300);
        let item = snapshot_of(0).feature_item("f", &e).unwrap();
        assert!(!item.contains_key("currentUsage"), "kept in the entitlement's JSON only");
    }

    #[test]
    fn the_documented_example_becomes_a_snapshot_of_the_layout() {
        let raw = include_str!("../../../events/stigg/entitlements.updated.json");
        let event = StiggEvent::parse(raw).unwrap();
        let w = SnapshotWrite::from_event(&event).unwrap();
        assert_eq!(w.customer, "f29e950f-99cb-4f06-8395-434fb5259a58");
        assert_eq!(w.resource.as_deref(), Some("device-34ea9346-4a37-4c5d-82b1-0e42c45dcd77"));
        assert_eq!(w.at_ms, 1_763_150_385_133);
        let items = w.items(5).unwrap();
        assert_eq!(items[0]["pk"].as_s().unwrap(), "customer#f29e950f-99cb-4f06-8395-434fb5259a58");
        assert_eq!(items[0]["sk"].as_s().unwrap(), "resource#device-34ea9346-4a37-4c5d-82b1-0e42c45dcd77");
        assert_eq!(items[0]["featureCount"].as_n().unwrap(), "1");
        let s = crate::mirror::snapshot_from_item(&items[0]).unwrap();
        assert!(s.features.is_empty() && s.entitlements_updated_at == 1_763_150_385_133);
        assert_eq!(
            items[1]["sk"].as_s().unwrap(),
            "feature#device-34ea9346-4a37-4c5d-82b1-0e42c45dcd77#feature-1-tb-cloud-storage"
        );
        let f = crate::mirror::feature_from_item(&items[1]).unwrap();
        assert_eq!(
            (f.usage_limit, f.current_usage, f.usage_updated_at),
            (Some(1.0), Some(0.0), Some(1_763_150_385_133))
        );
        assert_eq!(f.kind, super::super::super::FeatureKind::Metered);
    }

    #[test]
    fn an_event_without_what_the_mirror_needs_is_a_permanent_error() {
        for raw in [
            r#"{"type":"entitlements.updated","messageId":"m","entitlementsUpdatedAt":"2025-11-14T19:59:45.133Z","entitlements":[]}"#,
            r#"{"type":"entitlements.updated","messageId":"m","customer":{"id":"c"},"entitlements":[]}"#,
            r#"{"type":"entitlements.updated","messageId":"m","customer":{"id":"c"},"entitlementsUpdatedAt":"soon"}"#,
            r#"{"type":"entitlements.updated","messageId":"m","customer":{"id":"c"},"entitlementsUpdatedAt":"2025-11-14T19:59:45.133Z","entitlements":[{"feature":{}}]}"#,
        ] {
            let e = SnapshotWrite::from_event(&StiggEvent::parse(raw).unwrap()).unwrap_err();
            assert!(matches!(HandlerError::from(e), HandlerError::Permanent(_)), "{raw}");
        }
    }
}
