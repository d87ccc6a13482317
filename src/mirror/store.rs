//! The mirror's DynamoDB side: the conditional writes (see the ordering rules in
//! [`crate::mirror`]), the reader ([`Mirror`]) and the processor handler ([`MirrorHandler`]).

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use serde_json::{Map, Number, Value};

use super::access::{self, Access, FeatureEntitlement, Snapshot};
use super::{MAX_ITEM_BYTES, TOMBSTONE, epoch_millis, partition_key, sort_key};
use crate::config::TableName;
use crate::process::handler::{Handler, HandlerError};
use crate::stigg::event::{EventType, StiggEvent};

pub const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// DynamoDB failed (throttled, unreachable, a transaction conflict): worth another try.
    #[error("DynamoDB {operation} on the mirror table failed: {detail}")]
    Dynamo {
        operation: &'static str,
        detail: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The event lacks what the mirror needs (a customer id, a parseable time): it never will.
    #[error("cannot mirror this event: {0}")]
    Malformed(String),
    /// DynamoDB refused the request itself (a `ValidationException`, such as an item grown past
    /// 400 KB with its usage attributes): it will refuse it again.
    #[error("DynamoDB {operation} on the mirror table was refused: {detail}")]
    Refused {
        operation: &'static str,
        detail: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A snapshot over DynamoDB's 400 KB item limit.
    #[error("the snapshot is {bytes} bytes, over DynamoDB's {MAX_ITEM_BYTES}-byte item limit")]
    TooLarge { bytes: usize },
}

impl MirrorError {
    fn dynamo<E, R>(operation: &'static str, e: SdkError<E, R>) -> Self
    where
        E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let detail = DisplayErrorContext(&e).to_string();
        if e.as_service_error().and_then(|se| se.code()) == Some("ValidationException") {
            return Self::Refused { operation, detail, source: Box::new(e) };
        }
        Self::Dynamo { operation, detail, source: Box::new(e) }
    }
}

impl From<MirrorError> for HandlerError {
    fn from(e: MirrorError) -> Self {
        match e {
            MirrorError::Dynamo { .. } => HandlerError::retryable(e),
            MirrorError::Malformed(_) | MirrorError::TooLarge { .. } | MirrorError::Refused { .. } => {
                HandlerError::permanent(e)
            }
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// An equal or newer state was already there: skipped (one failed conditional write).
    Stale,
    /// The customer was deleted after this snapshot's time.
    AfterDeletion,
    /// A usage event for a feature no snapshot holds yet: kept in `usage#<feature>` only, for a
    /// snapshot that arrives later.
    UsageOnly,
    /// `customer.deleted`: the tombstone and this many items deleted.
    Deleted(usize),
}

impl WriteOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Written => "written",
            Self::Stale => "stale",
            Self::AfterDeletion => "after_deletion",
            Self::UsageOnly => "usage_only",
            Self::Deleted(_) => "deleted",
        }
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// JSON as a DynamoDB attribute value (numbers as `N`, objects as `M`, arrays as `L`).
pub fn attribute_from_json(v: &Value) -> AttributeValue {
    match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(num) => AttributeValue::N(num.to_string()),
        Value::String(text) => AttributeValue::S(text.clone()),
        Value::Array(items) => AttributeValue::L(items.iter().map(attribute_from_json).collect()),
        Value::Object(fields) => {
            AttributeValue::M(fields.iter().map(|(k, v)| (k.clone(), attribute_from_json(v))).collect())
        }
    }
}

/// The reverse of [`attribute_from_json`] (sets become arrays, binaries are dropped).
pub fn json_from_attribute(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(text) => number(text),
        AttributeValue::S(text) => Value::String(text.clone()),
        AttributeValue::L(items) => Value::Array(items.iter().map(json_from_attribute).collect()),
        AttributeValue::M(fields) => {
            Value::Object(fields.iter().map(|(k, v)| (k.clone(), json_from_attribute(v))).collect())
        }
        AttributeValue::Ss(items) => Value::Array(items.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(items) => Value::Array(items.iter().map(|t| number(t)).collect()),
        _ => Value::Null,
    }
}

fn number(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::Number(i.into());
    }
    text.parse::<f64>().ok().and_then(Number::from_f64).map_or(Value::Null, Value::Number)
}

