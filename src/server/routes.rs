//! The routes and their handlers: reviews on `/mutate` and `/audit`, probes, and metrics.
//! A review handler reads the body within the request deadline, hands it to
//! [`admission::handle`], and records the answer in the metrics and the log.
//!
//! A review takes microseconds per kilobyte, so a typical one (a few to a few tens of
//! kilobytes) is answered on the async worker it arrived on. A large one (a pod with
//! thousands of containers) takes milliseconds and several times its size in memory: it
//! waits for one of `--max-large-reviews` slots and runs on a blocking thread, so that
//! neither the other reviews nor the probes wait behind it, and memory is bounded by the
//! slots rather than by how many arrive at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::LOG_TARGET;
use super::memory;
use super::priority;
use super::streamed::ChunkWriter;
use crate::admission::{
    self, Endpoint, HttpReply, MAX_BODY_BYTES, Outcome, Rejection, ReviewReport,
};
use crate::error::error_chain;
use crate::metrics::{self, Metrics};
use crate::policy::Policy;
use crate::text::LogValue;

/// A review body at least this large is a large review (see the module documentation).
/// The 28 KB pod of `tests/data/pod-create.json` takes about 20 µs in memory, so one at
/// this size takes some tens of microseconds; the 1.9 MB pod of 10,000 containers, 36 ms.
pub(crate) const LARGE_REVIEW_BYTES: usize = 64 * 1024;

/// How many large reviews are evaluated at once by default (`--max-large-reviews`).
pub const DEFAULT_MAX_LARGE_REVIEWS: usize = 2;

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
    /// The slots of large reviews.
    large_reviews: Arc<Semaphore>,
}

impl AppState {
    /// State serving `policy`, with [`DEFAULT_MAX_LARGE_REVIEWS`]. It starts not ready;
    /// the server marks it ready once the listeners are up, and not ready again when a
    /// shutdown starts.
    pub fn new(policy: Policy, metrics: Metrics, request_timeout: Duration) -> Self {
        Self::with_max_large_reviews(policy, metrics, request_timeout, DEFAULT_MAX_LARGE_REVIEWS)
    }

    /// [`AppState::new`], evaluating at most `max_large_reviews` large reviews at once (at
    /// least one).
    pub fn with_max_large_reviews(
        policy: Policy,
        metrics: Metrics,
        request_timeout: Duration,
        max_large_reviews: usize,
    ) -> Self {
        AppState {
            shared: Arc::new(Shared {
                policy: ArcSwap::from_pointee(policy),
                metrics,
                ready: AtomicBool::new(false),
                request_timeout,
                large_reviews: Arc::new(Semaphore::new(max_large_reviews.max(1))),
            }),
        }
    }

    /// The policy in force.
    pub(crate) fn policy(&self) -> Arc<Policy> {
        self.shared.policy.load_full()
    }

    /// Replaces the policy for the next reviews; reviews under way keep the old one.
    pub(crate) fn set_policy(&self, policy: Policy) {
        self.shared.policy.store(Arc::new(policy));
    }

    /// Sets what `/readyz` answers.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub(crate) fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }

