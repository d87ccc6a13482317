//! Configuration from the environment, parsed once per cold start. Anything missing or invalid
//! is a [`ConfigError`] that fails the init phase with a message naming the variable.

use std::num::NonZeroUsize;
use std::time::Duration;

use crate::ingest::secrets::SecretError;

mod bridge;
mod mirror_sync;
mod processor;
mod receiver;
mod status;
mod values;

pub use bridge::{ApiKeySource, BridgeConfig, CREDENTIALS_SECONDS, DEFAULT_EDGE_API_URL, MAX_WAIT_SECONDS};
pub use mirror_sync::{DEFAULT_DRIFT_SAMPLE, DEFAULT_STIGG_API_URL, MAX_DRIFT_SAMPLE, MirrorSyncConfig};
pub use processor::{DEFAULT_PROCESSOR_CONCURRENCY, ProcessorConfig};
pub use receiver::{ReceiverConfig, SecretSource};
pub use status::{DEFAULT_STATUS_URL, StatusConfig};
pub use values::{ApiKey, QueueUrl, SourceAllowList, TableName};

/// How long a key is remembered: longer than every way an event can come back. A message can
/// wait 14 days in the events queue (its retention), then up to 14 days in the DLQ after a redrive
/// creates it anew, so 35 days covers queue + DLQ + a week to act on an alarm. A shorter TTL lets
/// a redriven event that was already processed run its handlers again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(35 * 24 * 3600);
/// The shortest TTL accepted. A record must outlive the claim lease it carries (the invocation's
/// deadline; Lambda's longest timeout is 15 minutes) and Stigg's retry schedule (~2 minutes) by a
/// wide margin, or an expired record would let a second attempt claim a key still in flight.
pub const MIN_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("STIGG_WEBHOOK_SECRET is invalid: {0}")]
    Secret(#[source] SecretError),
    #[error("set one of STIGG_WEBHOOK_SECRET or STIGG_WEBHOOK_SECRET_PARAMETER, not both")]
    AmbiguousSecret,
    #[error("reading the secret from SSM parameter {name} failed: {cause}")]
    SecretParameter { name: String, cause: String },
    #[error("set one of STIGG_API_KEY or STIGG_API_KEY_PARAMETER, not both")]
    AmbiguousApiKey,
    #[error("set one of STIGG_API_KEY or STIGG_SERVER_KEY_PARAMETER, not both")]
    AmbiguousServerKey,
}

impl From<crate::ingest::secrets::FetchError> for ConfigError {
    fn from(e: crate::ingest::secrets::FetchError) -> Self {
        Self::SecretParameter { name: e.from, cause: e.detail }
    }
}

pub(crate) fn invalid(var: &'static str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid { var, reason: reason.to_string() }
}

/// Reads variables; a function so tests need not touch the process environment.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;

    /// A set, non-blank variable (blank counts as unset: templates often pass "").
    fn value(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.value(name).ok_or(ConfigError::Missing(name))
    }
}

/// The process environment.
#[derive(Clone, Copy, Debug)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }
}

/// A boolean variable: true/false (also 1/0, yes/no), any case; unset or blank is `default`.
pub(crate) fn boolean(env: &impl Env, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match env.value(var).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if ["true", "1", "yes"].contains(&v.as_str()) => Ok(true),
        Some(v) if ["false", "0", "no"].contains(&v.as_str()) => Ok(false),
        Some(v) => Err(invalid(var, format!("expected true or false, got {v:?}"))),
    }
}

fn table_from_env(env: &impl Env) -> Result<TableName, ConfigError> {
    TableName::parse(&env.required("IDEMPOTENCY_TABLE")?).map_err(|e| invalid("IDEMPOTENCY_TABLE", e))
}

fn ttl_from_env(env: &impl Env) -> Result<Duration, ConfigError> {
    let var = "IDEMPOTENCY_TTL_SECONDS";
    let ttl = Duration::from_secs(positive(env, var, DEFAULT_TTL.as_secs() as usize)?.get() as u64);
    if ttl < MIN_TTL {
        return Err(invalid(
            var,
            format!(
                "{} s is too short: a key must outlive the claim lease (the function timeout, at most 900 s) \
                 and Stigg's retries; use at least {} s (default {} s, longer than the queues' retention)",
                ttl.as_secs(),
                MIN_TTL.as_secs(),
                DEFAULT_TTL.as_secs()
            ),
        ));
    }
    Ok(ttl)
}

pub(crate) fn positive(env: &impl Env, var: &'static str, default: usize) -> Result<NonZeroUsize, ConfigError> {
    match env.value(var) {
        None => Ok(NonZeroUsize::new(default).expect("defaults are positive")),
        Some(v) => v.parse::<NonZeroUsize>().map_err(|_| invalid(var, format!("{v:?} is not a positive whole number"))),
    }
}

#[cfg(test)]
mod tests;
