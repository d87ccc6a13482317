//! The mirror's DynamoDB side: the items of a snapshot, the conditional writes (see the layout
//! and the ordering rules in [`crate::mirror`]) and the processor handler ([`MirrorHandler`]).
//!
//! One concern per file: `error.rs` (what fails and what a write did), `attributes.rs` (items and
//! attribute values), `snapshot.rs` (a snapshot's items), `write_snapshot.rs` (its conditional write
//! path), `usage.rs` and `deletion.rs` (the other two writes), `handler.rs` (the processor handler).
//! This file holds the store itself and the plumbing they share: conditional updates, removals,
//! keys and queries.

mod attributes;
mod deletion;
mod error;
mod handler;
mod snapshot;
mod usage;
mod write_snapshot;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use futures::{StreamExt, TryStreamExt};

use crate::config::TableName;

pub(super) use attributes::{Item, gunzip, number_of};
pub use attributes::{item_size, json_from_attribute};
use attributes::{n, s};
pub use error::{MirrorError, WriteOutcome};
pub use handler::MirrorHandler;
pub use snapshot::{API_MESSAGE_PREFIX, SnapshotWrite};

pub const SCHEMA_VERSION: i64 = 2;

/// Conditional writes in flight for one event. A snapshot writes one item per feature, a
/// deletion sweeps one: a few at a time keep a 3,000-feature snapshot to seconds, and few enough
/// that they stay near what one partition takes (a customer's items share one: 1,000 write units
/// per second, <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/warm-throughput-scenarios.html>;
/// beyond it DynamoDB throttles and the SDK retries). Single writes, not TransactWriteItems:
/// each feature stands alone (a refused one never cancels others), at half a transaction's write
/// units.
const WRITES_IN_FLIGHT: usize = 4;
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

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
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

    fn key(pk: String, sk: String) -> Item {
        HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
    }

    /// An UpdateItem on one item.
    fn update_item(&self, key: Item) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client.update_item().table_name(self.table.as_str()).set_key(Some(key))
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

fn is_conditional_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|se| se.code()) == Some("ConditionalCheckFailedException")
}
