//! The receiver's one log line per request: the INFO line a reader searches and, for every
//! outcome but `accepted`, the EMF document the alarms and the dashboard read (`Requests` by
//! `Function` and `Outcome`), as one JSON event.
//!
//! Two shapes, by what each outcome needs:
//! - **accepted** (nearly every webhook): `webhook accepted` with the event's key, type and trace
//!   id. No metric: the function URL's own metrics count accepted requests, free (see
//!   [`ReceiverOutcome::counted`]). No latency, and no request id where an instance runs one
//!   invocation at a time (standard Lambda, this template): there the invocation's lines come
//!   between its `platform.start` and `platform.report` lines in the log stream, which carry both
//!   (<https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html>).
//!   Where invocations run concurrently (Lambda Managed Instances), lines interleave and the line
//!   carries `requestId`.
//! - **every other outcome** (refusals, duplicates, conflicts, failures: what an alarm sends someone
//!   to read): `webhook handled` with the same fields, plus the `Outcome`, Lambda's request id (the
//!   join to the invocation's WARN and ERROR lines), the latency, and the metric.
//!
//! Why one line: logs are most of a webhook's cost after DynamoDB and SQS. The same facts once
//! took three lines (the INFO line, and one EMF document per dimension set): 922 bytes per
//! accepted event, then 441 as one line with the metric, now about 200 (BENCHMARKS.md: the bench's
//! ids are shorter than 36 characters). The EMF specification
//! allows it: members that no metric directive names are kept as log fields
//! (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>),
//! and the dimension value `Outcome` is the log's outcome field at once. `Requests` keeps its name,
//! dimensions and (absent) unit, so the alarms read it as before.
//!
//! The line is stamped like every EMF line (see the module above): a `level` Lambda's filter lets
//! through and an RFC 3339 `timestamp`. Where the filter is set above INFO, the INFO fields are
//! left out and the line is the metrics alone, so the setting still hides the per-request log
//! (and an accepted request, with no metric, writes nothing). With Lambda's text log format (a
//! terminal, `make dev`), the INFO line stays a `tracing` line and the EMF document, where there
//! is one, is written alone after it.

use serde::Serialize;

use super::{EMF, ReceiverOutcome, rfc3339};

/// What one request's line says.
/// (`status` goes to the `tracing` line of the text format only: in JSON, `Outcome` says it.)
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    pub outcome: ReceiverOutcome,
    pub status: u16,
    pub latency_ms: f64,
    pub idempotency_key: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    /// Lambda's request id, on the lines of counted outcomes: what joins the line to the
    /// invocation's WARN and ERROR lines (their span carries it) and its REPORT line.
    pub request_id: Option<&'a str>,
}

const MESSAGE: &str = "webhook handled";
const ACCEPTED: &str = "webhook accepted";

/// Writes `line`: one JSON event (Lambda's JSON format), or a `tracing` INFO line and an EMF
/// document (text format), or only the INFO line where no collector is installed (tests, tools).
pub fn receiver_request(line: &RequestLine<'_>) {
    let Some(emf) = EMF.get() else {
        log(line);
        return;
    };
    let info = tracing::enabled!(tracing::Level::INFO);
    if !emf.json {
        log(line);
    }
    let mut out = Vec::with_capacity(512);
    let written = if line.outcome.counted() {
        serde_json::to_writer(&mut out, &document(line, &emf.namespace, emf.function, emf.level, emf.json && info))
    } else if emf.json && info {
        serde_json::to_writer(&mut out, &accepted_line(line, emf.concurrent))
    } else {
        return;
    };
    out.push(b'\n');
    if let Err(e) = written.map_err(std::io::Error::from).and_then(|()| (emf.output)(&out)) {
        tracing::warn!(error = %e, "metrics write failed");
    }
}

fn log(line: &RequestLine<'_>) {
    let message = if line.outcome.counted() { MESSAGE } else { ACCEPTED };
    tracing::info!(
        idempotency_key = line.idempotency_key,
        event_type = line.event_type,
        trace_id = line.trace_id,
        outcome = line.outcome.as_str(),
        status = line.status,
        latency_ms = line.latency_ms,
        "{message}"
    );
}

