//! Requests to the API server over its own HTTPS, with the admin client certificate, for
//! what kube's client does not show: the `Warning` headers of an answer, and the status of
//! a refusal as sent. Used to compare both engines and to load the API server.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// A client of the control plane in a `cluster/controlplane.sh` directory.
#[derive(Clone)]
pub(crate) struct Api {
    client: reqwest::Client,
    base: String,
}

/// The API server's answer to a request.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    /// The `Warning` headers, as text.
    pub(crate) warnings: Vec<String>,
}

impl Api {
    /// The client for the control plane started in `dir`.
    pub(crate) fn new(dir: &Path) -> Result<Api> {
        let env = std::fs::read_to_string(dir.join("env")).context("control plane env file")?;
        let base = env
            .lines()
            .find_map(|l| l.strip_prefix("export APISERVER_URL="))
            .context("no APISERVER_URL")?
            .to_owned();
        let read = |f: &str| std::fs::read(dir.join("pki").join(f)).with_context(|| f.to_owned());
        let mut identity = read("admin.crt")?;
        identity.extend(read("admin.key")?);
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.crt")?)?)
            .identity(reqwest::Identity::from_pem(&identity)?)
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Api { client, base })
    }

    /// `POST` of a pod in `ns`, with server-side dry run or not.
    pub(crate) async fn create_pod(&self, ns: &str, pod: &Value, dry_run: bool) -> Result<Answer> {
        let mut url = format!("{}/api/v1/namespaces/{ns}/pods", self.base);
        if dry_run {
            url.push_str("?dryRun=All");
        }
        let response = self
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(pod.to_string())
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        answer(response).await
    }

    /// `PATCH` of the `resize` subresource of the pod `name` in `ns` (a strategic merge
    /// patch), with server-side dry run or not.
    pub(crate) async fn resize_pod(
        &self,
        ns: &str,
        name: &str,
        patch: &Value,
        dry_run: bool,
    ) -> Result<Answer> {
        let mut url = format!("{}/api/v1/namespaces/{ns}/pods/{name}/resize", self.base);
        if dry_run {
            url.push_str("?dryRun=All");
        }
        let response = self
            .client
            .patch(&url)
            .header("content-type", "application/strategic-merge-patch+json")
            .body(patch.to_string())
            .send()
            .await
            .with_context(|| format!("PATCH {url}"))?;
        answer(response).await
    }

    /// `GET` of the pod `name` in `ns`.
    pub(crate) async fn pod(&self, ns: &str, name: &str) -> Result<Value> {
        let url = format!("{}/api/v1/namespaces/{ns}/pods/{name}", self.base);
        Ok(self
            .client
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }
}

/// The answer of `response`: its status, body and warnings.
async fn answer(response: reqwest::Response) -> Result<Answer> {
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(warning_text)
        .collect();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok(Answer {
        status,
        body,
        warnings,
    })
}

/// The text of a `Warning` header, `299 - "text"` with `\"` and `\\` escaped.
fn warning_text(header: &str) -> String {
    let quoted = header
        .split_once('"')
        .map(|(_, rest)| rest.strip_suffix('"').unwrap_or(rest))
        .unwrap_or(header);
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}
