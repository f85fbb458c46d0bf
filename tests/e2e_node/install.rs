//! The node, and the chart installed on it as a user installs it: `helm install` from the
//! chart folder, the webhook's own image, self-managed certificates, the API server calling
//! the webhook through its Service.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use base64::Engine as _;
use serde_json::json;

use crate::cluster::{ROOT, container};
use crate::node::{NodeEnv, RELEASE, RELEASE_NAMESPACE, WEBHOOK_IMAGE};

/// The opted-in namespace the scenarios share.
pub const OPTED_IN: &str = "node-optin";

pub async fn the_node_is_ready(env: &mut NodeEnv) -> Result<()> {
    let node = env.get_json(&["node", env.var("NODE_NAME")])?;
    let ready = node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .context("no Ready condition")?;
    ensure!(ready["status"] == "True", "node not Ready: {ready}");
    let info = &node["status"]["nodeInfo"];
    ensure!(
        info["kubeletVersion"] == "v1.37.2",
        "kubelet {}",
        info["kubeletVersion"]
    );
    let runtime = info["containerRuntimeVersion"].as_str().unwrap_or_default();
    ensure!(runtime.starts_with("containerd://1."), "runtime {runtime}");
    let addresses = &node["status"]["addresses"];
    println!(
        "  node {} Ready: kubelet {}, {runtime}, cgroup driver cgroupfs, addresses {addresses}",
        env.var("NODE_NAME"),
        info["kubeletVersion"].as_str().unwrap_or_default(),
    );
    Ok(())
}

fn chart() -> String {
    Path::new(ROOT)
        .join("deploy/chart/gomemlimit-injector")
        .display()
        .to_string()
}

/// Waits until the Deployment has rolled out (new pods Ready through their probes, old ones
/// gone).
pub fn rollout_status(env: &NodeEnv) -> Result<()> {
    env.kubectl_ok(
        &[
            "rollout",
            "status",
            "-n",
            RELEASE_NAMESPACE,
            &format!("deployment/{RELEASE}"),
            "--timeout=180s",
        ],
        None,
    )?;
    Ok(())
}

