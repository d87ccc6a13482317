//! `make send` (the `stigg-dev send` simulator) against the real receiver process: like Stigg's
//! "Send test event", every delivery is a new event unless asked otherwise, duplicates say why,
//! and a deployed stack's secret is read from its SSM parameter.

mod common;

use std::time::Duration;

use common::runtime_api::{FunctionProcess, RuntimeApi, binary};
use common::*;

const SECRET: &str = "simulator-suite-secret-0123456789";

struct Stack {
    api: RuntimeApi,
    _receiver: FunctionProcess,
}

async fn spawn_receiver() -> Stack {
    let res = Resources::create(false).await;
    let api = RuntimeApi::start(Duration::from_secs(10)).await;
    let env = vec![
        ("STIGG_WEBHOOK_SECRET", SECRET.to_owned()),
        ("IDEMPOTENCY_TABLE", res.table.as_str().to_owned()),
        ("EVENTS_QUEUE_URL", res.queue.as_str().to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", ddb_endpoint()),
        ("AWS_ENDPOINT_URL_SQS", endpoint()),
        ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned()),
    ];
    let receiver = FunctionProcess::spawn(binary("receiver").as_path(), &api, &env);
    Stack { api, _receiver: receiver }
}

/// Runs `stigg-dev send` on Stigg's documented subscription.created example; its stdout.
async fn send(stack: &Stack, extra: &[&str]) -> String {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/events/stigg/subscription.created.json");
    let out = tokio::process::Command::new(binary("examples/stigg-dev"))
        .args(["send", "--fast", "--url", &stack.api.function_url()])
        .args(extra)
        .arg(fixture)
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .await
        .expect("run the simulator");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn key(line: &str) -> &str {
    line.split("key=").nth(1).unwrap().split_whitespace().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_file_sent_twice_is_two_events_each_with_fresh_ids() {
    let stack = spawn_receiver().await;
    let first = send(&stack, &["--secret", SECRET]).await;
    let second = send(&stack, &["--secret", SECRET]).await;
    for out in [&first, &second] {
        assert!(out.contains("accepted=1 duplicate=0 failed=0"), "{out}");
    }
    assert_ne!(key(&first), key(&second), "a fresh messageId per delivery");
    assert!(key(&first).starts_with("sim-"), "not the docs' shared placeholder a6ce...: {first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_reuse_the_ids_and_say_why_they_are_duplicates() {
    let stack = spawn_receiver().await;
    let out = send(&stack, &["--secret", SECRET, "--duplicates", "2"]).await;
    assert!(out.contains("accepted=1 duplicate=2 failed=0"), "{out}");
    assert_eq!(out.matches("(same ids as subscription.created.json in this run)").count(), 2, "{out}");

    let kept = send(&stack, &["--secret", SECRET, "--keep-ids"]).await;
    assert!(kept.contains("accepted=1"), "the docs' own messageId, first time: {kept}");
    assert_eq!(key(&kept), "a6ce...");
    let again = send(&stack, &["--secret", SECRET, "--keep-ids"]).await;
    assert!(again.contains("accepted=0 duplicate=1"), "{again}");
    assert!(again.contains("these ids were accepted before this run"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_can_come_from_the_stacks_ssm_parameter() {
    let stack = spawn_receiver().await;
    let parameter = format!("/stigg-test/{}", unique("sim"));
    // During a rotation the parameter lists OLD,NEW; Stigg (and the simulator) send the last.
    put_secure_parameter(&parameter, &format!("rotated-out-secret-0123456789,{SECRET}")).await;
    let out = send(&stack, &["--secret-parameter", &parameter]).await;
    assert!(out.contains("accepted=1"), "{out}");
}
