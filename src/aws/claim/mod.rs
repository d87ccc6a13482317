//! The claim protocol: at most one attempt at a time works on an idempotency key, and a key
//! whose work completed is remembered for the TTL.
//!
//! ```text
//! claim     PutItem (receiver) or UpdateItem SET (processor) status = IN_PROGRESS, token,
//!           lease_expires_at = invocation deadline
//!           if  absent  OR  expired (TTL passed, not yet swept)  OR  (IN_PROGRESS AND lease passed)
//!           on success ALL_OLD carries the handlers an earlier attempt recorded as done
//!           (the processor's UpdateItem; the receiver records none);
//!           on condition failure ALL_OLD tells COMPLETED (duplicate) from IN_PROGRESS (in flight)
//!           without a second read
//! complete  UpdateItem status = COMPLETED, expires_at = now + TTL     if token = ours
//! release   DeleteItem                                             if token = ours
//!           or, when some handlers succeeded and others did not:
//!           UpdateItem SET done_handlers, lease_expires_at = 0       if token = ours
//! ```
//! The processor's claim is an UpdateItem, not a PutItem, so that it leaves `done_handlers` in
//! place: if this attempt dies too, the next one still knows which handlers need not run again.
//! The receiver records no handler progress, so its claim is a PutItem of the whole record, the
//! way Powertools' idempotency utility writes it: a smaller request, the same condition and
//! answers. Both consume the same write units (the larger of the item before and after).
//! A crashed attempt leaves an IN_PROGRESS record whose lease ends at its invocation's deadline:
//! after that, a retry takes the claim over.
//!
//! The receiver claims "accepted into the queue"; the processor claims "handlers ran". Both use
//! this module on the same table, each kind of record under its own prefix ([`ClaimScope`]), so
//! no key a payload can carry lands in another kind's space (`accepted#processed#X` is not
//! `processed#X`).
//!
//! The SDK retries a claim whose answer was lost (timeout, 5XX) although DynamoDB applied it.
//! The retry then fails its condition against our own IN_PROGRESS record: the token in ALL_OLD
//! is ours, so the claim is ours too (not "in flight elsewhere", which would answer 409 and block
//! Stigg's retries until the lease ends).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use crate::config::TableName;
use crate::stigg::event::IdempotencyKey;

const STATUS_IN_PROGRESS: &str = "IN_PROGRESS";
const STATUS_COMPLETED: &str = "COMPLETED";
/// The handlers that succeeded for a key whose other handlers did not (a string set).
const DONE_HANDLERS: &str = "done_handlers";

/// Which step of the pipeline a claim is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimScope {
    /// "This event was accepted into the queue." Partition key `accepted#<key>`.
    Receiver,
    /// "This event's handlers ran." Partition key `processed#<key>`.
    Processor,
}

impl ClaimScope {
    pub const ALL: [ClaimScope; 2] = [Self::Receiver, Self::Processor];

    /// The prefix of this kind's records. Prefixes are distinct and none is a prefix of
    /// another, so two kinds never share a partition key whatever the keys are.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Receiver => "accepted#",
            Self::Processor => "processed#",
        }
    }

    pub fn partition_key(self, key: &IdempotencyKey) -> String {
        format!("{}{key}", self.prefix())
    }
}

/// The key the warm-up read uses: it has no `#`, so it is outside every [`ClaimScope`] space.
pub const WARM_UP_KEY: &str = "warm-up";

/// A claim held by this attempt. Deliberately not `Clone`: exactly one owner completes or
/// releases it.
#[derive(Debug)]
#[must_use = "a claim must be completed or released"]
pub struct Claim {
    pk: String,
    token: String,
    done: BTreeSet<String>,
}

impl Claim {
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The handlers an earlier attempt on this key recorded as succeeded (empty for a new key).
    pub fn done(&self) -> &BTreeSet<String> {
        &self.done
    }
}

#[derive(Debug)]
pub enum ClaimOutcome {
    /// This attempt owns the key until its lease ends.
    Claimed(Claim),
    /// The work for this key is done. `same_payload` is false when the earlier delivery had
    /// different bytes under the same key (worth a warning, not a second enqueue).
    Completed { same_payload: bool },
    /// Another attempt holds a live lease on the key.
    InFlight,
}