    /// The metrics reviews are counted in.
    pub(crate) fn metrics(&self) -> &Metrics {
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
pub(crate) fn metrics_router(state: AppState, registry: Arc<Registry>) -> Router {
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

impl FromRef<MetricsState> for AppState {
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

async fn review(state: AppState, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let timeout = state.shared.request_timeout;
    // The deadline covers the upload and the wait for a large-review slot; the evaluation
    // itself is bounded by the body size.
    let deadline = started + timeout;
    let upload = read_body(&state, &headers, body, deadline);
    let (response, report) = match tokio::time::timeout_at(deadline, upload).await {
        Ok(Ok(Upload::Small(bytes))) => {
            let policy = state.policy();
            let (reply, report) =
                admission::handle(endpoint, content_type(&headers), &bytes, &policy);
            (reply.into_response(), report)
        }
        Ok(Ok(Upload::Large(bytes, slot))) => {
            evaluate_large(&state, endpoint, headers, bytes, slot).await
        }
        Ok(Err(NotRead::Rejected(rejection))) => answer(rejection.answer(ReviewReport::default())),
        Ok(Err(NotRead::NoSlot)) => answer(unavailable(
            "too many large reviews in progress: no slot within the request timeout",
        )),
        Err(_elapsed) => answer(Rejection::Timeout(timeout).answer(ReviewReport::default())),
    };
    record(
        &state,
        endpoint,
        response.status(),
        &report,
        started.elapsed(),
    );
    response
}

fn answer((reply, report): (HttpReply, ReviewReport)) -> (Response, ReviewReport) {
    (reply.into_response(), report)
}

/// Why a body was not read.
enum NotRead {
    Rejected(Rejection),
    /// No large-review slot was free within the request timeout.
    NoSlot,
}

impl From<Rejection> for NotRead {
    fn from(rejection: Rejection) -> Self {
        NotRead::Rejected(rejection)
    }
}

/// A body that has arrived.
enum Upload {
    Small(Bytes),
    /// At least [`LARGE_REVIEW_BYTES`], with its large-review slot.
    Large(Bytes, OwnedSemaphorePermit),
}

/// The frames of a body as they arrive: one is kept as it came, a second one starts a copy
/// of them all in one buffer.
enum Frames {
    None,
    One(Bytes),
    Many(Vec<u8>),
}

impl Frames {
    fn len(&self) -> usize {
        match self {
            Frames::None => 0,
            Frames::One(bytes) => bytes.len(),
            Frames::Many(bytes) => bytes.len(),
        }
    }

    /// Adds `data`; a copy, when one starts, has room for `expected` bytes in all.
    fn push(&mut self, data: Bytes, expected: usize) {
        *self = match std::mem::replace(self, Frames::None) {
            Frames::None => Frames::One(data),
            Frames::One(first) => {
                let mut bytes = Vec::with_capacity(expected.max(first.len() + data.len()));
                bytes.extend_from_slice(&first);
                bytes.extend_from_slice(&data);
                Frames::Many(bytes)
            }
            Frames::Many(mut bytes) => {
                bytes.extend_from_slice(&data);
                Frames::Many(bytes)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Frames::None => Bytes::new(),
            Frames::One(bytes) => bytes,
            Frames::Many(bytes) => Bytes::from(bytes),
        }
    }
}

/// Answers a large review in its slot on a blocking thread (see the module documentation):
/// once decided, the answer is written to the connection as it is made, a chunk at a time
/// ([`super::streamed`]), and the slot is held until it is sent.
async fn evaluate_large(
    state: &AppState,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Bytes,
    slot: OwnedSemaphorePermit,
) -> (Response, ReviewReport) {
    let policy = state.policy();
    let timeout = state.shared.request_timeout;
    let (decided, decision) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // Whenever an async worker wakes, it takes the CPU from this thread at once.
        priority::lower_current_thread();
        let (prepared, report) =
            admission::prepare(endpoint, content_type(&headers), &body, &policy);
        let (mut out, answer) = ChunkWriter::new(runtime, Instant::now() + timeout);
        let head = (prepared.status(), prepared.content_type(), report);
        if decided.send((head, answer)).is_ok()
            && let Err(e) = prepared.write_to(&mut out).and_then(|()| out.finish())
        {
            tracing::warn!(target: LOG_TARGET, error = %e, "an answer was not sent in full");
        }
        // The review's memory is freed and given back to the system before the next large
        // review may start.
        drop((prepared, out, body));
        memory::release();
        drop(slot);
    });
    match decision.await {
        Ok(((status, content_type, report), answer)) => {
            let mut response = Response::new(answer);
            *response.status_mut() = status;
            let value = HeaderValue::from_static(content_type);
            response.headers_mut().insert(header::CONTENT_TYPE, value);
            (response, report)
        }
        Err(_) => {
            tracing::error!(target: LOG_TARGET, "a review failed");
            answer(internal_error("the review failed"))
        }
    }
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"))
}

/// 503: the server cannot take the review now; the API server applies its failurePolicy.
fn unavailable(reason: &str) -> (HttpReply, ReviewReport) {
    plain_answer(StatusCode::SERVICE_UNAVAILABLE, reason)
}

/// 500, for a handler that panicked: not an answer about the pod.
fn internal_error(reason: &str) -> (HttpReply, ReviewReport) {
    plain_answer(StatusCode::INTERNAL_SERVER_ERROR, reason)
}

fn plain_answer(status: StatusCode, reason: &str) -> (HttpReply, ReviewReport) {
    let reply = HttpReply {
        status,
        content_type: "text/plain; charset=utf-8",
        body: format!("{reason}\n").into_bytes(),
    };
    let report = ReviewReport {
        outcome: Some(Outcome::Error),
        message: Some(reason.to_owned()),
        ..ReviewReport::default()
    };
    (reply, report)
}

/// Reads at most [`MAX_BODY_BYTES`]: a declared `Content-Length` over the limit is refused
/// before any of the body is read, a chunked body is cut off as soon as it passes it. A body
/// of one frame is kept as it came; the frames of a longer one are copied into one buffer as
/// they arrive and dropped, so the body is held once. A large body then waits for a
/// large-review slot; none free before `deadline` is a 503.
async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    mut body: Body,
    deadline: Instant,
) -> Result<Upload, NotRead> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(Rejection::TooLarge.into());
    }
    // At most the limit, by the check above.
    let expected = declared.unwrap_or(0) as usize;
    let mut frames = Frames::None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Rejection::BodyRead(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if frames.len() + data.len() > MAX_BODY_BYTES {
                return Err(Rejection::TooLarge.into());
            }
            frames.push(data, expected);
        }
    }
    let bytes = frames.into_bytes();
    if bytes.len() < LARGE_REVIEW_BYTES {
        return Ok(Upload::Small(bytes));
    }
    // Read before waiting: on an HTTP/2 connection, a body left unread holds the flow
    // control window that every other review on the connection needs.
    let slot = large_review_slot(state, deadline).await?;
    Ok(Upload::Large(bytes, slot))
}

