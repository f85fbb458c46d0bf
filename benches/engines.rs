//! What each engine costs pod creation, through a real API server: one load generator
//! creates pods in three namespaces of one control plane, with no policy, with the
//! webhook, and with the native policies, for a small pod and a large one, and reports
//! pods created per second and the p50 and p99 latency of a create, each as a ratio to no
//! policy. The configurations take turns in rounds (each round starting with another), so
//! that a neighbour's load on the machine falls on all of them alike.
//!
//! Run with `make bench-engines` (needs the control plane of `make controlplane`; under
//! `CI=true` its absence fails, elsewhere the benchmark says it is skipped).

#[path = "../tests/e2e/api.rs"]
#[allow(dead_code)]
mod api;
#[path = "../tests/cluster/mod.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod cluster;
#[path = "../tests/support/mod.rs"]
pub mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use base64::Engine as _;
use serde_json::{Value, json};

use api::Api;
use cluster::{Cluster, ROOT, eventually};

/// Pods each configuration creates per pod size, in `ROUNDS` turns.
const PODS: usize = 300;
const ROUNDS: usize = 10;
/// Creates in flight at once.
const CONCURRENCY: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Engine {
    None,
    Webhook,
    Native,
}

impl Engine {
    const ALL: [Engine; 3] = [Engine::None, Engine::Webhook, Engine::Native];

    fn name(self) -> &'static str {
        match self {
            Engine::None => "no policy",
            Engine::Webhook => "webhook",
            Engine::Native => "native policies",
        }
    }

    fn namespace(self) -> &'static str {
        match self {
            Engine::None => "bench-none",
            Engine::Webhook => "bench-webhook",
            Engine::Native => "bench-native",
        }
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs benchmarks without it,
    // and this one needs a control plane and a minute.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "the engines benchmark runs with `make bench-engines` (cargo bench --bench engines)"
        );
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let Some(bin) = cluster::kubernetes_bin()? else {
        let why = "control-plane binaries not found; run `make controlplane`";
        ensure!(!cluster::ci(), "{why}");
        println!("skipping the engines benchmark: {why}");
        return Ok(());
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let plane = ControlPlane::start(&bin)?;
    let result = measure(&plane, &bin).await;
    plane.stop();
    result
}

/// The control plane of `cluster/controlplane.sh`, stopped on drop.
struct ControlPlane {
    dir: PathBuf,
}

