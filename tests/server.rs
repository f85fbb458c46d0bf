//! The real server, in-process, over TLS on 127.0.0.1:0.

pub mod support;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gomemlimit_injector::metrics::Metrics;
use gomemlimit_injector::policy::{Policy, PolicySource};
use gomemlimit_injector::server::{AppState, ServeConfig, Server, router};
use gomemlimit_injector::tls::{KeyPairFiles, TlsSource};
use prometheus_client::registry::Registry;
use support::fixture;
use support::server::{Options, Pair, Reply, TestCa, TestServer, eventually, sample};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tower::ServiceExt;

const JSON: &str = "application/json";
const REVIEW_UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";
const TLS_RELOADED: &str = r#"gomemlimit_injector_tls_reloads_total{result="success"}"#;
const TLS_RELOAD_FAILED: &str = r#"gomemlimit_injector_tls_reloads_total{result="failure"}"#;
const POLICY_RELOADED: &str = r#"gomemlimit_injector_policy_reloads_total{result="success"}"#;
const POLICY_RELOAD_FAILED: &str = r#"gomemlimit_injector_policy_reloads_total{result="failure"}"#;

fn assert_review_answered(reply: &Reply) {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.content_type, JSON);
    let review = reply.json();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["uid"], REVIEW_UID);
    assert_eq!(review["response"]["allowed"], true);
}

#[tokio::test]
async fn answers_reviews_over_http1() {
    let server = TestServer::start().await;
    let reply = server.review(&server.http1(), "/mutate").await;
    assert_eq!(reply.version, reqwest::Version::HTTP_11);
    assert_review_answered(&reply);
    assert_eq!(reply.json()["response"]["patchType"], "JSONPatch");
    server.stop().await;
}

#[tokio::test]
async fn answers_reviews_over_http2() {
    let server = TestServer::start().await;
    let reply = server.review(&server.http2(), "/mutate").await;
    assert_eq!(reply.version, reqwest::Version::HTTP_2);
    assert_review_answered(&reply);
    server.stop().await;
}

#[tokio::test]
async fn audit_endpoint_reports_without_patching() {
    let server = TestServer::start().await;
    let reply = server.review(&server.http2(), "/audit").await;
    assert_review_answered(&reply);
    let response = &reply.json()["response"];
    assert!(response.get("patch").is_none(), "{response}");
    assert_eq!(response["auditAnnotations"]["would-mutate"], "true");
    server.stop().await;
}

#[tokio::test]
async fn probes_and_metrics_answer_on_both_ports() {
    let server = TestServer::start().await;
    for client in [server.http1(), server.http2()] {
        for path in ["/healthz", "/readyz"] {
            let response = client.get(server.url(path)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
        }
    }
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = plain.get(server.metrics_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("gomemlimit_injector_build_info{version=\""),
        "{metrics}"
    );
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    let expiry = sample(
        &metrics,
        "gomemlimit_injector_tls_certificate_expiry_timestamp_seconds",
    );
    assert!(expiry > now, "expiry {expiry} is not in the future");
    server.stop().await;
}

#[tokio::test]
async fn rejects_malformed_reviews_with_a_one_line_400() {
    let server = TestServer::start().await;
    let client = server.http1();
    let cases = [
        ("malformed JSON", JSON, fixture("wire/malformed.json")),
        (
            "missing request",
            JSON,
            fixture("wire/missing-request.json"),
        ),
        ("missing uid", JSON, fixture("wire/missing-uid.json")),
        ("apiVersion v1beta1", JSON, fixture("wire/v1beta1.json")),
        ("text/plain", "text/plain", fixture("wire/pod-create.json")),
    ];
    for (case, content_type, body) in cases {
        for path in ["/mutate", "/audit"] {
            let reply = server.post(&client, path, content_type, body.clone()).await;
            assert_eq!(reply.status, 400, "{case} {path}: {}", reply.text());
            let text = reply.text();
            assert!(
                text.ends_with('\n') && text.trim_end().lines().count() == 1,
                "{case}: not one line: {text:?}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn rejects_a_9_mib_body_with_413() {
    let server = TestServer::start().await;
    let body = vec![b' '; 9 * 1024 * 1024];
    for client in [server.http1(), server.http2()] {
        let reply = server.post(&client, "/mutate", JSON, body.clone()).await;
        assert_eq!(reply.status, 413, "{:?}: {}", reply.version, reply.text());
    }
    assert_eq!(
        server
            .sample(
                r#"gomemlimit_injector_admission_requests_total{path="mutate",outcome="error"}"#
            )
            .await,
        2.0
    );
    server.stop().await;
}

/// A body of `chunks` 1 MiB frames with no declared length, counting the frames read.
struct Chunks {
    left: usize,
    pulled: Arc<AtomicUsize>,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        self.pulled.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(vec![
            b' ';
            1024 * 1024
        ])))))
    }
}

