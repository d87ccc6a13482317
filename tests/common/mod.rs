//! Test harness: real SDK clients against the emulator named by `AWS_ENDPOINT_URL` (moto,
//! started by `make test`), one fresh table and queue per test.
#![allow(dead_code)]

pub mod bus_proxy;
pub mod counting_proxy;
pub mod fault_proxy;
pub mod runtime_api;
pub mod stigg_stand_ins;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName, QueueAttributeName};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use stigg_webhooks::config::{QueueUrl, TableName};

/// The emulator's endpoint. Integration tests need one: run them with `make test`.
pub fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: integration tests run against moto; use `make test`, which starts it")
}

/// DynamoDB's endpoint: `AWS_ENDPOINT_URL_DYNAMODB` when set (DynamoDB Local cross-check),
/// else the emulator's.
pub fn ddb_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|_| endpoint())
}

/// What code under test gets: the functions' own timeouts.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    test_config(endpoint, stigg_webhooks::aws::timeouts()).await
}

/// For setting up and inspecting test resources: generous timeouts, so a loaded CI machine
/// slowing moto down does not make an admin call time out and retry (a retried CreateTable
/// would then fail with "already exists"). Code under test gets [`sdk_config_for`].
pub async fn admin_config_for(endpoint: &str) -> SdkConfig {
    let generous = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(60))
        .build();
    test_config(endpoint, generous).await
}

async fn test_config(endpoint: &str, timeouts: aws_config::timeout::TimeoutConfig) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(stigg_webhooks::aws::tool_http_client().expect("AWS_CA_BUNDLE names a usable PEM bundle"))
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .timeout_config(timeouts)
        .load()
        .await
}

pub async fn sdk_config() -> SdkConfig {
    sdk_config_for(&endpoint()).await
}

/// An endpoint where nothing listens: every call is refused.
pub const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Counts wire requests per operation (retries included) and fails chosen operations,
/// as an SDK interceptor: no fake clients, the real SDK code paths run.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    calls: Arc<Mutex<HashMap<String, usize>>>,
    /// Operations to fail, each only when its request body holds the text given (if any).
    failing: Arc<Mutex<Vec<FailRule>>>,
}

/// An operation to fail, and the text its request body must hold for that (any body if none).
type FailRule = (String, Option<String>);

impl Recorder {
    pub fn count(&self, operation: &str) -> usize {
        self.calls.lock().unwrap().get(operation).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }

    /// Requests so far, by operation name.
    pub fn clone_counts(&self) -> std::collections::BTreeMap<String, usize> {
        self.calls.lock().unwrap().iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    pub fn reset(&self) {
        self.calls.lock().unwrap().clear();
    }

    /// Makes every later call of `operation` fail before it is sent.
    pub fn fail(&self, operation: &str) {
        self.failing.lock().unwrap().push((operation.to_owned(), None));
    }

    /// Makes every later call of `operation` whose request body contains `text` fail before it
    /// is sent (e.g. the claim's completion, an UpdateItem that sets `COMPLETED`).
    pub fn fail_when(&self, operation: &str, text: &str) {
        self.failing.lock().unwrap().push((operation.to_owned(), Some(text.to_owned())));
    }

    pub fn heal(&self) {
        self.failing.lock().unwrap().clear();
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "Recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg.load::<Metadata>().map(|m| m.name().to_owned()).unwrap_or_default();
        *self.calls.lock().unwrap().entry(op.clone()).or_default() += 1;
        let body = context.request().body().bytes().map(String::from_utf8_lossy).unwrap_or_default();
        let fails = self
            .failing
            .lock()
            .unwrap()
            .iter()
            .any(|(failing, text)| *failing == op && text.as_deref().is_none_or(|t| body.contains(t)));
        if fails {
            return Err(format!("injected failure of {op}").into());
        }
        Ok(())
    }
}

/// A fresh table and queue on the emulator, with admin clients to inspect them.
pub struct Resources {
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub table: TableName,
    pub queue: QueueUrl,
}

impl Resources {
    pub async fn create(fifo: bool) -> Self {
        let ddb = aws_sdk_dynamodb::Client::new(&admin_config_for(&ddb_endpoint()).await);
        let sqs = aws_sdk_sqs::Client::new(&admin_config_for(&endpoint()).await);
        let table = unique("idem");
        create_table(&ddb, &table).await;
        let queue = create_queue(&sqs, &unique("events"), fifo).await;
        Self { ddb, sqs, table: TableName::parse(&table).unwrap(), queue }
    }

    pub async fn items(&self) -> Vec<HashMap<String, AttributeValue>> {
        self.ddb.scan().table_name(self.table.as_str()).send().await.unwrap().items.unwrap_or_default()
    }

