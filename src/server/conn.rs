//! The connection machinery: the accept loop, a deadline for every phase of a connection,
//! idle tracking, and the drain at shutdown.
//!
//! The loop is our own (tokio listener → TLS handshake with a deadline → hyper HTTP/1.1 or
//! HTTP/2 chosen by ALPN) so that no phase is unbounded and a shutdown can drain
//! connections one by one:
//!
//! - TLS handshake: `--header-read-timeout`.
//! - HTTP/1.1 request head: `--header-read-timeout` (hyper). hyper starts that clock as
//!   soon as it waits for a head, so it also closes idle keep-alive connections.
//! - HTTP/2: the first request must start within `--header-read-timeout`, and a
//!   connection with no request in flight is closed after [`HTTP2_IDLE_TIMEOUT`];
//!   keep-alive pings drop dead peers.
//! - Request body and answer: `--request-timeout`, enforced by the review handler.
//!
//! Each listener holds at most `--max-connections` connections ([`Slots`]). A connection
//! accepted beyond that displaces the one quiet the longest, and never one with a request
//! in flight; when every connection is busy, it waits for one to finish.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, error, info, warn};

use super::LOG_TARGET;
use super::read_ahead::ReadAhead;
use super::routes::LARGE_REVIEW_BYTES;

/// An HTTP/2 connection with no request in flight for this long is closed (GOAWAY). The API
/// server reuses connections well within it, and reconnects cheaply when it does not.
const HTTP2_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How often HTTP/2 connections are pinged, and how long an answer may take, so that
/// connections to vanished peers do not linger.
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a connection asked to make room gets to close by itself (HTTP/2 GOAWAY) before
/// it is dropped.
const EVICTION_GRACE: Duration = Duration::from_secs(1);

/// How often a connection waiting for room looks again for one to close, while every
/// connection has a request in flight.
const ROOM_RETRY: Duration = Duration::from_millis(50);

/// At most one log line per this long says that a listener is at its connection cap.
const AT_CAPACITY_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Back-off after a failed `accept` (for instance, out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How much of one request body an HTTP/2 client may send ahead of the server reading it
/// (hyper's default is 1 MiB): what a large review holds beside its body while it arrives.
/// A quarter of a mebibyte still moves a body at hundreds of megabytes per second at a
/// cluster's round-trip times.
const HTTP2_STREAM_WINDOW: u32 = 256 * 1024;

/// The same for all the requests of one HTTP/2 connection (hyper's default, 1 MiB).
const HTTP2_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// The largest HTTP/2 frame the server takes (the protocol's default is 16 KiB): the size
/// of a large review. Clients that send a body in frames as large as the server allows, as
/// the API server's does, send any review that is not large in one DATA frame. It is then
/// read where it arrived, not first joined from pieces.
const HTTP2_MAX_FRAME_SIZE: u32 = LARGE_REVIEW_BYTES as u32;

/// How much of one answer waits in an HTTP/2 connection's buffers for the client to read
/// it (hyper's default is 400 KiB).
const HTTP2_SEND_BUFFER: usize = 128 * 1024;

/// HTTP settings per protocol. The protocol is fixed from ALPN before the first byte is
/// read, because hyper's protocol sniffing has no deadline of its own.
pub(super) struct Http {
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
    /// Deadline for the first request of an HTTP/2 connection.
    first_request_timeout: Duration,
}

impl Http {
    pub(super) fn new(header_read_timeout: Duration) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
            .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .max_frame_size(HTTP2_MAX_FRAME_SIZE)
            .max_send_buf_size(HTTP2_SEND_BUFFER);
        Http {
            h1: builder.clone().http1_only(),
            h2: builder.http2_only(),
            first_request_timeout: header_read_timeout,
        }
    }
}

