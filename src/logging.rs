//! Log set-up for both functions: the level and format Lambda's advanced logging controls ask
//! for (`AWS_LAMBDA_LOG_LEVEL`, `AWS_LAMBDA_LOG_FORMAT`; `RUST_LOG` when run elsewhere), with a
//! ceiling per crate that no setting can lift.
//!
//! Why a ceiling: at TRACE, `lambda_runtime` logs every raw event (the receiver's carries the
//! `Stigg-Webhooks-Secret` header and the payload), the SDK's orchestrator logs whole requests
//! and responses (SendMessage bodies, the SSM GetParameter answer holding the secrets) and
//! `aws-sigv4` logs what it signs. So whatever the environment says:
//! - this crate logs at most DEBUG (it has no TRACE lines worth a leak risk);
//! - `aws_smithy_runtime` and `aws_config` at most DEBUG (retry and credential decisions; their
//!   DEBUG lines carry error kinds, not bodies);
//! - every other crate at most INFO.
//!
//! `tests/production.rs` (`no_log_line_at_the_most_verbose_setting…`) runs both functions with
//! `AWS_LAMBDA_LOG_LEVEL=TRACE` and `RUST_LOG=trace` and finds no secret and no payload value.
//!
//! JSON lines carry an RFC 3339 `timestamp`: Lambda's log-level filter assigns INFO to a line
//! without a valid one (whatever its `level`), so at `ApplicationLogLevel` WARN or ERROR every
//! WARN and ERROR line would be dropped
//! (<https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html>).

use std::str::FromStr;

use tracing::Metadata;
use tracing_subscriber::filter::{EnvFilter, FilterFn, LevelFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// The most verbose level a target may log at, whatever the configuration says.
pub fn ceiling(target: &str) -> LevelFilter {
    let crate_name = target.split("::").next().unwrap_or(target);
    match crate_name {
        "stigg_webhooks" | "receiver" | "processor" => LevelFilter::DEBUG,
        "aws_smithy_runtime" | "aws_config" => LevelFilter::DEBUG,
        _ => LevelFilter::INFO,
    }
}

fn allowed(meta: &Metadata<'_>) -> bool {
    ceiling(meta.target()) >= *meta.level()
}

/// The application log level in force: `AWS_LAMBDA_LOG_LEVEL` (set by Lambda from the
/// function's `ApplicationLogLevel`), else `RUST_LOG` when it is a bare level, else INFO.
/// Lambda's FATAL is ERROR here (tracing has no FATAL).
pub fn configured_level(lambda_level: Option<&str>, rust_log: Option<&str>) -> LevelFilter {
    let parse = |s: &str| {
        let s = s.trim();
        if s.eq_ignore_ascii_case("fatal") { Some(LevelFilter::ERROR) } else { LevelFilter::from_str(s).ok() }
    };
    lambda_level.and_then(parse).or_else(|| rust_log.and_then(parse)).unwrap_or(LevelFilter::INFO)
}

/// Installs the global subscriber. Returns the configured level, which the metrics need
/// (see [`crate::metrics::init`]).
pub fn init() -> LevelFilter {
    let lambda_level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok();
    let rust_log = std::env::var("RUST_LOG").ok();
    let level = configured_level(lambda_level.as_deref(), rust_log.as_deref());
    // Lambda's level wins over RUST_LOG; RUST_LOG's per-target directives apply only without it.
    let directives = match (&lambda_level, &rust_log) {
        (None, Some(directives)) => directives.clone(),
        _ => String::new(),
    };
    let env_filter = EnvFilter::builder().with_default_directive(level.into()).parse_lossy(directives);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let ceiling = FilterFn::new(allowed);
    let base = fmt::layer().with_target(false);
    // JSON (Lambda): tracing's default timer writes RFC 3339 UTC under "timestamp". Text (a
    // terminal): no time, the reader has one.
    let layer = if json { base.json().boxed() } else { base.without_time().boxed() };
    let _ = tracing_subscriber::registry().with(layer.with_filter(env_filter).with_filter(ceiling)).try_init();
    level
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_dependency_can_log_at_trace_and_the_leaky_ones_not_even_at_debug() {
        for target in
            ["lambda_runtime::layers::api_response", "aws_sigv4::http_request::sign", "hyper_util", "h2", "rustls"]
        {
            assert_eq!(ceiling(target), LevelFilter::INFO, "{target}");
        }
        for target in ["aws_smithy_runtime::client::orchestrator", "aws_config", "stigg_webhooks::receiver"] {
            assert_eq!(ceiling(target), LevelFilter::DEBUG, "{target}");
        }
    }

    #[test]
    fn lambdas_level_wins_and_fatal_means_error() {
        assert_eq!(configured_level(Some("WARN"), Some("debug")), LevelFilter::WARN);
        assert_eq!(configured_level(Some("FATAL"), None), LevelFilter::ERROR);
        assert_eq!(configured_level(None, Some("debug")), LevelFilter::DEBUG);
        assert_eq!(configured_level(None, Some("aws_smithy_runtime=trace")), LevelFilter::INFO);
        assert_eq!(configured_level(None, None), LevelFilter::INFO);
    }
}
