//! Evenly spaced load for `make bench-load` (hack/bench-load.sh): one request every
//! 1 / RATE seconds over CONNECTIONS keep-alive connections, one request at a time on each
//! (h2load's `-m 1`), from one thread. A timerfd fires every 1 / RATE seconds, to the
//! microsecond, and hands the turn to the next connection in order; a connection still
//! awaiting its last answer sends when that answer has come.
//!
//! Each answer is logged as h2load's `--log-file` logs it (start in microseconds since the
//! epoch, status, latency in microseconds), so that the script reads both alike, and then
//! the latency from the request's turn. The latency runs from the request being handed to
//! the connection to the last byte of the answer; from its turn, it also counts the wait of
//! a request for its turn to be taken (the thread busy, or its connection awaiting the
//! answer before). A summary line goes to standard output: requests and the rate reached.
//!
//!   cargo bench --bench paced -- --addr 127.0.0.1:8443 --ca ca.crt --rate 8000 \
//!     --duration 5 --settle-ms 500 --log out.log [--body pod.json] [--http1]
//!
//! Not a test: under `cargo test` it does nothing.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Request, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, timerfd_create, timerfd_settime,
};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Parser)]
#[command(about = "Evenly spaced requests over keep-alive TLS connections")]
struct Args {
    /// The server's address.
    #[arg(long)]
    addr: SocketAddr,
    /// The CA that signed the server's certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// The path requested: POST with --body, GET without.
    #[arg(long, default_value = "/mutate")]
    path: String,
    /// The body, sent as application/json.
    #[arg(long)]
    body: Option<PathBuf>,
    /// Requests per second, over all the connections.
    #[arg(long)]
    rate: u32,
    /// Keep-alive connections, one request at a time on each.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds measured, after the settling time.
    #[arg(long)]
    duration: u32,
    /// Milliseconds sent before the measured seconds, not logged.
    #[arg(long, default_value_t = 500)]
    settle_ms: u32,
    /// HTTP/1.1 instead of HTTP/2.
    #[arg(long)]
    http1: bool,
    /// Where the latencies go.
    #[arg(long)]
    log: PathBuf,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One answer: when its request was handed over (µs since the epoch), its status, its
/// latency and its latency from its turn (µs).
struct Answer {
    start: u128,
    status: u16,
    latency: u128,
    from_turn: u128,
}

/// A connection's way of sending a request.
enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("paced: a load generator for `make bench-load`");
        return;
    }
    let args = Args::parse();
    if args.rate == 0 || args.connections == 0 || args.duration == 0 {
        eprintln!("error: --rate, --connections and --duration must be positive");
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let local = tokio::task::LocalSet::new();
    if let Err(e) = local.block_on(&runtime, run(&args)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let body = args
        .body
        .as_ref()
        .map(|path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display())))
        .transpose()?
        .map(Bytes::from);
    let period = Duration::from_secs(1) / args.rate;
    let settle = Duration::from_millis(args.settle_ms.into());
    let total = (settle + Duration::from_secs(args.duration.into())).as_nanos() / period.as_nanos();
    let total = usize::try_from(total).map_err(|e| e.to_string())?;
    let connector = connector(args)?;
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        senders.push(connect(&connector, args).await?);
    }
    let answers = Rc::new(RefCell::new(Vec::with_capacity(total)));
    let (timer, started) = arm(period)?;
    let mut given = Vec::with_capacity(args.connections);
    let mut tasks = Vec::with_capacity(args.connections);
    for (i, sender) in senders.into_iter().enumerate() {
        let requester = Requester::new(args, body.clone());
        let turns = Turns {
            given: Rc::new(Semaphore::new(0)),
            started,
            first: i,
            connections: args.connections,
            period,
            count: total / args.connections + usize::from(i < total % args.connections),
        };
        given.push(Rc::clone(&turns.given));
        let answers = Rc::clone(&answers);
        tasks.push(tokio::task::spawn_local(connection(
            sender, requester, turns, answers,
        )));
    }
    pace(&timer, total, &given).await?;
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let answers = answers.take();
    write_log(&answers, args, settle)?;
    let count = answers.len();
    let rate = count as f64 / elapsed;
    println!("requests: {count} in {elapsed:.3} s, {rate:.0} req/s");
    Ok(())
}

/// A timer firing every `period` from now on, and when it was set.
fn arm(period: Duration) -> Result<(AsyncFd<OwnedFd>, Instant), String> {
    let timer = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )
    .map_err(|e| format!("timerfd_create: {e}"))?;
    let spec = rustix::time::Timespec {
        tv_sec: i64::try_from(period.as_secs()).map_err(|e| e.to_string())?,
        tv_nsec: i64::from(period.subsec_nanos()),
    };
    let spec = Itimerspec {
        it_interval: spec,
        it_value: spec,
    };
    let started = Instant::now();
    timerfd_settime(&timer, TimerfdTimerFlags::empty(), &spec)
        .map_err(|e| format!("timerfd_settime: {e}"))?;
    // `new` is deprecated for descriptors the value does not own; an `OwnedFd` owns its.
    #[allow(deprecated)]
    let timer = AsyncFd::new(timer).map_err(|e| e.to_string())?;
    Ok((timer, started))
}

