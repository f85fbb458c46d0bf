//! One run: the service as a pod under a limit, one load against it, what happened.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Config, Lab};
use crate::cluster::{container, env_of};
use crate::node::NodeEnv;

/// From pod creation to the service answering.
const START_LIMIT: Duration = Duration::from_secs(120);
/// One load; the load generator stops sending at this deadline and reports the rest as
/// errors, and is killed 30 s after it.
const LOAD_DEADLINE: Duration = Duration::from_secs(180);
/// One request of a load.
const REQUEST_TIMEOUT: &str = "10s";
/// After a load with errors, how long the kubelet gets to report a killed container.
const SETTLE: Duration = Duration::from_secs(15);
/// Waiting reasons that no retry will fix.
const FATAL_WAITING: [&str; 5] = [
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "ImageInspectError",
];

/// The load generator's report (`workloads/load`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LoadReport {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) error_samples: Vec<String>,
    pub(crate) seconds: f64,
    pub(crate) rps: f64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) response_bytes: f64,
}

/// The runtime's memory figures from an expvar endpoint: `memstats` (any Go service that
/// imports `expvar`), and `runtime` (what `workloads/sales` adds: the limit and GC percent
/// the runtime took from GOMEMLIMIT and GOGC).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct MemStats {
    pub(crate) heap_alloc: u64,
    pub(crate) heap_sys: u64,
    pub(crate) sys: u64,
    pub(crate) num_gc: u64,
    pub(crate) memory_limit: Option<i64>,
    pub(crate) gc_percent: Option<i64>,
    pub(crate) go_version: Option<String>,
    pub(crate) gomaxprocs: Option<u64>,
}

impl MemStats {
    fn parse(vars: &Value) -> Option<MemStats> {
        let m = &vars["memstats"];
        let rt = &vars["runtime"];
        Some(MemStats {
            heap_alloc: m["HeapAlloc"].as_u64()?,
            heap_sys: m["HeapSys"].as_u64()?,
            sys: m["Sys"].as_u64()?,
            num_gc: m["NumGC"].as_u64()?,
            memory_limit: rt["memoryLimit"].as_i64(),
            gc_percent: rt["gcPercent"].as_i64(),
            go_version: rt["goVersion"].as_str().map(str::to_owned),
            gomaxprocs: rt["GOMAXPROCS"].as_u64(),
        })
    }
}

/// What one run measured.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct Run {
    pub(crate) pod: String,
    pub(crate) config: Config,
    /// None: no memory limit.
    pub(crate) limit_mib: Option<u64>,
    /// No OOMKill, no restart, every request of the load answered with 2xx.
    pub(crate) survived: bool,
    pub(crate) oom_killed: bool,
    pub(crate) restarts: u64,
    /// Why it did not survive, in a few words.
    pub(crate) failure: Option<String>,
    pub(crate) load: Option<LoadReport>,
    /// Metrics once the service answered, and after the load.
    pub(crate) idle: Option<MemStats>,
    pub(crate) after: Option<MemStats>,
    /// The pod cgroup's peak memory usage.
    pub(crate) peak_bytes: Option<u64>,
    /// How the stored pod sets GOMEMLIMIT: "downward API", the literal, or None.
    pub(crate) gomemlimit: Option<String>,
    pub(crate) gogc: Option<String>,
    /// The 1-minute load average when the run started.
    pub(crate) loadavg: Option<f64>,
    pub(crate) seconds: f64,
}

/// The container's state, read from the pod.
struct State {
    ip: Option<String>,
    running: bool,
    restarts: u64,
    /// `lastState.terminated.reason` or `state.terminated.reason`.
    terminated: Option<String>,
    waiting: Option<String>,
    uid: String,
}

