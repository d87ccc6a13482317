//! Your business logic: handlers registered per event type, per family, or for every event.
//!
//! ```no_run
//! use stigg_webhooks::event::{EventType, StiggEvent};
//! use stigg_webhooks::handler::{Handler, HandlerError, Handlers, LoggingHandler};
//!
//! struct RevokeAccess;
//!
//! #[async_trait::async_trait]
//! impl Handler for RevokeAccess {
//!     async fn handle(&self, event: &StiggEvent) -> Result<(), HandlerError> {
//!         let sub = event.subscription()?; // a malformed payload is a permanent error
//!         let customer = sub.customer.and_then(|c| c.id).ok_or_else(|| HandlerError::permanent("no customer"))?;
//!         // revoke(&customer).await.map_err(HandlerError::retryable)?;
//!         let _ = customer;
//!         Ok(())
//!     }
//! }
//!
//! let handlers = Handlers::new()
//!     .on_all(LoggingHandler)
//!     .on(EventType::SubscriptionCanceled, RevokeAccess);
//! ```
//!
//! # What "once" means
//!
//! Each matching handler runs **once per event (idempotency key) on its own**, in registration
//! order:
//! - a handler that fails neither stops the others nor makes the ones that succeeded run again:
//!   when one fails, the names of those that succeeded are recorded with the event's claim, and a
//!   redelivery (or a redrive from the dead-letter queue) runs only the handlers not recorded;
//! - a retryable failure sends the record back to the queue; a permanent one (with no retryable
//!   failure beside it) dead-letters it with the failing handlers named (`failed_handlers`);
//! - "once" means once to success: a handler that failed, or was cut off by the invocation's
//!   deadline, runs again; one that succeeded does not, for as long as the key is remembered
//!   (`IDEMPOTENCY_TTL_SECONDS`). A crash between a handler's success and the end of the record
//!   (the process killed, the record's claim never completed) still runs it again: make
//!   side effects idempotent where that matters.
//!
//! A handler is known by [`Handler::name`]: the name recorded when it succeeded. Its default is
//! the type's path (`std::any::type_name`), which Rust does not promise to keep across compiler
//! versions; a redelivery after a deploy that renamed a handler (a refactoring, a new toolchain)
//! runs it again. Override `name` with a fixed string for a handler whose repeat would hurt, as
//! the built-ins do (`entitlement-mirror`, `eventbridge-forwarder`, `logging`). Two registrations with one name are
//! refused at cold start: register a handler once for several types with
//! [`Handlers::on_types`], or give each its own name.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use futures::FutureExt;

use crate::stigg::event::{EventFamily, EventType, StiggEvent};
use crate::stigg::views::ViewError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a handler failed, which decides what happens to the record.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth another try (a downstream outage, a throttle): the record goes back to the queue.
    #[error("retryable: {0}")]
    Retryable(#[source] BoxError),
    /// Will never succeed (bad data, a rule violated): the record goes to the dead-letter queue.
    #[error("permanent: {0}")]
    Permanent(#[source] BoxError),
}

impl HandlerError {
    pub fn retryable(e: impl Into<BoxError>) -> Self {
        Self::Retryable(e.into())
    }

    pub fn permanent(e: impl Into<BoxError>) -> Self {
        Self::Permanent(e.into())
    }
}

/// A payload that does not fit its typed view will not fit it next time either.
impl From<ViewError> for HandlerError {
    fn from(e: ViewError) -> Self {
        Self::Permanent(Box::new(e))
    }
}

#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, event: &StiggEvent) -> Result<(), HandlerError>;

    /// The name recorded when this handler succeeded and another of the same event failed, so a
    /// redelivery skips it. The type's path unless overridden: override it with a fixed string
    /// to keep it across refactorings and compiler versions (see the module docs).
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(std::any::type_name::<Self>())
    }

    /// True for a handler that shares one call among a batch's records (the EventBridge
    /// forwarder): when it is skipped for a record, the record is counted out of the call at once
    /// (see [`crate::process::batch`]).
    fn shares_calls(&self) -> bool {
        false
    }
}