/// A failure talking to DynamoDB. Always worth retrying: the claim state is unchanged or
/// guarded by a lease.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {operation} failed: {detail}")]
    Dynamo {
        operation: &'static str,
        detail: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `complete` found the record no longer ours (our lease ran out and another attempt took
    /// over, or the record was removed).
    #[error("the claim on {pk} is no longer held by this attempt")]
    ClaimLost { pk: String },
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        true
    }

    fn dynamo<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        Self::Dynamo { operation, detail: DisplayErrorContext(&err).to_string(), source: Box::new(err) }
    }
}

/// The DynamoDB-backed idempotency store for one scope.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    client: Client,
    table: TableName,
    ttl: Duration,
    scope: ClaimScope,
}

fn epoch_millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

/// A key is claimable when no record holds it, its record has expired (TTL passed, not yet
/// swept), or its claim's lease has passed.
const CLAIMABLE: &str = "attribute_not_exists(#pk) OR #exp <= :now_s OR (#status = :in_progress AND #lease <= :now_ms)";

/// The IN_PROGRESS record a claim writes.
struct Record<'a> {
    pk: &'a str,
    token: &'a str,
    now_s: u128,
    now_ms: u128,
    lease_ms: u128,
    expires_s: u128,
    payload_sha256: &'a str,
}

impl Record<'_> {
    /// The names [`CLAIMABLE`] uses (DynamoDB refuses a name or value no expression uses).
    fn condition_names() -> HashMap<String, String> {
        [("#pk", "pk"), ("#exp", "expires_at"), ("#status", "status"), ("#lease", "lease_expires_at")]
            .into_iter()
            .map(|(token, name)| (token.to_owned(), name.to_owned()))
            .collect()
    }

    /// The values [`CLAIMABLE`] compares with.
    fn condition_values(&self) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (":now_s".to_owned(), n(self.now_s)),
            (":now_ms".to_owned(), n(self.now_ms)),
            (":in_progress".to_owned(), s(STATUS_IN_PROGRESS)),
        ])
    }
}

/// What a claim's conditional write did.
enum ClaimWrite {
    /// Applied: the record it replaced, where the write asked for it.
    Applied { old: Option<HashMap<String, AttributeValue>> },
    /// Refused by the condition: the record that refused it, when the service returned it.
    Refused { old: Option<HashMap<String, AttributeValue>> },
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

impl IdempotencyStore {
    pub fn new(client: Client, table: TableName, ttl: Duration, scope: ClaimScope) -> Self {
        Self { client, table, ttl, scope }
    }

    pub fn scope(&self) -> ClaimScope {
        self.scope
    }

    /// One cheap read (half a read unit) so the HTTPS connection, credentials and endpoint are
    /// ready before the first event. Its key is outside every record kind's space.
    pub async fn warm_up(&self) -> Result<(), StoreError> {
        self.client
            .get_item()
            .table_name(self.table.as_str())
            .key("pk", s(WARM_UP_KEY))
            .projection_expression("pk")
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        Ok(())
    }

