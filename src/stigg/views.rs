//! Typed views of the main Stigg event families, parsed on demand from an event's raw JSON.
//!
//! Every field is optional and unknown fields are ignored, so a payload from a newer (or older)
//! generation of Stigg's API still parses; `extra` keeps whatever a view does not name.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::stigg::event::{EventFamily, JsonError, StiggEvent};

/// Why a typed view could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("a {wanted:?} view was asked of a {actual} event")]
    WrongFamily { wanted: EventFamily, actual: String },
    /// Where the payload did not fit (a field path such as `plan.billingPeriod`) and how; the
    /// offending value is never part of the message (see [`JsonError`]).
    #[error("payload does not fit the {view} view at `{path}`")]
    Malformed {
        view: &'static str,
        path: String,
        #[source]
        source: JsonError,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CustomerRef {
    pub id: Option<String>,
    pub entity_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub billing_id: Option<String>,
    pub crm_id: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PlanRef {
    pub id: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub pricing_type: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AddonRef {
    pub id: Option<String>,
    pub name: Option<String>,
    pub quantity: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FeatureRef {
    pub id: Option<String>,
    pub entity_id: Option<String>,
    pub name: Option<String>,
    pub feature_type: Option<String>,
    pub meter_type: Option<String>,
    pub unit: Option<String>,
    pub units: Option<String>,
}

/// `subscription.*` events.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionEvent {
    /// The subscription's id.
    pub id: Option<String>,
    pub status: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub cancellation_date: Option<String>,
    pub trial_end_date: Option<String>,
    pub billing_period: Option<String>,
    pub billing_currency: Option<String>,
    /// The customer's entity id (UUID) in older payloads.
    pub entity_id: Option<String>,
    pub customer: Option<CustomerRef>,
    pub resource: Option<Value>,
    pub plan: Option<PlanRef>,
    pub addons: Option<Vec<AddonRef>>,
    pub metadata: Option<Map<String, Value>>,
    pub is_upgrade: Option<bool>,
    pub is_downgrade: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `customer.*` events: the customer's fields sit at the top level.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CustomerEvent {
    pub id: Option<String>,
    pub entity_id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub billing_id: Option<String>,
    pub billing_currency: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Entitlement {
    pub feature: Option<FeatureRef>,
    pub usage_limit: Option<f64>,
    pub has_unlimited_usage: Option<bool>,
    pub has_soft_limit: Option<bool>,
    pub current_usage: Option<f64>,
    pub usage_period_anchor: Option<String>,
    pub usage_period_start: Option<String>,
    pub usage_period_end: Option<String>,
    pub reset_period: Option<String>,
    pub enum_values: Option<Vec<String>>,
}

/// `entitlements.updated`: the customer's (or resource's) full entitlement set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EntitlementsUpdatedEvent {
    pub trigger: Option<String>,
    pub customer: Option<CustomerRef>,
    pub resource: Option<Value>,
    pub entitlements: Option<Vec<Entitlement>>,
    pub entitlements_updated_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SubscriptionRef {
    pub id: Option<String>,
    pub start_date: Option<String>,
    pub plan: Option<PlanRef>,
}

/// `entitlement.usage_exceeded`, `entity.entitlement.usage_exceeded`, `measurement.reported`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UsageEvent {
    pub threshold_percentage: Option<f64>,
    pub usage_used_percentage: Option<f64>,
    pub current_usage: Option<f64>,
    pub usage_limit: Option<f64>,
    pub has_unlimited_usage: Option<bool>,
    pub has_soft_limit: Option<bool>,
    pub usage_period_start: Option<String>,
    pub usage_period_end: Option<String>,
    pub reset_period: Option<String>,
    pub feature: Option<FeatureRef>,
    pub customer: Option<CustomerRef>,
    pub resource: Option<Value>,
    pub active_subscriptions: Option<Vec<SubscriptionRef>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `credits.*`, `credit_balance.*`, `credit_grant.*`, `automatic_recharge.*`. Stigg's credit
/// payloads vary by generation: the common fields are named, the rest is in `extra`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CreditsEvent {
    pub customer: Option<CustomerRef>,
    pub customer_id: Option<String>,
    pub resource_id: Option<String>,
    pub currency_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl StiggEvent {
    fn view<T: DeserializeOwned>(&self, wanted: EventFamily, view: &'static str) -> Result<T, ViewError> {
        if self.family() != wanted {
            return Err(ViewError::WrongFamily { wanted, actual: self.event_type.to_string() });
        }
        let mut json = serde_json::Deserializer::from_str(self.raw_json());
        serde_path_to_error::deserialize(&mut json).map_err(|e| ViewError::Malformed {
            view,
            path: crate::stigg::event::redact_quoted(&e.path().to_string()),
            source: JsonError::new(e.inner()),
        })
    }

    pub fn subscription(&self) -> Result<SubscriptionEvent, ViewError> {
        self.view(EventFamily::Subscription, "subscription")
    }

    pub fn customer(&self) -> Result<CustomerEvent, ViewError> {
        self.view(EventFamily::Customer, "customer")
    }

    pub fn entitlements_updated(&self) -> Result<EntitlementsUpdatedEvent, ViewError> {
        self.view(EventFamily::Entitlements, "entitlements")
    }

    pub fn usage(&self) -> Result<UsageEvent, ViewError> {
        self.view(EventFamily::Usage, "usage")
    }

    pub fn credits(&self) -> Result<CreditsEvent, ViewError> {
        self.view(EventFamily::Credits, "credits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stigg::event::EventType;

    fn example(name: &str) -> StiggEvent {
        let raw = std::fs::read_to_string(format!("{}/events/stigg/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        StiggEvent::parse(&raw).unwrap()
    }

    #[test]
    fn subscription_created_example() {
        let e = example("subscription.created.json");
        assert_eq!(e.event_type, EventType::SubscriptionCreated);
        assert_eq!(e.customer_id.as_deref(), Some("customer-test-id"));
        let s = e.subscription().unwrap();
        assert_eq!(s.id.as_deref(), Some("subscription-id"));
        assert_eq!(s.status.as_deref(), Some("ACTIVE"));
        assert_eq!(s.plan.unwrap().id.as_deref(), Some("plan-test-id"));
        assert_eq!(s.addons.unwrap()[0].quantity, Some(10.0));
        assert_eq!(s.customer.unwrap().email.as_deref(), Some("customer-test-email"));
        assert_eq!(s.is_downgrade, Some(true));
    }

    #[test]
    fn a_sparse_trial_expired_example_still_fits_the_subscription_view() {
        let s = example("subscription.trial_expired.json").subscription().unwrap();
        assert_eq!(s.id.as_deref(), Some("subscription-id"));
        assert!(s.plan.is_none() && s.customer.is_none());
    }

    #[test]
    fn customer_updated_example() {
        let e = example("customer.updated.json");
        let c = e.customer().unwrap();
        assert_eq!(c.id.as_deref(), Some("customer-test-id"));
        assert_eq!(c.billing_currency.as_deref(), Some("ils"));
        assert!(c.extra.contains_key("experimentInfo"), "unnamed fields are kept");
        assert!(e.subscription().is_err(), "a customer event has no subscription view");
    }

    #[test]
    fn entitlements_updated_example() {
        let e = example("entitlements.updated.json");
        assert_eq!(e.key.as_str(), "ce2605be-8eed-41cf-912c-def052682dbe");
        assert_eq!(e.timestamp.as_deref(), Some("2025-11-13T21:41:56.923Z"));
        let v = e.entitlements_updated().unwrap();
        assert_eq!(v.trigger.as_deref(), Some("subscription_updated"));
        let ents = v.entitlements.unwrap();
        assert_eq!(ents[0].feature.as_ref().unwrap().id.as_deref(), Some("feature-1-tb-cloud-storage"));
        assert_eq!(ents[0].usage_limit, Some(1.0));
        assert!(ents[0].usage_period_start.is_none(), "nulls are absent values");
    }

    #[test]
    fn usage_exceeded_example() {
        let e = example("entitlement.usage_exceeded.json");
        let u = e.usage().unwrap();
        assert_eq!(u.usage_used_percentage, Some(83.0));
        assert_eq!(u.feature.unwrap().id.as_deref(), Some("feature-02-campaigns"));
        assert_eq!(u.customer.unwrap().email, None);
        assert_eq!(u.active_subscriptions.unwrap()[0].plan.as_ref().unwrap().name.as_deref(), Some("Essentials"));
    }

    #[test]
    fn credits_events_of_any_generation_fit_the_credits_view() {
        for t in ["credit_grant.balance.low", "credits.balance.usage_low", "credits.granted"] {
            let e = StiggEvent::parse(&format!(r#"{{"type":"{t}","messageId":"m","customerId":"c-1","amount":5}}"#))
                .unwrap();
            let c = e.credits().unwrap();
            assert_eq!(c.customer_id.as_deref(), Some("c-1"));
            assert_eq!(c.extra["amount"], 5);
        }
    }

    #[test]
    fn a_field_of_the_wrong_type_is_a_malformed_view_not_a_panic() {
        let e = StiggEvent::parse(r#"{"type":"subscription.updated","messageId":"m","plan":"not-an-object"}"#).unwrap();
        let err = e.subscription().unwrap_err();
        assert!(matches!(err, ViewError::Malformed { ref path, .. } if path == "plan"), "{err}");
        let chain = crate::error_chain(&err);
        assert!(chain.contains("invalid type: string …"), "{chain}");
        assert!(!chain.contains("not-an-object"), "no payload value in the error chain: {chain}");
    }
}
