//! What the processors are fed: SQS events as Lambda's event source mapping sends them, batches
//! of ten records, each body a Stigg event of `events/stigg/` (in turn) with a fresh `messageId`
//! and the message attributes our receiver queues it with. In a failing batch one record (its
//! place moving from batch to batch) is a Stigg event cut short, not JSON: both processors must
//! report it, and only it, in `batchItemFailures`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use stigg_webhooks::event::WebhookPayload;
use stigg_webhooks::receiver::queue_attributes;

/// Records per invocation: the event source mapping's default batch size.
pub const RECORDS: usize = 10;
const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:stigg-events";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Scenario {
    Happy,
    /// One record in ten not JSON.
    Failing,
}

impl Scenario {
    pub const ALL: [Scenario; 2] = [Scenario::Happy, Scenario::Failing];

    pub fn label(self) -> &'static str {
        match self {
            Scenario::Happy => "happy path",
            Scenario::Failing => "one in ten failing",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Scenario::Happy => "happy",
            Scenario::Failing => "failing",
        }
    }
}

/// One invocation's event and what its answer must say.
pub struct Batch {
    pub event: Value,
    /// The `messageId`s `batchItemFailures` must name, and no others.
    pub failing: BTreeSet<String>,
    /// The idempotency keys of the records that must be processed.
    pub keys: Vec<String>,
}

/// The Stigg events of `events/stigg/`, used in turn.
pub struct Feed {
    templates: Vec<Value>,
}

impl Feed {
    pub fn load(dir: &Path) -> Self {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        let templates: Vec<Value> = paths
            .iter()
            .map(|p| {
                serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap_or_else(|e| panic!("{p:?}: {e}"))
            })
            .collect();
        assert!(!templates.is_empty(), "no Stigg events in {}", dir.display());
        Self { templates }
    }

    /// Batch `i` of a pass: keys `{tag}-{i}-{k}`, fresh SQS message ids.
    pub fn batch(&self, tag: &str, i: usize, scenario: Scenario) -> Batch {
        let failing_at = (scenario == Scenario::Failing).then_some(i % RECORDS);
        let sent_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis().to_string();
        let mut records = Vec::with_capacity(RECORDS);
        let (mut failing, mut keys) = (BTreeSet::new(), Vec::new());
        for k in 0..RECORDS {
            let mut event = self.templates[(i * RECORDS + k) % self.templates.len()].clone();
            let key = format!("{tag}-{i}-{k}");
            event["messageId"] = json!(key);
            let body = event.to_string();
            let message_id = uuid::Uuid::new_v4().to_string();
            let (body, attributes) = if failing_at == Some(k) {
                failing.insert(message_id.clone());
                // Not what our receiver would queue (it refuses a body that is not JSON): poison
                // from elsewhere, so no attributes either.
                (cut_short(&body).to_owned(), Map::new())
            } else {
                let payload = WebhookPayload::parse(body.as_bytes()).expect("the Stigg examples are valid events");
                assert_eq!(payload.key.to_string(), key);
                keys.push(key);
                (body, message_attributes(&payload))
            };
            records.push(json!({
                "messageId": message_id,
                "receiptHandle": format!("AQEB{}", uuid::Uuid::new_v4().simple()),
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": sent_ms,
                    "SenderId": "AROAEXAMPLE:receiver",
                    "ApproximateFirstReceiveTimestamp": sent_ms,
                },
                "messageAttributes": attributes,
                "eventSource": "aws:sqs",
                "eventSourceARN": QUEUE_ARN,
                "awsRegion": "us-east-1",
            }));
        }
        Batch { event: json!({ "Records": records }), failing, keys }
    }
}

/// The attributes as the event source mapping renders what `queue_attributes` sent.
fn message_attributes(payload: &WebhookPayload) -> Map<String, Value> {
    queue_attributes(payload, SystemTime::now())
        .into_iter()
        .map(|(name, value)| {
            let attribute =
                json!({"stringValue": value, "stringListValues": [], "binaryListValues": [], "dataType": "String"});
            (name.to_owned(), attribute)
        })
        .collect()
}

/// The first half of `body` (on a character boundary): JSON cut off mid-way.
fn cut_short(body: &str) -> &str {
    let mut at = body.len() / 2;
    while !body.is_char_boundary(at) {
        at -= 1;
    }
    &body[..at]
}
