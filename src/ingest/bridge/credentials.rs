//! Credentials Stigg's queue rejects before their expiration: dropped and fetched anew once per
//! invocation ([`Renewal`]), and counted when no renewal fixed them.

use super::{Bridge, BridgeError, DrainReport};

/// Whether this invocation may still drop Stigg's credentials and fetch new ones: once, so a
/// queue that rejects every credential ends the invocation instead of asking the Edge API in a
/// loop.
pub(super) struct Renewal {
    available: bool,
}

impl Renewal {
    pub(super) fn once() -> Self {
        Self { available: true }
    }

    fn take(&mut self) -> bool {
        std::mem::take(&mut self.available)
    }
}

impl Bridge {
    /// Drops the credentials SQS rejected, if this invocation still may: true when the call is
    /// to be made again.
    pub(super) fn renew(
        &self,
        renewal: &mut Renewal,
        generation: u64,
        operation: &'static str,
        error: &(dyn std::error::Error + 'static),
        report: &mut DrainReport,
    ) -> bool {
        if !renewal.take() {
            return false;
        }
        report.credentials_renewed += 1;
        crate::metrics::bridge_credentials_rejected("renewed");
        // false: a concurrent invocation already renewed them since this call began.
        let dropped = self.source.renew_credentials(generation);
        tracing::warn!(operation, dropped, error = %crate::error_chain(error),
            "Stigg's queue rejected the Edge API credentials before their expiration; fetching new ones and trying once more");
        true
    }

    /// Counts a rejection that no renewal fixed (the error ends the invocation).
    pub(super) fn failed(&self, e: BridgeError) -> BridgeError {
        if matches!(e, BridgeError::CredentialsRejected { .. }) {
            crate::metrics::bridge_credentials_rejected("failed");
        }
        e
    }
}
