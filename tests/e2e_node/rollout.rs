//! A rolling restart of the webhook while pods are being created: with `failurePolicy:
//! Ignore` a replica that stops answering too early lets pods in unmutated, silently. The
//! shutdown delay (a terminating replica keeps serving while its endpoint is withdrawn) must
//! cover it on real endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use serde_json::json;

use crate::cluster::eventually;
use crate::install::rollout_status;
use crate::node::{NodeEnv, RELEASE, RELEASE_NAMESPACE};

const NAMESPACE: &str = "rollout";

/// Names of the webhook's pods now.
fn webhook_pods(env: &NodeEnv) -> Result<Vec<String>> {
    let pods = env.get_json(&[
        "pods",
        "-n",
        RELEASE_NAMESPACE,
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
    ])?;
    Ok(pods["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        .collect())
}

pub async fn a_rolling_restart_admits_no_pod_unmutated(env: &mut NodeEnv) -> Result<()> {
    env.namespace(NAMESPACE, json!({"gomemlimit.io/inject": "enabled"}))
        .await?;
    env.wait_webhook_active(NAMESPACE, true).await?;
    let before = webhook_pods(env)?;

    // Pods that are never scheduled: only admission matters here.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "during-"},
        "spec": {
            "nodeSelector": {"gomemlimit.io/no-such-node": "true"},
            "containers": [{"name": "app", "image": "localhost/none:1",
                            "resources": {"limits": {"memory": "64Mi"}}}]
        }
    }))?;
    let stop = Arc::new(AtomicBool::new(false));
    let creator = {
        let api = env.pods(NAMESPACE);
        let stop = stop.clone();
        tokio::spawn(async move {
            // (mutated, unmutated, failed creations)
            let mut counts = (0_usize, 0_usize, Vec::new());
            // Bounded: 3,000 pods at most, about 20 per second.
            for _ in 0..3000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match api.create(&PostParams::default(), &pod).await {
                    Ok(p) => {
                        let mutated = p
                            .metadata
                            .annotations
                            .as_ref()
                            .is_some_and(|a| a.contains_key("gomemlimit.io/status"));
                        if mutated {
                            counts.0 += 1;
                        } else {
                            counts.1 += 1;
                        }
                    }
                    Err(e) => counts.2.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            counts
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
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
    let result = async {
        let env: &NodeEnv = env;
        tokio::task::block_in_place(|| rollout_status(env))?;
        // Until the old replicas are gone altogether (they serve through their shutdown
        // delay), then one more second.
        let before = &before;
        eventually(
            Duration::from_secs(120),
            "old replicas gone",
            || async move {
                let now = webhook_pods(env)?;
                Ok(!now.iter().any(|p| before.contains(p)))
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        anyhow::Ok(())
    }
    .await;
    let rollout = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mutated, unmutated, failed) = creator.await?;
    result?;
    let after = webhook_pods(env)?;
    println!(
        "node: rollout restart ({:.1}s, replicas {} -> {}): {} pods created, {mutated} mutated, \
         {unmutated} admitted unmutated, {} refused",
        rollout.as_secs_f64(),
        before.join(","),
        after.join(","),
        mutated + unmutated,
        failed.len()
    );
    ensure!(failed.is_empty(), "pod creations failed: {failed:?}");
    ensure!(
        unmutated == 0,
        "{unmutated} pods admitted unmutated during the rollout"
    );
    ensure!(
        mutated >= 50,
        "only {mutated} pods created during the rollout"
    );
    env.kubectl_ok(
        &["delete", "pods", "--all", "-n", NAMESPACE, "--wait=false"],
        None,
    )?;
    Ok(())
}