impl ControlPlane {
    fn start(bin: &Path) -> Result<ControlPlane> {
        let out = Command::new(Path::new(ROOT).join("cluster/controlplane.sh"))
            .arg("start")
            .env("CONTROLPLANE_BIN", bin)
            .env("CONTROLPLANE_OWNER_PID", std::process::id().to_string())
            .stderr(Stdio::inherit())
            .output()?;
        ensure!(out.status.success(), "cluster/controlplane.sh start failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(stdout.lines().last().context("no DIR printed")?.trim());
        Ok(ControlPlane { dir })
    }

    fn stop(&self) {
        let _ = Command::new(Path::new(ROOT).join("cluster/controlplane.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// The webhook binary on loopback, killed on drop.
struct Webhook(Child);

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn measure(plane: &ControlPlane, bin: &Path) -> Result<()> {
    let cluster = Cluster::connect(plane.dir.clone(), bin).await?;
    for engine in Engine::ALL {
        cluster.namespace(engine.namespace(), json!({})).await?;
    }
    let _webhook = install_webhook(&cluster, &plane.dir).await?;
    install_native(&cluster)?;
    let api = Api::new(&plane.dir)?;
    wait_active(&api).await?;
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load_before = load();
    let sizes = [("small", small_pod()), ("large", large_pod()?)];
    let mut results = Vec::new();
    for (size, pod) in &sizes {
        let mut samples: [Vec<Duration>; 3] = Default::default();
        let mut elapsed = [Duration::ZERO; 3];
        for round in 0..ROUNDS {
            // Each round starts with another configuration, so that none always follows
            // the same one.
            for turn in 0..Engine::ALL.len() {
                let k = (round + turn) % Engine::ALL.len();
                let engine = Engine::ALL[k];
                let (latencies, took) = create_many(&api, engine, size, pod, round).await?;
                samples[k].extend(latencies);
                elapsed[k] += took;
            }
        }
        for (k, engine) in Engine::ALL.into_iter().enumerate() {
            results.push(Row::new(size, engine, &mut samples[k], elapsed[k]));
        }
    }
    print_table(&results, &load_before, &load());
    Ok(())
}

/// `PODS / ROUNDS` creates of `pod` in the engine's namespace, `CONCURRENCY` at a time;
/// the latency of each and the time all took.
async fn create_many(
    api: &Api,
    engine: Engine,
    size: &str,
    pod: &Value,
    round: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let per_round = PODS / ROUNDS;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(per_round);
    let names: Vec<String> = (0..per_round)
        .map(|i| format!("{size}-{round}-{i}"))
        .collect();
    for chunk in names.chunks(CONCURRENCY) {
        let creates = chunk.iter().map(|name| {
            let mut p = pod.clone();
            p["metadata"]["name"] = json!(name);
            async move {
                let t = Instant::now();
                let answer = api.create_pod(engine.namespace(), &p, false).await?;
                ensure!(
                    answer.status == 201,
                    "create in {}: {}",
                    engine.namespace(),
                    answer.body
                );
                Ok::<_, anyhow::Error>(t.elapsed())
            }
        });
        for latency in futures::future::join_all(creates).await {
            latencies.push(latency?);
        }
    }
    Ok((latencies, started.elapsed()))
}

/// One line of the result.
struct Row {
    size: &'static str,
    engine: Engine,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

impl Row {
    fn new(size: &str, engine: Engine, samples: &mut [Duration], elapsed: Duration) -> Row {
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Row {
            size: if size == "small" { "small" } else { "large" },
            engine,
            per_second: samples.len() as f64 / elapsed.as_secs_f64(),
            p50: at(0.50),
            p99: at(0.99),
        }
    }
}

fn print_table(rows: &[Row], load_before: &str, load_after: &str) {
    println!(
        "\npods created through the API server, {PODS} per row in {ROUNDS} interleaved rounds, {CONCURRENCY} at a time"
    );
    println!("load average before: {}", load_before.trim());
    println!(
        "{:<6} {:<16} {:>8} {:>9} {:>9} {:>22}",
        "pod", "engine", "pods/s", "p50", "p99", "vs no policy (rate, p50, p99)"
    );
    for row in rows {
        let base = rows
            .iter()
            .find(|r| r.size == row.size && r.engine == Engine::None)
            .expect("a baseline row");
        println!(
            "{:<6} {:<16} {:>8.1} {:>7.1}ms {:>7.1}ms {:>8.2} × {:>5.2} × {:>5.2} ×",
            row.size,
            row.engine.name(),
            row.per_second,
            row.p50.as_secs_f64() * 1e3,
            row.p99.as_secs_f64() * 1e3,
            row.per_second / base.per_second,
            row.p50.as_secs_f64() / base.p50.as_secs_f64(),
            row.p99.as_secs_f64() / base.p99.as_secs_f64(),
        );
    }
    println!("load average after: {}", load_after.trim());
}

/// One container with a memory limit.
fn small_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {},
        "spec": {"automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "registry.example/app:1",
                                 "resources": {"limits": {"memory": "512Mi"}}}]}
    })
}

/// The pod of `tests/data/pod-create.json` (what `cargo bench --bench review` reviews): a
/// ReplicaSet's pod with three containers, a native sidecar, 25 env entries each, probes
/// and volumes, 28 KB; without its service account token volume.
fn large_pod() -> Result<Value> {
    let review: Value = serde_json::from_slice(&std::fs::read(
        Path::new(ROOT).join("tests/data/pod-create.json"),
    )?)?;
    let mut pod = review["request"]["object"].clone();
    ensure!(
        pod["metadata"].is_object(),
        "the fixture's pod has no metadata"
    );
    ensure!(pod["spec"].is_object(), "the fixture's pod has no spec");
    support::pods::as_new_pod(&mut pod);
    Ok(pod)
}

/// The webhook (optimised build) on loopback, called by the chart's configuration by URL
/// for the webhook namespace.
async fn install_webhook(cluster: &Cluster, dir: &Path) -> Result<Webhook> {
    let (webhook, port, ca) = start_webhook(dir).await?;
    let text = std::fs::read_to_string(
        Path::new(ROOT).join("deploy/manifests/optin-enforce-certmanager.yaml"),
    )?;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut config = docs
        .into_iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .context("no webhook configuration")?;
    config["metadata"] = json!({"name": "gomemlimit-bench"});
    let ca = base64::engine::general_purpose::STANDARD.encode(&ca);
    for webhook in config["webhooks"].as_array_mut().context("webhooks")? {
        webhook["clientConfig"] =
            json!({"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": ca});
        webhook["failurePolicy"] = json!("Fail");
        webhook["namespaceSelector"] =
            json!({"matchLabels": {"kubernetes.io/metadata.name": Engine::Webhook.namespace()}});
    }
    let out = cluster.kubectl(&["create", "-f", "-"], Some(&config.to_string()))?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(webhook)
}

/// The webhook with a new key pair, once ready: the process, its port and its CA.
async fn start_webhook(dir: &Path) -> Result<(Webhook, u16, String)> {
    let certs = dir.join("bench-webhook-certs");
    let pki = gomemlimit_injector::tls::generate(&["127.0.0.1".to_owned()], 1)?;
    gomemlimit_injector::tls::write_pki(&certs, &pki, true)?;
    let (port, metrics) = (support::free_port(), support::free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_gomemlimit-injector"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .arg("--tls-cert-file")
        .arg(certs.join("tls.crt"))
        .arg("--tls-key-file")
        .arg(certs.join("tls.key"))
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let webhook = Webhook(child);
    let url = format!("http://127.0.0.1:{metrics}/readyz");
    let url = &url;
    eventually(Duration::from_secs(30), "webhook ready", || async move {
        Ok(reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success()))
    })
    .await?;
    Ok((webhook, port, pki.ca_cert_pem))
}

/// The chart's native policies, bound to the native namespace.
fn install_native(cluster: &Cluster) -> Result<()> {
    let text = std::fs::read_to_string(
        Path::new(ROOT).join("deploy/manifests/native-optin-enforce.yaml"),
    )?;
    let mut objects: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .filter(|d: &Value| !d.is_null())
        .collect();
    for o in &mut objects {
        if o["kind"].as_str().is_some_and(|k| k.ends_with("Binding")) {
            o["spec"]["matchResources"]["namespaceSelector"] =
                json!({"matchLabels": {"kubernetes.io/metadata.name": Engine::Native.namespace()}});
        }
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let out = cluster.kubectl(&["create", "-f", "-"], Some(&list.to_string()))?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Waits until both engines mutate a dry-run pod in their namespace.
async fn wait_active(api: &Api) -> Result<()> {
    let probe = small_pod();
    for engine in [Engine::Webhook, Engine::Native] {
        let (api, probe) = (api, &probe);
        eventually(Duration::from_secs(60), "engine active", || async move {
            let mut p = probe.clone();
            p["metadata"]["name"] = json!("probe");
            let answer = api.create_pod(engine.namespace(), &p, true).await?;
            Ok(answer.body["metadata"]["annotations"]
                .get("gomemlimit.io/status")
                .is_some())
        })
        .await?;
    }
    Ok(())
}
