//! Configuration from the environment, parsed once per cold start. Anything missing or invalid
//! is a [`ConfigError`] that fails the init phase with a message naming the variable.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use ipnet::IpNet;

use crate::ingest::secrets::{RefreshPolicy, SecretError, SecretSet};

/// How long a key is remembered: longer than every way an event can come back. A message can
/// wait 14 days in the events queue (its retention), then up to 14 days in the DLQ after a redrive
/// creates it anew, so 35 days covers queue + DLQ + a week to act on an alarm. A shorter TTL lets
/// a redriven event that was already processed run its handlers again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(35 * 24 * 3600);
/// The shortest TTL accepted. A record must outlive the claim lease it carries (the invocation's
/// deadline; Lambda's longest timeout is 15 minutes) and Stigg's retry schedule (~2 minutes) by a
/// wide margin, or an expired record would let a second attempt claim a key still in flight.
pub const MIN_TTL: Duration = Duration::from_secs(3600);
pub const DEFAULT_PROCESSOR_CONCURRENCY: usize = 10;

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

/// A DynamoDB table name (3-255 of `[A-Za-z0-9_.-]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName(String);

impl TableName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_len = (3..=255).contains(&s.len());
        let ok_chars = s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if ok_len && ok_chars {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("{s:?} is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An SQS queue URL; a name ending in `.fifo` is a FIFO queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrl(String);

impl QueueUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        if (s.starts_with("https://") || s.starts_with("http://")) && s.len() > 10 {
            Ok(Self(s.trim_end_matches('/').to_owned()))
        } else {
            Err(format!("{s:?} is not a queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"))
        }
    }

    pub fn is_fifo(&self) -> bool {
        self.0.ends_with(".fifo")
    }

    /// The region in an AWS queue URL (`https://sqs.<region>.amazonaws.com/...`, or the legacy
    /// `https://<region>.queue.amazonaws.com/...`); `None` for other hosts (local emulators).
    pub fn region(&self) -> Option<&str> {
        let host = self.0.split("://").nth(1)?.split('/').next()?;
        let host = host.split(':').next()?;
        let region = if let Some(rest) = host.strip_prefix("sqs.") {
            rest.split_once(".amazonaws.com").map(|(r, _)| r)?
        } else {
            host.split_once(".queue.amazonaws.com").map(|(r, _)| r)?
        };
        let valid =
            !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        valid.then_some(region)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Source addresses allowed to call the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAllowList(Vec<IpNet>);

impl SourceAllowList {
    /// Parses a comma list of CIDRs or bare addresses (a bare address is a /32 or /128).
    pub fn parse(list: &str) -> Result<Self, String> {
        let nets = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is not a CIDR"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if nets.is_empty() {
            return Err("no CIDR given".into());
        }
        Ok(Self(nets))
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4 client may reach us as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

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

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub table: TableName,
    pub ttl: Duration,
    pub dead_letter_queue: Option<QueueUrl>,
    pub max_concurrency: NonZeroUsize,
    /// `ENTITLEMENT_MIRROR_TABLE`: registers the built-in entitlement mirror (see
    /// [`crate::mirror`]).
    pub mirror_table: Option<TableName>,
    /// `EVENT_BUS_NAME` (and `EVENT_SOURCE`, `EVENT_BUS_*`): registers the built-in EventBridge
    /// forwarder (see [`crate::forward`]).
    pub forwarder: Option<crate::forward::ForwarderConfig>,
}

impl ProcessorConfig {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        Ok(Self {
            table: table_from_env(env)?,
            ttl: ttl_from_env(env)?,
            dead_letter_queue: env
                .value("DEAD_LETTER_QUEUE_URL")
                .map(|v| QueueUrl::parse(&v).map_err(|e| invalid("DEAD_LETTER_QUEUE_URL", e)))
                .transpose()?,
            max_concurrency: positive(env, "PROCESSOR_MAX_CONCURRENCY", DEFAULT_PROCESSOR_CONCURRENCY)?,
            mirror_table: env
                .value("ENTITLEMENT_MIRROR_TABLE")
                .map(|v| TableName::parse(&v).map_err(|e| invalid("ENTITLEMENT_MIRROR_TABLE", e)))
                .transpose()?,
            forwarder: crate::forward::ForwarderConfig::from_env(env)?,
        })
    }
}

/// A Stigg server API key (full access, or scoped with "Event Queue: Read"). Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the API key is empty".into());
        }
        // It travels in an HTTP header: printable ASCII only.
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the API key has characters an HTTP header cannot carry".into());
        }
        Ok(Self(s.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(redacted)")
    }
}

