//! The webhook server: HTTPS for AdmissionReviews, plain HTTP for metrics and probes.
//!
//! The accept loop is our own (tokio listener → TLS handshake with a deadline → hyper
//! HTTP/1.1 or HTTP/2 chosen by ALPN) so that every phase of a connection is bounded and a
//! shutdown can drain connections one by one:
//!
//! - TLS handshake: `--header-read-timeout`.
//! - HTTP/1.1 request head: `--header-read-timeout` (hyper). hyper starts that clock as
//!   soon as it waits for a head, so it also closes idle keep-alive connections.
//! - HTTP/2: the first request must start within `--header-read-timeout`, and a
//!   connection with no request in flight is closed after [`HTTP2_IDLE_TIMEOUT`];
//!   keep-alive pings drop dead peers.
//! - Request body and answer: `--request-timeout` (HTTP 408), bodies over 8 MiB get 413.
//!
//! Shutdown (kubert style): readiness turns 503, the listener closes, every connection gets
//! a graceful shutdown (idle keep-alive connections close, in-flight reviews finish), and
//! what is left at `--shutdown-timeout` is dropped. A second signal aborts at once.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, error, info, warn};

use crate::admission::{self, Endpoint, MAX_BODY_BYTES, Outcome, ReviewReport, text_reply};
use crate::error::error_chain;
use crate::metrics::{self, Metrics};
use crate::policy::{Policy, PolicyError, PolicySource};
use crate::tls::{
    self, CertStore, CertificateSource, SecretError, SourceError, TlsError, TlsSource,
};
use crate::watch::{LastSeen, Reload};

