//! The status binary under a Lambda Runtime API, reading a local stand-in of Stigg's status page:
//! metrics from the documented answer, and every changed shape tolerated and counted.

mod common;

use std::time::Duration;

use common::runtime_api::{FunctionProcess, RuntimeApi, binary};
use common::stigg_stand_ins::StatusPageStandIn;
use common::*;
use serde_json::{Value, json};

fn documented() -> Value {
    serde_json::from_str(include_str!("../events/status/component_impacts.json")).unwrap()
}

async fn start(page: &StatusPageStandIn) -> (RuntimeApi, FunctionProcess) {
    let api = RuntimeApi::start(Duration::from_secs(30)).await;
    let env = [("STIGG_STATUS_URL", page.url()), ("AWS_LAMBDA_LOG_LEVEL", "info".to_owned())];
    let process = FunctionProcess::spawn(binary("status").as_path(), &api, &env);
    (api, process)
}

async fn invoke(api: &RuntimeApi) -> Value {
    api.invoke(&json!({}), Duration::from_secs(30)).await.expect("the probe never fails its invocation")
}

/// The value of `metric` in the EMF line for `component`, after the flush that follows `n` lines.
fn uptime(lines: &[String], component: &str) -> f64 {
    emf_sum(lines, "StiggComponentUptime", Some(("Component", component)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_answer_becomes_uptime_per_component_and_an_open_incident_count() {
    let page = StatusPageStandIn::start(&documented()).await;
    let (api, process) = start(&page).await;
    let answer = invoke(&api).await;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["active_incidents"], 1);
    let lines = process.settled_lines().await;
    assert_eq!(uptime(&lines, "API"), 99.93);
    assert_eq!(uptime(&lines, "Edge API"), 100.0);
    assert_eq!(uptime(&lines, "Infrastructure"), 100.0);
    assert_eq!(uptime(&lines, "App"), 99.71);
    assert_eq!(emf_sum(&lines, "StiggActiveIncidents", None), 1.0);
    assert_eq!(emf_sum(&lines, "StiggStatusProbeFailures", None), 0.0);
    assert_eq!(process.count_message("Stigg reports an open incident"), 1);
    // The window asked for: the last 24 hours, as RFC 3339.
    let query = &page.queries()[0];
    let at = |k: &str| {
        aws_smithy_types::DateTime::from_str(&query[k], aws_smithy_types::date_time::Format::DateTime).unwrap()
    };
    assert_eq!(at("end_at").secs() - at("start_at").secs(), 86_400, "{query:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_shapes_errors_and_unknown_components_are_counted_never_a_crash() {
    let page = StatusPageStandIn::start(&documented()).await;
    let (api, process) = start(&page).await;
    let new_component = json!({"incident_links": [],
        "component_uptimes": [{"component_id": "01NEWCOMPONENT", "uptime": 99.5}]});
    let cases: Vec<(u16, Vec<u8>, bool)> = vec![
        (500, b"upstream error".to_vec(), false),
        (200, b"<html>maintenance</html>".to_vec(), false),
        (200, br#"{"data": {"components": []}}"#.to_vec(), true),
        (200, new_component.to_string().into_bytes(), true),
        (404, b"{}".to_vec(), false),
    ];
    for (status, body, read) in &cases {
        page.set(*status, body);
        let answer = invoke(&api).await;
        assert_eq!(answer["ok"], *read, "{status} {}: {answer}", String::from_utf8_lossy(body));
    }
    let lines = process.settled_lines().await;
    assert_eq!(emf_sum(&lines, "StiggStatusProbeFailures", None), 3.0);
    assert!(emf_sum(&lines, "StiggStatusAnomalies", Some(("Kind", "shape"))) >= 2.0);
    assert_eq!(emf_sum(&lines, "StiggStatusAnomalies", Some(("Kind", "unknown_component"))), 1.0);
    assert_eq!(uptime(&lines, "01NEWCOMPONENT"), 99.5, "an unknown component is still reported, by its id");
    // The same process still reads the documented answer afterwards.
    page.set(200, documented().to_string().as_bytes());
    assert_eq!(invoke(&api).await["active_incidents"], 1);
    assert!(api.init_errors().is_empty());
}
