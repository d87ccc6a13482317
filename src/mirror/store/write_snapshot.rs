//! The snapshot write path of [`MirrorStore`]: the header under the snapshot's condition, the
//! feature items, the read back of the header and the tombstone, then taking the snapshot back
//! out (overtaken or deleted) or settling it (dropped features, earlier usage events), and schema
//! 1's usages; and [`MirrorStore::mark_verified`].

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::attributes::{Item, n, number_of, s, text_of, usage_value};
use super::{
    Conditional, Expression, MirrorError, MirrorStore, OnRefusal, SnapshotWrite, Taking, WriteOutcome,
    is_conditional_failure, key_of, now_ms, query,
};
use crate::mirror::{TOMBSTONE, feature_prefix, partition_key, sort_key};

/// A snapshot's condition on its header and on each of its features: nothing newer there, or
/// this same event again (a redelivery after a failed follow-up writes again instead of counting
/// as stale); and no deletion at or after it (`deletedAt` on the item: the deletion swept it).
const NEWER_SNAPSHOT: &str =
    "(attribute_not_exists(#t) OR #t < :t OR (#t = :t AND #m = :m)) AND (attribute_not_exists(#d) OR #d < :t)";

/// How a snapshot's header write ended.
enum HeaderWrite {
    /// Written; the header as it was before.
    Written(Item),
    /// Refused (an equal or newer snapshot, or a deletion newer than this one); the stored
    /// header's `deletedAt`, when it has one.
    Refused { deleted_at: Option<i64> },
}