/// An HTTP/2 connection with no request in flight for this long is closed (GOAWAY). The API
/// server reuses connections well within it, and reconnects cheaply when it does not.
pub const HTTP2_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How often HTTP/2 connections are pinged, and how long an answer may take, so that
/// connections to vanished peers do not linger.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Metrics and probe connections are local and short; they get this long to finish once
/// the webhook has drained.
const METRICS_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Back-off after a failed `accept` (for instance, out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Errors of the server. Start-up errors name the file, flag or address at fault.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to load the serving certificate")]
    Tls(#[source] TlsError),
    #[error("failed to load the policy")]
    Policy(#[source] PolicyError),
    #[error("failed to bind the {what} listener on {addr}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the local address of the {what} listener")]
    LocalAddr {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to install the signal handlers")]
    Signal(#[source] std::io::Error),
    #[error("failed to shut down gracefully: aborted by a second signal")]
    Aborted,
    #[error("failed to set up the self-managed certificate")]
    Secret(#[source] SecretError),
}

impl From<SourceError> for ServerError {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::Tls(e) => ServerError::Tls(e),
            SourceError::Secret(e) => ServerError::Secret(e),
        }
    }
}

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// HTTPS listener for AdmissionReviews.
    pub listen: SocketAddr,
    /// Plain HTTP listener for `/metrics`, `/healthz` and `/readyz`.
    pub metrics_listen: SocketAddr,
    /// The serving key pair.
    pub tls: TlsSource,
    /// Policy flags and file; the file is watched for changes.
    pub policy: PolicySource,
    /// How often the certificate and policy files are checked for changes.
    pub reload_interval: Duration,
    /// Deadline for the TLS handshake and for an HTTP/1.1 request head.
    pub header_read_timeout: Duration,
    /// Deadline for reading a request body and answering.
    pub request_timeout: Duration,
    /// How long a shutdown waits for in-flight reviews.
    pub shutdown_timeout: Duration,
    /// How long, after the signal, the server keeps accepting while `/readyz` says 503, so
    /// that endpoints drop it before it stops listening.
    pub shutdown_delay: Duration,
}

/// State shared by the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    policy: ArcSwap<Policy>,
    metrics: Metrics,
    ready: AtomicBool,
    request_timeout: Duration,
}

impl AppState {
    /// State serving `policy`. It starts not ready; [`Server::run`] marks it ready once the
    /// listeners are up, and not ready again when a shutdown starts.
    pub fn new(policy: Policy, metrics: Metrics, request_timeout: Duration) -> Self {
        AppState {
            shared: Arc::new(Shared {
                policy: ArcSwap::from_pointee(policy),
                metrics,
                ready: AtomicBool::new(false),
                request_timeout,
            }),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.shared.policy.load_full()
    }

    /// Replaces the policy for the next reviews; reviews under way keep the old one.
    pub fn set_policy(&self, policy: Policy) {
        self.shared.policy.store(Arc::new(policy));
    }

    /// Sets what `/readyz` answers.
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }

    /// The metrics reviews are counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }
}

/// The webhook routes: `POST /mutate`, `POST /audit`, `GET /healthz`, `GET /readyz`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/audit", post(audit))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The plain-HTTP routes: `GET /metrics`, `GET /healthz`, `GET /readyz`.
pub fn metrics_router(state: AppState, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(MetricsState { state, registry })
}

#[derive(Clone)]
struct MetricsState {
    state: AppState,
    registry: Arc<Registry>,
}

impl axum::extract::FromRef<MetricsState> for AppState {
    fn from_ref(input: &MetricsState) -> Self {
        input.state.clone()
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn scrape(State(metrics_state): State<MetricsState>) -> Response {
    match metrics::encode(&metrics_state.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}\n", error_chain(&e)),
        )
            .into_response(),
    }
}

async fn mutate(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    review(state, Endpoint::Mutate, headers, body).await
}

async fn audit(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    review(state, Endpoint::Audit, headers, body).await
}

/// Why a body could not be read.
enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads at most [`MAX_BODY_BYTES`]: a declared `Content-Length` over the limit is refused
/// before any of the body is read, and a chunked body is cut off as soon as it passes it.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

/// `2s` or `1500ms`, for messages.
fn human(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

fn failed_report(message: String) -> ReviewReport {
    ReviewReport {
        outcome: Some(Outcome::Error),
        message: Some(message),
        ..ReviewReport::default()
    }
}

/// One structured line per review, at `$level`.
macro_rules! review_event {
    ($level:ident, $report:expr, $path:expr, $outcome:expr, $elapsed:expr, $status:expr, $($extra:tt)*) => {
        tracing::$level!(
            uid = %$report.uid,
            namespace = %$report.namespace,
            pod = %$report.pod,
            operation = %$report.operation,
            dry_run = $report.dry_run,
            path = $path,
            outcome = $outcome,
            // Microsecond precision; more digits are noise.
            duration_ms = $elapsed.as_micros() as f64 / 1000.0,
            status = $status.as_u16(),
            $($extra)*
        )
    };
}

async fn review(state: AppState, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let timeout = state.shared.request_timeout;
    // The review itself is synchronous and takes microseconds; only the upload can be
    // slow, so the request deadline is enforced around reading the body.
    let (reply, report) = match tokio::time::timeout(timeout, read_body(&headers, body)).await {
        Ok(Ok(bytes)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap_or("(not text)"));
            admission::handle(endpoint, content_type, &bytes, &state.policy())
        }
        Ok(Err(BodyError::TooLarge)) => {
            let reason = format!("request body exceeds the limit of {MAX_BODY_BYTES} bytes");
            (
                text_reply(StatusCode::PAYLOAD_TOO_LARGE, &reason),
                failed_report(reason),
            )
        }
        Ok(Err(BodyError::Read(e))) => {
            let reason = format!("failed to read the request body: {e}");
            (
                text_reply(StatusCode::BAD_REQUEST, &reason),
                failed_report(reason),
            )
        }
        Err(_elapsed) => {
            let reason = format!(
                "request timed out: the body was not received within {}",
                human(timeout)
            );
            (
                text_reply(StatusCode::REQUEST_TIMEOUT, &reason),
                failed_report(reason),
            )
        }
    };
    let elapsed = started.elapsed();
    let path = endpoint.as_str();
    // Every 4xx (bad request, 408, 413) is an error, whatever the handler decided.
    let outcome = match report.outcome {
        _ if reply.status.is_client_error() => Outcome::Error,
        Some(outcome) => outcome,
        None => Outcome::Error,
    };
    state
        .metrics()
        .record_review(endpoint, outcome, elapsed, &report.events);
    let outcome = outcome.as_str();
    match &report.message {
        Some(reason) if reply.status.is_client_error() => {
            review_event!(warn, report, path, outcome, elapsed, reply.status, reason = %reason, "review rejected")
        }
        Some(reason) => {
            review_event!(info, report, path, outcome, elapsed, reply.status, reason = %reason, "review")
        }
        None => review_event!(info, report, path, outcome, elapsed, reply.status, "review"),
    }
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = reply.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    response
}

/// Why a changed policy file could not be used.
#[derive(Debug, thiserror::Error)]
enum PolicyReloadError {
    #[error("failed to read policy file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Load(PolicyError),
    #[error("failed to load the policy: {0}")]
    Task(tokio::task::JoinError),
}

/// Watches the policy file by content, as the key pair's files are watched (ConfigMap
/// volumes are updated by the same atomic symlink swap).
struct PolicyWatcher {
    source: PolicySource,
    path: PathBuf,
    /// The contents, or the text of the error reading them.
    seen: LastSeen<Result<Vec<u8>, String>>,
}

impl PolicyWatcher {
    /// Reads the file before the policy is loaded from it, so a change in between is seen
    /// at the first poll rather than missed.
    fn start(source: &PolicySource) -> Option<Self> {
        let path = source.file.clone()?;
        let seen = std::fs::read(&path).map_err(|e| e.to_string());
        Some(PolicyWatcher {
            source: source.clone(),
            path,
            seen: LastSeen::new(seen),
        })
    }

    /// Re-reads the file and, when it changed, loads the policy from it.
    async fn poll(&mut self) -> Reload<Policy, PolicyReloadError> {
        let (seen, error) = match tokio::fs::read(&self.path).await {
            Ok(contents) => (Ok(contents), None),
            Err(e) => (Err(e.to_string()), Some(e)),
        };
        if !self.seen.changed(seen) {
            return Reload::Unchanged;
        }
        if let Some(error) = error {
            let path = self.path.clone();
            return Reload::Failed(PolicyReloadError::Read { path, error });
        }
        let source = self.source.clone();
        match tokio::task::spawn_blocking(move || source.load()).await {
            Ok(Ok(policy)) => Reload::Loaded(policy),
            Ok(Err(e)) => Reload::Failed(PolicyReloadError::Load(e)),
            Err(e) => Reload::Failed(PolicyReloadError::Task(e)),
        }
    }
}

/// Polls the key pair and the policy file every `interval`; a good change is applied, a bad
/// one is logged and counted while the last good version stays in force.
async fn reload_loop(
    interval: Duration,
    mut certs: (CertificateSource, Arc<CertStore>),
    mut policy: Option<PolicyWatcher>,
    state: AppState,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate and the files were just read.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        {
            let (source, store) = &mut certs;
            match source.poll().await {
                Reload::Unchanged => {}
                Reload::Loaded(credentials) => {
                    info!(
                        serial = credentials.serial(),
                        not_after = credentials.not_after(),
                        names = ?credentials.names(),
                        "serving certificate reloaded"
                    );
                    state
                        .metrics()
                        .set_certificate_expiry(credentials.not_after());
                    state.metrics().tls_reload(true);
                    store.store(credentials);
                }
                Reload::Failed(e) => {
                    let current = store.current();
                    error!(
                        error = %error_chain(&e),
                        serial = current.serial(),
                        "failed to reload the serving certificate; keeping the current one"
                    );
                    state.metrics().tls_reload(false);
                }
            }
        }
        if let Some(watcher) = &mut policy {
            match watcher.poll().await {
                Reload::Unchanged => {}
                Reload::Loaded(new_policy) => {
                    info!(policy = ?new_policy, "policy reloaded");
                    state.set_policy(new_policy);
                    state.metrics().policy_reload(true);
                }
                Reload::Failed(e) => {
                    error!(error = %error_chain(&e), "failed to reload the policy; keeping the current one");
                    state.metrics().policy_reload(false);
                }
            }
        }
    }
}

