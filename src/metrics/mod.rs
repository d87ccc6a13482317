//! Metrics in CloudWatch Embedded Metric Format: recorded through the `metrics` facade and
//! written to stdout as one EMF document after each invocation (no extra API calls). Without an
//! installed collector (tests, local tools) every call here is a no-op.
//!
//! Every EMF line carries a `level` and an RFC 3339 `timestamp`. Lambda's log-level filtering
//! (JSON log format) treats a JSON line without a valid `level`, or without a valid RFC 3339
//! `timestamp`, as INFO, so at `ApplicationLogLevel` WARN or ERROR such an EMF line is dropped
//! before CloudWatch Logs can extract the metric and every metric alarm goes quiet. The lines are
//! therefore stamped with the configured level itself (INFO at most verbose), the least that
//! still passes the filter, and the time of the flush:
//! <https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html>.
//!
//! An EMF document carries at most [`EMF_MAX_VALUES`] values per metric, and the collector keeps
//! at most that many per distribution between flushes, dropping the rest. Every distribution
//! value therefore goes through [`record_distribution`], which writes the documents so far
//! before a distribution could hold more: a drain that records hundreds of values writes several
//! documents, and none is dropped.

mod request_line;

use std::sync::{Mutex, OnceLock, PoisonError};

use metrics_cloudwatch_embedded::Collector;

pub use request_line::{RequestLine, receiver_request};

pub const NAMESPACE: &str = "StiggWebhooks";

/// Values one EMF document may carry for one metric: "Numeric array metric targets MUST NOT
/// have more than 100 members"
/// (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html#CloudWatch_Embedded_Metric_Format_Specification_structure_target>).
/// `metrics_cloudwatch_embedded` 0.10 holds each distribution in a channel of this size and
/// drops what does not fit ("more than 100 unflushed values?").
pub const EMF_MAX_VALUES: usize = 100;

/// Where the EMF documents go: each document, one line, in one write.
type Output = fn(&[u8]) -> std::io::Result<()>;

struct Emf {
    collector: &'static Collector,
    output: Output,
    namespace: String,
    function: &'static str,
    /// [`emf_level`] of this process's `AWS_LAMBDA_LOG_LEVEL`.
    level: &'static str,
    /// Lambda's JSON log format: a request's log line and its metrics can be one line.
    json: bool,
    /// More than one invocation at a time in this process ([`concurrent_invocations`]).
    concurrent: bool,
}

/// Whether Lambda runs several invocations at once in this process (Lambda Managed Instances):
/// `AWS_LAMBDA_MAX_CONCURRENCY` above 1, read as `lambda_runtime`'s `run_concurrent` reads it.
/// Then the invocations' lines interleave in one log stream, and only a request id joins a line
/// to its invocation
/// (<https://docs.aws.amazon.com/lambda/latest/dg/lambda-managed-instances-python-runtime.html>).
pub fn concurrent_invocations(max_concurrency: Option<&str>) -> bool {
    max_concurrency.and_then(|v| v.parse::<u32>().ok()).is_some_and(|n| n > 1)
}

static EMF: OnceLock<Emf> = OnceLock::new();

/// Distribution values recorded since the last flush, all distributions together (so no single
/// one can pass [`EMF_MAX_VALUES`]); also serializes the flushes.
static UNFLUSHED: Mutex<usize> = Mutex::new(0);

/// The `level` an EMF line needs to pass Lambda's filter at `AWS_LAMBDA_LOG_LEVEL`.
pub fn emf_level(lambda_log_level: Option<&str>) -> &'static str {
    match lambda_log_level.map(|l| l.trim().to_ascii_uppercase()).as_deref() {
        Some("WARN") => "WARN",
        Some("ERROR") => "ERROR",
        Some("FATAL") => "FATAL",
        _ => "INFO",
    }
}

/// Installs the EMF collector for this process; `function` becomes the `Function` dimension.
pub fn init(function: &'static str) {
    install(function, |line| {
        use std::io::Write as _;
        std::io::stdout().lock().write_all(line)
    });
}

fn install(function: &'static str, output: Output) {
    let namespace = std::env::var("METRICS_NAMESPACE").unwrap_or_else(|_| NAMESPACE.to_owned());
    match metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(namespace.clone())
        .with_dimension("Function", function)
        .init()
    {
        Ok(collector) => {
            let level = emf_level(std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref());
            collector.set_property("level", level);
            let json = crate::logging::json_format();
            let concurrent = concurrent_invocations(std::env::var("AWS_LAMBDA_MAX_CONCURRENCY").ok().as_deref());
            let _ = EMF.set(Emf { collector, output, namespace, function, level, json, concurrent });
        }
        Err(e) => tracing::warn!(error = %e, "metrics disabled"),
    }
}

/// Writes what was recorded since the last flush (call once per invocation; distributions
/// may flush earlier, see [`record_distribution`]).
pub fn flush() {
    let mut unflushed = UNFLUSHED.lock().unwrap_or_else(PoisonError::into_inner);
    write_documents();
    *unflushed = 0;
}

