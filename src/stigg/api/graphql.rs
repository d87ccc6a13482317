//! The GraphQL documents we send to Stigg's API and the reading of its answers: no I/O here, so
//! every answer shape is unit-tested without a server.
//!
//! One endpoint for every operation, `POST https://api.stigg.io/graphql`
//! (<https://docs.stigg.io/api-and-sdks/integration/backend/graphql>).

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{ApiError, CustomerPage, EntitlementsState, Fetched};

/// The operations this client sends; each has its own rate limit at Stigg (limits are per
/// operation, <https://docs.stigg.io/api-and-sdks/integration/graphql/rate-limits>), so each
/// has its own client-side bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    EntitlementsState,
    Customers,
    CustomerResources,
}

impl Operation {
    pub const ALL: [Operation; 3] = [Self::EntitlementsState, Self::Customers, Self::CustomerResources];

    /// The operation name sent (`operationName` and `x-graphql-operation-name`, as Stigg's own
    /// Go client does): Stigg's per-operation limits key on what the request is.
    pub fn name(self) -> &'static str {
        match self {
            Self::EntitlementsState => "GetEntitlementsState",
            Self::Customers => "GetCustomers",
            Self::CustomerResources => "GetCustomerResources",
        }
    }

    /// The root field the operation selects (what the stand-in dispatches on).
    pub fn field(self) -> &'static str {
        match self {
            Self::EntitlementsState => "entitlementsState",
            Self::Customers => "customers",
            Self::CustomerResources => "customerResources",
        }
    }

    fn document(self) -> &'static str {
        match self {
            Self::EntitlementsState => ENTITLEMENTS_STATE,
            Self::Customers => CUSTOMERS,
            Self::CustomerResources => CUSTOMER_RESOURCES,
        }
    }
}

/// `entitlementsState(query: FetchEntitlementsQuery!): EntitlementsState!`
/// (<https://docs.stigg.io/graphql-reference/queries/entitlementsState>). The entitlement fields
/// are those of <https://docs.stigg.io/graphql-reference/types/Entitlement> with scalar (or
/// JSON) values: a union or object field we would have to spell out (`resetPeriodConfiguration`,
/// `enumConfiguration`, `creditRate`) is left out, as a misspelt type would fail the whole query
/// and the mirror reads none of them. `entitlementsUpdatedAt` is the ordering key the webhooks
/// carry (<https://docs.stigg.io/graphql-reference/types/EntitlementsState>).
const ENTITLEMENTS_STATE: &str = "query GetEntitlementsState($query: FetchEntitlementsQuery!) { \
entitlementsState(query: $query) { accessDeniedReason entitlementsUpdatedAt entitlements { \
isGranted accessDeniedReason usageLimit hasUnlimitedUsage hasSoftLimit currentUsage requestedUsage \
enumValues requestedValues resetPeriod usagePeriodAnchor usagePeriodStart usagePeriodEnd \
entitlementUpdatedAt usageUpdatedAt validUntil meterId displayNameOverride \
feature { id refId displayName description featureType meterType featureStatus featureUnits \
featureUnitsPlural additionalMetaData } } } }";

/// `customers(filter, paging: CursorPaging, sorting): CustomerConnection!`
/// (<https://docs.stigg.io/graphql-reference/queries/customers>, example in
/// <https://docs.stigg.io/api-and-sdks/api-reference/overview>). Sorted by `createdAt`
/// ascending: the documented default is descending, where customers created during a backfill
/// would shift every later page; ascending, they only add pages at the end (not documented;
/// assumed keyset cursors).
const CUSTOMERS: &str = "query GetCustomers($paging: CursorPaging, $sorting: [CustomerSort!]) { \
customers(paging: $paging, sorting: $sorting) { edges { cursor node { customerId } } \
pageInfo { hasNextPage endCursor } totalCount } }";

/// `customerResources(filter: CustomerResourceFilter, paging: CursorPaging)`
/// (<https://docs.stigg.io/graphql-reference/queries/customerResources>; node type
/// <https://docs.stigg.io/graphql-reference/types/CustomerResource>). The filter's field names
/// (`customer: {customerId: {eq}}`) are not documented on that page; taken from Stigg's
/// generated Go client.
const CUSTOMER_RESOURCES: &str = "query GetCustomerResources($filter: CustomerResourceFilter, $paging: CursorPaging) { \
customerResources(filter: $filter, paging: $paging) { edges { cursor node { resourceId } } \
pageInfo { hasNextPage endCursor } } }";

