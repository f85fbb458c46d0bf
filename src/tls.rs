//! TLS: loading and checking the serving key pair, hot rotation, and certificate generation
//! for `serve --self-signed` and the `certs` command.
//!
//! The server resolves its certificate through [`CertStore`] on every handshake, so a
//! rotation is one atomic store and connections already open keep their session.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::error_chain;

/// Names always present in a `serve --self-signed` certificate, so local clients verify it.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Validity of a generated CA.
const CA_VALIDITY_DAYS: i64 = 3650;

/// Errors of this module; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read the TLS {what} file {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to find a PEM CERTIFICATE block in {path}")]
    NoCertificate { path: PathBuf },
    #[error("failed to find a PEM private key in {path}")]
    NoPrivateKey { path: PathBuf },
    #[error("failed to parse the PEM in {path}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("failed to parse the certificate in {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("failed to load the private key in {path}")]
    PrivateKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("failed to pair {cert} with {key}: the private key does not belong to the certificate")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("failed to generate a certificate")]
    Generate(#[source] rcgen::Error),
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write {path}: the file exists (pass --force to overwrite)")]
    Exists { path: PathBuf },
    #[error("failed to build the TLS configuration")]
    Config(#[source] rustls::Error),
    #[error("failed to manage the serving certificate: {0}")]
    Managed(String),
}

/// Where a PEM key pair lives. Used for reading and, for generated pairs, for naming them
/// in messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPairFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A checked key pair, ready to serve.
pub struct Credentials {
    certified: Arc<CertifiedKey>,
    not_after: i64,
    serial: String,
    names: Vec<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Parses and checks a PEM pair: at least one certificate, a private key the ring
    /// provider can use, and the key matching the leaf certificate. `files` only names the
    /// origin in errors.
    pub fn from_pem(
        files: &KeyPairFiles,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                path: files.cert.clone(),
                source,
            })?;
        let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
            path: files.cert.clone(),
        })?;
        let (not_after, serial, names) =
            describe(leaf).map_err(|reason| TlsError::Certificate {
                path: files.cert.clone(),
                reason,
            })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| match source {
            rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
                path: files.key.clone(),
            },
            source => TlsError::Pem {
                path: files.key.clone(),
                source,
            },
        })?;
        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|source| TlsError::PrivateKey {
                path: files.key.clone(),
                source,
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        // `keys_match` compares SubjectPublicKeyInfo; ring can always derive it from the
        // keys it loads, so "unknown" is treated as a mismatch rather than waved through.
        certified.keys_match().map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            },
            other => TlsError::Certificate {
                path: files.cert.clone(),
                reason: other.to_string(),
            },
        })?;
        Ok(Credentials {
            certified: Arc::new(certified),
            not_after,
            serial,
            names,
        })
    }

    /// The leaf certificate's NotAfter as a Unix timestamp.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The leaf certificate's serial number, as colon-separated hex.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The leaf certificate's DNS and IP subject alternative names.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// Extracts NotAfter, serial and SANs from a DER certificate.
fn describe(der: &CertificateDer<'_>) -> Result<(i64, String, Vec<String>), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("subjectAltName: {e}")),
    };
    Ok((
        cert.validity().not_after.timestamp(),
        cert.raw_serial_as_string(),
        names,
    ))
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => Some(<[u8; 4]>::try_from(bytes).ok()?.into()),
        16 => Some(<[u8; 16]>::try_from(bytes).ok()?.into()),
        _ => None,
    }
}

/// The crypto provider used for everything here. ring, set explicitly, so that the
/// process-wide default (or its absence) never decides.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The serving certificate, swapped atomically on rotation. Implements
/// [`ResolvesServerCert`], so every new handshake sees the latest stored pair.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<Credentials>,
}

impl CertStore {
    /// A store serving `initial`.
    pub fn new(initial: Credentials) -> Self {
        CertStore {
            current: ArcSwap::from_pointee(initial),
        }
    }

    /// The pair being served.
    pub fn current(&self) -> Arc<Credentials> {
        self.current.load_full()
    }

    /// Serves `credentials` from the next handshake on.
    pub fn store(&self, credentials: Credentials) {
        self.current.store(Arc::new(credentials));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.load().certified))
    }
}

/// TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1`, certificate from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a [`CertWatcher::poll`] found.
#[derive(Debug)]
pub enum Reload {
    /// The files hold what they held at the last poll.
    Unchanged,
    /// The files changed and hold a valid pair.
    Loaded(Credentials),
    /// The files changed (or became unreadable) and do not hold a valid pair.
    Failed(TlsError),
}

