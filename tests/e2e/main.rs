//! End-to-end tests: the webhook binary called over TLS by a real kube-apiserver (built from
//! the upstream Go modules by `cluster/build.sh`), with the MutatingWebhookConfiguration
//! taken from the chart's rendered manifests and only `clientConfig` switched to a URL.
//!
//! Run with `make e2e`. Without the control-plane binaries the suite fails under `CI=true`
//! and is skipped (with a message) elsewhere.

// Scenarios read as scripts, step by step, and `env` is this suite's own toolbox: the
// package's limit on function length is for the product's code.
#![allow(clippy::too_many_lines)]

#[path = "../cluster/mod.rs"]
mod cluster;
mod env;

use std::pin::Pin;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use cluster::{Scenario, run_scenarios, scenarios};
use env::{Env, Webhook, container, env_of, eventually, pod};
use serde_json::{Value, json};

fn main() -> ExitCode {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(run(filter))
}

async fn run(filter: Vec<String>) -> ExitCode {
    let ci = cluster::ci();
    let bin = match env::kubernetes_bin() {
        Ok(Some(bin)) => bin,
        other => {
            let why = format!("control-plane binaries not found ({other:?}); run `make e2e`");
            if ci {
                eprintln!("error: {why}");
                return ExitCode::FAILURE;
            }
            println!("skipping the end-to-end suite: {why}");
            return ExitCode::SUCCESS;
        }
    };
    let started = Instant::now();
    let mut env = match Env::start(&bin).await {
        Ok(env) => env,
        Err(e) => {
            eprintln!("error: failed to start the end-to-end environment: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let all: &[(&str, Scenario<Env>)] = scenarios![
        opt_in_mutates_only_labelled_namespaces,
        cluster_wide_skips_excluded_namespaces_and_opted_out_pods,
        audit_warns_and_stores_the_pod_unchanged,
        percent_annotation_gives_the_exact_literal_and_invalid_is_denied,
        server_dry_run_shows_the_mutation_and_stores_nothing,
        limit_range_default_is_honoured,
        deployment_pods_are_mutated,
        generated_pods_are_all_accepted,
        certificate_rotation_loses_no_call,
        self_managed_certificates_bootstrap_and_are_trusted,
        live_audit_groups_pods_by_workload,
        webhook_down_follows_the_failure_policy,
    ];
    let (passed, failed) = run_scenarios(&mut env, all, &filter, Duration::from_secs(300)).await;
    env.stop(failed > 0);
    println!(
        "end-to-end suite took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The pod got request = limit, GOMEMLIMIT from the downward API and GOGC=off.
fn assert_mutated(pod: &Value, limit: &str) -> Result<()> {
    let app = container(pod, "app");
    ensure!(
        app["resources"]["requests"]["memory"] == limit,
        "request not set to the limit: {}",
        app["resources"]
    );
    let gml = env_of(app, "GOMEMLIMIT").context("no GOMEMLIMIT")?;
    ensure!(
        gml["valueFrom"]["resourceFieldRef"]["resource"] == "limits.memory"
            && gml["valueFrom"]["resourceFieldRef"]["divisor"] == "1",
        "GOMEMLIMIT is not the downward API: {gml}"
    );
    ensure!(
        env_of(app, "GOGC").is_some_and(|g| g["value"] == "off"),
        "no GOGC=off: {}",
        app["env"]
    );
    ensure!(
        pod["metadata"]["annotations"]["gomemlimit.io/status"].is_string(),
        "no status annotation"
    );
    Ok(())
}

/// The webhook left the pod alone. `request` is the request the pod was created with; a
/// pod created without one gets the limit from the API server's own defaulting.
fn assert_untouched(pod: &Value, request: Option<&str>) -> Result<()> {
    let app = container(pod, "app");
    if let Some(request) = request {
        ensure!(
            app["resources"]["requests"]["memory"] == request,
            "request changed: {}",
            app["resources"]
        );
    }
    ensure!(app.get("env").is_none(), "env added: {}", app["env"]);
    ensure!(
        pod["metadata"]["annotations"]
            .get("gomemlimit.io/status")
            .is_none(),
        "status annotation added"
    );
    Ok(())
}

async fn opt_in_mutates_only_labelled_namespaces(env: &mut Env) -> Result<()> {
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

async fn cluster_wide_skips_excluded_namespaces_and_opted_out_pods(env: &mut Env) -> Result<()> {
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

async fn audit_warns_and_stores_the_pod_unchanged(env: &mut Env) -> Result<()> {
    env.opt_in_namespace("audit", "audit", "Fail").await?;
    let out = env.kubectl(
        &["create", "-n", "audit", "-f", "-"],
        Some(&pod("audited", "256Mi", Some("128Mi")).to_string()),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "kubectl create failed: {stderr}");
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

async fn percent_annotation_gives_the_exact_literal_and_invalid_is_denied(
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

async fn server_dry_run_shows_the_mutation_and_stores_nothing(env: &mut Env) -> Result<()> {
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

async fn limit_range_default_is_honoured(env: &mut Env) -> Result<()> {
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

async fn deployment_pods_are_mutated(env: &mut Env) -> Result<()> {
    env.enforcing_namespace("deploy").await?;
    env.apply("deploy", &env::deployment("sales-api", 2))?;
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

/// A small deterministic generator, so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn generated_pod(rng: &mut Rng, i: usize) -> Value {
    const MEMORY: &[&str] = &[
        "64Mi",
        "128Mi",
        "256Mi",
        "1Gi",
        "1.5Gi",
        "500M",
        "1e9",
        "300000000",
    ];
    let container = |name: String, sidecar: bool, rng: &mut Rng| {
        let mut c = json!({"name": name, "image": "registry.example/app:1"});
        let limit = rng.chance(75).then(|| *rng.pick(MEMORY));
        let request = rng.chance(50).then(|| *rng.pick(MEMORY));
        let mut resources = json!({});
        if let Some(l) = limit {
            resources["limits"] = json!({"memory": l, "cpu": "100m"});
            // Keep the pod valid: a request may not exceed the limit.
            if let Some(r) = request {
                let (lq, rq) = (
                    gomemlimit_injector::quantity::Quantity::parse(l).unwrap(),
                    gomemlimit_injector::quantity::Quantity::parse(r).unwrap(),
                );
                if rq.cmp_value(&lq).is_le() {
                    resources["requests"] = json!({"memory": r});
                }
            }
        } else if let Some(r) = request {
            resources["requests"] = json!({"memory": r});
        }
        c["resources"] = resources;
        let mut env = Vec::new();
        for k in 0..(rng.next() % 4) {
            env.push(json!({"name": format!("VAR_{k}"), "value": "x"}));
        }
        if rng.chance(10) {
            env.push(json!({"name": "GOMEMLIMIT", "value": "100MiB"}));
        }
        if rng.chance(10) {
            env.push(json!({"name": "GOGC", "value": "50"}));
        }
        if !env.is_empty() {
            c["env"] = Value::Array(env);
        }
        if rng.chance(10) {
            c["envFrom"] = json!([{"configMapRef": {"name": "settings", "optional": true}}]);
        }
        if sidecar {
            c["restartPolicy"] = json!("Always");
        }
        c
    };
    let containers: Vec<Value> = (0..1 + rng.next() % 3)
        .map(|k| container(format!("c{k}"), false, rng))
        .collect();
    let init: Vec<Value> = (0..rng.next() % 3)
        .map(|k| container(format!("i{k}"), rng.chance(50), rng))
        .collect();
    let mut annotations = json!({});
    if rng.chance(20) {
        annotations["gomemlimit.io/percent"] = json!(rng.pick(&["50", "90", "95", "100"]));
    }
    if rng.chance(15) {
        annotations["gomemlimit.io/gogc"] = json!(rng.pick(&["off", "keep", "200"]));
    }
    if rng.chance(10) {
        annotations["gomemlimit.io/exclude-containers"] = json!("c1,i0");
    }
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("gen-{i}"), "annotations": annotations},
        "spec": {"automountServiceAccountToken": false, "containers": containers}
    });
    if !init.is_empty() {
        pod["spec"]["initContainers"] = Value::Array(init);
    }
    pod
}

async fn generated_pods_are_all_accepted(env: &mut Env) -> Result<()> {
    env.enforcing_namespace("generated").await?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pods: Vec<Value> = (0..300).map(|i| generated_pod(&mut rng, i)).collect();
    let before = env
        .webhook
        .metric("gomemlimit_injector_admission_requests_total{path=\"mutate\",outcome=\"mutated\"}")
        .await?;
    let mut mutated = 0;
    for chunk in pods.chunks(10) {
        let results = futures_join(chunk.iter().map(|p| env.create_pod("generated", p))).await;
        for (p, result) in chunk.iter().zip(results) {
            let stored = result.with_context(|| format!("the API server refused {p}"))?;
            if stored["metadata"]["annotations"]
                .get("gomemlimit.io/status")
                .is_some()
            {
                mutated += 1;
            }
            for c in stored["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let r = &c["resources"];
                if let (Some(l), Some(q)) = (
                    r["limits"]["memory"].as_str(),
                    r["requests"]["memory"].as_str(),
                ) {
                    let (l, q) = (
                        gomemlimit_injector::quantity::Quantity::parse(l)?,
                        gomemlimit_injector::quantity::Quantity::parse(q)?,
                    );
                    let excluded = p["metadata"]["annotations"]["gomemlimit.io/exclude-containers"]
                        .as_str()
                        .is_some_and(|e| e.split(',').any(|n| c["name"] == n));
                    ensure!(
                        excluded || l == q,
                        "request != limit in {}",
                        stored["metadata"]["name"]
                    );
                }
            }
        }
    }
    let after = env
        .webhook
        .metric("gomemlimit_injector_admission_requests_total{path=\"mutate\",outcome=\"mutated\"}")
        .await?;
    println!("  300 generated pods accepted, {mutated} mutated");
    ensure!(mutated > 150, "only {mutated} of 300 pods were mutated");
    ensure!(
        after - before >= f64::from(mutated),
        "metrics did not count the mutations"
    );
    Ok(())
}

async fn futures_join<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::with_capacity(handles.len());
    // Drive them concurrently on this task.
    let mut pinned: Vec<Pin<Box<F>>> = handles.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(results.into_iter().map(|r| r.expect("completed")));
    out
}

async fn certificate_rotation_loses_no_call(env: &mut Env) -> Result<()> {
    env.enforcing_namespace("rotation").await?;
    let reloads = "gomemlimit_injector_tls_reloads_total{result=\"success\"}";
    let before = env.webhook.metric(reloads).await?;
    let certs = env.webhook.certs.clone();
    let names = ["127.0.0.1".to_owned(), "localhost".to_owned()];
    let mut created = 0;
    let mut last = String::new();
    const ROTATIONS: usize = 5;
    for round in 0..ROTATIONS {
        // A new serving pair from the same CA, swapped in like a Secret volume update.
        let (cert, key) = gomemlimit_injector::tls::issue_with_ca(
            &env.ca_cert,
            &env.ca_key,
            &names,
            time::Duration::hours(1),
        )?;
        let tmp = certs.join("next");
        std::fs::create_dir_all(&tmp)?;
        std::fs::write(tmp.join("tls.crt"), &cert)?;
        std::fs::write(tmp.join("tls.key"), &key)?;
        std::fs::rename(tmp.join("tls.key"), certs.join("tls.key"))?;
        std::fs::rename(tmp.join("tls.crt"), certs.join("tls.crt"))?;
        last = cert;
        // Keep the API server calling until this rotation has been picked up.
        let mut picked_up = false;
        for _ in 0..200 {
            let stored = env
                .create_pod("rotation", &pod(&format!("r{created}"), "128Mi", None))
                .await
                .with_context(|| format!("pod r{created} refused during rotation"))?;
            assert_mutated(&stored, "128Mi")?;
            created += 1;
            if env.webhook.metric(reloads).await? - before >= (round + 1) as f64 {
                picked_up = true;
                break;
            }
        }
        ensure!(picked_up, "rotation {round} was not picked up");
    }
    // The webhook now serves the last pair, and the API server still gets through.
    let served = served_certificate(env.webhook.port).await?;
    let written = rustls_pki_types::pem::PemObject::pem_slice_iter(last.as_bytes())
        .next()
        .context("no PEM")??;
    let written: rustls_pki_types::CertificateDer = written;
    ensure!(
        served == written,
        "the last rotated certificate is not served"
    );
    let stored = env
        .create_pod("rotation", &pod("after", "128Mi", None))
        .await?;
    assert_mutated(&stored, "128Mi")?;
    println!("  {created} pods admitted and mutated across {ROTATIONS} rotations");
    Ok(())
}

async fn self_managed_certificates_bootstrap_and_are_trusted(env: &mut Env) -> Result<()> {
    env.namespace("gomemlimit-system", json!({})).await?;
    env.namespace("managed", json!({"gomemlimit.io/inject": "enabled"}))
        .await?;
    let rendered = env::rendered_webhook("optin", "enforce", "selfmanaged")?;
    let configuration = rendered["metadata"]["name"]
        .as_str()
        .context("name")?
        .to_owned();
    let flags = || {
        vec![
            "--cert-secret".to_owned(),
            "gomemlimit-injector-tls".to_owned(),
            "--cert-secret-namespace".to_owned(),
            "gomemlimit-system".to_owned(),
            "--webhook-configuration".to_owned(),
            configuration.clone(),
            "--dns-name".to_owned(),
            "127.0.0.1".to_owned(),
            "--log-format".to_owned(),
            "json".to_owned(),
            // Short enough to see a renewal within the test: due when a third is left.
            "--cert-validity".to_owned(),
            "36s".to_owned(),
        ]
    };
    // Two replicas start at once against the same (absent) Secret.
    let dir = env.dir.clone();
    let (a, b) = (flags(), flags());
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    // The configuration as installed, with no caBundle: the webhook fills it in.
    let port = env::free_port();
    env.install_webhook("optin", "enforce", "Fail", port, None)
        .await?;
    let mut first = Webhook::start_on(&dir, &dir, "managed-a", &a, port)?;
    let mut second = Webhook::start(&dir, &dir, "managed-b", &b)?;
    first.wait_ready().await?;
    second.wait_ready().await?;
    let result = async {
        env.wait_webhook_active("managed", true).await?;
        let stored = env
            .create_pod("managed", &pod("trusted", "256Mi", None))
            .await?;
        assert_mutated(&stored, "256Mi")?;
        // Both replicas serve the one certificate that landed in the Secret.
        let initial = secret_certificate(env).await?;
        for replica in [&first, &second] {
            let served = served_certificate(replica.port).await?;
            ensure!(
                served == initial,
                "replica on {} serves another certificate",
                replica.port
            );
        }
        // Before it expires the serving certificate is renewed, by one replica, and both
        // serve the new one; the API server keeps getting through (failurePolicy Fail).
        let started = Instant::now();
        let mut created = 0;
        loop {
            let stored = env
                .create_pod("managed", &pod(&format!("m{created}"), "256Mi", None))
                .await
                .with_context(|| format!("pod m{created} refused during renewal"))?;
            assert_mutated(&stored, "256Mi")?;
            created += 1;
            let current = secret_certificate(env).await?;
            if current != initial
                && served_certificate(first.port).await? == current
                && served_certificate(second.port).await? == current
            {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(90),
                "the certificate was not renewed and picked up within 90s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!(
            "  renewed after {:.0}s; {created} pods admitted meanwhile",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
    .await;
    first.stop();
    second.stop();
    result
}

/// The serving certificate stored in the self-managed Secret.
async fn secret_certificate(env: &Env) -> Result<rustls_pki_types::CertificateDer<'static>> {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client.clone(), "gomemlimit-system");
    let secret = secrets.get("gomemlimit-injector-tls").await?;
    let data = secret.data.context("empty Secret")?;
    let pem = data.get("tls.crt").context("no tls.crt")?.0.clone();
    let der = rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
        .next()
        .context("no PEM certificate")??;
    Ok(der)
}

async fn served_certificate(port: u16) -> Result<rustls_pki_types::CertificateDer<'static>> {
    use std::sync::Arc;
    #[derive(Debug)]
    struct AcceptAny;
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AcceptAny))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls_pki_types::ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let (_, conn) = tls.get_ref();
    Ok(conn
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no peer certificate")?
        .clone()
        .into_owned())
}

async fn webhook_down_follows_the_failure_policy(env: &mut Env) -> Result<()> {
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

async fn live_audit_groups_pods_by_workload(env: &mut Env) -> Result<()> {
    // Namespaces the webhook does not select: their pods are stored as written.
    env.namespace("audit-live", json!({})).await?;
    env.namespace("audit-clean", json!({})).await?;
    env.apply("audit-live", &env::deployment("catalog", 3))?;
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
