//! The EventBridge forwarder: a built-in handler (opt-in with `EVENT_BUS_NAME`) that puts every
//! processed Stigg event on an event bus, so any team, in any language, subscribes with a rule,
//! and the bus's archive keeps the history for a replay.
//!
//! - [`entry`]: what one event becomes on the bus (the envelope, the appended `stiggWebhooks`
//!   member, the reduced detail of an event too large for an entry);
//! - [`batcher`]: PutEvents calls shared by the records of one SQS batch (at most 10 entries and
//!   the size limit per request), each failed entry retried alone;
//! - [`handler`]: the [`Forwarder`] handler, its metrics and its "once";
//! - [`envelope`]: the way back, an EventBridge event delivered to the events queue (a replay
//!   with `TO_HANDLERS=1`) read as the Stigg event it carries;
//! - [`config`]: the `EVENT_BUS_*` settings.

pub mod batcher;
pub mod config;
pub mod entry;
pub mod envelope;
pub mod handler;

pub use config::ForwarderConfig;
pub use handler::Forwarder;
