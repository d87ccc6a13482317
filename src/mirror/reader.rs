//! Reading the mirror: [`Mirror`] and the items of the documented layout as [`Snapshot`]s.

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

use super::access::{self, Access, FeatureEntitlement, Snapshot};
use super::store::{Item, MirrorError, gunzip, json_from_attribute, query};
use super::{feature_prefix, feature_sort_key, partition_key, sort_key};
use crate::config::TableName;

/// Reads the mirror: a check is one GetItem of the feature's item (two when the customer has no
/// entitlement to it); all of a customer's entitlements are one GetItem and one Query.
#[derive(Debug, Clone)]
pub struct Mirror {
    client: Client,
    table: TableName,
    consistent: bool,
}

impl Mirror {
    pub fn new(client: Client, table: TableName) -> Self {
        Self { client, table, consistent: false }
    }

    /// Strongly consistent reads (twice the read cost; sees a write that just succeeded).
    pub fn consistent(mut self, on: bool) -> Self {
        self.consistent = on;
        self
    }

    /// A GetItem of one item, at this reader's consistency.
    fn get(&self, customer: &str, sk: String) -> aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder {
        self.client
            .get_item()
            .table_name(self.table.as_str())
            .key("pk", AttributeValue::S(partition_key(customer)))
            .key("sk", AttributeValue::S(sk))
            .consistent_read(self.consistent)
    }

    /// The customer's (or resource's) entitlements; `None` when none are mirrored. While a
    /// snapshot is being written, each feature is the old snapshot's or the new one's.
    pub async fn entitlements(&self, customer: &str, resource: Option<&str>) -> Result<Option<Snapshot>, MirrorError> {
        let out = self.get(customer, sort_key(resource)).send().await.map_err(|e| MirrorError::dynamo("GetItem", e))?;
        let Some(header) = out.item else { return Ok(None) };
        let Some(mut snapshot) = snapshot_from_item(&header) else { return Ok(None) };
        if header.contains_key("features") {
            // Schema 1: the header holds the features.
            return Ok(Some(snapshot));
        }
        let prefix = feature_prefix(resource);
        for item in
            query(&self.client, &self.table, &partition_key(customer), Some(&prefix), None, self.consistent).await?
        {
            if let Some(feature) = feature_from_item(&item) {
                snapshot.features.insert(feature.feature_id.clone(), feature);
            }
        }
        Ok(Some(snapshot))
    }

    /// Stigg's answer for one feature: access, limits, remaining, the snapshot's age. One
    /// GetItem of that feature's item (about half a kilobyte: half a read unit, eventually
    /// consistent) whatever the number of features. Only when it holds no entitlement, a second
    /// GetItem of the small header tells an unknown customer from a feature not granted.
    pub async fn check(
        &self,
        customer: &str,
        resource: Option<&str>,
        feature_id: &str,
        requested_usage: f64,
    ) -> Result<Access, MirrorError> {
        let now = SystemTime::now();
        let out = self
            .get(customer, feature_sort_key(resource, feature_id))
            .send()
            .await
            .map_err(|e| MirrorError::dynamo("GetItem", e))?;
        if let Some(snapshot) = out.item.as_ref().and_then(|item| feature_snapshot(item, feature_id)) {
            return Ok(access::check(Some(&snapshot), feature_id, requested_usage, now));
        }
        // A schema 1 header holds the feature itself: only that one comes back (a projection).
        let out = self
            .get(customer, sort_key(resource))
            .projection_expression("#c, #r, #t, #m, #fs.#f")
            .expression_attribute_names("#c", "customerId")
            .expression_attribute_names("#r", "resourceId")
            .expression_attribute_names("#t", "entitlementsUpdatedAt")
            .expression_attribute_names("#m", "messageId")
            .expression_attribute_names("#fs", "features")
            .expression_attribute_names("#f", feature_id)
            .send()
            .await
            .map_err(|e| MirrorError::dynamo("GetItem", e))?;
        let snapshot = out.item.as_ref().and_then(snapshot_from_item);
        Ok(access::check(snapshot.as_ref(), feature_id, requested_usage, now))
    }
}

/// Reads a header of the documented layout (a schema 1 header with its `features`); `None` for
/// a header with no snapshot (deleted).
pub fn snapshot_from_item(item: &Item) -> Option<Snapshot> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let at = item.get("entitlementsUpdatedAt")?.as_n().ok()?.parse().ok()?;
    let features = item
        .get("features")
        .and_then(|f| f.as_m().ok())
        .map(|m| {
            m.iter().map(|(id, e)| (id.clone(), FeatureEntitlement::from_json(id, &json_from_attribute(e)))).collect()
        })
        .unwrap_or_default();
    Some(Snapshot {
        customer_id: text("customerId")?,
        resource_id: text("resourceId"),
        entitlements_updated_at: at,
        message_id: text("messageId"),
        features,
    })
}

/// Reads a feature item: the entitlement as Stigg sent it, with the current usage (a newer usage
/// event's, when one came) in `currentUsage` and `usageUpdatedAt`. `None` without an entitlement.
pub fn feature_from_item(item: &Item) -> Option<FeatureEntitlement> {
    item.get("entitlementsUpdatedAt")?;
    let id = item.get("featureId")?.as_s().ok()?;
    let json = match (item.get("entitlement"), item.get("entitlementGzip")) {
        (Some(AttributeValue::S(text)), _) => text.clone(),
        (_, Some(AttributeValue::B(blob))) => gunzip(blob.as_ref())?,
        _ => return None,
    };
    let mut entitlement: Value = serde_json::from_str(&json).ok()?;
    if let Value::Object(fields) = &mut entitlement {
        for name in ["currentUsage", "usageUpdatedAt"] {
            if let Some(v) = item.get(name) {
                fields.insert(name.to_owned(), json_from_attribute(v));
            }
        }
    }
    Some(FeatureEntitlement::from_json(id, &entitlement))
}

/// A feature item as a snapshot of that one feature, at the time of the snapshot it is from.
fn feature_snapshot(item: &Item, feature_id: &str) -> Option<Snapshot> {
    let feature = feature_from_item(item).filter(|f| f.feature_id == feature_id)?;
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    Some(Snapshot {
        customer_id: text("customerId")?,
        resource_id: text("resourceId"),
        entitlements_updated_at: item.get("entitlementsUpdatedAt")?.as_n().ok()?.parse().ok()?,
        message_id: text("messageId"),
        features: BTreeMap::from([(feature_id.to_owned(), feature)]),
    })
}
