//! Unit tests for the DynamoDB claim protocol.

use super::*;
use aws_sdk_dynamodb::operation::update_item::UpdateItemOutput;
use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
use aws_smithy_mocks::{RuleMode, mock, mock_client};

fn store(client: Client) -> IdempotencyStore {
    scoped(client, ClaimScope::Receiver)
}

fn scoped(client: Client, scope: ClaimScope) -> IdempotencyStore {
    IdempotencyStore::new(client, TableName::parse("t-test").unwrap(), Duration::from_secs(60), scope)
}

fn key() -> IdempotencyKey {
    IdempotencyKey::parse("msg-1").unwrap()
}

fn failed_with(status: &'static str, hash: &'static str) -> PutItemError {
    PutItemError::ConditionalCheckFailedException(
        ConditionalCheckFailedException::builder()
            .item("pk", s("msg-1"))
            .item("status", s(status))
            .item("payload_sha256", s(hash))
            .build(),
    )
}

#[tokio::test]
async fn a_late_duplicate_is_recognised_from_the_failed_write_alone() {
    let put = mock!(Client::put_item).then_error(|| failed_with(STATUS_COMPLETED, "h1"));
    let get =
        mock!(Client::get_item).then_output(|| aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder().build());
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put, &get]);
    let outcome = store(client).claim(&key(), "h1", SystemTime::now()).await.unwrap();
    assert!(matches!(outcome, ClaimOutcome::Completed { same_payload: true }));
    assert_eq!(put.num_calls(), 1);
    assert_eq!(get.num_calls(), 0, "ALL_OLD must make a second read unnecessary");
}

#[tokio::test]
async fn a_reused_key_with_other_bytes_is_flagged() {
    let put = mock!(Client::put_item).then_error(|| failed_with(STATUS_COMPLETED, "h1"));
    let client = mock_client!(aws_sdk_dynamodb, [&put]);
    let outcome = store(client).claim(&key(), "h2", SystemTime::now()).await.unwrap();
    assert!(matches!(outcome, ClaimOutcome::Completed { same_payload: false }));
}

#[tokio::test]
async fn a_live_claim_is_in_flight() {
    let put = mock!(Client::put_item).then_error(|| failed_with(STATUS_IN_PROGRESS, "h1"));
    let client = mock_client!(aws_sdk_dynamodb, [&put]);
    let outcome = store(client).claim(&key(), "h1", SystemTime::now()).await.unwrap();
    assert!(matches!(outcome, ClaimOutcome::InFlight));
}

#[tokio::test]
async fn throttling_surfaces_as_a_retryable_store_error() {
    let put = mock!(Client::put_item)
        .sequence()
        .http_status(
            400,
            Some(r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"slow down"}"#.into()),
        )
        .times(3)
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&put], |c| c
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(3)));
    let err = store(client).claim(&key(), "h1", SystemTime::now()).await.unwrap_err();
    assert!(err.is_retryable());
    assert!(err.to_string().contains("PutItem"), "{err}");
    assert_eq!(put.num_calls(), 3, "the SDK retries throttling within its budget");
}

#[tokio::test]
async fn complete_on_a_claim_taken_over_reports_it_lost() {
    let upd = mock!(Client::update_item).then_error(|| {
        UpdateItemError::ConditionalCheckFailedException(ConditionalCheckFailedException::builder().build())
    });
    let client = mock_client!(aws_sdk_dynamodb, [&upd]);
    let claim = Claim { pk: "msg-1".into(), token: "t".into(), done: BTreeSet::new() };
    assert!(matches!(store(client).complete(claim).await, Err(StoreError::ClaimLost { .. })));
}

#[test]
fn scopes_use_separate_key_spaces() {
    assert_eq!(ClaimScope::Receiver.partition_key(&key()), "accepted#msg-1");
    assert_eq!(ClaimScope::Processor.partition_key(&key()), "processed#msg-1");
    let sneaky = IdempotencyKey::parse("processed#msg-1").unwrap();
    assert_ne!(ClaimScope::Receiver.partition_key(&sneaky), ClaimScope::Processor.partition_key(&key()));
    for scope in ClaimScope::ALL {
        assert!(!WARM_UP_KEY.starts_with(scope.prefix()));
    }
}

/// The first attempt's answer is lost after DynamoDB applied the write (a 500 here); the
/// SDK's retry then fails the condition against the record the first attempt wrote.
#[tokio::test]
async fn an_sdk_retry_of_our_own_applied_claim_is_our_claim_not_someone_elses() {
    use std::sync::{Arc, Mutex};
    let written: Arc<Mutex<Option<String>>> = Arc::default();
    let (seen, replay) = (written.clone(), written.clone());
    let put = mock!(Client::put_item)
        .match_requests(move |input| {
            *seen.lock().unwrap() = input.item().and_then(|v| v.get("token")).and_then(|v| v.as_s().ok()).cloned();
            true
        })
        .sequence()
        .http_status(500, None)
        .error(move || PutItemError::ConditionalCheckFailedException(ours_in_progress(replay.lock().unwrap().clone())))
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&put], |c| c
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(3)));
    let outcome = store(client).claim(&key(), "h1", SystemTime::now()).await.unwrap();
    let ClaimOutcome::Claimed(claim) = outcome else { panic!("our own claim was taken for another's: {outcome:?}") };
    assert_eq!(Some(claim.token().to_owned()), *written.lock().unwrap());
    assert_eq!(put.num_calls(), 2, "the first attempt and the SDK's retry");
}

