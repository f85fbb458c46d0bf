//! The real server on 127.0.0.1:0, with a CA made at test time, TLS clients, and the one
//! helper that posts a body to it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gomemlimit_injector::policy::PolicySource;
use gomemlimit_injector::server::{ServeConfig, Server, ServerError};
use gomemlimit_injector::tls::{KeyPairFiles, TlsSource};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A CA that issues serving certificates for `localhost` and `127.0.0.1`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
}

/// A serving key pair, PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pair {
    /// The leaf certificate, DER.
    pub fn der(&self) -> CertificateDer<'static> {
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()
    }
}

impl TestCa {
    /// A new CA, with its key in memory only.
    pub fn generate() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
        }
    }

    /// A serving certificate with the given serial number.
    pub fn issue(&self, serial: u64) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A rustls client config trusting this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// Server settings for a test; short timeouts so that timing tests are quick.
#[derive(Clone)]
pub struct Options {
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub shutdown_delay: Duration,
    pub reload_interval: Duration,
    /// Contents of a policy file passed as `--config`.
    pub policy_file: Option<String>,
    /// Lay the key pair out like a Kubernetes Secret volume (`tls.crt -> ..data/tls.crt`).
    pub secret_volume: bool,
    pub max_connections: usize,
    pub max_large_reviews: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            header_read_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            shutdown_delay: Duration::ZERO,
            reload_interval: Duration::from_millis(100),
            policy_file: None,
            secret_volume: false,
            max_connections: gomemlimit_injector::server::DEFAULT_MAX_CONNECTIONS,
            max_large_reviews: gomemlimit_injector::server::DEFAULT_MAX_LARGE_REVIEWS,
        }
    }
}

