//! The bridge's configuration (Stigg's durable-delivery queue into our events queue).

use std::num::NonZeroUsize;
use std::time::Duration;

use super::{ApiKey, ConfigError, Env, QueueUrl, invalid, positive};

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