/// One handler's failure within a run.
#[derive(Debug)]
pub struct HandlerFailure {
    pub handler: String,
    pub error: HandlerError,
}

/// What one run of an event's handlers did.
#[derive(Debug, Default)]
pub struct HandlerRun {
    /// Handlers that succeeded in this run.
    pub succeeded: Vec<String>,
    /// Handlers skipped because an earlier delivery recorded their success.
    pub skipped: Vec<String>,
    /// Handlers that failed (a panic or the deadline is a retryable failure).
    pub failed: Vec<HandlerFailure>,
    /// Handlers not started because the deadline came first.
    pub not_run: Vec<String>,
}

impl HandlerRun {
    /// Every matching handler has now succeeded, in this run or an earlier one.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.not_run.is_empty()
    }

    /// Worth running again: a retryable failure, or a handler the deadline kept from running.
    pub fn is_retryable(&self) -> bool {
        !self.not_run.is_empty() || self.failed.iter().any(|f| matches!(f.error, HandlerError::Retryable(_)))
    }

    /// The names of the handlers that have not succeeded (failed, then not run).
    pub fn pending(&self) -> Vec<&str> {
        self.failed.iter().map(|f| f.handler.as_str()).chain(self.not_run.iter().map(String::as_str)).collect()
    }

    /// The handlers that have succeeded so far: recorded ones (`done`) and this run's.
    pub fn done(&self, before: &BTreeSet<String>) -> BTreeSet<String> {
        before.iter().cloned().chain(self.succeeded.iter().cloned()).collect()
    }

    /// How many handlers ran in this run (succeeded or failed).
    pub fn ran(&self) -> usize {
        self.succeeded.len() + self.failed.len()
    }
}

#[derive(Clone)]
enum Route {
    All,
    Family(EventFamily),
    Type(EventType),
    Types(Vec<EventType>),
}

impl Route {
    fn matches(&self, event: &StiggEvent) -> bool {
        match self {
            Self::All => true,
            Self::Family(f) => event.family() == *f,
            Self::Type(t) => event.event_type == *t,
            Self::Types(types) => types.contains(&event.event_type),
        }
    }
}

#[derive(Clone)]
struct Registered {
    route: Route,
    /// [`Handler::name`], unique in the registry.
    name: String,
    handler: Arc<dyn Handler>,
}

/// The handler registry.
#[derive(Clone, Default)]
pub struct Handlers {
    routes: Vec<Registered>,
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `handler` for events of exactly this type.
    pub fn on(self, event_type: EventType, handler: impl Handler) -> Self {
        self.register(Route::Type(event_type), Arc::new(handler))
    }

    /// Runs `handler` for events of any of these types: one handler, one name.
    pub fn on_types(self, event_types: impl IntoIterator<Item = EventType>, handler: impl Handler) -> Self {
        self.register(Route::Types(event_types.into_iter().collect()), Arc::new(handler))
    }

    /// Runs `handler` for every event of a family (e.g. every subscription change, whatever
    /// generation of type name Stigg used).
    pub fn on_family(self, family: EventFamily, handler: impl Handler) -> Self {
        self.register(Route::Family(family), Arc::new(handler))
    }

    /// Runs `handler` for every event, unknown types included.
    pub fn on_all(self, handler: impl Handler) -> Self {
        self.register(Route::All, Arc::new(handler))
    }

    /// Appends `other`'s handlers after these (built-in handlers first, then yours).
    pub fn then(mut self, other: Handlers) -> Self {
        for r in other.routes {
            self = self.register(r.route, r.handler);
        }
        self
    }

