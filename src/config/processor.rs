//! The processor's configuration (the SQS side).

use std::num::NonZeroUsize;
use std::time::Duration;

use super::{ConfigError, Env, QueueUrl, TableName, invalid, positive, table_from_env, ttl_from_env};

pub const DEFAULT_PROCESSOR_CONCURRENCY: usize = 10;

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
