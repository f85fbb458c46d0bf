//! Pods that escape the webhook: with it down and `failurePolicy: Ignore` they are admitted
//! unmutated; once it is back, the background audit counts them per namespace (on one of
//! two replicas, the holder of the Lease, with only the chart's RBAC); recreated, they
//! are mutated and the count drops to 0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::checks::{assert_mutated, assert_untouched};
use crate::env::{Env, Webhook, eventually, free_port, pod};

/// The namespaces of the scenario, with the pods created in each while the webhook is down.
const SELECTED: [(&str, usize); 2] = [("escaped-shop", 3), ("escaped-web", 2)];
/// Not opted in: its pods are not the webhook's business and are never counted.
const UNSELECTED: &str = "escaped-other";
/// Where the chart would install the webhook, with its ServiceAccount and RBAC.
const RELEASE_NAMESPACE: &str = "gomemlimit-system";
const LEASE: &str = "gomemlimit-injector-background-audit";

pub(crate) async fn escaped_pods_are_counted_and_drop_to_zero_when_recreated(
    env: &mut Env,
) -> Result<()> {
    for (ns, _) in SELECTED {
        env.namespace(ns, json!({"gomemlimit.io/inject": "enabled"}))
            .await?;
    }
    env.namespace(UNSELECTED, json!({})).await?;
    env.namespace(RELEASE_NAMESPACE, json!({})).await?;
    let dir = service_account_dir(env).await?;
    let port = free_port();
    env.install_webhook("optin", "enforce", "Ignore", port, Some(&env.ca_cert))
        .await?;
    let certs = env.webhook.certs.clone();

    // The webhook runs, and is then stopped: from now on pods escape it.
    let mut first = replica(&dir, &certs, "escaped-first", port)?;
    first.wait_ready().await?;
    env.wait_webhook_active(SELECTED[0].0, true).await?;
    first.stop();
    let mut escaped = Vec::new();
    for (ns, count) in SELECTED {
        for i in 0..count {
            let name = format!("escaped-{i}");
            let stored = env.create_pod(ns, &pod(&name, "256Mi", None)).await?;
            assert_untouched(&stored, None).with_context(|| format!("{ns}/{name}"))?;
            escaped.push((ns, name));
        }
    }
    for i in 0..2 {
        env.create_pod(UNSELECTED, &pod(&format!("other-{i}"), "256Mi", None))
            .await?;
    }
    let mut opted_out = pod("opted-out", "256Mi", None);
    opted_out["metadata"]["labels"] = json!({"gomemlimit.io/inject": "disabled"});
    env.create_pod(SELECTED[0].0, &opted_out).await?;
    println!(
        "  webhook down (failurePolicy Ignore): {} pods admitted unmutated in {}, 2 in {UNSELECTED} (not selected), 1 opted out",
        escaped.len(),
        SELECTED.map(|(ns, n)| format!("{ns} ({n})")).join(" and ")
    );

    // Back, as two replicas: one holds the Lease and counts them.
    let mut replicas = [
        replica(&dir, &certs, "escaped-a", port)?,
        replica(&dir, &certs, "escaped-b", free_port())?,
    ];
    let timeline = Timeline::start(&replicas);
    let result = recount(env, &dir, &certs, &mut replicas, &escaped, &timeline).await;
    let recorded = timeline.stop();
    for r in &mut replicas {
        r.stop();
    }
    result?;
    write_samples(&recorded)
}

