//! What enforce does to pods through a real API server: the percent literal and a denial,
//! server-side dry run, LimitRange defaults, Deployment pods.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::checks::assert_mutated;
use crate::env::{Env, container, env_of, eventually, pod};

pub(crate) async fn percent_annotation_gives_the_exact_literal_and_invalid_is_denied(
    env: &mut Env,
) -> Result<()> {
    env.enforcing_namespace("percent").await?;
    let mut p = pod("ninety", "512Mi", None);
    p["metadata"]["annotations"] = json!({"gomemlimit.io/percent": "90"});
    let stored = env.create_pod("percent", &p).await?;
    let gml = env_of(container(&stored, "app"), "GOMEMLIMIT").context("no GOMEMLIMIT")?;
    // floor(536870912 * 90 / 100)
    ensure!(
        gml == &json!({"name": "GOMEMLIMIT", "value": "483183820"}),
        "{gml}"
    );

    let mut bad = pod("thirty", "512Mi", None);
    bad["metadata"]["annotations"] = json!({"gomemlimit.io/percent": "30"});
    let out = env.kubectl(
        &["create", "-n", "percent", "-f", "-"],
        Some(&bad.to_string()),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "an invalid annotation was admitted");
    ensure!(
        stderr.contains("admission webhook \"pods.gomemlimit.io\" denied the request: invalid annotation gomemlimit.io/percent=\"30\": allowed values are integers 50 to 100"),
        "kubectl did not show the denial: {stderr}"
    );
    Ok(())
}

pub(crate) async fn server_dry_run_shows_the_mutation_and_stores_nothing(
    env: &mut Env,
) -> Result<()> {
    env.enforcing_namespace("dryrun").await?;
    let out = env.kubectl_ok(
        &[
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-n",
            "dryrun",
            "-f",
            "-",
        ],
        Some(&pod("dry", "1Gi", None).to_string()),
    )?;
    let shown: Value = serde_json::from_str(&out)?;
    assert_mutated(&shown, "1Gi")?;
    ensure!(
        env.pods("dryrun").get_opt("dry").await?.is_none(),
        "the dry-run pod was stored"
    );
    Ok(())
}

pub(crate) async fn limit_range_default_is_honoured(env: &mut Env) -> Result<()> {
    env.enforcing_namespace("limits").await?;
    env.apply(
        "limits",
        &json!({
            "apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": "mem"},
            "spec": {"limits": [{"type": "Container",
                "default": {"memory": "300Mi"}, "defaultRequest": {"memory": "100Mi"}}]}
        }),
    )?;
    let bare = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
        "spec": {"automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "registry.example/app:1"}]}
    });
    // The LimitRange admission plugin runs before webhooks, so the webhook sees its defaults.
    let env: &Env = env;
    let bare = &bare;
    eventually(
        Duration::from_secs(20),
        "LimitRange defaults applied",
        || async move {
            let stored = env.create_pod("limits", bare).await;
            let stored = match stored {
                Ok(s) => s,
                Err(e) => return Err(e),
            };
            let ok = container(&stored, "app")["resources"]["limits"]["memory"] == "300Mi";
            env.pods("limits")
                .delete("bare", &Default::default())
                .await
                .ok();
            if ok {
                assert_mutated(&stored, "300Mi")?;
            }
            Ok(ok)
        },
    )
    .await
}

pub(crate) async fn deployment_pods_are_mutated(env: &mut Env) -> Result<()> {
    env.enforcing_namespace("deploy").await?;
    env.apply("deploy", &crate::env::deployment("sales-api", 2))?;
    let pods = env.pods("deploy");
    let pods = &pods;
    eventually(
        Duration::from_secs(60),
        "2 pods from the ReplicaSet",
        || async move {
            let list = pods.list(&Default::default()).await?;
            if list.items.len() < 2 {
                return Ok(false);
            }
            for p in list.items {
                let name = p.metadata.name.clone().unwrap_or_default();
                ensure!(
                    p.metadata
                        .generate_name
                        .as_deref()
                        .is_some_and(|g| g.starts_with("sales-api-")),
                    "{name} has no generateName"
                );
                assert_mutated(&serde_json::to_value(p)?, "512Mi").with_context(|| name)?;
            }
            Ok(true)
        },
    )
    .await
}