fn test_router() -> axum::Router {
    let mut registry = Registry::default();
    let state = AppState::new(
        Policy::default(),
        Metrics::new(&mut registry),
        Duration::from_secs(5),
    );
    router(state)
}

/// Posts `frames` 1 MiB frames to `/mutate` through the router, with `declared` as the
/// `Content-Length`; returns the status and how many frames were read.
async fn post_frames(frames: usize, declared: Option<usize>) -> (http::StatusCode, usize) {
    let pulled = Arc::new(AtomicUsize::new(0));
    let mut request = http::Request::post("/mutate").header("content-type", JSON);
    if let Some(length) = declared {
        request = request.header("content-length", length);
    }
    let body = axum::body::Body::new(Chunks {
        left: frames,
        pulled: Arc::clone(&pulled),
    });
    let response = test_router()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    (response.status(), pulled.load(Ordering::SeqCst))
}

#[tokio::test]
async fn cuts_off_an_oversized_chunked_body_without_reading_it_all() {
    let (status, pulled) = post_frames(64, None).await;
    assert_eq!(status, 413);
    // 8 MiB fit; the ninth frame crosses the limit. The remaining 55 are never read.
    assert_eq!(pulled, 9);
}

#[tokio::test]
async fn refuses_a_declared_oversized_body_before_reading_any() {
    let (status, pulled) = post_frames(9, Some(9 * 1024 * 1024)).await;
    assert_eq!(status, 413);
    assert_eq!(pulled, 0);
}

/// Reads until EOF (or error) and returns what arrived.
async fn read_to_close(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// Writes `bytes` one at a time, `pace` apart; returns how long until the server closed
/// the connection, or `None` if it never did.
async fn dribble(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    bytes: &[u8],
    pace: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    for byte in bytes {
        if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
            return Some(started.elapsed());
        }
        match tokio::time::timeout(pace, stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            // Anything the server says here (a 408, say) is followed by a close.
            Ok(Ok(_)) => {}
        }
    }
    None
}

