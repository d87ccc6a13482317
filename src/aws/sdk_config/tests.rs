//! The SDK configuration from Lambda's environment, checked on what the SDK clients built from
//! it send: the request each client makes is captured, not sent.

use std::future::Future;

use aws_credential_types::provider::ProvideCredentials;
use aws_smithy_http_client::test_util::capture_request;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;

use super::*;

const LAMBDA: [(&str, &str); 4] = [
    ("AWS_REGION", "eu-west-1"),
    ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
    ("AWS_SECRET_ACCESS_KEY", "secret-example"),
    ("AWS_SESSION_TOKEN", "token-example"),
];

fn config<E: Env + Clone + Send + Sync + 'static>(env: E) -> Result<SdkConfig, ConfigError> {
    // A client that sends nothing, so no process setting (AWS_CA_BUNDLE) reaches these tests.
    sdk_config(&env, |_| Ok(SharedHttpClient::new(capture_request(None).0)))
}

/// The first request `call` sends with a client built from `env`'s configuration.
async fn sent<E, F>(env: E, call: impl FnOnce(SdkConfig) -> F) -> HttpRequest
where
    E: Env + Clone + Send + Sync + 'static,
    F: Future,
{
    let (http, request) = capture_request(None);
    let sdk = sdk_config(&env, |_| Ok(SharedHttpClient::new(http))).expect("a valid environment");
    // The captured answer is an empty 200, which the SDK may refuse: only the request matters.
    let _ = call(sdk).await;
    request.expect_request()
}

async fn dynamodb(sdk: SdkConfig) {
    let _ = aws_sdk_dynamodb::Client::new(&sdk).describe_limits().send().await;
}

async fn sqs(sdk: SdkConfig) {
    let _ = aws_sdk_sqs::Client::new(&sdk).list_queues().send().await;
}

async fn ssm(sdk: SdkConfig) {
    let _ = aws_sdk_ssm::Client::new(&sdk).get_parameter().name("p").send().await;
}

async fn eventbridge(sdk: SdkConfig) {
    let _ = aws_sdk_eventbridge::Client::new(&sdk).list_event_buses().send().await;
}

fn header<'a>(request: &'a HttpRequest, name: &str) -> &'a str {
    request.headers().get(name).unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn requests_go_to_the_region_signed_with_the_execution_role_credentials() {
    let request = sent(LAMBDA, dynamodb).await;
    assert_eq!(request.uri(), "https://dynamodb.eu-west-1.amazonaws.com/");
    assert!(
        header(&request, "authorization").contains("Credential=ASIAEXAMPLE/")
            && header(&request, "authorization").contains("/eu-west-1/dynamodb/aws4_request"),
        "{}",
        header(&request, "authorization")
    );
    assert_eq!(header(&request, "x-amz-security-token"), "token-example");
}

#[tokio::test]
async fn credentials_carry_the_session_token_and_an_account_id_when_set() {
    let sdk = config(LAMBDA).unwrap();
    let credentials = sdk.credentials_provider().unwrap().provide_credentials().await.unwrap();
    assert_eq!((credentials.access_key_id(), credentials.secret_access_key()), ("ASIAEXAMPLE", "secret-example"));
    assert_eq!(credentials.session_token(), Some("token-example"));
    assert_eq!(credentials.account_id(), None);
    let env = [LAMBDA[0], LAMBDA[1], LAMBDA[2], ("AWS_ACCOUNT_ID", "123456789012")];
    let credentials = config(env).unwrap().credentials_provider().unwrap().provide_credentials().await.unwrap();
    assert_eq!(credentials.account_id().map(|a| a.as_str()), Some("123456789012"));
    assert_eq!(credentials.session_token(), None);
}

#[test]
fn our_retries_and_timeouts_reach_every_client() {
    let sdk = config(LAMBDA).unwrap();
    let sqs = aws_sdk_sqs::Config::from(&sdk);
    assert_eq!(sqs.retry_config().unwrap().max_attempts(), 3);
    let timeouts = sqs.timeout_config().unwrap();
    assert_eq!(timeouts.operation_attempt_timeout(), Some(crate::aws::ATTEMPT_TIMEOUT));
    assert_eq!(timeouts.operation_timeout(), Some(crate::aws::OPERATION_TIMEOUT));
    assert_eq!(aws_sdk_ssm::Config::from(&sdk).retry_config().unwrap().max_attempts(), 3);
    assert_eq!(aws_sdk_dynamodb::Config::from(&sdk).retry_config().unwrap().max_attempts(), 3);
}

#[test]
fn a_missing_region_or_credential_fails_the_cold_start_naming_the_variable() {
    let missing = |env: [(&'static str, &'static str); 3]| config(env).unwrap_err().to_string();
    assert_eq!(missing([LAMBDA[1], LAMBDA[2], LAMBDA[3]]), "AWS_REGION is not set");
    assert_eq!(missing([LAMBDA[0], LAMBDA[2], LAMBDA[3]]), "AWS_ACCESS_KEY_ID is not set");
    assert_eq!(missing([LAMBDA[0], LAMBDA[1], LAMBDA[3]]), "AWS_SECRET_ACCESS_KEY is not set");
    let default_region = [("AWS_DEFAULT_REGION", "us-east-2"), LAMBDA[1], LAMBDA[2]];
    assert_eq!(config(default_region).unwrap().region().map(|r| r.as_ref()), Some("us-east-2"));
    let both = [("AWS_DEFAULT_REGION", "us-east-2"), LAMBDA[0], LAMBDA[1], LAMBDA[2]];
    assert_eq!(config(both).unwrap().region().map(|r| r.as_ref()), Some("eu-west-1"), "AWS_REGION first");
}

