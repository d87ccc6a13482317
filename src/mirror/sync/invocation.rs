//! What the `mirror-sync` function is asked to do: its schedule's event (or `{"action":"drift"}`)
//! runs one drift check; `{"action":"backfill","restart":bool}` runs the backfill until
//! [`BACKFILL_MARGIN`] before the invocation's deadline and answers its progress (invoke again
//! to resume from its checkpoint).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use super::backfill::{Backfill, BackfillError, BackfillOptions, Ending, Summary};
use super::drift::{DriftCheck, DriftError};
use crate::config::TableName;
use crate::stigg::api::{ApiSettings, CustomerDirectory, RetryPolicy};

/// A backfill stops this long before the invocation's deadline: a listing call started just
/// before it (with its retries: [`backfill_api_settings`]) and the checkpoint's save still fit.
pub const BACKFILL_MARGIN: Duration = Duration::from_secs(90);

/// How a backfill in the function calls Stigg: the backfill's patience (up to 10 attempts,
/// backoffs up to 30 s), within 60 s a call, so a call never outlasts [`BACKFILL_MARGIN`]; a
/// customer still failing is counted, and the next invocation resumes.
pub fn backfill_api_settings(url: &str) -> ApiSettings {
    let patient = ApiSettings::patient(url);
    ApiSettings { retry: RetryPolicy { budget: Duration::from_secs(60), ..patient.retry }, ..patient }
}

/// One invocation's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Drift,
    Backfill { restart: bool },
}

#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// The event names no action this function has: the same event fails again.
    #[error("unknown request {0}: send {{\"action\":\"drift\"}} or {{\"action\":\"backfill\",\"restart\":false}}")]
    UnknownAction(String),
    #[error(transparent)]
    Drift(#[from] DriftError),
    #[error("the backfill stopped")]
    Backfill(#[from] BackfillError),
}

impl InvocationError {
    /// Whether the next scheduled run (or the same request again) may pass.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Drift(e) => e.is_retryable(),
            Self::Backfill(e) => e.is_retryable(),
            Self::UnknownAction(_) => false,
        }
    }
}

/// The action an event asks for. A scheduled event (EventBridge Scheduler passes the
/// template's `Input`; an EventBridge rule sends `detail-type: Scheduled Event`) and `{}` are a
/// drift check.
pub fn action_of(event: &Value) -> Result<Action, InvocationError> {
    let unknown = || {
        // The request's shape, never its values: an invocation payload may carry anything.
        let keys: Vec<&str> = event.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        InvocationError::UnknownAction(format!("with keys {keys:?}"))
    };
    let Some(fields) = event.as_object() else { return Err(unknown()) };
    if fields.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        return Ok(Action::Drift);
    }
    match fields.get("action").map(|a| a.as_str()) {
        None if fields.is_empty() => Ok(Action::Drift),
        Some(Some("drift")) => Ok(Action::Drift),
        Some(Some("backfill")) => match fields.get("restart") {
            None => Ok(Action::Backfill { restart: false }),
            Some(Value::Bool(restart)) => Ok(Action::Backfill { restart: *restart }),
            Some(_) => Err(InvocationError::UnknownAction("`restart` is not true or false".into())),
        },
        _ => Err(unknown()),
    }
}

/// The function's handler: the drift check, and the backfill.
pub struct MirrorSync<D> {
    drift: DriftCheck<D>,
    /// The backfill's client ([`backfill_api_settings`]), the mirror table.
    backfill: (Arc<D>, aws_sdk_dynamodb::Client, TableName),
}

impl<D: CustomerDirectory> MirrorSync<D> {
    pub fn new(drift: DriftCheck<D>, backfill_api: Arc<D>, client: aws_sdk_dynamodb::Client, table: TableName) -> Self {
        Self { drift, backfill: (backfill_api, client, table) }
    }

    /// Runs what `event` asks for, until `deadline`; the answer is the run's report as JSON.
    pub async fn handle(&self, event: &Value, deadline: SystemTime) -> Result<Value, InvocationError> {
        match action_of(event)? {
            Action::Drift => {
                let report = self.drift.run(deadline).await.inspect_err(|_| {
                    crate::metrics::mirror_drift_run("failed");
                })?;
                report.record_metrics();
                tracing::info!(
                    customers = report.customers,
                    from_mirror = report.from_mirror,
                    checked = report.checked,
                    in_sync = report.in_sync,
                    behind = report.behind,
                    ahead = report.ahead,
                    missing = report.missing,
                    not_found = report.not_found,
                    failed = report.failed,
                    repaired = report.repaired,
                    wrapped = report.wrapped,
                    stopped_early = report.stopped_early,
                    skipped = report.skipped,
                    "drift check"
                );
                Ok(json!({"action": "drift", "report": report}))
            }
            Action::Backfill { restart } => {
                let (api, client, table) = &self.backfill;
                let options = BackfillOptions { restart, ..BackfillOptions::default() };
                let backfill = Backfill::new(api.clone(), client.clone(), table.clone(), options);
                let left = deadline.duration_since(SystemTime::now()).unwrap_or_default();
                let until = Instant::now() + left.saturating_sub(BACKFILL_MARGIN);
                let summary = backfill.run(until, |p| tracing::info!(progress = %p, "backfill")).await?;
                tracing::info!(ending = ending(summary.ending), progress = %summary.progress, "backfill run");
                Ok(backfill_json(&summary))
            }
        }
    }
}

fn ending(e: Ending) -> &'static str {
    match e {
        Ending::Finished => "finished",
        Ending::AlreadyFinished => "already_finished",
        Ending::OutOfTime => "out_of_time",
    }
}

/// A backfill run's answer: how it ended (`out_of_time`: invoke again to resume) and its progress.
fn backfill_json(summary: &Summary) -> Value {
    let p = &summary.progress;
    let c = &p.counts;
    json!({
        "action": "backfill",
        "ending": ending(summary.ending),
        "resume": summary.ending == Ending::OutOfTime,
        "progress": {
            "customers": c.customers,
            "total": p.total,
            "this_run": p.this_run,
            "per_second": p.per_second,
            "eta_seconds": p.eta.map(|d| d.as_secs()),
            "written": c.written,
            "already_newer": c.already_newer,
            "after_deletion": c.after_deletion,
            "not_found": c.not_found,
            "failed": c.failed,
        },
        "failed_sample": summary.failed_sample,
        "started_at_ms": summary.started_at_ms,
        "finished_at_ms": summary.finished_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backfill_call_and_its_retries_end_before_the_run_must_stop() {
        let s = backfill_api_settings("http://127.0.0.1:1/graphql");
        assert!(s.retry.budget + s.request_timeout < BACKFILL_MARGIN, "{s:?}");
        assert!(s.retry.attempts > 1, "still patient");
    }

    #[test]
    fn schedules_and_manual_requests_name_their_action() {
        let cases = [
            (json!({}), Action::Drift),
            (json!({"action": "drift"}), Action::Drift),
            (json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}), Action::Drift),
            (json!({"action": "backfill"}), Action::Backfill { restart: false }),
            (json!({"action": "backfill", "restart": true}), Action::Backfill { restart: true }),
        ];
        for (event, want) in cases {
            assert_eq!(action_of(&event).unwrap(), want, "{event}");
        }
        for event in
            [json!({"action": "purge"}), json!({"action": "backfill", "restart": "yes"}), json!([1]), json!({"x": 1})]
        {
            let e = action_of(&event).unwrap_err();
            assert!(matches!(e, InvocationError::UnknownAction(_)) && !e.is_retryable(), "{event}: {e}");
        }
    }
}