/// HTTP settings per protocol. The protocol is fixed from ALPN before the first byte is
/// read, because hyper's protocol sniffing has no deadline of its own.
struct Http {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    /// Deadline for the first request of an HTTP/2 connection.
    first_request_timeout: Duration,
}

impl Http {
    fn new(header_read_timeout: Duration) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
        Http {
            h1: builder.clone().http1_only(),
            h2: builder.http2_only(),
            first_request_timeout: header_read_timeout,
        }
    }
}

/// Requests in flight on one connection and when it last went idle.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
    served_any: AtomicBool,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            served_any: AtomicBool::new(false),
        })
    }

    fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.served_any.store(true, Ordering::SeqCst);
        ActivityGuard(Arc::clone(self))
    }

    /// When the connection may be closed for idleness, if no request starts before then;
    /// `None` while a request is in flight.
    fn idle_deadline(&self, first_request_timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = *self.idle_since.lock().unwrap_or_else(|e| e.into_inner());
        let allowed = if self.served_any.load(Ordering::SeqCst) {
            HTTP2_IDLE_TIMEOUT
        } else {
            first_request_timeout
        };
        Some(since + allowed)
    }
}

struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until `drain` says so (or its sender is gone).
async fn drained(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|draining| *draining).await;
}

/// Serves HTTP on one established connection until it ends, goes idle for too long, or
/// `drain` asks for a graceful shutdown.
async fn drive<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    first_request_timeout: Duration,
    router: Router,
    mut drain: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let tracker = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = tracker.begin();
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await;
            drop(guard);
            response
        }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    // After an idle close starts, the peer gets this long to go away. hyper defers an
    // HTTP/2 graceful shutdown until the client preface arrives, so a client that never
    // sends one would otherwise hold the connection forever.
    let mut drop_at: Option<Instant> = None;
    loop {
        let deadline = activity.idle_deadline(first_request_timeout);
        // While a request is in flight there is no idle deadline; look again later.
        let wake = deadline.unwrap_or_else(|| Instant::now() + HTTP2_IDLE_TIMEOUT);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "connection closed with an error");
                }
                return;
            }
            () = drained(&mut drain), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(wake), if !closing => {
                if activity
                    .idle_deadline(first_request_timeout)
                    .is_some_and(|d| d <= Instant::now())
                {
                    debug!("closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    drop_at = Some(Instant::now() + first_request_timeout);
                }
            }
            () = tokio::time::sleep_until(drop_at.unwrap_or(wake)), if drop_at.is_some() => {
                debug!("dropping an idle connection that did not close");
                return;
            }
        }
    }
}

