//! `make replay` and `make dev BUS=1`'s bus, against moto's EventBridge: the dev tool's own code
//! (examples/stigg-dev/replay.rs and bus.rs, included here), with the unit tests of their pure
//! parts (time forms, names, the handlers' rule pattern, the subscriber's line).
//!
//! moto replays the whole archive synchronously inside StartReplay, whatever the window and
//! FilterArns; the tests check what the tool does (the rule, its pattern, the replay's name, the
//! cleanup), not EventBridge's window.

mod common;

#[allow(dead_code)]
#[path = "../examples/stigg-dev/bus.rs"]
mod bus;
#[allow(dead_code)]
#[path = "../examples/stigg-dev/replay.rs"]
mod replay;

use std::time::{Duration, SystemTime};

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use clap::Parser;
use common::*;
use serde_json::{Value, json};

struct Local {
    events: aws_sdk_eventbridge::Client,
    sqs: aws_sdk_sqs::Client,
    bus: bus::LocalBus,
    events_queue: stigg_webhooks::config::QueueUrl,
    events_queue_arn: String,
    /// Names the replay and its rule: unique per test (replay names are per second).
    stack: String,
}

async fn local() -> Local {
    let config = admin_config_for(&endpoint()).await;
    let events = aws_sdk_eventbridge::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let bus = bus::setup_bus(&events, &sqs, &unique("bus"), "stigg.webhooks", &unique("subscriber")).await.unwrap();
    let events_queue = create_queue(&sqs, &unique("events"), false).await;
    let events_queue_arn = sqs
        .get_queue_attributes()
        .queue_url(events_queue.as_str())
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    Local { events, sqs, bus, events_queue, events_queue_arn, stack: unique("stack") }
}

/// Puts an event as the forwarder does (spec-23: Detail = Stigg's payload + stiggWebhooks).
async fn put(l: &Local, event_type: &str, key: &str, customer: &str) {
    let detail = json!({
        "type": event_type, "messageId": key, "customer": {"id": customer},
        "stiggWebhooks": {"idempotencyKey": key, "receivedAt": 1_767_000_000_000u64}
    });
    let out = l
        .events
        .put_events()
        .entries(
            PutEventsRequestEntry::builder()
                .event_bus_name(&l.bus.bus_arn)
                .source("stigg.webhooks")
                .detail_type(event_type)
                .detail(detail.to_string())
                .time(aws_smithy_types::DateTime::from(SystemTime::now() - Duration::from_secs(60)))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_entry_count, 0, "{out:?}");
}

fn bodies(messages: &[aws_sdk_sqs::types::Message]) -> Vec<Value> {
    messages.iter().map(|m| serde_json::from_str(m.body().unwrap()).unwrap()).collect()
}

fn args(l: &Local, extra: &[&str]) -> replay::ReplayArgs {
    let mut argv = vec![
        "replay",
        "--from",
        "-1h",
        "--to",
        "now",
        "--archive",
        &l.bus.archive_arn,
        "--bus",
        &l.bus.bus_arn,
        "--queue-arn",
        &l.events_queue_arn,
        "--stack",
        &l.stack,
        "--poll-seconds",
        "0.2",
        "--settle-seconds",
        "0",
        "--drain-seconds",
        "0",
    ];
    argv.extend_from_slice(extra);
    replay::ReplayArgs::try_parse_from(argv).unwrap()
}

