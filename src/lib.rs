//! Receive Stigg webhooks on AWS Lambda.
//!
//! The layout follows the path of an event:
//! - [`ingest`]: how events come in. [`receiver`] (the function URL) authenticates, validates,
//!   claims and enqueues; [`secrets`] holds the webhook secrets and keeps them fresh; [`bridge`]
//!   drains Stigg's durable-delivery queue into the same events queue.
//! - [`process`]: the SQS side. [`processor`] runs [`handler`]s once per key, with partial batch
//!   failures and a dead-letter queue.
//! - [`stigg`]: Stigg's domain. [`event`] (keys, the open type catalog, payloads), [`views`]
//!   (typed views of the documented events), [`edge`] (Edge API queue credentials as an SDK
//!   credentials provider) and [`status`] (Stigg's status page as data).
//! - [`aws`]: the adapters. SDK set-up, [`claim`] (the DynamoDB claim protocol both sides use)
//!   and [`queue`] (SQS).
//! - [`mirror`]: the opt-in entitlement mirror (a built-in handler and its reader).
//! - [`forward`]: the opt-in EventBridge forwarder (a built-in handler), and the replayed events'
//!   way back to the handlers.
//! - [`config`], [`logging`], [`metrics`]: what the functions share at cold start; `link`: what
//!   their executables take from the system's shared libraries.
//!
//! `src/bin/*` only wire configuration to clients to these handlers. The modules are also
//! re-exported at the crate root (`stigg_webhooks::receiver`, `::claim`, ...), the paths the
//! tests and users import.

/// Re-exported so tests and tools build function-URL requests with the receiver's own
/// `lambda_http` (`lambda_http::request::from_str`).
pub use lambda_http;

pub mod aws;
pub mod config;
/// The opt-in EventBridge forwarder: every processed event on your bus, and the way back for a
/// replay.
pub mod forward;
// `pow` defined in the executables, so they load no libm (exported by `no_mangle`, not by `pub`).
mod link;
pub mod logging;
pub mod metrics;
/// The entitlement mirror: the built-in handler that keeps every customer's entitlements in
/// DynamoDB, and [`mirror::Mirror`] to read them with Stigg's semantics.
pub mod mirror;

pub mod ingest {
    //! How events come in: the function URL ([`receiver`], with its [`secrets`]) and Stigg's
    //! durable-delivery queue ([`bridge`]).
    pub mod bridge;
    pub mod receiver;
    pub mod secrets;
}

pub mod process {
    //! The SQS side: the processor and the handlers it runs ([`batch`]: which records may still
    //! join a call a handler shares among them).
    pub mod batch;
    pub mod handler;
    pub mod processor;
}

pub mod stigg {
    //! Stigg's domain: events, keys, types, typed views; and Stigg's services we call: the Edge
    //! API's queue credentials ([`edge`]), the status page ([`status`]) and the API the
    //! entitlement mirror fills itself from ([`api`]).
    pub mod api;
    pub mod edge;
    pub mod event;
    pub mod status;
    pub mod views;
}

pub use aws::{claim, queue};
pub use ingest::{bridge, receiver, secrets};
pub use process::{handler, processor};
pub use stigg::{edge, event, status, views};

/// The invocation's deadline as the runtime reported it, or `now + fallback` when the report is
/// already past at the start of the invocation. Lambda never does that, but local emulators do
/// (`cargo lambda watch` sends a fixed `Lambda-Runtime-Deadline-Ms` of 600000, in 1970): taken
/// literally it would leave every record "no time left" and every claim's lease expired.
pub fn invocation_deadline(reported: std::time::SystemTime, fallback: std::time::Duration) -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    if reported > now { reported } else { now + fallback }
}

/// An error with its chain of causes on one line, for logs.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Turns a cold-start failure into a logged, readable init error (the runtime prints `Debug`).
pub fn init_error(e: impl std::fmt::Display) -> lambda_runtime::Error {
    let message = format!("cold start failed: {e}");
    tracing::error!("{message}");
    message.into()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn a_deadline_already_past_falls_back_to_the_default_budget() {
        let cargo_lambda_watch = UNIX_EPOCH + Duration::from_millis(600_000);
        let d = super::invocation_deadline(cargo_lambda_watch, Duration::from_secs(60));
        let left = d.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60), "{left:?}");
        let real = SystemTime::now() + Duration::from_secs(5);
        assert_eq!(super::invocation_deadline(real, Duration::from_secs(60)), real);
    }
}
