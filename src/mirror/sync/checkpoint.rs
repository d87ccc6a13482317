//! The backfill's checkpoint: one item in the mirror table, `pk = sync#backfill`,
//! `sk = checkpoint`, saved every few customers so a run that is stopped (a Lambda's deadline,
//! a kill) resumes where it was, and a finished run says so.
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `status` | S | `running` or `finished` |
//! | `cursor` | S | the listing cursor the current page was fetched with (absent: the first page) |
//! | `pageDone` | N | how many of that page's customers are done, in listing order |
//! | `lastDone` | S | the last of them (found again in the page even if one before it was deleted) |
//! | `customersDone`, `statesWritten`, `statesAlreadyNewer`, `statesAfterDeletion`, `customersNotFound`, `customersFailed` | N | the counts so far |
//! | `total` | N | how many customers Stigg said there are (last page read) |
//! | `failedSample` | L of S | up to 20 ids of customers that failed, for the operator |
//! | `startedAt`, `updatedAt`, `finishedAt` | N | epoch ms |
//! | `revision` | N | each save adds one, on the condition that it is the one loaded: two runs at once cannot both advance the same checkpoint |

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::config::TableName;
use crate::mirror::MirrorError;

pub const CHECKPOINT_PK: &str = "sync#backfill";
pub const CHECKPOINT_SK: &str = "checkpoint";
/// Failed customers' ids kept in the checkpoint (their count is exact).
pub const FAILED_SAMPLE: usize = 20;

/// What a backfill has done. Customers are counted once each; states (the customer-wide one
/// and one per resource) by the outcome of their write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub customers: u64,
    pub written: u64,
    /// A state as new or newer was already there (a webhook got there first).
    pub already_newer: u64,
    /// The customer was deleted in the mirror after the state's time.
    pub after_deletion: u64,
    /// Customers Stigg does not know (deleted since the listing).
    pub not_found: u64,
    /// Customers whose fetch or write failed after every retry.
    pub failed: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.customers += other.customers;
        self.written += other.written;
        self.already_newer += other.already_newer;
        self.after_deletion += other.after_deletion;
        self.not_found += other.not_found;
        self.failed += other.failed;
    }

    /// States written or found newer.
    pub fn states(&self) -> u64 {
        self.written + self.already_newer + self.after_deletion
    }
}

/// Where a backfill is.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    pub cursor: Option<String>,
    pub page_done: u64,
    pub last_done: Option<String>,
    pub counts: Counts,
    pub total: Option<u64>,
    pub failed_sample: Vec<String>,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    /// The revision loaded (0: none saved yet).
    pub revision: u64,
}

impl Checkpoint {
    /// A run from the first customer, replacing the one at `revision`.
    pub fn fresh(now_ms: i64, revision: u64) -> Self {
        Self { started_at_ms: now_ms, updated_at_ms: now_ms, revision, ..Default::default() }
    }

    pub fn is_finished(&self) -> bool {
        self.finished_at_ms.is_some()
    }