/// Where the bridge's Stigg API key comes from.
#[derive(Debug, Clone)]
pub enum ApiKeySource {
    /// `STIGG_API_KEY`, for local use.
    Inline(ApiKey),
    /// `STIGG_API_KEY_PARAMETER`: an SSM SecureString, read at the cold start and again when
    /// Stigg refuses the key (a rotated key needs no redeploy).
    Parameter(String),
}

pub const DEFAULT_EDGE_API_URL: &str = "https://edge.api.stigg.io";
/// Stigg's documented range for `durationSeconds`.
pub const CREDENTIALS_SECONDS: std::ops::RangeInclusive<u64> = 900..=3600;
/// SQS's longest long poll.
pub const MAX_WAIT_SECONDS: u64 = 20;

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Stigg's durable-delivery queue (in Stigg's account).
    pub stigg_queue: QueueUrl,
    pub api_key: ApiKeySource,
    /// The Edge API's base URL (`STIGG_EDGE_API_URL`).
    pub edge_api_url: String,
    /// Our events queue, which the processor consumes.
    pub events_queue: QueueUrl,
    /// `durationSeconds` asked of the Edge API (`STIGG_CREDENTIALS_SECONDS`, 900-3600).
    pub credentials_duration: Duration,
    /// Long-poll wait (`BRIDGE_WAIT_SECONDS`, 1-20, default 20).
    pub wait: Duration,
    /// Stop the invocation after this many empty polls in a row (`BRIDGE_MAX_EMPTY_POLLS`);
    /// unset: poll until the invocation's deadline.
    pub max_empty_polls: Option<NonZeroUsize>,
    /// An endpoint for Stigg's queue other than the one its URL's region implies
    /// (`STIGG_SQS_ENDPOINT_URL`: local stand-ins only).
    pub stigg_sqs_endpoint: Option<String>,
}

impl BridgeConfig {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let url = |var: &'static str| -> Result<QueueUrl, ConfigError> {
            QueueUrl::parse(&env.required(var)?).map_err(|e| invalid(var, e))
        };
        let api_key = match (env.value("STIGG_API_KEY"), env.value("STIGG_API_KEY_PARAMETER")) {
            (Some(_), Some(_)) => return Err(ConfigError::AmbiguousApiKey),
            (Some(key), None) => ApiKeySource::Inline(ApiKey::parse(&key).map_err(|e| invalid("STIGG_API_KEY", e))?),
            (None, Some(name)) => ApiKeySource::Parameter(name),
            (None, None) => return Err(ConfigError::Missing("STIGG_API_KEY_PARAMETER (or STIGG_API_KEY)")),
        };
        let edge_api_url = env.value("STIGG_EDGE_API_URL").unwrap_or_else(|| DEFAULT_EDGE_API_URL.to_owned());
        if !(edge_api_url.starts_with("https://") || edge_api_url.starts_with("http://")) {
            return Err(invalid("STIGG_EDGE_API_URL", format!("{edge_api_url:?} is not an http(s) URL")));
        }
        let seconds = positive(env, "STIGG_CREDENTIALS_SECONDS", *CREDENTIALS_SECONDS.end() as usize)?.get() as u64;
        if !CREDENTIALS_SECONDS.contains(&seconds) {
            return Err(invalid("STIGG_CREDENTIALS_SECONDS", format!("{seconds} is outside Stigg's range 900-3600")));
        }
        let wait = positive(env, "BRIDGE_WAIT_SECONDS", MAX_WAIT_SECONDS as usize)?.get() as u64;
        if wait > MAX_WAIT_SECONDS {
            return Err(invalid("BRIDGE_WAIT_SECONDS", format!("{wait} is longer than SQS's 20 s long poll")));
        }
        let max_empty_polls = match env.value("BRIDGE_MAX_EMPTY_POLLS") {
            None => None,
            Some(_) => Some(positive(env, "BRIDGE_MAX_EMPTY_POLLS", 1)?),
        };
        Ok(Self {
            stigg_queue: url("STIGG_QUEUE_URL")?,
            api_key,
            edge_api_url: edge_api_url.trim_end_matches('/').to_owned(),
            events_queue: url("EVENTS_QUEUE_URL")?,
            credentials_duration: Duration::from_secs(seconds),
            wait: Duration::from_secs(wait),
            max_empty_polls,
            stigg_sqs_endpoint: env.value("STIGG_SQS_ENDPOINT_URL"),
        })
    }
}

