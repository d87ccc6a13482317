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
pub const DEFAULT_MAX_BODY_BYTES: usize = 262_144;
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
}

impl From<crate::ingest::secrets::FetchError> for ConfigError {
    fn from(e: crate::ingest::secrets::FetchError) -> Self {
        Self::SecretParameter { name: e.from, cause: e.detail }
    }
}

fn invalid(var: &'static str, reason: impl ToString) -> ConfigError {
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
            max_body_bytes: positive(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?.get(),
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
        })
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

fn positive(env: &impl Env, var: &'static str, default: usize) -> Result<NonZeroUsize, ConfigError> {
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
        assert_eq!(c.max_body_bytes, 262_144);
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
            ("MAX_BODY_BYTES", "0"),
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

    #[test]
    fn processor_configuration() {
        let env = [("IDEMPOTENCY_TABLE", "t-1_x"), ("PROCESSOR_MAX_CONCURRENCY", "4")];
        let c = ProcessorConfig::from_env(&env).unwrap();
        assert_eq!(c.max_concurrency.get(), 4);
        assert!(c.dead_letter_queue.is_none());
        let env = [("IDEMPOTENCY_TABLE", "t-1_x"), ("PROCESSOR_MAX_CONCURRENCY", "0")];
        assert!(ProcessorConfig::from_env(&env).is_err());
        assert!(matches!(ProcessorConfig::from_env(&[("X", "y")]), Err(ConfigError::Missing("IDEMPOTENCY_TABLE"))));
    }
}