/// The webhook back: counted, handed over, recreated, counted again.
async fn recount(
    env: &Env,
    dir: &Path,
    certs: &Path,
    replicas: &mut [Webhook; 2],
    escaped: &[(&str, String)],
    timeline: &Timeline,
) -> Result<()> {
    for r in replicas.iter() {
        r.wait_ready().await?;
    }
    let want: BTreeMap<String, f64> = SELECTED
        .iter()
        .map(|(ns, n)| ((*ns).to_owned(), *n as f64))
        .collect();
    let leader = wait_for_counts(replicas, &want, Duration::from_secs(60)).await?;
    println!(
        "  webhook back: the background audit counts {} ({:.1}s after the restart, on the replica holding the Lease)",
        describe(&want),
        timeline.started.elapsed().as_secs_f64()
    );
    timeline.mark("counted");
    agrees_with_live_audit(env, &want)?;
    hold(replicas, &want).await?;

    // The scanning replica goes away: the other takes the Lease over and counts the same.
    timeline.mark("scanning replica stopped");
    let handover = Instant::now();
    replicas[leader].stop();
    let other = 1 - leader;
    wait_for_counts(&replicas[other..=other], &want, Duration::from_secs(60))
        .await
        .context("the other replica did not take over")?;
    println!(
        "  the scanning replica stopped: the other took the Lease over and counted the same within {:.1}s",
        handover.elapsed().as_secs_f64()
    );
    // Back on its port (the one the webhook configuration names, maybe): it follows.
    let port = replicas[leader].port;
    replicas[leader] = replica(dir, certs, "escaped-c", port)?;
    replicas[leader].wait_ready().await?;
    hold(replicas, &want).await?;

    // Recreated, the pods go through the webhook, and the count drops to 0.
    timeline.mark("escaped pods recreated");
    let recreated = Instant::now();
    for (ns, name) in escaped {
        let pods = env.pods(ns);
        pods.delete(name, &Default::default()).await?;
        let (pods, name_ref) = (&pods, name.as_str());
        eventually(Duration::from_secs(30), "pod deleted", || async move {
            Ok(pods.get_opt(name_ref).await?.is_none())
        })
        .await?;
        let stored = env.create_pod(ns, &pod(name, "256Mi", None)).await?;
        assert_mutated(&stored, "256Mi").with_context(|| format!("{ns}/{name} recreated"))?;
        // One at a time, as a rollout would: the count goes down scan by scan.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let leader = wait_for_counts(replicas, &BTreeMap::new(), Duration::from_secs(60)).await?;
    println!(
        "  {} pods recreated and mutated: the count dropped to 0 ({} series left) within {:.1}s",
        escaped.len(),
        counts(replicas[leader].metrics_port).await?.len(),
        recreated.elapsed().as_secs_f64()
    );
    timeline.mark("count 0");
    hold(replicas, &BTreeMap::new()).await
}

/// The counts stay as they are over three more scans.
async fn hold(replicas: &[Webhook], want: &BTreeMap<String, f64>) -> Result<()> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_for_counts(replicas, want, Duration::from_secs(1))
        .await
        .map(drop)
        .context("the counts did not hold")
}

/// A webhook replica with the background audit on: a short interval, the chart's Lease
/// name and, through `dir/kubeconfig`, the chart's ServiceAccount.
fn replica(dir: &Path, certs: &Path, name: &str, port: u16) -> Result<Webhook> {
    let (cert, key) = (certs.join("tls.crt"), certs.join("tls.key"));
    Webhook::start_on(
        dir,
        certs,
        name,
        &[
            "--tls-cert-file",
            cert.to_str().context("path")?,
            "--tls-key-file",
            key.to_str().context("path")?,
            "--background-audit-interval",
            "1s",
            "--selection",
            "optIn",
            "--background-audit-lease",
            LEASE,
            "--background-audit-lease-namespace",
            RELEASE_NAMESPACE,
        ],
        port,
    )
}

/// A directory whose `kubeconfig` authenticates as the chart's ServiceAccount, with the
/// chart's rendered RBAC for it applied: the background audit gets no more than a real
/// install gives it.
async fn service_account_dir(env: &Env) -> Result<PathBuf> {
    let path = Path::new(crate::env::ROOT).join("deploy/manifests/optin-enforce-certmanager.yaml");
    let text = std::fs::read_to_string(&path)?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| anyhow::anyhow!("failed to parse {}: {e}", path.display()))?;
    let rbac: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            let kind = d["kind"].as_str().unwrap_or_default();
            kind == "ServiceAccount" || (kind.contains("Role") && d["metadata"]["name"] == LEASE)
        })
        .collect();
    ensure!(
        rbac.len() == 5,
        "expected a ServiceAccount and four RBAC objects in {}, found {}",
        path.display(),
        rbac.len()
    );
    for object in rbac {
        env.apply(RELEASE_NAMESPACE, object)?;
    }
    let token = env.kubectl_ok(
        &[
            "create",
            "token",
            "gomemlimit-injector",
            "-n",
            RELEASE_NAMESPACE,
            "--duration=1h",
        ],
        None,
    )?;
    let dir = env.dir.join("escaped");
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(&env.kubeconfig, &kubeconfig)?;
    let path = kubeconfig.to_str().context("path")?;
    let set = |args: &[&str]| -> Result<()> {
        let out = env.kubectl(&[&["--kubeconfig", path], args].concat(), None)?;
        ensure!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    set(&[
        "config",
        "set-credentials",
        "background-audit",
        "--token",
        token.trim(),
    ])?;
    set(&[
        "config",
        "set-context",
        "--current",
        "--user",
        "background-audit",
    ])?;
    Ok(dir)
}