/// The largest page asked for. Not documented; assumed 100, the REST listing's documented
/// maximum (<https://docs.stigg.io/api-reference/customers/get-a-list-of-customers>).
pub const MAX_PAGE: usize = 100;

/// The request body of `entitlementsState` for a customer (and resource).
pub fn entitlements_state_request(customer: &str, resource: Option<&str>) -> Value {
    let mut query = json!({ "customerId": customer });
    if let Some(resource) = resource {
        query["resourceId"] = json!(resource);
    }
    body(Operation::EntitlementsState, json!({ "query": query }))
}

/// The request body of one page of customers.
pub fn customers_request(after: Option<&str>, limit: usize) -> Value {
    let variables = json!({
        "paging": paging(after, limit),
        "sorting": [{ "field": "createdAt", "direction": "ASC" }],
    });
    body(Operation::Customers, variables)
}

/// The request body of one page of a customer's resources.
pub fn customer_resources_request(customer: &str, after: Option<&str>) -> Value {
    let variables = json!({
        "filter": { "customer": { "customerId": { "eq": customer } } },
        "paging": paging(after, MAX_PAGE),
    });
    body(Operation::CustomerResources, variables)
}

fn paging(after: Option<&str>, limit: usize) -> Value {
    let mut paging = json!({ "first": limit.clamp(1, MAX_PAGE) });
    if let Some(after) = after {
        paging["after"] = json!(after);
    }
    paging
}

fn body(op: Operation, variables: Value) -> Value {
    json!({ "operationName": op.name(), "query": op.document(), "variables": variables })
}

/// The error an HTTP status other than 2xx means. 401 (a missing, invalid or expired key) and
/// 403 (a scoped key without the permission) are documented
/// (<https://docs.stigg.io/api-and-sdks/api-reference/graphql/authentication>); 429 is the
/// rate limit (<https://docs.stigg.io/api-and-sdks/integration/graphql/rate-limits>).
pub fn status_error(status: u16, retry_after: Option<Duration>, body: &[u8]) -> ApiError {
    match status {
        401 | 403 => ApiError::Refused { status },
        429 => ApiError::RateLimited { retry_after },
        500..=599 => ApiError::Unavailable { status },
        _ => ApiError::Rejected { status, detail: short(&String::from_utf8_lossy(body)) },
    }
}

/// `Retry-After` in seconds or as an HTTP date. Stigg documents no `Retry-After` (the Edge
/// API says it sends none, <https://docs.stigg.io/api-and-sdks/integration/graphql/edge-api-rate-limits>);
/// when one comes, it is honoured.
/// At most [`MAX_RETRY_AFTER`]: a per-minute limit frees up within a minute, and a larger (or
/// absurd) value must not hold every caller of the operation for longer.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        use aws_smithy_types::date_time::{DateTime, Format};
        let at = std::time::SystemTime::try_from(DateTime::from_str(value, Format::HttpDate).ok()?).ok()?;
        at.duration_since(now).unwrap_or_default()
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The longest `Retry-After` honoured: Stigg's limits are per minute.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A GraphQL error's code, `errors[].extensions.code`. Not documented beyond the `ErrorCode`
/// enum (<https://docs.stigg.io/graphql-reference/types/ErrorCode>) and the trace id riding in
/// `extensions` (<https://docs.stigg.io/documentation/managing-your-account/debugging-with-trace-ids>);
/// assumed the usual GraphQL shape `{"errors":[{"message","extensions":{"code",...}}]}`.
fn error_codes(errors: &[Value]) -> Vec<&str> {
    errors.iter().filter_map(|e| e.pointer("/extensions/code").and_then(Value::as_str)).collect()
}

