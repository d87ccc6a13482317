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

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Crates (log target prefixes) allowed up to DEBUG; every other target stops at INFO.
const DEBUG_CEILING: &[&str] = &["stigg_webhooks", "receiver", "processor", "aws_smithy_runtime", "aws_config"];

/// The most verbose level a target may log at, whatever the configuration says.
pub fn ceiling(target: &str) -> LevelFilter {
    let crate_name = target.split("::").next().unwrap_or(target);
    if DEBUG_CEILING.contains(&crate_name) { LevelFilter::DEBUG } else { LevelFilter::INFO }
}

/// The application log level in force: `AWS_LAMBDA_LOG_LEVEL` (set by Lambda from the
/// function's `ApplicationLogLevel`), else `RUST_LOG` when it is a bare level, else INFO.
/// Lambda's FATAL is ERROR here (tracing has no FATAL).
pub fn configured_level(lambda_level: Option<&str>, rust_log: Option<&str>) -> LevelFilter {
    lambda_level.and_then(parse_level).or_else(|| rust_log.and_then(parse_level)).unwrap_or(LevelFilter::INFO)
}

fn parse_level(s: &str) -> Option<LevelFilter> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("fatal") { Some(LevelFilter::ERROR) } else { LevelFilter::from_str(s).ok() }
}

/// The filter directives in force, every one clamped to its target's [`ceiling`]: the configured
/// level for everything (at most INFO, at most DEBUG for the crates that may), plus, when Lambda
/// sets no level, `RUST_LOG`'s own `target=level` directives, clamped the same way (directives
/// with span filters are dropped). One global `Targets` filter built from them keeps tracing's
/// static fast path: a disabled `debug!` in the SDK costs a branch, not a dispatch.
pub fn directives(lambda_level: Option<&str>, rust_log: Option<&str>) -> String {
    let name = |l: LevelFilter| l.to_string().to_lowercase();
    let level = configured_level(lambda_level, rust_log);
    let mut out = vec![name(level.min(LevelFilter::INFO))];
    out.extend(DEBUG_CEILING.iter().map(|t| format!("{t}={}", name(level.min(LevelFilter::DEBUG)))));
    if lambda_level.and_then(parse_level).is_none()
        && let Some(rust_log) = rust_log
    {
        for directive in rust_log.split(',').map(str::trim) {
            let Some((target, level)) = directive.split_once('=') else { continue };
            let (target, Some(level)) = (target.trim(), parse_level(level)) else { continue };
            let valid = !target.is_empty() && target.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            if valid {
                out.push(format!("{target}={}", name(level.min(ceiling(target)))));
            }
        }
    }
    out.join(",")
}

/// Whether Lambda asks for JSON lines (`AWS_LAMBDA_LOG_FORMAT=JSON`, the template's setting).
pub fn json_format() -> bool {
    std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"))
}

/// The filter in force: [`directives`] as a `Targets` filter (`target=level` pairs, which is all
/// `directives` ever yields; an unparsable pair is dropped, as `EnvFilter::parse_lossy` did).
pub fn filter(lambda_level: Option<&str>, rust_log: Option<&str>) -> Targets {
    let mut targets = Targets::new();
    for directive in directives(lambda_level, rust_log).split(',') {
        match directive.split_once('=') {
            None => targets = targets.with_default(parse_level(directive).unwrap_or(LevelFilter::INFO)),
            Some((target, level)) => {
                if let Some(level) = parse_level(level) {
                    targets = targets.with_target(target, level);
                }
            }
        }
    }
    targets
}

/// Installs the global subscriber.
pub fn init() {
    let lambda_level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok();
    let rust_log = std::env::var("RUST_LOG").ok();
    let registry = tracing_subscriber::registry().with(filter(lambda_level.as_deref(), rust_log.as_deref()));
    // JSON (Lambda): tracing's default timer writes RFC 3339 UTC under "timestamp"; the event's
    // fields sit at the top level next to it (`message`, as Lambda's own JSON lines have it),
    // and the current span (request id, X-Ray trace id) rides along; not the list of open spans,
    // which repeats it (~190 billed bytes a line). Text (a terminal): no time, the reader has one.
    let _ = if json_format() {
        registry.with(fmt::layer().json().flatten_event(true).with_span_list(false).with_target(false)).try_init()
    } else {
        registry.with(fmt::layer().without_time().with_target(false)).try_init()
    };
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
    fn every_directive_is_clamped_to_its_ceiling() {
        let d = directives(Some("TRACE"), Some("lambda_runtime=trace"));
        assert!(d.starts_with("info,"), "{d}");
        assert!(d.contains("stigg_webhooks=debug") && d.contains("aws_smithy_runtime=debug"), "{d}");
        assert!(!d.contains("trace"), "Lambda's level wins and nothing is at TRACE: {d}");
        let d = directives(
            None,
            Some("trace,lambda_runtime=trace,aws=trace,aws_smithy_runtime::client=trace,x[span]=trace"),
        );
        assert!(!d.contains("trace"), "{d}");
        assert!(
            d.contains("lambda_runtime=info")
                && d.contains("aws=info")
                && d.contains("aws_smithy_runtime::client=debug"),
            "{d}"
        );
        assert!(!d.contains("x[span]"), "{d}");
        assert_eq!(directives(Some("WARN"), None).split(',').next(), Some("warn"));
        assert!(directives(Some("ERROR"), None).contains("stigg_webhooks=error"));
    }

    #[test]
    fn the_filter_enforces_the_ceilings_whatever_the_setting() {
        use tracing::Level;
        let f = filter(Some("TRACE"), Some("trace"));
        assert!(f.would_enable("stigg_webhooks::receiver", &Level::DEBUG));
        assert!(!f.would_enable("stigg_webhooks::receiver", &Level::TRACE));
        assert!(f.would_enable("aws_smithy_runtime::client::orchestrator", &Level::DEBUG));
        assert!(!f.would_enable("lambda_runtime::layers::api_response", &Level::DEBUG));
        assert!(f.would_enable("lambda_runtime::layers::api_response", &Level::INFO));
        let f = filter(Some("WARN"), None);
        assert!(!f.would_enable("stigg_webhooks::receiver", &Level::INFO));
        assert!(f.would_enable("stigg_webhooks::receiver", &Level::WARN));
        let f = filter(None, Some("info,aws_smithy_runtime=debug,hyper_util=trace"));
        assert!(f.would_enable("aws_smithy_runtime::client", &Level::DEBUG));
        assert!(!f.would_enable("hyper_util::client", &Level::DEBUG), "clamped to INFO");
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
