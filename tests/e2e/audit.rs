//! Audit: warnings and audit annotations through the API server, and the live `audit`
//! command against the cluster.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::checks::assert_untouched;
use crate::env::{Env, eventually, pod};

pub(crate) async fn audit_warns_and_stores_the_pod_unchanged(env: &mut Env) -> Result<()> {
    env.opt_in_namespace("audit", "audit", "Fail").await?;
    let stderr = env.create_with_warnings("audit", &pod("audited", "256Mi", Some("128Mi")))?;
    ensure!(
        stderr
            .contains("Warning: container \"app\": would set requests.memory to 256Mi (was 128Mi)"),
        "kubectl did not print the warning: {stderr}"
    );
    let stored = serde_json::to_value(env.pods("audit").get("audited").await?)?;
    assert_untouched(&stored, Some("128Mi"))?;
    let audit_log = env.dir.join("audit/audit.log");
    eventually(Duration::from_secs(10), "audit annotations in the audit log", || {
        let audit_log = audit_log.clone();
        async move {
            let text = std::fs::read_to_string(&audit_log)?;
            Ok(text.lines().any(|l| {
                l.contains("\"audited\"")
                    && l.contains("pods.gomemlimit.io/would-mutate\":\"true\"")
                    && l.contains("pods.gomemlimit.io/changes\":\"app: requests.memory 128Mi-\\u003e256Mi")
            }))
        }
    })
    .await
}

/// Runs the webhook binary (or, through `kubectl`, its plugin form) against the cluster.
fn injector(
    env: &Env,
    args: &[&str],
    kubeconfig: &std::path::Path,
) -> Result<std::process::Output> {
    std::process::Command::new(env!("CARGO_BIN_EXE_gomemlimit-injector"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .with_context(|| format!("failed to run {args:?} for {}", env.dir.display()))
}

pub(crate) async fn live_audit_groups_pods_by_workload(env: &mut Env) -> Result<()> {
    // Namespaces the webhook does not select: their pods are stored as written.
    env.namespace("audit-live", json!({})).await?;
    env.namespace("audit-clean", json!({})).await?;
    env.apply("audit-live", &crate::env::deployment("catalog", 3))?;
    env.create_pod("audit-live", &pod("bare", "128Mi", Some("64Mi")))
        .await?;
    let mut clean = pod("clean", "128Mi", Some("128Mi"));
    clean["spec"]["containers"][0]["env"] = json!([{"name": "GOMEMLIMIT", "value": "100MiB"}]);
    env.create_pod("audit-clean", &clean).await?;
    let pods = env.pods("audit-live");
    let pods = &pods;
    eventually(Duration::from_secs(60), "3 catalog pods", || async move {
        Ok(pods.list(&Default::default()).await?.items.len() >= 4)
    })
    .await?;

    let out = injector(
        env,
        &["audit", "-n", "audit-live", "-o", "json"],
        &env.kubeconfig,
    )?;
    ensure!(
        out.status.code() == Some(1),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let objects = report["objects"].as_array().context("objects")?;
    let row = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["name"] == name)
            .cloned()
    };
    let catalog =
        row("Deployment", "catalog").with_context(|| format!("no Deployment row: {report}"))?;
    ensure!(catalog["pods"] == 3, "replicas not grouped: {catalog}");
    ensure!(
        catalog["containers"][0]["memoryRequest"]
            == json!({"current": "256Mi", "proposed": "512Mi"}),
        "{catalog}"
    );
    ensure!(
        row("Pod", "bare").is_some(),
        "no row for the bare pod: {report}"
    );
    ensure!(
        objects.len() == 2,
        "one row per workload expected: {report}"
    );

    // Read in pages of two, the report is the same as in one page.
    let policy = gomemlimit_injector::policy::Policy::default();
    let audit = |page| {
        gomemlimit_injector::live::audit_with(
            env.client.clone(),
            "the e2e control plane",
            Some("audit-live"),
            &policy,
            page,
        )
    };
    let paged = audit(2).await?;
    let whole = audit(gomemlimit_injector::live::PAGE).await?;
    ensure!(
        paged == whole && paged.len() == 2,
        "paged {paged:?} != {whole:?}"
    );
    ensure!(paged.iter().any(|r| r.pods == Some(3)), "{paged:?}");

    let out = injector(env, &["audit", "-n", "audit-clean"], &env.kubeconfig)?;
    ensure!(
        out.status.code() == Some(0),
        "compliant namespace: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // As a kubectl plugin.
    let plugins = env.dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    let plugin = plugins.join("kubectl-gomemlimit");
    if !plugin.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_gomemlimit-injector"), &plugin)?;
    }
    let path = format!(
        "{}:{}",
        plugins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(&env.kubectl)
        .args(["gomemlimit", "audit", "-n", "audit-live"])
        .env("KUBECONFIG", &env.kubeconfig)
        .env("PATH", path)
        .output()?;
    let table = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.code() == Some(1) && table.contains("Deployment  catalog  3"),
        "kubectl gomemlimit audit: {table}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A user that may not list pods gets an error that says so.
    let token = env.kubectl(
        &["create", "serviceaccount", "nobody", "-n", "audit-live"],
        None,
    )?;
    ensure!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = env.kubectl(&["create", "token", "nobody", "-n", "audit-live"], None)?;
    ensure!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout)?.trim().to_owned();
    let restricted = env.dir.join("kubeconfig-nobody");
    std::fs::copy(&env.kubeconfig, &restricted)?;
    let restricted_str = restricted.to_str().context("path")?;
    for args in [
        vec![
            "config",
            "set-credentials",
            "nobody",
            "--token",
            token.as_str(),
            "--kubeconfig",
            restricted_str,
        ],
        vec![
            "config",
            "set-context",
            "--current",
            "--user",
            "nobody",
            "--kubeconfig",
            restricted_str,
        ],
    ] {
        env.kubectl_ok(&args, None)?;
    }
    let out = injector(env, &["audit", "-n", "audit-live"], &restricted)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(2)
            && err.contains("forbidden: cannot list pods in namespace audit-live"),
        "exit {:?}: {err}",
        out.status.code()
    );
    Ok(())
}
