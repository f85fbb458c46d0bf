//! 2,000 slow or idle connections held open against `serve`, its memory meanwhile, and
//! reviews on new connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use super::{Serve, Tls, median_max, ms, post};

const CONNECTIONS: usize = 2_000;
/// Connections being opened at once.
const OPENING: usize = 32;

/// What one held connection does: nothing, or part of a request, or nothing after one.
#[derive(Clone, Copy)]
enum Kind {
    /// TCP only: no TLS handshake.
    Silent,
    /// TLS, then part of an HTTP/1.1 request head.
    SlowHead,
    /// TLS with HTTP/2: the client preface and settings, no request.
    Http2Preface,
    /// TLS, one HTTP/1.1 request answered, then an idle keep-alive connection.
    IdleKeepAlive,
}

const KINDS: [Kind; 4] = [
    Kind::Silent,
    Kind::SlowHead,
    Kind::Http2Preface,
    Kind::IdleKeepAlive,
];

/// A held connection: kept open until dropped.
type Held = Box<dyn Send>;

pub(super) async fn slow_and_idle(tls: &Tls) {
    println!(
        "\n# {CONNECTIONS} slow or idle connections (a quarter each: TCP only, part of an \
         HTTP/1.1 head, HTTP/2 preface only, idle after one request), --header-read-timeout 60s"
    );
    for cap in ["1024", "2048"] {
        let extra = ["--header-read-timeout", "60s", "--max-connections", cap];
        let (serve, _) = Serve::start(tls, &extra);
        let idle = serve.mib("VmRSS");
        let base_fds = serve.fds();
        let started = Instant::now();
        let (held, failed) = open_all(&serve).await;
        let opening = started.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss, peak) = (serve.mib("VmRSS"), serve.mib("VmHWM"));
        let open = serve.fds().saturating_sub(base_fds);
        let mut fresh = fresh_reviews(&serve).await;
        let (median, max) = median_max(&mut fresh);
        println!(
            "--max-connections {cap}: opened {} in {:.1} s ({failed} closed by the server while \
             opening), {open} open at the server; VmRSS {idle:.1} -> {rss:.1} MiB, peak \
             {peak:.1} MiB; a review on a new connection: median {:.1} ms, max {:.1} ms",
            held.len(),
            opening.as_secs_f64(),
            ms(median),
            ms(max)
        );
        drop(held);
    }
}

/// Opens [`CONNECTIONS`] connections, [`OPENING`] at a time, the kinds in turn; returns
/// those opened and how many failed.
async fn open_all(serve: &Serve) -> (Vec<Held>, usize) {
    let config = client_config(serve);
    let mut held = Vec::with_capacity(CONNECTIONS);
    let mut failed = 0;
    let mut opening = JoinSet::new();
    for i in 0..CONNECTIONS {
        if opening.len() >= OPENING {
            collect(opening.join_next().await, &mut held, &mut failed);
        }
        let kind = KINDS[i % KINDS.len()];
        opening.spawn(open(serve.addr, Arc::clone(&config), kind));
    }
    while let Some(joined) = opening.join_next().await {
        collect(Some(joined), &mut held, &mut failed);
    }
    (held, failed)
}

fn collect(
    joined: Option<Result<std::io::Result<Held>, tokio::task::JoinError>>,
    held: &mut Vec<Held>,
    failed: &mut usize,
) {
    match joined {
        Some(Ok(Ok(connection))) => held.push(connection),
        Some(_) => *failed += 1,
        None => {}
    }
}

fn client_config(serve: &Serve) -> Arc<rustls::ClientConfig> {
    let ca = CertificateDer::from_pem_file(&serve.ca).expect("the CA certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("a CA");
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn open(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    kind: Kind,
) -> std::io::Result<Held> {
    let tcp = TcpStream::connect(addr).await?;
    if let Kind::Silent = kind {
        return Ok(Box::new(tcp));
    }
    let mut config = (*config).clone();
    config.alpn_protocols = match kind {
        Kind::Http2Preface => vec![b"h2".to_vec()],
        _ => vec![b"http/1.1".to_vec()],
    };
    let name = ServerName::try_from("localhost").expect("a server name");
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    match kind {
        Kind::SlowHead => {
            stream
                .write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
                .await?;
        }
        Kind::Http2Preface => {
            stream
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await?;
            // An empty SETTINGS frame.
            stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await?;
        }
        Kind::IdleKeepAlive => {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await?;
            read_answer(&mut stream).await?;
        }
        Kind::Silent => {}
    }
    stream.flush().await?;
    Ok(Box::new(stream))
}

/// Reads a short answer (`/healthz`: "ok") to its end.
async fn read_answer(
    stream: &mut tokio_rustls::client::TlsStream<TcpStream>,
) -> std::io::Result<()> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"ok\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        answer.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// Five reviews of the 4 KB pod, each on a new HTTP/2 connection (TLS handshake included).
async fn fresh_reviews(serve: &Serve) -> Vec<Duration> {
    let small = bytes::Bytes::from(super::support::fixture("pod-create-small.json"));
    let mut took = Vec::new();
    for _ in 0..5 {
        let client = serve.client(false);
        let (status, latency) = post(&client, &serve.url("/mutate"), small.clone()).await;
        assert_eq!(status, 200);
        took.push(latency);
    }
    took
}
