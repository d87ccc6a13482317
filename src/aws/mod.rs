//! The AWS adapters: [`claim`] (DynamoDB claim protocol), [`queue`] (SQS), and here the SDK
//! set-up shared by both functions: one HTTPS client (rustls + ring), one `SdkConfig`
//! loaded once per cold start, and bounded timeouts so a slow dependency turns into a clean 503
//! or a retried record before Lambda's own deadline kills the invocation.

pub mod claim;
pub mod queue;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::ingest::secrets::{FetchError, SecretFetch, SecretSet};

/// Per-attempt and whole-operation limits. Three attempts of at most 2 s fit in the receiver's
/// short timeout with room to roll a claim back.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build()
}

/// The one HTTPS client every SDK client shares (hyper 1 + rustls with ring).
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// Loads the SDK configuration from the standard chain (`AWS_REGION`, credentials,
/// `AWS_ENDPOINT_URL[_SERVICE]`).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(timeouts())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
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

#[async_trait::async_trait]
impl SecretFetch for SecretParameter {
    async fn fetch(&self) -> Result<SecretSet, FetchError> {
        let fail = |detail: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| FetchError {
            from: format!("SSM parameter {}", self.name),
            detail,
            source,
        };
        let out = self
            .client
            .get_parameter()
            .name(&self.name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| fail(aws_sdk_ssm::error::DisplayErrorContext(&e).to_string(), Some(Box::new(e))))?;
        let value =
            out.parameter().and_then(|p| p.value()).ok_or_else(|| fail("parameter has no value".into(), None))?;
        SecretSet::parse(value).map_err(|e| fail(e.to_string(), None))
    }
}