async fn rules_of_the_stack(l: &Local) -> Vec<String> {
    let rules = l.events.list_rules().event_bus_name(&l.bus.bus_arn).name_prefix(&l.stack).send().await.unwrap();
    rules.rules().iter().filter_map(|r| r.name().map(str::to_owned)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_to_the_handlers_reaches_the_events_queue_once_with_its_name_and_its_rule_is_removed() {
    let l = local().await;
    put(&l, "subscription.created", "key-sub-1", "customer-acme").await;
    put(&l, "customer.updated", "key-cust-1", "customer-globex").await;

    // The example subscriber sees every event as it is put, without a replay-name.
    let live =
        bodies(&take_all(&l.sqs, &stigg_webhooks::config::QueueUrl::parse(&l.bus.subscriber_queue_url).unwrap()).await);
    assert_eq!(live.len(), 2, "{live:?}");
    let lines: Vec<String> = live.iter().map(|b| bus::describe_event(&b.to_string())).collect();
    assert!(
        lines.contains(&"subscriber: subscription.created key=key-sub-1 customer=customer-acme".to_owned()),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains("replay-name")), "{lines:?}");
    assert!(take_all(&l.sqs, &l.events_queue).await.is_empty(), "nothing reaches the handlers without a replay");

    let mut log = Vec::new();
    let args = args(&l, &["--to-handlers", "--pattern", "subscription.created"]);
    let report = replay::replay(&l.events, &args, SystemTime::now(), std::future::pending(), &mut |line| {
        log.push(line.to_owned())
    })
    .await
    .unwrap();
    assert_eq!(report.ending, replay::Ending::Completed, "{log:#?}");
    assert!(!report.rule_left);
    assert!(report.replay_name.starts_with(&format!("{}-", l.stack)), "{}", report.replay_name);
    let rule = report.rule_name.clone().unwrap();
    assert!(rule.starts_with(&format!("{}-replay-", l.stack)), "{rule}");
    assert!(log.iter().any(|line| line.contains("COMPLETED 100%")), "{log:#?}");
    assert!(log.iter().any(|line| line == &format!("rule {rule} removed")), "{log:#?}");

    // The handlers get the replayed event PATTERN selects, once, with this replay's name.
    let to_handlers = bodies(&take_all(&l.sqs, &l.events_queue).await);
    assert_eq!(to_handlers.len(), 1, "{to_handlers:#?}");
    let event = &to_handlers[0];
    assert_eq!(event["replay-name"], json!(report.replay_name));
    assert_eq!(event["detail-type"], "subscription.created");
    assert_eq!(event["source"], "stigg.webhooks");
    assert_eq!(event["detail"]["stiggWebhooks"]["idempotencyKey"], "key-sub-1");
    assert_eq!(event["detail"]["customer"]["id"], "customer-acme");

    // The bus's own rules get every replayed event (each applies its own pattern).
    let replayed =
        bodies(&take_all(&l.sqs, &stigg_webhooks::config::QueueUrl::parse(&l.bus.subscriber_queue_url).unwrap()).await);
    assert_eq!(replayed.len(), 2, "{replayed:#?}");
    assert!(replayed.iter().all(|e| e["replay-name"] == json!(report.replay_name)), "{replayed:#?}");
    assert!(
        bus::describe_event(&event.to_string()).ends_with(&format!("replay-name={}", report.replay_name)),
        "the dev log shows the replay's name"
    );

    // The temporary rule is gone; the replay is recorded under its name.
    assert!(rules_of_the_stack(&l).await.is_empty(), "{:?}", rules_of_the_stack(&l).await);
    let described = l.events.describe_replay().replay_name(&report.replay_name).send().await.unwrap();
    assert_eq!(described.event_source_arn(), Some(l.bus.archive_arn.as_str()));
    // Replayed events are not archived again: a second replay brings back the two events only.
    tokio::time::sleep(Duration::from_millis(1100)).await; // a new second: a new replay name
    let second =
        replay::replay(&l.events, &args, SystemTime::now(), std::future::pending(), &mut |_| {}).await.unwrap();
    assert_ne!(second.replay_name, report.replay_name);
    let again = bodies(&take_all(&l.sqs, &l.events_queue).await);
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0]["replay-name"], json!(second.replay_name));
    assert!(rules_of_the_stack(&l).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_before_the_replay_starts_removes_the_rule_and_starts_nothing() {
    let l = local().await;
    put(&l, "subscription.created", "key-sub-2", "customer-acme").await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut tx = Some(tx);
    let mut log = Vec::new();
    // The rule is made, then the tool waits for it to settle: Ctrl-C comes then.
    let mut args = args(&l, &["--to-handlers"]);
    args.settle_seconds = 30.0;
    let started = std::time::Instant::now();
    let report = replay::replay(
        &l.events,
        &args,
        SystemTime::now(),
        async {
            let _ = rx.await;
        },
        &mut |line| {
            log.push(line.to_owned());
            if line.starts_with("rule ")
                && line.contains(" -> ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        },
    )
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20), "Ctrl-C does not wait for the settle time");
    assert!(matches!(report.ending, replay::Ending::Cancelled(_)), "{:?} {log:#?}", report.ending);
    assert!(!report.rule_left);
    assert!(rules_of_the_stack(&l).await.is_empty(), "the temporary rule is removed on Ctrl-C");
    let not_started = l.events.describe_replay().replay_name(&report.replay_name).send().await;
    assert!(not_started.is_err(), "no replay was started: {not_started:?}");
    assert!(take_all(&l.sqs, &l.events_queue).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_start_still_removes_the_rule_and_refusals_come_before_any_call() {
    let l = local().await;
    // No such archive: refused before anything is created.
    let mut bad = args(&l, &["--to-handlers"]);
    bad.archive = "no-such-archive".to_owned();
    let err =
        replay::replay(&l.events, &bad, SystemTime::now(), std::future::pending(), &mut |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("no-such-archive"), "{err}");
    assert!(rules_of_the_stack(&l).await.is_empty());

    // PATTERN without TO_HANDLERS: refused, with RULES= as the way to narrow the bus's rules.
    let err = replay::replay(
        &l.events,
        &args(&l, &["--pattern", "subscription.created"]),
        SystemTime::now(),
        std::future::pending(),
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("RULES="), "{err}");

    // StartReplay refused after the rule was made (the replay's name is taken): the rule goes.
    let args = args(&l, &["--to-handlers"]);
    let now = SystemTime::now();
    let name = replay::replay_name(&l.stack, now);
    l.events
        .start_replay()
        .replay_name(&name)
        .event_source_arn(&l.bus.archive_arn)
        .event_start_time(aws_smithy_types::DateTime::from(now - Duration::from_secs(60)))
        .event_end_time(aws_smithy_types::DateTime::from(now))
        .destination(aws_sdk_eventbridge::types::ReplayDestination::builder().arn(&l.bus.bus_arn).build().unwrap())
        .send()
        .await
        .unwrap();
    let err = replay::replay(&l.events, &args, now, std::future::pending(), &mut |_| {}).await.unwrap_err();
    assert!(format!("{err:?}").contains("already exists"), "{err:?}");
    assert!(rules_of_the_stack(&l).await.is_empty(), "the temporary rule is removed on error");
}