    fn item(&self) -> HashMap<String, AttributeValue> {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let n = |v: u64| AttributeValue::N(v.to_string());
        let ms = |v: i64| AttributeValue::N(v.to_string());
        let c = &self.counts;
        let mut item = HashMap::from([
            ("pk".to_owned(), s(CHECKPOINT_PK)),
            ("sk".to_owned(), s(CHECKPOINT_SK)),
            ("status".to_owned(), s(if self.is_finished() { "finished" } else { "running" })),
            ("pageDone".to_owned(), n(self.page_done)),
            ("customersDone".to_owned(), n(c.customers)),
            ("statesWritten".to_owned(), n(c.written)),
            ("statesAlreadyNewer".to_owned(), n(c.already_newer)),
            ("statesAfterDeletion".to_owned(), n(c.after_deletion)),
            ("customersNotFound".to_owned(), n(c.not_found)),
            ("customersFailed".to_owned(), n(c.failed)),
            ("startedAt".to_owned(), ms(self.started_at_ms)),
            ("updatedAt".to_owned(), ms(self.updated_at_ms)),
            ("revision".to_owned(), n(self.revision + 1)),
        ]);
        let optional = [
            ("cursor", self.cursor.as_deref().map(s)),
            ("lastDone", self.last_done.as_deref().map(s)),
            ("total", self.total.map(n)),
            ("finishedAt", self.finished_at_ms.map(ms)),
        ];
        item.extend(optional.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))));
        if !self.failed_sample.is_empty() {
            let ids = self.failed_sample.iter().map(|id| s(id)).collect();
            item.insert("failedSample".to_owned(), AttributeValue::L(ids));
        }
        item
    }

    fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Self, CheckpointError> {
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let number = |k: &str| -> Result<Option<i64>, CheckpointError> {
            match item.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_n()
                    .ok()
                    .and_then(|n| n.parse::<i64>().ok())
                    .map(Some)
                    .ok_or_else(|| CheckpointError::Malformed(format!("{k} is not a whole number"))),
            }
        };
        let count = |k: &str| -> Result<u64, CheckpointError> { Ok(number(k)?.unwrap_or(0).max(0) as u64) };
        Ok(Self {
            cursor: text("cursor"),
            page_done: count("pageDone")?,
            last_done: text("lastDone"),
            counts: Counts {
                customers: count("customersDone")?,
                written: count("statesWritten")?,
                already_newer: count("statesAlreadyNewer")?,
                after_deletion: count("statesAfterDeletion")?,
                not_found: count("customersNotFound")?,
                failed: count("customersFailed")?,
            },
            total: number("total")?.map(|t| t.max(0) as u64),
            failed_sample: item
                .get("failedSample")
                .and_then(|v| v.as_l().ok())
                .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
                .unwrap_or_default(),
            started_at_ms: number("startedAt")?.unwrap_or(0),
            updated_at_ms: number("updatedAt")?.unwrap_or(0),
            finished_at_ms: number("finishedAt")?,
            revision: count("revision")?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    /// Another run saved the checkpoint since this one loaded it: two backfills at once.
    #[error(
        "another backfill saved the checkpoint since this one read it (revision {loaded}); only one runs at a time"
    )]
    Concurrent { loaded: u64 },
    #[error("the backfill checkpoint item is not readable: {0}")]
    Malformed(String),
}

/// Reads and saves the checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    client: Client,
    table: TableName,
}

impl CheckpointStore {
    pub fn new(client: Client, table: TableName) -> Self {
        Self { client, table }
    }

    /// The checkpoint, strongly consistent (a run that just saved is seen).
    pub async fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let out = self
            .client
            .get_item()
            .table_name(self.table.as_str())
            .key("pk", AttributeValue::S(CHECKPOINT_PK.into()))
            .key("sk", AttributeValue::S(CHECKPOINT_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| MirrorError::dynamo("GetItem", e))?;
        out.item.as_ref().map(Checkpoint::from_item).transpose()
    }

    /// Saves `checkpoint` if the stored one is still the revision it was loaded at; then it is
    /// the next revision.
    pub async fn save(&self, checkpoint: &mut Checkpoint) -> Result<(), CheckpointError> {
        let result = self
            .client
            .put_item()
            .table_name(self.table.as_str())
            .set_item(Some(checkpoint.item()))
            .condition_expression("attribute_not_exists(pk) OR revision = :r")
            .expression_attribute_values(":r", AttributeValue::N(checkpoint.revision.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => {
                checkpoint.revision += 1;
                Ok(())
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => {
                Err(CheckpointError::Concurrent { loaded: checkpoint.revision })
            }
            Err(e) => Err(MirrorError::dynamo("PutItem", e).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back_as_saved_with_the_next_revision() {
        let cp = Checkpoint {
            cursor: Some("cursor-41".into()),
            page_done: 3,
            last_done: Some("c-44".into()),
            counts: Counts { customers: 44, written: 50, already_newer: 2, after_deletion: 1, not_found: 1, failed: 1 },
            total: Some(120),
            failed_sample: vec!["c-7".into()],
            started_at_ms: 1_000,
            updated_at_ms: 2_000,
            finished_at_ms: None,
            revision: 6,
        };
        let item = cp.item();
        assert_eq!(item["status"].as_s().unwrap(), "running");
        let back = Checkpoint::from_item(&item).unwrap();
        assert_eq!(back, Checkpoint { revision: 7, ..cp.clone() });
        let finished = Checkpoint { finished_at_ms: Some(3_000), cursor: None, last_done: None, ..cp };
        let item = finished.item();
        assert_eq!(item["status"].as_s().unwrap(), "finished");
        assert!(!item.contains_key("cursor"));
        assert!(Checkpoint::from_item(&item).unwrap().is_finished());
        let mut bad = item;
        bad.insert("pageDone".into(), AttributeValue::N("x".into()));
        assert!(matches!(Checkpoint::from_item(&bad), Err(CheckpointError::Malformed(_))));
    }
}
