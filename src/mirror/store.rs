//! The mirror's DynamoDB side: the items of a snapshot, the conditional writes (see the layout
//! and the ordering rules in [`crate::mirror`]) and the processor handler ([`MirrorHandler`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Number, Value};

use super::{MAX_ITEM_BYTES, TOMBSTONE, epoch_millis, feature_prefix, feature_sort_key, partition_key, sort_key};
use crate::config::TableName;
use crate::process::handler::{Handler, HandlerError};
use crate::stigg::api::EntitlementsState;
use crate::stigg::event::{EventType, StiggEvent};

pub const SCHEMA_VERSION: i64 = 2;

/// Conditional writes in flight for one event. A snapshot writes one item per feature, a
/// deletion sweeps one: a few at a time keep a 3,000-feature snapshot to seconds, and few enough
/// that they stay near what one partition takes (a customer's items share one: 1,000 write units
/// per second, <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/warm-throughput-scenarios.html>;
/// beyond it DynamoDB throttles and the SDK retries). Single writes, not TransactWriteItems:
/// each feature stands alone (a refused one never cancels others), at half a transaction's write
/// units.
const WRITES_IN_FLIGHT: usize = 4;
/// Room kept in a feature item for what later events add to it (`usage`, `deletedAt`).
const FEATURE_ITEM_BYTES: usize = MAX_ITEM_BYTES - 1024;
/// What a snapshot puts on an item, taken back out when it is removed (with schema 1's
/// `features`); `usage` stays.
const SNAPSHOT_ATTRIBUTES: [&str; 10] = [
    "features",
    "entitlement",
    "entitlementGzip",
    "entitlementsUpdatedAt",
    "entitlementsUpdatedAtIso",
    "messageId",
    "writtenAt",
    "featureCount",
    "currentUsage",
    "usageUpdatedAt",
];
/// A snapshot's condition on its header and on each of its features: nothing newer there, or
/// this same event again (a redelivery after a failed follow-up writes again instead of counting
/// as stale); and no deletion at or after it (`deletedAt` on the item: the deletion swept it).
const NEWER_SNAPSHOT: &str =
    "(attribute_not_exists(#t) OR #t < :t OR (#t = :t AND #m = :m)) AND (attribute_not_exists(#d) OR #d < :t)";

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
    /// The event lacks what the mirror needs (a customer id, any time at all): it never will.
    #[error("cannot mirror this event: {0}")]
    Malformed(String),
    /// DynamoDB refused the request itself (a `ValidationException`): it will refuse it again.
    /// Every item is sized and every key bounded before it is sent, so no valid event gets here.
    #[error("DynamoDB {operation} on the mirror table was refused: {detail}")]
    Refused {
        operation: &'static str,
        detail: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Stigg's API gave no answer on a read-through (429, 5xx, a timeout, a refused key).
    #[error("reading through to Stigg's API failed")]
    Stigg(#[source] crate::stigg::api::ApiError),
    /// A read-through failed; the fetch may have been shared with concurrent reads.
    #[error("the mirror's read-through failed")]
    ReadThrough(#[source] std::sync::Arc<MirrorError>),
    /// No snapshot of the customer (or resource), and the reader's policy is to fail.
    #[error("no mirrored entitlements for customer `{customer}`{}", resource.as_ref().map(|r| format!(", resource `{r}`")).unwrap_or_default())]
    Miss { customer: String, resource: Option<String> },
    /// One feature's entitlement over DynamoDB's item limit even gzip-compressed: a check reads
    /// one item per feature, so it cannot be split.
    #[error(
        "the entitlement of feature `{feature}` takes {bytes} bytes compressed, over DynamoDB's {MAX_ITEM_BYTES}-byte item"
    )]
    TooLarge { feature: String, bytes: usize },
}

impl MirrorError {
    pub(super) fn dynamo<E, R>(operation: &'static str, e: SdkError<E, R>) -> Self
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

impl MirrorError {
    /// Whether the same read or write may succeed later (throttling, an outage, a 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Dynamo { .. } => true,
            Self::Stigg(e) => e.is_retryable(),
            Self::ReadThrough(e) => e.is_retryable(),
            Self::Malformed(_) | Self::TooLarge { .. } | Self::Refused { .. } | Self::Miss { .. } => false,
        }
    }

    /// Stigg's API error behind a failed read-through, if that is what failed.
    pub fn api_error(&self) -> Option<&crate::stigg::api::ApiError> {
        match self {
            Self::Stigg(e) => Some(e),
            Self::ReadThrough(e) => e.api_error(),
            _ => None,
        }
    }
}

