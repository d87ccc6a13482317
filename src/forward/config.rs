//! The forwarder's settings (`EVENT_BUS_*`, `EVENT_SOURCE`), read at cold start.

use std::time::Duration;

use crate::config::{ConfigError, Env, invalid, positive};

/// The source every forwarded event carries, unless `EVENT_SOURCE` says otherwise.
pub const DEFAULT_SOURCE: &str = "stigg.webhooks";

/// The largest entry, and the largest sum of one request's entries, by default: EventBridge
/// takes events up to 1 MB since 2026-01-29 ("More room to build: serverless services now support
/// payloads up to 1 MB", AWS Compute Blog,
/// <https://aws.amazon.com/blogs/compute/more-room-to-build-serverless-services-now-support-payloads-up-to-1-mb/>).
/// 1 MB read as 10^6 bytes, the smaller reading. `EVENT_BUS_MAX_ENTRY_BYTES=262144` restores the
/// former limit where a partition or a target needs it.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 1_000_000;

/// The longest the first entry of a PutEvents request waits for the others of its SQS batch. A
/// bound, not a delay: the request goes as soon as every running record of the batch has joined
/// it or ended (see [`crate::process::batch`]); it is reached only when a record is slow to get
/// there (a handler before the forwarder waiting on a retry).
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_millis(250);

/// A bus name or ARN, as PutEvents' `EventBusName` takes it (1-1600 characters,
/// `(arn:aws[\w-]*:events:[a-z]+-[a-z]+-[\w-]+:[0-9]{12}:event-bus/)?[/\.\-_A-Za-z0-9]+`:
/// <https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEventsRequestEntry.html>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBusName(String);

impl EventBusName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let name = if s.starts_with("arn:") {
            s.split_once(":event-bus/").map(|(_, n)| n).ok_or("an ARN that does not name an event bus")?
        } else {
            s
        };
        if name.is_empty() || s.len() > 1600 {
            return Err("empty or longer than 1600 characters".into());
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || "/.-_".contains(c)) {
            return Err(format!("{name:?} has characters a bus name cannot have"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The `Source` of every forwarded event: 1-256 characters, never `aws.` (AWS's own sources are
/// refused: <https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEventsRequestEntry.html>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSource(String);

impl EventSource {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s.len() > 256 {
            return Err("empty or longer than 256 characters".into());
        }
        if s.starts_with("aws.") {
            return Err("sources starting with \"aws.\" are AWS's own".into());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    pub bus: EventBusName,
    pub source: EventSource,
    pub max_entry_bytes: usize,
    pub batch_window: Duration,
}

impl ForwarderConfig {
    /// `None` unless `EVENT_BUS_NAME` is set.
    pub fn from_env(env: &impl Env) -> Result<Option<Self>, ConfigError> {
        let Some(bus) = env.value("EVENT_BUS_NAME") else {
            return Ok(None);
        };
        let bus = EventBusName::parse(&bus).map_err(|e| invalid("EVENT_BUS_NAME", e))?;
        let source = match env.value("EVENT_SOURCE") {
            Some(s) => EventSource::parse(&s).map_err(|e| invalid("EVENT_SOURCE", e))?,
            None => EventSource(DEFAULT_SOURCE.to_owned()),
        };
        let max_entry_bytes = positive(env, "EVENT_BUS_MAX_ENTRY_BYTES", DEFAULT_MAX_ENTRY_BYTES)?.get();
        if max_entry_bytes < 4096 {
            return Err(invalid("EVENT_BUS_MAX_ENTRY_BYTES", "below 4096: not even a reduced detail fits"));
        }
        let window = match env.value("EVENT_BUS_BATCH_WINDOW_MS") {
            None => DEFAULT_BATCH_WINDOW,
            Some(v) => {
                v.parse::<u64>().ok().filter(|ms| *ms <= 10_000).map(Duration::from_millis).ok_or_else(|| {
                    invalid("EVENT_BUS_BATCH_WINDOW_MS", format!("{v:?} is not 0-10000 (milliseconds)"))
                })?
            }
        };
        Ok(Some(Self { bus, source, max_entry_bytes, batch_window: window }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Vars(HashMap<&'static str, &'static str>);

    impl Env for Vars {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| (*v).to_owned())
        }
    }

    fn config(vars: &[(&'static str, &'static str)]) -> Result<Option<ForwarderConfig>, ConfigError> {
        ForwarderConfig::from_env(&Vars(vars.iter().copied().collect()))
    }

    #[test]
    fn off_unless_a_bus_is_named_and_defaults_otherwise() {
        assert!(config(&[]).unwrap().is_none());
        assert!(config(&[("EVENT_BUS_NAME", " ")]).unwrap().is_none());
        let c = config(&[("EVENT_BUS_NAME", "stigg")]).unwrap().unwrap();
        assert_eq!(c.source.as_str(), "stigg.webhooks");
        assert_eq!(c.max_entry_bytes, 1_000_000);
        assert_eq!(c.batch_window, Duration::from_millis(250));
        let arn = "arn:aws:events:eu-west-1:123456789012:event-bus/stigg-prod";
        assert_eq!(config(&[("EVENT_BUS_NAME", arn)]).unwrap().unwrap().bus.as_str(), arn);
    }

    #[test]
    fn what_eventbridge_would_refuse_is_refused_at_cold_start() {
        for vars in [
            vec![("EVENT_BUS_NAME", "has space")],
            vec![("EVENT_BUS_NAME", "arn:aws:sqs:eu-west-1:123456789012:q")],
            vec![("EVENT_BUS_NAME", "b"), ("EVENT_SOURCE", "aws.stigg")],
            vec![("EVENT_BUS_NAME", "b"), ("EVENT_BUS_MAX_ENTRY_BYTES", "100")],
            vec![("EVENT_BUS_NAME", "b"), ("EVENT_BUS_BATCH_WINDOW_MS", "50000")],
        ] {
            let err = config(&vars).unwrap_err().to_string();
            assert!(err.contains(vars.last().unwrap().0), "{err}");
        }
    }
}