fn accepted_line<'a>(line: &RequestLine<'a>, concurrent: bool) -> LogFields<'a> {
    LogFields {
        timestamp: rfc3339(std::time::SystemTime::now()),
        level: "INFO",
        message: Some(ACCEPTED),
        idempotency_key: line.idempotency_key,
        event_type: line.event_type,
        trace_id: line.trace_id,
        request_id: line.request_id.filter(|_| concurrent),
        latency_ms: None,
    }
}

fn document<'a>(
    line: &RequestLine<'a>,
    namespace: &'a str,
    function: &'a str,
    level: &'static str,
    with_fields: bool,
) -> Document<'a> {
    let now = std::time::SystemTime::now();
    let millis = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let field = |v: Option<&'a str>| v.filter(|_| with_fields);
    Document {
        fields: LogFields {
            timestamp: rfc3339(now),
            level,
            message: with_fields.then_some(MESSAGE),
            idempotency_key: field(line.idempotency_key),
            event_type: field(line.event_type),
            trace_id: field(line.trace_id),
            request_id: field(line.request_id),
            // Microseconds are plenty; the full f64 would be ~10 more bytes a line.
            latency_ms: with_fields.then_some((line.latency_ms * 1000.0).round() / 1000.0),
        },
        function,
        outcome: line.outcome.as_str(),
        requests: 1,
        aws: Aws {
            timestamp: millis,
            cloudwatch_metrics: [Directive {
                namespace,
                dimensions: [&["Function", "Outcome"]],
                metrics: [Metric { name: "Requests" }],
            }],
        },
    }
}

/// A request line's log fields: the accepted request's whole line, the first members of every
/// other outcome's [`Document`].
#[derive(Serialize)]
struct LogFields<'a> {
    timestamp: String,
    level: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    fields: LogFields<'a>,
    #[serde(rename = "Function")]
    function: &'a str,
    #[serde(rename = "Outcome")]
    outcome: &'static str,
    #[serde(rename = "Requests")]
    requests: u8,
    #[serde(rename = "_aws")]
    aws: Aws<'a>,
}

#[derive(Serialize)]
struct Aws<'a> {
    #[serde(rename = "Timestamp")]
    timestamp: u64,
    #[serde(rename = "CloudWatchMetrics")]
    cloudwatch_metrics: [Directive<'a>; 1],
}

#[derive(Serialize)]
struct Directive<'a> {
    #[serde(rename = "Namespace")]
    namespace: &'a str,
    #[serde(rename = "Dimensions")]
    dimensions: [&'static [&'static str]; 1],
    #[serde(rename = "Metrics")]
    metrics: [Metric; 1],
}

#[derive(Serialize)]
struct Metric {
    #[serde(rename = "Name")]
    name: &'static str,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn accepted() -> RequestLine<'static> {
        RequestLine {
            outcome: ReceiverOutcome::Accepted,
            status: 202,
            latency_ms: 21.123_456_7,
            idempotency_key: Some("a6ce7a2e-5b37-4e4b-9a2f-0c1f3c4d5e6f"),
            event_type: Some("subscription.created"),
            trace_id: Some("549a2bd5-2c0b-4a51-8b4e-2f1e8d7c6b5a"),
            request_id: Some("8f507cfc-example-request-id-0123456789"),
        }
    }

    /// A metric as CloudWatch extracts it: name, dimensions (name, value), value.
    type Extracted = (String, Vec<(String, String)>, Value);