impl From<MirrorError> for HandlerError {
    fn from(e: MirrorError) -> Self {
        if e.is_retryable() { HandlerError::retryable(e) } else { HandlerError::permanent(e) }
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// An equal or newer state was already there: skipped (one failed conditional write), or a
    /// newer snapshot overtook this one while it was written (its features taken back out).
    Stale,
    /// The customer was deleted after this snapshot's time.
    AfterDeletion,
    /// A usage event for a feature no snapshot holds yet: kept in the feature's `usage` only,
    /// for a snapshot that arrives later.
    UsageOnly,
    /// `customer.deleted`: the tombstone, and this many snapshots (resources) taken out.
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

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A stored attribute as JSON (sets become arrays, binaries are dropped).
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
        AttributeValue::B(bytes) => bytes.as_ref().len(),
        _ => 0,
    }
}

/// A number as DynamoDB can store it: up to 38 digits, magnitudes from 1E-130 to below 1E+126
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-data-types-numbers>).
/// `None` outside that range, where DynamoDB would refuse the whole request.
fn number_attribute(v: f64) -> Option<AttributeValue> {
    let magnitude = v.abs();
    if magnitude != 0.0 && !(1e-130..1e126).contains(&magnitude) {
        return None;
    }
    Number::from_f64(v).map(|num| AttributeValue::N(num.to_string()))
}

pub(super) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).and_then(|()| encoder.finish()).expect("compressing into memory does not fail")
}

pub(super) fn gunzip(bytes: &[u8]) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut text).ok()?;
    Some(text)
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

pub(super) fn number_of(item: &Item, name: &str) -> Option<i64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|t| t.parse().ok())
}

