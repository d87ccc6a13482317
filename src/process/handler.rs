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
//! For one event, the matching handlers run in registration order and the first error stops
//! the run. They run once per event (idempotency key) as a group: after a retryable error the
//! whole group runs again on redelivery, so a handler that already succeeded must tolerate that.

use std::sync::Arc;

use async_trait::async_trait;

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
}

#[derive(Clone)]
enum Route {
    All,
    Family(EventFamily),
    Type(EventType),
}

impl Route {
    fn matches(&self, event: &StiggEvent) -> bool {
        match self {
            Self::All => true,
            Self::Family(f) => event.family() == *f,
            Self::Type(t) => event.event_type == *t,
        }
    }
}

/// The handler registry.
#[derive(Clone, Default)]
pub struct Handlers {
    routes: Vec<(Route, Arc<dyn Handler>)>,
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `handler` for events of exactly this type.
    pub fn on(mut self, event_type: EventType, handler: impl Handler) -> Self {
        self.routes.push((Route::Type(event_type), Arc::new(handler)));
        self
    }

    /// Runs `handler` for every event of a family (e.g. every subscription change, whatever
    /// generation of type name Stigg used).
    pub fn on_family(mut self, family: EventFamily, handler: impl Handler) -> Self {
        self.routes.push((Route::Family(family), Arc::new(handler)));
        self
    }

    /// Runs `handler` for every event, unknown types included.
    pub fn on_all(mut self, handler: impl Handler) -> Self {
        self.routes.push((Route::All, Arc::new(handler)));
        self
    }

    /// Appends `other`'s handlers after these (built-in handlers first, then yours).
    pub fn then(mut self, other: Handlers) -> Self {
        self.routes.extend(other.routes);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Runs every matching handler in order; stops at the first error.
    pub async fn run(&self, event: &StiggEvent) -> Result<usize, HandlerError> {
        let mut ran = 0;
        for (_, handler) in self.routes.iter().filter(|(route, _)| route.matches(event)) {
            handler.handle(event).await?;
            ran += 1;
        }
        Ok(ran)
    }
}

/// Logs a one-line summary of every event at DEBUG (the processor's own INFO line,
/// `event processed`, already tells that it ran). A starting point: replace or add your own.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingHandler;

#[async_trait]
impl Handler for LoggingHandler {
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
        assert_eq!(handlers.run(&event("subscription.canceled")).await.unwrap(), 3);
        assert_eq!(*log.lock().unwrap(), ["all", "canceled", "subscription"]);
        log.lock().unwrap().clear();
        assert_eq!(handlers.run(&event("brand.new")).await.unwrap(), 1);
        assert_eq!(*log.lock().unwrap(), ["all"]);
    }

    #[tokio::test]
    async fn the_first_error_stops_the_run() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let handlers = Handlers::new().on_all(Fail).on_all(Record(log.clone(), "after"));
        assert!(matches!(handlers.run(&event("x")).await, Err(HandlerError::Retryable(_))));
        assert!(log.lock().unwrap().is_empty());
    }

    #[test]
    fn a_view_that_does_not_fit_is_a_permanent_error() {
        let err: HandlerError = event("customer.created").subscription().unwrap_err().into();
        assert!(matches!(err, HandlerError::Permanent(_)));
    }
}