/// DynamoDB's size of an item: attribute names plus values (strings and names by UTF-8 length,
/// numbers by about one byte per two digits plus one, 1 byte for booleans and nulls, 3 bytes
/// per map or list plus 1 per element), per
/// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html>.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(t) => t.len(),
        AttributeValue::N(t) => t.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(items) => 3 + items.iter().map(|i| 1 + value_size(i)).sum::<usize>(),
        AttributeValue::M(fields) => 3 + fields.iter().map(|(k, v)| 1 + k.len() + value_size(v)).sum::<usize>(),
        AttributeValue::Ss(items) => items.iter().map(String::len).sum(),
        AttributeValue::Ns(items) => items.iter().map(|t| t.len().div_ceil(2) + 1).sum(),
        _ => 0,
    }
}

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
        let mut features = BTreeMap::new();
        for (i, e) in fields.get("entitlements").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let id = e
                .get("feature")
                .and_then(|f| f.get("id"))
                .and_then(Value::as_str)
                .ok_or_else(|| MirrorError::Malformed(format!("entitlements[{i}] has no feature.id")))?;
            features.insert(id.to_owned(), e.clone());
        }
        Ok(Self { customer, resource: resource_of(fields), at_ms, at_iso, message_id: event.key.to_string(), features })
    }

    /// The item as written (without the usage attributes it may already have).
    pub fn item(&self, written_at: i64) -> HashMap<String, AttributeValue> {
        let features = self
            .features
            .iter()
            .map(|(id, e)| {
                let mut entry = e.clone();
                if let Value::Object(fields) = &mut entry {
                    fields.insert("usageUpdatedAt".into(), Value::Number(self.at_ms.into()));
                }
                (id.clone(), attribute_from_json(&entry))
            })
            .collect();
        let mut item = HashMap::from([
            ("pk".to_owned(), s(partition_key(&self.customer))),
            ("sk".to_owned(), s(sort_key(self.resource.as_deref()))),
            ("customerId".to_owned(), s(&self.customer)),
            ("entitlementsUpdatedAt".to_owned(), n(self.at_ms)),
            ("entitlementsUpdatedAtIso".to_owned(), s(&self.at_iso)),
            ("messageId".to_owned(), s(&self.message_id)),
            ("writtenAt".to_owned(), n(written_at)),
            ("schemaVersion".to_owned(), n(SCHEMA_VERSION)),
            ("features".to_owned(), AttributeValue::M(features)),
        ]);
        if let Some(resource) = &self.resource {
            item.insert("resourceId".to_owned(), s(resource));
        }
        item
    }
}

