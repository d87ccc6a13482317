//! Stigg's entitlement semantics over a mirrored snapshot: pure, no I/O.
//!
//! As Stigg's SDKs answer them: a feature the customer has no entitlement to gives no access; a
//! boolean feature gives access; a numeric configuration value gives access with its value; a
//! metered feature gives access when the usage is unlimited, the limit is soft, or current
//! usage plus the requested usage stays within the limit; an enum feature gives access to its
//! values.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

/// What kind of feature an entitlement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    Boolean,
    /// A number without a meter: a configuration value (seats allowed, max file size).
    Numeric,
    /// A number with a meter (`INCREMENTAL`, `FLUCTUATING`): usage counts against the limit.
    Metered,
    Enum,
    /// A feature type this code does not know; treated as present, without limits.
    Other,
}

/// One feature's entitlement as mirrored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureEntitlement {
    pub feature_id: String,
    pub kind: FeatureKind,
    pub feature_type: Option<String>,
    pub meter_type: Option<String>,
    pub usage_limit: Option<f64>,
    pub has_unlimited_usage: bool,
    pub has_soft_limit: bool,
    pub current_usage: Option<f64>,
    /// When `current_usage` was true (epoch ms).
    pub usage_updated_at: Option<i64>,
    pub usage_period_end: Option<String>,
    pub reset_period: Option<String>,
    pub enum_values: Vec<String>,
    /// `isGranted` as Stigg's API answers it (webhooks do not carry it: granted). An entitlement
    /// the API lists as not granted (`accessDeniedReason` `Revoked`, `BudgetExceeded`, ...,
    /// <https://docs.stigg.io/graphql-reference/types/Entitlement>) gives no access.
    pub is_granted: bool,
    /// That entitlement's `accessDeniedReason`, when Stigg gives one.
    pub access_denied_reason: Option<String>,
    /// The entitlement as Stigg sent it (every field, including ones not named here).
    pub raw: Value,
}

impl FeatureEntitlement {
    /// Reads one `features` entry (the entitlement JSON as Stigg sent it).
    pub fn from_json(feature_id: &str, e: &Value) -> Self {
        let feature = e.get("feature");
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let feature_type = text(feature.and_then(|f| f.get("featureType")));
        let meter_type = text(feature.and_then(|f| f.get("meterType")));
        let kind = match feature_type.as_deref() {
            Some("BOOLEAN") => FeatureKind::Boolean,
            Some("ENUM") => FeatureKind::Enum,
            Some("NUMBER") => match meter_type.as_deref() {
                None | Some("None") | Some("NONE") => FeatureKind::Numeric,
                Some(_) => FeatureKind::Metered,
            },
            _ => FeatureKind::Other,
        };
        Self {
            feature_id: feature_id.to_owned(),
            kind,
            feature_type,
            meter_type,
            usage_limit: e.get("usageLimit").and_then(Value::as_f64),
            has_unlimited_usage: e.get("hasUnlimitedUsage").and_then(Value::as_bool).unwrap_or(false),
            has_soft_limit: e.get("hasSoftLimit").and_then(Value::as_bool).unwrap_or(false),
            current_usage: e.get("currentUsage").and_then(Value::as_f64),
            usage_updated_at: e.get("usageUpdatedAt").and_then(Value::as_i64),
            usage_period_end: text(e.get("usagePeriodEnd")),
            reset_period: text(e.get("resetPeriod")),
            enum_values: e
                .get("enumValues")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            is_granted: e.get("isGranted").and_then(Value::as_bool).unwrap_or(true),
            access_denied_reason: text(e.get("accessDeniedReason")),
            raw: e.clone(),
        }
    }
}

/// A customer's (or resource's) mirrored entitlements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub customer_id: String,
    pub resource_id: Option<String>,
    /// Epoch milliseconds.
    pub entitlements_updated_at: i64,
    pub message_id: Option<String>,
    pub features: BTreeMap<String, FeatureEntitlement>,
}

