//! `serve` as a process: what it writes to its log, and what it does on each signal.

pub mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::free_port;
use support::review::{patch_of, pod_review, response_of};

const BIN: &str = env!("CARGO_BIN_EXE_gomemlimit-injector");

/// `serve --self-signed` with text logs written to a file.
struct Serve {
    child: Child,
    port: u16,
    metrics_port: u16,
    dir: tempfile::TempDir,
}

impl Serve {
    fn start(extra: &[&str]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--self-signed")
            .arg("--ca-out")
            .arg(dir.path().join("ca.crt"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--shutdown-delay", "0s"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let serve = Serve {
            child,
            port,
            metrics_port,
            dir,
        };
        serve.wait_until(Duration::from_secs(20), "ready", |s| {
            s.get_metrics("/readyz")
                .is_some_and(|(code, _)| code == 200)
        });
        serve
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap()
    }

    /// A plain-HTTP GET on the metrics listener: status and body.
    fn get_metrics(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.metrics_port);
        let response = reqwest::blocking::get(url).ok()?;
        Some((response.status().as_u16(), response.text().ok()?))
    }

    fn client(&self) -> reqwest::blocking::Client {
        let ca = std::fs::read(self.path("ca.crt")).unwrap();
        reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap()
    }

    fn post(&self, path: &str, body: Vec<u8>) -> reqwest::blocking::Response {
        self.client()
            .post(format!("https://localhost:{}{path}", self.port))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_until(&self, limit: Duration, what: &str, mut done: impl FnMut(&Serve) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> (Option<i32>, String) {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        (status.code(), self.log())
    }
}

#[test]
fn values_from_a_request_cannot_forge_or_flood_log_lines() {
    let serve = Serve::start(&[]);
    let forged = "evil-\n2026-11-27T10:00:00.000000Z  INFO gomemlimit_injector::server: review outcome=denied \u{1b}[2J";
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": forged, "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "x",
                 "resources": {"limits": {"memory": "64Mi"}}}]}
    });
    // A uid of almost 8 MiB, under the body limit.
    let uid = "u".repeat(7_900_000);
    let body = serde_json::to_vec(&pod_review(&uid, &pod)).unwrap();
    assert_eq!(serve.post("/mutate", body).status(), 200);
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0));

    assert!(
        !log.contains('\u{1b}'),
        "an escape sequence reached the log"
    );
    let reviews: Vec<&str> = log.lines().filter(|l| l.contains(" review ")).collect();
    assert_eq!(reviews.len(), 1, "{log}");
    let line = reviews[0];
    assert!(
        line.contains("pod=evil-\\u{a}2026-11-27T10:00:00.000000Z\\u{20}\\u{20}INFO"),
        "{line}"
    );
    assert!(line.contains("outcome=\"mutated\""), "{line}");
    assert!(
        line.contains("uid=uuuu") && line.contains("...(7900000 bytes)"),
        "{line}"
    );
    assert!(line.len() < 2048, "a {} byte log line", line.len());
}

fn policy_file(dir: &Path, percent: u8) -> PathBuf {
    let path = dir.join("policy.yaml");
    std::fs::write(&path, format!("percent: {percent}\n")).unwrap();
    path
}

#[test]
fn sighup_rereads_the_policy_at_once_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy_file(dir.path(), 90);
    // Without SIGHUP the file would only be noticed after an hour.
    let serve = Serve::start(&[
        "--config",
        policy.to_str().unwrap(),
        "--tls-reload-interval",
        "1h",
    ]);
    let literal = |serve: &Serve| {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "x",
                     "resources": {"limits": {"memory": "100Mi"}}}]}
        });
        let body = serde_json::to_vec(&pod_review("u", &pod)).unwrap();
        let reply = serve.post("/mutate", body).bytes().unwrap();
        let patch = patch_of(&response_of(&reply)).expect("a patch");
        serde_json::to_string(&patch)
            .unwrap()
            .contains(&format!("\"{}\"", (100u64 << 20) * 80 / 100))
    };
    assert!(!literal(&serve));
    policy_file(dir.path(), 80);
    serve.signal("HUP");
    serve.wait_until(Duration::from_secs(10), "the new policy", literal);
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("SIGHUP"), "{log}");
}
