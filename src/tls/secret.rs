//! Self-managed certificates: with no cert-manager, the webhook keeps its own CA and serving
//! certificate in one Secret, puts the CA into the `caBundle` of its own
//! MutatingWebhookConfiguration, and renews the serving certificate before it expires.
//!
//! Several replicas may start at once. Every write carries the `resourceVersion` that was
//! read, so exactly one replica's certificate lands; the others get a conflict, read the
//! Secret again and serve the winner's. The CA is created once and kept (ten years); only the
//! serving certificate rotates, so the `caBundle` never has to change under the API server.
//!
//! The RBAC this needs is `get`/`patch` on that one Secret (which the install creates
//! empty) and `get`/`patch` on that one MutatingWebhookConfiguration.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tracing::{info, warn};

use super::credentials::{Credentials, PairOrigin, PemOrigin};
use super::{TlsError, generate, issue_with_ca};
use crate::error::error_chain;
use crate::watch::{LastSeen, Reload};

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
/// Attempts at winning (or reading) the Secret before start-up gives up.
const ATTEMPTS: usize = 10;
/// The Secret is read at most this often; the API server need not hear from every tick.
const SECRET_POLL: Duration = Duration::from_secs(10);
/// The `caBundle` is checked at most this often (an upgrade of the install may reset it).
const BUNDLE_POLL: Duration = Duration::from_secs(60);

