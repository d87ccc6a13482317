//! Unit tests for the functions' configuration from the environment.

use super::*;
use crate::ingest::secrets::RefreshPolicy;

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