/// One of the `--max-large-reviews` slots, or a 503 when none is free before `deadline`.
async fn large_review_slot(
    state: &AppState,
    deadline: Instant,
) -> Result<OwnedSemaphorePermit, NotRead> {
    let slots = Arc::clone(&state.shared.large_reviews);
    match tokio::time::timeout_at(deadline, slots.acquire_owned()).await {
        Ok(Ok(slot)) => Ok(slot),
        _ => Err(NotRead::NoSlot),
    }
}

/// One structured line per review, at `$level`.
macro_rules! review_event {
    ($level:ident, $report:expr, $path:expr, $outcome:expr, $elapsed:expr, $status:expr, $($extra:tt)*) => {
        tracing::$level!(
            target: LOG_TARGET,
            // Taken from the request: escaped and bounded, so that no client can forge a
            // log line or flood the log.
            uid = %LogValue(&$report.uid),
            namespace = %LogValue(&$report.namespace),
            pod = %LogValue(&$report.pod),
            user = %LogValue(&$report.user),
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

/// Counts the review in the metrics and writes its log line.
fn record(
    state: &AppState,
    endpoint: Endpoint,
    status: StatusCode,
    report: &ReviewReport,
    elapsed: Duration,
) {
    // Every 4xx (bad request, 408, 413) is an error, whatever the handler decided.
    let outcome = match report.outcome {
        _ if status.is_client_error() => Outcome::Error,
        Some(outcome) => outcome,
        None => Outcome::Error,
    };
    let metrics = state.metrics();
    metrics.record_review(endpoint, outcome, elapsed, &report.events);
    if let Some(resize) = report.resize {
        metrics.record_resize(resize);
    }
    let (path, outcome) = (endpoint.as_str(), outcome.as_str());
    match &report.message {
        Some(reason) if status.is_client_error() => {
            review_event!(warn, report, path, outcome, elapsed, status, reason = %LogValue(reason), "review rejected")
        }
        Some(reason) => {
            review_event!(info, report, path, outcome, elapsed, status, reason = %LogValue(reason), "review")
        }
        None => review_event!(info, report, path, outcome, elapsed, status, "review"),
    }
}

impl IntoResponse for HttpReply {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_of_one_frame_is_kept_as_it_came() {
        let frame = Bytes::from(vec![7u8; 100]);
        let mut frames = Frames::None;
        frames.push(frame.clone(), 100);
        let body = frames.into_bytes();
        assert_eq!(body, frame);
        assert_eq!(body.as_ptr(), frame.as_ptr(), "the frame was copied");
    }

    #[test]
    fn the_frames_of_a_longer_body_are_joined_in_order() {
        let mut frames = Frames::None;
        for (i, len) in [(1u8, 3), (2, 0), (3, 5), (4, 1)] {
            frames.push(Bytes::from(vec![i; len]), 2);
            assert_eq!(frames.len(), [3, 3, 8, 9][usize::from(i) - 1]);
        }
        assert_eq!(&frames.into_bytes()[..], [1, 1, 1, 3, 3, 3, 3, 3, 4]);
        assert!(Frames::None.into_bytes().is_empty());
    }
}
