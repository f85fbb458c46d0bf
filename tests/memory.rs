//! The server gives a large review's freed memory back to the system when the review ends,
//! through the hook the binary sets (`server::set_memory_release`); a small review does not
//! call it. A test binary of its own: the hook is set once per process.

pub mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gomemlimit_injector::server::set_memory_release;
use support::server::{TestServer, eventually};

const JSON: &str = "application/json";

static RELEASES: AtomicUsize = AtomicUsize::new(0);

fn count_release() {
    RELEASES.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_review_gives_its_memory_back_when_it_ends() {
    set_memory_release(count_release);
    let server = TestServer::start().await;
    let client = server.http2();

    for _ in 0..3 {
        let reply = server.review(&client, "/mutate").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(
        RELEASES.load(Ordering::SeqCst),
        0,
        "a small review released"
    );

    let large = support::pods::many_containers_review(1_000);
    assert!(large.len() >= 64 * 1024, "{} bytes", large.len());
    for round in 1..=2 {
        let reply = server.post(&client, "/mutate", JSON, large.clone()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        // The answer may arrive before its blocking thread has given the memory back.
        eventually(
            Duration::from_secs(5),
            "the release after a large review",
            || {
                let released = RELEASES.load(Ordering::SeqCst);
                async move { (released == round).then_some(()) }
            },
        )
        .await;
    }
    server.stop().await;
}
