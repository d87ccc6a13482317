//! What the `mirror-sync` function is asked to do: its schedule's event (or `{"action":"drift"}`)
//! runs one drift check; `{"action":"backfill","restart":bool}` runs the backfill until shortly
//! before the invocation's deadline.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::drift::{DriftCheck, DriftError};
use crate::stigg::api::CustomerDirectory;

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
    /// This build has no backfill to run.
    #[error("the backfill is not part of this build of mirror-sync")]
    BackfillUnavailable,
}

impl InvocationError {
    /// Whether the next scheduled run (or the same request again) may pass.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Drift(e) => e.is_retryable(),
            Self::UnknownAction(_) | Self::BackfillUnavailable => false,
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
pub struct MirrorSync<D: ?Sized> {
    drift: DriftCheck<D>,
}

impl<D: CustomerDirectory + ?Sized> MirrorSync<D> {
    pub fn new(drift: DriftCheck<D>) -> Self {
        Self { drift }
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
            Action::Backfill { .. } => Err(InvocationError::BackfillUnavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