impl State {
    fn of(pod: &Value) -> State {
        let s = &pod["status"]["containerStatuses"][0];
        let reason = |v: &Value| v["reason"].as_str().map(str::to_owned);
        State {
            ip: pod["status"]["podIP"].as_str().map(str::to_owned),
            running: s["state"]["running"].is_object(),
            restarts: s["restartCount"].as_u64().unwrap_or(0),
            terminated: reason(&s["lastState"]["terminated"])
                .or_else(|| reason(&s["state"]["terminated"])),
            waiting: reason(&s["state"]["waiting"]),
            uid: pod["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    fn died(&self) -> bool {
        self.restarts > 0 || self.terminated.is_some()
    }
}

impl Lab {
    /// The pod of one run: the service alone, restarted when it dies (as a Deployment's
    /// pod would be), with the same CPU request and limit in every run.
    fn pod(&self, name: &str, limit_mib: Option<u64>) -> Value {
        let s = &self.settings;
        let mut limits = json!({});
        let mut requests = json!({});
        if let Some(cpu) = &s.cpu {
            limits["cpu"] = json!(cpu);
            requests["cpu"] = json!(cpu);
        }
        if let Some(mib) = limit_mib {
            limits["memory"] = json!(format!("{mib}Mi"));
        }
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "lab-service"}},
            "spec": {
                "restartPolicy": "Always",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "terminationGracePeriodSeconds": 0,
                "containers": [{
                    "name": "service",
                    "image": s.image,
                    "imagePullPolicy": "Never",
                    "args": s.args,
                    "ports": [{"containerPort": s.port}],
                    "resources": {"limits": limits, "requests": requests}
                }]
            }
        })
    }

    /// Runs the service once under `limit_mib` in the namespace of `config`; the pod is
    /// deleted afterwards, whatever happened. An error is the lab's own failure (the API
    /// server, the image); what happened to the service is in the Run.
    pub(crate) async fn run(
        &self,
        env: &NodeEnv,
        config: Config,
        limit_mib: Option<u64>,
    ) -> Result<Run> {
        let name = self.next_name();
        let ns = config.namespace();
        let started = Instant::now();
        self.note_loadavg();
        let stored = env.create_pod(ns, &self.pod(&name, limit_mib)).await?;
        let app = container(&stored, "service");
        let gomemlimit = env_of(app, "GOMEMLIMIT").map(|e| {
            if e["valueFrom"]["resourceFieldRef"]["resource"] == "limits.memory" {
                "downward API".to_owned()
            } else {
                e["value"].as_str().unwrap_or_default().to_owned()
            }
        });
        let gogc = env_of(app, "GOGC").and_then(|e| e["value"].as_str().map(str::to_owned));
        let mut run = Run {
            pod: name.clone(),
            config,
            limit_mib,
            survived: false,
            oom_killed: false,
            restarts: 0,
            failure: None,
            load: None,
            idle: None,
            after: None,
            peak_bytes: None,
            gomemlimit,
            gogc,
            loadavg: super::loadavg(),
            seconds: 0.0,
        };
        let measured = self.measure_run(env, ns, &name, &mut run).await;
        let deleted = env.kubectl_ok(
            &[
                "delete",
                "pod",
                "-n",
                ns,
                &name,
                "--wait=true",
                "--timeout=90s",
            ],
            None,
        );
        measured?;
        deleted?;
        run.seconds = started.elapsed().as_secs_f64();
        println!("  {}", describe(&run));
        Ok(run)
    }

    async fn state(&self, env: &NodeEnv, ns: &str, name: &str) -> Result<State> {
        let pod = serde_json::to_value(env.pods(ns).get(name).await?)?;
        let state = State::of(&pod);
        if let Some(reason) = state
            .waiting
            .as_deref()
            .filter(|r| FATAL_WAITING.contains(r))
        {
            bail!(
                "{ns}/{name} cannot start: {reason}: {}",
                pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            );
        }
        Ok(state)
    }

    /// Fills `run`; returns early (with `failure` set) when the service died.
    async fn measure_run(&self, env: &NodeEnv, ns: &str, name: &str, run: &mut Run) -> Result<()> {
        let s = &self.settings;
        // Started and answering.
        let deadline = Instant::now() + START_LIMIT;
        let ip = loop {
            let state = self.state(env, ns, name).await?;
            if state.died() {
                return self
                    .finish_dead(env, ns, name, run, "before it answered")
                    .await;
            }
            if let (true, Some(ip)) = (state.running, &state.ip) {
                let probe = s.metrics.as_deref().unwrap_or("/");
                if let Ok(resp) = self
                    .client
                    .get(format!("http://{ip}:{}{probe}", s.port))
                    .send()
                    .await
                {
                    if s.metrics.is_some()
                        && let Ok(vars) = resp.json::<Value>().await
                    {
                        run.idle = MemStats::parse(&vars);
                    }
                    break ip.clone();
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{ns}/{name} did not answer on port {} within {START_LIMIT:?}",
                    s.port
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };

        // The load.
        let load = self.load(&ip).await?;
        let errors = load.errors;
        run.load = Some(load);

        // What the kubelet saw.
        let settle = Instant::now() + if errors > 0 { SETTLE } else { Duration::ZERO };
        let state = loop {
            let state = self.state(env, ns, name).await?;
            if state.died() || Instant::now() >= settle {
                break state;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        run.peak_bytes = peak_memory(env, &state.uid);
        if state.died() {
            return self
                .finish_dead(env, ns, name, run, "during the load")
                .await;
        }
        if let Some(path) = &s.metrics {
            let vars = self
                .client
                .get(format!("http://{ip}:{}{path}", s.port))
                .send()
                .await
                .ok();
            if let Some(resp) = vars {
                run.after = resp
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| MemStats::parse(&v));
            }
        }
        if errors > 0 {
            let samples = &run.load.as_ref().expect("load").error_samples;
            run.failure = Some(format!(
                "{errors} errors ({})",
                samples.first().map_or("", String::as_str)
            ));
        } else {
            run.survived = true;
        }
        Ok(())
    }

    /// Records a dead service: OOMKilled or not, how many restarts.
    async fn finish_dead(
        &self,
        env: &NodeEnv,
        ns: &str,
        name: &str,
        run: &mut Run,
        when: &str,
    ) -> Result<()> {
        let state = self.state(env, ns, name).await?;
        run.restarts = state.restarts;
        run.oom_killed = state.terminated.as_deref() == Some("OOMKilled");
        run.peak_bytes = run.peak_bytes.or_else(|| peak_memory(env, &state.uid));
        run.failure = Some(format!(
            "{} {when}",
            state.terminated.as_deref().unwrap_or("restarted")
        ));
        Ok(())
    }

    /// Runs the load generator against the pod; kills it when it outlives its deadline.
    async fn load(&self, ip: &str) -> Result<LoadReport> {
        let s = &self.settings;
        let mut cmd = Command::new(&s.load_bin);
        cmd.arg("-url")
            .arg(format!("http://{ip}:{}{}", s.port, s.load.path))
            .args(["-method", &s.load.method])
            .args(["-n", &s.requests.to_string()])
            .args(["-c", &s.concurrency.to_string()])
            .args(["-timeout", REQUEST_TIMEOUT])
            .args(["-deadline", &format!("{}s", LOAD_DEADLINE.as_secs())]);
        if let Some(body) = &s.load.body {
            cmd.args(["-body", body]);
        }
        let bin = s.load_bin.clone();
        let out = tokio::task::spawn_blocking(move || {
            output_within(&mut cmd, LOAD_DEADLINE + Duration::from_secs(30))
        })
        .await??
        .with_context(|| format!("{} did not finish; killed", bin.display()))?;
        serde_json::from_slice(&out).with_context(|| {
            format!(
                "{} printed {:?}",
                bin.display(),
                String::from_utf8_lossy(&out)
            )
        })
    }
}

/// Runs a command, returning its stdout; None when it outlived `limit` (then it is killed).
fn output_within(cmd: &mut Command, limit: Duration) -> Result<Option<Vec<u8>>> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buf).map(|_| buf)
    });
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            let out = reader.join().expect("reader")?;
            if !status.success() {
                bail!("{cmd:?} failed: {status}");
            }
            return Ok(Some(out));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pod cgroup's peak memory usage (cgroup v1 `memory.max_usage_in_bytes`, v2
