//! Certificates made here: a CA and a serving certificate for `certs` and for
//! `serve --self-signed`, and serving certificates issued by an existing CA for the
//! self-managed Secret. Keys are ECDSA P-256.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tracing::info;

use super::TlsError;
use super::credentials::{Credentials, PairOrigin, PemOrigin};

/// Names always present in a `serve --self-signed` certificate, so local clients verify it.
pub(crate) const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Validity of a generated CA.
const CA_VALIDITY_DAYS: i64 = 3650;

/// Generates the `--self-signed` pair for [`LOCAL_NAMES`] and `extra_names`, and writes its
/// CA to `ca_out`.
pub(super) fn self_signed(extra_names: &[String], ca_out: &Path) -> Result<Credentials, TlsError> {
    let mut names: Vec<String> = LOCAL_NAMES.iter().map(|n| (*n).to_owned()).collect();
    for name in extra_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    // The key only lives in memory; a restart makes a new CA, so a year is plenty.
    let pki = generate(&names, 365)?;
    write_file(ca_out, pki.ca_cert_pem.as_bytes(), false, true)?;
    info!(path = %ca_out.display(), "wrote the self-signed CA certificate");
    let origin = PairOrigin {
        cert: PemOrigin::Generated("certificate"),
        key: PemOrigin::Generated("key"),
    };
    Credentials::from_pem(&origin, pki.cert_pem.as_bytes(), pki.key_pem.as_bytes())
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
const CERT_FILES: [&str; 4] = ["ca.crt", "ca.key", "tls.crt", "tls.key"];

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
pub(crate) fn write_file(
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