fn text_of<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn key_of(item: &Item) -> Item {
    item.iter().filter(|(k, _)| *k == "pk" || *k == "sk").map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Expression attribute names and values, named as they are added (DynamoDB refuses unused
/// ones, so each expression gets exactly its own).
#[derive(Default)]
struct Expression {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expression {
    fn name(mut self, token: &str, name: &str) -> Self {
        self.names.insert(token.to_owned(), name.to_owned());
        self
    }

    fn value(mut self, token: &str, value: AttributeValue) -> Self {
        self.values.insert(token.to_owned(), value);
        self
    }

    /// `SET #a0 = :a0, ...` of every attribute of `item` but its key.
    fn set_all(mut self, item: Item) -> (Self, String) {
        let mut set = Vec::new();
        for (i, (name, value)) in item.into_iter().filter(|(k, _)| k != "pk" && k != "sk").enumerate() {
            set.push(format!("#a{i} = :a{i}"));
            self.names.insert(format!("#a{i}"), name);
            self.values.insert(format!(":a{i}"), value);
        }
        (self, set.join(", "))
    }

    /// `#r0, #r1, ...` of `attributes`.
    fn list(mut self, attributes: &[&str]) -> (Self, String) {
        let tokens: Vec<String> = (0..attributes.len()).map(|i| format!("#r{i}")).collect();
        for (token, name) in tokens.iter().zip(attributes) {
            self.names.insert(token.clone(), (*name).to_owned());
        }
        (self, tokens.join(", "))
    }
}

/// Which stored snapshot a removal takes out.
#[derive(Debug, Clone, Copy)]
enum Taking {
    /// Exactly this one (`entitlementsUpdatedAt` and `messageId`): a writer taking back its own.
    Own { at: i64 },
    /// One older than this time: a newer snapshot dropping a feature.
    OlderThan(i64),
    /// One at or before this time: a deletion (which wins a tie with a snapshot of its millisecond).
    AtMost(i64),
}

/// What [`MirrorStore::apply`] does after an update whose condition fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnRefusal {
    /// Nothing more is attempted: a snapshot refused on one feature was overtaken.
    Stop,
    /// That item stays as it is; the others are written.
    Skip,
}

/// A conditional UpdateItem, sent by [`MirrorStore::apply`].
struct Conditional {
    key: Item,
    expression: String,
    condition: &'static str,
    e: Expression,
}

/// Which updates [`MirrorStore::apply`] applied, and whether one was refused.
struct Applied {
    applied: Vec<bool>,
    refused: bool,
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

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    pub(super) fn table(&self) -> &TableName {
        &self.table
    }

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

    fn key(pk: String, sk: String) -> Item {
        HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
    }

    /// An UpdateItem on one item.
    fn update_item(&self, key: Item) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client.update_item().table_name(self.table.as_str()).set_key(Some(key))
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

    /// An update that takes a snapshot out of an item (`usage` stays), with `deletedAt` when a
    /// deletion is why.
    fn removal(key: Item, taking: Taking, message_id: &str, deleted_at: Option<i64>) -> Conditional {
        let (e, remove) = Expression::default().list(&SNAPSHOT_ATTRIBUTES);
        let mut e = e.name("#t", "entitlementsUpdatedAt");
        let condition = match taking {
            Taking::Own { at } => {
                e = e.name("#m", "messageId").value(":t", n(at)).value(":m", s(message_id));
                "#t = :t AND #m = :m"
            }
            Taking::OlderThan(at) => {
                e = e.value(":t", n(at));
                "#t < :t"
            }
            Taking::AtMost(at) => {
                e = e.value(":t", n(at));
                "attribute_exists(#t) AND #t <= :t"
            }
        };
        let expression = match deleted_at {
            Some(at) => {
                e = e.name("#d", "deletedAt").value(":d", n(at));
                format!("REMOVE {remove} SET #d = :d")
            }
            None => format!("REMOVE {remove}"),
        };
        Conditional { key, expression, condition, e }
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

    /// Conditional UpdateItems, [`WRITES_IN_FLIGHT`] at a time; the first error that is not a
    /// refused condition ends it.
    async fn apply(&self, updates: Vec<Conditional>, on_refusal: OnRefusal) -> Result<Applied, MirrorError> {
        let refused = AtomicBool::new(false);
        let refused = &refused;
        let applied = futures::stream::iter(updates)
            .map(|u| async move {
                if on_refusal == OnRefusal::Stop && refused.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                let result = self
                    .update_item(u.key)
                    .update_expression(u.expression)
                    .condition_expression(u.condition)
                    .set_expression_attribute_names(Some(u.e.names))
                    .set_expression_attribute_values((!u.e.values.is_empty()).then_some(u.e.values))
                    .send()
                    .await;
                match result {
                    Ok(_) => Ok(true),
                    Err(e) if is_conditional_failure(&e) => {
                        refused.store(true, Ordering::Relaxed);
                        Ok(false)
                    }
                    Err(e) => Err(MirrorError::dynamo("UpdateItem", e)),
                }
            })
            .buffered(WRITES_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(Applied { applied, refused: refused.load(Ordering::Relaxed) })
    }

    /// Sets one feature's usage, if `at_ms` is newer than its last usage and not older than the
    /// feature's snapshot.
    pub async fn write_usage(
        &self,
        customer: &str,
        resource: Option<&str>,
        feature: &str,
        current_usage: f64,
        at_ms: i64,
    ) -> Result<WriteOutcome, MirrorError> {
        let current = number_attribute(current_usage)
            .ok_or_else(|| MirrorError::Malformed("currentUsage is outside what DynamoDB can store".into()))?;
        let usage = AttributeValue::M(HashMap::from([
            ("currentUsage".to_owned(), current.clone()),
            ("at".to_owned(), n(at_ms)),
        ]));
        let key = Self::key(partition_key(customer), feature_sort_key(resource, feature));
        let newer_usage = "(attribute_not_exists(#usage) OR #usage.#at < :t)";
        // A snapshot can land between the two writes below; then the second one's condition
        // fails and the first is tried again, so the usage reaches the entitlement too.
        for _ in 0..3 {
            let result = self
                .update_item(key.clone())
                .update_expression("SET #usage = :usage, #cu = :u, #ua = :t")
                // `#ua <= :t`: not older than the usage the snapshot itself carries (a state
                // fetched from Stigg's API has the usage of its fetch).
                .condition_expression(format!(
                    "attribute_exists(#e) AND #e <= :t AND (attribute_not_exists(#ua) OR #ua <= :t) AND {newer_usage}"
                ))
                .expression_attribute_names("#usage", "usage")
                .expression_attribute_names("#at", "at")
                .expression_attribute_names("#cu", "currentUsage")
                .expression_attribute_names("#ua", "usageUpdatedAt")
                .expression_attribute_names("#e", "entitlementsUpdatedAt")
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
            let snapshot_at = number_of(&old, "entitlementsUpdatedAt");
            let usage_at = old.get("usage").and_then(usage_value).map(|(_, at)| at);
            let usage_updated_at = number_of(&old, "usageUpdatedAt");
            if snapshot_at.is_some_and(|t| t > at_ms)
                || usage_at.is_some_and(|t| t >= at_ms)
                || (snapshot_at.is_some() && usage_updated_at.is_some_and(|t| t > at_ms))
            {
                return Ok(WriteOutcome::Stale);
            }
            // No entitlement to this feature yet: keep the usage for a later snapshot, on an
            // item that names what it is about.
            let mut request = self
                .update_item(key.clone())
                .update_expression(if resource.is_some() {
                    "SET #usage = :usage, #c = :c, #f = :f, #r = :r"
                } else {
                    "SET #usage = :usage, #c = :c, #f = :f"
                })
                .condition_expression(format!("attribute_not_exists(#e) AND {newer_usage}"))
                .expression_attribute_names("#usage", "usage")
                .expression_attribute_names("#at", "at")
                .expression_attribute_names("#e", "entitlementsUpdatedAt")
                .expression_attribute_names("#c", "customerId")
                .expression_attribute_names("#f", "featureId")
                .expression_attribute_values(":usage", usage.clone())
                .expression_attribute_values(":t", n(at_ms))
                .expression_attribute_values(":c", s(customer))
                .expression_attribute_values(":f", s(feature));
            if let Some(resource) = resource {
                request = request
                    .expression_attribute_names("#r", "resourceId")
                    .expression_attribute_values(":r", s(resource));
            }
            match request.send().await {
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
    /// customer (headers and features) older than it is taken out.
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
        let items =
            query(&self.client, &self.table, &pk, None, Some(&["pk", "sk", "entitlementsUpdatedAt"]), true).await?;
        // Only what holds a snapshot no newer than the deletion: the rest would cost a refused write.
        let swept: Vec<&Item> = items
            .iter()
            .filter(|i| text_of(i, "sk") != Some(TOMBSTONE))
            .filter(|i| number_of(i, "entitlementsUpdatedAt").is_some_and(|t| t <= at_ms))
            .collect();
        // The snapshots go; `usage` stays, so a usage event newer than the deletion that arrived
        // before it still applies to a re-created customer.
        let updates = swept.iter().map(|i| Self::removal(key_of(i), Taking::AtMost(at_ms), "", Some(at_ms))).collect();
        let done = self.apply(updates, OnRefusal::Skip).await?;
        let headers = swept
            .iter()
            .zip(done.applied)
            .filter(|(i, applied)| *applied && text_of(i, "sk").is_some_and(|sk| sk.starts_with("resource#")))
            .count();
        Ok(WriteOutcome::Deleted(headers))
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

/// Every item of `pk` (whose sort key starts with `prefix`), with only `attributes`, in pages of
/// up to 1 MB (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Query.Pagination.html>).
pub(super) async fn query(
    client: &Client,
    table: &TableName,
    pk: &str,
    prefix: Option<&str>,
    attributes: Option<&[&str]>,
    consistent: bool,
) -> Result<Vec<Item>, MirrorError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let mut request = client
            .query()
            .table_name(table.as_str())
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_values(":pk", s(pk))
            .consistent_read(consistent)
            .set_exclusive_start_key(start);
        request = match prefix {
            Some(prefix) => request
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#sk", "sk")
                .expression_attribute_values(":prefix", s(prefix)),
            None => request.key_condition_expression("#pk = :pk"),
        };
        if let Some(attributes) = attributes {
            let tokens: Vec<String> = (0..attributes.len()).map(|i| format!("#p{i}")).collect();
            request = request.projection_expression(tokens.join(", "));
            for (token, name) in tokens.into_iter().zip(attributes) {
                request = request.expression_attribute_names(token, *name);
            }
        }
        let page = request.send().await.map_err(|e| MirrorError::dynamo("Query", e))?;
        items.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(items);
        }
    }
}

/// `{currentUsage, at}` of a `usage` attribute.
pub(super) fn usage_value(v: &AttributeValue) -> Option<(AttributeValue, i64)> {
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
) -> Result<Item, MirrorError> {
    match e.as_service_error() {
        Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c)) => {
            Ok(c.item().cloned().unwrap_or_default())
        }
        _ => Err(MirrorError::dynamo("UpdateItem", e)),
    }
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

/// How a snapshot's header write ended.
enum HeaderWrite {
    /// Written; the header as it was before.
    Written(Item),
    /// Refused (an equal or newer snapshot, or a deletion newer than this one); the stored
    /// header's `deletedAt`, when it has one.
    Refused { deleted_at: Option<i64> },
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

    /// JSON as a DynamoDB attribute value (numbers as `N`, objects as `M`, arrays as `L`), as
    /// schema 1 stored entitlements.
    fn attribute_from_json(v: &Value) -> AttributeValue {
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
