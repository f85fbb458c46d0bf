//! A rolling restart of the webhook while pods are being created: with `failurePolicy:
//! Ignore` a replica that stops answering too early lets pods in unmutated, silently. The
//! shutdown delay (a terminating replica keeps serving while its endpoint is withdrawn) must
//! cover it on real endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::cluster::eventually;
use crate::install::{pending_pod, rollout_status, webhook_pods};
use crate::node::{NodeEnv, RELEASE, RELEASE_NAMESPACE};

const NAMESPACE: &str = "rollout";

/// What became of the pods created during the rollout.
#[derive(Default)]
struct Created {
    mutated: usize,
    unmutated: usize,
    refused: Vec<String>,
}

/// Names of the webhook's pods now.
fn webhook_pod_names(env: &NodeEnv) -> Result<Vec<String>> {
    Ok(webhook_pods(env)?
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect())
}

/// Creates a pod every 50 ms (3,000 at most) until `stop` is set.
fn create_until(api: Api<Pod>, stop: Arc<AtomicBool>) -> Result<JoinHandle<Created>> {
    let mut pod = pending_pod("during", "64Mi", None);
    pod["metadata"] = json!({"generateName": "during-"});
    let pod: Pod = serde_json::from_value(pod)?;
    Ok(tokio::spawn(async move {
        let mut created = Created::default();
        for _ in 0..3000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match api.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    let annotations = p.metadata.annotations.unwrap_or_default();
                    if annotations.contains_key("gomemlimit.io/status") {
                        created.mutated += 1;
                    } else {
                        created.unmutated += 1;
                    }
                }
                Err(e) => created.refused.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        created
    }))
}

/// `kubectl rollout restart`, then waits until the new replicas are Ready and the old ones
/// are gone altogether (they serve through their shutdown delay), then one more second.
async fn restart(env: &NodeEnv, before: &[String]) -> Result<()> {
    env.kubectl_ok(
        &[
            "rollout",
            "restart",
            "-n",
            RELEASE_NAMESPACE,
            &format!("deployment/{RELEASE}"),
        ],
        None,
    )?;
    tokio::task::block_in_place(|| rollout_status(env))?;
    eventually(
        Duration::from_secs(120),
        "old replicas gone",
        || async move {
            let now = webhook_pod_names(env)?;
            Ok(!now.iter().any(|p| before.contains(p)))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

pub(crate) async fn a_rolling_restart_admits_no_pod_unmutated(env: &mut NodeEnv) -> Result<()> {
    env.namespace(NAMESPACE, json!({"gomemlimit.io/inject": "enabled"}))
        .await?;
    env.wait_webhook_active(NAMESPACE, true).await?;
    let before = webhook_pod_names(env)?;
    let stop = Arc::new(AtomicBool::new(false));
    let creator = create_until(env.pods(NAMESPACE), stop.clone())?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let restarted = restart(env, &before).await;
    let rollout = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let created = creator.await.context("the pod creator")?;
    restarted?;
    println!(
        "node: rollout restart ({:.1}s, replicas {} -> {}): {} pods created, {} mutated, \
         {} admitted unmutated, {} refused",
        rollout.as_secs_f64(),
        before.join(","),
        webhook_pod_names(env)?.join(","),
        created.mutated + created.unmutated,
        created.mutated,
        created.unmutated,
        created.refused.len()
    );
    ensure!(
        created.refused.is_empty(),
        "pod creations failed: {:?}",
        created.refused
    );
    ensure!(
        created.unmutated == 0,
        "{} pods admitted unmutated during the rollout",
        created.unmutated
    );
    ensure!(
        created.mutated >= 50,
        "only {} pods created during the rollout",
        created.mutated
    );
    env.kubectl_ok(
        &["delete", "pods", "--all", "-n", NAMESPACE, "--wait=false"],
        None,
    )?;
    Ok(())
}