pub const DEFAULT_STIGG_API_URL: &str = crate::stigg::api::DEFAULT_API_URL;
/// Customers one drift-check run samples by default.
pub const DEFAULT_DRIFT_SAMPLE: usize = 50;
/// The most a run samples: one page of Stigg's customer listing (the client asks at most this
/// many; Stigg documents no larger page). Checking more customers a day is a shorter schedule.
pub const MAX_DRIFT_SAMPLE: usize = crate::stigg::api::graphql::MAX_PAGE;

/// The `mirror-sync` function: the drift check and the backfill against Stigg's API.
#[derive(Debug, Clone)]
pub struct MirrorSyncConfig {
    /// `ENTITLEMENT_MIRROR_TABLE`.
    pub table: TableName,
    /// `STIGG_API_URL`: Stigg's GraphQL endpoint.
    pub api_url: String,
    /// The server key: `STIGG_SERVER_KEY_PARAMETER` (an SSM SecureString with the environment's
    /// full-access key; the bridge's may be scoped to "Event Queue: Read", which GraphQL refuses),
    /// or `STIGG_API_KEY` inline for local use.
    pub api_key: ApiKeySource,
    /// `MIRROR_DRIFT_SAMPLE_SIZE`: customers per drift-check run (1 to [`MAX_DRIFT_SAMPLE`]).
    pub drift_sample: NonZeroUsize,
}

impl MirrorSyncConfig {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let table = TableName::parse(&env.required("ENTITLEMENT_MIRROR_TABLE")?)
            .map_err(|e| invalid("ENTITLEMENT_MIRROR_TABLE", e))?;
        let api_key = match (env.value("STIGG_API_KEY"), env.value("STIGG_SERVER_KEY_PARAMETER")) {
            (Some(_), Some(_)) => return Err(ConfigError::AmbiguousServerKey),
            (Some(key), None) => ApiKeySource::Inline(ApiKey::parse(&key).map_err(|e| invalid("STIGG_API_KEY", e))?),
            (None, Some(name)) => ApiKeySource::Parameter(name),
            (None, None) => return Err(ConfigError::Missing("STIGG_SERVER_KEY_PARAMETER (or STIGG_API_KEY)")),
        };
        let api_url = env.value("STIGG_API_URL").unwrap_or_else(|| DEFAULT_STIGG_API_URL.to_owned());
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            return Err(invalid("STIGG_API_URL", format!("{api_url:?} is not an http(s) URL")));
        }
        let drift_sample = positive(env, "MIRROR_DRIFT_SAMPLE_SIZE", DEFAULT_DRIFT_SAMPLE)?;
        if drift_sample.get() > MAX_DRIFT_SAMPLE {
            return Err(invalid(
                "MIRROR_DRIFT_SAMPLE_SIZE",
                format!(
                    "{drift_sample} is more than one page of Stigg's customer listing (at most {MAX_DRIFT_SAMPLE})"
                ),
            ));
        }
        Ok(Self { table, api_url, api_key, drift_sample })
    }
}