    /// # Panics
    /// When a handler of the same name is already registered: the records of which handlers
    /// succeeded could not tell them apart (a numbered suffix would move with registration order).
    fn register(mut self, route: Route, handler: Arc<dyn Handler>) -> Self {
        let name = handler.name().into_owned();
        assert!(
            !self.routes.iter().any(|r| r.name == name),
            "two handlers named {name:?}: register it once with Handlers::on_types, or override Handler::name"
        );
        self.routes.push(Registered { route, name, handler });
        self
    }

    /// The names of the handlers registered, in order.
    pub fn names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.name.as_str()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Runs every matching handler: each once, on its own, in registration order.
    pub async fn run(&self, event: &StiggEvent) -> HandlerRun {
        self.run_pending(event, &BTreeSet::new(), None).await
    }

    /// Runs the matching handlers not in `done` (their success is recorded from an earlier
    /// delivery), each on its own: a failure or a panic is that handler's alone. No handler
    /// starts after `until`, and one still running then is cut off (a retryable failure).
    pub async fn run_pending(
        &self,
        event: &StiggEvent,
        done: &BTreeSet<String>,
        until: Option<tokio::time::Instant>,
    ) -> HandlerRun {
        let mut run = HandlerRun::default();
        for r in self.routes.iter().filter(|r| r.route.matches(event)) {
            if done.contains(&r.name) {
                run.skipped.push(r.name.clone());
                release_if_sharing(&*r.handler);
                continue;
            }
            if until.is_some_and(|u| tokio::time::Instant::now() >= u) {
                run.not_run.push(r.name.clone());
                release_if_sharing(&*r.handler);
                continue;
            }
            let handle = AssertUnwindSafe(r.handler.handle(event)).catch_unwind();
            let result = match until {
                Some(until) => tokio::time::timeout_at(until, handle).await.unwrap_or_else(|_elapsed| {
                    Ok(Err(HandlerError::retryable("did not finish before the invocation deadline")))
                }),
                None => handle.await,
            };
            match result {
                Ok(Ok(())) => run.succeeded.push(r.name.clone()),
                Ok(Err(error)) => run.failed.push(HandlerFailure { handler: r.name.clone(), error }),
                Err(panic) => run.failed.push(HandlerFailure {
                    handler: r.name.clone(),
                    error: HandlerError::retryable(format!("panicked: {}", panic_message(&*panic))),
                }),
            }
        }
        run
    }
}