    pub async fn item(&self, pk: &str) -> Option<HashMap<String, AttributeValue>> {
        self.ddb
            .get_item()
            .table_name(self.table.as_str())
            .key("pk", AttributeValue::S(pk.into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    }

    /// Every message now in the queue (received once, left invisible for a minute).
    pub async fn drain(&self) -> Vec<Message> {
        drain(&self.sqs, &self.queue).await
    }
}

pub async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    ddb.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("pk").attribute_type(ScalarAttributeType::S).build().unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build().unwrap())
        .send()
        .await
        .expect("create table");
}

pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str, fifo: bool) -> QueueUrl {
    let mut req = sqs.create_queue().queue_name(if fifo { format!("{name}.fifo") } else { name.to_owned() });
    if fifo {
        req = req.attributes(QueueAttributeName::FifoQueue, "true");
    }
    let url = req.send().await.expect("create queue").queue_url.unwrap();
    QueueUrl::parse(&url).unwrap()
}

/// A queue's ARN (what an EventBridge rule's target names).
pub async fn queue_arn(sqs: &aws_sdk_sqs::Client, queue: &QueueUrl) -> String {
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue.as_str())
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    out.attributes.unwrap()[&QueueAttributeName::QueueArn].clone()
}

/// One receive of up to ten messages with their attributes, invisible for `visibility` seconds.
async fn receive_batch(sqs: &aws_sdk_sqs::Client, queue: &QueueUrl, visibility: i32) -> Vec<Message> {
    sqs.receive_message()
        .queue_url(queue.as_str())
        .max_number_of_messages(10)
        .visibility_timeout(visibility)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
}

/// A received message as Lambda's SQS event source hands it to the processor: body, message
/// attributes and system attributes (`SentTimestamp`, ...) as received.
pub fn lambda_record(m: &Message, source_arn: &str) -> serde_json::Value {
    let attributes: serde_json::Map<String, serde_json::Value> = m
        .message_attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::json!({"stringValue": v.string_value(), "dataType": "String"})))
        .collect();
    let system: serde_json::Map<String, serde_json::Value> = m
        .attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_owned(), serde_json::Value::String(v)))
        .collect();
    serde_json::json!({"messageId": m.message_id, "receiptHandle": m.receipt_handle, "body": m.body,
        "attributes": system, "messageAttributes": attributes, "eventSource": "aws:sqs",
        "eventSourceARN": source_arn, "awsRegion": "us-east-1"})
}

/// Every message now in the queue (received once, left invisible for a minute).
pub async fn drain(sqs: &aws_sdk_sqs::Client, queue: &QueueUrl) -> Vec<Message> {
    let mut all = Vec::new();
    for _ in 0..500 {
        let batch = receive_batch(sqs, queue, 60).await;
        if batch.is_empty() {
            break;
        }
        all.extend(batch);
    }
    all
}

/// Deletes received messages (at most ten) in one call.
pub async fn delete_received(sqs: &aws_sdk_sqs::Client, queue: &QueueUrl, messages: &[Message]) {
    let entries = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle().unwrap())
                .build()
                .unwrap()
        })
        .collect();
    sqs.delete_message_batch().queue_url(queue.as_str()).set_entries(Some(entries)).send().await.unwrap();
}

/// Every message now in the queue, deleted as received (for counts where a redelivery of a
/// slow drain must not be mistaken for a duplicate).
pub async fn take_all(sqs: &aws_sdk_sqs::Client, queue: &QueueUrl) -> Vec<Message> {
    let mut all = Vec::new();
    loop {
        let batch = receive_batch(sqs, queue, 300).await;
        if batch.is_empty() {
            break;
        }
        delete_received(sqs, queue, &batch).await;
        all.extend(batch);
    }
    all
}

/// A table of the entitlement mirror's layout (pk + sk), on-demand.
pub async fn create_mirror_table(ddb: &aws_sdk_dynamodb::Client) -> TableName {
    let name = unique("mirror");
    let key = |n: &str| {
        AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build().unwrap()
    };
    ddb.create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(key("pk"))
        .attribute_definitions(key("sk"))
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build().unwrap())
        .key_schema(KeySchemaElement::builder().attribute_name("sk").key_type(KeyType::Range).build().unwrap())
        .send()
        .await
        .expect("create mirror table");
    TableName::parse(&name).unwrap()
}

pub fn attr<'a>(m: &'a Message, name: &str) -> Option<&'a str> {
    m.message_attributes.as_ref()?.get(name)?.string_value()
}