#[tokio::test]
async fn an_sdk_retry_of_our_own_applied_processor_claim_is_ours_too() {
    use std::sync::{Arc, Mutex};
    let written: Arc<Mutex<Option<String>>> = Arc::default();
    let (seen, replay) = (written.clone(), written.clone());
    let upd = mock!(Client::update_item)
        .match_requests(move |input| {
            *seen.lock().unwrap() =
                input.expression_attribute_values().and_then(|v| v.get(":token")).and_then(|v| v.as_s().ok()).cloned();
            true
        })
        .sequence()
        .http_status(500, None)
        .error(move || {
            UpdateItemError::ConditionalCheckFailedException(ours_in_progress(replay.lock().unwrap().clone()))
        })
        .build();
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&upd], |c| c
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(3)));
    let outcome = scoped(client, ClaimScope::Processor).claim(&key(), "h1", SystemTime::now()).await.unwrap();
    let ClaimOutcome::Claimed(claim) = outcome else { panic!("our own claim was taken for another's: {outcome:?}") };
    assert_eq!(Some(claim.token().to_owned()), *written.lock().unwrap());
    assert_eq!(upd.num_calls(), 2, "the first attempt and the SDK's retry");
}

fn ours_in_progress(token: Option<String>) -> ConditionalCheckFailedException {
    ConditionalCheckFailedException::builder()
        .item("pk", s("accepted#msg-1"))
        .item("status", s(STATUS_IN_PROGRESS))
        .item("token", s(token.expect("the first attempt carried a token")))
        .build()
}

/// The receiver writes the whole IN_PROGRESS record under the same condition as the
/// processor's UpdateItem, and asks for the old record only when the condition fails.
#[tokio::test]
async fn the_receivers_claim_puts_the_whole_record_under_the_claim_condition() {
    let put = mock!(Client::put_item)
        .match_requests(|input| {
            let item = input.item().expect("an item");
            let names: BTreeSet<&str> = item.keys().map(String::as_str).collect();
            names == BTreeSet::from(["pk", "status", "token", "lease_expires_at", "expires_at", "payload_sha256"])
                && item["pk"].as_s().is_ok_and(|v| v == "accepted#msg-1")
                && item["status"].as_s().is_ok_and(|v| v == STATUS_IN_PROGRESS)
                && item["payload_sha256"].as_s().is_ok_and(|v| v == "h1")
                && input.condition_expression() == Some(CLAIMABLE)
                && input.return_values().is_none()
                && input.return_values_on_condition_check_failure()
                    == Some(&ReturnValuesOnConditionCheckFailure::AllOld)
        })
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let client = mock_client!(aws_sdk_dynamodb, [&put]);
    let outcome = store(client).claim(&key(), "h1", SystemTime::now()).await.unwrap();
    let ClaimOutcome::Claimed(claim) = outcome else { panic!("claimed: {outcome:?}") };
    assert!(claim.done().is_empty());
    assert_eq!(put.num_calls(), 1);
}

#[tokio::test]
async fn another_attempts_live_claim_is_still_in_flight() {
    let put = mock!(Client::put_item).then_error(|| {
        PutItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .item("status", s(STATUS_IN_PROGRESS))
                .item("token", s("someone-else"))
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_dynamodb, [&put]);
    assert!(matches!(store(client).claim(&key(), "h1", SystemTime::now()).await.unwrap(), ClaimOutcome::InFlight));
}

#[tokio::test]
async fn a_claim_over_a_released_record_carries_its_done_handlers() {
    let future = (epoch_millis(SystemTime::now()) / 1000 + 3600).to_string();
    let upd = mock!(Client::update_item).then_output(move || {
        UpdateItemOutput::builder()
            .attributes("status", s(STATUS_IN_PROGRESS))
            .attributes("expires_at", AttributeValue::N(future.clone()))
            .attributes(DONE_HANDLERS, AttributeValue::Ss(vec!["mirror".into()]))
            .build()
    });
    let client = mock_client!(aws_sdk_dynamodb, [&upd]);
    let store = scoped(client, ClaimScope::Processor);
    let ClaimOutcome::Claimed(claim) = store.claim(&key(), "h1", SystemTime::now()).await.unwrap() else {
        panic!("claimed")
    };
    assert_eq!(claim.done().iter().collect::<Vec<_>>(), ["mirror"]);
}

#[test]
fn done_handlers_of_an_expired_record_are_forgotten_with_it() {
    let item = HashMap::from([
        ("expires_at".to_owned(), AttributeValue::N("100".into())),
        (DONE_HANDLERS.to_owned(), AttributeValue::Ss(vec!["a".into()])),
    ]);
    assert!(done_handlers(Some(&item), 100).is_empty());
    assert_eq!(done_handlers(Some(&item), 99).len(), 1);
}
