//! TLS: the serving key pair and where it comes from, and certificate generation for
//! `serve --self-signed`, self-managed certificates and the `certs` command.
//!
//! The server resolves its certificate through `CertStore` on every handshake, so a
//! rotation is one atomic store and connections already open keep their session. A
//! `CertificateSource` delivers the pairs to store: PEM files it watches
//! (`files`), a pair generated at start-up (`generate`), or a Secret it keeps itself
//! (`secret`). Each is started once, checked before anything binds, and polled on every
//! reload tick.

mod credentials;
mod files;
mod generate;
mod secret;

use std::path::PathBuf;

pub use credentials::PemOrigin;
pub(crate) use credentials::{CertStore, Credentials, server_config};
pub use files::KeyPairFiles;
pub use generate::{GeneratedPki, generate, issue_with_ca, write_pki};
pub(crate) use secret::own_namespace;
pub use secret::{SecretConfig, SecretError};

use crate::watch::Reload;

/// Errors reading, checking, generating or writing key pairs; each names the file (or the
/// Secret key) at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read the TLS {what} file {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to find a PEM CERTIFICATE block in {at}")]
    NoCertificate { at: PemOrigin },
    #[error("failed to find a PEM private key in {at}")]
    NoPrivateKey { at: PemOrigin },
    #[error("failed to parse the PEM in {at}")]
    Pem {
        at: PemOrigin,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("failed to parse the certificate in {at}: {reason}")]
    Certificate { at: PemOrigin, reason: String },
    #[error("failed to load the private key in {at}")]
    PrivateKey {
        at: PemOrigin,
        #[source]
        source: rustls::Error,
    },
    #[error("failed to pair {cert} with {key}: the private key does not belong to the certificate")]
    Mismatch { cert: PemOrigin, key: PemOrigin },
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
}

/// Where the serving key pair comes from, as `serve` is told.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// PEM files, watched for rotation.
    Files(KeyPairFiles),
    /// Generated at start-up for `localhost`, `127.0.0.1` and `::1` plus `names`; the CA
    /// certificate is written to `ca_out`.
    SelfSigned { names: Vec<String>, ca_out: PathBuf },
    /// Kept by the webhook itself in a Secret, with the CA in its webhook configuration.
    Secret(SecretConfig),
}

/// Why a certificate source could not deliver a pair.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    /// The pair could not be read, checked or generated.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The Secret could not be kept.
    #[error("failed to manage the serving certificate")]
    Secret(#[source] SecretError),
}

/// A started source of serving key pairs.
pub(crate) enum CertificateSource {
    Files(files::FileSource),
    /// A pair generated at start-up, for as long as the process runs.
    SelfSigned,
    Secret(Box<secret::SecretSource>),
}

impl CertificateSource {
    /// Loads, generates or fetches the first pair, checks it and starts the source.
    pub(crate) async fn start(config: &TlsSource) -> Result<(Self, Credentials), SourceError> {
        match config {
            TlsSource::Files(files) => {
                let (source, credentials) = files::FileSource::start(files.clone())?;
                Ok((CertificateSource::Files(source), credentials))
            }
            TlsSource::SelfSigned { names, ca_out } => {
                let credentials = generate::self_signed(names, ca_out)?;
                Ok((CertificateSource::SelfSigned, credentials))
            }
            TlsSource::Secret(secret) => {
                let (source, credentials) = secret::SecretSource::start(secret.clone())
                    .await
                    .map_err(SourceError::Secret)?;
                Ok((CertificateSource::Secret(Box::new(source)), credentials))
            }
        }
    }

    /// Checks the source for a new pair; called on every reload tick.
    pub(crate) async fn poll(&mut self) -> Reload<Credentials, SourceError> {
        match self {
            CertificateSource::Files(source) => source.poll().await.map_err(SourceError::Tls),
            CertificateSource::SelfSigned => Reload::Unchanged,
            CertificateSource::Secret(source) => source.poll().await.map_err(SourceError::Secret),
        }
    }
}