/// `gomemlimit_injector_noncompliant_pods` of one replica, by namespace, for this
/// scenario's namespaces (earlier scenarios leave escaped pods in theirs, which count too).
async fn counts(metrics_port: u16) -> Result<BTreeMap<String, f64>> {
    let mut all = all_counts(metrics_port).await?;
    ensure!(
        !all.contains_key(UNSELECTED),
        "a namespace that is not selected is counted: {all:?}"
    );
    all.retain(|ns, _| SELECTED.iter().any(|(s, _)| s == ns));
    Ok(all)
}

/// `gomemlimit_injector_noncompliant_pods` of one replica, by namespace.
async fn all_counts(metrics_port: u16) -> Result<BTreeMap<String, f64>> {
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let text = reqwest::get(&url).await?.text().await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("gomemlimit_injector_noncompliant_pods{namespace=\"")
        else {
            continue;
        };
        let (ns, value) = rest.split_once("\"} ").context("a sample")?;
        out.insert(ns.to_owned(), value.trim().parse()?);
    }
    Ok(out)
}

async fn gauge(metrics_port: u16, name: &str) -> Result<Option<f64>> {
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let text = reqwest::get(&url).await?.text().await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok()))
}

/// Waits until exactly one of `replicas` leads and reports `want` (and the others report
/// nothing); returns its index.
async fn wait_for_counts(
    replicas: &[Webhook],
    want: &BTreeMap<String, f64>,
    limit: Duration,
) -> Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let mut leaders = Vec::new();
        let mut seen = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            let leader = gauge(
                r.metrics_port,
                "gomemlimit_injector_background_audit_leader",
            )
            .await
            .unwrap_or(None);
            let completed = gauge(
                r.metrics_port,
                "gomemlimit_injector_background_audit_last_completed_timestamp_seconds",
            )
            .await
            .unwrap_or(None);
            let found = match counts(r.metrics_port).await {
                Ok(found) => found,
                Err(e) if e.to_string().contains("not selected") => return Err(e),
                Err(_) => BTreeMap::new(),
            };
            if leader == Some(1.0) {
                leaders.push((i, completed.is_some(), found.clone()));
            } else if !found.is_empty() {
                bail!("replica {i} reports counts without leading: {found:?}");
            }
            seen.push(format!("replica {i}: leader {leader:?}, counts {found:?}"));
        }
        if let [(i, true, found)] = leaders.as_slice()
            && found == want
        {
            return Ok(*i);
        }
        ensure!(leaders.len() <= 1, "two replicas lead at once: {seen:?}");
        if Instant::now() >= deadline {
            bail!(
                "timed out after {limit:?} waiting for counts {want:?}; last seen: {}",
                seen.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The count and `kubectl gomemlimit audit` name the same pods: as many pods to change, per
/// namespace.
fn agrees_with_live_audit(env: &Env, want: &BTreeMap<String, f64>) -> Result<()> {
    for (ns, count) in want {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gomemlimit-injector"))
            .args(["audit", "-n", ns, "-o", "json"])
            .env("KUBECONFIG", env.kubeconfig.as_path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()?;
        let report: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
        let pods: u64 = report["objects"]
            .as_array()
            .context("objects")?
            .iter()
            .filter(|o| !o["containers"].as_array().is_none_or(Vec::is_empty))
            .map(|o| o["pods"].as_u64().unwrap_or(1))
            .sum();
        ensure!(
            pods as f64 == *count,
            "audit lists {pods} pods to change in {ns}, the background audit counts {count}"
        );
    }
    Ok(())
}

fn describe(counts: &BTreeMap<String, f64>) -> String {
    if counts.is_empty() {
        return "nothing".to_owned();
    }
    counts
        .iter()
        .map(|(ns, n)| format!("{ns}={n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One sample: seconds since the restart, namespace, count.
type Sample = (f64, String, f64);
/// A named moment: seconds since the restart, what happened.
type Mark = (f64, String);
/// What a timeline recorded.
type Recorded = (Vec<Sample>, Vec<Mark>);

/// What the scanning replica reported over time: (seconds since the restart, namespace,
/// count), sampled every 250 ms as the alerts aggregate it (the largest count of any
/// replica per namespace), plus named moments.
struct Timeline {
    samples: Arc<Mutex<Vec<Sample>>>,
    marks: Arc<Mutex<Vec<Mark>>>,
    started: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl Timeline {
    fn start(replicas: &[Webhook]) -> Timeline {
        let ports: Vec<u16> = replicas.iter().map(|r| r.metrics_port).collect();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let sink = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            // Bounded: at most 10 minutes of samples.
            for _ in 0..2400 {
                let mut max: BTreeMap<String, f64> = BTreeMap::new();
                let mut scanned = false;
                for port in &ports {
                    let completed = gauge(
                        *port,
                        "gomemlimit_injector_background_audit_last_completed_timestamp_seconds",
                    );
                    let leads = gauge(*port, "gomemlimit_injector_background_audit_leader");
                    if let (Ok(Some(_)), Ok(Some(l))) = (completed.await, leads.await) {
                        scanned |= l == 1.0;
                    }
                    for (ns, n) in counts(*port).await.unwrap_or_default() {
                        let slot = max.entry(ns).or_default();
                        *slot = slot.max(n);
                    }
                }
                // Before the first scan, and while no replica scans, there is no count.
                if scanned {
                    let t = started.elapsed().as_secs_f64();
                    let mut sink = sink.lock().unwrap();
                    for (ns, _) in SELECTED {
                        sink.push((t, ns.to_owned(), max.get(ns).copied().unwrap_or(0.0)));
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Timeline {
            samples,
            marks: Arc::new(Mutex::new(Vec::new())),
            started,
            task,
        }
    }

    fn mark(&self, what: &str) {
        let t = self.started.elapsed().as_secs_f64();
        self.marks.lock().unwrap().push((t, what.to_owned()));
    }

    fn stop(&self) -> Recorded {
        self.task.abort();
        (
            self.samples.lock().unwrap().clone(),
            self.marks.lock().unwrap().clone(),
        )
    }
}

/// Writes the timeline as CSV to `$E2E_METRICS_OUT` when set (the README's plot is made
/// from it), and prints a summary either way.
fn write_samples((samples, marks): &Recorded) -> Result<()> {
    let mut csv = String::from("seconds,namespace,noncompliant_pods\n");
    for (t, ns, n) in samples {
        csv.push_str(&format!("{t:.2},{ns},{n}\n"));
    }
    for (t, what) in marks {
        csv.push_str(&format!("{t:.2},#mark,{what}\n"));
    }
    println!(
        "  timeline: {} samples over {:.0}s; marks: {}",
        samples.len() / SELECTED.len(),
        samples.last().map_or(0.0, |s| s.0),
        marks
            .iter()
            .map(|(t, w)| format!("{w} at {t:.1}s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Ok(path) = std::env::var("E2E_METRICS_OUT") {
        std::fs::write(&path, csv).with_context(|| format!("failed to write {path}"))?;
        println!("  wrote {path}");
    }
    Ok(())
}

/// Cluster-wide, the background audit reads every namespace but those labelled disabled,
/// the system namespaces and `--exclude-namespaces`, with one list of every pod.
pub(crate) async fn cluster_wide_background_audit_leaves_out_what_the_webhook_leaves_out(
    env: &mut Env,
) -> Result<()> {
    // No webhook configuration selects these: their pods are stored as written.
    let cases = [
        ("cw-escaped", json!({}), true),
        (
            "cw-escaped-disabled",
            json!({"gomemlimit.io/inject": "disabled"}),
            false,
        ),
        ("cw-escaped-excluded", json!({}), false),
        ("kube-system", json!({}), false),
    ];
    for (ns, labels, _) in &cases {
        env.namespace(ns, labels.clone()).await?;
        for i in 0..2 {
            env.create_pod(ns, &pod(&format!("cw-{i}"), "256Mi", None))
                .await?;
        }
    }
    let dir = service_account_dir(env).await?;
    let certs = env.webhook.certs.clone();
    let (cert, key) = (certs.join("tls.crt"), certs.join("tls.key"));
    let mut webhook = Webhook::start(
        &dir,
        &certs,
        "escaped-cluster-wide",
        &[
            "--tls-cert-file",
            cert.to_str().context("path")?,
            "--tls-key-file",
            key.to_str().context("path")?,
            "--background-audit-interval",
            "1s",
            "--selection",
            "clusterWide",
            "--exclude-namespaces",
            &format!("{RELEASE_NAMESPACE},cw-escaped-excluded"),
            "--background-audit-lease",
            LEASE,
            "--background-audit-lease-namespace",
            RELEASE_NAMESPACE,
        ],
    )?;
    let result = async {
        webhook.wait_ready().await?;
        let port = webhook.metrics_port;
        let mut found = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while found.get("cw-escaped") != Some(&2.0) {
            ensure!(
                Instant::now() < deadline,
                "cw-escaped not counted within 60s: {found:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            found = all_counts(port).await.unwrap_or_default();
        }
        for (ns, _, counted) in &cases {
            ensure!(
                found.contains_key(*ns) == *counted,
                "{ns}: counted {:?}, expected {}",
                found.get(*ns),
                if *counted { "a count" } else { "none" }
            );
        }
        println!(
            "  cluster-wide: {} counted; {} left out",
            describe(&found),
            cases
                .iter()
                .filter(|c| !c.2)
                .map(|c| c.0)
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }
    .await;
    webhook.stop();
    result
}
