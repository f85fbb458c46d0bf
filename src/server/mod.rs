//! The webhook server: HTTPS for AdmissionReviews, plain HTTP for metrics and probes.
//!
//! [`Server::bind`] checks the policy and the key pair before anything binds;
//! [`Server::run`] serves until told to stop, reloading the certificate and the policy as
//! they change. Its parts: the routes and handlers (`routes`), the connection machinery with
//! a deadline for every phase (`conn`), reloading (`reload`), and signals (`signals`).
//!
//! Shutdown (kubert style): readiness turns 503, the listener closes, every connection gets
//! a graceful shutdown (idle keep-alive connections close, in-flight reviews finish), and
//! what is left at `--shutdown-timeout` is dropped. A second signal aborts at once.

mod conn;
mod memory;
mod priority;
mod read_ahead;
mod reload;
mod routes;
mod signals;
mod streamed;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

pub use memory::set_release as set_memory_release;
pub use routes::{AppState, DEFAULT_MAX_LARGE_REVIEWS, router};
pub(crate) use signals::serve_until_signalled;

use crate::background::{BackgroundAudit, BackgroundAuditConfig, BackgroundAuditError};
use crate::metrics::Metrics;
use crate::policy::{PolicyError, PolicySource};
use crate::tls::{
    self, CertStore, CertificateSource, Credentials, SecretError, SourceError, TlsError, TlsSource,
};
use conn::{Http, Listening, Slots};
use reload::{PolicyWatcher, Reloader};

/// The target of the server's log events, whichever of its files they come from: what
/// operators filter on and what every line shows.
const LOG_TARGET: &str = module_path!();

/// Metrics and probe connections are local and short; they get this long to finish once
/// the webhook has drained.
const METRICS_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a shutdown waits for the background audit to stop and release its Lease.
const BACKGROUND_STOP_TIMEOUT: Duration = Duration::from_secs(2);

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
    #[error("failed to set up the background audit")]
    BackgroundAudit(#[source] BackgroundAuditError),
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
    /// The background audit of running pods; `None` when off.
    pub background_audit: Option<BackgroundAuditConfig>,
    /// The most connections each listener holds at once; a new one beyond it displaces the
    /// one quiet the longest.
    pub max_connections: usize,
    /// The most large reviews (a body of 64 KiB or more) evaluated at once.
    pub max_large_reviews: usize,
}

/// How many connections each listener holds at once by default (`--max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

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
    background_audit: Option<BackgroundAudit>,
    state: AppState,
    registry: Arc<Registry>,
    reload_interval: Duration,
    /// Re-reads the certificate and the policy at once when notified (SIGHUP).
    reload_now: Arc<Notify>,
    header_read_timeout: Duration,
    shutdown_timeout: Duration,
    shutdown_delay: Duration,
    max_connections: usize,
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
        log_loaded(&credentials);
        let background_audit = match config.background_audit {
            Some(audit) => Some(
                BackgroundAudit::connect(audit)
                    .await
                    .map_err(ServerError::BackgroundAudit)?,
            ),
            None => None,
        };

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
            background_audit,
            state: AppState::with_max_large_reviews(
                policy,
                metrics,
                config.request_timeout,
                config.max_large_reviews,
            ),
            registry: Arc::new(registry),
            reload_interval: config.reload_interval,
            reload_now: Arc::new(Notify::new()),
            header_read_timeout: config.header_read_timeout,
            shutdown_timeout: config.shutdown_timeout,
            shutdown_delay: config.shutdown_delay,
            max_connections: config.max_connections,
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

    /// Re-reads the certificate and the policy whenever `trigger` is notified, besides
    /// every reload interval.
    pub(crate) fn reload_on(&mut self, trigger: Arc<Notify>) {
        self.reload_now = trigger;
    }

    /// Serves until `shutdown` completes, then drains (see the module documentation).
    /// Returns once every connection is closed or dropped at the shutdown deadline.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let http = Arc::new(Http::new(self.header_read_timeout));
        let state = self.state;
        let reloader = Reloader {
            certificates: self.cert_source,
            store: self.certs,
            policy: self.policy_watcher,
            state: state.clone(),
        };
        let reloader = tokio::spawn(reloader.run(self.reload_interval, self.reload_now));
        let metrics_router = routes::metrics_router(state.clone(), self.registry);
        let slots = Slots::new(self.max_connections);
        let metrics = Listening::start(self.metrics, slots, Arc::clone(&http), metrics_router);
        let background = BackgroundAudit::start(self.background_audit, &state);

        state.set_ready(true);
        info!(local_addr = %self.local_addr, metrics_addr = %self.metrics_addr, "serving");

        let (drain, drain_rx) = watch::channel(false);
        let acceptor = TlsAcceptor::from(self.tls);
        let shutdown_delay = self.shutdown_delay;
        let connections = conn::accept_until(
            self.webhook,
            Slots::new(self.max_connections),
            Some((acceptor, self.header_read_timeout)),
            http,
            router(state.clone()),
            drain_rx,
            async {
                shutdown.await;
                background.stop();
                stop_being_ready(&state, shutdown_delay).await;
            },
        )
        .await;

        state.set_ready(false);
        drain_webhook(connections, &drain, self.shutdown_timeout).await;
        metrics.stop(METRICS_DRAIN_TIMEOUT).await;
        reloader.abort();
        background.finish(BACKGROUND_STOP_TIMEOUT).await;
        info!("shut down");
        Ok(())
    }
}

/// The API server keeps sending to this replica until its endpoint is gone: answer 503 on
/// /readyz but keep serving for `delay`, then let the listener close.
async fn stop_being_ready(state: &AppState, delay: Duration) {
    state.set_ready(false);
    if !delay.is_zero() {
        info!(
            delay_ms = delay.as_millis() as u64,
            "shutting down: not ready, still serving until the delay ends"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Says which certificate is served, and warns when it has expired already.
fn log_loaded(credentials: &Credentials) {
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
}

/// Lets the webhook's connections finish within `timeout`, then drops the rest.
async fn drain_webhook(
    connections: tokio::task::JoinSet<()>,
    drain: &watch::Sender<bool>,
    timeout: Duration,
) {
    info!(
        connections = connections.len(),
        timeout_ms = timeout.as_millis() as u64,
        "shutting down: no longer accepting, draining connections"
    );
    let dropped = conn::drain_connections(connections, drain, timeout).await;
    if dropped > 0 {
        warn!(
            connections = dropped,
            "shutdown timeout reached; dropped the connections still open"
        );
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
