//! How a drain fails ([`BridgeError`]), from what Stigg's queue, the Edge API or our queue said.

use crate::aws::queue::{QueueError, ReceiveError, rejects_credentials};
use crate::stigg::edge::edge_error_in;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The Edge API gave no credentials (a refused key, or an outage past the retries).
    #[error("no credentials for Stigg's queue: {detail}")]
    Credentials {
        detail: String,
        refused: bool,
        #[source]
        source: ReceiveError,
    },
    /// Stigg's queue rejected the Edge API's credentials, and new ones (fetched once per
    /// invocation) did not help or were already fetched this invocation.
    #[error("Stigg's queue rejected the Edge API's credentials ({operation}), also after fetching new ones: {detail}")]
    CredentialsRejected {
        operation: &'static str,
        detail: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("receiving from Stigg's queue failed: {detail}")]
    Receive {
        detail: String,
        #[source]
        source: ReceiveError,
    },
    /// Our queue refused a whole batch: nothing of it was deleted from Stigg's queue.
    #[error("forwarding to our events queue failed")]
    Forward(#[source] QueueError),
    #[error("deleting forwarded messages from Stigg's queue failed (they will be forwarded again)")]
    Delete(#[source] QueueError),
}

impl BridgeError {
    pub(super) fn from_receive(e: ReceiveError) -> Self {
        use aws_sdk_sqs::error::ProvideErrorMetadata as _;
        let detail = aws_sdk_sqs::error::DisplayErrorContext(&e).to_string();
        if let Some(edge) = edge_error_in(&e) {
            return Self::Credentials { detail: edge.to_string(), refused: edge.is_refused(), source: e };
        }
        if rejects_credentials(e.code()) {
            return Self::CredentialsRejected { operation: "ReceiveMessage", detail, source: Box::new(e) };
        }
        Self::Receive { detail, source: e }
    }

    pub(super) fn from_delete(e: QueueError) -> Self {
        if e.credentials_rejected() {
            let detail = e.to_string();
            return Self::CredentialsRejected { operation: "DeleteMessageBatch", detail, source: Box::new(e) };
        }
        Self::Delete(e)
    }
}
