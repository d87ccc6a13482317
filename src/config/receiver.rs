//! The receiver's configuration (the function URL), with the values only it reads.

use std::time::Duration;

use crate::ingest::secrets::{RefreshPolicy, SecretSet};

use super::{
    ConfigError, Env, QueueUrl, SourceAllowList, TableName, boolean, invalid, positive, table_from_env, ttl_from_env,
};

/// Where the webhook secrets come from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    Inline(SecretSet),
    /// An SSM Parameter Store (SecureString) name, read at the cold start and re-read under
    /// `policy` (see [`crate::ingest::secrets::Secrets`]).
    Parameter {
        name: String,
        policy: RefreshPolicy,
    },
}

#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub secrets: SecretSource,
    pub table: TableName,
    pub queue: QueueUrl,
    pub ttl: Duration,
    pub max_body_bytes: usize,
    pub allowed_sources: Option<SourceAllowList>,
    /// Open the DynamoDB and SQS connections during the cold start (`WARM_UP_CONNECTIONS`,
    /// default false: measured, it moves ~2 ms from the first request into a longer init).
    pub warm_up: bool,
}

impl ReceiverConfig {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let inline = env.value("STIGG_WEBHOOK_SECRET");
        let parameter = env.value("STIGG_WEBHOOK_SECRET_PARAMETER");
        let secrets = match (inline, parameter) {
            (Some(_), Some(_)) => return Err(ConfigError::AmbiguousSecret),
            (Some(list), None) => SecretSource::Inline(SecretSet::parse(&list).map_err(ConfigError::Secret)?),
            (None, Some(name)) => SecretSource::Parameter { name, policy: refresh_policy(env)? },
            (None, None) => {
                return Err(ConfigError::Missing("STIGG_WEBHOOK_SECRET (or STIGG_WEBHOOK_SECRET_PARAMETER)"));
            }
        };
        let allowed_sources = env
            .value("ALLOWED_SOURCE_CIDRS")
            .map(|v| SourceAllowList::parse(&v).map_err(|e| invalid("ALLOWED_SOURCE_CIDRS", e)))
            .transpose()?;
        Ok(Self {
            secrets,
            table: table_from_env(env)?,
            queue: QueueUrl::parse(&env.required("EVENTS_QUEUE_URL")?).map_err(|e| invalid("EVENTS_QUEUE_URL", e))?,
            ttl: ttl_from_env(env)?,
            max_body_bytes: max_body_bytes(env)?,
            allowed_sources,
            warm_up: boolean(env, "WARM_UP_CONNECTIONS", false)?,
        })
    }
}

fn refresh_policy(env: &impl Env) -> Result<RefreshPolicy, ConfigError> {
    let default = RefreshPolicy::default();
    let seconds =
        |var, d: Duration| positive(env, var, d.as_secs() as usize).map(|n| Duration::from_secs(n.get() as u64));
    let policy = RefreshPolicy {
        min_interval: seconds("SECRET_REFRESH_SECONDS", default.min_interval)?,
        max_age: seconds("SECRET_MAX_AGE_SECONDS", default.max_age)?,
    };
    if policy.max_age < policy.min_interval {
        return Err(invalid("SECRET_MAX_AGE_SECONDS", "must be at least SECRET_REFRESH_SECONDS"));
    }
    Ok(policy)
}

/// `MAX_BODY_BYTES`: unset or 0 is the most the queues carry ([`MAX_EVENT_BYTES`]); a
/// larger value is refused, since such an event could be accepted and then never queued.
fn max_body_bytes(env: &impl Env) -> Result<usize, ConfigError> {
    use crate::aws::queue::MAX_EVENT_BYTES;
    let var = "MAX_BODY_BYTES";
    match env.value(var).as_deref().map(str::trim) {
        None | Some("" | "0") => Ok(MAX_EVENT_BYTES),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_EVENT_BYTES => Ok(n),
            Ok(n) => Err(invalid(
                var,
                format!("{n} is more than the queues carry with their attributes ({MAX_EVENT_BYTES})"),
            )),
            Err(_) => Err(invalid(var, format!("{v:?} is not a whole number of bytes"))),
        },
    }
}