impl Snapshot {
    /// How old the truth is: now minus `entitlementsUpdatedAt`.
    pub fn age(&self, now: SystemTime) -> Duration {
        let at = UNIX_EPOCH + Duration::from_millis(self.entitlements_updated_at.max(0) as u64);
        now.duration_since(at).unwrap_or_default()
    }

    pub fn check(&self, feature_id: &str, requested_usage: f64, now: SystemTime) -> Access {
        check(Some(self), feature_id, requested_usage, now)
    }
}

/// Why access is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// No mirrored entitlements for this customer and resource.
    CustomerNotFound,
    /// The customer has no entitlement to this feature.
    NoFeatureEntitlement,
    /// Current usage plus the requested usage exceeds the limit.
    UsageLimitExceeded,
    /// Stigg lists the entitlement as not granted (`isGranted: false`; its reason in the raw entitlement).
    NotGranted,
}

/// The answer to "may this customer use this feature (this much more)?".
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Access {
    pub has_access: bool,
    pub deny_reason: Option<DenyReason>,
    pub kind: Option<FeatureKind>,
    pub is_unlimited: bool,
    pub has_soft_limit: bool,
    pub usage_limit: Option<f64>,
    pub current_usage: Option<f64>,
    pub requested_usage: f64,
    /// `usage_limit - current_usage` (never below zero); `None` when unlimited or not metered.
    pub remaining: Option<f64>,
    pub usage_period_end: Option<String>,
    pub enum_values: Vec<String>,
    /// Age of the snapshot answered from (`None` when there is none); in JSON, seconds.
    #[serde(serialize_with = "seconds")]
    pub snapshot_age: Option<Duration>,
}

