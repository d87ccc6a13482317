//! Reading the mirror: [`Mirror`] and the items of the documented layout as [`Snapshot`]s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde_json::Value;

use super::access::{self, Access, FeatureEntitlement, Snapshot};
use super::read_through::{OnMiss, ReadThrough, ReadThroughStats};
use super::store::{Item, MirrorError, gunzip, json_from_attribute, number_of, query};
use super::{feature_prefix, feature_sort_key, partition_key, sort_key};
use crate::config::TableName;

/// Reads the mirror: a check is one GetItem of the feature's item (two when the customer has no
/// entitlement to it); all of a customer's entitlements are one GetItem and one Query. With a
/// [`ReadThrough`], a miss (no snapshot of the customer or resource) fetches Stigg's state,
/// writes it through and answers from it; with a maximum age, a check reads the feature and
/// the header in one BatchGetItem (the same read units, one round trip) to know the snapshot's age.
#[derive(Debug, Clone)]
pub struct Mirror {
    client: Client,
    table: TableName,
    consistent: bool,
    read_through: Option<Arc<ReadThrough>>,
}

/// The header attributes a check reads to know whether and how fresh a snapshot is.
const HEADER_PROJECTION: [&str; 6] =
    ["customerId", "resourceId", "entitlementsUpdatedAt", "messageId", "writtenAt", "verifiedAt"];

impl Mirror {
    /// A reader of the table alone: a miss answers "customer not found".
    pub fn new(client: Client, table: TableName) -> Self {
        Self { client, table, consistent: false, read_through: None }
    }

    /// Strongly consistent reads (twice the read cost; sees a write that just succeeded).
    pub fn consistent(mut self, on: bool) -> Self {
        self.consistent = on;
        self
    }

    /// Reads through to Stigg's API on a miss (and on a stale snapshot), per its policy.
    pub fn read_through(mut self, read_through: ReadThrough) -> Self {
        self.read_through = Some(Arc::new(read_through));
        self
    }

