//! Throwaway certificate authorities for TLS tests: a CA, and certificates it signs, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA whose certificate is written to `DIR/NAME-ca.pem`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM), what clients and servers trust.
    pub ca_file: PathBuf,
    dir: PathBuf,
    name: String,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

impl TestCa {
    /// Makes a CA called `name` and writes its certificate into `dir`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem()).expect("write CA");
        TestCa { issuer: Issuer::new(params, key), ca_file, dir: dir.to_path_buf(), name: name.to_string() }
    }

    /// A certificate for `names` (DNS names or IP addresses), written as `DIR/NAME-LEAF.pem` and `-key.pem`;
    /// it serves as a server and as a client certificate.
    pub fn issue(&self, leaf: &str, names: &[&str]) -> CertFiles {
        self.issue_with_uris(leaf, names, &[])
    }

    /// As [`TestCa::issue`], with URIs (`spiffe://...`) among the subject alternative names too.
    pub fn issue_with_uris(&self, leaf: &str, names: &[&str], uris: &[&str]) -> CertFiles {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        for uri in uris {
            params.subject_alt_names.push(rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*uri).expect("URI")));
        }
        params.distinguished_name.push(DnType::CommonName, leaf);
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        let files = CertFiles {
            cert: self.dir.join(format!("{}-{leaf}.pem", self.name)),
            key: self.dir.join(format!("{}-{leaf}-key.pem", self.name)),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}