/// Codes meaning the customer (or the resource asked for) does not exist
/// (<https://docs.stigg.io/graphql-reference/types/CustomerNotFoundError>).
const NOT_FOUND_CODES: [&str; 2] = ["CustomerNotFound", "CustomerResourceNotFound"];
/// Codes of a refused key, should one come as a GraphQL error: a refused key is documented as
/// HTTP 401/403 (<https://docs.stigg.io/api-and-sdks/api-reference/graphql/authentication>), read
/// from the status first. `ApiKeyExpired` is a documented error type
/// (<https://docs.stigg.io/graphql-reference/types/ApiKeyExpired>); `UNAUTHENTICATED` is the
/// GraphQL servers' usual code (not documented for Stigg; assumed).
const REFUSED_CODES: [&str; 2] = ["ApiKeyExpired", "UNAUTHENTICATED"];

/// The `data` of a 200 answer, or the error its `errors` say.
fn data_of(body: &[u8], op: Operation) -> Result<Result<Value, Vec<String>>, ApiError> {
    let mut answer: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::Malformed(crate::event::JsonError::new(&e).to_string()))?;
    let errors = answer.get("errors").and_then(Value::as_array).cloned().unwrap_or_default();
    if !errors.is_empty() {
        let codes = error_codes(&errors);
        // Stigg's `ErrorCode` has `RateLimitExceeded`: a limit may come as a GraphQL error
        // rather than a 429 (not documented which); both slow down.
        if codes.contains(&"RateLimitExceeded") {
            return Err(ApiError::RateLimited { retry_after: None });
        }
        if codes.iter().any(|c| REFUSED_CODES.contains(c)) {
            return Err(ApiError::Refused { status: 401 });
        }
        if codes.iter().any(|c| NOT_FOUND_CODES.contains(c)) {
            return Ok(Err(codes.iter().map(|c| c.to_string()).collect()));
        }
        let first = errors.first().and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or_default();
        let detail = match codes.first() {
            Some(code) => format!("{code}: {}", short(first)),
            None => short(first),
        };
        return Err(ApiError::Rejected { status: 200, detail });
    }
    match answer.get_mut("data").and_then(|d| d.get_mut(op.field())).map(Value::take) {
        Some(v @ Value::Object(_)) => Ok(Ok(v)),
        _ => Err(ApiError::Malformed(format!("no data.{} object", op.field()))),
    }
}

/// Reads an `entitlementsState` answer for `customer` (and `resource`). `CustomerNotFound` is
/// data, `accessDeniedReason` of the state, in the documented example
/// (<https://docs.stigg.io/api-and-sdks/api-reference/queries/entitlements-state>); a GraphQL
/// error with that code is read the same way, in case the API raises it instead (not
/// documented which it does for an unknown id).
pub fn parse_entitlements_state(body: &[u8], customer: &str, resource: Option<&str>) -> Result<Fetched, ApiError> {
    let state = match data_of(body, Operation::EntitlementsState)? {
        Ok(state) => state,
        Err(_not_found) => return Ok(Fetched::CustomerNotFound),
    };
    let reason = state.get("accessDeniedReason").and_then(Value::as_str).map(str::to_owned);
    if reason.as_deref() == Some("CustomerNotFound") {
        return Ok(Fetched::CustomerNotFound);
    }
    let at_iso = state
        .get("entitlementsUpdatedAt")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::Malformed("entitlementsState has no entitlementsUpdatedAt".into()))?
        .to_owned();
    let at_ms = crate::mirror::epoch_millis(&at_iso)
        .ok_or_else(|| ApiError::Malformed("entitlementsUpdatedAt is not ISO 8601".into()))?;
    let list = state
        .get("entitlements")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::Malformed("entitlementsState has no entitlements list".into()))?;
    let entitlements =
        list.iter().enumerate().map(|(i, e)| webhook_shape(e, i)).collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Fetched::State(EntitlementsState {
        customer: customer.to_owned(),
        resource: resource.map(str::to_owned),
        at_ms,
        at_iso,
        entitlements,
        access_denied_reason: reason,
    }))
}