/// Records one value of a distribution (`metrics::histogram!`), first writing the documents so
/// far when [`EMF_MAX_VALUES`] values await a flush.
pub fn record_distribution(histogram: metrics::Histogram, value: f64) {
    let mut unflushed = UNFLUSHED.lock().unwrap_or_else(PoisonError::into_inner);
    if *unflushed >= EMF_MAX_VALUES {
        write_documents();
        *unflushed = 0;
    }
    histogram.record(value);
    *unflushed += 1;
}

/// One EMF document per dimension set (the collector's `flush`), under [`UNFLUSHED`]'s lock.
///
/// The documents are serialized into a buffer first: straight onto `Stdout`, each of
/// serde_json's many small writes took stdout's lock. Each document still reaches stdout as a
/// write of its own, one line each, as before: an EMF document must be a log event by itself.
fn write_documents() {
    if let Some(emf) = EMF.get() {
        emf.collector.set_property("timestamp", rfc3339(std::time::SystemTime::now()));
        let mut documents = Vec::with_capacity(1024);
        let written = emf
            .collector
            .flush(&mut documents)
            .and_then(|()| documents.split_inclusive(|b| *b == b'\n').try_for_each(emf.output));
        if let Err(e) = written {
            tracing::warn!(error = %e, "metrics flush failed");
        }
    }
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-12-01T19:04:05.678Z`), the form Lambda's log
/// filter reads. Days to civil date: Howard Hinnant's `civil_from_days`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (since.as_secs() as i64, since.subsec_millis());
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// How the receiver answered one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverOutcome {
    Accepted,
    Duplicate,
    MethodNotAllowed,
    Forbidden,
    Unauthorized,
    TooLarge,
    Invalid,
    Conflict,
    DependencyFailure,
}

impl ReceiverOutcome {
    /// Whether the request's line carries the `Requests` metric: every outcome but `accepted`.
    /// An accepted request is a 2XX answer that is not a duplicate, which the function URL's own
    /// metrics already count, free (`UrlRequestCount` less `Url4xxCount`, `Url5xxCount` and the
    /// `duplicate` requests: the dashboard's math,
    /// <https://docs.aws.amazon.com/lambda/latest/dg/urls-monitoring.html>); no alarm reads it;
    /// and it is the one outcome of nearly every webhook, so its EMF document was 40 % of the
    /// receiver's log bytes.
    pub fn counted(self) -> bool {
        self != Self::Accepted
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Forbidden => "forbidden",
            Self::Unauthorized => "unauthorized",
            Self::TooLarge => "too_large",
            Self::Invalid => "invalid",
            Self::Conflict => "conflict",
            Self::DependencyFailure => "dependency_failure",
        }
    }
}

/// How the processor finished one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessorOutcome {
    Processed,
    Duplicate,
    RetryableFailure,
    PermanentFailure,
}

impl ProcessorOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Duplicate => "duplicate",
            Self::RetryableFailure => "retryable_failure",
            Self::PermanentFailure => "permanent_failure",
        }
    }
}

/// How a re-read of the secret parameter ended (`SecretRefreshes`, dimension `Outcome`).
pub fn secret_refresh(outcome: &'static str) {
    metrics::counter!("SecretRefreshes", "Outcome" => outcome).increment(1);
}

/// One Edge API credentials request of the bridge (`EdgeCredentialFetches`, dimension
/// `Outcome`: fetched, retried, refused, failed).
pub fn edge_credentials(outcome: &'static str) {
    metrics::counter!("EdgeCredentialFetches", "Outcome" => outcome).increment(1);
}

/// Messages the bridge handled (`BridgeMessages`, dimension `Outcome`: forwarded, unparseable
/// (forwarded as-is), forward_failed, deferred (no time left to forward and delete them: left in
/// Stigg's queue), delete_failed).
pub fn bridge_messages(outcome: &'static str, n: usize) {
    metrics::counter!("BridgeMessages", "Outcome" => outcome).increment(n as u64);
}

/// Stigg's queue rejected the Edge API's credentials before their expiration
/// (`BridgeCredentialsRejected`, dimension `Outcome`: renewed (dropped and fetched anew, the call
/// made again), failed (rejected again after that: the invocation fails)).
pub fn bridge_credentials_rejected(outcome: &'static str) {
    metrics::counter!("BridgeCredentialsRejected", "Outcome" => outcome).increment(1);
}

/// One long poll of Stigg's queue (`BridgePolls`, dimension `Outcome`: messages, empty).
pub fn bridge_poll(got_messages: bool) {
    metrics::counter!("BridgePolls", "Outcome" => if got_messages { "messages" } else { "empty" }).increment(1);
}

/// How long a forwarded message had waited in Stigg's queue (`BridgeMessageAge`, ms).
pub fn bridge_message_age(ms: f64) {
    record_distribution(metrics::histogram!("BridgeMessageAge"), ms);
}

/// One status-page read (`StiggStatusProbes`, dimension `Outcome`: ok, failed) and, on failure,
/// `StiggStatusProbeFailures`.
pub fn status_probe(ok: bool) {
    metrics::counter!("StiggStatusProbes", "Outcome" => if ok { "ok" } else { "failed" }).increment(1);
    if !ok {
        metrics::counter!("StiggStatusProbeFailures").increment(1);
    }
}

/// Comparisons of one drift-check run by outcome (`MirrorDrift`, dimension `Outcome`: in_sync,
/// behind, ahead, missing, not_found, failed). Zero counts are not written (the collector skips
/// them): an alarm on an outcome treats missing data as none.
pub fn mirror_drift(outcome: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!("MirrorDrift", "Outcome" => outcome).increment(n);
    }
}

/// Comparisons of one drift-check run in all (`MirrorDriftChecked`).
pub fn mirror_drift_checked(n: u64) {
    metrics::counter!("MirrorDriftChecked").increment(n);
}

/// One drift-check run (`MirrorDriftRuns`, dimension `Outcome`: completed, failed (nothing
/// compared: the listing, the cursor, or every comparison failed), skipped (another run held the
/// lease)). Its absence for hours is the "not running" alarm.
pub fn mirror_drift_run(outcome: &'static str) {
    metrics::counter!("MirrorDriftRuns", "Outcome" => outcome).increment(1);
}

pub fn processor(outcome: ProcessorOutcome, latency_ms: f64) {
    metrics::counter!("Records", "Outcome" => outcome.as_str()).increment(1);
    if outcome == ProcessorOutcome::Processed {
        record_distribution(metrics::histogram!("ProcessingLatency"), latency_ms);
    }
}

/// One handler's failure on one event (`HandlerFailures`, dimension `Kind`: retryable,
/// permanent). A record's outcome counts once in `Records`; this counts each failing handler.
pub fn handler_failure(permanent: bool) {
    metrics::counter!("HandlerFailures", "Kind" => if permanent { "permanent" } else { "retryable" }).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    static CAPTURED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

    fn capture(line: &[u8]) -> std::io::Result<()> {
        CAPTURED.lock().unwrap().extend_from_slice(line);
        Ok(())
    }

    /// The values of `metric` in each captured document (the other tests of this process may
    /// record their own metrics meanwhile: only `metric`'s are counted).
    fn captured_values(metric: &str) -> Vec<Vec<f64>> {
        let text = String::from_utf8(std::mem::take(&mut *CAPTURED.lock().unwrap())).unwrap();
        let mut per_document = Vec::new();
        for line in text.lines() {
            let doc: Value = serde_json::from_str(line).expect("one JSON document per line");
            for definition in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap() {
                let name = definition["Name"].as_str().unwrap();
                if let Some(values) = doc[name].as_array() {
                    assert!(values.len() <= EMF_MAX_VALUES, "{name}: {} values in one document", values.len());
                }
            }
            match &doc[metric] {
                Value::Array(values) => per_document.push(values.iter().map(|v| v.as_f64().unwrap()).collect()),
                Value::Number(n) => per_document.push(vec![n.as_f64().unwrap()]),
                _ => {}
            }
        }
        per_document
    }

    /// The only test that installs the collector (a process has one global recorder).
    #[test]
    fn five_hundred_values_of_a_distribution_all_reach_cloudwatch_in_documents_of_at_most_100() {
        install("metrics-test", capture);
        assert!(EMF.get().is_some());

        // The crate alone: past 100 unflushed values, the rest is dropped. (Under the lock, so
        // no other test's value makes this flush early.)
        {
            let mut unflushed = UNFLUSHED.lock().unwrap();
            for i in 0..150 {
                metrics::histogram!("EmfCrateAlone").record(f64::from(i));
            }
            write_documents();
            *unflushed = 0;
        }
        let alone = captured_values("EmfCrateAlone");
        assert_eq!(alone.iter().map(Vec::len).sum::<usize>(), EMF_MAX_VALUES, "{alone:?}");

        for i in 0..500 {
            record_distribution(metrics::histogram!("EmfCapacityProbe"), f64::from(i));
        }
        flush();
        let documents = captured_values("EmfCapacityProbe");
        assert!(documents.len() >= 5, "{} documents", documents.len());
        assert!(documents.iter().all(|values| values.len() <= EMF_MAX_VALUES));
        let mut all: Vec<f64> = documents.into_iter().flatten().collect();
        all.sort_by(f64::total_cmp);
        assert_eq!(all, (0..500).map(f64::from).collect::<Vec<_>>(), "every value, once");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_982_645)), "2026-11-29T20:04:05.000Z");
    }

    #[test]
    fn emf_lines_pass_every_level_lambda_can_filter_at() {
        assert_eq!(emf_level(None), "INFO");
        assert_eq!(emf_level(Some("TRACE")), "INFO");
        assert_eq!(emf_level(Some("debug")), "INFO");
        assert_eq!(emf_level(Some("INFO")), "INFO");
        assert_eq!(emf_level(Some("WARN")), "WARN");
        assert_eq!(emf_level(Some("ERROR")), "ERROR");
        assert_eq!(emf_level(Some("FATAL")), "FATAL");
    }
}
