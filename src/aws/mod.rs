//! The AWS adapters: [`claim`] (DynamoDB claim protocol), [`queue`] (SQS), [`sdk_config`] (the
//! SDK configuration from Lambda's environment), and here the SDK set-up shared by the
//! functions: one HTTPS client (rustls + ring), one `SdkConfig` built once per cold start, and
//! bounded timeouts so a slow dependency turns into a clean 503 or a retried record before
//! Lambda's own deadline kills the invocation.

pub mod claim;
pub mod queue;
pub mod sdk_config;
pub mod tls;

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::identity::{
    IdentityFuture, ResolveCachedIdentity, SharedIdentityCache, SharedIdentityResolver,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::config::{ConfigError, ProcessEnv};
use crate::ingest::secrets::{FetchError, SecretFetch, SecretSet};

/// The longest one attempt of an SDK call may take (see [`timeouts`]).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest one SDK call may take, retries included (see [`timeouts`]).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-attempt and whole-operation limits. Three attempts of at most 2 s fit in the receiver's
/// short timeout with room to roll a claim back.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The HTTPS client of the developer tools (`make replay`, the simulator) and the tests: the
/// system store, as a workstation behind a TLS-inspecting proxy expects, plus `AWS_CA_BUNDLE`.
pub fn tool_http_client() -> Result<aws_smithy_runtime_api::client::http::SharedHttpClient, ConfigError> {
    https_client(tls::Roots::System)
}

fn https_client(roots: tls::Roots) -> Result<aws_smithy_runtime_api::client::http::SharedHttpClient, ConfigError> {
    let context = tls::tls_context(roots, std::env::var(tls::CA_BUNDLE_VAR).ok().as_deref())?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .tls_context(context)
        .build_https())
}

/// The SDK configuration of a Lambda function: Lambda's environment ([`sdk_config`]) with the
/// [`timeouts`], three attempts per call, and one HTTPS client for every SDK client (hyper 1 +
/// rustls with ring) trusting what [`tls`] says for the function's region: Amazon Trust Services'
/// roots (the system store in the China and isolated regions), plus `AWS_CA_BUNDLE`'s
/// certificates when set. Logs a warning naming any SDK setting in the environment that it does
/// not read.
pub fn load_sdk_config() -> Result<SdkConfig, ConfigError> {
    let ignored = sdk_config::ignored_settings(&ProcessEnv);
    if !ignored.is_empty() {
        tracing::warn!(settings = ?ignored, "these AWS SDK settings are not read by this function and have no effect");
    }
    // The roots follow the region the SDK will use: sdk_config reads it once for both.
    sdk_config::sdk_config(&ProcessEnv, |region| https_client(tls::Roots::for_region(Some(region))))
}

/// The comma list of webhook secrets in an SSM SecureString parameter, read at the cold start
/// and again whenever [`crate::ingest::secrets::Secrets`] decides (a rotation needs no redeploy).
pub struct SecretParameter {
    client: aws_sdk_ssm::Client,
    name: String,
}

impl SecretParameter {
    pub fn new(sdk: &SdkConfig, name: impl Into<String>) -> Self {
        Self { client: aws_sdk_ssm::Client::new(sdk), name: name.into() }
    }
}

/// The decrypted value of a SecureString parameter.
async fn read_secure_parameter(client: &aws_sdk_ssm::Client, name: &str) -> Result<String, FetchError> {
    let fail = |detail: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| FetchError {
        from: format!("SSM parameter {name}"),
        detail,
        source,
    };
    let out = client
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| fail(aws_sdk_ssm::error::DisplayErrorContext(&e).to_string(), Some(Box::new(e))))?;
    out.parameter()
        .and_then(|p| p.value())
        .map(str::to_owned)
        .ok_or_else(|| fail("parameter has no value".into(), None))
}

#[async_trait::async_trait]
impl SecretFetch for SecretParameter {
    async fn fetch(&self) -> Result<SecretSet, FetchError> {
        let value = read_secure_parameter(&self.client, &self.name).await?;
        SecretSet::parse(&value).map_err(|e| FetchError {
            from: format!("SSM parameter {}", self.name),
            detail: e.to_string(),
            source: None,
        })
    }
}

/// A Stigg API key in an SSM SecureString parameter (the bridge's, mirror-sync's server key).
pub struct ApiKeyParameter {
    client: aws_sdk_ssm::Client,
    name: String,
}

impl ApiKeyParameter {
    pub fn new(sdk: &SdkConfig, name: impl Into<String>) -> Self {
        Self { client: aws_sdk_ssm::Client::new(sdk), name: name.into() }
    }
}

