//! `customer.deleted`'s write ([`MirrorStore::delete_customer`]): the tombstone, then the sweep
//! of the customer's snapshots older than it.

use super::attributes::{Item, n, number_of, s, text_of};
use super::{
    MirrorError, MirrorStore, OnRefusal, SCHEMA_VERSION, Taking, WriteOutcome, is_conditional_failure, key_of, query,
};
use crate::mirror::{TOMBSTONE, partition_key};

impl MirrorStore {
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