/// Requests in flight on one connection, when it last went idle, and whether it was asked
/// to make room for another.
struct Activity {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
    served_any: AtomicBool,
    evicted: AtomicBool,
    evict: Notify,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            served_any: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        })
    }

    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the connection may be closed to make room: no request in flight, and not
    /// asked already. The earliest first: one that never started a request (a handshake
    /// or a request head still arriving), then the longest idle.
    fn eviction_order(&self) -> Option<(bool, Instant)> {
        if self.in_flight.load(Ordering::SeqCst) > 0 || self.evicted.load(Ordering::SeqCst) {
            return None;
        }
        Some((self.served_any.load(Ordering::SeqCst), self.idle_since()))
    }

    /// Asks the connection to close.
    fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        // Stored when nobody waits yet, so the request cannot be missed.
        self.evict.notify_one();
    }

    /// Completes once the connection is asked to close.
    async fn evicted(&self) {
        self.evict.notified().await;
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
        let since = self.idle_since();
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

/// The connections of one listener: at most `max` at once.
pub(super) struct Slots {
    max: usize,
    permits: Arc<Semaphore>,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    /// When the cap was last logged.
    logged: Mutex<Option<Instant>>,
}

impl Slots {
    /// Room for `max` connections (at least one).
    pub(super) fn new(max: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Slots {
            max,
            permits: Arc::new(Semaphore::new(max)),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            logged: Mutex::new(None),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection just accepted. At the cap, the connection quiet the longest
    /// is asked to close (see [`Activity::eviction_order`]) and this one waits for its slot;
    /// when every connection has a request in flight, until one finishes.
    async fn admit(self: &Arc<Self>) -> Option<Slot> {
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => self.wait_for_room().await?,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Activity::new();
        self.open().insert(id, Arc::clone(&activity));
        Some(Slot {
            slots: Arc::clone(self),
            id,
            activity,
            _permit: permit,
        })
    }

    /// Makes room and waits for it. While every connection has a request in flight, it
    /// looks again every [`ROOM_RETRY`] for one that has finished its request.
    async fn wait_for_room(&self) -> Option<OwnedSemaphorePermit> {
        let mut asked = self.make_room();
        loop {
            let acquire = Arc::clone(&self.permits).acquire_owned();
            tokio::select! {
                permit = acquire => return permit.ok(),
                () = tokio::time::sleep(ROOM_RETRY), if !asked => asked = self.make_room(),
            }
        }
    }

    /// Asks the connection quiet the longest to close; false when every connection has a
    /// request in flight.
    fn make_room(&self) -> bool {
        let victim = self
            .open()
            .values()
            .filter_map(|a| Some((a.eviction_order()?, a)))
            .min_by_key(|(order, _)| *order)
            .map(|(_, a)| Arc::clone(a));
        self.log_at_capacity(victim.is_some());
        let Some(victim) = victim else { return false };
        victim.evict();
        true
    }

    fn log_at_capacity(&self, evicting: bool) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.is_some_and(|at| at.elapsed() < AT_CAPACITY_LOG_INTERVAL) {
            debug!(target: LOG_TARGET, max_connections = self.max, evicting, "at the connection cap");
            return;
        }
        *logged = Some(Instant::now());
        if evicting {
            info!(
                target: LOG_TARGET,
                max_connections = self.max,
                "at the connection cap: closing the connections quiet the longest to make room"
            );
        } else {
            warn!(
                target: LOG_TARGET,
                max_connections = self.max,
                "at the connection cap with a request in flight on every connection: new connections wait"
            );
        }
    }
}

/// One connection's place among the open ones; freed when dropped.
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open().remove(&self.id);
    }
}

/// Waits until `drain` says so (or its sender is gone).
async fn drained(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|draining| *draining).await;
}

/// `router` as a hyper service whose requests `activity` counts.
fn tracked(
    router: Router,
    tracker: Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone
+ Send {
    hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = tracker.begin();
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await;
            drop(guard);
            response
        }
    })
}