impl MirrorStore {
    /// Stamps `verifiedAt` (now) on the header when it still holds `snapshot`'s time: Stigg's
    /// API confirmed it, so a reader's maximum age counts from now. A newer header is left alone.
    pub async fn mark_verified(&self, snapshot: &SnapshotWrite) -> Result<(), MirrorError> {
        let result = self
            .update_item(Self::key(partition_key(&snapshot.customer), sort_key(snapshot.resource.as_deref())))
            .update_expression("SET #v = :now")
            .condition_expression("#t = :t")
            .expression_attribute_names("#v", "verifiedAt")
            .expression_attribute_names("#t", "entitlementsUpdatedAt")
            .expression_attribute_values(":now", n(now_ms()))
            .expression_attribute_values(":t", n(snapshot.at_ms))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(MirrorError::dynamo("UpdateItem", e)),
        }
    }

    /// Writes `snapshot` if it is newer than the stored one and than the customer's deletion.
    ///
    /// The header first, under the snapshot's condition: a stale snapshot costs that one failed
    /// write and nothing else. Then the features, each under the same condition. Then one
    /// strongly consistent read of the header and the tombstone: if a newer snapshot or a
    /// deletion newer than this one got there meanwhile, this snapshot takes its own features
    /// back out; else one strongly consistent Query of the resource's features removes those of
    /// older snapshots that this one no longer has and takes over usage events newer than the
    /// snapshot that arrived before it. Every writer passes the header: whichever of two writers
    /// passes it second either sees the other's writes in its Query or is seen by the other's
    /// read of the header.
    pub async fn write_snapshot(&self, snapshot: &SnapshotWrite) -> Result<WriteOutcome, MirrorError> {
        // Every item encoded before anything is written: one that cannot be stored fails the
        // event before a half-written snapshot exists.
        let features = snapshot
            .features
            .iter()
            .map(|(id, e)| Ok((id.clone(), snapshot.feature_item(id, e)?)))
            .collect::<Result<Vec<_>, MirrorError>>()?;
        let old_header = match self.write_header(snapshot).await? {
            HeaderWrite::Written(old) => old,
            // Deleted after this snapshot's time: an earlier attempt of this same event may have
            // written features before the deletion's sweep and been cut off; take them back out
            // (a Query, only on this rare path), or they would grant a deleted customer access.
            HeaderWrite::Refused { deleted_at: Some(deleted_at) } if deleted_at >= snapshot.at_ms => {
                self.retract(snapshot, Some(deleted_at)).await?;
                return Ok(WriteOutcome::AfterDeletion);
            }
            HeaderWrite::Refused { .. } => return Ok(WriteOutcome::Stale),
        };
        let legacy = legacy_usages(&old_header);
        let all_written = self.write_features(snapshot, features, &legacy).await?;
        let (current, deleted_at) = self.read_back(snapshot).await?;
        if let Some(deleted_at) = deleted_at.filter(|d| *d >= snapshot.at_ms) {
            self.retract(snapshot, Some(deleted_at)).await?;
            return Ok(WriteOutcome::AfterDeletion);
        }
        if !current {
            self.retract(snapshot, None).await?;
            return Ok(WriteOutcome::Stale);
        }
        if !all_written {
            // A feature newer than its own header: only a deletion or a newer snapshot makes one,
            // and the read above saw neither. Never leave a snapshot half-written.
            return Err(MirrorError::Dynamo {
                operation: "UpdateItem",
                detail: "a feature item refused the snapshot its header holds".into(),
                source: "inconsistent".into(),
            });
        }
        self.settle(snapshot).await?;
        if !legacy.is_empty() {
            self.drop_legacy_usages(snapshot, &legacy).await?;
        }
        Ok(WriteOutcome::Written)
    }

    /// The header, under the snapshot's condition: the header as it was before (`None`: stale).
    async fn write_header(&self, snapshot: &SnapshotWrite) -> Result<HeaderWrite, MirrorError> {
        let (e, set) = Expression::default().set_all(snapshot.header(now_ms()));
        // Schema 1's `features` map goes: a header holds no features.
        let e = e
            .name("#t", "entitlementsUpdatedAt")
            .name("#m", "messageId")
            .name("#d", "deletedAt")
            .name("#fs", "features")
            .value(":t", n(snapshot.at_ms))
            .value(":m", s(&snapshot.message_id));
        let result = self
            .update_item(Self::key(partition_key(&snapshot.customer), sort_key(snapshot.resource.as_deref())))
            .update_expression(format!("SET {set} REMOVE #d, #fs"))
            .condition_expression(NEWER_SNAPSHOT)
            .set_expression_attribute_names(Some(e.names))
            .set_expression_attribute_values(Some(e.values))
            // The old item costs no read units
            // (<https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_UpdateItem.html>).
            .return_values(ReturnValue::AllOld)
            // On refusal too, at no read cost: was the customer deleted after this snapshot?
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => Ok(HeaderWrite::Written(out.attributes.unwrap_or_default())),
            Err(e) if is_conditional_failure(&e) => {
                let old = match e.into_service_error() {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => {
                        c.item
                    }
                    _ => None,
                };
                Ok(HeaderWrite::Refused { deleted_at: old.as_ref().and_then(|i| number_of(i, "deletedAt")) })
            }
            Err(e) => Err(MirrorError::dynamo("UpdateItem", e)),
        }
    }

    /// Every feature item under the snapshot's condition, carrying over schema 1's usage of the
    /// header. `false` when one was refused (the rest is then not attempted).
    async fn write_features(
        &self,
        snapshot: &SnapshotWrite,
        features: Vec<(String, Item)>,
        legacy: &HashMap<String, AttributeValue>,
    ) -> Result<bool, MirrorError> {
        let updates = features
            .into_iter()
            .map(|(id, item)| {
                let key = key_of(&item);
                // What this snapshot does not set must not survive from an older one.
                let absent: Vec<&str> = ["currentUsage", "entitlement", "entitlementGzip", "deletedAt"]
                    .into_iter()
                    .filter(|a| !item.contains_key(*a))
                    .collect();
                let (e, mut set) = Expression::default().set_all(item);
                let (mut e, remove) = e.list(&absent);
                if let Some(usage) = legacy.get(&id) {
                    set.push_str(", #u = if_not_exists(#u, :legacy)");
                    e = e.name("#u", "usage").value(":legacy", usage.clone());
                }
                let e = e
                    .name("#t", "entitlementsUpdatedAt")
                    .name("#m", "messageId")
                    .name("#d", "deletedAt")
                    .value(":t", n(snapshot.at_ms))
                    .value(":m", s(&snapshot.message_id));
                Conditional { key, expression: format!("SET {set} REMOVE {remove}"), condition: NEWER_SNAPSHOT, e }
            })
            .collect();
        Ok(!self.apply(updates, OnRefusal::Stop).await?.refused)
    }

    /// The header and the tombstone, strongly consistent: whether the header still holds this
    /// snapshot, and when the customer was deleted. One BatchGetItem of two keys.
    async fn read_back(&self, snapshot: &SnapshotWrite) -> Result<(bool, Option<i64>), MirrorError> {
        let pk = partition_key(&snapshot.customer);
        let request = KeysAndAttributes::builder()
            .keys(Self::key(pk.clone(), sort_key(snapshot.resource.as_deref())))
            .keys(Self::key(pk, TOMBSTONE.to_owned()))
            .consistent_read(true)
            .projection_expression("#sk, #t, #m, #d")
            .expression_attribute_names("#sk", "sk")
            .expression_attribute_names("#t", "entitlementsUpdatedAt")
            .expression_attribute_names("#m", "messageId")
            .expression_attribute_names("#d", "deletedAt")
            .build()
            .expect("keys are set");
        let mut pending = HashMap::from([(self.table.as_str().to_owned(), request)]);
        let mut items = Vec::new();
        // Unprocessed keys (throttling) are asked again after a growing pause, as DynamoDB asks
        // (<https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html>).
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            let out = self
                .client
                .batch_get_item()
                .set_request_items(Some(pending))
                .send()
                .await
                .map_err(|e| MirrorError::dynamo("BatchGetItem", e))?;
            items.extend(out.responses.unwrap_or_default().into_values().flatten());
            pending = out.unprocessed_keys.unwrap_or_default();
            if pending.is_empty() {
                break;
            }
        }
        if !pending.is_empty() {
            return Err(MirrorError::Dynamo {
                operation: "BatchGetItem",
                detail: "keys left unprocessed after 5 attempts".into(),
                source: "throttled".into(),
            });
        }
        let mut current = false;
        let mut deleted_at = None;
        for item in &items {
            if text_of(item, "sk") == Some(TOMBSTONE) {
                deleted_at = number_of(item, "deletedAt");
            } else {
                current = number_of(item, "entitlementsUpdatedAt") == Some(snapshot.at_ms)
                    && text_of(item, "messageId") == Some(snapshot.message_id.as_str());
            }
        }
        Ok((current, deleted_at))
    }

    /// Takes this snapshot back out of its feature items (those still of its time and event),
    /// and out of its header when a deletion is why.
    async fn retract(&self, snapshot: &SnapshotWrite, deleted_at: Option<i64>) -> Result<(), MirrorError> {
        let pk = partition_key(&snapshot.customer);
        let own = Taking::Own { at: snapshot.at_ms };
        let mut updates = Vec::new();
        if deleted_at.is_some() {
            let header = Self::key(pk.clone(), sort_key(snapshot.resource.as_deref()));
            updates.push(Self::removal(header, own, &snapshot.message_id, deleted_at));
        }
        let items = query(
            &self.client,
            &self.table,
            &pk,
            Some(&feature_prefix(snapshot.resource.as_deref())),
            Some(&["pk", "sk", "entitlementsUpdatedAt", "messageId"]),
            true,
        )
        .await?;
        for item in items.iter().filter(|i| {
            number_of(i, "entitlementsUpdatedAt") == Some(snapshot.at_ms)
                && text_of(i, "messageId") == Some(snapshot.message_id.as_str())
        }) {
            updates.push(Self::removal(key_of(item), own, &snapshot.message_id, deleted_at));
        }
        self.apply(updates, OnRefusal::Skip).await?;
        Ok(())
    }

    /// After a snapshot that is still current: the features of older snapshots that it no
    /// longer has go, and usage events newer than it that arrived first are taken over.
    async fn settle(&self, snapshot: &SnapshotWrite) -> Result<(), MirrorError> {
        let items = query(
            &self.client,
            &self.table,
            &partition_key(&snapshot.customer),
            Some(&feature_prefix(snapshot.resource.as_deref())),
            Some(&[
                "pk",
                "sk",
                "featureId",
                "entitlementsUpdatedAt",
                "messageId",
                "currentUsage",
                "usageUpdatedAt",
                "usage",
            ]),
            true,
        )
        .await?;
        let mut updates = Vec::new();
        for item in &items {
            let at = number_of(item, "entitlementsUpdatedAt");
            if !text_of(item, "featureId").is_some_and(|f| snapshot.features.contains_key(f)) {
                if at.is_some_and(|t| t < snapshot.at_ms) {
                    updates.push(Self::removal(key_of(item), Taking::OlderThan(snapshot.at_ms), "", None));
                }
                continue;
            }
            // "Not older than the snapshot": a usage event of the same millisecond applies too.
            let Some((usage, usage_at)) =
                item.get("usage").and_then(usage_value).filter(|(_, usage_at)| *usage_at >= snapshot.usage_at())
            else {
                continue;
            };
            let ours = at == Some(snapshot.at_ms) && text_of(item, "messageId") == Some(snapshot.message_id.as_str());
            let as_number =
                |v: Option<&AttributeValue>| v.and_then(|v| v.as_n().ok()).and_then(|t| t.parse::<f64>().ok());
            let taken = number_of(item, "usageUpdatedAt") == Some(usage_at)
                && as_number(item.get("currentUsage")) == as_number(Some(&usage));
            if ours && !taken {
                let e = Expression::default()
                    .name("#cu", "currentUsage")
                    .name("#ua", "usageUpdatedAt")
                    .name("#t", "entitlementsUpdatedAt")
                    .name("#usage", "usage")
                    .name("#at", "at")
                    .value(":u", usage)
                    .value(":at", n(usage_at))
                    .value(":t", n(snapshot.at_ms));
                // A newer snapshot or usage got there first: theirs stands.
                let condition = "#t = :t AND #usage.#at = :at";
                let expression = "SET #cu = :u, #ua = :at".to_owned();
                updates.push(Conditional { key: key_of(item), expression, condition, e });
            }
        }
        self.apply(updates, OnRefusal::Skip).await?;
        Ok(())
    }

    /// Schema 1's `usage#<feature>` attributes leave the header once its features carry them.
    async fn drop_legacy_usages(
        &self,
        snapshot: &SnapshotWrite,
        legacy: &HashMap<String, AttributeValue>,
    ) -> Result<(), MirrorError> {
        let names: Vec<String> = legacy.keys().map(|f| format!("usage#{f}")).collect();
        // 200 names per call keep the expression within DynamoDB's 4 KB.
        for chunk in names.chunks(200) {
            let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let (e, remove) = Expression::default().list(&names);
            let e = e
                .name("#t", "entitlementsUpdatedAt")
                .name("#m", "messageId")
                .value(":t", n(snapshot.at_ms))
                .value(":m", s(&snapshot.message_id));
            let result = self
                .update_item(Self::key(partition_key(&snapshot.customer), sort_key(snapshot.resource.as_deref())))
                .update_expression(format!("REMOVE {remove}"))
                .condition_expression("#t = :t AND #m = :m")
                .set_expression_attribute_names(Some(e.names))
                .set_expression_attribute_values(Some(e.values))
                .send()
                .await;
            match result {
                // A newer snapshot took the header over: it carries them over and drops them.
                Ok(_) => {}
                Err(e) if is_conditional_failure(&e) => return Ok(()),
                Err(e) => return Err(MirrorError::dynamo("UpdateItem", e)),
            }
        }
        Ok(())
    }
}

/// Schema 1's `usage#<feature>` attributes of a header, by feature.
fn legacy_usages(header: &Item) -> HashMap<String, AttributeValue> {
    header
        .iter()
        .filter(|(_, v)| usage_value(v).is_some())
        .filter_map(|(name, v)| Some((name.strip_prefix("usage#")?.to_owned(), v.clone())))
        .collect()
}