/// One accepted TCP connection: optional TLS handshake, then HTTP.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<(TlsAcceptor, Duration)>,
    http: Arc<Http>,
    router: Router,
    mut drain: watch::Receiver<bool>,
) {
    // Reviews are single small request/response exchanges; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    let Some((acceptor, handshake_timeout)) = tls else {
        drive(stream, &http.h1, http.first_request_timeout, router, drain).await;
        return;
    };
    let handshake = tokio::select! {
        result = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)) => result,
        () = drained(&mut drain) => return,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        // Port scanners and load balancer checks fail handshakes all day: debug, not warn.
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let builder = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        &http.h2
    } else {
        &http.h1
    };
    drive(stream, builder, http.first_request_timeout, router, drain).await;
}

/// Accepts connections until `stop` completes, then closes the listener and returns the
/// connections still open.
async fn accept_until(
    listener: TcpListener,
    tls: Option<(TlsAcceptor, Duration)>,
    http: Arc<Http>,
    router: Router,
    drain: watch::Receiver<bool>,
    stop: impl Future<Output = ()>,
) -> JoinSet<()> {
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = joined
                    && e.is_panic()
                {
                    error!(error = %e, "a connection task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(
                        stream,
                        peer,
                        tls.clone(),
                        Arc::clone(&http),
                        router.clone(),
                        drain.clone(),
                    ));
                }
                Err(e) => {
                    warn!(error = %e, "failed to accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    connections
}

/// Asks every connection to finish (`drain`) and waits up to `deadline`; returns how many
/// were still open and got dropped.
async fn drain_connections(
    mut connections: JoinSet<()>,
    drain: &watch::Sender<bool>,
    deadline: Duration,
) -> usize {
    let _ = drain.send(true);
    let all_done = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(deadline, all_done).await.is_ok() {
        return 0;
    }
    let left = connections.len();
    connections.shutdown().await;
    left
}

/// A bound server: key pair and policy checked, both listeners open.
pub struct Server {
    webhook: TcpListener,
    metrics: TcpListener,
    local_addr: SocketAddr,
    metrics_addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    certs: Arc<CertStore>,
    cert_source: CertificateSource,
    policy_watcher: Option<PolicyWatcher>,
    state: AppState,
    registry: Arc<Registry>,
    reload_interval: Duration,
    header_read_timeout: Duration,
    shutdown_timeout: Duration,
    shutdown_delay: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Loads and checks the policy and the key pair, then binds both listeners. Nothing is
    /// bound if anything is wrong, and the error names the file or address at fault.
    pub async fn bind(config: ServeConfig) -> Result<Self, ServerError> {
        let policy_watcher = PolicyWatcher::start(&config.policy);
        let policy = config.policy.load().map_err(ServerError::Policy)?;

        let (cert_source, credentials) = CertificateSource::start(&config.tls).await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if credentials.not_after() <= now {
            // Not fatal: the volume may be about to receive the renewed pair, which the
            // reloader picks up; refusing to start would only add a crash loop.
            warn!(
                serial = credentials.serial(),
                not_after = credentials.not_after(),
                "the serving certificate has expired"
            );
        }
        info!(
            serial = credentials.serial(),
            not_after = credentials.not_after(),
            names = ?credentials.names(),
            "serving certificate loaded"
        );

        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.set_certificate_expiry(credentials.not_after());
        let certs = Arc::new(CertStore::new(credentials));
        let tls = tls::server_config(Arc::clone(&certs)).map_err(ServerError::Tls)?;

        let webhook = bind("webhook", config.listen).await?;
        let metrics_listener = bind("metrics", config.metrics_listen).await?;
        let webhook_addr = listener_addr("webhook", &webhook)?;
        let metrics_addr = listener_addr("metrics", &metrics_listener)?;

        Ok(Server {
            webhook,
            metrics: metrics_listener,
            local_addr: webhook_addr,
            metrics_addr,
            tls,
            certs,
            cert_source,
            policy_watcher,
            state: AppState::new(policy, metrics, config.request_timeout),
            registry: Arc::new(registry),
            reload_interval: config.reload_interval,
            header_read_timeout: config.header_read_timeout,
            shutdown_timeout: config.shutdown_timeout,
            shutdown_delay: config.shutdown_delay,
        })
    }

    /// The HTTPS listener's address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The metrics listener's address.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Serves until `shutdown` completes, then drains (see the module documentation).
    /// Returns once every connection is closed or dropped at the shutdown deadline.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            webhook,
            metrics,
            local_addr,
            metrics_addr,
            tls,
            certs,
            cert_source,
            policy_watcher,
            state,
            registry,
            reload_interval,
            header_read_timeout,
            shutdown_timeout,
            shutdown_delay,
        } = self;
        let http = Arc::new(Http::new(header_read_timeout));

        let reloader = tokio::spawn(reload_loop(
            reload_interval,
            (cert_source, certs),
            policy_watcher,
            state.clone(),
        ));

        let (metrics_drain, metrics_drain_rx) = watch::channel(false);
        let (metrics_stop, metrics_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let metrics_task = tokio::spawn(accept_until(
            metrics,
            None,
            Arc::clone(&http),
            metrics_router(state.clone(), registry),
            metrics_drain_rx,
            async {
                let _ = metrics_stop_rx.await;
            },
        ));

        state.set_ready(true);
        info!(%local_addr, %metrics_addr, "serving");

        let (drain, drain_rx) = watch::channel(false);
        let acceptor = TlsAcceptor::from(tls);
        let connections = accept_until(
            webhook,
            Some((acceptor, header_read_timeout)),
            Arc::clone(&http),
            router(state.clone()),
            drain_rx,
            async {
                shutdown.await;
                // The API server keeps sending to this replica until its endpoint is gone:
                // answer 503 on /readyz but keep serving for a while, then stop accepting.
                state.set_ready(false);
                if !shutdown_delay.is_zero() {
                    info!(
                        delay_ms = shutdown_delay.as_millis() as u64,
                        "shutting down: not ready, still serving until the delay ends"
                    );
                    tokio::time::sleep(shutdown_delay).await;
                }
            },
        )
        .await;

        state.set_ready(false);
        info!(
            connections = connections.len(),
            timeout_ms = shutdown_timeout.as_millis() as u64,
            "shutting down: no longer accepting, draining connections"
        );
        let dropped = drain_connections(connections, &drain, shutdown_timeout).await;
        if dropped > 0 {
            warn!(
                connections = dropped,
                "shutdown timeout reached; dropped the connections still open"
            );
        }

        let _ = metrics_stop.send(());
        if let Ok(metric_connections) = metrics_task.await {
            drain_connections(metric_connections, &metrics_drain, METRICS_DRAIN_TIMEOUT).await;
        }
        reloader.abort();
        info!("shut down");
        Ok(())
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

fn listener_addr(what: &'static str, listener: &TcpListener) -> Result<SocketAddr, ServerError> {
    listener
        .local_addr()
        .map_err(|source| ServerError::LocalAddr { what, source })
}

/// SIGTERM and SIGINT, counted. The first starts a graceful shutdown, the second aborts it.
#[derive(Clone, Debug)]
pub struct Signals {
    count: watch::Receiver<u32>,
}

impl Signals {
    /// Installs the handlers; from then on the signals no longer kill the process.
    pub fn install() -> Result<Self, ServerError> {
        let (tx, rx) = watch::channel(0u32);
        let counted = move |name: &'static str| {
            if *tx.borrow() == 0 {
                info!(
                    signal = name,
                    "shutting down; send the signal again to abort"
                );
            } else {
                warn!(signal = name, "aborting the shutdown");
            }
            tx.send_modify(|n| *n += 1);
        };
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signal)?;
            let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signal)?;
            tokio::spawn(async move {
                loop {
                    let name = tokio::select! {
                        Some(()) = term.recv() => "SIGTERM",
                        Some(()) = int.recv() => "SIGINT",
                        else => break,
                    };
                    counted(name);
                }
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                counted("ctrl-c");
            }
        });
        Ok(Signals { count: rx })
    }

    /// Completes at the `n`th signal.
    pub fn nth(&self, n: u32) -> impl Future<Output = ()> + Send + 'static {
        let mut count = self.count.clone();
        async move {
            if count.wait_for(|c| *c >= n).await.is_err() {
                // The listener task is gone; no more signals can arrive.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Runs the binary's server: binds, serves until SIGTERM/SIGINT, drains within the
/// shutdown timeout; a second signal aborts the drain.
pub async fn serve_until_signalled(config: ServeConfig) -> Result<(), ServerError> {
    // Installed before binding, so a signal during start-up is not lost.
    let signals = Signals::install()?;
    let server = Server::bind(config).await?;
    tokio::select! {
        result = server.run(signals.nth(1)) => result,
        () = signals.nth(2) => Err(ServerError::Aborted),
    }
}