/// One GraphQL `Entitlement` in the shape an `entitlements.updated` webhook carries it (what the
/// mirror stores and other languages read): the feature's slug `refId` becomes `feature.id`,
/// its UUID `id` becomes `feature.entityId` (the webhook's names for the two), and `meterType`
/// is upper-cased as webhooks send it (the API's `MeterType` is `Fluctuating|Incremental|None`,
/// <https://docs.stigg.io/graphql-reference/types/MeterType>; the webhooks' `INCREMENTAL`,
/// `FLUCTUATING` are in Stigg's `entitlements.updated` example). Every other field is kept as
/// the API sent it. The mapping of the two shapes is not documented; inferred by comparing them.
pub fn webhook_shape(entitlement: &Value, index: usize) -> Result<Value, ApiError> {
    let mut e = entitlement
        .as_object()
        .cloned()
        .ok_or_else(|| ApiError::Malformed(format!("entitlements[{index}] is not an object")))?;
    let mut feature: Map<String, Value> = e
        .remove("feature")
        .and_then(|f| match f {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .ok_or_else(|| ApiError::Malformed(format!("entitlements[{index}] has no feature")))?;
    let slug = match feature.remove("refId") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return Err(ApiError::Malformed(format!("entitlements[{index}] has no feature.refId"))),
    };
    if let Some(uuid) = feature.remove("id") {
        feature.insert("entityId".into(), uuid);
    }
    feature.insert("id".into(), Value::String(slug));
    if let Some(Value::String(meter)) = feature.get_mut("meterType")
        && matches!(meter.as_str(), "Incremental" | "Fluctuating")
    {
        *meter = meter.to_uppercase();
    }
    e.insert("feature".into(), Value::Object(feature));
    Ok(Value::Object(e))
}

/// Reads one page of `customers`.
pub fn parse_customers(body: &[u8]) -> Result<CustomerPage, ApiError> {
    let connection = data_of(body, Operation::Customers)?
        .map_err(|codes| ApiError::Rejected { status: 200, detail: codes.join(", ") })?;
    let (ids, next) = read_connection(&connection, "customerId")?;
    let total = connection.get("totalCount").and_then(Value::as_u64);
    Ok(CustomerPage { customers: ids, next, total })
}

/// Reads one page of `customerResources`: the resource ids and the next page's cursor. A
/// customer Stigg does not know has no resources.
pub fn parse_customer_resources(body: &[u8]) -> Result<(Vec<String>, Option<String>), ApiError> {
    match data_of(body, Operation::CustomerResources)? {
        Ok(connection) => read_connection(&connection, "resourceId"),
        Err(_not_found) => Ok((vec![], None)),
    }
}

/// `edges[].node.<id>` and the cursor after the page: `pageInfo.endCursor` when
/// `hasNextPage`, else none. Both `PageInfo` fields are nullable; a next page without
/// `endCursor` continues after the last edge's cursor.
fn read_connection(connection: &Value, id: &str) -> Result<(Vec<String>, Option<String>), ApiError> {
    let edges = connection
        .get("edges")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::Malformed("a connection without edges".into()))?;
    let ids = edges
        .iter()
        .enumerate()
        .map(|(i, edge)| {
            edge.pointer(&format!("/node/{id}"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| ApiError::Malformed(format!("edges[{i}].node has no {id}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let page_info = connection.get("pageInfo");
    let has_next = page_info.and_then(|p| p.get("hasNextPage")).and_then(Value::as_bool).unwrap_or(false);
    if !has_next || edges.is_empty() {
        return Ok((ids, None));
    }
    let cursor = page_info
        .and_then(|p| p.get("endCursor"))
        .and_then(Value::as_str)
        .or_else(|| edges.last().and_then(|e| e.get("cursor")).and_then(Value::as_str))
        .ok_or_else(|| ApiError::Malformed("hasNextPage without a cursor".into()))?;
    Ok((ids, Some(cursor.to_owned())))
}

/// The first line of an error text, bounded (it is logged; Stigg's messages hold no key).
fn short(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_answer(reason: Value, entitlements: Value) -> Vec<u8> {
        json!({"data": {"entitlementsState": {"accessDeniedReason": reason,
            "entitlementsUpdatedAt": "2025-11-14T19:59:45.133Z", "entitlements": entitlements}}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_state_is_read_in_the_webhooks_shape_with_its_ordering_key() {
        let body = state_answer(
            Value::Null,
            json!([{"feature": {"id": "4ff99f8c-fdb0-42a0-b3ac-aef46630cedf", "refId": "feature-api-calls",
                "displayName": "API calls", "featureType": "NUMBER", "meterType": "Incremental"},
                "usageLimit": 1000, "hasUnlimitedUsage": false, "hasSoftLimit": true, "currentUsage": 12,
                "usagePeriodEnd": "2025-12-01T00:00:00.000Z", "resetPeriod": "MONTH", "enumValues": null,
                "isGranted": true, "someFieldStiggAddsLater": 1}]),
        );
        let Fetched::State(s) = parse_entitlements_state(&body, "c-1", Some("r-1")).unwrap() else { panic!() };
        assert_eq!((s.customer.as_str(), s.resource.as_deref()), ("c-1", Some("r-1")));
        assert_eq!((s.at_ms, s.at_iso.as_str()), (1_763_150_385_133, "2025-11-14T19:59:45.133Z"));
        assert_eq!(s.access_denied_reason, None);
        let e = &s.entitlements[0];
        assert_eq!(e["feature"]["id"], "feature-api-calls");
        assert_eq!(e["feature"]["entityId"], "4ff99f8c-fdb0-42a0-b3ac-aef46630cedf");
        assert_eq!(e["feature"]["meterType"], "INCREMENTAL");
        assert!(e["feature"].get("refId").is_none());
        for (field, value) in [
            ("usageLimit", json!(1000)),
            ("hasSoftLimit", json!(true)),
            ("currentUsage", json!(12)),
            ("resetPeriod", json!("MONTH")),
            ("usagePeriodEnd", json!("2025-12-01T00:00:00.000Z")),
            ("isGranted", json!(true)),
            ("someFieldStiggAddsLater", json!(1)),
        ] {
            assert_eq!(e[field], value, "{field}");
        }
        // The mirror reads it like a webhook's entitlement.
        let f = crate::mirror::FeatureEntitlement::from_json("feature-api-calls", e);
        assert_eq!(f.kind, crate::mirror::FeatureKind::Metered);
        assert_eq!(f.usage_limit, Some(1000.0));
    }

    #[test]
    fn an_unmetered_feature_keeps_meter_type_none() {
        let body = state_answer(
            json!("NoActiveSubscription"),
            json!([{"feature": {"id": "u", "refId": "seats", "featureType": "NUMBER", "meterType": "None"}}]),
        );
        let Fetched::State(s) = parse_entitlements_state(&body, "c", None).unwrap() else { panic!() };
        assert_eq!(s.entitlements[0]["feature"]["meterType"], "None");
        assert_eq!(s.access_denied_reason.as_deref(), Some("NoActiveSubscription"));
        assert_eq!(s.resource, None);
    }

    #[test]
    fn customer_not_found_is_read_as_data_or_as_a_graphql_error() {
        let data =
            json!({"data": {"entitlementsState": {"accessDeniedReason": "CustomerNotFound", "entitlements": []}}});
        assert_eq!(
            parse_entitlements_state(data.to_string().as_bytes(), "x", None).unwrap(),
            Fetched::CustomerNotFound
        );
        for code in ["CustomerNotFound", "CustomerResourceNotFound"] {
            let error = json!({"errors": [{"message": "Customer not found", "extensions":
                {"code": code, "isValidationError": true, "traceId": "t"}}], "data": null});
            let fetched = parse_entitlements_state(error.to_string().as_bytes(), "x", None).unwrap();
            assert_eq!(fetched, Fetched::CustomerNotFound, "{code}");
        }
    }

    #[test]
    fn graphql_errors_are_rate_limits_refusals_or_rejections() {
        let error = |code: &str| {
            json!({"errors": [{"message": format!("{code} happened\nstack..."), "extensions": {"code": code}}]})
                .to_string()
        };
        let e = parse_entitlements_state(error("RateLimitExceeded").as_bytes(), "c", None).unwrap_err();
        assert!(matches!(e, ApiError::RateLimited { retry_after: None }) && e.is_retryable());
        let e = parse_entitlements_state(error("ApiKeyExpired").as_bytes(), "c", None).unwrap_err();
        assert!(matches!(e, ApiError::Refused { .. }) && !e.is_retryable());
        let e = parse_entitlements_state(error("BadUserInput").as_bytes(), "c", None).unwrap_err();
        let ApiError::Rejected { detail, .. } = &e else { panic!("{e:?}") };
        assert_eq!(detail, "BadUserInput: BadUserInput happened");
        assert!(!e.is_retryable());
    }

    #[test]
    fn an_answer_without_the_ordering_key_or_not_json_is_malformed() {
        let no_time = json!({"data": {"entitlementsState": {"accessDeniedReason": null, "entitlements": []}}});
        let e = parse_entitlements_state(no_time.to_string().as_bytes(), "c", None).unwrap_err();
        assert!(matches!(e, ApiError::Malformed(_)), "{e:?}");
        assert!(matches!(parse_entitlements_state(b"<html>", "c", None), Err(ApiError::Malformed(_))));
        let no_slug = state_answer(Value::Null, json!([{"feature": {"id": "uuid"}}]));
        assert!(matches!(parse_entitlements_state(&no_slug, "c", None), Err(ApiError::Malformed(_))));
        assert!(matches!(parse_customers(br#"{"data":{"customers":null}}"#), Err(ApiError::Malformed(_))));
    }

    #[test]
    fn pages_follow_end_cursor_while_has_next_page() {
        let page = json!({"data": {"customers": {"edges": [
            {"cursor": "a", "node": {"customerId": "c-1"}}, {"cursor": "b", "node": {"customerId": "c-2"}}],
            "pageInfo": {"hasNextPage": true, "endCursor": "b"}, "totalCount": 5}}});
        let p = parse_customers(page.to_string().as_bytes()).unwrap();
        assert_eq!(
            p,
            CustomerPage { customers: vec!["c-1".into(), "c-2".into()], next: Some("b".into()), total: Some(5) }
        );
        let last = json!({"data": {"customers": {"edges": [{"cursor": "z", "node": {"customerId": "c-5"}}],
            "pageInfo": {"hasNextPage": false, "endCursor": "z"}, "totalCount": 5}}});
        assert_eq!(parse_customers(last.to_string().as_bytes()).unwrap().next, None);
        let no_end = json!({"data": {"customerResources": {"edges": [{"cursor": "q", "node": {"resourceId": "r-1"}}],
            "pageInfo": {"hasNextPage": true, "endCursor": null}}}});
        assert_eq!(
            parse_customer_resources(no_end.to_string().as_bytes()).unwrap(),
            (vec!["r-1".into()], Some("q".into()))
        );
    }

    #[test]
    fn requests_carry_the_documented_variables() {
        let r = entitlements_state_request("c-1", Some("r-1"));
        assert_eq!(r["variables"], json!({"query": {"customerId": "c-1", "resourceId": "r-1"}}));
        assert_eq!(entitlements_state_request("c-1", None)["variables"], json!({"query": {"customerId": "c-1"}}));
        assert!(r["query"].as_str().unwrap().contains("entitlementsUpdatedAt"));
        let c = customers_request(Some("cur"), 500);
        assert_eq!(c["variables"]["paging"], json!({"first": 100, "after": "cur"}));
        assert_eq!(c["operationName"], "GetCustomers");
        let res = customer_resources_request("c-1", None);
        assert_eq!(res["variables"]["filter"], json!({"customer": {"customerId": {"eq": "c-1"}}}));
    }

    #[test]
    fn statuses_and_retry_after_map_to_errors() {
        assert!(matches!(status_error(401, None, b""), ApiError::Refused { status: 401 }));
        assert!(matches!(status_error(403, None, b""), ApiError::Refused { status: 403 }));
        let s = Duration::from_secs(3);
        assert!(matches!(status_error(429, Some(s), b""), ApiError::RateLimited { retry_after: Some(d) } if d == s));
        assert!(status_error(503, None, b"").is_retryable());
        let e = status_error(400, None, b"bad query\nmore");
        assert!(matches!(&e, ApiError::Rejected { detail, .. } if detail == "bad query") && !e.is_retryable());
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now), Some(Duration::from_secs(10)));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("18446744073709551615", now), Some(MAX_RETRY_AFTER), "bounded");
    }
}
