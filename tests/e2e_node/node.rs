//! The node's life cycle (outside its network namespace) and the environment the scenarios
//! get (inside it): the cluster, helm, and the chart's names.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::cluster::{Cluster, ROOT, kubernetes_bin, sh};

/// The release, as a user installs it: `helm install gomemlimit-injector … -n gomemlimit-system`.
pub(crate) const RELEASE: &str = "gomemlimit-injector";
pub(crate) const RELEASE_NAMESPACE: &str = "gomemlimit-system";
/// The image the chart's default values name, imported under that reference.
pub(crate) const WEBHOOK_IMAGE: &str = "ghcr.io/gomemlimit/gomemlimit-injector:0.1.0";
/// The Go workload (`workloads/alloc`).
pub(crate) const ALLOC_IMAGE: &str = "localhost/gomemlimit-e2e/alloc:1";
/// How long `cluster/node.sh start` and `stop` may take before they count as hung.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(300);

/// What the suite needs from the machine, found before anything starts.
pub(crate) struct Needs {
    bin: PathBuf,
    images: PathBuf,
}

impl Needs {
    /// Root, the Kubernetes binaries, helm, and the three image archives.
    pub(crate) fn find() -> Result<Needs> {
        let uid = sh(Command::new("id").arg("-u"))?;
        ensure!(
            String::from_utf8_lossy(&uid.stdout).trim() == "0",
            "the node suite needs root (kubelet, containerd, network namespaces)"
        );
        let bin = kubernetes_bin()?
            .filter(|b| b.join("kubelet").exists() && b.join("kube-scheduler").exists())
            .context("Kubernetes binaries not found; run `make e2e-node`")?;
        ensure!(
            helm_path().exists(),
            "helm not found at {}; run `make e2e-node`",
            helm_path().display()
        );
        let images = images_dir();
        for name in ["gomemlimit-injector", "alloc", "pause"] {
            let tar = images.join(format!("{name}.tar"));
            ensure!(
                tar.exists(),
                "image archive {} not found; run `make e2e-node`",
                tar.display()
            );
        }
        Ok(Needs { bin, images })
    }
}

fn images_dir() -> PathBuf {
    std::env::var_os("IMAGES_DIR")
        .map_or_else(|| Path::new(ROOT).join(".cache/images"), PathBuf::from)
}

fn helm_path() -> PathBuf {
    let out = Command::new(Path::new(ROOT).join("hack/build-helm.sh"))
        .arg("--print-path")
        .output();
    out.ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_default()
}

/// Runs a `cluster/node.sh` command, killing it when it outlives `SCRIPT_DEADLINE`; returns
/// its stdout.
fn node_script(args: &[&str], envs: &[(&str, String)]) -> Result<String> {
    let mut child = Command::new(Path::new(ROOT).join("cluster/node.sh"))
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own process group, so that a timeout kills what it started in the foreground.
        .process_group(0)
        .spawn()
        .context("failed to run cluster/node.sh")?;
    let status = wait_deadline(&mut child, SCRIPT_DEADLINE)?;
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("stdout"), &mut stdout)?;
    match status {
        Some(s) if s.success() => Ok(stdout),
        Some(s) => bail!("cluster/node.sh {} failed: {s}", args[0]),
        None => bail!(
            "cluster/node.sh {} did not finish within {SCRIPT_DEADLINE:?}; killed",
            args[0]
        ),
    }
}

