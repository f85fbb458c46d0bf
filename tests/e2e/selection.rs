//! Which pods the API server sends: opt-in and cluster-wide selection, the opt-out label,
//! and both failure policies while the webhook is down.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::checks::{assert_mutated, assert_untouched};
use crate::env::{Env, Webhook, eventually, pod};

pub(crate) async fn opt_in_mutates_only_labelled_namespaces(env: &mut Env) -> Result<()> {
    env.enforcing_namespace("optin-on").await?;
    env.namespace("optin-off", json!({})).await?;
    let on = env
        .create_pod("optin-on", &pod("web", "256Mi", Some("128Mi")))
        .await?;
    assert_mutated(&on, "256Mi")?;
    let off = env
        .create_pod("optin-off", &pod("web", "256Mi", Some("128Mi")))
        .await?;
    assert_untouched(&off, Some("128Mi"))
}

pub(crate) async fn cluster_wide_skips_excluded_namespaces_and_opted_out_pods(
    env: &mut Env,
) -> Result<()> {
    env.namespace("cw-plain", json!({})).await?;
    env.namespace("cw-disabled", json!({"gomemlimit.io/inject": "disabled"}))
        .await?;
    env.namespace("gomemlimit-system", json!({})).await?;
    env.install_webhook(
        "clusterwide",
        "enforce",
        "Fail",
        env.webhook.port,
        Some(&env.ca_cert),
    )
    .await?;
    env.wait_webhook_active("cw-plain", true).await?;
    let plain = env.create_pod("cw-plain", &pod("a", "256Mi", None)).await?;
    assert_mutated(&plain, "256Mi")?;
    for ns in ["cw-disabled", "kube-system", "gomemlimit-system"] {
        let stored = env.create_pod(ns, &pod("cw-probe", "256Mi", None)).await?;
        assert_untouched(&stored, None).with_context(|| format!("namespace {ns}"))?;
    }
    let mut opted_out = pod("opted-out", "256Mi", None);
    opted_out["metadata"]["labels"] = json!({"gomemlimit.io/inject": "disabled"});
    let stored = env.create_pod("cw-plain", &opted_out).await?;
    assert_untouched(&stored, None).context("pod labelled disabled")
}

pub(crate) async fn webhook_down_follows_the_failure_policy(env: &mut Env) -> Result<()> {
    env.opt_in_namespace("down", "enforce", "Ignore").await?;
    env.webhook.stop();
    let stored = env
        .create_pod("down", &pod("ignored", "256Mi", None))
        .await?;
    assert_untouched(&stored, None).context("failurePolicy Ignore")?;

    env.install_webhook(
        "optin",
        "enforce",
        "Fail",
        env.webhook.port,
        Some(&env.ca_cert),
    )
    .await?;
    let shared: &Env = env;
    let refused = eventually(
        Duration::from_secs(30),
        "failurePolicy Fail in force",
        || async move {
            let out = shared.kubectl(
                &["create", "-n", "down", "-f", "-"],
                Some(&pod("refused", "256Mi", None).to_string()),
            )?;
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            Ok(!out.status.success()
                && stderr.contains("failed calling webhook \"pods.gomemlimit.io\""))
        },
    )
    .await;
    // Bring the webhook back for anything that runs after.
    let certs = env.webhook.certs.clone();
    let dir = env.dir.clone();
    env.webhook = Webhook::start(&dir, &certs, "webhook-restarted", &[])?;
    env.webhook.wait_ready().await?;
    refused
}