/// `memory.peak`), under the kubelet's cgroup root (driver cgroupfs).
fn peak_memory(env: &NodeEnv, uid: &str) -> Option<u64> {
    let root = env.var("NODE_CGROUP_ROOT").trim_start_matches('/');
    let pod = format!("pod{uid}");
    let candidates: Vec<PathBuf> = ["", "burstable", "besteffort"]
        .iter()
        .flat_map(|qos| {
            let rel = Path::new(root).join("kubepods").join(qos).join(&pod);
            [
                Path::new("/sys/fs/cgroup/memory")
                    .join(&rel)
                    .join("memory.max_usage_in_bytes"),
                Path::new("/sys/fs/cgroup").join(&rel).join("memory.peak"),
            ]
        })
        .collect();
    candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// One line per run, for the log.
pub(crate) fn describe(run: &Run) -> String {
    let limit = run
        .limit_mib
        .map_or("no limit".to_owned(), |m| format!("{m} MiB"));
    let mut line = format!("{} {limit}, {}: ", run.pod, run.config.label());
    match &run.failure {
        None => line.push_str("survived"),
        Some(f) => line.push_str(f),
    }
    if let Some(l) = &run.load {
        line.push_str(&format!(
            ", {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms",
            l.rps, l.p50_ms, l.p99_ms
        ));
    }
    if let Some(m) = &run.after {
        line.push_str(&format!(", {} GCs, Sys {:.1} MiB", m.num_gc, mib(m.sys)));
    }
    if let Some(p) = run.peak_bytes {
        line.push_str(&format!(", peak {:.1} MiB", mib(p)));
    }
    line.push_str(&format!(" ({:.0}s)", run.seconds));
    line
}