#[tokio::test]
async fn cuts_off_a_client_that_sends_headers_slowly() {
    let server = TestServer::start().await;
    let mut stream = server.tls_connect(&[b"http/1.1"]).await;
    // 60 bytes at 50 ms each would take 3 s; the header-read timeout is 300 ms.
    let head = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaa";
    let closed = dribble(&mut stream, head, Duration::from_millis(50))
        .await
        .expect("the server never closed the connection");
    assert!(
        closed >= Duration::from_millis(250) && closed < Duration::from_secs(2),
        "closed after {closed:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn closes_connections_that_never_start_a_request() {
    let server = TestServer::start().await;
    // No TLS handshake at all.
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), read_to_close(&mut tcp))
        .await
        .expect("a silent TCP connection was kept open");
    // TLS done, HTTP/2 negotiated, but no preface.
    let mut tls = server.tls_connect(&[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tokio::time::timeout(Duration::from_secs(3), read_to_close(&mut tls))
        .await
        .expect("a silent HTTP/2 connection was kept open");
    assert!(started.elapsed() >= Duration::from_millis(250));
    server.stop().await;
}

#[tokio::test]
async fn a_connection_beyond_the_cap_closes_the_one_quiet_the_longest() {
    let server = TestServer::start_with(Options {
        // Long enough that no connection here closes by a deadline.
        header_read_timeout: Duration::from_secs(10),
        max_connections: 3,
        ..Options::default()
    })
    .await;
    let served = server.http2();
    assert_eq!(server.review(&served, "/mutate").await.status, 200);
    // Two connections that never start a TLS handshake.
    let mut first = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut second = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    let reply = server.review(&server.http1(), "/mutate").await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The oldest connection that never started a request made room...
    tokio::time::timeout(Duration::from_secs(1), read_to_close(&mut first))
        .await
        .expect("the oldest silent connection is closed");
    // ...and the others are still open.
    let mut byte = [0u8; 1];
    let still_open = tokio::time::timeout(Duration::from_millis(200), second.read(&mut byte)).await;
    assert!(
        still_open.is_err(),
        "the newer silent connection was closed"
    );
    server.stop().await;
}

#[tokio::test]
async fn never_closes_a_connection_with_a_request_in_flight_to_make_room() {
    let server = TestServer::start_with(Options {
        header_read_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_millis(800),
        max_connections: 1,
        ..Options::default()
    })
    .await;
    let mut busy = server.tls_connect(&[b"http/1.1"]).await;
    busy.write_all(
        b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{",
    )
    .await
    .unwrap();
    busy.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The new connection waits for the request in flight to end (408), then takes the
    // room of the now idle connection.
    let started = Instant::now();
    let reply = server.review(&server.http1(), "/mutate").await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let answer = tokio::time::timeout(Duration::from_secs(3), read_to_close(&mut busy))
        .await
        .expect("the idle connection made room");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn answers_small_reviews_while_large_ones_are_evaluated() {
    let server = TestServer::start_with(Options {
        max_large_reviews: 1,
        ..Options::default()
    })
    .await;
    let large = Bytes::from(support::pods::many_containers_review(2_000));
    assert!(large.len() > 256 * 1024, "{} bytes", large.len());
    // One HTTP/2 connection, as the API server's: the large bodies share its flow control.
    let client = server.http2();
    // Eight, one at a time: more than the small review needs, even in an optimized build.
    let mut pending = Vec::new();
    for _ in 0..8 {
        let (server_url, client, body) = (server.url("/mutate"), client.clone(), large.clone());
        pending.push(tokio::spawn(async move {
            let response = client
                .post(server_url)
                .header("content-type", JSON)
                .body(body)
                .send()
                .await
                .unwrap();
            (response.status(), response.bytes().await.unwrap().len())
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let small = fixture("pod-create-small.json");
    let reply = server.post(&client, "/mutate", JSON, small).await;
    assert_eq!(reply.status, 200);
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        pending.iter().any(|p| !p.is_finished()),
        "the small review waited for every large one"
    );
    for p in pending {
        let (status, len) = p.await.unwrap();
        assert_eq!(status, 200);
        assert!(len > 0);
    }
    server.stop().await;
}

/// Large reviews are evaluated on threads under the idle scheduling policy (`SCHED_IDLE`), so
/// that an async worker that wakes takes the CPU from them at once; no other thread is moved.
/// The test's runtime names its threads, so that those of tests running beside it, which
/// may evaluate large reviews too, are not counted.
#[cfg(target_os = "linux")]
#[test]
fn evaluates_large_reviews_under_the_idle_scheduling_policy() {
    /// `SCHED_IDLE` in `<sched.h>`.
    const SCHED_IDLE: &str = "5";
    /// As the kernel keeps it: 15 bytes.
    const NAME: &str = "idle-policy-tes";
    /// The policies of this test's threads other than the calling one: the 41st field of
    /// each `stat`, the 39th after the command name in parentheses.
    fn policies() -> Vec<String> {
        let tasks = std::fs::read_dir("/proc/self/task").expect("the threads");
        let stats =
            tasks.filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok());
        stats
            .filter_map(|stat| {
                let (head, fields) = stat.rsplit_once(')')?;
                let name = head.split_once('(')?.1;
                let policy = fields.split_whitespace().nth(38)?;
                (name == NAME).then(|| policy.to_owned())
            })
            .collect()
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("{NAME}t"))
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let server = TestServer::start().await;
        let client = server.http2();
        let small = fixture("pod-create-small.json");
        assert_eq!(
            server.post(&client, "/mutate", JSON, small).await.status,
            200
        );
        let before = policies();
        assert!(before.iter().all(|p| p != SCHED_IDLE), "{before:?}");
        let large = Bytes::from(support::pods::many_containers_review(2_000));
        assert_eq!(
            server.post(&client, "/mutate", JSON, large).await.status,
            200
        );
        let after = policies();
        assert_eq!(
            after.iter().filter(|p| *p == SCHED_IDLE).count(),
            1,
            "{after:?}"
        );
        server.stop().await;
    });
}

#[tokio::test]
async fn answers_408_when_the_body_does_not_arrive_in_time() {
    let server = TestServer::start_with(Options {
        request_timeout: Duration::from_millis(400),
        ..Options::default()
    })
    .await;
    let mut stream = server.tls_connect(&[b"http/1.1"]).await;
    stream
        .write_all(
            b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"apiVersion\":",
        )
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(3), read_to_close(&mut stream))
        .await
        .expect("no answer");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request timed out"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn serves_a_rewritten_certificate_without_restart() {
    let server = TestServer::start().await;
    assert_eq!(server.served_certificate().await, server.first.der());
    let second = server.ca.issue(2);
    server.write_pair(&second);
    server.until_serving(&second, Duration::from_secs(5)).await;
    assert!(server.sample(TLS_RELOADED).await >= 1.0);
    // Requests on the new certificate work.
    let reply = server.review(&server.http1(), "/mutate").await;
    assert_review_answered(&reply);
    server.stop().await;
}

#[tokio::test]
async fn serves_a_certificate_rotated_by_a_secret_volume_symlink_swap() {
    let mut server = TestServer::start_in_secret_volume().await;
    assert_eq!(server.served_certificate().await, server.first.der());
    let second = server.ca.issue(2);
    server.swap_secret_volume(&second);
    server.until_serving(&second, Duration::from_secs(5)).await;
    assert_eq!(
        server.sample(TLS_RELOADED).await,
        1.0,
        "an atomic swap is one reload, never a half-written pair"
    );
    assert_eq!(server.sample(TLS_RELOAD_FAILED).await, 0.0);
    server.stop().await;
}

#[tokio::test]
async fn keeps_the_current_certificate_when_the_new_pair_is_broken() {
    let mut server = TestServer::start_in_secret_volume().await;
    let other = server.ca.issue(2);
    // A certificate with somebody else's key.
    let mismatched = Pair {
        cert_pem: other.cert_pem.clone(),
        key_pem: server.ca.issue(3).key_pem,
    };
    server.swap_secret_volume(&mismatched);
    server
        .until_sample(TLS_RELOAD_FAILED, 1.0, Duration::from_secs(5))
        .await;
    assert_eq!(server.served_certificate().await, server.first.der());

    // Not PEM at all.
    let garbage = Pair {
        cert_pem: "not a certificate\n".into(),
        key_pem: "not a key\n".into(),
    };
    server.swap_secret_volume(&garbage);
    server
        .until_sample(TLS_RELOAD_FAILED, 2.0, Duration::from_secs(5))
        .await;
    assert_eq!(server.served_certificate().await, server.first.der());
    let reply = server.review(&server.http2(), "/mutate").await;
    assert_review_answered(&reply);

    // A good pair afterwards is picked up.
    server.swap_secret_volume(&other);
    server.until_serving(&other, Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test]
async fn applies_policy_file_changes_and_keeps_the_last_good_policy() {
    let server = TestServer::start_with(Options {
        policy_file: Some("mode: enforce\n".into()),
        ..Options::default()
    })
    .await;
    let client = server.http1();
    let mutate = || async { server.review(&client, "/mutate").await.json() };
    assert!(mutate().await["response"].get("patch").is_some());

    let path = server.policy_path.clone().unwrap();
    std::fs::write(&path, "mode: audit\n").unwrap();
    eventually(Duration::from_secs(5), "the audit policy", || async {
        mutate().await["response"]
            .get("patch")
            .is_none()
            .then_some(())
    })
    .await;

    std::fs::write(&path, "percnt: 90\n").unwrap();
    server
        .until_sample(POLICY_RELOAD_FAILED, 1.0, Duration::from_secs(5))
        .await;
    assert!(
        mutate().await["response"].get("patch").is_none(),
        "the broken file replaced the audit policy"
    );
    assert_eq!(server.sample(POLICY_RELOADED).await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn finishes_an_in_flight_review_during_shutdown_and_refuses_new_connections() {
    let mut server = TestServer::start().await;
    let body = fixture("wire/pod-create.json");
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut stream = server.tls_connect(&[b"http/1.1"]).await;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    // hyper sends 100 Continue when the handler starts reading the body: from here on the
    // review is in flight.
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(3), stream.read_exact(&mut interim))
        .await
        .expect("no 100 Continue")
        .unwrap();
    assert!(interim.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"));
    stream.write_all(first_half).await.unwrap();
    stream.flush().await.unwrap();

    server.begin_shutdown();
    server.until_not_ready(Duration::from_secs(3)).await;
    server.until_refusing(Duration::from_secs(3)).await;

    stream.write_all(second_half).await.unwrap();
    stream.flush().await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(3), read_to_close(&mut stream))
        .await
        .expect("the in-flight review was not answered");
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains(REVIEW_UID), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_reviews_by_path_and_outcome() {
    let server = TestServer::start().await;
    let client = server.http2();
    for _ in 0..2 {
        let reply = server.review(&client, "/mutate").await;
        assert_eq!(reply.status, 200);
    }
    let reply = server
        .post(&client, "/mutate", JSON, fixture("wire/malformed.json"))
        .await;
    assert_eq!(reply.status, 400);
    let reply = server.review(&client, "/audit").await;
    assert_eq!(reply.status, 200);

    let metrics = server.metrics().await;
    for (series, want) in [
        (
            r#"gomemlimit_injector_admission_requests_total{path="mutate",outcome="mutated"}"#,
            2.0,
        ),
        (
            r#"gomemlimit_injector_admission_requests_total{path="mutate",outcome="error"}"#,
            1.0,
        ),
        (
            r#"gomemlimit_injector_admission_requests_total{path="audit",outcome="audited"}"#,
            1.0,
        ),
        (
            r#"gomemlimit_injector_admission_duration_seconds_count{path="mutate"}"#,
            3.0,
        ),
        (
            r#"gomemlimit_injector_admission_duration_seconds_count{path="audit"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&metrics, series), want, "{series} in\n{metrics}");
    }
    assert!(
        metrics.contains("gomemlimit_injector_containers_total{action="),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn refuses_to_start_with_a_bad_key_pair_and_names_the_file() {
    let ca = TestCa::generate();
    let dir = tempfile::tempdir().unwrap();
    let files = KeyPairFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let config = |files: &KeyPairFiles| ServeConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        metrics_listen: ([127, 0, 0, 1], 0).into(),
        tls: TlsSource::Files(files.clone()),
        policy: PolicySource::default(),
        reload_interval: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(1),
        shutdown_delay: Duration::ZERO,
        background_audit: None,
        max_connections: 16,
        max_large_reviews: 1,
    };
    let chain = |e: &dyn std::error::Error| gomemlimit_injector::error::error_chain(e);

    let err = Server::bind(config(&files)).await.unwrap_err();
    assert!(
        chain(&err).contains(&files.cert.display().to_string()),
        "{}",
        chain(&err)
    );

    let a = ca.issue(1);
    let b = ca.issue(2);
    std::fs::write(&files.cert, &a.cert_pem).unwrap();
    std::fs::write(&files.key, &b.key_pem).unwrap();
    let err = Server::bind(config(&files)).await.unwrap_err();
    let text = chain(&err);
    assert!(
        text.contains(&files.cert.display().to_string())
            && text.contains(&files.key.display().to_string())
            && text.contains("does not belong"),
        "{text}"
    );
}

#[tokio::test]
async fn self_signed_mode_writes_its_ca_and_serves_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca_out = dir.path().join("ca.crt");
    let server = Server::bind(ServeConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        metrics_listen: ([127, 0, 0, 1], 0).into(),
        tls: TlsSource::SelfSigned {
            names: vec!["webhook.example.svc".into()],
            ca_out: ca_out.clone(),
        },
        policy: PolicySource::default(),
        reload_interval: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(1),
        shutdown_delay: Duration::ZERO,
        background_audit: None,
        max_connections: 16,
        max_large_reviews: 1,
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    let ca = std::fs::read(&ca_out).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("https://{host}:{}/healthz", addr.port());
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
    }
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

/// Every AdmissionReview fixture of `tests/data` (Pod CREATE, dry run, UPDATE, a ConfigMap,
/// the `pods/binding` subresource, an invalid annotation) answered over TLS exactly as the
/// pure handler answers it, on both endpoints.
#[tokio::test]
async fn serves_every_fixture_exactly_as_the_handler_answers() {
    use gomemlimit_injector::admission::{Endpoint, handle};
    let server = TestServer::start().await;
    let client = server.http2();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.ends_with(".json").then_some(name)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 7, "{names:?}");
    for name in &names {
        let body = std::fs::read(dir.join(name)).unwrap();
        let uid =
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["request"]["uid"].clone();
        for (path, endpoint) in [("/mutate", Endpoint::Mutate), ("/audit", Endpoint::Audit)] {
            let reply = server.post(&client, path, JSON, body.clone()).await;
            assert_eq!(reply.status, 200, "{name} {path}: {}", reply.text());
            assert_eq!(reply.json()["response"]["uid"], uid, "{name} {path}");
            let (expected, _) = handle(endpoint, Some(JSON), &body, &Policy::default());
            assert_eq!(
                reply.text(),
                String::from_utf8(expected.body).unwrap(),
                "{name} {path}"
            );
        }
    }
    server.stop().await;
}

/// A large review's answer, written to the connection as it is made (in chunks, several
/// times the body), arrives whole and exactly as the pure handler answers it, over
/// HTTP/1.1 and HTTP/2, on both endpoints; a malformed large body still gets its 400.
#[tokio::test]
async fn streams_large_answers_exactly_as_the_handler_answers() {
    use gomemlimit_injector::admission::{Endpoint, handle};
    let server = TestServer::start().await;
    let body = support::pods::many_containers_review(3_000);
    assert!(body.len() > 256 * 1024, "{} bytes", body.len());
    for client in [server.http1(), server.http2()] {
        for (path, endpoint) in [("/mutate", Endpoint::Mutate), ("/audit", Endpoint::Audit)] {
            let reply = server.post(&client, path, JSON, body.clone()).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            let (expected, _) = handle(endpoint, Some(JSON), &body, &Policy::default());
            if endpoint == Endpoint::Mutate {
                assert!(expected.body.len() > 1024 * 1024, "{}", expected.body.len());
            }
            let (got, want) = (reply.text(), String::from_utf8(expected.body).unwrap());
            let same = got
                .bytes()
                .zip(want.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            assert!(
                got == want,
                "{path}: {} bytes, {} expected; the same up to byte {same}",
                got.len(),
                want.len()
            );
        }
        let mut broken = body.clone();
        broken.truncate(body.len() - 2);
        let reply = server.post(&client, "/mutate", JSON, broken).await;
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert!(
            reply.text().starts_with("malformed JSON"),
            "{}",
            reply.text()
        );
    }
    server.stop().await;
}

/// With a shutdown delay the server turns not-ready at once but keeps answering reviews on
/// new connections until the delay ends, so the API server can stop using it first.
#[tokio::test]
async fn keeps_serving_while_not_ready_during_the_shutdown_delay() {
    let mut server = TestServer::start_with(Options {
        shutdown_delay: Duration::from_millis(1500),
        ..Options::default()
    })
    .await;
    let begun = Instant::now();
    server.begin_shutdown();
    server.until_not_ready(Duration::from_secs(1)).await;
    // A fresh client, so a new connection: still accepted and answered.
    let reply = server.review(&server.http1(), "/mutate").await;
    assert!(
        begun.elapsed() < Duration::from_millis(1500),
        "too slow to prove anything"
    );
    assert_review_answered(&reply);
    server.until_refusing(Duration::from_secs(4)).await;
    assert!(
        begun.elapsed() >= Duration::from_millis(1500),
        "closed before the delay"
    );
    server.stop().await;
}

/// The background audit needs a cluster to talk to: without a kubeconfig or an in-cluster
/// configuration `serve` refuses to start, naming what it looked for.
#[test]
fn background_audit_without_a_cluster_configuration_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-kubeconfig");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gomemlimit-injector"))
        .args(["serve", "--self-signed", "--ca-out"])
        .arg(dir.path().join("ca.crt"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--background-audit-interval", "5m"])
        .env("KUBECONFIG", &missing)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed to set up the background audit")
            && err.contains(&missing.display().to_string()),
        "{err}"
    );
}

/// Writes one HTTP/2 frame: its 9-byte header (length, type, flags, stream) and payload.
async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    kind: u8,
    flags: u8,
    id: u32,
    payload: &[u8],
) {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await.unwrap();
}

/// Reads one HTTP/2 frame: its type, flags, stream and payload.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.unwrap();
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.unwrap();
    (head[3], head[4], id, payload)
}

/// A header block of literal fields, neither indexed nor Huffman-coded (RFC 7541, 6.2.2).
fn literal_headers(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        block.push(0);
        for text in [name, value] {
            // The length's first byte holds lengths under 127.
            let length = u8::try_from(text.len()).ok().filter(|length| *length < 127);
            block.push(length.expect("a name or value under 127 bytes"));
            block.extend_from_slice(text.as_bytes());
        }
    }
    block
}

// HTTP/2 frame types, flags and a setting (RFC 9113).
const HTTP2_DATA: u8 = 0x0;
const HTTP2_HEADERS: u8 = 0x1;
const HTTP2_RST_STREAM: u8 = 0x3;
const HTTP2_SETTINGS: u8 = 0x4;
const HTTP2_GOAWAY: u8 = 0x7;
const HTTP2_END_STREAM: u8 = 0x1;
const HTTP2_ACK: u8 = 0x1;
const HTTP2_END_HEADERS: u8 = 0x4;
const HTTP2_MAX_FRAME_SIZE: u16 = 0x5;

/// Opens HTTP/2 on `tls`: the preface and empty SETTINGS, then the server's SETTINGS,
/// acknowledged (the server applies them from then on); returns their MAX_FRAME_SIZE.
async fn open_http2<S: AsyncRead + AsyncWrite + Unpin>(tls: &mut S) -> Option<u32> {
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    write_frame(tls, HTTP2_SETTINGS, 0, 0, &[]).await;
    let (kind, flags, _, settings) = read_frame(tls).await;
    assert_eq!(
        (kind, flags),
        (HTTP2_SETTINGS, 0),
        "the server's first frame"
    );
    write_frame(tls, HTTP2_SETTINGS, HTTP2_ACK, 0, &[]).await;
    settings.chunks_exact(6).find_map(|setting| {
        (u16::from_be_bytes([setting[0], setting[1]]) == HTTP2_MAX_FRAME_SIZE)
            .then(|| u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]))
    })
}