pub const DEFAULT_STATUS_URL: &str = "https://status.stigg.io/proxy/status.stigg.io/component_impacts";

#[derive(Debug, Clone)]
pub struct StatusConfig {
    /// The status page's component-impacts endpoint (`STIGG_STATUS_URL`).
    pub url: String,
    /// How far back uptime and incidents are read (`STIGG_STATUS_WINDOW_HOURS`, default 24).
    pub window: Duration,
}

impl StatusConfig {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let url = env.value("STIGG_STATUS_URL").unwrap_or_else(|| DEFAULT_STATUS_URL.to_owned());
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(invalid("STIGG_STATUS_URL", format!("{url:?} is not an http(s) URL")));
        }
        let hours = positive(env, "STIGG_STATUS_WINDOW_HOURS", 24)?.get() as u64;
        Ok(Self { url, window: Duration::from_secs(hours * 3600) })
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

fn boolean(env: &impl Env, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match env.value(var).map(|v| v.to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if ["true", "1", "yes"].contains(&v.as_str()) => Ok(true),
        Some(v) if ["false", "0", "no"].contains(&v.as_str()) => Ok(false),
        Some(v) => Err(invalid(var, format!("expected true or false, got {v:?}"))),
    }
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

pub(crate) fn positive(env: &impl Env, var: &'static str, default: usize) -> Result<NonZeroUsize, ConfigError> {
    match env.value(var) {
        None => Ok(NonZeroUsize::new(default).expect("defaults are positive")),
        Some(v) => v.parse::<NonZeroUsize>().map_err(|_| invalid(var, format!("{v:?} is not a positive whole number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [(&str, &str); 3] = [
        ("STIGG_WEBHOOK_SECRET", "secret-one-xyz,secret-two-xyz"),
        ("IDEMPOTENCY_TABLE", "stigg-idempotency"),
        ("EVENTS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/stigg-events"),
    ];

    #[test]
    fn minimal_receiver_configuration_gets_documented_defaults() {
        let c = ReceiverConfig::from_env(&BASE).unwrap();
        assert_eq!(c.ttl, Duration::from_secs(3_024_000));
        assert_eq!(c.max_body_bytes, 1_040_384, "what SQS carries less the attribute reserve");
        let zero = [BASE[0], BASE[1], BASE[2], ("MAX_BODY_BYTES", "0")];
        assert_eq!(ReceiverConfig::from_env(&zero).unwrap().max_body_bytes, 1_040_384);
        assert!(c.allowed_sources.is_none());
        assert!(!c.queue.is_fifo());
        assert!(matches!(c.secrets, SecretSource::Inline(ref s) if s.len() == 2));
        assert!(!c.warm_up);
        let on = [BASE[0], BASE[1], BASE[2], ("WARM_UP_CONNECTIONS", "TRUE")];
        assert!(ReceiverConfig::from_env(&on).unwrap().warm_up);
    }

    #[test]
    fn every_missing_variable_is_named_in_the_error() {
        for var in ["IDEMPOTENCY_TABLE", "EVENTS_QUEUE_URL", "STIGG_WEBHOOK_SECRET"] {
            let env: Vec<_> = BASE.iter().filter(|(k, _)| *k != var).copied().collect();
            let env: [(&str, &str); 2] = env.try_into().unwrap();
            let err = ReceiverConfig::from_env(&env).unwrap_err().to_string();
            assert!(err.contains(var), "{err}");
        }
    }

    #[test]
    fn invalid_values_are_refused_with_the_variable_name() {
        let cases = [
            ("MAX_BODY_BYTES", "1040385"),
            ("MAX_BODY_BYTES", "lots"),
            ("IDEMPOTENCY_TTL_SECONDS", "-5"),
            ("ALLOWED_SOURCE_CIDRS", "18.119.35.43/33"),
            ("ALLOWED_SOURCE_CIDRS", "not-an-ip"),
            ("WARM_UP_CONNECTIONS", "sometimes"),
        ];
        for (var, value) in cases {
            let env = [BASE[0], BASE[1], BASE[2], (var, value)];
            let err = ReceiverConfig::from_env(&env).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
        }
        let env = [BASE[0], ("IDEMPOTENCY_TABLE", "a b"), BASE[2]];
        assert!(ReceiverConfig::from_env(&env).is_err());
        let env = [BASE[0], BASE[1], ("EVENTS_QUEUE_URL", "stigg-events")];
        assert!(ReceiverConfig::from_env(&env).is_err());
    }

    #[test]
    fn secret_from_ssm_parameter_or_inline_but_not_both() {
        let env = [BASE[1], BASE[2], ("STIGG_WEBHOOK_SECRET_PARAMETER", "/stigg/secret")];
        let c = ReceiverConfig::from_env(&env).unwrap();
        assert!(matches!(c.secrets, SecretSource::Parameter { ref name, policy }
            if name == "/stigg/secret" && policy == RefreshPolicy::default()));
        let env = [BASE[0], BASE[1], BASE[2], ("STIGG_WEBHOOK_SECRET_PARAMETER", "/stigg/secret")];
        assert!(matches!(ReceiverConfig::from_env(&env), Err(ConfigError::AmbiguousSecret)));
        // Blank counts as unset, as CloudFormation often passes "".
        let env = [BASE[0], BASE[1], BASE[2], ("STIGG_WEBHOOK_SECRET_PARAMETER", " ")];
        assert!(ReceiverConfig::from_env(&env).is_ok());
    }

    #[test]
    fn the_default_ttl_outlives_the_events_queue_and_the_dlq() {
        let fourteen_days = 14 * 24 * 3600;
        assert!(DEFAULT_TTL.as_secs() > 2 * fourteen_days, "queue retention + DLQ retention after a redrive");
    }

    #[test]
    fn a_ttl_not_comfortably_longer_than_any_function_timeout_fails_the_cold_start() {
        for ttl in ["60", "900", "3599"] {
            let env = [BASE[0], BASE[1], BASE[2], ("IDEMPOTENCY_TTL_SECONDS", ttl)];
            let err = ReceiverConfig::from_env(&env).unwrap_err().to_string();
            assert!(err.contains("IDEMPOTENCY_TTL_SECONDS"), "{err}");
            let env = [("IDEMPOTENCY_TABLE", "t-1_x"), ("IDEMPOTENCY_TTL_SECONDS", ttl)];
            assert!(ProcessorConfig::from_env(&env).is_err(), "{ttl}");
        }
        let env = [BASE[0], BASE[1], BASE[2], ("IDEMPOTENCY_TTL_SECONDS", "3600")];
        assert!(ReceiverConfig::from_env(&env).is_ok());
    }

    #[test]
    fn secret_refresh_settings() {
        let env = [
            BASE[1],
            BASE[2],
            ("STIGG_WEBHOOK_SECRET_PARAMETER", "/s"),
            ("SECRET_REFRESH_SECONDS", "5"),
            ("SECRET_MAX_AGE_SECONDS", "30"),
        ];
        let c = ReceiverConfig::from_env(&env).unwrap();
        assert!(matches!(c.secrets, SecretSource::Parameter { policy, .. }
            if policy.min_interval == Duration::from_secs(5) && policy.max_age == Duration::from_secs(30)));
        let env = [
            BASE[1],
            BASE[2],
            ("STIGG_WEBHOOK_SECRET_PARAMETER", "/s"),
            ("SECRET_REFRESH_SECONDS", "60"),
            ("SECRET_MAX_AGE_SECONDS", "30"),
        ];
        assert!(ReceiverConfig::from_env(&env).unwrap_err().to_string().contains("SECRET_MAX_AGE_SECONDS"));
    }

    #[test]
    fn fifo_queue_is_recognised_by_its_url() {
        let env = [BASE[0], BASE[1], ("EVENTS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/events.fifo")];
        assert!(ReceiverConfig::from_env(&env).unwrap().queue.is_fifo());
    }

    #[test]
    fn allow_list_matches_cidrs_bare_addresses_and_mapped_ipv4() {
        let list = SourceAllowList::parse("18.119.35.43, 10.0.0.0/8,2001:db8::/32").unwrap();
        assert!(list.allows("18.119.35.43".parse().unwrap()));
        assert!(list.allows("10.1.2.3".parse().unwrap()));
        assert!(list.allows("::ffff:18.119.35.43".parse().unwrap()));
        assert!(list.allows("2001:db8::1".parse().unwrap()));
        assert!(!list.allows("18.119.35.44".parse().unwrap()));
        assert!(!list.allows("127.0.0.1".parse().unwrap()));
    }

    const BRIDGE: [(&str, &str); 3] = [
        ("STIGG_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/210987654321/customer-events"),
        ("STIGG_API_KEY_PARAMETER", "/stigg/api-key"),
        ("EVENTS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/stigg-events"),
    ];

    #[test]
    fn minimal_bridge_configuration_gets_documented_defaults() {
        let c = BridgeConfig::from_env(&BRIDGE).unwrap();
        assert!(matches!(c.api_key, ApiKeySource::Parameter(ref n) if n == "/stigg/api-key"));
        assert_eq!(c.edge_api_url, "https://edge.api.stigg.io");
        assert_eq!(c.credentials_duration, Duration::from_secs(3600));
        assert_eq!(c.wait, Duration::from_secs(20));
        assert!(c.max_empty_polls.is_none() && c.stigg_sqs_endpoint.is_none());
        assert_eq!(c.stigg_queue.region(), Some("eu-west-1"));
    }

    #[test]
    fn bridge_settings_outside_their_documented_range_are_refused_by_name() {
        for (var, value) in [
            ("STIGG_CREDENTIALS_SECONDS", "600"),
            ("STIGG_CREDENTIALS_SECONDS", "7200"),
            ("BRIDGE_WAIT_SECONDS", "21"),
            ("BRIDGE_MAX_EMPTY_POLLS", "0"),
            ("STIGG_EDGE_API_URL", "edge.api.stigg.io"),
        ] {
            let env = [BRIDGE[0], BRIDGE[1], BRIDGE[2], (var, value)];
            let err = BridgeConfig::from_env(&env).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
        }
        let both = [BRIDGE[0], BRIDGE[1], BRIDGE[2], ("STIGG_API_KEY", "key")];
        assert!(matches!(BridgeConfig::from_env(&both), Err(ConfigError::AmbiguousApiKey)));
        let inline = [BRIDGE[0], ("STIGG_API_KEY", "server-key"), BRIDGE[2]];
        let c = BridgeConfig::from_env(&inline).unwrap();
        assert!(matches!(c.api_key, ApiKeySource::Inline(ref k) if k.expose() == "server-key"));
        assert!(!format!("{c:?}").contains("server-key"), "the key is never printed");
    }

    #[test]
    fn the_region_of_a_queue_comes_from_its_url() {
        let region = |u: &str| QueueUrl::parse(u).unwrap().region().map(str::to_owned);
        assert_eq!(region("https://sqs.eu-west-1.amazonaws.com/1/q").as_deref(), Some("eu-west-1"));
        assert_eq!(region("https://sqs.cn-north-1.amazonaws.com.cn/1/q").as_deref(), Some("cn-north-1"));
        assert_eq!(region("https://us-west-2.queue.amazonaws.com/1/q").as_deref(), Some("us-west-2"));
        assert_eq!(region("http://127.0.0.1:4566/000000000000/q"), None);
    }

    #[test]
    fn status_configuration() {
        let c = StatusConfig::from_env(&[("X", "y")]).unwrap();
        assert_eq!(c.url, DEFAULT_STATUS_URL);
        assert_eq!(c.window, Duration::from_secs(86_400));
        assert!(StatusConfig::from_env(&[("STIGG_STATUS_URL", "status.stigg.io")]).is_err());
    }

    #[test]
    fn mirror_sync_configuration() {
        let env = [("ENTITLEMENT_MIRROR_TABLE", "stigg-mirror"), ("STIGG_SERVER_KEY_PARAMETER", "/stigg/server-key")];
        let c = MirrorSyncConfig::from_env(&env).unwrap();
        assert_eq!(c.table.as_str(), "stigg-mirror");
        assert_eq!(c.api_url, "https://api.stigg.io/graphql");
        assert!(matches!(c.api_key, ApiKeySource::Parameter(ref n) if n == "/stigg/server-key"));
        assert_eq!(c.drift_sample.get(), DEFAULT_DRIFT_SAMPLE);
        let local = [
            ("ENTITLEMENT_MIRROR_TABLE", "stigg-mirror"),
            ("STIGG_API_KEY", "server-local-key"),
            ("STIGG_API_URL", "http://127.0.0.1:4000/graphql"),
            ("MIRROR_DRIFT_SAMPLE_SIZE", "100"),
        ];
        let c = MirrorSyncConfig::from_env(&local).unwrap();
        assert!(matches!(c.api_key, ApiKeySource::Inline(ref k) if k.expose() == "server-local-key"));
        assert!(!format!("{c:?}").contains("server-local-key"), "the key is never printed");
        assert_eq!((c.api_url.as_str(), c.drift_sample.get()), ("http://127.0.0.1:4000/graphql", 100));
    }

    #[test]
    fn mirror_sync_settings_are_refused_by_name() {
        let base = [("ENTITLEMENT_MIRROR_TABLE", "stigg-mirror"), ("STIGG_SERVER_KEY_PARAMETER", "/k")];
        for (var, value) in [
            ("MIRROR_DRIFT_SAMPLE_SIZE", "0"),
            ("MIRROR_DRIFT_SAMPLE_SIZE", "101"),
            ("STIGG_API_URL", "api.stigg.io/graphql"),
            ("ENTITLEMENT_MIRROR_TABLE", "no spaces"),
        ] {
            // The first of a name wins: the case under test comes first.
            let env = [(var, value), base[0], base[1]];
            let err = MirrorSyncConfig::from_env(&env).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
        }
        let both = [base[0], base[1], ("STIGG_API_KEY", "k")];
        assert!(matches!(MirrorSyncConfig::from_env(&both), Err(ConfigError::AmbiguousServerKey)));
        let none = [base[0]];
        assert!(MirrorSyncConfig::from_env(&none).unwrap_err().to_string().contains("STIGG_SERVER_KEY_PARAMETER"));
    }

    #[test]
    fn processor_configuration() {
        let env = [("IDEMPOTENCY_TABLE", "t-1_x"), ("PROCESSOR_MAX_CONCURRENCY", "4")];
        let c = ProcessorConfig::from_env(&env).unwrap();
        assert_eq!(c.max_concurrency.get(), 4);
        assert!(c.dead_letter_queue.is_none());
        assert!(c.mirror_table.is_none(), "the mirror is opt-in");
        let env = [("IDEMPOTENCY_TABLE", "t-1_x"), ("ENTITLEMENT_MIRROR_TABLE", "stigg-mirror")];
        assert_eq!(ProcessorConfig::from_env(&env).unwrap().mirror_table.unwrap().as_str(), "stigg-mirror");
        let env = [("IDEMPOTENCY_TABLE", "t-1_x"), ("ENTITLEMENT_MIRROR_TABLE", "no spaces")];
        assert!(ProcessorConfig::from_env(&env).unwrap_err().to_string().contains("ENTITLEMENT_MIRROR_TABLE"));
        let env = [("IDEMPOTENCY_TABLE", "t-1_x"), ("PROCESSOR_MAX_CONCURRENCY", "0")];
        assert!(ProcessorConfig::from_env(&env).is_err());
        assert!(matches!(ProcessorConfig::from_env(&[("X", "y")]), Err(ConfigError::Missing("IDEMPOTENCY_TABLE"))));
    }
}