/// What the files held at the last poll.
#[derive(PartialEq, Eq)]
enum Seen {
    Contents { cert: Vec<u8>, key: Vec<u8> },
    Error(String),
}

/// Watches a key pair on disk by content.
///
/// Comparing contents rather than modification times catches every way the files can be
/// replaced, including Kubernetes' atomic swap of the `..data` symlink in Secret volumes,
/// which changes neither the path nor, necessarily, the mtime seen through it. A change is
/// reported once: a broken pair is not reported again until the files change again.
pub struct CertWatcher {
    files: KeyPairFiles,
    seen: Seen,
}

impl CertWatcher {
    /// Loads and checks the pair (blocking; for start-up) and starts watching it.
    pub fn start(files: KeyPairFiles) -> Result<(Self, Credentials), TlsError> {
        let (cert, key) = read_files_blocking(&files)?;
        let credentials = Credentials::from_pem(&files, &cert, &key)?;
        let watcher = CertWatcher {
            files,
            seen: Seen::Contents { cert, key },
        };
        Ok((watcher, credentials))
    }

    /// Re-reads the files and reports whether they changed.
    pub async fn poll(&mut self) -> Reload {
        let read = async {
            let cert =
                tokio::fs::read(&self.files.cert)
                    .await
                    .map_err(|source| TlsError::Read {
                        what: "certificate",
                        path: self.files.cert.clone(),
                        source,
                    })?;
            let key = tokio::fs::read(&self.files.key)
                .await
                .map_err(|source| TlsError::Read {
                    what: "private key",
                    path: self.files.key.clone(),
                    source,
                })?;
            Ok::<_, TlsError>((cert, key))
        };
        let (seen, result) = match read.await {
            Ok((cert, key)) => {
                let result = Credentials::from_pem(&self.files, &cert, &key);
                (Seen::Contents { cert, key }, result)
            }
            Err(e) => (Seen::Error(error_chain(&e)), Err(e)),
        };
        if seen == self.seen {
            return Reload::Unchanged;
        }
        self.seen = seen;
        match result {
            Ok(credentials) => Reload::Loaded(credentials),
            Err(e) => Reload::Failed(e),
        }
    }
}

fn read_files_blocking(files: &KeyPairFiles) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let cert = std::fs::read(&files.cert).map_err(|source| TlsError::Read {
        what: "certificate",
        path: files.cert.clone(),
        source,
    })?;
    let key = std::fs::read(&files.key).map_err(|source| TlsError::Read {
        what: "private key",
        path: files.key.clone(),
        source,
    })?;
    Ok((cert, key))
}

/// A generated CA and a serving certificate signed by it, all PEM.
pub struct GeneratedPki {
    /// CA certificate: what clients (the API server's `caBundle`) trust.
    pub ca_cert_pem: String,
    /// CA private key.
    pub ca_key_pem: String,
    /// Serving certificate.
    pub cert_pem: String,
    /// Serving private key (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for GeneratedPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedPki").finish_non_exhaustive()
    }
}

/// Generates an ECDSA P-256 CA (valid ten years) and a serving certificate for `names`
/// (DNS names or IP addresses; the first is also the common name), valid `days` days.
pub fn generate(names: &[String], days: u32) -> Result<GeneratedPki, TlsError> {
    let now = time::OffsetDateTime::now_utc();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(TlsError::Generate)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gomemlimit-injector CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = backdated(now);
    ca_params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
    let ca_key = KeyPair::generate().map_err(TlsError::Generate)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(TlsError::Generate)?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let (cert_pem, key_pem) = issue(&issuer, names, time::Duration::days(i64::from(days)))?;
    Ok(GeneratedPki {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem,
        cert_pem,
        key_pem,
    })
}

/// Issues a serving certificate for `names`, valid for `validity`, from an existing CA
/// given as PEM. Returns the certificate and its private key, PEM.
pub fn issue_with_ca(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    names: &[String],
    validity: time::Duration,
) -> Result<(String, String), TlsError> {
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(TlsError::Generate)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).map_err(TlsError::Generate)?;
    issue(&issuer, names, validity)
}

/// A little backdating absorbs clock skew between this host and the API server.
fn backdated(now: time::OffsetDateTime) -> time::OffsetDateTime {
    now - time::Duration::hours(1)
}