/// The customer's id: `customer.id`, else `customerId`.
fn customer_of(fields: &Map<String, Value>) -> Result<String, MirrorError> {
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
fn resource_of(fields: &Map<String, Value>) -> Option<String> {
    fields
        .get("resource")
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Writes the mirror.
#[derive(Debug, Clone)]
pub struct MirrorStore {
    client: Client,
    table: TableName,
}

impl MirrorStore {
    pub fn new(client: Client, table: TableName) -> Self {
        Self { client, table }
    }

    /// An UpdateItem on one customer's (or resource's) item.
    fn update(
        &self,
        customer: &str,
        resource: Option<&str>,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(self.table.as_str())
            .key("pk", s(partition_key(customer)))
            .key("sk", s(sort_key(resource)))
    }

    /// Writes `snapshot` if it is newer than the stored one and than the customer's deletion.
    ///
    /// One conditional UpdateItem: a stale snapshot costs that failed write and nothing else.
    /// After a write, one strongly consistent read of the tombstone and of the item's usage
    /// attributes: a deletion newer than the snapshot that the write raced with (or that
    /// happened before the item ever existed) takes the snapshot back out, and usage events
    /// newer than the snapshot that arrived before it are taken over. Both the deletion's sweep
    /// and this check are linearizable per item, so whichever runs second sees the other.
    pub async fn write_snapshot(&self, snapshot: &SnapshotWrite) -> Result<WriteOutcome, MirrorError> {
        let item = snapshot.item(now_ms());
        let bytes = item_size(&item);
        if bytes > MAX_ITEM_BYTES {
            return Err(MirrorError::TooLarge { bytes });
        }
        let mut set = Vec::new();
        let mut names = HashMap::new();
        // `:m`: the same event again (a redelivery after a failed follow-up) writes again and
        // re-runs the read-back, instead of counting as stale.
        let mut values =
            HashMap::from([(":t".to_owned(), n(snapshot.at_ms)), (":m".to_owned(), s(&snapshot.message_id))]);
        for (i, (name, value)) in item.into_iter().filter(|(k, _)| k != "pk" && k != "sk").enumerate() {
            set.push(format!("#a{i} = :a{i}"));
            names.insert(format!("#a{i}"), name);
            values.insert(format!(":a{i}"), value);
        }
        // `deletedAt` on the item: the deletion swept it; an older snapshot stays out.
        let result = self
            .update(&snapshot.customer, snapshot.resource.as_deref())
            .update_expression(format!("SET {} REMOVE deletedAt", set.join(", ")))
            .condition_expression(
                "(attribute_not_exists(entitlementsUpdatedAt) OR entitlementsUpdatedAt < :t \
                  OR (entitlementsUpdatedAt = :t AND messageId = :m)) \
                 AND (attribute_not_exists(deletedAt) OR deletedAt < :t)",
            )
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::None)
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e) if is_conditional_failure(&e) => return Ok(WriteOutcome::Stale),
            Err(e) => return Err(MirrorError::dynamo("UpdateItem", e)),
        }
        let (deleted_at, usages) = self.read_after_write(snapshot).await?;
        if deleted_at.is_some_and(|d| d >= snapshot.at_ms) {
            self.remove_snapshot(
                &snapshot.customer,
                snapshot.resource.as_deref(),
                deleted_at.unwrap_or(snapshot.at_ms),
                Some(snapshot.at_ms),
            )
            .await?;
            return Ok(WriteOutcome::AfterDeletion);
        }
        // "Not older than the snapshot": a usage event of the same millisecond applies too.
        for (feature, current, at) in usages.into_iter().filter(|(_, _, at)| *at >= snapshot.at_ms) {
            let result = self
                .update(&snapshot.customer, snapshot.resource.as_deref())
                .update_expression("SET features.#f.currentUsage = :u, features.#f.usageUpdatedAt = :at")
                .condition_expression("entitlementsUpdatedAt = :t AND #usage.#at = :at")
                .expression_attribute_names("#f", &feature)
                .expression_attribute_names("#usage", format!("usage#{feature}"))
                .expression_attribute_names("#at", "at")
                .expression_attribute_values(":u", current)
                .expression_attribute_values(":at", n(at))
                .expression_attribute_values(":t", n(snapshot.at_ms))
                .send()
                .await;
            match result {
                Ok(_) => {}
                // A newer snapshot or usage got there first: theirs stands.
                Err(e) if is_conditional_failure(&e) => {}
                Err(e) => return Err(MirrorError::dynamo("UpdateItem", e)),
            }
        }
        Ok(WriteOutcome::Written)
    }

    /// The customer's `deletedAt` and the item's `usage#<feature>` attributes for the
    /// snapshot's features, strongly consistent: one BatchGetItem (more for very large snapshots).
    async fn read_after_write(
        &self,
        snapshot: &SnapshotWrite,
    ) -> Result<(Option<i64>, Vec<(String, AttributeValue, i64)>), MirrorError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let pk = s(partition_key(&snapshot.customer));
        let item_key = HashMap::from([
            ("pk".to_owned(), pk.clone()),
            ("sk".to_owned(), s(sort_key(snapshot.resource.as_deref()))),
        ]);
        let tombstone_key = HashMap::from([("pk".to_owned(), pk), ("sk".to_owned(), s(TOMBSTONE))]);
        let ids: Vec<&String> = snapshot.features.keys().collect();
        let mut deleted_at = None;
        let mut usages = Vec::new();
        // The first request also reads the tombstone; a snapshot without features still needs it.
        let chunks: Vec<&[&String]> = if ids.is_empty() { vec![&[]] } else { ids.chunks(300).collect() };
        for (c, chunk) in chunks.into_iter().enumerate() {
            let mut names: HashMap<String, String> =
                chunk.iter().enumerate().map(|(i, id)| (format!("#u{i}"), format!("usage#{id}"))).collect();
            names.insert("#d".into(), "deletedAt".into());
            names.insert("#sk".into(), "sk".into());
            let projection = std::iter::once("#sk".to_owned())
                .chain(std::iter::once("#d".to_owned()))
                .chain((0..chunk.len()).map(|i| format!("#u{i}")))
                .collect::<Vec<_>>()
                .join(", ");
            let mut keys = vec![item_key.clone()];
            if c == 0 {
                keys.push(tombstone_key.clone());
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .projection_expression(projection)
                .set_expression_attribute_names(Some(names))
                .build()
                .expect("keys are set");
            let mut pending = HashMap::from([(self.table.as_str().to_owned(), request)]);
            // Unprocessed keys (throttling) are asked again, a bounded number of times.
            for _ in 0..5 {
                let out = self
                    .client
                    .batch_get_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(|e| MirrorError::dynamo("BatchGetItem", e))?;
                for item in out.responses.unwrap_or_default().into_values().flatten() {
                    if item.get("sk").and_then(|v| v.as_s().ok()).map(String::as_str) == Some(TOMBSTONE) {
                        deleted_at = item.get("deletedAt").and_then(|v| v.as_n().ok()).and_then(|t| t.parse().ok());
                        continue;
                    }
                    for (name, usage) in item {
                        if let (Some(feature), Some((current, at))) = (name.strip_prefix("usage#"), usage_value(&usage))
                        {
                            usages.push((feature.to_owned(), current, at));
                        }
                    }
                }
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
        }
        Ok((deleted_at, usages))
    }

    /// Takes a snapshot out of an item (the usage attributes stay), if it is older than
    /// `deleted_at` (or exactly `only_at`, when given).
    async fn remove_snapshot(
        &self,
        customer: &str,
        resource: Option<&str>,
        deleted_at: i64,
        only_at: Option<i64>,
    ) -> Result<bool, MirrorError> {
        let condition = match only_at {
            Some(_) => "entitlementsUpdatedAt = :at",
            // A deletion wins a tie with a snapshot of the same millisecond (as the write's
            // `deletedAt < :t` does).
            None => "attribute_exists(entitlementsUpdatedAt) AND entitlementsUpdatedAt <= :t",
        };
        let mut request = self
            .update(customer, resource)
            .update_expression("REMOVE features, entitlementsUpdatedAt, entitlementsUpdatedAtIso, messageId, writtenAt SET deletedAt = :t")
            .condition_expression(condition)
            .expression_attribute_values(":t", n(deleted_at));
        if let Some(at) = only_at {
            request = request.expression_attribute_values(":at", n(at));
        }
        match request.send().await {
            Ok(_) => Ok(true),
            // No snapshot, or one newer than the deletion: nothing to remove.
            Err(e) if is_conditional_failure(&e) => Ok(false),
            Err(e) => Err(MirrorError::dynamo("UpdateItem", e)),
        }
    }

    /// Sets one feature's usage, if `at_ms` is newer than its last usage and not older than the
    /// snapshot.
    pub async fn write_usage(
        &self,
        customer: &str,
        resource: Option<&str>,
        feature: &str,
        current_usage: f64,
        at_ms: i64,
    ) -> Result<WriteOutcome, MirrorError> {
        let usage_attr = format!("usage#{feature}");
        let current = attribute_from_json(&Number::from_f64(current_usage).map_or(Value::Null, Value::Number));
        let usage = AttributeValue::M(HashMap::from([
            ("currentUsage".to_owned(), current.clone()),
            ("at".to_owned(), n(at_ms)),
        ]));
        let newer_usage = "(attribute_not_exists(#usage) OR #usage.#at < :t)";
        // A snapshot can land between the two writes below; then the second one's condition
        // fails and the first is tried again, so the usage reaches `features` too.
        for _ in 0..3 {
            let result = self
                .update(customer, resource)
                .update_expression(
                    "SET #usage = :usage, features.#f.currentUsage = :u, features.#f.usageUpdatedAt = :t",
                )
                .condition_expression(format!(
                    "attribute_exists(features.#f) AND entitlementsUpdatedAt <= :t AND {newer_usage}"
                ))
                .expression_attribute_names("#usage", &usage_attr)
                .expression_attribute_names("#f", feature)
                .expression_attribute_names("#at", "at")
                .expression_attribute_values(":usage", usage.clone())
                .expression_attribute_values(":u", current.clone())
                .expression_attribute_values(":t", n(at_ms))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            let old = match result {
                Ok(_) => return Ok(WriteOutcome::Written),
                Err(e) => conditional_failure_item(e)?,
            };
            let snapshot_at =
                old.get("entitlementsUpdatedAt").and_then(|v| v.as_n().ok()).and_then(|t| t.parse::<i64>().ok());
            let usage_at = old.get(&usage_attr).and_then(usage_value).map(|(_, at)| at);
            if snapshot_at.is_some_and(|t| t > at_ms) || usage_at.is_some_and(|t| t >= at_ms) {
                return Ok(WriteOutcome::Stale);
            }
            // No snapshot yet, or one without this feature: keep the usage for a later snapshot.
            let result = self
                .update(customer, resource)
                .update_expression("SET #usage = :usage")
                .condition_expression(format!(
                    "(attribute_not_exists(entitlementsUpdatedAt) OR entitlementsUpdatedAt <= :t) \
                     AND attribute_not_exists(features.#f) AND {newer_usage}"
                ))
                .expression_attribute_names("#usage", &usage_attr)
                .expression_attribute_names("#f", feature)
                .expression_attribute_names("#at", "at")
                .expression_attribute_values(":usage", usage.clone())
                .expression_attribute_values(":t", n(at_ms))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(WriteOutcome::UsageOnly),
                Err(e) if is_conditional_failure(&e) => continue,
                Err(e) => return Err(MirrorError::dynamo("UpdateItem", e)),
            }
        }
        Err(MirrorError::Dynamo {
            operation: "UpdateItem",
            detail: "the item kept changing under a usage update".into(),
            source: "contended".into(),
        })
    }

    /// `customer.deleted` at `at_ms`: the tombstone, then the snapshot of every item of the
    /// customer older than it is removed.
    pub async fn delete_customer(
        &self,
        customer: &str,
        at_ms: i64,
        at_iso: &str,
        message_id: &str,
    ) -> Result<WriteOutcome, MirrorError> {
        let pk = partition_key(customer);
        let put = self
            .client
            .put_item()
            .table_name(self.table.as_str())
            .item("pk", s(&pk))
            .item("sk", s(TOMBSTONE))
            .item("customerId", s(customer))
            .item("deletedAt", n(at_ms))
            .item("deletedAtIso", s(at_iso))
            .item("messageId", s(message_id))
            .item("schemaVersion", n(SCHEMA_VERSION))
            // Equal: the same deletion again (a retry after a failed sweep) sweeps again.
            .condition_expression("attribute_not_exists(deletedAt) OR deletedAt <= :t")
            .expression_attribute_values(":t", n(at_ms))
            .send()
            .await;
        match put {
            Ok(_) => {}
            Err(e) if is_conditional_failure(&e) => return Ok(WriteOutcome::Stale),
            Err(e) => return Err(MirrorError::dynamo("PutItem", e)),
        }
        let mut deleted = 0;
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(self.table.as_str())
                .key_condition_expression("pk = :pk AND begins_with(sk, :resources)")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":resources", s("resource#"))
                .projection_expression("sk")
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| MirrorError::dynamo("Query", e))?;
            for item in page.items() {
                let Some(sk) = item.get("sk").and_then(|v| v.as_s().ok()) else { continue };
                let resource = sk.strip_prefix("resource#").filter(|r| !r.is_empty());
                // The snapshot goes; the usage attributes stay, so a usage event newer than the
                // deletion that arrived before it still applies to a re-created customer.
                if self.remove_snapshot(customer, resource, at_ms, None).await? {
                    deleted += 1;
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(WriteOutcome::Deleted(deleted))
    }
}

