//! `setup` (the local table and queues) and `redrive`.

use aws_sdk_sqs::types::QueueAttributeName;
use clap::Parser;
use serde_json::json;

use crate::pump::queue_arn;

use crate::{Error, sdk, sqs};

#[derive(Parser)]
pub(crate) struct SetupArgs {
    #[arg(long, default_value = "stigg-idempotency")]
    table: String,
    #[arg(long, default_value = "stigg-events")]
    queue: String,
    #[arg(long, default_value = "stigg-events-dlq")]
    dlq: String,
    /// Receives before SQS moves a failing message to the dead-letter queue.
    #[arg(long, default_value_t = 3)]
    max_receive_count: u32,
    /// Also create a local stand-in for Stigg's durable-delivery queue with this name.
    #[arg(long)]
    stigg_queue: Option<String>,
    /// Also create the entitlement mirror's table with this name.
    #[arg(long)]
    mirror_table: Option<String>,
    /// Also create an EventBridge bus with this name, an archive of it, and an example rule
    /// taking every event to a subscriber queue (`make dev BUS=1`).
    #[arg(long)]
    bus: Option<String>,
    /// The forwarder's `Source` the archive and the example rule select.
    #[arg(long, default_value = "stigg.webhooks")]
    event_source: String,
    #[arg(long, default_value = "stigg-subscriber")]
    subscriber_queue: String,
}

pub(crate) async fn setup(args: SetupArgs) -> Result<(), Error> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveSpecification,
    };
    let sdk = sdk().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let created = ddb
        .create_table()
        .table_name(&args.table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("pk").attribute_type(ScalarAttributeType::S).build()?,
        )
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build()?)
        .send()
        .await;
    match created {
        Ok(_) => {
            ddb.update_time_to_live()
                .table_name(&args.table)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder().attribute_name("expires_at").enabled(true).build()?,
                )
                .send()
                .await?;
        }
        Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(e) => return Err(e.into()),
    }
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = sqs.create_queue().queue_name(&args.dlq).send().await?.queue_url.unwrap_or_default();
    let dlq_arn = queue_arn(&sqs, &dlq).await?;
    let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": args.max_receive_count}).to_string();
    let queue = sqs
        .create_queue()
        .queue_name(&args.queue)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .send()
        .await?
        .queue_url
        .unwrap_or_default();
    println!("IDEMPOTENCY_TABLE={}\nEVENTS_QUEUE_URL={queue}\nDEAD_LETTER_QUEUE_URL={dlq}", args.table);
    println!("EVENTS_QUEUE_ARN={}", queue_arn(&sqs, &queue).await?);
    if let Some(name) = args.mirror_table {
        let key =
            |n: &str| AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build();
        let created = ddb
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(key("pk")?)
            .attribute_definitions(key("sk")?)
            .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build()?)
            .key_schema(KeySchemaElement::builder().attribute_name("sk").key_type(KeyType::Range).build()?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => return Err(e.into()),
        }
        println!("ENTITLEMENT_MIRROR_TABLE={name}");
    }
    if let Some(name) = args.bus {
        let events = aws_sdk_eventbridge::Client::new(&sdk);
        let bus = crate::bus::setup_bus(&events, &sqs, &name, &args.event_source, &args.subscriber_queue).await?;
        println!("{}", bus.env_lines());
    }
    if let Some(name) = args.stigg_queue {
        let url = sqs.create_queue().queue_name(name).send().await?.queue_url.unwrap_or_default();
        println!("STIGG_QUEUE_URL={url}");
    }
    Ok(())
}

pub(crate) async fn redrive(from: &str, to: &str) -> Result<(), Error> {
    let sqs = sqs().await;
    let (source, destination) = (queue_arn(&sqs, from).await?, queue_arn(&sqs, to).await?);
    // SQS's own message-move task where the endpoint has it (AWS); a plain move elsewhere (moto).
    match sqs.start_message_move_task().source_arn(&source).destination_arn(&destination).send().await {
        Ok(task) => {
            println!("redrive: message-move task started ({})", task.task_handle.unwrap_or_default());
            return Ok(());
        }
        Err(e) => eprintln!(
            "redrive: no message-move task on this endpoint ({}); moving messages one by one",
            e.as_service_error().and_then(|e| e.meta().code()).unwrap_or("unsupported")
        ),
    }
    // Move only what is there now: a message that fails again and returns to the dead-letter
    // queue while we work must not be moved round and round.
    let depth = sqs
        .get_queue_attributes()
        .queue_url(from)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages).and_then(|n| n.parse::<usize>().ok()))
        .unwrap_or(0);
    let mut moved = 0;
    while moved < depth {
        let out = sqs
            .receive_message()
            .queue_url(from)
            .max_number_of_messages((depth - moved).min(10) as i32)
            .visibility_timeout(30)
            .message_attribute_names("All")
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let mut send = sqs.send_message().queue_url(to).message_body(m.body.clone().unwrap_or_default());
            // The failure attributes described the last failure, not the event.
            for (k, v) in m.message_attributes.unwrap_or_default() {
                if !k.starts_with("failure_") && !k.starts_with("source_") {
                    send = send.message_attributes(k, v);
                }
            }
            if to.ends_with(".fifo") {
                let id = m.message_id.clone().unwrap_or_default();
                send = send
                    .message_group_id("redrive")
                    .message_deduplication_id(stigg_webhooks::event::sha256_hex(id.as_bytes()));
            }
            send.send().await?;
            if let Some(handle) = m.receipt_handle {
                sqs.delete_message().queue_url(from).receipt_handle(handle).send().await?;
            }
            moved += 1;
        }
    }
    println!("redrive: moved {moved} message(s) from {from} to {to}");
    Ok(())
}
