//! In-place resize on the node (`kubectl patch --subresource resize`): a downward-API
//! GOMEMLIMIT follows the new limit because the resize restarts the container (the webhook
//! set its memory `resizePolicy` to `RestartContainer` at creation); a literal cannot, so a
//! shrink below the safe limit is refused with the webhook's message and a raise is allowed
//! with its warning.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::node::{ALLOC_IMAGE, NodeEnv};

const NAMESPACE: &str = "resize";

fn apply(env: &NodeEnv, object: &Value) -> Result<()> {
    env.kubectl_ok(
        &["apply", "-n", NAMESPACE, "-f", "-"],
        Some(&object.to_string()),
    )?;
    Ok(())
}

/// A Deployment of one long-running Go workload limited to 64Mi that prints the
/// GOMEMLIMIT it started with.
fn deployment(name: &str, annotations: &Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "app", "image": ALLOC_IMAGE,
                        "args": ["-live-mib", "8", "-alloc-mib", "16", "-rate-mib", "64", "-wait"],
                        "resources": {"limits": {"memory": "64Mi"}}
                    }]
                }
            }
        }
    })
}

/// Polls `check` every 250 ms until it yields a value, for at most `limit`.
async fn poll<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => None,
            Err(e) => Some(e),
        };
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what} (last error: {last:?})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The Deployment's pod, once its container runs.
async fn running_pod(env: &NodeEnv, app: &str) -> Result<Value> {
    poll(Duration::from_secs(120), "a running pod", || {
        let pods = env.get_json(&["pods", "-n", NAMESPACE, "-l", &format!("app={app}")])?;
        let pod = pods["items"].as_array().and_then(|p| p.first()).cloned();
        Ok(pod.filter(|p| p["status"]["containerStatuses"][0]["state"]["running"].is_object()))
    })
    .await
}

/// The GOMEMLIMIT the running process reported.
fn reported_gomemlimit(env: &NodeEnv, pod: &str) -> Result<String> {
    let log = env.logs(NAMESPACE, pod)?;
    let report: Value = serde_json::from_str(log.trim().lines().last().unwrap_or_default())
        .with_context(|| format!("{pod} printed {log:?}"))?;
    Ok(report["GOMEMLIMIT"].as_str().unwrap_or_default().to_owned())
}

/// The GOMEMLIMIT the first process of `pod` reported, once it has.
async fn first_report(env: &NodeEnv, pod: &str) -> Result<String> {
    poll(Duration::from_secs(30), "the process's report", || {
        Ok(reported_gomemlimit(env, pod).ok().filter(|s| !s.is_empty()))
    })
    .await
}

/// `kubectl patch --subresource resize` of the container's memory request and limit.
fn patch_resize(env: &NodeEnv, pod: &str, memory: &str) -> Result<std::process::Output> {
    let patch = json!({"spec": {"containers": [{"name": "app",
        "resources": {"limits": {"memory": memory}, "requests": {"memory": memory}}}]}});
    env.kubectl(
        &[
            "patch",
            "pod",
            pod,
            "-n",
            NAMESPACE,
            "--subresource",
            "resize",
            "--patch",
            &patch.to_string(),
        ],
        None,
    )
}

/// Waits until the container runs again after its `restarts`-th restart with `memory` as
/// its limit, and returns the GOMEMLIMIT the new process reported (once it has allocated).
async fn after_restart(env: &NodeEnv, pod: &str, restarts: u64, memory: &str) -> Result<String> {
    poll(Duration::from_secs(120), "the resized container", || {
        let pod = env.get_json(&["pod", pod, "-n", NAMESPACE])?;
        let status = &pod["status"]["containerStatuses"][0];
        let done = status["restartCount"].as_u64() == Some(restarts)
            && status["state"]["running"].is_object()
            && status["resources"]["limits"]["memory"] == memory;
        Ok(done.then_some(()))
    })
    .await?;
    poll(Duration::from_secs(30), "the new process's report", || {
        let seen = reported_gomemlimit(env, pod)?;
        Ok((!seen.is_empty() && seen != (64u64 << 20).to_string()).then_some(seen))
    })
    .await
}

async fn downward_api_follows(env: &NodeEnv) -> Result<()> {
    apply(env, &deployment("downward", &json!({})))?;
    let pod = running_pod(env, "downward").await?;
    let name = pod["metadata"]["name"].as_str().context("name")?.to_owned();
    ensure!(
        pod["spec"]["containers"][0]["resizePolicy"]
            == json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}]),
        "no RestartContainer: {}",
        pod["spec"]["containers"][0]
    );
    ensure!(first_report(env, &name).await? == (64u64 << 20).to_string());
    let mut line = String::from("node: resize downward API 64Mi");
    for (restarts, memory, bytes) in [(1, "96Mi", 96u64 << 20), (2, "48Mi", 48u64 << 20)] {
        let out = patch_resize(env, &name, memory)?;
        ensure!(
            out.status.success(),
            "resize to {memory} refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen = after_restart(env, &name, restarts, memory).await?;
        ensure!(
            seen == bytes.to_string(),
            "after {memory} the process saw {seen}"
        );
        line.push_str(&format!(" -> {memory}: restarted, GOMEMLIMIT {seen}"));
    }
    println!("{line}");
    Ok(())
}

async fn literal_is_guarded(env: &NodeEnv) -> Result<()> {
    let annotations = json!({"gomemlimit.io/percent": "90"});
    apply(env, &deployment("literal", &annotations))?;
    let pod = running_pod(env, "literal").await?;
    let name = pod["metadata"]["name"].as_str().context("name")?.to_owned();
    let literal = (64u64 << 20) * 90 / 100;
    ensure!(first_report(env, &name).await? == literal.to_string());

    let out = patch_resize(env, &name, "48Mi")?;
    let refused = String::from_utf8_lossy(&out.stderr).into_owned();
    let expected = format!(
        "admission webhook \"pods.gomemlimit.io\" denied the request: container \"app\": a memory \
         limit of 48Mi would leave GOMEMLIMIT={literal} above 90% of it; the smallest limit that \
         keeps it safe is 67108864 (64Mi)"
    );
    if out.status.success() || !refused.contains(&expected) {
        bail!("the shrink was not refused as expected: {refused}");
    }
    let out = patch_resize(env, &name, "96Mi")?;
    let warned = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.success(), "the raise was refused: {warned}");
    let warning = format!(
        "Warning: container \"app\": GOMEMLIMIT stays at {literal} (90% of the old limit 64Mi) \
         until the pod is recreated"
    );
    ensure!(
        warned.contains(&warning),
        "kubectl did not show the warning: {warned}"
    );
    println!(
        "node: resize literal (90%) 64Mi -> 48Mi: refused by the webhook; 64Mi -> 96Mi: allowed, \
         kubectl warned that GOMEMLIMIT stays at {literal}"
    );
    Ok(())
}

pub(crate) async fn in_place_resizes_restart_or_are_refused(env: &mut NodeEnv) -> Result<()> {
    env.namespace(NAMESPACE, json!({"gomemlimit.io/inject": "enabled"}))
        .await?;
    env.wait_webhook_active(NAMESPACE, true).await?;
    downward_api_follows(env).await?;
    literal_is_guarded(env).await?;
    env.kubectl_ok(&["delete", "deployments", "--all", "-n", NAMESPACE], None)?;
    Ok(())
}
