//! A checked key pair, the store that serves it, and the rustls configuration around it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Where one half of a key pair was read from, as messages name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PemOrigin {
    /// A PEM file.
    File(PathBuf),
    /// An entry of a Secret's data, such as `tls.crt`.
    SecretKey(&'static str),
    /// Generated in memory: the certificate or the key.
    Generated(&'static str),
}

impl fmt::Display for PemOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemOrigin::File(path) => write!(f, "{}", path.display()),
            PemOrigin::SecretKey(key) => f.write_str(key),
            PemOrigin::Generated(what) => write!(f, "the generated {what}"),
        }
    }
}

/// Where each half of a key pair was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PairOrigin {
    pub(crate) cert: PemOrigin,
    pub(crate) key: PemOrigin,
}

/// A checked key pair, ready to serve.
pub(crate) struct Credentials {
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
    /// provider can use, and the key matching the leaf certificate. `origin` only names the
    /// halves in errors.
    pub(crate) fn from_pem(
        origin: &PairOrigin,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let PairOrigin {
            cert: cert_at,
            key: key_at,
        } = origin.clone();
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                at: cert_at.clone(),
                source,
            })?;
        let Some(leaf) = chain.first() else {
            return Err(TlsError::NoCertificate { at: cert_at });
        };
        let leaf = Leaf::read(leaf).map_err(|reason| TlsError::Certificate {
            at: cert_at.clone(),
            reason,
        })?;
        let signing_key = signing_key(&key_at, key_pem)?;
        let certified = CertifiedKey::new(chain, signing_key);
        // `keys_match` compares SubjectPublicKeyInfo; ring can always derive it from the
        // keys it loads, so "unknown" is treated as a mismatch rather than waved through.
        certified.keys_match().map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                cert: cert_at,
                key: key_at,
            },
            other => TlsError::Certificate {
                at: cert_at,
                reason: other.to_string(),
            },
        })?;
        Ok(Credentials {
            certified: Arc::new(certified),
            not_after: leaf.not_after,
            serial: leaf.serial,
            names: leaf.names,
        })
    }

    /// The leaf certificate's NotAfter as a Unix timestamp.
    pub(crate) fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The leaf certificate's serial number, as colon-separated hex.
    pub(crate) fn serial(&self) -> &str {
        &self.serial
    }

    /// The leaf certificate's DNS and IP subject alternative names.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }
}

/// The private key in `key_pem`, loaded by the ring provider.
fn signing_key(at: &PemOrigin, key_pem: &[u8]) -> Result<Arc<dyn SigningKey>, TlsError> {
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey { at: at.clone() },
        source => TlsError::Pem {
            at: at.clone(),
            source,
        },
    })?;
    provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::PrivateKey {
            at: at.clone(),
            source,
        })
}

/// What a leaf certificate says about itself.
struct Leaf {
    not_after: i64,
    serial: String,
    names: Vec<String>,
}

impl Leaf {
    fn read(der: &CertificateDer<'_>) -> Result<Self, String> {
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
        Ok(Leaf {
            not_after: cert.validity().not_after.timestamp(),
            serial: cert.raw_serial_as_string(),
            names,
        })
    }
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
pub(crate) struct CertStore {
    current: ArcSwap<Credentials>,
}

impl CertStore {
    /// A store serving `initial`.
    pub(crate) fn new(initial: Credentials) -> Self {
        CertStore {
            current: ArcSwap::from_pointee(initial),
        }
    }

    /// The pair being served.
    pub(crate) fn current(&self) -> Arc<Credentials> {
        self.current.load_full()
    }

    /// Serves `credentials` from the next handshake on.
    pub(crate) fn store(&self, credentials: Credentials) {
        self.current.store(Arc::new(credentials));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.load().certified))
    }
}

/// TLS 1.2 and 1.3 only, ALPN `h2` then `http/1.1`, certificate from `store`.
pub(crate) fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::generate;

    fn from_pem(cert: &str, key: &str) -> Result<Credentials, TlsError> {
        let origin = PairOrigin {
            cert: PemOrigin::File("tls.crt".into()),
            key: PemOrigin::File("tls.key".into()),
        };
        Credentials::from_pem(&origin, cert.as_bytes(), key.as_bytes())
    }

    #[test]
    fn generated_pair_loads_with_its_names() {
        let pki = generate(&["webhook.example.svc".into(), "127.0.0.1".into()], 30).unwrap();
        let creds = from_pem(&pki.cert_pem, &pki.key_pem).unwrap();
        assert_eq!(creds.names(), ["webhook.example.svc", "127.0.0.1"]);
        let in_30_days = time::OffsetDateTime::now_utc().unix_timestamp() + 30 * 86_400;
        assert!((creds.not_after() - in_30_days).abs() < 60);
    }

    #[test]
    fn mismatched_key_names_both_files() {
        let a = generate(&["a.example".into()], 1).unwrap();
        let b = generate(&["b.example".into()], 1).unwrap();
        let err = from_pem(&a.cert_pem, &b.key_pem).unwrap_err().to_string();
        assert!(err.contains("tls.crt") && err.contains("tls.key"), "{err}");
    }

    #[test]
    fn empty_files_are_named() {
        let a = generate(&["a.example".into()], 1).unwrap();
        let err = from_pem("", &a.key_pem).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        let err = from_pem(&a.cert_pem, "junk").unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    }

    #[test]
    fn names_secret_keys_and_generated_pairs_without_paths() {
        let origin = PairOrigin {
            cert: PemOrigin::SecretKey("tls.crt"),
            key: PemOrigin::SecretKey("tls.key"),
        };
        let err = Credentials::from_pem(&origin, b"", b"").unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to find a PEM CERTIFICATE block in tls.crt"
        );
        let at = PemOrigin::Generated("certificate");
        assert_eq!(at.to_string(), "the generated certificate");
    }
}
