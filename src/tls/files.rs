//! The key pair in two PEM files, watched for rotation.

use std::path::{Path, PathBuf};

use super::TlsError;
use super::credentials::{Credentials, PairOrigin, PemOrigin};
use crate::error::error_chain;
use crate::watch::{LastSeen, Reload};

/// Where a PEM key pair lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPairFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl KeyPairFiles {
    fn origin(&self) -> PairOrigin {
        PairOrigin {
            cert: PemOrigin::File(self.cert.clone()),
            key: PemOrigin::File(self.key.clone()),
        }
    }
}

/// The error for a file that could not be read.
fn read_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> TlsError + 'a {
    move |source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    }
}

/// What the two files held.
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// Watches a key pair on disk by content.
///
/// Comparing contents rather than modification times catches every way the files can be
/// replaced, including Kubernetes' atomic swap of the `..data` symlink in Secret volumes,
/// which changes neither the path nor, necessarily, the mtime seen through it. A change is
/// reported once: a broken pair is not reported again until the files change again.
pub(crate) struct FileSource {
    files: KeyPairFiles,
    /// The contents, or the text of the error reading them.
    seen: LastSeen<Result<Contents, String>>,
}

impl FileSource {
    /// Loads and checks the pair (blocking; for start-up) and starts watching it.
    pub(crate) fn start(files: KeyPairFiles) -> Result<(Self, Credentials), TlsError> {
        let contents = Contents {
            cert: std::fs::read(&files.cert).map_err(read_error("certificate", &files.cert))?,
            key: std::fs::read(&files.key).map_err(read_error("private key", &files.key))?,
        };
        let credentials = Credentials::from_pem(&files.origin(), &contents.cert, &contents.key)?;
        let seen = LastSeen::new(Ok(contents));
        Ok((FileSource { files, seen }, credentials))
    }

    /// Re-reads the files and reports whether they changed.
    pub(crate) async fn poll(&mut self) -> Reload<Credentials, TlsError> {
        let (seen, result) = match self.read().await {
            Ok(contents) => {
                let result =
                    Credentials::from_pem(&self.files.origin(), &contents.cert, &contents.key);
                (Ok(contents), result)
            }
            Err(e) => (Err(error_chain(&e)), Err(e)),
        };
        if !self.seen.changed(seen) {
            return Reload::Unchanged;
        }
        match result {
            Ok(credentials) => Reload::Loaded(credentials),
            Err(e) => Reload::Failed(e),
        }
    }

    async fn read(&self) -> Result<Contents, TlsError> {
        let files = &self.files;
        let cert = tokio::fs::read(&files.cert).await;
        let cert = cert.map_err(read_error("certificate", &files.cert))?;
        let key = tokio::fs::read(&files.key).await;
        let key = key.map_err(read_error("private key", &files.key))?;
        Ok(Contents { cert, key })
    }
}