/// A function-URL event (payload format 2.0) as Lambda delivers it; `body` as sent, base64 when
/// `base64` (a function URL encodes non-text bodies so).
pub fn url_event(
    method: &str,
    headers: serde_json::Value,
    body: Option<&str>,
    base64: bool,
    source_ip: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
        "headers": headers,
        "requestContext": {"accountId": "anonymous", "apiId": "local", "domainName": "x.lambda-url.us-east-1.on.aws",
            "requestId": "r", "timeEpoch": 0,
            "http": {"method": method, "path": "/", "protocol": "HTTP/1.1", "sourceIp": source_ip, "userAgent": "Stigg"}},
        "body": body, "isBase64Encoded": base64
    })
}

/// The request the receiver gets for `event`: converted by lambda_http itself, as at run time.
pub fn url_request(event: &serde_json::Value) -> stigg_webhooks::lambda_http::Request {
    stigg_webhooks::receiver::function_url_request(&event.to_string()).expect("a function-URL event lambda_http reads")
}

/// A deadline `d` from now, as Lambda's `Context.deadline` gives it.
pub fn deadline_in(d: Duration) -> SystemTime {
    SystemTime::now() + d
}

/// Creates or overwrites an SSM SecureString parameter on the emulator.
pub async fn put_secure_parameter(name: &str, value: &str) {
    let ssm = aws_sdk_ssm::Client::new(&admin_config_for(&endpoint()).await);
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .expect("put parameter");
}

/// The EMF documents among a process's output lines that carry `metric`.
pub fn emf_documents(lines: &[String], metric: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["_aws"]["CloudWatchMetrics"].is_array() && !v[metric].is_null())
        .collect()
}

/// The sum of `metric` over EMF documents whose `dimension` is `value` (all documents when
/// `dimension` is None). Counters are numbers, distributions `{"Values":[..]}` or arrays.
pub fn emf_sum(lines: &[String], metric: &str, dimension: Option<(&str, &str)>) -> f64 {
    emf_documents(lines, metric)
        .iter()
        .filter(|v| dimension.is_none_or(|(k, want)| v[k] == want))
        .map(|v| match &v[metric] {
            serde_json::Value::Number(n) => n.as_f64().unwrap_or(0.0),
            serde_json::Value::Array(a) => a.iter().filter_map(serde_json::Value::as_f64).sum(),
            other => other["Values"].as_array().map_or(0.0, |a| a.iter().filter_map(serde_json::Value::as_f64).sum()),
        })
        .sum()
}

/// How many values of `metric` each EMF document carries (1 for a number, the length of an
/// array), and the most any metric of any document carries: CloudWatch keeps at most 100 values
/// per metric of a document.
pub fn emf_value_counts(lines: &[String], metric: &str) -> (Vec<usize>, usize) {
    let count = |v: &serde_json::Value| match v {
        serde_json::Value::Number(_) => 1,
        serde_json::Value::Array(a) => a.len(),
        _ => 0,
    };
    let documents: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["_aws"]["CloudWatchMetrics"].is_array())
        .collect();
    let most = documents
        .iter()
        .flat_map(|d| {
            let names = d["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().cloned().unwrap_or_default();
            names.into_iter().map(move |m| count(&d[m["Name"].as_str().unwrap_or_default()]))
        })
        .max()
        .unwrap_or(0);
    let per_document = documents.iter().map(|d| count(&d[metric])).filter(|n| *n > 0).collect();
    (per_document, most)
}

/// Visible plus in-flight messages (moto keeps both counts exact).
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue: &QueueUrl) -> usize {
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue.as_str())
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attrs = out.attributes.unwrap_or_default();
    [QueueAttributeName::ApproximateNumberOfMessages, QueueAttributeName::ApproximateNumberOfMessagesNotVisible]
        .iter()
        .map(|a| attrs.get(a).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0))
        .sum()
}

/// A moto server of this test's own that handles one request at a time, for DynamoDB races:
/// moto's threaded server does not make a conditional write atomic per item as DynamoDB does
/// (see scripts/moto-serial.py). Under `make test-ddb-local` the real engine is used instead.
pub struct SerialMoto {
    child: Option<std::process::Child>,
    pub endpoint: String,
}

impl SerialMoto {
    pub async fn start() -> Self {
        if let Ok(ddb_local) = std::env::var("AWS_ENDPOINT_URL_DYNAMODB") {
            return Self { child: None, endpoint: ddb_local };
        }
        let python = std::env::var("MOTO_PYTHON").expect("MOTO_PYTHON is set by scripts/with-moto.sh");
        let script = std::env::var("MOTO_SERIAL").expect("MOTO_SERIAL is set by scripts/with-moto.sh");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the serial moto");
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child: Some(child), endpoint }
    }
}

impl Drop for SerialMoto {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