/// Errors of this module; each names the object at fault.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("failed to create a Kubernetes client (in-cluster or kubeconfig)")]
    Client(#[source] Box<kube::Error>),
    #[error("failed to {action} Secret {namespace}/{name}")]
    Secret {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to {action} MutatingWebhookConfiguration {name}")]
    Webhook {
        action: &'static str,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("failed to settle Secret {namespace}/{name}: it kept changing under us")]
    Contended { namespace: String, name: String },
    #[error("failed to use the certificate in Secret {namespace}/{name}")]
    Tls {
        namespace: String,
        name: String,
        #[source]
        source: Box<TlsError>,
    },
    #[error("no DNS names for the serving certificate: set --service-name or --dns-name")]
    NoNames,
}

/// What the self-managed mode needs to know.
#[derive(Clone, Debug)]
pub struct SecretConfig {
    /// The Secret holding `ca.crt`, `ca.key`, `tls.crt` and `tls.key`.
    pub(crate) secret: String,
    pub(crate) namespace: String,
    /// The MutatingWebhookConfiguration whose `caBundle` to keep; none to leave it alone.
    pub(crate) webhook_configuration: Option<String>,
    /// Subject alternative names of the serving certificate.
    pub(crate) names: Vec<String>,
    /// Validity of a serving certificate; it is renewed when a third of it is left.
    pub(crate) validity: Duration,
}

impl SecretConfig {
    /// The in-cluster names of a Service, plus `extra`.
    pub(crate) fn service_names(
        service: Option<&str>,
        namespace: &str,
        extra: &[String],
    ) -> Vec<String> {
        let mut names: Vec<String> = service
            .map(|s| {
                vec![
                    s.to_owned(),
                    format!("{s}.{namespace}"),
                    format!("{s}.{namespace}.svc"),
                    format!("{s}.{namespace}.svc.cluster.local"),
                ]
            })
            .unwrap_or_default();
        for name in extra {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    fn secret_error(&self, action: &'static str, source: kube::Error) -> SecretError {
        SecretError::Secret {
            action,
            namespace: self.namespace.clone(),
            name: self.secret.clone(),
            source: Box::new(source),
        }
    }

    fn tls_error(&self, source: TlsError) -> SecretError {
        SecretError::Tls {
            namespace: self.namespace.clone(),
            name: self.secret.clone(),
            source: Box::new(source),
        }
    }
}

/// The namespace this pod runs in: `POD_NAMESPACE`, else the service account's namespace
/// file, else `default`.
pub(crate) fn own_namespace() -> String {
    if let Ok(ns) = std::env::var("POD_NAMESPACE")
        && !ns.is_empty()
    {
        return ns;
    }
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// The four PEM values of the Secret, as far as present.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Material {
    ca_cert: Option<String>,
    ca_key: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl Material {
    fn from_secret(secret: &Secret) -> Self {
        let get = |k: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(k))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|s| !s.trim().is_empty())
        };
        Material {
            ca_cert: get(CA_CERT),
            ca_key: get(CA_KEY),
            cert: get(TLS_CERT),
            key: get(TLS_KEY),
        }
    }

    fn data(&self) -> BTreeMap<String, String> {
        use base64::Engine as _;
        let b64 = |v: &Option<String>| {
            base64::engine::general_purpose::STANDARD.encode(v.as_deref().unwrap_or(""))
        };
        BTreeMap::from([
            (CA_CERT.to_owned(), b64(&self.ca_cert)),
            (CA_KEY.to_owned(), b64(&self.ca_key)),
            (TLS_CERT.to_owned(), b64(&self.cert)),
            (TLS_KEY.to_owned(), b64(&self.key)),
        ])
    }
}

/// Keeps the serving certificate of one replica in step with the Secret.
pub(crate) struct SecretSource {
    config: SecretConfig,
    secrets: Api<Secret>,
    webhooks: Api<MutatingWebhookConfiguration>,
    /// What is being served, to notice a rotation made by another replica.
    serving: Material,
    last_secret_poll: tokio::time::Instant,
    last_bundle_poll: tokio::time::Instant,
    /// The last failure reported, so a lasting one is reported once.
    last_error: LastSeen<Option<String>>,
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SecretSource {
    /// Creates a client from the environment (in-cluster, else kubeconfig) and starts.
    pub(crate) async fn start(config: SecretConfig) -> Result<(Self, Credentials), SecretError> {
        let client = Client::try_default()
            .await
            .map_err(|e| SecretError::Client(Box::new(e)))?;
        Self::start_with(client, config).await
    }

    /// Makes sure the Secret holds a usable CA and serving certificate (creating or renewing
    /// them), puts the CA into the webhook configuration, and returns what to serve.
    async fn start_with(
        client: Client,
        config: SecretConfig,
    ) -> Result<(Self, Credentials), SecretError> {
        if config.names.is_empty() {
            return Err(SecretError::NoNames);
        }
        let now = tokio::time::Instant::now();
        let mut manager = SecretSource {
            secrets: Api::namespaced(client.clone(), &config.namespace),
            webhooks: Api::all(client),
            config,
            serving: Material::default(),
            last_secret_poll: now,
            last_bundle_poll: now,
            last_error: LastSeen::new(None),
        };
        let (material, credentials) = manager.settle().await?;
        manager.serving = material;
        if let Err(e) = manager.ensure_ca_bundle().await {
            // The configuration may be applied after the Deployment; keep serving and retry.
            warn!(error = %error_chain(&e), "failed to set the caBundle; will retry");
        }
        Ok((manager, credentials))
    }

    /// Reads the Secret until it holds a good pair, writing one when it does not.
    async fn settle(&self) -> Result<(Material, Credentials), SecretError> {
        let cfg = &self.config;
        for _ in 0..ATTEMPTS {
            let existing = self
                .secrets
                .get_opt(&cfg.secret)
                .await
                .map_err(|e| cfg.secret_error("read", e))?;
            let material = existing
                .as_ref()
                .map(Material::from_secret)
                .unwrap_or_default();
            if let Some(credentials) = self.usable(&material) {
                return Ok((material, credentials));
            }
            let fresh = self.renew(&material)?;
            let written = match &existing {
                None => self.create(&fresh).await,
                Some(secret) => self.write(secret, &fresh).await,
            };
            match written {
                Ok(()) => {
                    let credentials = self.parse(&fresh)?;
                    info!(
                        secret = %cfg.secret,
                        serial = credentials.serial(),
                        not_after = credentials.not_after(),
                        "wrote a new serving certificate"
                    );
                    return Ok((fresh, credentials));
                }
                // Another replica wrote first: read theirs.
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(cfg.secret_error("write", e)),
            }
        }
        Err(SecretError::Contended {
            namespace: cfg.namespace.clone(),
            name: cfg.secret.clone(),
        })
    }

    /// The pair in `material`, when it is complete, covers our names and is not due for
    /// renewal.
    fn usable(&self, material: &Material) -> Option<Credentials> {
        material.ca_cert.as_ref()?;
        material.ca_key.as_ref()?;
        let credentials = self.parse(material).ok()?;
        let covers = self
            .config
            .names
            .iter()
            .all(|n| credentials.names().contains(n));
        (covers && !self.due(&credentials)).then_some(credentials)
    }

    fn due(&self, credentials: &Credentials) -> bool {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let third = (self.config.validity.as_secs() / 3) as i64;
        credentials.not_after() - now <= third
    }

    fn parse(&self, material: &Material) -> Result<Credentials, SecretError> {
        let origin = PairOrigin {
            cert: PemOrigin::SecretKey(TLS_CERT),
            key: PemOrigin::SecretKey(TLS_KEY),
        };
        Credentials::from_pem(
            &origin,
            material.cert.as_deref().unwrap_or("").as_bytes(),
            material.key.as_deref().unwrap_or("").as_bytes(),
        )
        .map_err(|e| self.config.tls_error(e))
    }

    /// A new serving pair, signed by the CA in `material` when there is a usable one.
    fn renew(&self, material: &Material) -> Result<Material, SecretError> {
        let cfg = &self.config;
        let validity = time::Duration::seconds(cfg.validity.as_secs() as i64);
        if let (Some(ca_cert), Some(ca_key)) = (&material.ca_cert, &material.ca_key)
            && let Ok((cert, key)) = issue_with_ca(ca_cert, ca_key, &cfg.names, validity)
        {
            return Ok(Material {
                ca_cert: Some(ca_cert.clone()),
                ca_key: Some(ca_key.clone()),
                cert: Some(cert),
                key: Some(key),
            });
        }
        let days = u32::try_from(validity.whole_days().max(1)).unwrap_or(u32::MAX);
        let mut pki = generate(&cfg.names, days).map_err(|e| cfg.tls_error(e))?;
        if validity < time::Duration::days(1) {
            // Shorter than a day (tests): reissue with the exact validity.
            let (cert, key) =
                issue_with_ca(&pki.ca_cert_pem, &pki.ca_key_pem, &cfg.names, validity)
                    .map_err(|e| cfg.tls_error(e))?;
            pki.cert_pem = cert;
            pki.key_pem = key;
        }
        Ok(Material {
            ca_cert: Some(pki.ca_cert_pem),
            ca_key: Some(pki.ca_key_pem),
            cert: Some(pki.cert_pem),
            key: Some(pki.key_pem),
        })
    }

    async fn create(&self, material: &Material) -> Result<(), kube::Error> {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.config.secret,
                "namespace": self.config.namespace,
                "labels": {"app.kubernetes.io/managed-by": "gomemlimit-injector"},
            },
            "type": "Opaque",
            "data": material.data(),
        }))
        .expect("a well-formed Secret");
        self.secrets
            .create(&PostParams::default(), &secret)
            .await
            .map(drop)
    }

    /// A merge patch of the data, with the `resourceVersion` read as a precondition, so a
    /// concurrent write by another replica makes this one fail with a conflict.
    async fn write(&self, current: &Secret, material: &Material) -> Result<(), kube::Error> {
        let patch = json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "data": material.data(),
        });
        self.secrets
            .patch(
                &self.config.secret,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(drop)
    }

    /// Sets every webhook's `caBundle` of the configuration to our CA, with a JSON patch
    /// that tests each webhook's name first, so a concurrent edit fails instead of landing
    /// on the wrong entry. Fields we do not own are never sent back.
    async fn ensure_ca_bundle(&self) -> Result<(), SecretError> {
        let Some(name) = &self.config.webhook_configuration else {
            return Ok(());
        };
        let Some(ca) = &self.serving.ca_cert else {
            return Ok(());
        };
        let webhook_error = |action, source| SecretError::Webhook {
            action,
            name: name.clone(),
            source: Box::new(source),
        };
        let config = self
            .webhooks
            .get(name)
            .await
            .map_err(|e| webhook_error("read", e))?;
        let bundle = ByteString(ca.as_bytes().to_vec());
        let mut ops = Vec::new();
        for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
            if webhook.client_config.ca_bundle.as_ref() == Some(&bundle) {
                continue;
            }
            ops.push(
                json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}),
            );
            ops.push(json!({
                "op": "add",
                "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                "value": serde_json::to_value(&bundle).expect("bytes serialize"),
            }));
        }
        if ops.is_empty() {
            return Ok(());
        }
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::Value::Array(ops)).expect("well-formed JSON patch");
        self.webhooks
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map_err(|e| webhook_error("patch", e))?;
        info!(configuration = %name, "set the caBundle of the webhook configuration");
        Ok(())
    }

    /// Called on every reload tick: picks up a rotation made by another replica, renews a
    /// certificate that is due, and keeps the `caBundle` in place.
    pub(crate) async fn poll(&mut self) -> Reload<Credentials, SecretError> {
        let now = tokio::time::Instant::now();
        if now.duration_since(self.last_bundle_poll) >= BUNDLE_POLL {
            self.last_bundle_poll = now;
            if let Err(e) = self.ensure_ca_bundle().await {
                warn!(error = %error_chain(&e), "failed to set the caBundle; will retry");
            }
        }
        if now.duration_since(self.last_secret_poll) < SECRET_POLL {
            return Reload::Unchanged;
        }
        self.last_secret_poll = now;
        match self.settle().await {
            Ok((material, credentials)) => {
                self.last_error = LastSeen::new(None);
                if material == self.serving {
                    return Reload::Unchanged;
                }
                self.serving = material;
                Reload::Loaded(credentials)
            }
            Err(e) => {
                if self.last_error.changed(Some(error_chain(&e))) {
                    Reload::Failed(e)
                } else {
                    Reload::Unchanged
                }
            }
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_cover_every_in_cluster_form() {
        let names = SecretConfig::service_names(
            Some("injector"),
            "gomemlimit-system",
            &["injector".to_owned(), "extra.example".to_owned()],
        );
        assert_eq!(
            names,
            [
                "injector",
                "injector.gomemlimit-system",
                "injector.gomemlimit-system.svc",
                "injector.gomemlimit-system.svc.cluster.local",
                "extra.example",
            ]
        );
    }

    #[test]
    fn secret_data_round_trips() {
        let material = Material {
            ca_cert: Some("A".into()),
            ca_key: Some("B".into()),
            cert: Some("C".into()),
            key: None,
        };
        let secret: Secret = serde_json::from_value(json!({"data": material.data()})).unwrap();
        let back = Material::from_secret(&secret);
        assert_eq!(back.ca_cert.as_deref(), Some("A"));
        assert_eq!(back.cert.as_deref(), Some("C"));
        assert_eq!(back.key, None, "an empty value counts as absent");
    }
}
