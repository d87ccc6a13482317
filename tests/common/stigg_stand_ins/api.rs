//! Stigg's GraphQL API (`POST /graphql`), the operations the entitlement mirror sends, answered
//! as documented (see src/stigg/api/graphql.rs for the pages): `entitlementsState`, `customers`
//! (cursor paging, `totalCount`) and `customerResources`. `X-API-KEY` is checked (401). Each
//! operation has a per-window limit answering 429 (with `Retry-After` unless turned off).
//! Customers, resources and states can be changed at run time (a test makes Stigg newer or
//! older than the mirror); faults are injected (the next N answers 5xx, a delay per answer);
//! calls are counted per operation and per customer.

use std::collections::VecDeque;
use std::time::Instant;

use super::*;

/// The operations' root fields, which the limits and counters are keyed by.
pub const ENTITLEMENTS_STATE: &str = "entitlementsState";
pub const CUSTOMERS: &str = "customers";
pub const CUSTOMER_RESOURCES: &str = "customerResources";
const OPERATIONS: [&str; 3] = [ENTITLEMENTS_STATE, CUSTOMERS, CUSTOMER_RESOURCES];

/// The stand-in's limit per operation by default: the lowest read tier Stigg documents
/// (1,500 per minute for `subscriptions`); none is documented for these operations.
pub const DEFAULT_PER_MINUTE: usize = 1_500;

struct Customer {
    /// Its place in creation order: the cursor, stable when others are removed.
    seq: usize,
    id: String,
    resources: Vec<String>,
}

struct Limit {
    max: usize,
    window: Duration,
    admitted: VecDeque<Instant>,
}

struct ApiState {
    api_key: String,
    /// In creation order (`createdAt` ascending).
    customers: Vec<Customer>,
    /// (customer, resource or "") -> the `EntitlementsState` object.
    states: HashMap<(String, String), Value>,
    limits: HashMap<&'static str, Limit>,
    retry_after: bool,
    not_found_as_error: bool,
    faults: VecDeque<u16>,
    delay: Duration,
    calls: HashMap<String, usize>,
    throttled: usize,
    /// (customer, resource or "") -> `entitlementsState` answers served with a state.
    served: HashMap<(String, String), usize>,
}

/// Stigg's GraphQL API on 127.0.0.1.
#[derive(Clone)]
pub struct StiggApiStandIn {
    addr: SocketAddr,
    state: Arc<Mutex<ApiState>>,
}

impl StiggApiStandIn {
    pub async fn start(api_key: &str) -> Self {
        Self::start_on("127.0.0.1:0", api_key).await
    }

    pub async fn start_on(addr: &str, api_key: &str) -> Self {
        let limits = OPERATIONS
            .iter()
            .map(|op| {
                (*op, Limit { max: DEFAULT_PER_MINUTE, window: Duration::from_secs(60), admitted: VecDeque::new() })
            })
            .collect();
        let state = Arc::new(Mutex::new(ApiState {
            api_key: api_key.to_owned(),
            customers: vec![],
            states: HashMap::new(),
            limits,
            retry_after: true,
            not_found_as_error: false,
            faults: VecDeque::new(),
            delay: Duration::ZERO,
            calls: HashMap::new(),
            throttled: 0,
            served: HashMap::new(),
        }));
        let shared = state.clone();
        let handler: Handler = Arc::new(move |parts, body| {
            let shared = shared.clone();
            Box::pin(async move {
                let delay = shared.lock().unwrap().delay;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                answer(&shared, &parts, &body)
            })
        });
        let addr = serve(addr, handler).await;
        Self { addr, state }
    }

    /// The GraphQL endpoint, to give as `STIGG_API_URL`.
    pub fn url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// Loads customers, resources and states from a file shaped like
    /// events/stigg-api/customers.json; returns how many customers it added.
    pub fn seed_file(&self, path: &std::path::Path) -> Result<usize, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let customers = doc["customers"].as_array().ok_or("no customers list")?;
        for c in customers {
            let id = c["customerId"].as_str().ok_or("a customer without customerId")?;
            let resources: Vec<&str> =
                c["resources"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            self.add_customer(id, &resources);
            for s in c["entitlementsStates"].as_array().into_iter().flatten() {
                self.set_state(id, s["resourceId"].as_str(), s["entitlementsState"].clone());
            }
        }
        Ok(customers.len())
    }

