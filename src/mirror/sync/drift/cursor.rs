//! The drift check's own item (`pk = sync#drift`, `sk = cursor`): a lease, so one run works at
//! a time, and where the next run starts: in Stigg's customer listing (`cursor`, `offset`) and in
//! the mirror table (`mirrorFrom`, the key a scan of the mirror's headers resumes after).
//!
//! Stigg's listing alone never shows a customer Stigg deleted: the mirror side finds the
//! customers the mirror still holds after a lost `customer.deleted`.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::check::{epoch_ms, n, number, text};
use super::{CURSOR_PK, CURSOR_SK, DriftCheck, Position};
use crate::mirror::MirrorError;

/// Items a scan of the mirror reads per page, and pages per run at most: a run reads at most
/// ~5,000 items (headers and features alike) looking for its sample's customers.
const SCAN_PAGE_ITEMS: i32 = 250;
const SCAN_PAGES: usize = 20;

type Item = HashMap<String, AttributeValue>;

/// Where a run starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cursor {
    pub stigg: Position,
    /// The mirror table's key to scan after (`None`: from the start).
    pub mirror: Option<Item>,
}

impl<D: ?Sized> DriftCheck<D> {
    /// Takes the lease (until `deadline`) and reads where to start, in one conditional write.
    /// `None`: another run holds an unexpired lease.
    pub(super) async fn lease(&self, owner: &str, deadline: SystemTime) -> Result<Option<Cursor>, MirrorError> {
        let now = epoch_ms(SystemTime::now());
        let result = self
            .client
            .update_item()
            .table_name(self.table.as_str())
            .set_key(Some(cursor_key()))
            .update_expression("SET #lu = :until, #lo = :owner, #started = :now")
            .condition_expression("attribute_not_exists(#lu) OR #lu < :now")
            .expression_attribute_names("#lu", "leaseUntil")
            .expression_attribute_names("#lo", "leaseOwner")
            .expression_attribute_names("#started", "lastStartedAt")
            .expression_attribute_values(":until", n(epoch_ms(deadline)))
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let item = out.attributes.unwrap_or_default();
                let offset = number(&item, "offset").and_then(|o| usize::try_from(o).ok()).unwrap_or(0);
                let stigg = Position { cursor: text(&item, "cursor").map(str::to_owned), offset };
                let mirror = item.get("mirrorFrom").and_then(|v| v.as_m().ok()).cloned();
                Ok(Some(Cursor { stigg, mirror }))
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => Ok(None),
            Err(e) => Err(MirrorError::dynamo("UpdateItem", e)),
        }
    }

    /// Releases the lease, and moves the cursor to `next` when given. A lease that expired and
    /// was taken by another run is left to it (its cursor wins).
    pub(super) async fn save(&self, owner: &str, next: Option<&Cursor>) -> Result<(), MirrorError> {
        let mut set = vec!["#done = :now"];
        let mut remove = vec!["#lu", "#lo"];
        let mut request = self
            .client
            .update_item()
            .table_name(self.table.as_str())
            .set_key(Some(cursor_key()))
            .condition_expression("#lo = :owner")
            .expression_attribute_names("#lu", "leaseUntil")
            .expression_attribute_names("#lo", "leaseOwner")
            .expression_attribute_values(":owner", AttributeValue::S(owner.to_owned()))
            .expression_attribute_values(":now", n(epoch_ms(SystemTime::now())));
        match next {
            Some(next) => {
                request = request
                    .expression_attribute_names("#done", "lastCompletedAt")
                    .expression_attribute_names("#c", "cursor")
                    .expression_attribute_names("#o", "offset")
                    .expression_attribute_names("#m", "mirrorFrom")
                    .expression_attribute_values(":o", n(next.stigg.offset as i64));
                set.push("#o = :o");
                match &next.mirror {
                    Some(key) => {
                        set.push("#m = :m");
                        request = request.expression_attribute_values(":m", AttributeValue::M(key.clone()));
                    }
                    None => remove.push("#m"),
                }
                match &next.stigg.cursor {
                    Some(cursor) => {
                        set.push("#c = :c");
                        request = request.expression_attribute_values(":c", AttributeValue::S(cursor.clone()));
                    }
                    None => remove.push("#c"),
                }
            }
            None => request = request.expression_attribute_names("#done", "lastFailedAt"),
        }
        let result =
            request.update_expression(format!("SET {} REMOVE {}", set.join(", "), remove.join(", "))).send().await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => {
                tracing::warn!("drift check: the lease expired and another run took it; its cursor stands");
                Ok(())
            }
            Err(e) => Err(MirrorError::dynamo("UpdateItem", e)),
        }
    }

    /// Up to `n` customers holding a snapshot in the mirror, scanning its headers from `from`
    /// (skipping `seen`), and the key to scan after next time (`None`: the table's end was
    /// reached, the next scan starts over). A scan reads feature items too (DynamoDB filters
    /// after reading: <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Scan.html#Scan.FilterExpression>),
    /// hence the bound on pages.
    pub(super) async fn mirror_sample(
        &self,
        from: Option<Item>,
        n: usize,
        seen: &HashSet<String>,
    ) -> Result<(Vec<String>, Option<Item>), MirrorError> {
        let mut customers: Vec<String> = Vec::new();
        let mut start = from;
        for _ in 0..SCAN_PAGES {
            let page = self
                .client
                .scan()
                .table_name(self.table.as_str())
                .filter_expression("begins_with(#sk, :header) AND attribute_exists(#t)")
                .projection_expression("#pk, #sk, #c")
                .expression_attribute_names("#pk", "pk")
                .expression_attribute_names("#sk", "sk")
                .expression_attribute_names("#c", "customerId")
                .expression_attribute_names("#t", "entitlementsUpdatedAt")
                .expression_attribute_values(":header", AttributeValue::S("resource#".to_owned()))
                .limit(SCAN_PAGE_ITEMS)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| MirrorError::dynamo("Scan", e))?;
            for item in page.items() {
                let Some(customer) = text(item, "customerId") else { continue };
                if seen.contains(customer) || customers.iter().any(|c| c == customer) {
                    continue;
                }
                customers.push(customer.to_owned());
                if customers.len() == n {
                    // The next scan starts after this header (any key may start a scan).
                    let key = item.iter().filter(|(k, _)| *k == "pk" || *k == "sk");
                    return Ok((customers, Some(key.map(|(k, v)| (k.clone(), v.clone())).collect())));
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok((customers, None));
            }
        }
        Ok((customers, start))
    }
}

fn cursor_key() -> Item {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(CURSOR_PK.to_owned())),
        ("sk".to_owned(), AttributeValue::S(CURSOR_SK.to_owned())),
    ])
}
