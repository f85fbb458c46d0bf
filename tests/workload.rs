//! The premise, measured: a Go service (workloads/alloc) under a real memory cgroup is
//! OOM-killed with the runtime's defaults, and survives with the environment the webhook
//! gives it. The environment comes from `gomemlimit-injector mutate` on a pod with the
//! same limit, so the proof covers the product's own output.
//!
//! Needs root, a memory cgroup (v1 or v2) and Go. Under `CI=true` a missing piece fails
//! the test; elsewhere it is skipped with a message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_gomemlimit-injector");
/// The container's memory limit.
const LIMIT: &str = "64Mi";
const LIMIT_BYTES: u64 = 64 << 20;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips outside CI, fails in CI.
fn missing(what: &str) {
    assert!(!ci(), "the workload test needs {what}");
    println!("skipping the cgroup workload test: it needs {what}");
}

/// A memory cgroup of its own, removed on drop.
struct Cgroup {
    dir: PathBuf,
    v2: bool,
}

impl Cgroup {
    fn create(name: &str, limit: u64) -> std::io::Result<Cgroup> {
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (dir, v2) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(name), false)
        } else {
            (Path::new("/sys/fs/cgroup").join(name), true)
        };
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir)?;
        let cgroup = Cgroup { dir, v2 };
        if v2 {
            std::fs::write(cgroup.dir.join("memory.max"), limit.to_string())?;
            let _ = std::fs::write(cgroup.dir.join("memory.swap.max"), "0");
        } else {
            std::fs::write(cgroup.dir.join("memory.limit_in_bytes"), limit.to_string())?;
            let _ = std::fs::write(cgroup.dir.join("memory.swappiness"), "0");
        }
        Ok(cgroup)
    }

    /// Peak usage (v1) or current usage after the run (v2, where the peak may be absent).
    fn peak(&self) -> u64 {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Runs `program` inside the cgroup with exactly `env` and its default load (the
    /// experiment's: a 40 MiB live set, 256 MiB allocated at 128 MiB/s); returns (exit
    /// code, stdout).
    fn run(&self, program: &Path, env: &[(String, String)]) -> (Option<i32>, String) {
        let procs = self.dir.join("cgroup.procs");
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}' && exec '{}'",
                procs.display(),
                program.display()
            ))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .expect("sh runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The GOMEMLIMIT and GOGC the webhook gives a container with a 64Mi limit, resolved as
/// the kubelet resolves a `resourceFieldRef` (the limit in bytes, divisor 1).
fn webhook_env(percent: &str) -> Vec<(String, String)> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "svc"},
        "spec": {"containers": [{"name": "svc", "image": "svc:1",
            "resources": {"limits": {"memory": LIMIT}}}]}
    });
    let mut child = Command::new(BIN)
        .args(["mutate", "--percent", percent, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(pod.to_string().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let mutated: Value = serde_json::from_slice(&out.stdout).unwrap();
    mutated["spec"]["containers"][0]["env"]
        .as_array()
        .expect("the webhook added env")
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = match e["value"].as_str() {
                Some(v) => v.to_owned(),
                None => {
                    assert_eq!(
                        e["valueFrom"]["resourceFieldRef"]["resource"],
                        "limits.memory"
                    );
                    LIMIT_BYTES.to_string()
                }
            };
            (name, value)
        })
        .collect()
}

fn build_workload() -> Option<PathBuf> {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("workload");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/alloc"))
        .env("GOWORK", "off")
        .status()
        .ok()?;
    status.success().then_some(out)
}

/// The workload binary, once root, Go and a memory cgroup are known to be there; `None`
/// (after saying what is missing) otherwise.
fn prerequisites(id: u32) -> Option<PathBuf> {
    if Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout != b"0\n")
        .unwrap_or(true)
    {
        missing("root");
        return None;
    }
    let Some(workload) = build_workload() else {
        missing("Go to build workloads/alloc");
        return None;
    };
    if let Err(e) = Cgroup::create(&format!("gomemlimit-probe-{id}"), LIMIT_BYTES) {
        missing(&format!("a memory cgroup ({e})"));
        return None;
    }
    Some(workload)
}

/// What every run gets besides the webhook's environment.
fn base_env() -> [(String, String); 1] {
    [("PATH".to_owned(), "/usr/bin:/bin".to_owned())]
}

/// Runs the workload twice under the limit with `env`, the webhook's environment at
/// `label`; each run must finish, with `limit` as the Go runtime's memory limit.
fn survives(workload: &Path, id: u32, label: &str, env: &[(String, String)], limit: u64) {
    for run in 0..2 {
        let cgroup = Cgroup::create(&format!("gomemlimit-{id}-{run}"), LIMIT_BYTES).unwrap();
        let mut env = env.to_vec();
        env.extend(base_env());
        let (code, stdout) = cgroup.run(workload, &env);
        let peak = cgroup.peak();
        println!(
            "GOMEMLIMIT {label}: exit {code:?}, peak {peak} bytes, {}",
            stdout.trim()
        );
        assert_eq!(
            code,
            Some(0),
            "run {run} at {label} with the webhook's environment was killed"
        );
        let report: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(report["memoryLimit"], limit);
        assert_eq!(report["gcPercent"], -1, "GOGC=off");
    }
}

#[test]
fn the_webhook_environment_keeps_a_go_service_alive_under_its_cgroup_limit() {
    let id = std::process::id();
    let Some(workload) = prerequisites(id) else {
        return;
    };
    // The runtime's defaults: GOGC=100 lets the heap grow to twice the live set.
    let cgroup = Cgroup::create(&format!("gomemlimit-default-{id}"), LIMIT_BYTES).unwrap();
    let (code, _) = cgroup.run(&workload, &base_env());
    println!(
        "defaults: exit {code:?}, peak {} of {LIMIT_BYTES} bytes",
        cgroup.peak()
    );
    assert_eq!(
        code, None,
        "with the defaults the workload should be OOM-killed (signal)"
    );
    drop(cgroup);

    // What the webhook injects, at 100% (the downward API, resolved as the kubelet does)
    // and at 90% (a literal): every run must finish inside the limit.
    let env100 = webhook_env("100");
    assert_eq!(
        env100,
        [
            ("GOMEMLIMIT".to_owned(), LIMIT_BYTES.to_string()),
            ("GOGC".to_owned(), "off".to_owned())
        ]
    );
    let env90 = webhook_env("90");
    assert_eq!(
        env90[0],
        (
            "GOMEMLIMIT".to_owned(),
            (LIMIT_BYTES * 90 / 100).to_string()
        )
    );
    survives(&workload, id, "100%", &env100, LIMIT_BYTES);
    survives(&workload, id, "90%", &env90, LIMIT_BYTES * 90 / 100);
}
