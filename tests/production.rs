//! What the emulators cannot show by themselves, encoded as tests of the real binaries run as
//! processes under the Lambda Runtime API emulator (against moto):
//! - a secret rotated in SSM is picked up by a warm receiver, without a restart or redeploy, and
//!   a flood of wrong secrets costs at most one GetParameter per refresh interval;
//! - at the most verbose log setting a user can choose, no secret and no payload value reaches
//!   a log line (Lambda ships every line to CloudWatch Logs);
//! - at the most restrictive level the template offers, the EMF metric lines survive Lambda's
//!   log-level filter, so the metric alarms keep working;
//! - each function's executable loads no shared library beyond glibc's own and libgcc_s (each
//!   one more is mapped and resident at every cold start).

mod common;

use std::time::{Duration, Instant};

use common::counting_proxy::CountingProxy;
use common::runtime_api::{FunctionProcess, RuntimeApi, binary, function_url_post};
use common::*;
use serde_json::{Value, json};

const GET_PARAMETER: &str = "AmazonSSM.GetParameter";

fn receiver_env(res: &Resources, parameter: &str, ssm: &str) -> Vec<(&'static str, String)> {
    vec![
        ("STIGG_WEBHOOK_SECRET_PARAMETER", parameter.to_owned()),
        ("IDEMPOTENCY_TABLE", res.table.as_str().to_owned()),
        ("EVENTS_QUEUE_URL", res.queue.as_str().to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", ddb_endpoint()),
        ("AWS_ENDPOINT_URL_SQS", endpoint()),
        ("AWS_ENDPOINT_URL_SSM", ssm.to_owned()),
    ]
}

fn processor_env(res: &Resources, dlq: &stigg_webhooks::config::QueueUrl) -> Vec<(&'static str, String)> {
    vec![
        ("IDEMPOTENCY_TABLE", res.table.as_str().to_owned()),
        ("DEAD_LETTER_QUEUE_URL", dlq.as_str().to_owned()),
        ("AWS_ENDPOINT_URL_DYNAMODB", ddb_endpoint()),
        ("AWS_ENDPOINT_URL_SQS", endpoint()),
    ]
}

fn with(mut env: Vec<(&'static str, String)>, extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k, (*v).to_owned()));
    }
    env
}

fn event(key: &str) -> String {
    json!({"type": "subscription.updated", "messageId": key, "traceId": "t", "customer": {"id": "c"}}).to_string()
}

async fn status(api: &RuntimeApi, secret: &str, body: &str) -> u64 {
    let out = api.invoke(&function_url_post(secret, body), Duration::from_secs(10)).await.expect("receiver answers");
    out["statusCode"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotated_in_ssm_is_accepted_by_a_running_receiver_and_wrong_secrets_cost_one_read_per_interval() {
    let res = Resources::create(false).await;
    let parameter = format!("/stigg-test/{}", unique("secret"));
    let (old, new) = ("rotation-old-secret-0123456789", "rotation-new-secret-0123456789");
    put_secure_parameter(&parameter, old).await;
    let ssm = CountingProxy::start(&endpoint()).await;
    let api = RuntimeApi::start(Duration::from_secs(10)).await;
    let interval = Duration::from_secs(2);
    let env = with(
        receiver_env(&res, &parameter, &ssm.url()),
        &[("SECRET_REFRESH_SECONDS", "2"), ("SECRET_MAX_AGE_SECONDS", "4"), ("AWS_LAMBDA_LOG_LEVEL", "info")],
    );
    let receiver = FunctionProcess::spawn(binary("receiver").as_path(), &api, &env);
    assert_eq!(status(&api, old, &event("r-1")).await, 202);
    assert_eq!(ssm.count(GET_PARAMETER), 1, "read once at the cold start");

    // Rotation step 1: both secrets live. No deploy, no restart: the same process.
    put_secure_parameter(&parameter, &format!("{old},{new}")).await;
    let rotated = Instant::now();
    let mut accepted_after = None;
    while rotated.elapsed() < interval * 3 {
        if status(&api, new, &event("r-2")).await == 202 {
            accepted_after = Some(rotated.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted_after = accepted_after.expect("the new secret was accepted by the running receiver");
    assert!(accepted_after <= interval, "accepted within the refresh interval: {accepted_after:?}");
    assert_eq!(status(&api, old, &event("r-3")).await, 202, "the old secret still works mid-rotation");

    // A flood of wrong secrets over several intervals: at most one read per interval.
    let before = ssm.count(GET_PARAMETER);
    let flood = Instant::now();
    let mut sent = 0;
    while flood.elapsed() < interval * 3 {
        assert_eq!(status(&api, &format!("attacker-guess-{sent}"), &event("r-x")).await, 401);
        sent += 1;
    }
    let reads = ssm.count(GET_PARAMETER) - before;
    let intervals = (flood.elapsed().as_secs_f64() / interval.as_secs_f64()).ceil() as usize;
    assert!(sent > 50, "a flood, not a trickle: {sent}");
    assert!(reads <= intervals + 1, "{reads} GetParameter calls for {sent} wrong secrets over {intervals} intervals");

    // Rotation step 3: only the new secret. The old one stops working once the list ages out.
    put_secure_parameter(&parameter, new).await;
    let retired = Instant::now();
    let mut refused_after = None;
    while retired.elapsed() < Duration::from_secs(10) {
        if status(&api, old, &event("r-4")).await == 401 {
            refused_after = Some(retired.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refused_after = refused_after.expect("the retired secret was refused");
    assert!(refused_after <= Duration::from_secs(4) + interval, "refused within max age + interval: {refused_after:?}");
    assert_eq!(status(&api, new, &event("r-5")).await, 202);
    eprintln!(
        "rotation: NEW accepted {accepted_after:?} after the change; {sent} wrong secrets over {intervals} intervals \
         cost {reads} GetParameter; OLD refused {refused_after:?} after its removal"
    );
    assert!(receiver.count_message("webhook secrets re-read") > 0, "re-reads are logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_re_read_keeps_the_cached_secrets_and_is_logged() {
    let res = Resources::create(false).await;
    let parameter = format!("/stigg-test/{}", unique("secret"));
    let current = "refresh-fails-secret-0123456789";
    put_secure_parameter(&parameter, current).await;
    let ssm = common::fault_proxy::FaultProxy::start(&endpoint()).await;
    let api = RuntimeApi::start(Duration::from_secs(10)).await;
    let env = with(
        receiver_env(&res, &parameter, &ssm.url()),
        &[("SECRET_REFRESH_SECONDS", "1"), ("SECRET_MAX_AGE_SECONDS", "1")],
    );
    let receiver = FunctionProcess::spawn(binary("receiver").as_path(), &api, &env);
    assert_eq!(status(&api, current, &event("f-1")).await, 202);
    ssm.set(common::fault_proxy::Fault::Refuse);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(&api, current, &event("f-2")).await, 202, "the cached list still works");
    assert_eq!(status(&api, "wrong-secret-xyz", &event("f-3")).await, 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.count_message("re-reading the webhook secrets failed; keeping the cached list") >= 1);
    let failures = receiver
        .lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["SecretRefreshes"].is_number() && v["Outcome"] == "failed")
        .count();
    assert!(failures >= 1, "counted as SecretRefreshes{{Outcome=failed}}");
}

/// The lines Lambda keeps at `level` (JSON log format): a line's `level`, but INFO when the
/// level is missing or invalid, when the line is not JSON, or when it has no valid RFC 3339
/// `timestamp`. <https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html>
fn kept_by_lambda_at(level: &str, lines: &[String]) -> Vec<Value> {
    let rank =
        |l: &str| ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"].iter().position(|x| x.eq_ignore_ascii_case(l));
    let threshold = rank(level).unwrap();
    let info = rank("INFO").unwrap();
    lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|_| json!({"message": l})))
        .filter(|v| {
            let stated = v["level"].as_str().and_then(rank).unwrap_or(info);
            let effective = if v["timestamp"].as_str().is_some_and(is_rfc3339) { stated } else { info };
            effective >= threshold
        })
        .collect()
}

/// `2026-12-01T19:04:05Z`, with optional fractional seconds and a `Z` or `±hh:mm` offset.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let head = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !head {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z"
        || rest == "z"
        || (rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && &rest[3..4] == ":")
}

#[test]
fn the_lambda_filter_model_reads_timestamps_as_lambda_documents() {
    assert!(is_rfc3339("2024-11-02T16:51:31.587199Z"));
    assert!(is_rfc3339("2026-12-01T19:04:05+01:00"));
    for bad in ["1733083445000", "2024-11-02 16:51:31", "2024-11-02T16:51:31.Z", ""] {
        assert!(!is_rfc3339(bad), "{bad}");
    }
    let lines = [r#"{"level":"ERROR","timestamp":"2024-11-02T16:51:31Z"}"#, r#"{"level":"ERROR"}"#].map(String::from);
    assert_eq!(kept_by_lambda_at("WARN", &lines).len(), 1, "an ERROR line without a timestamp counts as INFO");
}

fn emf_outcomes(kept: &[Value], metric: &str) -> Vec<String> {
    kept.iter()
        .filter(|v| v["_aws"]["CloudWatchMetrics"].is_array() && !v[metric].is_null())
        .filter_map(|v| v["Outcome"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_survive_lambdas_log_level_filter_at_the_most_restrictive_level_offered() {
    let res = Resources::create(false).await;
    let dlq = create_queue(&res.sqs, &unique("dlq"), false).await;
    let parameter = format!("/stigg-test/{}", unique("secret"));
    let secret = "metrics-level-secret-0123456789";
    put_secure_parameter(&parameter, secret).await;
    for level in ["WARN", "ERROR"] {
        let api = RuntimeApi::start(Duration::from_secs(10)).await;
        let env = with(receiver_env(&res, &parameter, &endpoint()), &[("AWS_LAMBDA_LOG_LEVEL", level)]);
        let receiver = FunctionProcess::spawn(binary("receiver").as_path(), &api, &env);
        assert_eq!(status(&api, secret, &event(&format!("m-{level}"))).await, 202);
        assert_eq!(status(&api, "wrong-secret-xyz", &event("m-x")).await, 401);
        assert_eq!(status(&api, secret, "[]").await, 400);
        // The same messageId with other bytes: answered as a duplicate, with a WARN line.
        let reused = json!({"type": "subscription.updated", "messageId": format!("m-{level}"), "other": 1}).to_string();
        assert_eq!(status(&api, secret, &reused).await, 200);
        let papi = RuntimeApi::start(Duration::from_secs(30)).await;
        let penv = with(processor_env(&res, &dlq), &[("AWS_LAMBDA_LOG_LEVEL", level)]);
        let processor = FunctionProcess::spawn(binary("processor").as_path(), &papi, &penv);
        let batch = json!({"Records": [sqs_record("m-1", &event(&format!("p-{level}")))]});
        papi.invoke(&batch, Duration::from_secs(30)).await.expect("processor answers");
        tokio::time::sleep(Duration::from_millis(300)).await;

        let kept = kept_by_lambda_at(level, &receiver.lines());
        let mut outcomes = emf_outcomes(&kept, "Requests");
        outcomes.sort();
        // Accepted requests have no metric (the dashboard derives them from the function URL's).
        assert_eq!(outcomes, ["duplicate", "invalid", "unauthorized"], "receiver metrics kept at {level}");
        assert!(
            !kept.iter().any(|v| v["message"] == "webhook handled" || v["message"] == "webhook accepted"),
            "INFO lines are filtered at {level}"
        );
        assert!(
            !receiver.lines().iter().any(|l| l.contains("webhook accepted")),
            "above INFO an accepted request writes nothing at all"
        );
        let warned = kept.iter().any(|v| {
            v["level"] == "WARN"
                && v["message"].as_str().is_some_and(|m| m.starts_with("duplicate key with a different body"))
        });
        assert_eq!(warned, level == "WARN", "WARN lines are kept at WARN (they carry a timestamp), dropped at ERROR");
        let kept = kept_by_lambda_at(level, &processor.lines());
        assert_eq!(emf_outcomes(&kept, "Records"), ["processed"], "processor metrics kept at {level}");
    }
}

fn sqs_record(id: &str, body: &str) -> Value {
    json!({
        "messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:events", "awsRegion": "us-east-1"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_at_the_most_verbose_setting_holds_a_secret_or_a_payload_value() {
    let res = Resources::create(false).await;
    let dlq = create_queue(&res.sqs, &unique("dlq"), false).await;
    let parameter = format!("/stigg-test/{}", unique("secret"));
    let (current, retired, wrong) =
        ("verbose-current-secret-0123456789", "verbose-retired-secret-0123456789", "verbose-wrong-guess-0123456789");
    put_secure_parameter(&parameter, &format!("{retired},{current}")).await;
    // A payload value that must never be logged, in a field a view reads with the wrong type
    // (so the error path runs too), plus an unknown field.
    let marker = "payload-value-7f3a9c";
    let body = |key: &str| {
        json!({"type": "subscription.updated", "messageId": key, "traceId": "t", "customer": {"id": "c"},
               "plan": marker, "note": marker})
        .to_string()
    };
    let verbose = [
        ("AWS_LAMBDA_LOG_LEVEL", "TRACE"),
        ("RUST_LOG", "trace"),
        ("SECRET_MAX_AGE_SECONDS", "1"),
        ("SECRET_REFRESH_SECONDS", "1"),
    ];
    let api = RuntimeApi::start(Duration::from_secs(10)).await;
    let receiver = FunctionProcess::spawn(
        binary("receiver").as_path(),
        &api,
        &with(receiver_env(&res, &parameter, &endpoint()), &verbose),
    );
    assert_eq!(status(&api, current, &body("v-1")).await, 202);
    assert_eq!(status(&api, retired, &body("v-2")).await, 202);
    assert_eq!(status(&api, current, &body("v-1")).await, 200);
    assert_eq!(status(&api, current, &format!("{{\"type\": \"{marker}\", \"x\": [")).await, 400);
    // Rotate the retired secret out; it is refused once the list is re-read.
    put_secure_parameter(&parameter, current).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for secret in [retired, wrong, ""] {
        assert_eq!(status(&api, secret, &body("v-3")).await, 401, "{secret}");
    }

    let papi = RuntimeApi::start(Duration::from_secs(30)).await;
    let penv = with(processor_env(&res, &dlq), &[("AWS_LAMBDA_LOG_LEVEL", "TRACE"), ("RUST_LOG", "trace")]);
    let processor = FunctionProcess::spawn(binary("processor").as_path(), &papi, &penv);
    let batch =
        json!({"Records": [sqs_record("p-1", &body("v-1")), sqs_record("p-2", &format!("{{\"oops\": \"{marker}\""))]});
    papi.invoke(&batch, Duration::from_secs(30)).await.expect("processor answers");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let receiver_log = receiver.lines().join("\n");
    let processor_log = processor.lines().join("\n");
    assert!(
        receiver_log.contains("webhook accepted") && processor_log.contains("event processed"),
        "the runs were logged"
    );
    assert!(receiver_log.contains("\"level\":\"DEBUG\""), "the setting really is verbose");
    for log in [&receiver_log, &processor_log] {
        for s in [current, retired, wrong] {
            assert!(!log.contains(s), "a secret appeared in the logs");
        }
        assert!(!log.contains(marker), "a payload value appeared in the logs");
        assert!(!log.contains("raw JSON event received from Lambda"));
    }
    // The poison record went to the DLQ with a reason that does not quote the payload.
    let dead = drain(&res.sqs, &dlq).await;
    assert_eq!(dead.len(), 1);
    let detail = attr(&dead[0], "failure_detail").unwrap();
    assert!(!detail.contains(marker) && detail.contains("line 1"), "{detail}");
}

#[test]
#[cfg(target_os = "linux")]
fn every_function_loads_no_shared_library_beyond_glibc_and_libgcc_s() {
    // Every other library is mapped and relocated at each cold start and stays resident (libm was
    // about 300 kB of the receiver's RSS after init, for one `pow`: src/link.rs). The script is the one
    // `make build`, `make deploy` and `make bench` run on the release builds.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-linked-libraries.sh");
    let out = std::process::Command::new(script)
        .args(["receiver", "processor", "bridge", "status", "mirror-sync"].map(binary))
        .output()
        .expect("scripts/check-linked-libraries.sh runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
