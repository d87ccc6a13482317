//! The shared secrets Stigg sends in the `Stigg-Webhooks-Secret` header.
//!
//! Stigg signs nothing (no HMAC, no timestamp): this header and the idempotency key are the only
//! defences, so the comparison is constant time and the secrets never reach a log.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// One or more accepted secrets. Several are live at once during a rotation.
///
/// Only SHA-256 digests are kept: comparing fixed-size digests in constant time does not leak the
/// secrets' lengths, and the plaintext does not linger in memory.
#[derive(Clone)]
pub struct SecretSet {
    digests: Vec<[u8; 32]>,
    shortest: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("no secret given (expected one or more, separated by commas)")]
    Empty,
}

/// Stigg's generated secrets are long random strings; shorter ones are worth a warning at start.
pub const RECOMMENDED_SECRET_LEN: usize = 16;

impl SecretSet {
    /// Parses a comma-separated list; blanks around each secret are ignored.
    pub fn parse(list: &str) -> Result<Self, SecretError> {
        let mut digests = Vec::new();
        let mut shortest = usize::MAX;
        for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            shortest = shortest.min(s.len());
            digests.push(Sha256::digest(s.as_bytes()).into());
        }
        if digests.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self { digests, shortest })
    }

    /// True when `presented` equals one of the secrets. Every secret is compared, whatever
    /// matched, so timing says nothing about which one (or how much of one) matched.
    pub fn verify(&self, presented: &[u8]) -> bool {
        let candidate: [u8; 32] = Sha256::digest(presented).into();
        let mut matched = Choice::from(0);
        for d in &self.digests {
            matched |= d.ct_eq(&candidate);
        }
        matched.into()
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// True when some secret is shorter than [`RECOMMENDED_SECRET_LEN`] (worth a start-up warning).
    pub fn has_weak_secret(&self) -> bool {
        self.shortest < RECOMMENDED_SECRET_LEN
    }
}

impl fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretSet({} secrets, redacted)", self.digests.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_secret_of_a_rotation() {
        let set = SecretSet::parse(" old-secret-123 , new-secret-456 ").unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.verify(b"old-secret-123"));
        assert!(set.verify(b"new-secret-456"));
    }

    #[test]
    fn refuses_anything_else() {
        let set = SecretSet::parse("old-secret-123,new-secret-456").unwrap();
        for bad in [
            &b""[..],
            b"old-secret-12",
            b"old-secret-1234",
            b"OLD-SECRET-123",
            b"old-secret-123,new-secret-456",
            b" old-secret-123",
        ] {
            assert!(!set.verify(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn an_empty_list_is_a_configuration_error() {
        assert_eq!(SecretSet::parse("").unwrap_err(), SecretError::Empty);
        assert_eq!(SecretSet::parse(" , ,").unwrap_err(), SecretError::Empty);
        assert!(SecretSet::parse("long-enough-secret,short").unwrap().has_weak_secret());
        assert!(!SecretSet::parse("long-enough-secret").unwrap().has_weak_secret());
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let set = SecretSet::parse("super-secret-value").unwrap();
        let shown = format!("{set:?}");
        assert!(!shown.contains("super-secret-value"));
        assert!(shown.contains("redacted"));
    }
}
