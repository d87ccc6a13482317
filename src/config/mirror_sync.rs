//! The `mirror-sync` function's configuration (drift check and backfill).

use std::num::NonZeroUsize;

use super::{ApiKey, ApiKeySource, ConfigError, Env, TableName, invalid, positive};

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
