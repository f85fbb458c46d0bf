//! A running Kubernetes for the end-to-end suites: its admin kubeconfig, a client, kubectl,
//! and what both suites do with them (namespaces that wait for their ServiceAccount, pods,
//! polling). `tests/e2e` runs on a control plane alone (`cluster/controlplane.sh`),
//! `tests/e2e_node` on a one-node cluster (`cluster/node.sh`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{Value, json};

pub(crate) const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// True under CI (`CI=true`), where a missing prerequisite fails a suite instead of skipping it.
pub(crate) fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Runs a command to completion, capturing its output.
pub(crate) fn sh(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("failed to run {cmd:?}"))
}

/// Where the Kubernetes binaries live (`CONTROLPLANE_BIN`, or `cluster/build.sh`'s output),
/// or `None` when they have not been built.
pub(crate) fn kubernetes_bin() -> Result<Option<PathBuf>> {
    if let Ok(dir) = std::env::var("CONTROLPLANE_BIN") {
        return Ok(Some(PathBuf::from(dir)));
    }
    let script = Path::new(ROOT).join("cluster/build.sh");
    let out = sh(Command::new(&script).arg("--print-bindir"))?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok((out.status.success() && dir.join("kube-apiserver").exists()).then_some(dir))
}

/// A cluster started by one of the `cluster/` scripts, reached through its admin kubeconfig.
pub(crate) struct Cluster {
    /// The directory the script started it in (logs, pki, kubeconfig).
    pub(crate) dir: PathBuf,
    pub(crate) kubeconfig: PathBuf,
    pub(crate) kubectl: PathBuf,
    pub(crate) client: Client,
}

impl Cluster {
    /// Connects to the cluster in `dir` and prints the API server's version.
    pub(crate) async fn connect(dir: PathBuf, bin: &Path) -> Result<Cluster> {
        let kubeconfig = dir.join("kubeconfig");
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await?;
        let client = Client::try_from(config)?;
        let version = client.apiserver_version().await?;
        println!("kube-apiserver version: {}", version.git_version);
        Ok(Cluster {
            dir,
            kubeconfig,
            kubectl: bin.join("kubectl"),
            client,
        })
    }

    /// Runs kubectl against the cluster.
    pub(crate) fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        self.run(&self.kubectl, args, stdin)
    }

    /// Runs kubectl; fails with its stderr unless it succeeds, else returns its stdout.
    pub(crate) fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.kubectl(args, stdin)?;
        ensure!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl create` of one object in `ns`; fails unless it succeeds, else returns what
    /// kubectl printed on stderr (the API server's warnings).
    pub(crate) fn create_with_warnings(&self, ns: &str, object: &Value) -> Result<String> {
        let out = self.kubectl(&["create", "-n", ns, "-f", "-"], Some(&object.to_string()))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(out.status.success(), "kubectl create failed: {stderr}");
        Ok(stderr)
    }

    /// Waits until a server-side dry-run pod in `ns` shows what the webhook configuration
    /// now in place does, mutated (`enforce`) or only warned about (audit): the API server
    /// picks up configuration changes asynchronously.
    pub(crate) async fn wait_webhook_active(&self, ns: &str, enforce: bool) -> Result<()> {
        let probe = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                     "resources": {"limits": {"memory": "64Mi"}}}]}
        })
        .to_string();
        let probe = &probe;
        eventually(
            Duration::from_secs(60),
            "webhook configuration active",
            || async move {
                let out = self.kubectl(
                    &[
                        "create",
                        "--dry-run=server",
                        "-o",
                        "json",
                        "-n",
                        ns,
                        "-f",
                        "-",
                    ],
                    Some(probe),
                )?;
                if !out.status.success() {
                    return Ok(false);
                }
                let pod: Value = serde_json::from_slice(&out.stdout)?;
                let mutated = pod["metadata"]["annotations"]
                    .get("gomemlimit.io/status")
                    .is_some();
                let warned = String::from_utf8_lossy(&out.stderr).contains("would set");
                Ok(if enforce { mutated } else { warned && !mutated })
            },
        )
        .await
    }

    /// Runs a program with the cluster's KUBECONFIG and `stdin`, capturing its output.
    pub(crate) fn run(&self, program: &Path, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        use std::io::Write;
        let mut child = Command::new(program)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to start {}", program.display()))?;
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes())?;
        }
        drop(pipe);
        Ok(child.wait_with_output()?)
    }

    /// Creates a namespace with labels and waits for its default ServiceAccount (the
    /// ServiceAccount admission plugin refuses pods until the controller made it).
    pub(crate) async fn namespace(&self, name: &str, labels: Value) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels}
        }))?;
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
        let sas = &sas;
        eventually(
            Duration::from_secs(60),
            "default ServiceAccount",
            || async move { Ok(sas.get_opt("default").await?.is_some()) },
        )
        .await
    }

    pub(crate) fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Creates a pod from JSON and returns the stored object as JSON.
    pub(crate) async fn create_pod(&self, ns: &str, pod: &Value) -> Result<Value> {
        let pod: Pod = serde_json::from_value(pod.clone())?;
        let created = self.pods(ns).create(&PostParams::default(), &pod).await?;
        Ok(serde_json::to_value(created)?)
    }
}

/// Polls `check` until it returns true, failing after `limit` with its last error.
pub(crate) async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what} (last error: {last:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `env[name]` of a container.
pub(crate) fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// The container `name` of a pod (JSON), or null.
pub(crate) fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

/// One scenario of a suite: an async function of the suite's environment.
pub(crate) type Scenario<E> =
    for<'a> fn(&'a mut E) -> Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

/// `[(name, Scenario)]` from scenario functions.
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), (|e| Box::pin($name(e))) as $crate::cluster::Scenario<_>)),*]
    };
}
pub(crate) use scenarios;

/// Runs the scenarios whose names contain one of `filter` (all when empty) in order, each
/// within `limit`, printing one line per scenario; returns (passed, failed).
pub(crate) async fn run_scenarios<E>(
    env: &mut E,
    all: &[(&str, Scenario<E>)],
    filter: &[String],
    limit: Duration,
) -> (usize, usize) {
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in all {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let t = Instant::now();
        let result = tokio::time::timeout(limit, scenario(env))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {limit:?}")));
        match result {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1}s)", t.elapsed().as_secs_f64());
            }
            Err(e) => {
                failed += 1;
                println!(
                    "test {name} ... FAILED ({:.1}s)\n  {e:#}",
                    t.elapsed().as_secs_f64()
                );
            }
        }
    }
    (passed, failed)
}