/// `{currentUsage, at}` of a `usage#<feature>` attribute.
fn usage_value(v: &AttributeValue) -> Option<(AttributeValue, i64)> {
    let m = v.as_m().ok()?;
    let at = m.get("at")?.as_n().ok()?.parse().ok()?;
    Some((m.get("currentUsage")?.clone(), at))
}

fn is_conditional_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|se| se.code()) == Some("ConditionalCheckFailedException")
}

/// The old item a failed conditional UpdateItem returned (`ALL_OLD`; empty when there was none),
/// or the error as a [`MirrorError`] when it is not a failed condition.
fn conditional_failure_item(
    e: SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError, aws_smithy_runtime_api::http::Response>,
) -> Result<HashMap<String, AttributeValue>, MirrorError> {
    match e.as_service_error() {
        Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c)) => {
            Ok(c.item().cloned().unwrap_or_default())
        }
        _ => Err(MirrorError::dynamo("UpdateItem", e)),
    }
}

/// Reads the mirror: one GetItem per call.
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

    /// A GetItem of one customer's (or resource's) item, at this reader's consistency.
    fn get(
        &self,
        customer: &str,
        resource: Option<&str>,
    ) -> aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder {
        self.client
            .get_item()
            .table_name(self.table.as_str())
            .key("pk", s(partition_key(customer)))
            .key("sk", s(sort_key(resource)))
            .consistent_read(self.consistent)
    }

    /// The customer's (or resource's) entitlements; `None` when none are mirrored.
    pub async fn entitlements(&self, customer: &str, resource: Option<&str>) -> Result<Option<Snapshot>, MirrorError> {
        let out = self.get(customer, resource).send().await.map_err(|e| MirrorError::dynamo("GetItem", e))?;
        Ok(out.item.as_ref().and_then(snapshot_from_item))
    }

    /// Stigg's answer for one feature: access, limits, remaining, the snapshot's age. One
    /// GetItem that returns only that feature (a projection), so the answer stays small however
    /// many features the customer has; DynamoDB still bills the read by the item's size.
    pub async fn check(
        &self,
        customer: &str,
        resource: Option<&str>,
        feature_id: &str,
        requested_usage: f64,
    ) -> Result<Access, MirrorError> {
        let out = self
            .get(customer, resource)
            .projection_expression("customerId, resourceId, entitlementsUpdatedAt, messageId, features.#f")
            .expression_attribute_names("#f", feature_id)
            .send()
            .await
            .map_err(|e| MirrorError::dynamo("GetItem", e))?;
        let snapshot = out.item.as_ref().and_then(snapshot_from_item);
        Ok(access::check(snapshot.as_ref(), feature_id, requested_usage, SystemTime::now()))
    }
}