/// A record that will not reach a sharing handler no longer holds that handler's call back.
fn release_if_sharing(handler: &dyn Handler) {
    if handler.shares_calls() {
        crate::process::batch::release_current();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Logs a one-line summary of every event at DEBUG (the processor's own INFO line,
/// `event processed`, already tells that it ran). A starting point: replace or add your own.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingHandler;

#[async_trait]
impl Handler for LoggingHandler {
    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("logging")
    }

    async fn handle(&self, event: &StiggEvent) -> Result<(), HandlerError> {
        tracing::debug!(
            idempotency_key = %event.key,
            event_type = %event.event_type,
            family = ?event.family(),
            customer_id = event.customer_id.as_deref(),
            trace_id = event.trace_id.as_deref(),
            known_type = event.event_type.is_known(),
            "stigg event"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Record(Arc<Mutex<Vec<&'static str>>>, &'static str);

    #[async_trait]
    impl Handler for Record {
        fn name(&self) -> Cow<'static, str> {
            Cow::Borrowed(self.1)
        }

        async fn handle(&self, _: &StiggEvent) -> Result<(), HandlerError> {
            self.0.lock().unwrap().push(self.1);
            Ok(())
        }
    }

    struct Fail;

    #[async_trait]
    impl Handler for Fail {
        async fn handle(&self, _: &StiggEvent) -> Result<(), HandlerError> {
            Err(HandlerError::retryable("downstream unavailable"))
        }
    }

    struct Panics;

    #[async_trait]
    impl Handler for Panics {
        async fn handle(&self, _: &StiggEvent) -> Result<(), HandlerError> {
            panic!("handler bug")
        }
    }

    struct Hangs;

    #[async_trait]
    impl Handler for Hangs {
        async fn handle(&self, _: &StiggEvent) -> Result<(), HandlerError> {
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
            Ok(())
        }
    }

    fn event(t: &str) -> StiggEvent {
        StiggEvent::parse(&format!(r#"{{"type":"{t}","messageId":"m"}}"#)).unwrap()
    }

    #[tokio::test]
    async fn handlers_run_by_type_family_and_all_in_registration_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let handlers = Handlers::new()
            .on_all(Record(log.clone(), "all"))
            .on(EventType::SubscriptionCanceled, Record(log.clone(), "canceled"))
            .on_family(EventFamily::Subscription, Record(log.clone(), "subscription"))
            .on(EventType::CustomerCreated, Record(log.clone(), "customer"));
        assert_eq!(handlers.run(&event("subscription.canceled")).await.succeeded.len(), 3);
        assert_eq!(*log.lock().unwrap(), ["all", "canceled", "subscription"]);
        log.lock().unwrap().clear();
        assert_eq!(handlers.run(&event("brand.new")).await.succeeded.len(), 1);
        assert_eq!(*log.lock().unwrap(), ["all"]);
    }

    #[tokio::test]
    async fn a_failing_handler_does_not_stop_the_others() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let handlers = Handlers::new().on_all(Fail).on_all(Record(log.clone(), "after")).on_all(Panics);
        let run = handlers.run(&event("x")).await;
        assert_eq!(*log.lock().unwrap(), ["after"]);
        assert_eq!(run.succeeded.len(), 1);
        assert_eq!(run.pending().len(), 2, "the failure and the panic");
        assert!(run.is_retryable() && !run.is_complete());
    }

    #[tokio::test]
    async fn handlers_recorded_as_done_are_skipped() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let handlers = Handlers::new().on_all(Record(log.clone(), "a")).on_all(Fail);
        let first = handlers.run(&event("x")).await;
        let done = first.done(&BTreeSet::new());
        log.lock().unwrap().clear();
        let second = handlers.run_pending(&event("x"), &done, None).await;
        assert!(log.lock().unwrap().is_empty(), "the handler that succeeded does not run again");
        assert_eq!(second.skipped, first.succeeded);
        assert_eq!(second.pending(), first.pending());
    }

    #[test]
    fn names_default_to_the_type_and_the_built_ins_have_fixed_ones() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let handlers =
            Handlers::new().on_all(Fail).then(Handlers::new().on_all(Record(log, "r")).on_all(LoggingHandler));
        let names = handlers.names();
        assert!(names[0].ends_with("::Fail"), "{names:?}");
        assert_eq!(names[1], "r", "overridden");
        assert_eq!(names[2], "logging");
    }

    #[test]
    #[should_panic(expected = "two handlers named")]
    fn two_handlers_of_one_name_are_refused() {
        let _ = Handlers::new().on(EventType::CustomerCreated, Fail).on(EventType::CustomerUpdated, Fail);
    }

    #[tokio::test]
    async fn nothing_starts_after_the_deadline_and_a_late_handler_is_cut_off() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let handlers = Handlers::new().on_all(Hangs).on_all(Record(log.clone(), "never"));
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(50);
        let run = handlers.run_pending(&event("x"), &BTreeSet::new(), Some(until)).await;
        assert!(log.lock().unwrap().is_empty());
        assert_eq!(run.failed.len(), 1);
        assert_eq!(run.not_run.len(), 1);
        assert!(run.is_retryable());
    }

    #[test]
    fn a_view_that_does_not_fit_is_a_permanent_error() {
        let err: HandlerError = event("customer.created").subscription().unwrap_err().into();
        assert!(matches!(err, HandlerError::Permanent(_)));
    }
}
