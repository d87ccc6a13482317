//! The status function's configuration (Stigg's status page).

use std::time::Duration;

use super::{ConfigError, Env, invalid, positive};

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