    /// The fixture the tests and `make dev MIRROR=1` use.
    pub fn fixture() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("events/stigg-api/customers.json")
    }

    /// A customer created now (last in `createdAt` order), with these resources.
    pub fn add_customer(&self, id: &str, resources: &[&str]) {
        let mut s = self.state.lock().unwrap();
        let resources = resources.iter().map(|r| r.to_string()).collect();
        match s.customers.iter_mut().find(|c| c.id == id) {
            Some(c) => c.resources = resources,
            None => {
                let seq = s.customers.last().map_or(0, |c| c.seq + 1);
                s.customers.push(Customer { seq, id: id.to_owned(), resources });
            }
        }
    }

    /// The customer is gone (archived and deleted): `CustomerNotFound` from now on.
    pub fn remove_customer(&self, id: &str) {
        let mut s = self.state.lock().unwrap();
        s.customers.retain(|c| c.id != id);
        s.states.retain(|(c, _), _| c != id);
    }

    /// The `EntitlementsState` object answered for the customer (and resource).
    pub fn set_state(&self, customer: &str, resource: Option<&str>, state: Value) {
        let key = (customer.to_owned(), resource.unwrap_or_default().to_owned());
        self.state.lock().unwrap().states.insert(key, state);
    }

    /// A state of these entitlements (GraphQL `Entitlement` objects), updated at `at_iso`.
    pub fn set_entitlements(&self, customer: &str, resource: Option<&str>, at_iso: &str, entitlements: Value) {
        let state = json!({"accessDeniedReason": null, "entitlementsUpdatedAt": at_iso, "entitlements": entitlements});
        self.set_state(customer, resource, state);
    }

    pub fn state_of(&self, customer: &str, resource: Option<&str>) -> Option<Value> {
        let key = (customer.to_owned(), resource.unwrap_or_default().to_owned());
        self.state.lock().unwrap().states.get(&key).cloned()
    }

    pub fn customer_ids(&self) -> Vec<String> {
        self.state.lock().unwrap().customers.iter().map(|c| c.id.clone()).collect()
    }

    /// Every (customer, resource) scope: the customer-wide one and one per resource.
    pub fn scopes(&self) -> Vec<(String, Option<String>)> {
        let s = self.state.lock().unwrap();
        let mut out = vec![];
        for c in &s.customers {
            out.push((c.id.clone(), None));
            out.extend(c.resources.iter().map(|r| (c.id.clone(), Some(r.clone()))));
        }
        out
    }

    /// At most `max` calls of `operation` per `window`; over it, 429.
    pub fn set_limit(&self, operation: &str, max: usize, window: Duration) {
        let mut s = self.state.lock().unwrap();
        let limit = s.limits.get_mut(operation).unwrap_or_else(|| panic!("no operation {operation}"));
        limit.max = max;
        limit.window = window;
        limit.admitted.clear();
    }

    /// Whether 429s carry `Retry-After` (on by default; Stigg documents none).
    pub fn set_retry_after(&self, on: bool) {
        self.state.lock().unwrap().retry_after = on;
    }

    /// An unknown customer as a GraphQL error (`extensions.code = CustomerNotFound`) instead of
    /// the documented `accessDeniedReason: CustomerNotFound`.
    pub fn set_not_found_as_error(&self, on: bool) {
        self.state.lock().unwrap().not_found_as_error = on;
    }

    /// The next `n` answers (of any operation) are `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state.lock().unwrap().faults.extend(std::iter::repeat_n(status, n));
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn set_api_key(&self, key: &str) {
        self.state.lock().unwrap().api_key = key.to_owned();
    }

    /// Requests for an operation (root field), whatever the answer.
    pub fn calls(&self, operation: &str) -> usize {
        self.state.lock().unwrap().calls.get(operation).copied().unwrap_or(0)
    }

    /// 429s answered.
    pub fn throttled(&self) -> usize {
        self.state.lock().unwrap().throttled
    }

    /// `entitlementsState` answers with a state for the customer (all its scopes).
    pub fn served(&self, customer: &str) -> usize {
        self.state.lock().unwrap().served.iter().filter(|((c, _), _)| c == customer).map(|(_, n)| n).sum()
    }

    /// Customer-wide `entitlementsState` answers per customer.
    pub fn served_customer_wide(&self) -> HashMap<String, usize> {
        let s = self.state.lock().unwrap();
        s.served.iter().filter(|((_, r), _)| r.is_empty()).map(|((c, _), n)| (c.clone(), *n)).collect()
    }

    pub fn reset_counters(&self) {
        let mut s = self.state.lock().unwrap();
        s.calls.clear();
        s.served.clear();
        s.throttled = 0;
    }
}

fn graphql_error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        status,
        &json!({"errors": [{"message": message, "extensions": {"code": code,
        "isValidationError": false, "traceId": uuid::Uuid::new_v4().to_string()}}], "data": null}),
    )
}