/// Gives the connections their turns, in order: the first at once, the others as `timer`
/// fires, `total` in all.
async fn pace(
    timer: &AsyncFd<OwnedFd>,
    total: usize,
    turns: &[Rc<Semaphore>],
) -> Result<(), String> {
    turns[0].add_permits(1);
    let mut given = 1;
    while given < total {
        let mut ready = timer.readable().await.map_err(|e| e.to_string())?;
        let mut expirations = [0u8; 8];
        match rustix::io::read(ready.get_inner(), &mut expirations) {
            Ok(8) => {
                for _ in 0..u64::from_ne_bytes(expirations) {
                    if given == total {
                        break;
                    }
                    turns[given % turns.len()].add_permits(1);
                    given += 1;
                }
            }
            Ok(n) => return Err(format!("timerfd read {n} bytes")),
            Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
            Err(e) => return Err(format!("timerfd read: {e}")),
        }
    }
    Ok(())
}

/// Makes each request of a connection.
struct Requester {
    uri: String,
    host: String,
    path: String,
    body: Option<Bytes>,
}

impl Requester {
    fn new(args: &Args, body: Option<Bytes>) -> Self {
        Requester {
            uri: format!("https://{}{}", args.addr, args.path),
            host: args.addr.to_string(),
            path: args.path.clone(),
            body,
        }
    }

    fn request(&self, http1: bool) -> Request<Full<Bytes>> {
        let builder = if http1 {
            Request::builder()
                .uri(&self.path)
                .header(header::HOST, &self.host)
        } else {
            Request::builder().uri(&self.uri)
        };
        match &self.body {
            Some(body) => builder
                .method("POST")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone())),
            None => builder.method("GET").body(Full::new(Bytes::new())),
        }
        .expect("a valid request")
    }
}

/// A connection's turns, given through `given`: `count` of them, the k-th at
/// `started + (first + k * connections) * period`.
struct Turns {
    given: Rc<Semaphore>,
    started: Instant,
    first: usize,
    connections: usize,
    period: Duration,
    count: usize,
}

impl Turns {
    /// Waits for the next turn.
    async fn take(&self) -> Result<(), String> {
        let permit = self.given.acquire().await.map_err(|e| e.to_string())?;
        permit.forget();
        Ok(())
    }

    fn at(&self, k: usize) -> Instant {
        let index = u32::try_from(self.first + k * self.connections).unwrap_or(u32::MAX);
        self.started + self.period * index
    }
}

/// Sends a request on each turn, one at a time, as h2load's `-m 1` does: a turn that comes
/// while the last answer is awaited waits for it (the latency from the turn counts the
/// wait).
async fn connection(
    mut sender: Sender,
    requester: Requester,
    turns: Turns,
    answers: Rc<RefCell<Vec<Answer>>>,
) -> Result<(), String> {
    for k in 0..turns.count {
        turns.take().await?;
        let started = (SystemTime::now(), Instant::now());
        let answer = match &mut sender {
            Sender::Http1(s) => s.send_request(requester.request(true)).await,
            Sender::Http2(s) => s.send_request(requester.request(false)).await,
        };
        record(answer, started, turns.at(k), &requester.path, &answers).await?;
    }
    Ok(())
}

/// Reads whole the answer to a request sent at `started` (wall clock, monotonic clock) on
/// its `turn`, and records it.
async fn record(
    answer: hyper::Result<hyper::Response<hyper::body::Incoming>>,
    (wall, start): (SystemTime, Instant),
    turn: Instant,
    path: &str,
    answers: &RefCell<Vec<Answer>>,
) -> Result<(), String> {
    let response = answer.map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    if !response.status().is_success() {
        return Err(format!("{path} answered {status}"));
    }
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("answer: {e}"))?;
    let end = Instant::now();
    answers.borrow_mut().push(Answer {
        start: wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros(),
        status,
        latency: (end - start).as_micros(),
        from_turn: end.saturating_duration_since(turn).as_micros(),
    });
    Ok(())
}

/// TLS with the server's CA; TLS_AES_128_GCM_SHA256 offered first, as Go's clients (the
/// API server) and h2load offer it.
fn connector(args: &Args) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca)
        .map_err(|e| format!("{}: {e}", args.ca.display()))?
    {
        let cert = cert.map_err(|e| format!("{}: {e}", args.ca.display()))?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![if args.http1 {
        b"http/1.1".to_vec()
    } else {
        b"h2".to_vec()
    }];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn connect(connector: &tokio_rustls::TlsConnector, args: &Args) -> Result<Sender, String> {
    let tcp = TcpStream::connect(args.addr)
        .await
        .map_err(|e| format!("{}: {e}", args.addr))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::IpAddress(args.addr.ip().into());
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let io = TokioIo::new(tls);
    if args.http1 {
        let (sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::task::spawn_local(conn);
        Ok(Sender::Http1(sender))
    } else {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::task::spawn_local(conn);
        Ok(Sender::Http2(sender))
    }
}

/// The answers after the first `settle`, in order of their start.
fn write_log(answers: &[Answer], args: &Args, settle: Duration) -> Result<(), String> {
    let first = answers.iter().map(|a| a.start).min().unwrap_or(0);
    let from = first + settle.as_micros();
    let mut kept: Vec<&Answer> = answers.iter().filter(|a| a.start >= from).collect();
    kept.sort_by_key(|a| a.start);
    let mut text = String::with_capacity(kept.len() * 32);
    for a in kept {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\n",
            a.start, a.status, a.latency, a.from_turn
        ));
    }
    std::fs::write(&args.log, text).map_err(|e| format!("{}: {e}", args.log.display()))
}
