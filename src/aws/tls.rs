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
//! Outside the commercial and GovCloud partitions (the China regions `cn-*`, the isolated
//! `*-iso*` ones), whose endpoints are not documented to chain to these roots, the client uses the
//! system store as before, so no deployment there breaks on its first call.
//!
//! `AWS_CA_BUNDLE` names a PEM file whose certificates are trusted in addition (the variable the
//! AWS SDKs read for a custom bundle,
//! <https://docs.aws.amazon.com/sdkref/latest/guide/feature-gen-config.html>; where they replace
//! their store with it, this adds to the five, so a bundle holding only a private CA cannot cut
//! the functions off AWS): a private CA (a TLS-inspecting proxy), or the image's bundle
//! (`/etc/pki/tls/certs/ca-bundle.crt` on `provided.al2023`). Certificates that cannot serve as a
//! root are skipped with a WARN line, as the system store does; a file that cannot be read, or
//! holds no usable certificate, fails the cold start with the variable named instead of a TLS
//! error on the first call.

use aws_smithy_http_client::tls::{TlsContext, TrustStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::{ConfigError, invalid};

/// Amazon Root CA 1, 2, 3, 4 and Starfield Services Root Certificate Authority - G2, as PEM.
pub const AMAZON_TRUST_SERVICES_ROOTS: &[u8] = include_bytes!("roots/amazon-trust-services.pem");

/// The variable naming an extra PEM bundle to trust.
pub const CA_BUNDLE_VAR: &str = "AWS_CA_BUNDLE";

/// Which store a client starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// Amazon Trust Services' five roots (the functions).
    AmazonTrustServices,
    /// The system's store (developer tools on a workstation, and partitions whose endpoints
    /// are not documented to chain to the five).
    System,
}

impl Roots {
    /// What a function in `region` trusts: the system store in the China and isolated regions.
    pub fn for_region(region: Option<&str>) -> Self {
        match region.map(str::trim) {
            Some(r) if r.starts_with("cn-") || r.contains("-iso") => Self::System,
            _ => Self::AmazonTrustServices,
        }
    }
}

/// The TLS context of an SDK HTTPS client: `roots`, plus the usable certificates of the
/// `ca_bundle` file when one is named.
pub fn tls_context(roots: Roots, ca_bundle: Option<&str>) -> Result<TlsContext, ConfigError> {
    let mut store = match roots {
        Roots::AmazonTrustServices => {
            TrustStore::empty().with_native_roots(false).with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS)
        }
        Roots::System => TrustStore::empty().with_native_roots(true),
    };
    if let Some(path) = ca_bundle.map(str::trim).filter(|p| !p.is_empty()) {
        let pem = std::fs::read(path).map_err(|e| invalid(CA_BUNDLE_VAR, format!("cannot read {path}: {e}")))?;
        let usable = usable_roots(&pem).map_err(|reason| invalid(CA_BUNDLE_VAR, format!("{path}: {reason}")))?;
        if usable.skipped > 0 {
            tracing::warn!(
                path,
                skipped = usable.skipped,
                kept = usable.kept,
                "AWS_CA_BUNDLE: certificates that cannot serve as a root were skipped"
            );
        }
        store = store.with_pem_certificate(usable.pem);
    }
    TlsContext::builder().with_trust_store(store).build().map_err(|e| invalid(CA_BUNDLE_VAR, e))
}

struct Usable {
    /// The usable certificates, as PEM again: the SDK's client parses what it is given when it
    /// builds a connector and panics on a certificate it cannot use, so it gets only these.
    pem: Vec<u8>,
    kept: usize,
    skipped: usize,
}

/// The certificates of `pem` that serve as trust anchors (other PEM blocks, such as keys, are
/// ignored); an error when there is none.
fn usable_roots(pem: &[u8]) -> Result<Usable, String> {
    use base64::Engine as _;
    let ders = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    let mut out = Usable { pem: Vec::new(), kept: 0, skipped: 0 };
    for der in ders {
        if rustls::RootCertStore::empty().add(der.clone()).is_err() {
            out.skipped += 1;
            continue;
        }
        out.kept += 1;
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        out.pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for chunk in body.as_bytes().chunks(64) {
            out.pem.extend_from_slice(chunk);
            out.pem.push(b'\n');
        }
        out.pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    if out.kept == 0 {
        return Err(format!("no PEM certificate usable as a root in it ({} skipped)", out.skipped));
    }
    Ok(out)
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
        let usable = usable_roots(AMAZON_TRUST_SERVICES_ROOTS).unwrap();
        assert_eq!((usable.kept, usable.skipped), (5, 0));
        assert_eq!(usable.pem, AMAZON_TRUST_SERVICES_ROOTS, "re-encoded byte for byte");
        assert!(tls_context(Roots::AmazonTrustServices, None).is_ok());
    }

    #[test]
    fn china_and_isolated_regions_keep_the_system_store() {
        assert_eq!(Roots::for_region(Some("us-east-1")), Roots::AmazonTrustServices);
        assert_eq!(Roots::for_region(Some("us-gov-west-1")), Roots::AmazonTrustServices);
        assert_eq!(Roots::for_region(None), Roots::AmazonTrustServices);
        for region in ["cn-north-1", "cn-northwest-1", "us-iso-east-1", "us-isob-east-1", "eu-isoe-west-1"] {
            assert_eq!(Roots::for_region(Some(region)), Roots::System, "{region}");
        }
    }

    #[test]
    fn a_ca_bundle_that_cannot_be_used_fails_the_cold_start_naming_the_variable() {
        let dir = std::env::temp_dir().join(format!("ca-bundle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        for path in [dir.join("missing.pem"), empty, garbage.clone()] {
            let e = tls_context(Roots::AmazonTrustServices, Some(path.to_str().unwrap())).unwrap_err().to_string();
            assert!(e.contains(CA_BUNDLE_VAR) && e.contains(path.to_str().unwrap()), "{e}");
        }
        // One bad certificate among good ones is skipped, not fatal (as the system store does).
        let mixed = dir.join("mixed.pem");
        let mut bytes = std::fs::read(&garbage).unwrap();
        bytes.extend_from_slice(AMAZON_TRUST_SERVICES_ROOTS);
        std::fs::write(&mixed, &bytes).unwrap();
        let usable = usable_roots(&bytes).unwrap();
        assert_eq!((usable.kept, usable.skipped), (5, 1));
        assert!(tls_context(Roots::AmazonTrustServices, Some(mixed.to_str().unwrap())).is_ok());
        assert!(tls_context(Roots::AmazonTrustServices, Some("  ")).is_ok(), "blank means unset");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
