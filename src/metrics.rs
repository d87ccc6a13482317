//! Metrics in CloudWatch Embedded Metric Format: recorded through the `metrics` facade and
//! written to stdout as one EMF document after each invocation (no extra API calls). Without an
//! installed collector (tests, local tools) every call here is a no-op.

use std::sync::OnceLock;

use metrics_cloudwatch_embedded::Collector;

pub const NAMESPACE: &str = "StiggWebhooks";

static COLLECTOR: OnceLock<&'static Collector> = OnceLock::new();

/// Installs the EMF collector for this process; `function` becomes the `Function` dimension.
pub fn init(function: &'static str) {
    let namespace = std::env::var("METRICS_NAMESPACE").unwrap_or_else(|_| NAMESPACE.to_owned());
    match metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(namespace)
        .with_dimension("Function", function)
        .init()
    {
        Ok(collector) => {
            let _ = COLLECTOR.set(collector);
        }
        Err(e) => tracing::warn!(error = %e, "metrics disabled"),
    }
}

/// Writes what was recorded since the last flush (call once per invocation).
pub fn flush() {
    if let Some(collector) = COLLECTOR.get()
        && let Err(e) = collector.flush(std::io::stdout())
    {
        tracing::warn!(error = %e, "metrics flush failed");
    }
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

pub fn receiver(outcome: ReceiverOutcome, latency_ms: f64) {
    metrics::counter!("Requests", "Outcome" => outcome.as_str()).increment(1);
    metrics::histogram!("ReceiverLatency").record(latency_ms);
}

pub fn processor(outcome: ProcessorOutcome, latency_ms: f64) {
    metrics::counter!("Records", "Outcome" => outcome.as_str()).increment(1);
    if outcome == ProcessorOutcome::Processed {
        metrics::histogram!("ProcessingLatency").record(latency_ms);
    }
}
