//! Certificates: rotation of files without a failed call, self-managed certificates in a
//! Secret with two replicas and a renewal.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::json;

use crate::checks::assert_mutated;
use crate::env::{Env, Webhook, pod};

pub(crate) async fn certificate_rotation_loses_no_call(env: &mut Env) -> Result<()> {
    env.enforcing_namespace("rotation").await?;
    let reloads = "gomemlimit_injector_tls_reloads_total{result=\"success\"}";
    let before = env.webhook.metric(reloads).await?;
    let certs = env.webhook.certs.clone();
    let names = ["127.0.0.1".to_owned(), "localhost".to_owned()];
    let mut created = 0;
    let mut last = String::new();
    const ROTATIONS: usize = 5;
    for round in 0..ROTATIONS {
        // A new serving pair from the same CA, swapped in like a Secret volume update.
        let (cert, key) = gomemlimit_injector::tls::issue_with_ca(
            &env.ca_cert,
            &env.ca_key,
            &names,
            time::Duration::hours(1),
        )?;
        let tmp = certs.join("next");
        std::fs::create_dir_all(&tmp)?;
        std::fs::write(tmp.join("tls.crt"), &cert)?;
        std::fs::write(tmp.join("tls.key"), &key)?;
        std::fs::rename(tmp.join("tls.key"), certs.join("tls.key"))?;
        std::fs::rename(tmp.join("tls.crt"), certs.join("tls.crt"))?;
        last = cert;
        // Keep the API server calling until this rotation has been picked up.
        let mut picked_up = false;
        for _ in 0..200 {
            let stored = env
                .create_pod("rotation", &pod(&format!("r{created}"), "128Mi", None))
                .await
                .with_context(|| format!("pod r{created} refused during rotation"))?;
            assert_mutated(&stored, "128Mi")?;
            created += 1;
            if env.webhook.metric(reloads).await? - before >= (round + 1) as f64 {
                picked_up = true;
                break;
            }
        }
        ensure!(picked_up, "rotation {round} was not picked up");
    }
    // The webhook now serves the last pair, and the API server still gets through.
    let served = served_certificate(env.webhook.port).await?;
    let written = rustls_pki_types::pem::PemObject::pem_slice_iter(last.as_bytes())
        .next()
        .context("no PEM")??;
    let written: rustls_pki_types::CertificateDer = written;
    ensure!(
        served == written,
        "the last rotated certificate is not served"
    );
    let stored = env
        .create_pod("rotation", &pod("after", "128Mi", None))
        .await?;
    assert_mutated(&stored, "128Mi")?;
    println!("  {created} pods admitted and mutated across {ROTATIONS} rotations");
    Ok(())
}

pub(crate) async fn self_managed_certificates_bootstrap_and_are_trusted(
    env: &mut Env,
) -> Result<()> {
    env.namespace("gomemlimit-system", json!({})).await?;
    env.namespace("managed", json!({"gomemlimit.io/inject": "enabled"}))
        .await?;
    let rendered = crate::env::rendered_webhook("optin", "enforce", "selfmanaged")?;
    let configuration = rendered["metadata"]["name"]
        .as_str()
        .context("name")?
        .to_owned();
    let flags = || {
        vec![
            "--cert-secret".to_owned(),
            "gomemlimit-injector-tls".to_owned(),
            "--cert-secret-namespace".to_owned(),
            "gomemlimit-system".to_owned(),
            "--webhook-configuration".to_owned(),
            configuration.clone(),
            "--dns-name".to_owned(),
            "127.0.0.1".to_owned(),
            "--log-format".to_owned(),
            "json".to_owned(),
            // Short enough to see a renewal within the test: due when a third is left.
            "--cert-validity".to_owned(),
            "36s".to_owned(),
        ]
    };
    // Two replicas start at once against the same (absent) Secret.
    let dir = env.dir.clone();
    let (a, b) = (flags(), flags());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    // The configuration as installed, with no caBundle: the webhook fills it in.
    let port = crate::env::free_port();
    env.install_webhook("optin", "enforce", "Fail", port, None)
        .await?;
    let mut first = Webhook::start_on(&dir, &dir, "managed-a", &a, port)?;
    let mut second = Webhook::start(&dir, &dir, "managed-b", &b)?;
    first.wait_ready().await?;
    second.wait_ready().await?;
    let result = async {
        env.wait_webhook_active("managed", true).await?;
        let stored = env
            .create_pod("managed", &pod("trusted", "256Mi", None))
            .await?;
        assert_mutated(&stored, "256Mi")?;
        // Both replicas serve the one certificate that landed in the Secret.
        let initial = secret_certificate(env).await?;
        for replica in [&first, &second] {
            let served = served_certificate(replica.port).await?;
            ensure!(
                served == initial,
                "replica on {} serves another certificate",
                replica.port
            );
        }
        // Before it expires the serving certificate is renewed, by one replica, and both
        // serve the new one; the API server keeps getting through (failurePolicy Fail).
        let started = Instant::now();
        let mut created = 0;
        loop {
            let stored = env
                .create_pod("managed", &pod(&format!("m{created}"), "256Mi", None))
                .await
                .with_context(|| format!("pod m{created} refused during renewal"))?;
            assert_mutated(&stored, "256Mi")?;
            created += 1;
            let current = secret_certificate(env).await?;
            if current != initial
                && served_certificate(first.port).await? == current
                && served_certificate(second.port).await? == current
            {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(90),
                "the certificate was not renewed and picked up within 90s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!(
            "  renewed after {:.0}s; {created} pods admitted meanwhile",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
    .await;
    first.stop();
    second.stop();
    result
}

/// The serving certificate stored in the self-managed Secret.
pub(crate) async fn secret_certificate(
    env: &Env,
) -> Result<rustls_pki_types::CertificateDer<'static>> {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), "gomemlimit-system");
    let secret = secrets.get("gomemlimit-injector-tls").await?;
    let data = secret.data.context("empty Secret")?;
    let pem = data.get("tls.crt").context("no tls.crt")?.0.clone();
    let der = rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
        .next()
        .context("no PEM certificate")??;
    Ok(der)
}

pub(crate) async fn served_certificate(
    port: u16,
) -> Result<rustls_pki_types::CertificateDer<'static>> {
    use std::sync::Arc;
    #[derive(Debug)]
    struct AcceptAny;
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAny))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls_pki_types::ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let (_, conn) = tls.get_ref();
    Ok(conn
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no peer certificate")?
        .clone()
        .into_owned())
}
