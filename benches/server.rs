//! One review over HTTPS through the real server (HTTP/2 and HTTP/1.1 keep-alive), against
//! a bare `GET /healthz` on the same server and connection: the ratio is what a review
//! costs on top of the TLS transport, measured in one run.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use gomemlimit_injector::policy::PolicySource;
use gomemlimit_injector::server::{ServeConfig, Server};
use gomemlimit_injector::tls::TlsSource;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("failed to read {path}: {e}"))
}

fn server(c: &mut Criterion) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_out = dir.path().join("ca.crt");
    let config = ServeConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        metrics_listen: ([127, 0, 0, 1], 0).into(),
        tls: TlsSource::SelfSigned {
            names: Vec::new(),
            ca_out: ca_out.clone(),
        },
        policy: PolicySource::default(),
        reload_interval: Duration::from_secs(60),
        header_read_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        shutdown_timeout: Duration::from_secs(1),
        shutdown_delay: Duration::ZERO,
    };
    let bound = runtime.block_on(Server::bind(config)).unwrap();
    let addr = bound.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = runtime.spawn(bound.run(async {
        let _ = stopped.await;
    }));
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_out).unwrap()).unwrap();
    let client = |http1: bool| {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .resolve("localhost", addr);
        let builder = if http1 { builder.http1_only() } else { builder };
        builder.build().unwrap()
    };
    let body = bytes::Bytes::from(fixture("pod-create.json"));
    let base = format!("https://localhost:{}", addr.port());

    let mut group = c.benchmark_group("https");
    for (label, http1) in [("h2", false), ("http1", true)] {
        let client = client(http1);
        group.bench_function(format!("{label}/healthz_baseline"), |b| {
            b.to_async(&runtime).iter(|| async {
                let r = client.get(format!("{base}/healthz")).send().await.unwrap();
                assert!(r.status().is_success());
                r.bytes().await.unwrap()
            })
        });
        group.bench_function(format!("{label}/mutate"), |b| {
            b.to_async(&runtime).iter(|| async {
                let r = client
                    .post(format!("{base}/mutate"))
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
    let _ = stop.send(());
    runtime.block_on(task).unwrap().unwrap();
}

criterion_group!(benches, server);
criterion_main!(benches);