/// The body of the answer on stream `id`, read to its END_STREAM; fails on a GOAWAY or a
/// RST_STREAM.
async fn http2_answer<S: AsyncRead + Unpin>(tls: &mut S, id: u32) -> Vec<u8> {
    let mut answer = Vec::new();
    loop {
        let (kind, flags, on, payload) = read_frame(tls).await;
        assert_ne!(kind, HTTP2_GOAWAY, "GOAWAY: {payload:?}");
        assert_ne!(kind, HTTP2_RST_STREAM, "RST_STREAM: {payload:?}");
        if kind == HTTP2_DATA && on == id {
            answer.extend_from_slice(&payload);
            if flags & HTTP2_END_STREAM != 0 {
                return answer;
            }
        }
    }
}

/// The API server's HTTP/2 client sends a request body in frames as large as the server's
/// SETTINGS allow. A 28 KB review in one DATA frame, above HTTP/2's default limit of
/// 16 KiB, is answered, not refused with FRAME_SIZE_ERROR.
#[tokio::test]
async fn takes_an_http2_review_in_one_frame_of_up_to_64_kib() {
    let server = TestServer::start().await;
    let body = fixture("pod-create.json");
    assert!(body.len() > 16 * 1024 && body.len() < 64 * 1024);
    let mut tls = server.tls_connect(&[b"h2"]).await;
    assert_eq!(open_http2(&mut tls).await, Some(64 * 1024));
    let length = body.len().to_string();
    let headers = literal_headers(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":path", "/mutate"),
        (":authority", "localhost"),
        ("content-type", JSON),
        ("content-length", &length),
    ]);
    write_frame(&mut tls, HTTP2_HEADERS, HTTP2_END_HEADERS, 1, &headers).await;
    write_frame(&mut tls, HTTP2_DATA, HTTP2_END_STREAM, 1, &body).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), http2_answer(&mut tls, 1))
        .await
        .expect("no answer to a review in one frame");
    let review: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        review["response"]["uid"],
        "9a0c5b7e-51d2-4f0a-b6c1-7e4d2f8a3c10"
    );
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    drop(tls);
    server.stop().await;
}
