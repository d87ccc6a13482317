//! The functions' SDK configuration, read from what Lambda puts in every execution environment
//! rather than through `aws-config`'s default provider chains.
//!
//! A function deployed as this project deploys it (a zip on `provided.al2023`, on demand or with
//! provisioned concurrency; Lambda Managed Instances alike) finds `AWS_REGION` and the execution
//! role's `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` in its environment
//! ("Defined runtime environment variables" in the Lambda developer guide), and the environment
//! providers come first in the default chains, so those chains never get further. Their other
//! links (profile files, web identity and STS, the container and instance metadata endpoints)
//! were linked into every function all the same: with an STS client and an XML parser among
//! them, 0.8 MB of the receiver's binary and 0.6-1.2 MiB of its memory after the cold start
//! (BENCHMARKS.md, "The SDK configuration from Lambda's environment"). The one Lambda mode that
//! passes credentials otherwise, SnapStart (container credentials instead of the keys; for this
//! runtime only on container images), fails the cold start with a message that says so. The
//! developer tools and the tests keep the default chains.
//!
//! Read here as the default loader reads them: the region, the credentials (and
//! `AWS_ACCOUNT_ID`), `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`,
//! `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`, `AWS_USE_FIPS_ENDPOINT`, `AWS_USE_DUALSTACK_ENDPOINT`;
//! except that an invalid boolean fails the cold start naming it where the loader would log and
//! ignore it. The SDK settings not read here are named in a warning at the cold start when set
//! ([`IGNORED_SETTINGS`]).

use std::sync::Arc;

use aws_config::identity::IdentityCache;
use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

use crate::config::{ConfigError, Env, boolean};

/// SDK settings that `aws-config` would read from the environment and this configuration does
/// not. The credential sources after the environment are not listed: with Lambda's credentials
/// set, the default chain never reaches them either.
pub const IGNORED_SETTINGS: [&str; 11] = [
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SDK_UA_APP_ID",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE",
    "AWS_AUTH_SCHEME_PREFERENCE",
    "AWS_SIGV4A_SIGNING_REGION_SET",
    "AWS_REQUEST_CHECKSUM_CALCULATION",
    "AWS_RESPONSE_CHECKSUM_VALIDATION",
    "AWS_DISABLE_REQUEST_COMPRESSION",
    "AWS_REQUEST_MIN_COMPRESSION_SIZE_BYTES",
    "AWS_DISABLE_CLOCK_SKEW_CORRECTION",
];

/// The SDK configuration of a function, from `env`, with our timeouts and retries and the HTTPS
/// client `http_client` builds for the region read here (its trust store follows the region).
///
/// Stalled-stream protection is off: it fails a transfer that stays under its minimum
/// throughput for a grace period (20 s by default), and [`super::timeouts`] ends every attempt
/// at 2 s, so it could never fire first; it only added a throughput monitor and its timers to
/// both bodies of every request.
pub fn sdk_config<E>(
    env: &E,
    http_client: impl FnOnce(&str) -> Result<SharedHttpClient, ConfigError>,
) -> Result<SdkConfig, ConfigError>
where
    E: Env + Clone + Send + Sync + 'static,
{
    let region = region(env)?;
    let http_client = http_client(&region)?;
    let ignore_endpoints = boolean(env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", false)?;
    let mut builder = SdkConfig::builder();
    // As aws-config records a retry configuration set in code: a service may otherwise replace
    // an unmarked one with its own defaults (DynamoDB's attempts, for newer retry specs).
    builder.insert_origin("retry_config", aws_types::origin::Origin::shared_config());
    let mut builder = builder
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(credentials(env)?))
        .identity_cache(IdentityCache::lazy().build())
        .http_client(http_client)
        .timeout_config(super::timeouts())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .time_source(aws_smithy_async::time::SharedTimeSource::default())
        .use_fips(boolean(env, "AWS_USE_FIPS_ENDPOINT", false)?)
        .use_dual_stack(boolean(env, "AWS_USE_DUALSTACK_ENDPOINT", false)?);
    if let Some(sleep) = aws_smithy_async::rt::sleep::default_async_sleep() {
        builder = builder.sleep_impl(sleep);
    }
    if !ignore_endpoints {
        builder.set_endpoint_url(env.value("AWS_ENDPOINT_URL"));
        let env = env.clone();
        builder = builder.service_config(ServiceEndpoints { lookup: Arc::new(move |name: &str| env.value(name)) });
    }
    Ok(builder.build())
}

/// The function's region: `AWS_REGION`, which Lambda sets, else `AWS_DEFAULT_REGION`.
fn region(env: &impl Env) -> Result<String, ConfigError> {
    env.value("AWS_REGION").or_else(|| env.value("AWS_DEFAULT_REGION")).ok_or(ConfigError::Missing("AWS_REGION"))
}

/// The names of [`IGNORED_SETTINGS`] set in `env`, for the cold start's warning.
pub fn ignored_settings(env: &impl Env) -> Vec<&'static str> {
    IGNORED_SETTINGS.into_iter().filter(|name| env.value(name).is_some()).collect()
}

/// The execution role's credentials, read once: Lambda does not change a running process's
/// environment, so the SDK's environment provider would read the same values on every call.
fn credentials(env: &impl Env) -> Result<Credentials, ConfigError> {
    if env.value("AWS_ACCESS_KEY_ID").is_none() && env.value("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some() {
        return Err(crate::config::invalid(
            "AWS_ACCESS_KEY_ID",
            "unset, with container credentials instead (SnapStart): this function reads the execution role's keys \
             from the environment; deploy it without SnapStart",
        ));
    }
    let mut credentials = Credentials::builder()
        .access_key_id(env.required("AWS_ACCESS_KEY_ID")?)
        .secret_access_key(env.required("AWS_SECRET_ACCESS_KEY")?)
        .provider_name("Lambda environment");
    credentials.set_session_token(env.value("AWS_SESSION_TOKEN"));
    credentials.set_account_id(env.value("AWS_ACCOUNT_ID").map(Into::into));
    Ok(credentials.build())
}

/// `AWS_ENDPOINT_URL_<SERVICE>`, named as `aws-config` names it (the service id in upper case,
/// spaces as underscores), e.g. `AWS_ENDPOINT_URL_DYNAMODB`. Each SDK client asks when it is
/// built, so services added later are covered without a list here.
#[derive(Clone)]
struct ServiceEndpoints {
    lookup: Arc<Lookup>,
}

/// Reads one environment variable (the process's, or a test's).
type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl std::fmt::Debug for ServiceEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceEndpoints(environment)")
    }
}

impl LoadServiceConfig for ServiceEndpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        let name = format!("{}_{}", key.env(), key.service_id().to_uppercase().replace(' ', "_"));
        (self.lookup)(&name)
    }
}

#[cfg(test)]
mod tests;