    /// Tries to claim `key` until `lease_until` (the invocation's deadline).
    /// `payload_sha256` fingerprints the payload, to notice a key reused for different bytes.
    pub async fn claim(
        &self,
        key: &IdempotencyKey,
        payload_sha256: &str,
        lease_until: SystemTime,
    ) -> Result<ClaimOutcome, StoreError> {
        let pk = self.scope.partition_key(key);
        let token = uuid::Uuid::new_v4().to_string();
        let now = SystemTime::now();
        let now_ms = epoch_millis(now);
        let now_s = now_ms / 1000;
        let record = Record {
            pk: &pk,
            token: &token,
            now_s,
            now_ms,
            lease_ms: epoch_millis(lease_until),
            // An abandoned claim is swept by TTL like a completed one.
            expires_s: now_s + u128::from(self.ttl.as_secs()),
            payload_sha256,
        };
        let write = match self.scope {
            ClaimScope::Receiver => self.put_claim(&record).await?,
            ClaimScope::Processor => self.update_claim(&record).await?,
        };
        let old = match write {
            ClaimWrite::Applied { old } => {
                let old = old.as_ref();
                if old.is_some_and(|o| o.contains_key(DONE_HANDLERS)) && done_handlers(old, now_s).is_empty() {
                    // The record had expired (its key forgotten) but not yet been swept: its
                    // progress belongs to that earlier life. Rare, so the extra write is here only.
                    self.forget_done(&pk, &token).await;
                }
                let done = done_handlers(old, now_s);
                return Ok(ClaimOutcome::Claimed(Claim { pk, token, done }));
            }
            ClaimWrite::Refused { old: Some(item) } => Some(item),
            // DynamoDB always returns ALL_OLD; an emulator that does not gets one consistent read.
            ClaimWrite::Refused { old: None } => self.read(&pk).await?,
        };
        if old.as_ref().and_then(|item| item.get("token")).and_then(|v| v.as_s().ok()) == Some(&token) {
            // Our own write, applied on an attempt whose answer was lost, then retried by the SDK.
            tracing::debug!(pk, "claim write retried by the SDK after it was applied; the claim is ours");
            let done = done_handlers(old.as_ref(), now_s);
            return Ok(ClaimOutcome::Claimed(Claim { pk, token, done }));
        }
        Ok(classify(old.as_ref(), payload_sha256))
    }

    /// The receiver's claim: a PutItem of the whole record, as Powertools' idempotency utility
    /// writes it. The receiver records no handler progress, so an old record has nothing to
    /// keep, and the request carries the record once instead of an expression and its values.
    async fn put_claim(&self, r: &Record<'_>) -> Result<ClaimWrite, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(self.table.as_str())
            .item("pk", s(r.pk))
            .item("status", s(STATUS_IN_PROGRESS))
            .item("token", s(r.token))
            .item("lease_expires_at", n(r.lease_ms))
            .item("expires_at", n(r.expires_s))
            .item("payload_sha256", s(r.payload_sha256))
            .condition_expression(CLAIMABLE)
            .set_expression_attribute_names(Some(Record::condition_names()))
            .set_expression_attribute_values(Some(r.condition_values()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimWrite::Applied { old: None }),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                let old = match e.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(e) => e.item,
                    _ => None,
                };
                Ok(ClaimWrite::Refused { old })
            }
            Err(e) => Err(StoreError::dynamo("PutItem", e)),
        }
    }

    /// The processor's claim: an UpdateItem, so that the `done_handlers` an earlier attempt
    /// recorded stay in place and come back in ALL_OLD.
    async fn update_claim(&self, r: &Record<'_>) -> Result<ClaimWrite, StoreError> {
        let mut names = Record::condition_names();
        names.insert("#token".into(), "token".into());
        names.insert("#sha".into(), "payload_sha256".into());
        let mut values = r.condition_values();
        values.insert(":token".into(), s(r.token));
        values.insert(":lease".into(), n(r.lease_ms));
        values.insert(":exp".into(), n(r.expires_s));
        values.insert(":sha".into(), s(r.payload_sha256));
        let result = self
            .client
            .update_item()
            .table_name(self.table.as_str())
            .key("pk", s(r.pk))
            .update_expression("SET #status = :in_progress, #token = :token, #lease = :lease, #exp = :exp, #sha = :sha")
            .condition_expression(CLAIMABLE)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => Ok(ClaimWrite::Applied { old: out.attributes }),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                let old = match e.into_service_error() {
                    UpdateItemError::ConditionalCheckFailedException(e) => e.item,
                    _ => None,
                };
                Ok(ClaimWrite::Refused { old })
            }
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
    }

    async fn read(&self, pk: &str) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(self.table.as_str())
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| StoreError::dynamo("GetItem", e))?;
        Ok(out.item)
    }

    /// Marks the claimed work done; the key is remembered for the TTL from now.
    pub async fn complete(&self, claim: Claim) -> Result<(), StoreError> {
        let expires = epoch_millis(SystemTime::now()) / 1000 + u128::from(self.ttl.as_secs());
        let result = self
            .client
            .update_item()
            .table_name(self.table.as_str())
            .key("pk", s(&claim.pk))
            .update_expression("SET #status = :completed, #exp = :exp REMOVE #lease, #done")
            .condition_expression("#token = :token")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#exp", "expires_at")
            .expression_attribute_names("#lease", "lease_expires_at")
            .expression_attribute_names("#token", "token")
            .expression_attribute_names("#done", DONE_HANDLERS)
            .expression_attribute_values(":completed", s(STATUS_COMPLETED))
            .expression_attribute_values(":exp", n(expires))
            .expression_attribute_values(":token", s(&claim.token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(StoreError::ClaimLost { pk: claim.pk })
            }
            Err(e) => Err(StoreError::dynamo("UpdateItem", e)),
        }
    }

    /// Removes an expired record's `done_handlers` under our claim, so that neither this attempt's
    /// crash nor an SDK retry of the claim can honour them. Best effort: on failure the claim
    /// still ignores them (see [`done_handlers`]), only a crash before completion would not.
    async fn forget_done(&self, pk: &str, token: &str) {
        let result = self
            .client
            .update_item()
            .table_name(self.table.as_str())
            .key("pk", s(pk))
            .update_expression("REMOVE #done")
            .condition_expression("#token = :token")
            .expression_attribute_names("#done", DONE_HANDLERS)
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(pk, error = %DisplayErrorContext(&e), "an expired record's handler progress was not removed");
        }
    }

    /// Gives the key up so that the next delivery can claim it at once, remembering the
    /// handlers that succeeded (`done`, which includes the claim's own [`Claim::done`]): the next
    /// attempt skips them. With none done it is a plain [`Self::release`]. One write either way.
    pub async fn release_keeping(&self, claim: Claim, done: &BTreeSet<String>) -> Result<(), StoreError> {
        if done.is_empty() {
            return self.release(claim).await;
        }
        let result = self
            .client
            .update_item()
            .table_name(self.table.as_str())
            .key("pk", s(&claim.pk))
            // A lease that has passed: claimable at once, like a deleted record.
            .update_expression("SET #done = :done, #lease = :zero")
            .condition_expression("#token = :token")
            .expression_attribute_names("#done", DONE_HANDLERS)
            .expression_attribute_names("#lease", "lease_expires_at")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":done", AttributeValue::Ss(done.iter().cloned().collect()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":token", s(&claim.token))
            .send()
            .await;
        given_up("UpdateItem", result)
    }

    /// Gives the key up so that the next delivery can claim it at once. A record that is no
    /// longer ours is left alone.
    pub async fn release(&self, claim: Claim) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(self.table.as_str())
            .key("pk", s(&claim.pk))
            .condition_expression("#token = :token")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(&claim.token))
            .send()
            .await;
        given_up("DeleteItem", result)
    }
}