    /// The read-through, for its counters.
    pub fn read_through_stats(&self) -> Option<&ReadThroughStats> {
        self.read_through.as_deref().map(ReadThrough::stats)
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

    /// What the policy makes of a miss: Stigg's state (fetched and written through), no
    /// snapshot (deny), or [`MirrorError::Miss`].
    async fn on_miss(&self, customer: &str, resource: Option<&str>) -> Result<Option<Snapshot>, MirrorError> {
        let Some(rt) = &self.read_through else { return Ok(None) };
        match rt.policy() {
            OnMiss::Deny => Ok(None),
            OnMiss::Error => {
                Err(MirrorError::Miss { customer: customer.to_owned(), resource: resource.map(str::to_owned) })
            }
            OnMiss::Fetch => Ok(rt.fill(customer, resource).await?.map(|s| (*s).clone())),
        }
    }

    /// Whether a header's snapshot is older than the read-through's maximum age; if so, a
    /// refresh starts in the background, or (stale answers not allowed) the caller waits for it.
    /// `Some(snapshot)`: answer from this refreshed state instead.
    async fn refresh_if_stale(
        &self,
        header: &Item,
        customer: &str,
        resource: Option<&str>,
    ) -> Result<Option<Option<Snapshot>>, MirrorError> {
        let Some(rt) = &self.read_through else { return Ok(None) };
        let fresh_at = ["writtenAt", "verifiedAt"].iter().filter_map(|k| number_of(header, k)).max();
        if !rt.is_stale(fresh_at, SystemTime::now()) {
            return Ok(None);
        }
        if rt.serves_stale() {
            rt.count_served_stale();
            rt.refresh_in_background(customer, resource);
            return Ok(None);
        }
        Ok(Some(rt.fill(customer, resource).await?.map(|s| (*s).clone())))
    }

    /// The customer's (or resource's) entitlements; `None` when none are mirrored (and, with a
    /// read-through, Stigg does not know the customer). While a snapshot is being written, each
    /// feature is the old snapshot's or the new one's.
    pub async fn entitlements(&self, customer: &str, resource: Option<&str>) -> Result<Option<Snapshot>, MirrorError> {
        let out = self.get(customer, sort_key(resource)).send().await.map_err(|e| MirrorError::dynamo("GetItem", e))?;
        let Some(header) = out.item.filter(|h| h.contains_key("entitlementsUpdatedAt")) else {
            return self.on_miss(customer, resource).await;
        };
        if let Some(refreshed) = self.refresh_if_stale(&header, customer, resource).await? {
            return Ok(refreshed);
        }
        snapshot_with_features(&self.client, &self.table, header, customer, resource, self.consistent).await
    }

    /// Stigg's answer for one feature: access, limits, remaining, the snapshot's age. One
    /// GetItem of that feature's item (about half a kilobyte: half a read unit, eventually
    /// consistent) whatever the number of features. Only when it holds no entitlement, a second
    /// GetItem of the small header tells an unknown customer from a feature not granted. With a
    /// maximum age, one BatchGetItem of both instead.
    pub async fn check(
        &self,
        customer: &str,
        resource: Option<&str>,
        feature_id: &str,
        requested_usage: f64,
    ) -> Result<Access, MirrorError> {
        let now = SystemTime::now();
        let ages = self.read_through.as_ref().is_some_and(|rt| rt.max_age_setting().is_some());
        let (feature, header) = if ages {
            self.feature_and_header(customer, resource, feature_id).await?
        } else {
            let out = self
                .get(customer, feature_sort_key(resource, feature_id))
                .send()
                .await
                .map_err(|e| MirrorError::dynamo("GetItem", e))?;
            (out.item, None)
        };
        if let Some(header) = header.as_ref().filter(|h| h.contains_key("entitlementsUpdatedAt"))
            && let Some(refreshed) = self.refresh_if_stale(header, customer, resource).await?
        {
            return Ok(access::check(refreshed.as_ref(), feature_id, requested_usage, now));
        }
        if let Some(snapshot) = feature.as_ref().and_then(|item| feature_snapshot(item, feature_id)) {
            return Ok(access::check(Some(&snapshot), feature_id, requested_usage, now));
        }
        let header = match header {
            Some(header) => Some(header),
            None => self.header_with_feature(customer, resource, feature_id).await?,
        };
        let snapshot = header.as_ref().and_then(snapshot_from_item);
        if snapshot.is_none() {
            let filled = self.on_miss(customer, resource).await?;
            return Ok(access::check(filled.as_ref(), feature_id, requested_usage, now));
        }
        Ok(access::check(snapshot.as_ref(), feature_id, requested_usage, now))
    }

    /// The header (a schema 1 header with only this feature of its `features`: a projection).
    async fn header_with_feature(
        &self,
        customer: &str,
        resource: Option<&str>,
        feature_id: &str,
    ) -> Result<Option<Item>, MirrorError> {
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
        Ok(out.item)
    }

    /// The feature's item and the header (with its ages and a schema 1 header's feature) in
    /// one BatchGetItem. A key DynamoDB leaves unprocessed (throttling) is asked again.
    async fn feature_and_header(
        &self,
        customer: &str,
        resource: Option<&str>,
        feature_id: &str,
    ) -> Result<(Option<Item>, Option<Item>), MirrorError> {
        let pk = partition_key(customer);
        let (feature_sk, header_sk) = (feature_sort_key(resource, feature_id), sort_key(resource));
        let key = |sk: &str| {
            HashMap::from([
                ("pk".to_owned(), AttributeValue::S(pk.clone())),
                ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
            ])
        };
        let mut keys = KeysAndAttributes::builder().consistent_read(self.consistent);
        for k in [key(&feature_sk), key(&header_sk)] {
            keys = keys.keys(k);
        }
        let mut request = Some(keys.build().map_err(|e| MirrorError::Malformed(e.to_string()))?);
        let (mut feature, mut header) = (None, None);
        for _ in 0..5 {
            let Some(keys) = request.take() else { break };
            let out = self
                .client
                .batch_get_item()
                .request_items(self.table.as_str(), keys)
                .send()
                .await
                .map_err(|e| MirrorError::dynamo("BatchGetItem", e))?;
            for item in out.responses.and_then(|mut r| r.remove(self.table.as_str())).unwrap_or_default() {
                match item.get("sk").and_then(|v| v.as_s().ok()) {
                    Some(sk) if *sk == feature_sk => feature = Some(item),
                    Some(sk) if *sk == header_sk => header = Some(item),
                    _ => {}
                }
            }
            request =
                out.unprocessed_keys.and_then(|mut u| u.remove(self.table.as_str())).filter(|k| !k.keys.is_empty());
        }
        if request.is_some() {
            return Err(MirrorError::Dynamo {
                operation: "BatchGetItem",
                detail: "keys left unprocessed after 5 attempts".into(),
                source: "throttled".into(),
            });
        }
        // Keep only what a check reads of the header; a schema 1 header's other features stay out of the answer.
        let header = header.map(|mut h| {
            let keep: Vec<String> = HEADER_PROJECTION.iter().map(|k| (*k).to_owned()).collect();
            let schema1 = h.remove("features").and_then(|f| f.as_m().ok().and_then(|m| m.get(feature_id).cloned()));
            h.retain(|k, _| keep.contains(k));
            if let Some(f) = schema1 {
                h.insert("features".to_owned(), AttributeValue::M(HashMap::from([(feature_id.to_owned(), f)])));
            }
            h
        });
        Ok((feature, header))
    }
}

/// A customer's (or resource's) entitlements read from the table alone (no read-through).
pub(super) async fn read_entitlements(
    client: &Client,
    table: &TableName,
    customer: &str,
    resource: Option<&str>,
    consistent: bool,
) -> Result<Option<Snapshot>, MirrorError> {
    let out = client
        .get_item()
        .table_name(table.as_str())
        .key("pk", AttributeValue::S(partition_key(customer)))
        .key("sk", AttributeValue::S(sort_key(resource)))
        .consistent_read(consistent)
        .send()
        .await
        .map_err(|e| MirrorError::dynamo("GetItem", e))?;
    let Some(header) = out.item else { return Ok(None) };
    snapshot_with_features(client, table, header, customer, resource, consistent).await
}

/// A header's snapshot with its feature items.
async fn snapshot_with_features(
    client: &Client,
    table: &TableName,
    header: Item,
    customer: &str,
    resource: Option<&str>,
    consistent: bool,
) -> Result<Option<Snapshot>, MirrorError> {
    let Some(mut snapshot) = snapshot_from_item(&header) else { return Ok(None) };
    if header.contains_key("features") {
        // Schema 1: the header holds the features.
        return Ok(Some(snapshot));
    }
    let prefix = feature_prefix(resource);
    for item in query(client, table, &partition_key(customer), Some(&prefix), None, consistent).await? {
        if let Some(feature) = feature_from_item(&item) {
            snapshot.features.insert(feature.feature_id.clone(), feature);
        }
    }
    Ok(Some(snapshot))
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
