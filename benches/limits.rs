//! `serve` as a process, measured against its bounds (`make bench-limits`): start-up and
//! idle memory, memory per large review, latency beside large reviews, and 2,000 slow or
//! idle connections. The binary is the one `cargo bench` builds (release settings); every
//! scenario starts a server of its own on loopback, so that each peak is its own.
//!
//! Memory is read from `/proc/PID/status`: `VmHWM` (peak resident) and `VmRSS`. The large
//! review is the 10,000-container pod of `tests/support/pods.rs` (1.9 MB).
//!
//! `BENCH_BIN=path` measures another build of the binary (say, of another commit);
//! `BENCH_SCENARIOS` picks some of `start,large,beside,connections`.
//!
//! A benchmark, not a test: under `cargo test` it does nothing.

#[path = "../tests/support/mod.rs"]
pub mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gomemlimit_injector::tls;

#[path = "limits/connections.rs"]
mod connections;

const BIN: &str = env!("CARGO_BIN_EXE_gomemlimit-injector");
const JSON: &str = "application/json";
/// Containers of the large review.
const CONTAINERS: usize = 10_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("limits: a benchmark (`make bench-limits`)");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pki = tls::generate(&["localhost".into(), "127.0.0.1".into()], 30).expect("a key pair");
    tls::write_pki(dir.path(), &pki, true).expect("the key pair written");
    let files = Tls::Files(dir.path().to_owned());
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    println!(
        "load average before: {}; {} CPUs",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let scenarios = std::env::var("BENCH_SCENARIOS")
        .unwrap_or_else(|_| "start,large,beside,connections".to_owned());
    let chosen = |name: &str| scenarios.split(',').any(|s| s.trim() == name);
    if chosen("start") {
        start_up(&files);
    }
    if chosen("large") {
        runtime.block_on(large_reviews(&files));
    }
    if chosen("beside") {
        runtime.block_on(beside_large_reviews(&files));
    }
    if chosen("connections") {
        runtime.block_on(connections::slow_and_idle(&files));
    }
    println!("load average after: {}", loadavg());
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Where the serving key pair comes from.
enum Tls {
    /// `--self-signed`: generated at start-up.
    SelfSigned,
    /// `--tls-cert-file`, `--tls-key-file` in this directory (with its `ca.crt`).
    Files(PathBuf),
}

/// `serve` as a child process on loopback ports of its own.
struct Serve {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// Starts `serve` and waits for `/readyz`; returns it and the time from exec to ready.
    fn start(tls: &Tls, extra: &[&str]) -> (Serve, Duration) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let addr: SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
        let metrics: SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
        let bin = std::env::var_os("BENCH_BIN").unwrap_or_else(|| BIN.into());
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .args(["--listen", &addr.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--shutdown-delay", "0s", "--log-level", "warn"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let ca = match tls {
            Tls::SelfSigned => {
                let ca = dir.path().join("ca.crt");
                command.arg("--self-signed").arg("--ca-out").arg(&ca);
                ca
            }
            Tls::Files(files) => {
                command.arg("--tls-cert-file").arg(files.join("tls.crt"));
                command.arg("--tls-key-file").arg(files.join("tls.key"));
                files.join("ca.crt")
            }
        };
        let started = Instant::now();
        let child = command.spawn().expect("serve starts");
        let serve = Serve {
            child,
            addr,
            metrics,
            ca,
            _dir: dir,
        };
        serve.wait_ready(started);
        (serve, started.elapsed())
    }

    fn wait_ready(&self, started: Instant) {
        while !ready(self.metrics) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "serve not ready"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// A field of `/proc/PID/status` in kB, e.g. `VmHWM` or `VmRSS`.
    fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the process status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in the process status"))
    }

    fn mib(&self, field: &str) -> f64 {
        self.status_kb(field) as f64 / 1024.0
    }

    /// Open file descriptors: the listeners, the connections and a few more.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| d.count())
    }

    /// An HTTPS client trusting the server's CA; HTTP/2 unless `http1`.
    fn client(&self, http1: bool) -> reqwest::Client {
        let ca = std::fs::read(&self.ca).expect("the CA certificate");
        let builder = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a CA"))
            .resolve("localhost", self.addr)
            .timeout(Duration::from_secs(60));
        let builder = if http1 { builder.http1_only() } else { builder };
        builder.build().expect("a client")
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /readyz` on the metrics listener answers 200.
fn ready(metrics: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&metrics, Duration::from_millis(100)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
}

/// Posts `body` to `/mutate`; the status, and how long until the whole answer arrived.
async fn post(client: &reqwest::Client, url: &str, body: bytes::Bytes) -> (u16, Duration) {
    let started = Instant::now();
    let response = client
        .post(url)
        .header("content-type", JSON)
        .body(body)
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    let _ = response.bytes().await.expect("a body");
    (status, started.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and largest of `samples`.
fn median_max(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

/// Time from exec to `/readyz` 200, with a generated and with a loaded key pair, and the
/// resident memory once idle.
fn start_up(files: &Tls) {
    const STARTS: usize = 10;
    println!("\n# start-up ({STARTS} starts each; exec to the first 200 on /readyz)");
    for (name, tls) in [("--self-signed", &Tls::SelfSigned), ("key files", files)] {
        let mut times: Vec<Duration> = (0..STARTS).map(|_| Serve::start(tls, &[]).1).collect();
        let (median, max) = median_max(&mut times);
        println!(
            "{name:<14} median {:.1} ms, max {:.1} ms",
            ms(median),
            ms(max)
        );
    }
    let (serve, _) = Serve::start(files, &[]);
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "idle: VmRSS {:.1} MiB (peak VmHWM {:.1} MiB)",
        serve.mib("VmRSS"),
        serve.mib("VmHWM")
    );
}

/// Peak memory for one large review, and for eight at once.
async fn large_reviews(tls: &Tls) {
    let body = bytes::Bytes::from(support::pods::many_containers_review(CONTAINERS));
    let size = body.len() as f64 / (1024.0 * 1024.0);
    println!("\n# large reviews: a {CONTAINERS}-container pod, {size:.2} MiB");
    let small = bytes::Bytes::from(support::fixture("pod-create-small.json"));

    let (serve, _) = Serve::start(tls, &[]);
    let client = serve.client(false);
    assert_eq!(
        post(&client, &serve.url("/mutate"), small.clone()).await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = serve.mib("VmHWM");
    let (status, took) = post(&client, &serve.url("/mutate"), body.clone()).await;
    assert_eq!(status, 200);
    let peak = serve.mib("VmHWM");
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "one: {:.0} ms; peak {before:.1} -> {peak:.1} MiB: +{:.1} MiB = {:.1} x the body; \
         1 s later VmRSS {:.1} MiB",
        ms(took),
        peak - before,
        (peak - before) / size,
        serve.mib("VmRSS")
    );
    drop(serve);

    let (serve, _) = Serve::start(tls, &[]);
    let client = serve.client(false);
    assert_eq!(post(&client, &serve.url("/mutate"), small).await.0, 200);
    let started = Instant::now();
    let url = serve.url("/mutate");
    let all = (0..8).map(|_| post(&client, &url, body.clone()));
    for (status, _) in futures::future::join_all(all).await {
        assert_eq!(status, 200);
    }
    let took = started.elapsed();
    let peak = serve.mib("VmHWM");
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "eight at once (one HTTP/2 connection): {:.0} ms; peak VmHWM {peak:.1} MiB; \
         1 s later VmRSS {:.1} MiB",
        ms(took),
        serve.mib("VmRSS")
    );
}

/// A small review and `/healthz` sent while four large reviews are under way, on the same
/// HTTP/2 connection, as the API server would.
async fn beside_large_reviews(tls: &Tls) {
    const ROUNDS: usize = 5;
    let body = bytes::Bytes::from(support::pods::many_containers_review(CONTAINERS));
    let small = bytes::Bytes::from(support::fixture("pod-create-small.json"));
    let (serve, _) = Serve::start(tls, &[]);
    let client = serve.client(false);
    let url = serve.url("/mutate");
    assert_eq!(post(&client, &url, small.clone()).await.0, 200);
    let (mut reviews, mut probes, mut large) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let four: Vec<_> = (0..4)
            .map(|_| tokio::spawn(post_owned(client.clone(), url.clone(), body.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (status, took) = post(&client, &url, small.clone()).await;
        assert_eq!(status, 200);
        reviews.push(took);
        let started = Instant::now();
        let health = client
            .get(serve.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(health.status(), 200);
        probes.push(started.elapsed());
        for handle in four {
            let (status, took) = handle.await.expect("a large review");
            assert_eq!(status, 200);
            large.push(took);
        }
    }
    println!(
        "\n# beside four {CONTAINERS}-container reviews ({ROUNDS} rounds, one HTTP/2 connection)"
    );
    for (name, samples) in [
        ("4 KB review", &mut reviews),
        ("GET /healthz", &mut probes),
        ("the large reviews", &mut large),
    ] {
        let (median, max) = median_max(samples);
        println!(
            "{name:<18} median {:.1} ms, max {:.1} ms",
            ms(median),
            ms(max)
        );
    }
}

async fn post_owned(client: reqwest::Client, url: String, body: bytes::Bytes) -> (u16, Duration) {
    post(&client, &url, body).await
}