fn answer(state: &Mutex<ApiState>, parts: &hyper::http::request::Parts, body: &Bytes) -> Response<Full<Bytes>> {
    let mut s = state.lock().unwrap();
    if parts.uri.path() != "/graphql" || parts.method != hyper::Method::POST {
        return json_response(404, &json!({"message": "not found"}));
    }
    let request: Value = serde_json::from_slice(body).unwrap_or_default();
    let query = request["query"].as_str().unwrap_or_default();
    // The root field the document selects (`customerResources(` does not contain `customers(`).
    let Some(op) = OPERATIONS.iter().copied().find(|op| query.contains(&format!("{op}("))) else {
        return graphql_error(400, "GRAPHQL_VALIDATION_FAILED", "unknown operation");
    };
    *s.calls.entry(op.to_owned()).or_default() += 1;
    let key = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if key != s.api_key {
        return graphql_error(401, "UNAUTHENTICATED", "Unauthorized");
    }
    if let Some(status) = s.faults.pop_front() {
        return json_response(status, &json!({"message": format!("injected {status}")}));
    }
    let retry_after = s.retry_after;
    let limit = s.limits.get_mut(op).expect("every operation has a limit");
    let now = Instant::now();
    while limit.admitted.front().is_some_and(|t| now.duration_since(*t) >= limit.window) {
        limit.admitted.pop_front();
    }
    if limit.admitted.len() >= limit.max {
        let free_at = *limit.admitted.front().expect("a full window has entries") + limit.window;
        let secs = free_at.duration_since(now).as_secs_f64().ceil().max(1.0) as u64;
        s.throttled += 1;
        let mut response = graphql_error(429, "RateLimitExceeded", "Too many requests");
        if retry_after {
            response.headers_mut().insert("retry-after", secs.to_string().parse().unwrap());
        }
        return response;
    }
    limit.admitted.push_back(now);
    let vars = &request["variables"];
    let data = match op {
        ENTITLEMENTS_STATE => {
            let customer = vars["query"]["customerId"].as_str().unwrap_or_default().to_owned();
            let resource = vars["query"]["resourceId"].as_str().unwrap_or_default().to_owned();
            let Some(c) = s.customers.iter().find(|c| c.id == customer) else {
                if s.not_found_as_error {
                    return graphql_error(200, "CustomerNotFound", &format!("Customer not found: {customer}"));
                }
                let now = stigg_webhooks::metrics::rfc3339(SystemTime::now());
                return json_response(
                    200,
                    &json!({"data": {op: {"accessDeniedReason": "CustomerNotFound",
                    "entitlementsUpdatedAt": now, "entitlements": []}}}),
                );
            };
            if !resource.is_empty() && !c.resources.contains(&resource) {
                // Not documented which answer an unknown resource gets; the `ErrorCode` has this.
                return graphql_error(200, "CustomerResourceNotFound", "Customer resource not found");
            }
            let key = (customer, resource);
            let state = s.states.get(&key).cloned().unwrap_or_else(|| {
                json!({"accessDeniedReason": "NoActiveSubscription",
                    "entitlementsUpdatedAt": "2026-01-01T00:00:00.000Z", "entitlements": []})
            });
            *s.served.entry(key).or_default() += 1;
            state
        }
        CUSTOMERS => {
            let items: Vec<(usize, String)> = s.customers.iter().map(|c| (c.seq, c.id.clone())).collect();
            let ascending = vars["sorting"][0]["direction"].as_str() == Some("ASC");
            let mut connection = page(&items, &vars["paging"], "customerId", ascending);
            connection["totalCount"] = json!(items.len());
            connection
        }
        _ => {
            let customer = vars["filter"]["customer"]["customerId"]["eq"].as_str().unwrap_or_default();
            let resources = s.customers.iter().find(|c| c.id == customer).map(|c| c.resources.clone());
            let items: Vec<(usize, String)> = resources.unwrap_or_default().into_iter().enumerate().collect();
            page(&items, &vars["paging"], "resourceId", true)
        }
    };
    json_response(200, &json!({"data": {op: data}}))
}

/// One page of a connection over `items` (sequence number, id; in creation order): `first`
/// (default 10, as documented for `CursorPaging`, at most 100) after the cursor `after`.
/// Cursors are opaque to clients; here the item's sequence number (keyset paging).
fn page(items: &[(usize, String)], paging: &Value, field: &str, ascending: bool) -> Value {
    let first = paging["first"].as_u64().unwrap_or(10).clamp(1, 100) as usize;
    let after = paging["after"].as_str().and_then(|c| c.strip_prefix("cursor-")).and_then(|n| n.parse::<usize>().ok());
    let mut order: Vec<&(usize, String)> = items.iter().collect();
    if !ascending {
        order.reverse();
    }
    let start = match after {
        Some(a) => order.iter().position(|(seq, _)| if ascending { *seq > a } else { *seq < a }).unwrap_or(order.len()),
        None => 0,
    };
    let slice = &order[start..(start + first).min(order.len())];
    let cursor = |(seq, _): &&(usize, String)| format!("cursor-{seq}");
    let edges: Vec<Value> = slice.iter().map(|item| json!({"cursor": cursor(item), "node": {field: item.1}})).collect();
    json!({"edges": edges, "pageInfo": {"hasNextPage": start + first < order.len(), "hasPreviousPage": start > 0,
        "startCursor": slice.first().map(cursor), "endCursor": slice.last().map(cursor)}})
}
