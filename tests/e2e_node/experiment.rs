//! The experiment this project exists for, on real containers: a Go service with a live set
//! of about 40 MiB under `limits.memory: 64Mi`. With Go's defaults (a namespace that is not
//! opted in) the heap target is twice the live set and the kernel kills the container; with
//! the webhook's injection (GOMEMLIMIT at the limit, or 90 % of it, and GOGC=off) it runs to
//! completion. The workload prints the GOMEMLIMIT it was given.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::cluster::{container, env_of};
use crate::node::{ALLOC_IMAGE, NodeEnv};

/// Runs per case.
const RUNS: usize = 5;
const LIMIT_BYTES: u64 = 64 << 20;

/// What happened to one pod.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// `lastState.terminated.reason: OOMKilled` and at least one restart.
    OomKilled,
    /// Phase Succeeded without a restart; the workload's report.
    Completed(Value),
}

struct Case<'a> {
    label: &'a str,
    namespace: &'a str,
    labels: Value,
    annotations: Value,
    /// The GOMEMLIMIT the webhook gives: none, the limit (downward API) or a literal.
    gomemlimit: Option<u64>,
}

fn workload(name: &str, annotations: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "restartPolicy": "OnFailure",
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                // The workload's defaults: 40 MiB live, 256 MiB allocated at 128 MiB/s.
                "name": "app", "image": ALLOC_IMAGE,
                "resources": {"limits": {"memory": "64Mi"}}
            }]
        }
    })
}

/// Polls the pod until it was OOM-killed or completed.
async fn outcome(env: &NodeEnv, ns: &str, name: &str) -> Result<Outcome> {
    let api = env.pods(ns);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let pod = serde_json::to_value(api.get(name).await?)?;
        let status = &pod["status"]["containerStatuses"][0];
        if status["lastState"]["terminated"]["reason"] == "OOMKilled"
            && status["restartCount"].as_u64().unwrap_or(0) >= 1
        {
            return Ok(Outcome::OomKilled);
        }
        if pod["status"]["phase"] == "Succeeded" {
            ensure!(
                status["restartCount"] == 0,
                "{ns}/{name} completed after restarts: {status}"
            );
            let log = env.logs(ns, name)?;
            let report: Value = serde_json::from_str(log.trim())
                .with_context(|| format!("{ns}/{name} printed {log:?}"))?;
            return Ok(Outcome::Completed(report));
        }
        if pod["status"]["phase"] == "Failed" || tokio::time::Instant::now() > deadline {
            bail!(
                "{ns}/{name} neither OOMKilled nor Completed: {} (kubelet log: {})",
                pod["status"],
                env.dir.join("logs/kubelet.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `RUNS` pods of a case one after the other (pods running side by side on two cores
/// would measure CPU starvation, not the memory limit); returns each pod's stored spec and
/// outcome.
async fn run_case(env: &NodeEnv, case: &Case<'_>) -> Result<Vec<(Value, Outcome)>> {
    env.namespace(case.namespace, case.labels.clone()).await?;
    let mut results = Vec::new();
    for run in 1..=RUNS {
        let name = format!("{}-{run}", case.label);
        let pod = env
            .create_pod(case.namespace, &workload(&name, &case.annotations))
            .await?;
        let outcome = outcome(env, case.namespace, &name).await?;
        // Gone before the next run starts.
        env.kubectl_ok(
            &["delete", "pod", "-n", case.namespace, &name, "--wait=true"],
            None,
        )?;
        results.push((pod, outcome));
    }
    Ok(results)
}

/// Every run completed, with the GOMEMLIMIT the webhook set: `expected` in the environment
/// and in the Go runtime.
fn check_completed(label: &str, results: &[(Value, Outcome)], expected: u64) -> Result<String> {
    let mut gcs = Vec::new();
    for (pod, outcome) in results {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let Outcome::Completed(report) = outcome else {
            bail!("{label}: {name} was {outcome:?}");
        };
        let want = expected.to_string();
        ensure!(
            report["GOMEMLIMIT"] == want.as_str() && report["memoryLimit"] == expected,
            "{label}: {name} saw GOMEMLIMIT {} (runtime limit {}), expected {expected}",
            report["GOMEMLIMIT"],
            report["memoryLimit"]
        );
        ensure!(
            report["GOGC"] == "off" && report["gcPercent"] == -1,
            "{label}: {name} saw GOGC {}",
            report["GOGC"]
        );
        gcs.push(report["numGC"].as_u64().unwrap_or_default());
    }
    gcs.sort_unstable();
    Ok(format!(
        "GOMEMLIMIT {expected}, {} to {} GCs",
        gcs.first().unwrap_or(&0),
        gcs.last().unwrap_or(&0)
    ))
}

fn count(results: &[(Value, Outcome)], oom: bool) -> usize {
    results
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::OomKilled) == oom)
        .count()
}

/// The GOMEMLIMIT the stored pod's container must have in each case.
fn check_specs(case: &Case, results: &[(Value, Outcome)]) -> Result<()> {
    for (pod, _) in results {
        let gml = env_of(container(pod, "app"), "GOMEMLIMIT");
        let ok = match (case.gomemlimit, gml) {
            (None, None) => true,
            (Some(LIMIT_BYTES), Some(gml)) => {
                gml["valueFrom"]["resourceFieldRef"]["resource"] == "limits.memory"
            }
            (Some(literal), Some(gml)) => gml["value"] == literal.to_string().as_str(),
            _ => false,
        };
        ensure!(
            ok,
            "{}: GOMEMLIMIT {gml:?} in {}",
            case.label,
            pod["metadata"]["name"]
        );
    }
    Ok(())
}

pub(crate) async fn a_go_service_is_oomkilled_at_its_limit_and_survives_with_the_webhook(
    env: &mut NodeEnv,
) -> Result<()> {
    let opted_in = json!({"gomemlimit.io/inject": "enabled"});
    let literal = LIMIT_BYTES * 90 / 100;
    let cases = [
        ("defaults", json!({}), json!({}), None),
        ("injected", opted_in.clone(), json!({}), Some(LIMIT_BYTES)),
        (
            "percent90",
            opted_in,
            json!({"gomemlimit.io/percent": "90"}),
            Some(literal),
        ),
    ];
    let mut runs = Vec::new();
    for (label, labels, annotations, gomemlimit) in cases {
        let namespace = format!("experiment-{label}");
        let case = Case {
            label,
            namespace: &namespace,
            labels,
            annotations,
            gomemlimit,
        };
        let results = run_case(env, &case).await?;
        check_specs(&case, &results)?;
        runs.push(results);
    }
    let [d, i, p] = &runs[..] else {
        unreachable!("three cases")
    };
    println!(
        "node: defaults OOMKilled {}/{RUNS}; injected Completed {}/{RUNS}; percent90 Completed {}/{RUNS}",
        count(d, true),
        count(i, false),
        count(p, false)
    );
    ensure!(
        count(d, true) == RUNS,
        "with Go's defaults not every run was OOMKilled: {:?}",
        d.iter().map(|(_, o)| o).collect::<Vec<_>>()
    );
    let i = check_completed("injected", i, LIMIT_BYTES)?;
    let p = check_completed("percent90", p, literal)?;
    println!("  injected: {i}; percent90: {p}");
    Ok(())
}