/// Waits for `child` until `limit`; kills its process group when it is late (None).
fn wait_deadline(
    child: &mut std::process::Child,
    limit: Duration,
) -> Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts the node and imports the webhook and workload images; returns its directory.
/// A watchdog stops the node if this process dies first.
pub(crate) fn start(needs: &Needs) -> Result<PathBuf> {
    let started = Instant::now();
    let stdout = node_script(
        &["start"],
        &[
            ("CONTROLPLANE_BIN", needs.bin.display().to_string()),
            (
                "NODE_PAUSE_IMAGE",
                needs.images.join("pause.tar").display().to_string(),
            ),
            ("NODE_OWNER_PID", std::process::id().to_string()),
        ],
    )?;
    let dir = PathBuf::from(stdout.lines().last().context("no DIR printed")?.trim());
    let images = ["gomemlimit-injector", "alloc"]
        .map(|n| needs.images.join(format!("{n}.tar")).display().to_string());
    let mut args = vec!["import", dir.to_str().context("DIR")?];
    args.extend(images.iter().map(String::as_str));
    node_script(&args, &[])?;
    println!(
        "node up in {:.1}s at {} (images imported)",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(dir)
}

/// Runs this test binary again inside the node's network namespace; false when it failed
/// or outlived `limit` (then it is killed).
pub(crate) fn run_inside(dir: &Path, filter: &[String], limit: Duration) -> bool {
    let netns = match std::fs::read_to_string(dir.join("env")) {
        Ok(env) => env
            .lines()
            .find_map(|l| l.strip_prefix("export NODE_NETNS_PATH="))
            .map(str::to_owned),
        Err(_) => None,
    };
    let Some(netns) = netns else {
        eprintln!("error: no NODE_NETNS_PATH in {}/env", dir.display());
        return false;
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("error: {e}");
            return false;
        }
    };
    let child = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg("--")
        .arg(exe)
        .arg("--in-node")
        // With the trailing slash, `node.sh stop` (run by the watchdog if this process
        // dies) finds the child by its command line and stops it too.
        .arg(format!("{}/", dir.display()))
        .args(filter)
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            eprintln!("error: failed to run nsenter: {e}");
            return false;
        }
    };
    match wait_deadline(&mut child, limit) {
        Ok(Some(status)) => status.success(),
        Ok(None) => {
            eprintln!("error: the node suite did not finish within {limit:?}; killed");
            false
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

/// The kernel settings the kubelet writes at start, which `stop` restores.
const SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Other nodes running on this machine (`cluster/node.sh` keeps an entry per node there):
/// the last node to stop restores the kernel settings, so they can only be checked when
/// this suite's node ran alone.
fn other_nodes() -> usize {
    std::fs::read_dir("/run/gomemlimit-nodes")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gmi-"))
        .count()
}

/// The kernel settings before the node starts, when no other node runs (else None).
pub(crate) fn sysctls_alone() -> Option<Vec<String>> {
    (other_nodes() == 0).then(sysctls)
}

/// The values of `SYSCTLS` now.
fn sysctls() -> Vec<String> {
    SYSCTLS
        .iter()
        .map(|s| {
            std::fs::read_to_string(Path::new("/proc/sys").join(s))
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect()
}

/// Entries of a directory (none when it does not exist).
fn entries(dir: &str) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .collect()
}

/// What a stopped node left on the machine: processes and mounts naming its directory,
/// its cgroups, its network namespace, the kubelet's log links into it, its CNI results.
fn leftovers(dir: &Path, netns: &str, cgroup_root: &str) -> Result<Vec<String>> {
    let marker = format!("{}/", dir.display());
    let mut left = Vec::new();
    for entry in entries("/proc") {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&marker) {
            let pid = entry.file_name();
            left.push(format!("process {}: {cmdline}", pid.to_string_lossy()));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mounts = mounts.lines().filter(|l| l.contains(&marker));
    left.extend(mounts.map(|l| format!("mount {l}")));
    for hierarchy in entries("/sys/fs/cgroup") {
        let path = hierarchy.path().join(cgroup_root.trim_start_matches('/'));
        if !cgroup_root.is_empty() && path.exists() {
            left.push(format!("cgroup {}", path.display()));
        }
    }
    if !netns.is_empty() && Path::new("/run/netns").join(netns).exists() {
        left.push(format!("network namespace {netns}"));
    }
    for link in entries("/var/log/containers") {
        if std::fs::read_link(link.path()).is_ok_and(|t| t.starts_with(dir)) {
            left.push(format!("log link {}", link.path().display()));
        }
    }
    let network = format!("gomemlimit-{}-", netns.trim_start_matches("gmi-"));
    for result in entries("/var/lib/cni/results") {
        if result.file_name().to_string_lossy().starts_with(&network) {
            left.push(format!("CNI result {}", result.path().display()));
        }
    }
    Ok(left)
}

/// Stops the node (keeping its directory, with the logs, after a failure), then checks
/// that nothing of it is left on the machine, and the kernel settings as they were before
/// `start` when it ran alone.
pub(crate) fn stop(dir: &Path, keep: bool, sysctls_before: Option<&[String]>) -> Result<()> {
    let env = std::fs::read_to_string(dir.join("env")).unwrap_or_default();
    let var = |key: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {key}=")))
            .unwrap_or_default()
            .to_owned()
    };
    let envs = if keep {
        println!("logs kept in {}", dir.display());
        vec![("KEEP_DIR", "1".to_owned())]
    } else {
        vec![]
    };
    node_script(&["stop", &dir.display().to_string()], &envs)?;

    let mut left = leftovers(dir, &var("NODE_NETNS"), &var("NODE_CGROUP_ROOT"))?;
    let restored = match sysctls_before.filter(|_| other_nodes() == 0) {
        Some(before) => {
            for ((name, before), after) in SYSCTLS.iter().zip(before).zip(&sysctls()) {
                if before != after {
                    left.push(format!("sysctl {name} = {after}, was {before}"));
                }
            }
            "kernel settings restored"
        }
        None => "kernel settings left to the last of the nodes that ran beside it",
    };
    ensure!(
        left.is_empty(),
        "the node left behind:\n  {}",
        left.join("\n  ")
    );
    println!("node stopped: no process, mount, cgroup, namespace or file left; {restored}");
    Ok(())
}

/// What the scenarios work with, inside the node's network namespace.
pub(crate) struct NodeEnv {
    pub(crate) cluster: Cluster,
    pub(crate) helm: PathBuf,
    /// `KEY=value` lines of the node's env file.
    pub(crate) vars: Vec<(String, String)>,
}

impl std::ops::Deref for NodeEnv {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl NodeEnv {
    pub(crate) async fn connect(dir: PathBuf) -> Result<NodeEnv> {
        let env = std::fs::read_to_string(dir.join("env"))
            .with_context(|| format!("failed to read {}/env", dir.display()))?;
        let vars: Vec<(String, String)> = env
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let bin = vars
            .iter()
            .find(|(k, _)| k == "CONTROLPLANE_BIN")
            .map(|(_, v)| PathBuf::from(v))
            .context("no CONTROLPLANE_BIN in env")?;
        Ok(NodeEnv {
            cluster: Cluster::connect(dir, &bin).await?,
            helm: helm_path(),
            vars,
        })
    }

    pub(crate) fn var(&self, key: &str) -> &str {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Runs helm against the cluster; fails with its stderr when it does.
    pub(crate) fn helm(&self, args: &[&str]) -> Result<String> {
        let out = self.run(&self.helm, args, None)?;
        ensure!(
            out.status.success(),
            "helm {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl get … -o json` of one object.
    pub(crate) fn get_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.kubectl(&all, None)?;
        ensure!(
            out.status.success(),
            "kubectl get {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The container log of a pod.
    pub(crate) fn logs(&self, ns: &str, pod: &str) -> Result<String> {
        let out = self.kubectl(&["logs", "-n", ns, pod], None)?;
        ensure!(
            out.status.success(),
            "kubectl logs {ns}/{pod} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