#[test]
fn snapstart_container_credentials_fail_the_cold_start_saying_why() {
    let snapstart = [
        LAMBDA[0],
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9001/2021-04-23/credentials"),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "token"),
    ];
    let error = config(snapstart).unwrap_err().to_string();
    assert!(error.starts_with("AWS_ACCESS_KEY_ID is invalid") && error.contains("SnapStart"), "{error}");
}

#[tokio::test]
async fn a_blank_session_token_is_no_session_token() {
    let env = [LAMBDA[0], LAMBDA[1], LAMBDA[2], ("AWS_SESSION_TOKEN", " ")];
    let request = sent(env, sqs).await;
    assert!(request.headers().get("x-amz-security-token").is_none());
}

const ENDPOINTS: [(&str, &str); 6] = [
    LAMBDA[0],
    LAMBDA[1],
    LAMBDA[2],
    ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
    ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000"),
    ("AWS_ENDPOINT_URL_EVENTBRIDGE", "http://127.0.0.1:9000"),
];

#[tokio::test]
async fn a_service_endpoint_overrides_the_global_one_for_that_service_only() {
    assert_eq!(sent(ENDPOINTS, dynamodb).await.uri(), "http://127.0.0.1:8000/");
    assert_eq!(sent(ENDPOINTS, eventbridge).await.uri(), "http://127.0.0.1:9000/");
    assert_eq!(sent(ENDPOINTS, sqs).await.uri(), "http://127.0.0.1:5000/");
    assert_eq!(sent(ENDPOINTS, ssm).await.uri(), "http://127.0.0.1:5000/");
}

#[tokio::test]
async fn ignoring_configured_endpoints_ignores_both_kinds() {
    let env = [
        ENDPOINTS[0],
        ENDPOINTS[1],
        ENDPOINTS[2],
        ENDPOINTS[3],
        ENDPOINTS[4],
        ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
    ];
    assert_eq!(sent(env, dynamodb).await.uri(), "https://dynamodb.eu-west-1.amazonaws.com/");
    assert_eq!(sent(env, sqs).await.uri(), "https://sqs.eu-west-1.amazonaws.com/");
}

#[tokio::test]
async fn fips_and_dual_stack_endpoints_are_read_and_a_bad_value_is_refused() {
    let fips = [LAMBDA[0], LAMBDA[1], LAMBDA[2], ("AWS_USE_FIPS_ENDPOINT", "TRUE")];
    assert_eq!(sent(fips, sqs).await.uri(), "https://sqs-fips.eu-west-1.amazonaws.com/");
    let dual = [LAMBDA[0], LAMBDA[1], LAMBDA[2], ("AWS_USE_DUALSTACK_ENDPOINT", "true")];
    assert_eq!(sent(dual, dynamodb).await.uri(), "https://dynamodb.eu-west-1.api.aws/");
    let bad = [LAMBDA[0], LAMBDA[1], LAMBDA[2], ("AWS_USE_FIPS_ENDPOINT", "sometimes")];
    assert!(config(bad).unwrap_err().to_string().starts_with("AWS_USE_FIPS_ENDPOINT is invalid"));
}

#[test]
fn sdk_settings_this_configuration_does_not_read_are_named() {
    assert!(ignored_settings(&LAMBDA).is_empty());
    let env = [LAMBDA[0], ("AWS_PROFILE", "dev"), ("AWS_SDK_UA_APP_ID", "billing"), ("AWS_MAX_ATTEMPTS", "5")];
    // AWS_MAX_ATTEMPTS is not named: the default loader ignores it too once retries are set in code.
    assert_eq!(ignored_settings(&env), ["AWS_PROFILE", "AWS_SDK_UA_APP_ID"]);
    let read =
        ["AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_ENDPOINT_URL", "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT"];
    assert!(IGNORED_SETTINGS.iter().all(|name| !read.contains(name)), "a setting both read and ignored");
}

#[test]
fn the_https_client_is_built_for_the_region_the_sdk_uses_and_not_without_one() {
    // A blank AWS_REGION falls back to AWS_DEFAULT_REGION for both: the trust store (China's
    // roots differ) must follow the region requests go to.
    let env = [("AWS_REGION", " "), ("AWS_DEFAULT_REGION", "cn-north-1"), LAMBDA[1], LAMBDA[2]];
    let mut asked = Vec::new();
    let sdk = sdk_config(&env, |region| {
        asked.push(region.to_owned());
        Ok(SharedHttpClient::new(capture_request(None).0))
    })
    .unwrap();
    assert_eq!(asked, ["cn-north-1"]);
    assert_eq!(sdk.region().map(|r| r.as_ref()), Some("cn-north-1"));

    let mut called = false;
    let missing = sdk_config(&[LAMBDA[1], LAMBDA[2]], |_| {
        called = true;
        Ok(SharedHttpClient::new(capture_request(None).0))
    });
    assert_eq!(missing.unwrap_err().to_string(), "AWS_REGION is not set");
    assert!(!called, "no client is built without a region");

    let refused = sdk_config(&LAMBDA, |_| Err(crate::config::invalid("AWS_CA_BUNDLE", "not PEM")));
    assert!(refused.unwrap_err().to_string().starts_with("AWS_CA_BUNDLE is invalid"));
}
