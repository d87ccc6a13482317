//! The `processor` Lambda: configuration -> clients -> handlers -> run.
//!
//! Register your own handlers in `handlers()` (see `stigg_webhooks::handler`).

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use stigg_webhooks::claim::{ClaimScope, IdempotencyStore};
use stigg_webhooks::config::{ProcessEnv, ProcessorConfig};
use stigg_webhooks::forward::Forwarder;
use stigg_webhooks::handler::{Handlers, LoggingHandler};
use stigg_webhooks::mirror::{MirrorHandler, MirrorStore};
use stigg_webhooks::processor::Processor;
use stigg_webhooks::queue::EventQueue;
use stigg_webhooks::{aws, init_error, logging, metrics};

/// Your business logic goes here. The built-in entitlement mirror is added when
/// `ENTITLEMENT_MIRROR_TABLE` is set, the EventBridge forwarder when `EVENT_BUS_NAME` is.
fn handlers() -> Handlers {
    Handlers::new().on_all(LoggingHandler)
}

/// The mirror runs first, so your handlers of the same event see the mirror already updated,
/// and a failing handler of yours does not keep an entitlement change out of it; then the
/// forwarder, so the bus's consumers hear of a change no later than your handlers do.
fn with_built_ins(mirror: Option<MirrorHandler>, forwarder: Option<Forwarder>, yours: Handlers) -> Handlers {
    let mut built_in = Handlers::new();
    if let Some(mirror) = mirror {
        built_in = built_in.on_types(MirrorHandler::EVENT_TYPES, mirror);
    }
    if let Some(forwarder) = forwarder {
        built_in = built_in.on_all(forwarder);
    }
    built_in.then(yours)
}

// One thread: Lambda gives a small function a fraction of one vCPU, and the work is I/O-bound;
// a multi-thread runtime only adds cross-thread wake-ups (measured in BENCHMARKS.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    logging::init();
    metrics::init("processor");
    let config = ProcessorConfig::from_env(&ProcessEnv).map_err(init_error)?;
    let sdk = aws::load_sdk_config().map_err(init_error)?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let mirror = config.mirror_table.map(|table| MirrorHandler::new(MirrorStore::new(dynamodb.clone(), table)));
    let replays_from = config.forwarder.as_ref().map(|c| c.source.clone());
    let forwarder = config.forwarder.map(|c| Forwarder::new(aws_sdk_eventbridge::Client::new(&sdk), c));
    let store = IdempotencyStore::new(dynamodb, config.table, config.ttl, ClaimScope::Processor);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dead_letters = config.dead_letter_queue.map(|url| EventQueue::new(sqs, url));
    if dead_letters.is_none() {
        tracing::warn!("DEAD_LETTER_QUEUE_URL not set: poison records are left to the queue's redrive policy");
    }
    let mut processor = Processor::new(
        store,
        dead_letters,
        with_built_ins(mirror, forwarder, handlers()),
        config.max_concurrency.get(),
    );
    if let Some(source) = replays_from {
        processor = processor.accepting_replays_from(source);
    }
    let processor = Arc::new(processor);
    // run_concurrent: sequential unless Lambda sets AWS_LAMBDA_MAX_CONCURRENCY above 1.
    lambda_runtime::run_concurrent(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let processor = processor.clone();
        async move {
            let response = processor.handle_event(event).await;
            metrics::flush();
            response
        }
    }))
    .await
}