/// Serves HTTP on one established connection until it ends, goes idle for too long, is
/// asked to make room, or `drain` asks for a graceful shutdown.
async fn drive<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    first_request_timeout: Duration,
    router: Router,
    activity: Arc<Activity>,
    mut drain: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(TokioIo::new(io), tracked(router, Arc::clone(&activity)));
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
                    debug!(target: LOG_TARGET, error = %e, "connection closed with an error");
                }
                return;
            }
            () = drained(&mut drain), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = activity.evicted(), if !closing => {
                if !activity.served_any.load(Ordering::SeqCst) {
                    debug!(target: LOG_TARGET, "dropping a connection with no request to make room");
                    return;
                }
                debug!(target: LOG_TARGET, "closing an idle connection to make room");
                conn.as_mut().graceful_shutdown();
                closing = true;
                drop_at = Some(Instant::now() + EVICTION_GRACE);
            }
            () = tokio::time::sleep_until(wake), if !closing => {
                if activity
                    .idle_deadline(first_request_timeout)
                    .is_some_and(|d| d <= Instant::now())
                {
                    debug!(target: LOG_TARGET, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    drop_at = Some(Instant::now() + first_request_timeout);
                }
            }
            () = tokio::time::sleep_until(drop_at.unwrap_or(wake)), if drop_at.is_some() => {
                debug!(target: LOG_TARGET, "dropping an idle connection that did not close");
                return;
            }
        }
    }
}

/// One accepted TCP connection: optional TLS handshake, then HTTP. It holds `slot` until
/// it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    tls: Option<(TlsAcceptor, Duration)>,
    http: Arc<Http>,
    router: Router,
    mut drain: watch::Receiver<bool>,
) {
    // Reviews are single small request/response exchanges; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    let activity = Arc::clone(&slot.activity);
    let Some((acceptor, handshake_timeout)) = tls else {
        let timeout = http.first_request_timeout;
        drive(stream, &http.h1, timeout, router, activity, drain).await;
        return;
    };
    let handshake = tokio::select! {
        result = tokio::time::timeout(handshake_timeout, acceptor.accept(ReadAhead::new(stream))) => result,
        () = drained(&mut drain) => return,
        () = activity.evicted() => return,
    };
    let stream = match handshake {
        Ok(Ok(stream)) => stream,
        // Port scanners and load balancer checks fail handshakes all day: debug, not warn.
        Ok(Err(e)) => {
            debug!(target: LOG_TARGET, %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(target: LOG_TARGET, %peer, "TLS handshake timed out");
            return;
        }
    };
    let builder = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        &http.h2
    } else {
        &http.h1
    };
    drive(
        stream,
        builder,
        http.first_request_timeout,
        router,
        activity,
        drain,
    )
    .await;
    drop(slot);
}

/// Accepts connections until `stop` completes, then closes the listener and returns the
/// connections still open. Beyond the cap of `slots`, a new connection waits for room.
pub(super) async fn accept_until(
    listener: TcpListener,
    slots: Arc<Slots>,
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
                    error!(target: LOG_TARGET, error = %e, "a connection task panicked");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let slot = tokio::select! {
                        biased;
                        () = &mut stop => break,
                        slot = slots.admit() => slot,
                    };
                    let Some(slot) = slot else { continue };
                    connections.spawn(connection(
                        stream,
                        peer,
                        slot,
                        tls.clone(),
                        Arc::clone(&http),
                        router.clone(),
                        drain.clone(),
                    ));
                }
                Err(e) => {
                    warn!(target: LOG_TARGET, error = %e, "failed to accept a connection");
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
pub(super) async fn drain_connections(
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

/// An accept loop running in a task of its own (the metrics listener), and what it takes
/// to stop it.
pub(super) struct Listening {
    stop: tokio::sync::oneshot::Sender<()>,
    drain: watch::Sender<bool>,
    task: tokio::task::JoinHandle<JoinSet<()>>,
}

impl Listening {
    /// Serves `router` over plain HTTP on `listener` until [`Listening::stop`].
    pub(super) fn start(
        listener: TcpListener,
        slots: Arc<Slots>,
        http: Arc<Http>,
        router: Router,
    ) -> Self {
        let (drain, drain_rx) = watch::channel(false);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(accept_until(
            listener,
            slots,
            None,
            http,
            router,
            drain_rx,
            async {
                let _ = stopped.await;
            },
        ));
        Listening { stop, drain, task }
    }

    /// Stops accepting and lets the open connections finish within `deadline`.
    pub(super) async fn stop(self, deadline: Duration) {
        let _ = self.stop.send(());
        if let Ok(connections) = self.task.await {
            drain_connections(connections, &self.drain, deadline).await;
        }
    }
}
