//! One review over HTTPS through the real server (HTTP/2 and HTTP/1.1 keep-alive), against
//! a bare `GET /healthz` on the same server and connection: the ratio is what a review
//! costs on top of the TLS transport, measured in one run.

#[path = "../tests/support/mod.rs"]
pub mod support;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use support::fixture;
use support::server::{Options, TestServer};

fn server(c: &mut Criterion) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Deadlines well beyond the pauses between measurements, so that the keep-alive
    // connections last through the run.
    let options = Options {
        header_read_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        shutdown_timeout: Duration::from_secs(1),
        reload_interval: Duration::from_secs(60),
        ..Options::default()
    };
    let server = runtime.block_on(TestServer::start_with(options));
    let body = bytes::Bytes::from(fixture("pod-create.json"));

    let mut group = c.benchmark_group("https");
    for (label, client) in [("h2", server.http2()), ("http1", server.http1())] {
        group.bench_function(format!("{label}/healthz_baseline"), |b| {
            b.to_async(&runtime).iter(|| async {
                let r = client.get(server.url("/healthz")).send().await.unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap()
            })
        });
        group.bench_function(format!("{label}/mutate"), |b| {
            b.to_async(&runtime).iter(|| async {
                let r = client
                    .post(server.url("/mutate"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap()
            })
        });
    }
    group.finish();
    runtime.block_on(server.stop());
}

criterion_group!(benches, server);
criterion_main!(benches);
