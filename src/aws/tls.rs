//! Which certificate authorities the SDK's HTTPS client trusts: Amazon Trust Services' five
//! roots, compiled in, plus the PEM file named by `AWS_CA_BUNDLE` when it is set.
//!
//! Why not the system store: loading it was half of the receiver's cold start. rustls-native-certs
//! reads the bundle file and then every file of the certificate directory; on an Amazon Linux
//! 2023 layout (`/etc/ssl/certs` is the hashed directory, one `.pem` per root) every root is
//! decoded twice, and the SDK's HTTPS client turns the result into a root store again for each
//! connector it builds (one per SDK client at creation). Measured on this machine: 6.3 ms of CPU
//! from exec to the first Runtime API call with the system store, 3.2 ms with these five roots
//! (`perf stat -r 40`, see BENCHMARKS.md).
//!
//! Why these five are enough for the SDK: the client only talks to AWS service endpoints
//! (DynamoDB, SQS, SSM, EventBridge, STS), whose certificates Amazon Trust Services issues. Its
//! repository lists Amazon Root CA 1-4 and Starfield Services Root Certificate Authority - G2 as
//! the roots to trust (<https://www.amazontrust.com/repository/>), and AWS moved its service
//! endpoints to ATS certificates
//! (<https://aws.amazon.com/blogs/security/acm-will-no-longer-cross-sign-certificates-with-starfield-class-2-august-2024/>,
//! <https://aws.amazon.com/blogs/security/how-to-prepare-for-aws-move-to-its-own-certificate-authority/>).
//! Stigg's own endpoints (the bridge's Edge API, the mirror's GraphQL API, the status page) go
//! through `reqwest` with the system store, not through this client.
//!
//! `AWS_CA_BUNDLE` is the AWS SDKs' shared setting for a custom bundle
//! (<https://docs.aws.amazon.com/sdkref/latest/guide/feature-gen-config.html>): a private CA
//! (a TLS-inspecting proxy), or the system bundle for a partition whose endpoints chain elsewhere
//! (`AWS_CA_BUNDLE=/etc/pki/tls/certs/ca-bundle.crt` on `provided.al2023`). Its certificates are
//! trusted in addition to the five. A file that cannot be read or holds no certificate fails the
//! cold start with the variable named, instead of a TLS error on the first call.

use aws_smithy_http_client::tls::{TlsContext, TrustStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::{ConfigError, invalid};

/// Amazon Root CA 1, 2, 3, 4 and Starfield Services Root Certificate Authority - G2, as PEM.
pub const AMAZON_TRUST_SERVICES_ROOTS: &[u8] = include_bytes!("roots/amazon-trust-services.pem");

/// The variable naming an extra PEM bundle to trust.
pub const CA_BUNDLE_VAR: &str = "AWS_CA_BUNDLE";

/// The TLS context of the SDK's HTTPS client, from `AWS_CA_BUNDLE` (`None`: the five roots only).
pub fn tls_context(ca_bundle: Option<&str>) -> Result<TlsContext, ConfigError> {
    let mut store = TrustStore::empty().with_native_roots(false).with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS);
    if let Some(path) = ca_bundle.map(str::trim).filter(|p| !p.is_empty()) {
        let pem = std::fs::read(path).map_err(|e| invalid(CA_BUNDLE_VAR, format!("cannot read {path}: {e}")))?;
        let count = certificates(&pem).map_err(|reason| invalid(CA_BUNDLE_VAR, format!("{path}: {reason}")))?;
        tracing::debug!(path, count, "trusting the certificates of AWS_CA_BUNDLE too");
        store = store.with_pem_certificate(pem);
    }
    TlsContext::builder().with_trust_store(store).build().map_err(|e| invalid(CA_BUNDLE_VAR, e))
}

/// How many certificates `pem` holds, each one usable as a trust anchor. Checked here because
/// the SDK's client parses the same bytes when it builds a connector and panics on a bad one.
fn certificates(pem: &[u8]) -> Result<usize, String> {
    let ders = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    if ders.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, der) in ders.iter().enumerate() {
        roots.add(der.clone()).map_err(|e| format!("certificate {} is not usable as a root: {e}", i + 1))?;
    }
    Ok(ders.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// SHA-256 fingerprints as Amazon Trust Services publishes them
    /// (<https://www.amazontrust.com/repository/>).
    const PUBLISHED: [&str; 5] = [
        "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e", // Amazon Root CA 1
        "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4", // Amazon Root CA 2
        "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4", // Amazon Root CA 3
        "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092", // Amazon Root CA 4
        "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5", // Starfield Services Root CA - G2
    ];

    #[test]
    fn the_compiled_in_roots_are_exactly_the_five_amazon_trust_services_publishes() {
        let ders = CertificateDer::pem_slice_iter(AMAZON_TRUST_SERVICES_ROOTS).collect::<Result<Vec<_>, _>>().unwrap();
        let fingerprints: Vec<String> = ders.iter().map(|d| hex::encode(Sha256::digest(d.as_ref()))).collect();
        assert_eq!(fingerprints, PUBLISHED);
        assert_eq!(certificates(AMAZON_TRUST_SERVICES_ROOTS), Ok(5));
        assert!(tls_context(None).is_ok());
    }

    #[test]
    fn a_ca_bundle_that_cannot_be_used_fails_the_cold_start_naming_the_variable() {
        let dir = std::env::temp_dir().join(format!("ca-bundle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        for path in [dir.join("missing.pem"), empty, garbage] {
            let e = tls_context(Some(path.to_str().unwrap())).unwrap_err().to_string();
            assert!(e.contains(CA_BUNDLE_VAR) && e.contains(path.to_str().unwrap()), "{e}");
        }
        let extra = dir.join("extra.pem");
        std::fs::write(&extra, AMAZON_TRUST_SERVICES_ROOTS).unwrap();
        assert!(tls_context(Some(extra.to_str().unwrap())).is_ok(), "a usable bundle is added");
        assert!(tls_context(Some("  ")).is_ok(), "blank means unset");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