#[async_trait::async_trait]
impl crate::stigg::edge::ApiKeyFetch for ApiKeyParameter {
    async fn fetch(&self) -> Result<crate::config::ApiKey, String> {
        let value = read_secure_parameter(&self.client, &self.name).await.map_err(|e| e.to_string())?;
        crate::config::ApiKey::parse(&value).map_err(|e| format!("SSM parameter {}: {e}", self.name))
    }
}

/// The Stigg API key of `source`: as given, or read from its parameter now (a failure fails the
/// cold start) and again at most every `reread` when Stigg refuses it (a rotation needs no
/// redeploy).
pub async fn api_keys(
    sdk: &SdkConfig,
    source: crate::config::ApiKeySource,
    reread: Duration,
) -> Result<crate::stigg::edge::ApiKeys, String> {
    use crate::config::ApiKeySource;
    use crate::stigg::edge::ApiKeys;
    match source {
        ApiKeySource::Inline(key) => Ok(ApiKeys::fixed(key)),
        ApiKeySource::Parameter(name) => ApiKeys::refreshing(Box::new(ApiKeyParameter::new(sdk, name)), reread).await,
    }
}

/// The SQS client for Stigg's queue: Stigg's credentials (cached by `identity`, which renews them
/// before they expire and on demand), the queue's own region, and otherwise our SDK settings.
/// Separate from our own clients, which keep the function's role.
pub fn stigg_queue_client(
    sdk: &SdkConfig,
    credentials: crate::stigg::edge::EdgeCredentials,
    region: Option<&str>,
    endpoint: Option<&str>,
    identity: RenewableIdentityCache,
) -> aws_sdk_sqs::Client {
    let mut config = aws_sdk_sqs::config::Builder::from(sdk).credentials_provider(credentials).identity_cache(identity);
    if let Some(region) = region {
        config = config.region(aws_config::Region::new(region.to_owned()));
    }
    if let Some(endpoint) = endpoint {
        config = config.endpoint_url(endpoint);
    }
    aws_sdk_sqs::Client::from_conf(config.build())
}

/// The SDK's lazy identity cache, which can be emptied.
///
/// The lazy cache keeps credentials until shortly before their stated expiration and has no way
/// to drop them earlier (aws-smithy-runtime `client/identity/cache/lazy.rs`: entries leave only
/// by expiring). Credentials that the issuer revokes before then would be signed with until they
/// expire. [`renew`](Self::renew) swaps in a new, empty lazy cache: the next request loads
/// credentials from the provider again, and the SDK's renewal before expiry stays as it was.
#[derive(Clone, Debug)]
pub struct RenewableIdentityCache {
    inner: std::sync::Arc<RenewableInner>,
}

#[derive(Debug)]
struct RenewableInner {
    load_timeout: Duration,
    /// The cache in use and its generation (how many times it was renewed).
    current: std::sync::RwLock<(u64, SharedIdentityCache)>,
}

impl RenewableIdentityCache {
    /// `load_timeout`: how long one credentials load may take (see
    /// [`crate::stigg::edge::load_timeout`]).
    pub fn new(load_timeout: Duration) -> Self {
        let current = std::sync::RwLock::new((0, Self::lazy(load_timeout)));
        Self { inner: std::sync::Arc::new(RenewableInner { load_timeout, current }) }
    }

    fn lazy(load_timeout: Duration) -> SharedIdentityCache {
        aws_config::identity::IdentityCache::lazy().load_timeout(load_timeout).build()
    }

    fn current(&self) -> SharedIdentityCache {
        self.inner.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone()
    }

    /// The generation of the cache in use: read it before a call, give it to
    /// [`renew`](Self::renew) when that call's credentials are rejected.
    pub fn generation(&self) -> u64 {
        self.inner.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).0
    }

    /// Empties the cache, unless it was already renewed since `seen` (another call, with the
    /// same rejected credentials, got there first: its new credentials are kept). True when this
    /// call renewed it.
    pub fn renew(&self, seen: u64) -> bool {
        let mut current = self.inner.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.0 != seen {
            return false;
        }
        *current = (seen + 1, Self::lazy(self.inner.load_timeout));
        true
    }
}

/// The lazy cache needs a time source and a sleep implementation, which a client built from an
/// `SdkConfig` always has; the SDK cannot check that through this wrapper (its config
/// validation is sealed), hence the default, empty validations.
impl ResolveCachedIdentity for RenewableIdentityCache {
    fn resolve_cached_identity<'a>(
        &'a self,
        resolver: SharedIdentityResolver,
        runtime_components: &'a RuntimeComponents,
        config_bag: &'a ConfigBag,
    ) -> IdentityFuture<'a> {
        // The cache of this moment: a renewal while this load runs affects the next call only.
        let cache = self.current();
        IdentityFuture::new(
            async move { cache.resolve_cached_identity(resolver, runtime_components, config_bag).await },
        )
    }
}