    /// Every metric a directive names, with its dimension values, read as CloudWatch would.
    fn extracted(doc: &Value) -> Vec<Extracted> {
        let mut out = Vec::new();
        for directive in doc["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
            assert_eq!(directive["Namespace"], "StiggWebhooks");
            for set in directive["Dimensions"].as_array().unwrap() {
                let dims: Vec<(String, String)> = set
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| {
                        let d = d.as_str().unwrap();
                        (d.to_owned(), doc[d].as_str().expect("a dimension's value is a root string").to_owned())
                    })
                    .collect();
                for metric in directive["Metrics"].as_array().unwrap() {
                    let name = metric["Name"].as_str().unwrap();
                    out.push((name.to_owned(), dims.clone(), doc[name].clone()));
                }
            }
        }
        out
    }

    fn duplicate() -> RequestLine<'static> {
        RequestLine { outcome: ReceiverOutcome::Duplicate, status: 200, ..accepted() }
    }

    #[test]
    fn an_accepted_request_is_one_short_line_with_the_events_ids_and_no_metric() {
        let text = serde_json::to_string(&accepted_line(&accepted(), false)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["message"], ACCEPTED);
        assert_eq!(v["level"], "INFO");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(v["idempotency_key"], "a6ce7a2e-5b37-4e4b-9a2f-0c1f3c4d5e6f");
        assert_eq!(v["event_type"], "subscription.created");
        assert_eq!(v["trace_id"], "549a2bd5-2c0b-4a51-8b4e-2f1e8d7c6b5a");
        for field in ["_aws", "Requests", "Function", "Outcome", "requestId", "latency_ms"] {
            assert!(v.get(field).is_none(), "{field} is not on the accepted line");
        }
        // What the line costs (CloudWatch Logs bills ingested bytes), with 36-character ids
        // throughout: 512 bytes as one line with the metric (922 as three), 227 now.
        assert!(text.len() <= 230, "{} bytes: {text}", text.len());
    }

    #[test]
    fn where_invocations_run_concurrently_the_accepted_line_carries_the_request_id() {
        let v = serde_json::to_value(accepted_line(&accepted(), true)).unwrap();
        assert_eq!(v["requestId"], "8f507cfc-example-request-id-0123456789");
        for (setting, concurrent) in
            [(None, false), (Some("1"), false), (Some("0"), false), (Some("x"), false), (Some("8"), true)]
        {
            assert_eq!(crate::metrics::concurrent_invocations(setting), concurrent, "{setting:?}");
        }
    }

    #[test]
    fn every_outcome_but_accepted_is_counted() {
        use ReceiverOutcome as O;
        let all = [
            O::Accepted,
            O::Duplicate,
            O::MethodNotAllowed,
            O::Forbidden,
            O::Unauthorized,
            O::TooLarge,
            O::Invalid,
            O::Conflict,
            O::DependencyFailure,
        ];
        let uncounted: Vec<&str> = all.iter().filter(|o| !o.counted()).map(|o| o.as_str()).collect();
        // The dashboard derives accepted from the function URL's 2XX less the duplicates, so the
        // duplicates must stay counted.
        assert_eq!(uncounted, ["accepted"]);
    }

    #[test]
    fn one_line_carries_the_log_fields_and_the_metric_the_alarms_read() {
        let doc = document(&duplicate(), "StiggWebhooks", "receiver", "INFO", true);
        let text = serde_json::to_string(&doc).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let dims = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        assert_eq!(
            extracted(&v),
            vec![("Requests".to_owned(), dims(&[("Function", "receiver"), ("Outcome", "duplicate")]), Value::from(1))]
        );
        assert_eq!(v["message"], MESSAGE);
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["latency_ms"], 21.123);
        assert_eq!(v["requestId"], "8f507cfc-example-request-id-0123456789");
        assert_eq!(v["idempotency_key"], "a6ce7a2e-5b37-4e4b-9a2f-0c1f3c4d5e6f");
        assert_eq!(v["event_type"], "subscription.created");
        assert!(v["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        // What a line costs (CloudWatch Logs bills ingested bytes): 922 bytes in three lines before;
        // this one, with 36-character ids throughout, 512.
        assert!(text.len() <= 520, "{} bytes: {text}", text.len());
    }

    #[test]
    fn above_info_the_line_is_the_metrics_alone() {
        let v: Value =
            serde_json::to_value(document(&duplicate(), "StiggWebhooks", "receiver", "WARN", false)).unwrap();
        assert_eq!(v["level"], "WARN");
        for field in ["message", "idempotency_key", "event_type", "trace_id", "requestId", "latency_ms"] {
            assert!(v.get(field).is_none(), "{field} is an INFO field");
        }
        assert_eq!(extracted(&v).len(), 1);
    }

    #[test]
    fn absent_fields_are_left_out_not_null() {
        let line =
            RequestLine { idempotency_key: None, event_type: None, trace_id: None, request_id: None, ..duplicate() };
        let v: Value = serde_json::to_value(document(&line, "Ns", "receiver", "INFO", true)).unwrap();
        assert!(v.get("idempotency_key").is_none() && v.get("trace_id").is_none());
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Ns");
    }
}