/// A real server on 127.0.0.1:0, run in-process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub ca: TestCa,
    /// The pair the server started with (serial 1).
    pub first: Pair,
    pub dir: tempfile::TempDir,
    pub files: KeyPairFiles,
    pub policy_path: Option<PathBuf>,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), ServerError>>>,
    volume_generation: u32,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    /// A server whose key pair lies in a Secret volume layout (see
    /// [`TestServer::swap_secret_volume`]).
    pub async fn start_in_secret_volume() -> Self {
        Self::start_with(Options {
            secret_volume: true,
            ..Options::default()
        })
        .await
    }

    pub async fn start_with(options: Options) -> Self {
        let ca = TestCa::generate();
        let first = ca.issue(1);
        let dir = tempfile::tempdir().unwrap();
        let files = KeyPairFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        };
        let policy_path = options.policy_file.as_ref().map(|text| {
            let path = dir.path().join("policy.yaml");
            std::fs::write(&path, text).unwrap();
            path
        });
        let mut server = TestServer {
            addr: ([127, 0, 0, 1], 0).into(),
            metrics_addr: ([127, 0, 0, 1], 0).into(),
            ca,
            first: first.clone(),
            dir,
            files,
            policy_path,
            shutdown: None,
            task: None,
            volume_generation: 0,
        };
        if options.secret_volume {
            server.swap_secret_volume(&first);
        } else {
            server.write_pair(&first);
        }
        let config = server.config(&options);
        let bound = Server::bind(config).await.expect("server binds");
        server.addr = bound.local_addr();
        server.metrics_addr = bound.metrics_addr();
        let (tx, rx) = oneshot::channel::<()>();
        server.shutdown = Some(tx);
        server.task = Some(tokio::spawn(bound.run(async {
            let _ = rx.await;
        })));
        server
    }

    /// The configuration `serve` would build from flags for this server.
    pub fn config(&self, options: &Options) -> ServeConfig {
        ServeConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            metrics_listen: ([127, 0, 0, 1], 0).into(),
            tls: TlsSource::Files(self.files.clone()),
            policy: PolicySource::new(self.policy_path.clone()),
            reload_interval: options.reload_interval,
            header_read_timeout: options.header_read_timeout,
            request_timeout: options.request_timeout,
            shutdown_timeout: options.shutdown_timeout,
            shutdown_delay: options.shutdown_delay,
            background_audit: None,
            max_connections: options.max_connections,
            max_large_reviews: options.max_large_reviews,
        }
    }

    /// Overwrites the pair in place (key first, then certificate, as a naive tool would).
    pub fn write_pair(&self, pair: &Pair) {
        std::fs::write(&self.files.key, &pair.key_pem).unwrap();
        std::fs::write(&self.files.cert, &pair.cert_pem).unwrap();
    }

    /// Publishes `pair` the way the kubelet updates a Secret volume: a new timestamped
    /// directory, then an atomic rename of the `..data` symlink onto it. `tls.crt` and
    /// `tls.key` are symlinks through `..data` and never change themselves.
    pub fn swap_secret_volume(&mut self, pair: &Pair) {
        use std::os::unix::fs::symlink;
        let root = self.dir.path();
        self.volume_generation += 1;
        let generation = format!(
            "..2025_01_01_00_00_{:02}.{}",
            self.volume_generation,
            std::process::id()
        );
        let target = root.join(&generation);
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("tls.crt"), &pair.cert_pem).unwrap();
        std::fs::write(target.join("tls.key"), &pair.key_pem).unwrap();
        let tmp = root.join("..data_tmp");
        symlink(&generation, &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
        for name in ["tls.crt", "tls.key"] {
            let link = root.join(name);
            if link.symlink_metadata().is_err() {
                symlink(Path::new("..data").join(name), &link).unwrap();
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics_addr)
    }

    fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca.cert_pem.as_bytes()).unwrap(),
            )
            // Pin localhost to the bound IPv4 address; the certificate names localhost.
            .resolve("localhost", self.addr)
            .timeout(Duration::from_secs(20))
    }

    /// A client that speaks HTTP/1.1 only.
    pub fn http1(&self) -> reqwest::Client {
        self.client_builder().http1_only().build().unwrap()
    }

    /// A client that negotiates HTTP/2 through ALPN.
    pub fn http2(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    /// Raw TLS connection to the webhook port, offering `alpn`.
    pub async fn tls_connect(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        TlsConnector::from(self.ca.client_config(alpn))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// The leaf certificate a fresh handshake is served.
    pub async fn served_certificate(&self) -> CertificateDer<'static> {
        let stream = self.tls_connect(&[b"http/1.1"]).await;
        stream.get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(self.metrics_url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// The value of the sample `series` (name and labels, exactly as exposed), or 0.
    pub async fn sample(&self, series: &str) -> f64 {
        sample(&self.metrics().await, series)
    }

    /// Posts `body` to `path` with `content_type`: the one helper every review test uses.
    pub async fn post(
        &self,
        client: &reqwest::Client,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Reply {
        let response = client
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e:?}"));
        Reply {
            status: response.status(),
            version: response.version(),
            content_type: response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default(),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    /// Posts the Pod CREATE review of `tests/data/wire/pod-create.json` to `path`.
    pub async fn review(&self, client: &reqwest::Client, path: &str) -> Reply {
        let body = super::fixture("wire/pod-create.json");
        self.post(client, path, "application/json", body).await
    }

    /// Waits up to `limit` for a fresh handshake to be served `pair`.
    pub async fn until_serving(&self, pair: &Pair, limit: Duration) {
        let leaf = pair.der();
        eventually(limit, "the new certificate", || async {
            (self.served_certificate().await == leaf).then_some(())
        })
        .await;
    }

    /// Waits up to `limit` for the sample `series` to reach `value`.
    pub async fn until_sample(&self, series: &str, value: f64, limit: Duration) {
        let what = format!("{series} to reach {value}");
        eventually(limit, &what, || async {
            (self.sample(series).await >= value).then_some(())
        })
        .await;
    }

    /// Waits up to `limit` for `/readyz` on the metrics port to answer 503.
    pub async fn until_not_ready(&self, limit: Duration) {
        let plain = reqwest::Client::builder().no_proxy().build().unwrap();
        eventually(limit, "readyz to turn 503", || async {
            let response = plain.get(self.metrics_url("/readyz")).send().await.ok()?;
            (response.status() == 503).then_some(())
        })
        .await;
    }

    /// Waits up to `limit` for the webhook port to refuse new connections.
    pub async fn until_refusing(&self, limit: Duration) {
        eventually(limit, "new connections to be refused", || async {
            TcpStream::connect(self.addr).await.is_err().then_some(())
        })
        .await;
    }

    /// Starts the graceful shutdown, as the first SIGTERM would.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down and waits for `run` to return.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }
}

/// What a posted request got back.
#[derive(Debug)]
pub struct Reply {
    pub status: reqwest::StatusCode,
    pub version: reqwest::Version,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// The value of `series` in an exposition, or 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
