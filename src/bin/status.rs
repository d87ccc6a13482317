//! The `status` Lambda (scheduled every 5 minutes): Stigg's status page as metrics
//! (`StiggComponentUptime`, `StiggActiveIncidents`, `StiggStatusProbeFailures`).

use std::time::{Duration, SystemTime};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use stigg_webhooks::config::{ProcessEnv, StatusConfig};
use stigg_webhooks::status::StatusPage;
use stigg_webhooks::{error_chain, init_error, logging, metrics};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    logging::init();
    metrics::init("status");
    let config = StatusConfig::from_env(&ProcessEnv).map_err(init_error)?;
    let page = std::sync::Arc::new(StatusPage::new(&config.url, Duration::from_secs(10)));
    // run_concurrent: sequential unless Lambda sets AWS_LAMBDA_MAX_CONCURRENCY above 1.
    lambda_runtime::run_concurrent(service_fn(move |_: LambdaEvent<Value>| {
        let page = page.clone();
        async move {
            let answer = probe(&page, config.window).await;
            metrics::flush();
            Ok::<Value, Error>(answer)
        }
    }))
    .await
}

/// One read of the status page. A failure is a metric and a log line, never an invocation error:
/// the endpoint is unofficial, and a retried invocation would not read it any better.
async fn probe(page: &StatusPage, window: Duration) -> Value {
    match page.fetch(SystemTime::now(), window).await {
        Ok(report) => {
            report.record_metrics();
            metrics::status_probe(true);
            for anomaly in &report.anomalies {
                tracing::warn!(kind = anomaly.kind(), detail = ?anomaly, "status page answer not as expected");
            }
            let active: Vec<_> = report.active_incidents().collect();
            for incident in &active {
                tracing::warn!(
                    incident = incident.name.as_deref(),
                    status = incident.status.as_deref(),
                    permalink = incident.permalink.as_deref(),
                    "Stigg reports an open incident"
                );
            }
            tracing::info!(
                components = report.components.len(),
                active_incidents = active.len(),
                anomalies = report.anomalies.len(),
                "status page read"
            );
            json!({"ok": true, "active_incidents": active.len(), "report": report})
        }
        Err(e) => {
            metrics::status_probe(false);
            tracing::warn!(error = %error_chain(&e), "status page not read");
            json!({"ok": false, "error": e.to_string()})
        }
    }
}
