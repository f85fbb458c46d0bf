//! The node, and the chart installed on it as a user installs it: `helm install` from the
//! chart folder, the webhook's own image, self-managed certificates, the API server calling
//! the webhook through its Service.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::cluster::{ROOT, container};
use crate::node::{NodeEnv, RELEASE, RELEASE_NAMESPACE, WEBHOOK_IMAGE};

/// The opted-in namespace the scenarios share.
pub(crate) const OPTED_IN: &str = "node-optin";

pub(crate) async fn the_node_is_ready(env: &mut NodeEnv) -> Result<()> {
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
pub(crate) fn rollout_status(env: &NodeEnv) -> Result<()> {
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

/// A pod that is never scheduled (only admission matters), with a memory limit and an
/// optional request.
pub(crate) fn pending_pod(name: &str, limit: &str, request: Option<&str>) -> Value {
    let mut resources = json!({"limits": {"memory": limit}});
    if let Some(request) = request {
        resources["requests"] = json!({"memory": request});
    }
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"gomemlimit.io/no-such-node": "true"},
            "containers": [{"name": "app", "image": "localhost/none:1", "resources": resources}]
        }
    })
}

/// `helm install|upgrade` of the chart folder with `args`, waiting for the rollout.
fn helm_chart(env: &NodeEnv, verb: &str, args: &[&str]) -> Result<()> {
    let chart = chart();
    let mut all = vec![verb, RELEASE, &chart, "--namespace", RELEASE_NAMESPACE];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--wait", "--timeout", "180s"]);
    env.helm(&all)?;
    rollout_status(env)
}

/// The webhook's pods now, as JSON.
pub(crate) fn webhook_pods(env: &NodeEnv) -> Result<Vec<Value>> {
    let pods = env.get_json(&[
        "pods",
        "-n",
        RELEASE_NAMESPACE,
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
    ])?;
    Ok(pods["items"].as_array().context("items")?.clone())
}

/// Two replicas of the chart's default image, Ready through their own probes, as 65532.
fn check_replicas(pods: &[Value]) -> Result<()> {
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
        let probe = &pod["spec"]["containers"][0]["readinessProbe"];
        ensure!(
            probe["httpGet"]["path"] == "/readyz",
            "no readiness probe: {probe}"
        );
        ensure!(
            pod["spec"]["securityContext"]["runAsUser"] == 65532,
            "not 65532"
        );
    }
    Ok(())
}

/// The webhook created its certificate in the Secret and patched the caBundle; the
/// configuration calls it through its Service, never a URL. Returns the CA's size.
fn check_certificates(env: &NodeEnv) -> Result<usize> {
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
    Ok(base64::engine::general_purpose::STANDARD.decode(ca)?.len())
}

/// Mutated reviews the webhook's pods counted, read from each one's /metrics.
async fn mutated_reviews(pods: &[Value]) -> Result<f64> {
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
    Ok(mutated)
}

pub(crate) async fn the_chart_installs_from_its_own_image(env: &mut NodeEnv) -> Result<()> {
    // Defaults except the certificate source: optIn, enforce, failurePolicy Ignore.
    helm_chart(
        env,
        "install",
        &[
            "--create-namespace",
            "--set",
            "certificates.source=selfManaged",
        ],
    )?;
    let pods = webhook_pods(env)?;
    check_replicas(&pods)?;
    let ca_bytes = check_certificates(env)?;

    // The API server calls it: a pod created in an opted-in namespace comes back mutated,
    // and the pods that answer counted it.
    env.namespace(OPTED_IN, json!({"gomemlimit.io/inject": "enabled"}))
        .await?;
    env.wait_webhook_active(OPTED_IN, true).await?;
    let stored = env
        .create_pod(OPTED_IN, &pending_pod("first", "128Mi", None))
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
    let mutated = mutated_reviews(&pods).await?;
    ensure!(mutated >= 1.0, "no replica counted a mutated review");
    println!(
        "  helm install: 2/2 replicas Ready from {WEBHOOK_IMAGE}, Secret and caBundle ({ca_bytes} \
         bytes of CA) set by the webhook, {mutated} mutated reviews served through the Service"
    );
    let scanner = background_audit_runs(env, &pods).await?;
    println!(
        "  background audit: {scanner} holds the Lease and completed a scan with the chart's RBAC; the other replica serves"
    );
    Ok(())
}

/// The background audit runs in the cluster as the chart sets it up: one replica holds
/// the Lease and has completed a scan, the other does not scan. Returns the scanner's name.
async fn background_audit_runs(env: &NodeEnv, pods: &[Value]) -> Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut scanners = Vec::new();
        for pod in pods {
            let ip = pod["status"]["podIP"].as_str().context("podIP")?;
            let name = pod["metadata"]["name"].as_str().context("name")?;
            let text = reqwest::get(format!("http://{ip}:9090/metrics"))
                .await?
                .text()
                .await?;
            let leads = text
                .lines()
                .any(|l| l == "gomemlimit_injector_background_audit_leader 1.0");
            let scanned = text.lines().any(|l| {
                l.starts_with(
                    "gomemlimit_injector_background_audit_last_completed_timestamp_seconds ",
                )
            });
            if leads && scanned {
                scanners.push(name.to_owned());
            }
        }
        let lease = env.get_json(&[
            "lease",
            "-n",
            RELEASE_NAMESPACE,
            &format!("{RELEASE}-background-audit"),
        ]);
        let holder = lease
            .as_ref()
            .ok()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if let [scanner] = scanners.as_slice()
            && holder.starts_with(&format!("{scanner}_"))
        {
            return Ok(scanner.clone());
        }
        ensure!(
            scanners.len() <= 1,
            "two replicas scan at once: {scanners:?}"
        );
        ensure!(
            std::time::Instant::now() < deadline,
            "no replica completed a background scan within 60s (Lease holder {holder:?}, scanners {scanners:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

pub(crate) async fn an_upgrade_to_audit_reports_and_changes_nothing(
    env: &mut NodeEnv,
) -> Result<()> {
    helm_chart(env, "upgrade", &["--reuse-values", "--set", "mode=audit"])?;
    env.wait_webhook_active(OPTED_IN, false).await?;
    let stderr =
        env.create_with_warnings(OPTED_IN, &pending_pod("audited", "256Mi", Some("128Mi")))?;
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