pub async fn the_chart_installs_from_its_own_image(env: &mut NodeEnv) -> Result<()> {
    // Defaults except the certificate source: optIn, enforce, failurePolicy Ignore.
    env.helm(&[
        "install",
        RELEASE,
        &chart(),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--set",
        "certificates.source=selfManaged",
        "--wait",
        "--timeout",
        "180s",
    ])?;
    rollout_status(env)?;

    // Two replicas of the chart's default image, Ready through their own probes.
    let pods = env.get_json(&[
        "pods",
        "-n",
        RELEASE_NAMESPACE,
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
    ])?;
    let pods = pods["items"].as_array().context("items")?;
    ensure!(pods.len() == 2, "{} webhook pods", pods.len());
    for pod in pods {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let status = &pod["status"]["containerStatuses"][0];
        ensure!(status["ready"] == true, "{name} not ready: {status}");
        ensure!(status["restartCount"] == 0, "{name} restarted: {status}");
        ensure!(
            status["image"] == WEBHOOK_IMAGE,
            "{name} runs {}",
            status["image"]
        );
        let spec = &pod["spec"]["containers"][0];
        ensure!(
            spec["readinessProbe"]["httpGet"]["path"] == "/readyz",
            "no readiness probe: {}",
            spec["readinessProbe"]
        );
        ensure!(
            pod["spec"]["securityContext"]["runAsUser"] == 65532,
            "not 65532"
        );
    }

    // The webhook created its certificate in the Secret and patched the caBundle; the
    // configuration calls it through its Service, never a URL.
    let secret = env.get_json(&[
        "secret",
        "-n",
        RELEASE_NAMESPACE,
        &format!("{RELEASE}-certs"),
    ])?;
    let ca = secret["data"]["ca.crt"]
        .as_str()
        .context("no ca.crt in the Secret")?;
    ensure!(
        secret["data"]["tls.crt"].is_string(),
        "no tls.crt in the Secret"
    );
    let config = env.get_json(&["mutatingwebhookconfiguration", RELEASE])?;
    for webhook in config["webhooks"].as_array().context("webhooks")? {
        let client = &webhook["clientConfig"];
        ensure!(client.get("url").is_none(), "a url clientConfig: {client}");
        ensure!(
            client["service"]["name"] == RELEASE
                && client["service"]["namespace"] == RELEASE_NAMESPACE,
            "clientConfig {client}"
        );
        ensure!(client["caBundle"] == ca, "caBundle is not the Secret's CA");
    }

    // The API server calls it: a pod created in an opted-in namespace comes back mutated,
    // and the pod that answered counted it.
    env.namespace(OPTED_IN, json!({"gomemlimit.io/inject": "enabled"}))
        .await?;
    env.wait_webhook_active(OPTED_IN, true).await?;
    let stored = env
        .create_pod(
            OPTED_IN,
            &json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "first"},
                "spec": {
                    "nodeSelector": {"gomemlimit.io/no-such-node": "true"},
                    "containers": [{"name": "app", "image": "localhost/none:1",
                                    "resources": {"limits": {"memory": "128Mi"}}}]}
            }),
        )
        .await?;
    let app = container(&stored, "app");
    ensure!(
        app["resources"]["requests"]["memory"] == "128Mi",
        "{}",
        app["resources"]
    );
    ensure!(
        stored["metadata"]["annotations"]["gomemlimit.io/status"].is_string(),
        "not mutated: {}",
        stored["metadata"]
    );
    let mut mutated = 0.0;
    for pod in pods {
        let ip = pod["status"]["podIP"].as_str().context("podIP")?;
        let text = reqwest::get(format!("http://{ip}:9090/metrics"))
            .await?
            .text()
            .await?;
        mutated += text
            .lines()
            .filter(|l| {
                l.starts_with("gomemlimit_injector_admission_requests_total{")
                    && l.contains("outcome=\"mutated\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    ensure!(mutated >= 1.0, "no replica counted a mutated review");
    let ca_pem = base64::engine::general_purpose::STANDARD.decode(ca)?;
    println!(
        "  helm install: 2/2 replicas Ready from {WEBHOOK_IMAGE}, Secret and caBundle ({} bytes of CA) \
         set by the webhook, {mutated} mutated reviews served through the Service",
        ca_pem.len()
    );
    Ok(())
}

pub async fn an_upgrade_to_audit_reports_and_changes_nothing(env: &mut NodeEnv) -> Result<()> {
    env.helm(&[
        "upgrade",
        RELEASE,
        &chart(),
        "--namespace",
        RELEASE_NAMESPACE,
        "--reuse-values",
        "--set",
        "mode=audit",
        "--wait",
        "--timeout",
        "180s",
    ])?;
    rollout_status(env)?;
    env.wait_webhook_active(OPTED_IN, false).await?;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "audited"},
        "spec": {
            "nodeSelector": {"gomemlimit.io/no-such-node": "true"},
            "containers": [{"name": "app", "image": "localhost/none:1",
                            "resources": {"limits": {"memory": "256Mi"},
                                          "requests": {"memory": "128Mi"}}}]}
    });
    let out = env.kubectl(
        &["create", "-n", OPTED_IN, "-f", "-"],
        Some(&pod.to_string()),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "kubectl create failed: {stderr}");
    ensure!(
        stderr
            .contains("Warning: container \"app\": would set requests.memory to 256Mi (was 128Mi)"),
        "kubectl did not print the audit warning: {stderr}"
    );
    let stored = env.get_json(&["pod", "-n", OPTED_IN, "audited"])?;
    let app = container(&stored, "app");
    ensure!(
        app["resources"]["requests"]["memory"] == "128Mi" && app.get("env").is_none(),
        "audit changed the pod: {app}"
    );
    ensure!(
        stored["metadata"]["annotations"]
            .get("gomemlimit.io/status")
            .is_none(),
        "audit annotated the pod"
    );
    println!(
        "  helm upgrade --set mode=audit: kubectl shows the warning, the pod is stored unchanged"
    );
    Ok(())
}
