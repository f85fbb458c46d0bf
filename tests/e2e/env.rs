//! The end-to-end environment: a real control plane (etcd, kube-apiserver,
//! kube-controller-manager from `cluster/controlplane.sh`), the webhook binary on loopback, and
//! helpers to install the chart's rendered webhook configuration with only `clientConfig`
//! switched to a URL.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

pub(crate) use crate::cluster::{Cluster, ROOT, container, env_of, eventually, kubernetes_bin, sh};

/// The running control plane and webhook.
pub(crate) struct Env {
    pub(crate) cluster: Cluster,
    pub(crate) webhook: Webhook,
    /// CA that signed the webhook's serving certificate (PEM), and its key.
    pub(crate) ca_cert: String,
    pub(crate) ca_key: String,
}

impl Deref for Env {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

/// One webhook process.
pub(crate) struct Webhook {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) metrics_port: u16,
    pub(crate) certs: PathBuf,
    pub(crate) log: PathBuf,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) use crate::support::free_port;

impl Env {
    /// Starts the control plane and one webhook (files-based TLS) on loopback.
    pub(crate) async fn start(bin: &Path) -> Result<Env> {
        let script = Path::new(ROOT).join("cluster/controlplane.sh");
        let started = Instant::now();
        let out = sh(Command::new(&script)
            .arg("start")
            .env("CONTROLPLANE_BIN", bin)
            // If this process dies without stopping it, the control plane follows.
            .env("CONTROLPLANE_OWNER_PID", std::process::id().to_string())
            .stderr(Stdio::inherit()))?;
        ensure!(out.status.success(), "cluster/controlplane.sh start failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(stdout.lines().last().context("no DIR printed")?.trim());
        println!(
            "control plane up in {:.1}s at {}",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        let cluster = Cluster::connect(dir.clone(), bin).await?;

        let certs = dir.join("webhook-certs");
        let pki = gomemlimit_injector::tls::generate(
            &["127.0.0.1".to_owned(), "localhost".to_owned()],
            1,
        )?;
        gomemlimit_injector::tls::write_pki(&certs, &pki, true)?;
        let webhook = Webhook::start(&dir, &certs, "webhook", &[])?;
        let env = Env {
            cluster,
            webhook,
            ca_cert: pki.ca_cert_pem,
            ca_key: pki.ca_key_pem,
        };
        env.webhook.wait_ready().await?;
        Ok(env)
    }

    /// Stops the control plane; logs are kept when `keep` (after a failure).
    pub(crate) fn stop(&self, keep: bool) {
        let script = Path::new(ROOT).join("cluster/controlplane.sh");
        let mut cmd = Command::new(script);
        cmd.arg("stop").arg(&self.dir);
        if keep {
            cmd.env("KEEP_DIR", "1");
            println!("logs kept in {}", self.dir.display());
        }
        let _ = cmd.status();
    }

    /// `kubectl apply` of one object in `ns`.
    pub(crate) fn apply(&self, ns: &str, object: &Value) -> Result<()> {
        let out = self.kubectl(&["apply", "-n", ns, "-f", "-"], Some(&object.to_string()))?;
        ensure!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Installs the chart's rendered MutatingWebhookConfiguration for `selection`/`mode`
    /// with `clientConfig` pointed at `port` on loopback, and the given failure policy.
    pub(crate) async fn install_webhook(
        &self,
        selection: &str,
        mode: &str,
        failure_policy: &str,
        port: u16,
        ca_bundle: Option<&str>,
    ) -> Result<()> {
        let config = rendered_webhook(selection, mode, "certmanager")?;
        let path = if mode == "audit" { "/audit" } else { "/mutate" };
        let mut config = config;
        config["metadata"]
            .as_object_mut()
            .context("metadata")?
            .remove("annotations");
        for webhook in config["webhooks"].as_array_mut().context("webhooks")? {
            let mut client_config = json!({"url": format!("https://127.0.0.1:{port}{path}")});
            if let Some(ca) = ca_bundle {
                client_config["caBundle"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(ca));
            }
            webhook["clientConfig"] = client_config;
            webhook["failurePolicy"] = json!(failure_policy);
        }
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let name = config["metadata"]["name"]
            .as_str()
            .context("name")?
            .to_owned();
        let _ = api.delete(&name, &DeleteParams::default()).await;
        let (api_ref, name_ref) = (&api, &name);
        eventually(
            Duration::from_secs(20),
            "old configuration gone",
            || async move { Ok(api_ref.get_opt(name_ref).await?.is_none()) },
        )
        .await?;
        let object: MutatingWebhookConfiguration = serde_json::from_value(config)?;
        api.create(&PostParams::default(), &object).await?;
        Ok(())
    }

    /// An opt-in namespace with the enforce configuration (`failurePolicy: Fail`, so any
    /// call that does not get through shows as a refused pod) in force.
    pub(crate) async fn enforcing_namespace(&self, ns: &str) -> Result<()> {
        self.opt_in_namespace(ns, "enforce", "Fail").await
    }

    /// An opt-in namespace with the chart's `mode` configuration and `failure_policy` in
    /// force, served by the main webhook.
    pub(crate) async fn opt_in_namespace(
        &self,
        ns: &str,
        mode: &str,
        failure_policy: &str,
    ) -> Result<()> {
        self.namespace(ns, json!({"gomemlimit.io/inject": "enabled"}))
            .await?;
        self.install_webhook(
            "optin",
            mode,
            failure_policy,
            self.webhook.port,
            Some(&self.ca_cert),
        )
        .await?;
        self.wait_webhook_active(ns, mode == "enforce").await
    }
}

/// The MutatingWebhookConfiguration document of `deploy/manifests/<selection>-<mode>-<certs>.yaml`.
pub(crate) fn rendered_webhook(selection: &str, mode: &str, certs: &str) -> Result<Value> {
    let path = Path::new(ROOT).join(format!("deploy/manifests/{selection}-{mode}-{certs}.yaml"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| anyhow!("failed to parse {}: {e}", path.display()))?;
    docs.into_iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .with_context(|| format!("no MutatingWebhookConfiguration in {}", path.display()))
}

impl Webhook {
    /// Starts the webhook binary with key files from `certs` and `extra` flags.
    pub(crate) fn start(dir: &Path, certs: &Path, name: &str, extra: &[&str]) -> Result<Webhook> {
        Self::start_on(dir, certs, name, extra, free_port())
    }

    /// [`Webhook::start`] on a given port.
    pub(crate) fn start_on(
        dir: &Path,
        certs: &Path,
        name: &str,
        extra: &[&str],
        port: u16,
    ) -> Result<Webhook> {
        let metrics_port = free_port();
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gomemlimit-injector"));
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--tls-reload-interval", "200ms"])
            .args(["--shutdown-delay", "200ms"])
            .env("KUBECONFIG", dir.join("kubeconfig"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(file);
        if extra.is_empty() {
            cmd.arg("--tls-cert-file")
                .arg(certs.join("tls.crt"))
                .arg("--tls-key-file")
                .arg(certs.join("tls.key"));
        }
        cmd.args(extra);
        let child = cmd.spawn().context("failed to start the webhook")?;
        Ok(Webhook {
            child,
            port,
            metrics_port,
            certs: certs.to_owned(),
            log,
        })
    }

    /// Waits for `/readyz` on the metrics port.
    pub(crate) async fn wait_ready(&self) -> Result<()> {
        let url = format!("http://127.0.0.1:{}/readyz", self.metrics_port);
        let log = self.log.clone();
        let url = &url;
        eventually(Duration::from_secs(30), "webhook ready", || async move {
            Ok(reqwest::get(url)
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false))
        })
        .await
        .with_context(|| {
            format!(
                "webhook log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    }

    /// One sample of the webhook's metrics (0 when absent).
    pub(crate) async fn metric(&self, series: &str) -> Result<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = reqwest::get(&url).await?.text().await?;
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap_or(0.0)))
    }

    pub(crate) fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A Deployment of `replicas` pods whose container has limit 512Mi and request 256Mi.
pub(crate) fn deployment(name: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": pod("x", "512Mi", Some("256Mi"))["spec"].clone()
            }
        }
    })
}

/// A pod with one container `app` with the given memory limit and optional request.
pub(crate) fn pod(name: &str, limit: &str, request: Option<&str>) -> Value {
    let mut resources = json!({"limits": {"memory": limit}});
    if let Some(r) = request {
        resources["requests"] = json!({"memory": r});
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "app", "image": "registry.example/app:1", "resources": resources}]
        }
    })
}