/// The end of a token-conditioned write that gives a claim up: a record no longer ours (the
/// condition failed) is left alone, which is not an error.
fn given_up<O, E, R>(operation: &'static str, result: Result<O, SdkError<E, R>>) -> Result<(), StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException") => Ok(()),
        Err(e) => Err(StoreError::dynamo(operation, e)),
    }
}

/// The handlers recorded as done in the item a claim replaced, unless that item had expired
/// (its key forgotten: every handler runs again, as for a new key).
fn done_handlers(old: Option<&HashMap<String, AttributeValue>>, now_s: u128) -> BTreeSet<String> {
    let Some(old) = old else { return BTreeSet::new() };
    let live = old
        .get("expires_at")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<u128>().ok())
        .is_some_and(|e| e > now_s);
    match old.get(DONE_HANDLERS).and_then(|v| v.as_ss().ok()) {
        Some(names) if live => names.iter().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

/// What a failed claim ran into.
fn classify(old: Option<&HashMap<String, AttributeValue>>, payload_sha256: &str) -> ClaimOutcome {
    let attr = |name: &str| old.and_then(|item| item.get(name)).and_then(|v| v.as_s().ok());
    match attr("status").map(String::as_str) {
        Some(STATUS_COMPLETED) => {
            ClaimOutcome::Completed { same_payload: attr("payload_sha256").is_none_or(|h| h == payload_sha256) }
        }
        // In progress, or gone between the write and the read: either way, come back later.
        _ => ClaimOutcome::InFlight,
    }
}

#[cfg(test)]
mod tests;