fn seconds<S: serde::Serializer>(age: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match age {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Stigg's semantics for one feature of `snapshot` (absent: the customer is unknown).
pub fn check(snapshot: Option<&Snapshot>, feature_id: &str, requested_usage: f64, now: SystemTime) -> Access {
    let mut access = Access {
        has_access: false,
        deny_reason: None,
        kind: None,
        is_unlimited: false,
        has_soft_limit: false,
        usage_limit: None,
        current_usage: None,
        requested_usage,
        remaining: None,
        usage_period_end: None,
        enum_values: vec![],
        snapshot_age: snapshot.map(|s| s.age(now)),
    };
    let Some(snapshot) = snapshot else {
        access.deny_reason = Some(DenyReason::CustomerNotFound);
        return access;
    };
    let Some(e) = snapshot.features.get(feature_id) else {
        access.deny_reason = Some(DenyReason::NoFeatureEntitlement);
        return access;
    };
    access.kind = Some(e.kind);
    if !e.is_granted {
        access.deny_reason = Some(DenyReason::NotGranted);
        return access;
    }
    access.is_unlimited = e.has_unlimited_usage;
    access.has_soft_limit = e.has_soft_limit;
    access.usage_limit = e.usage_limit;
    access.current_usage = e.current_usage;
    access.usage_period_end = e.usage_period_end.clone();
    access.enum_values = e.enum_values.clone();
    access.has_access = match e.kind {
        FeatureKind::Metered => {
            let used = e.current_usage.unwrap_or(0.0);
            if !e.has_unlimited_usage {
                access.remaining = e.usage_limit.map(|limit| (limit - used).max(0.0));
            }
            e.has_unlimited_usage
                || e.has_soft_limit
                || e.usage_limit.is_some_and(|limit| used + requested_usage <= limit)
        }
        FeatureKind::Boolean | FeatureKind::Numeric | FeatureKind::Enum | FeatureKind::Other => true,
    };
    if !access.has_access {
        access.deny_reason = Some(DenyReason::UsageLimitExceeded);
    }
    access
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(entitlements: Value) -> Snapshot {
        let features = entitlements
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let id = e["feature"]["id"].as_str().unwrap().to_owned();
                (id.clone(), FeatureEntitlement::from_json(&id, e))
            })
            .collect();
        Snapshot {
            customer_id: "c".into(),
            resource_id: None,
            entitlements_updated_at: 1_000,
            message_id: None,
            features,
        }
    }

    fn metered(limit: Value, usage: f64, unlimited: bool, soft: bool) -> Value {
        json!({"feature": {"id": "api-calls", "featureType": "NUMBER", "meterType": "INCREMENTAL"},
            "usageLimit": limit, "currentUsage": usage, "hasUnlimitedUsage": unlimited, "hasSoftLimit": soft,
            "usagePeriodEnd": "2026-12-31T00:00:00.000Z"})
    }

    const NOW: SystemTime = UNIX_EPOCH;

    #[test]
    fn an_entitlement_stiggs_api_lists_as_not_granted_gives_no_access() {
        let mut revoked = metered(json!(100), 0.0, true, false);
        revoked["isGranted"] = json!(false);
        revoked["accessDeniedReason"] = json!("Revoked");
        let a = check(Some(&snapshot(json!([revoked]))), "api-calls", 1.0, NOW);
        assert!(!a.has_access);
        assert_eq!(a.deny_reason, Some(DenyReason::NotGranted));
        let mut granted = metered(json!(100), 0.0, false, false);
        granted["isGranted"] = json!(true);
        assert!(check(Some(&snapshot(json!([granted]))), "api-calls", 1.0, NOW).has_access);
    }

    #[test]
    fn a_metered_feature_allows_usage_up_to_its_limit() {
        let s = snapshot(json!([metered(json!(10), 7.0, false, false)]));
        let a = s.check("api-calls", 3.0, NOW);
        assert!(a.has_access);
        assert_eq!((a.remaining, a.usage_limit, a.current_usage), (Some(3.0), Some(10.0), Some(7.0)));
        assert_eq!(a.usage_period_end.as_deref(), Some("2026-12-31T00:00:00.000Z"));
        let a = s.check("api-calls", 4.0, NOW);
        assert!(!a.has_access);
        assert_eq!(a.deny_reason, Some(DenyReason::UsageLimitExceeded));
    }

    #[test]
    fn unlimited_and_soft_limits_always_allow() {
        let s = snapshot(json!([metered(Value::Null, 1e9, true, false)]));
        let a = s.check("api-calls", 1.0, NOW);
        assert!(a.has_access && a.is_unlimited && a.remaining.is_none());
        let s = snapshot(json!([metered(json!(10), 12.0, false, true)]));
        let a = s.check("api-calls", 5.0, NOW);
        assert!(a.has_access && a.has_soft_limit);
        assert_eq!(a.remaining, Some(0.0), "never below zero");
    }

    #[test]
    fn boolean_numeric_and_enum_features_give_access_with_their_values() {
        let s = snapshot(json!([
            {"feature": {"id": "sso", "featureType": "BOOLEAN"}},
            {"feature": {"id": "seats", "featureType": "NUMBER", "meterType": "None"}, "usageLimit": 5},
            {"feature": {"id": "region", "featureType": "ENUM"}, "enumValues": ["eu", "us"]}
        ]));
        assert_eq!(s.check("sso", 0.0, NOW).kind, Some(FeatureKind::Boolean));
        let seats = s.check("seats", 0.0, NOW);
        assert!(seats.has_access && seats.kind == Some(FeatureKind::Numeric) && seats.usage_limit == Some(5.0));
        let region = s.check("region", 0.0, NOW);
        assert!(region.has_access && region.enum_values == ["eu", "us"]);
    }

    #[test]
    fn no_entitlement_or_no_customer_denies_with_the_reason() {
        let s = snapshot(json!([{"feature": {"id": "sso", "featureType": "BOOLEAN"}}]));
        assert_eq!(s.check("audit-log", 0.0, NOW).deny_reason, Some(DenyReason::NoFeatureEntitlement));
        let a = check(None, "sso", 0.0, NOW);
        assert!(!a.has_access && a.deny_reason == Some(DenyReason::CustomerNotFound) && a.snapshot_age.is_none());
    }

    #[test]
    fn the_age_is_measured_from_entitlements_updated_at() {
        let s = snapshot(json!([]));
        assert_eq!(s.age(UNIX_EPOCH + Duration::from_millis(61_000)), Duration::from_secs(60));
    }
}
