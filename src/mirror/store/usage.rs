//! A usage event's write ([`MirrorStore::write_usage`]): one feature's usage, never older than
//! its last usage nor its snapshot.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::attributes::{Item, n, number_attribute, number_of, s, usage_value};
use super::{MirrorError, MirrorStore, WriteOutcome, is_conditional_failure};
use crate::mirror::{feature_sort_key, partition_key};

impl MirrorStore {
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
