//! Receive Stigg webhooks on AWS Lambda.
//!
//! - [`receiver`]: the function-URL handler (authenticate, validate, claim, enqueue).
//! - [`processor`]: the SQS handler (parse into [`event::EventType`], run handlers once per key).
//! - [`claim`]: the DynamoDB claim protocol both use.
//!
//! `src/bin/*` only wire configuration to clients to these handlers.

/// Re-exported so tests and tools build function-URL requests with the receiver's own
/// `lambda_http` (`lambda_http::request::from_str`).
pub use lambda_http;

pub mod aws;
pub mod claim;
pub mod config;
pub mod event;
pub mod handler;
pub mod logging;
pub mod metrics;
pub mod processor;
pub mod queue;
pub mod receiver;
pub mod secrets;
pub mod views;

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