fn issue(
    issuer: &Issuer<'_, KeyPair>,
    names: &[String],
    validity: time::Duration,
) -> Result<(String, String), TlsError> {
    let now = time::OffsetDateTime::now_utc();
    let mut params = CertificateParams::new(names.to_vec()).map_err(TlsError::Generate)?;
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(DnType::CommonName, first.as_str());
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = backdated(now);
    params.not_after = (now + validity).min(now + time::Duration::days(CA_VALIDITY_DAYS));
    let key = KeyPair::generate().map_err(TlsError::Generate)?;
    let cert = params.signed_by(&key, issuer).map_err(TlsError::Generate)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The files `certs` writes into its output directory.
pub const CERT_FILES: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

/// Writes `pki` as `ca.crt`, `ca.key`, `tls.crt` and `tls.key` into `dir` (created if
/// needed). Keys get mode 0600. Existing files are an error unless `force`; the check
/// covers all four files before any is written, so a refusal leaves the directory as it was.
pub fn write_pki(dir: &Path, pki: &GeneratedPki, force: bool) -> Result<Vec<PathBuf>, TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let contents = [
        (&pki.ca_cert_pem, false),
        (&pki.ca_key_pem, true),
        (&pki.cert_pem, false),
        (&pki.key_pem, true),
    ];
    let paths: Vec<PathBuf> = CERT_FILES.iter().map(|name| dir.join(name)).collect();
    if !force && let Some(existing) = paths.iter().find(|p| p.symlink_metadata().is_ok()) {
        return Err(TlsError::Exists {
            path: existing.clone(),
        });
    }
    for (path, (text, secret)) in paths.iter().zip(contents) {
        write_file(path, text.as_bytes(), secret, force)?;
    }
    Ok(paths)
}

/// Writes `contents` to `path`; `secret` files are created with mode 0600. With
/// `overwrite`, an existing file is removed first so the new one gets the right mode.
pub fn write_file(
    path: &Path,
    contents: &[u8],
    secret: bool,
    overwrite: bool,
) -> Result<(), TlsError> {
    let write_error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    if overwrite {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_error(e)),
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::Exists {
                path: path.to_owned(),
            }
        } else {
            write_error(source)
        }
    })?;
    file.write_all(contents).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> KeyPairFiles {
        KeyPairFiles {
            cert: "tls.crt".into(),
            key: "tls.key".into(),
        }
    }

    #[test]
    fn generated_pair_loads_with_its_names() {
        let pki = generate(&["webhook.example.svc".into(), "127.0.0.1".into()], 30).unwrap();
        let creds =
            Credentials::from_pem(&files(), pki.cert_pem.as_bytes(), pki.key_pem.as_bytes())
                .unwrap();
        assert_eq!(creds.names(), ["webhook.example.svc", "127.0.0.1"]);
        let in_30_days = time::OffsetDateTime::now_utc().unix_timestamp() + 30 * 86_400;
        assert!((creds.not_after() - in_30_days).abs() < 60);
    }

    #[test]
    fn mismatched_key_names_both_files() {
        let a = generate(&["a.example".into()], 1).unwrap();
        let b = generate(&["b.example".into()], 1).unwrap();
        let err = Credentials::from_pem(&files(), a.cert_pem.as_bytes(), b.key_pem.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("tls.crt") && err.contains("tls.key"), "{err}");
    }

    #[test]
    fn empty_files_are_named() {
        let a = generate(&["a.example".into()], 1).unwrap();
        let err = Credentials::from_pem(&files(), b"", a.key_pem.as_bytes()).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        let err = Credentials::from_pem(&files(), a.cert_pem.as_bytes(), b"junk").unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    }

    #[test]
    fn write_pki_refuses_to_overwrite_and_protects_keys() {
        let dir = tempfile::tempdir().unwrap();
        let pki = generate(&["a.example".into()], 1).unwrap();
        write_pki(dir.path(), &pki, false).unwrap();
        let err = write_pki(dir.path(), &pki, false).unwrap_err();
        assert!(matches!(err, TlsError::Exists { .. }), "{err}");
        write_pki(dir.path(), &pki, true).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for (name, mode) in [("ca.key", 0o600), ("tls.key", 0o600), ("tls.crt", 0o644)] {
                let meta = std::fs::metadata(dir.path().join(name)).unwrap();
                assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
            }
        }
    }
}