/// Reads an item of the documented layout; `None` for an item with no snapshot (usage only).
pub fn snapshot_from_item(item: &HashMap<String, AttributeValue>) -> Option<Snapshot> {
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
                let at = event_time(event)?;
                self.store.write_usage(&customer, resource_of(fields).as_deref(), feature, usage, at).await?
            }
            EventType::CustomerDeleted => {
                let customer =
                    event.customer_id.clone().ok_or_else(|| MirrorError::Malformed("no customer id".into()))?;
                let at = event_time(event)?;
                self.store
                    .delete_customer(&customer, at, event.timestamp.as_deref().unwrap_or_default(), event.key.as_str())
                    .await?
            }
            _ => return Ok(None),
        };
        Ok(Some(outcome))
    }
}

fn event_time(event: &StiggEvent) -> Result<i64, MirrorError> {
    event
        .timestamp
        .as_deref()
        .and_then(epoch_millis)
        .ok_or_else(|| MirrorError::Malformed("no ISO 8601 timestamp".into()))
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
        }
    }

    #[test]
    fn five_hundred_features_fit_an_item() {
        let sizes: Vec<usize> = [10, 100, 500].iter().map(|&k| item_size(&snapshot_of(k).item(0))).collect();
        eprintln!("mirror item size for 10/100/500 features: {sizes:?} bytes");
        assert!(sizes[2] < MAX_ITEM_BYTES, "{sizes:?}");
        assert!(sizes[0] < sizes[1] && sizes[1] < sizes[2]);
    }

    #[test]
    fn json_round_trips_through_attribute_values() {
        let v = json!({"a": [1, 2.5, "x", null, true, {"b": -3}], "c": "", "big": 12345678901i64});
        assert_eq!(json_from_attribute(&attribute_from_json(&v)), v);
    }

    #[test]
    fn the_documented_example_becomes_a_snapshot_of_the_layout() {
        let raw = include_str!("../../events/stigg/entitlements.updated.json");
        let event = StiggEvent::parse(raw).unwrap();
        let w = SnapshotWrite::from_event(&event).unwrap();
        assert_eq!(w.customer, "f29e950f-99cb-4f06-8395-434fb5259a58");
        assert_eq!(w.resource.as_deref(), Some("device-34ea9346-4a37-4c5d-82b1-0e42c45dcd77"));
        assert_eq!(w.at_ms, 1_763_150_385_133);
        let item = w.item(5);
        assert_eq!(item["pk"].as_s().unwrap(), "customer#f29e950f-99cb-4f06-8395-434fb5259a58");
        assert_eq!(item["sk"].as_s().unwrap(), "resource#device-34ea9346-4a37-4c5d-82b1-0e42c45dcd77");
        let s = snapshot_from_item(&item).unwrap();
        let f = &s.features["feature-1-tb-cloud-storage"];
        assert_eq!(
            (f.usage_limit, f.current_usage, f.usage_updated_at),
            (Some(1.0), Some(0.0), Some(1_763_150_385_133))
        );
        assert_eq!(f.kind, super::super::FeatureKind::Metered);
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
