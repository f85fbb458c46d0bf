//! The flags: what each command accepts, with its default and its
//! `GOMEMLIMIT_INJECTOR_<NAME>` variable, and how it becomes the configuration the
//! command runs with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{ArgGroup, Args, ValueEnum};

use crate::background::{self, BackgroundAuditConfig, LeaseConfig, NamespaceSelection, Selection};
use crate::native::{self, FailurePolicy};
use crate::policy::{self, Gogc, MissingLimit, Mode, Overrides, PolicySource};
use crate::quantity::Quantity;
use crate::server::{self, ServeConfig};
use crate::telemetry::LogFormat;
use crate::tls::{self, KeyPairFiles, SecretConfig, TlsSource};

/// Logging flags, accepted before or after the subcommand.
#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Log line format.
    #[arg(
        long,
        global = true,
        help_heading = "Logging",
        env = "GOMEMLIMIT_INJECTOR_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub(crate) log_format: LogFormat,
    /// Log filter (a level such as info or debug, or tracing directives); RUST_LOG wins
    /// when set.
    #[arg(
        long,
        global = true,
        help_heading = "Logging",
        env = "GOMEMLIMIT_INJECTOR_LOG_LEVEL",
        default_value = "info"
    )]
    pub(crate) log_level: String,
}

/// Policy flags, shared by `serve`, `mutate` and `audit` so that offline results match the
/// webhook's. Each also reads `GOMEMLIMIT_INJECTOR_<NAME>`; flags beat variables beat the file.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct PolicyArgs {
    /// Policy YAML file (keys: percent, gogc, missingLimit, defaultMemory, minPercent,
    /// maxPercent, excludeContainers, mode, restartOnResize).
    #[arg(long, env = "GOMEMLIMIT_INJECTOR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// GOMEMLIMIT as a percentage of the memory limit; 100 uses the downward API.
    #[arg(long, env = "GOMEMLIMIT_INJECTOR_PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    percent: Option<u8>,
    /// GOGC to add: off, keep (add nothing) or an integer.
    #[arg(long, env = "GOMEMLIMIT_INJECTOR_GOGC", value_parser = parse_gogc)]
    gogc: Option<Gogc>,
    /// Containers with neither memory request nor limit: skip, deny or default.
    #[arg(long, env = "GOMEMLIMIT_INJECTOR_MISSING_LIMIT", value_enum)]
    missing_limit: Option<MissingLimit>,
    /// Memory request and limit for `--missing-limit default`, e.g. 512Mi.
    #[arg(long, env = "GOMEMLIMIT_INJECTOR_DEFAULT_MEMORY", value_parser = policy::parse_memory)]
    default_memory: Option<Quantity>,
    /// Lowest `gomemlimit.io/percent` a pod may ask for.
    #[arg(long, env = "GOMEMLIMIT_INJECTOR_MIN_PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    min_percent: Option<u8>,
    /// Highest `gomemlimit.io/percent` a pod may ask for.
    #[arg(long, env = "GOMEMLIMIT_INJECTOR_MAX_PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    max_percent: Option<u8>,
    /// Container names never to touch (comma-separated).
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_EXCLUDE_CONTAINERS",
        value_delimiter = ','
    )]
    exclude_containers: Option<Vec<String>>,
    /// enforce (patch pods) or audit (report only).
    #[arg(long, env = "GOMEMLIMIT_INJECTOR_MODE", value_enum)]
    mode: Option<Mode>,
    /// Give containers with a downward-API GOMEMLIMIT the memory resizePolicy
    /// RestartContainer, so that an in-place resize restarts them with the new limit
    /// (true or false).
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_RESTART_ON_RESIZE",
        value_name = "BOOL"
    )]
    restart_on_resize: Option<bool>,
}

impl PolicyArgs {
    /// Where the policy comes from, as these flags say.
    pub(super) fn source(&self) -> PolicySource {
        PolicySource {
            file: self.config.clone(),
            overrides: Overrides {
                percent: self.percent,
                gogc: self.gogc,
                missing_limit: self.missing_limit,
                default_memory: self.default_memory.clone(),
                min_percent: self.min_percent,
                max_percent: self.max_percent,
                exclude_containers: self.exclude_containers.clone(),
                mode: self.mode,
                restart_on_resize: self.restart_on_resize,
            },
        }
    }
}

fn parse_gogc(s: &str) -> Result<Gogc, String> {
    s.parse()
}

impl ValueEnum for MissingLimit {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            MissingLimit::Skip,
            MissingLimit::Deny,
            MissingLimit::Default,
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            MissingLimit::Skip => {
                PossibleValue::new("skip").help("Leave the container alone and warn")
            }
            MissingLimit::Deny => PossibleValue::new("deny").help("Reject the pod"),
            MissingLimit::Default => {
                PossibleValue::new("default").help("Set request and limit to `defaultMemory`")
            }
        })
    }
}

impl ValueEnum for Mode {
    fn value_variants<'a>() -> &'a [Self] {
        &[Mode::Enforce, Mode::Audit]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }))
    }
}

impl ValueEnum for Selection {
    fn value_variants<'a>() -> &'a [Self] {
        &[Selection::OptIn, Selection::ClusterWide]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Selection::OptIn => {
                PossibleValue::new("optIn").help("Namespaces labelled gomemlimit.io/inject=enabled")
            }
            Selection::ClusterWide => PossibleValue::new("clusterWide").help(
                "Every namespace but those labelled gomemlimit.io/inject=disabled, the system \
                 namespaces and --exclude-namespaces",
            ),
        })
    }
}

impl ValueEnum for LogFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[LogFormat::Text, LogFormat::Json]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            LogFormat::Text => PossibleValue::new("text").help("Human-readable lines"),
            LogFormat::Json => PossibleValue::new("json")
                .help("One JSON object per line, fields at the top level (for log collectors)"),
        })
    }
}

/// `mutate` flags.
#[derive(Debug, Args)]
pub(crate) struct MutateArgs {
    /// Manifest file (YAML, multi-document, or JSON; a List works too), or - for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub(crate) file: String,
    /// Print a unified diff instead of the manifests.
    #[arg(long)]
    pub(crate) diff: bool,
    /// Namespace for objects that name none (used in messages).
    #[arg(short = 'n', long, default_value = "default")]
    pub(crate) namespace: String,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

/// How `audit` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    Table,
    Json,
}

/// `audit` flags.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Manifest file or - for stdin; without it the live cluster (current kubeconfig, or
    /// in-cluster configuration) is audited.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub(crate) file: Option<String>,
    /// Live: only this namespace (default: all namespaces). Manifests: namespace for
    /// objects that name none.
    #[arg(short = 'n', long)]
    pub(crate) namespace: Option<String>,
    /// Live: every namespace (the default when --namespace is not given).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub(crate) all_namespaces: bool,
    /// table (default) or json.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub(crate) output: OutputFormat,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

/// `policy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum PolicyCommand {
    /// Print the policy as native admission policies for Kubernetes 1.36+: a
    /// MutatingAdmissionPolicy, ValidatingAdmissionPolicies and their bindings, with the
    /// same settings as `serve` (file, flags, GOMEMLIMIT_INJECTOR_<NAME>).
    Render(RenderArgs),
}

/// What the API server does when a policy cannot be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FailurePolicyArg {
    /// Reject the pod.
    #[value(name = "Fail")]
    Fail,
    /// Admit the pod unchanged.
    #[value(name = "Ignore")]
    Ignore,
}

/// How `policy render` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RenderFormat {
    /// A YAML stream, one document per object.
    Yaml,
    /// A v1 List.
    Json,
}

/// `policy render` flags.
#[derive(Debug, Args)]
pub(crate) struct RenderArgs {
    /// Which namespaces the policies apply to.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_SELECTION",
        value_enum,
        default_value_t = Selection::OptIn
    )]
    pub(crate) selection: Selection,
    /// With --selection clusterWide: namespaces to leave alone besides the system ones
    /// (repeatable or comma-separated).
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_EXCLUDE_NAMESPACES",
        value_name = "NAMESPACE",
        value_delimiter = ','
    )]
    pub(crate) exclude_namespaces: Vec<String>,
    /// Name of the policies and bindings; the denying policy is deny.<NAME>.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_POLICY_NAME",
        default_value = native::DEFAULT_NAME,
        value_parser = parse_policy_name
    )]
    pub(crate) name: String,
    /// What the API server does when a policy cannot be evaluated.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_FAILURE_POLICY",
        value_enum,
        default_value_t = FailurePolicyArg::Fail
    )]
    pub(crate) failure_policy: FailurePolicyArg,
    /// yaml (default) or json.
    #[arg(short = 'o', long, value_enum, default_value_t = RenderFormat::Yaml)]
    pub(crate) output: RenderFormat,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
}

impl RenderArgs {
    /// The rendering options these flags describe.
    pub(crate) fn options(&self) -> native::Options {
        native::Options {
            name: self.name.clone(),
            selection: namespace_selection(self.selection, &self.exclude_namespaces),
            failure_policy: match self.failure_policy {
                FailurePolicyArg::Fail => FailurePolicy::Fail,
                FailurePolicyArg::Ignore => FailurePolicy::Ignore,
            },
        }
    }
}

/// `--selection` with `--exclude-namespaces`, blanks left out.
fn namespace_selection(selection: Selection, excluded: &[String]) -> NamespaceSelection {
    NamespaceSelection {
        selection,
        excluded: excluded
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect(),
    }
}

/// A policy name: a DNS subdomain that stays one with `deny.` in front.
fn parse_policy_name(text: &str) -> Result<String, String> {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if text.len() + "deny.".len() <= 253 && text.split('.').all(label) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a policy name: expected a DNS subdomain (lowercase letters, digits, '-' and '.') of at most 248 characters"
        ))
    }
}

/// `serve` flags.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("tls_source")
        .required(true)
        .args(["tls_cert_file", "self_signed", "cert_secret"])
))]
pub(crate) struct ServeArgs {
    /// HTTPS address for AdmissionReviews.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub(crate) listen: SocketAddr,
    /// Plain HTTP address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub(crate) metrics_listen: SocketAddr,
    /// PEM certificate chain (leaf first); reloaded when it changes.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub(crate) tls_cert_file: Option<PathBuf>,
    /// PEM private key of the certificate; reloaded when it changes.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub(crate) tls_key_file: Option<PathBuf>,
    /// Generate a CA and a serving certificate at start-up (for local use).
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_SELF_SIGNED",
        conflicts_with_all = ["tls_cert_file", "tls_key_file", "cert_secret"]
    )]
    pub(crate) self_signed: bool,
    /// Keep the CA and serving certificate in this Secret (created and renewed by the
    /// webhook itself; no cert-manager needed).
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_CERT_SECRET",
        value_name = "NAME",
        conflicts_with_all = ["tls_cert_file", "tls_key_file"]
    )]
    pub(crate) cert_secret: Option<String>,
    /// Namespace of --cert-secret (default: POD_NAMESPACE, else this pod's namespace).
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_CERT_SECRET_NAMESPACE",
        value_name = "NAMESPACE",
        requires = "cert_secret"
    )]
    pub(crate) cert_secret_namespace: Option<String>,
    /// MutatingWebhookConfiguration whose caBundle --cert-secret keeps set to its CA.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_WEBHOOK_CONFIGURATION",
        value_name = "NAME",
        requires = "cert_secret"
    )]
    pub(crate) webhook_configuration: Option<String>,
    /// Service in front of the webhook; its in-cluster DNS names go into the --cert-secret
    /// certificate.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_SERVICE_NAME",
        value_name = "NAME",
        requires = "cert_secret"
    )]
    pub(crate) service_name: Option<String>,
    /// Validity of a --cert-secret serving certificate; renewed when a third is left.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_CERT_VALIDITY",
        value_name = "DURATION",
        default_value = "2160h",
        value_parser = parse_duration
    )]
    pub(crate) cert_validity: Duration,
    /// Where --self-signed writes its CA certificate.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_CA_OUT",
        value_name = "FILE",
        default_value = "gomemlimit-injector-ca.crt"
    )]
    pub(crate) ca_out: PathBuf,
    /// Extra subject alternative name for --self-signed (where localhost, 127.0.0.1 and ::1
    /// are always included) or --cert-secret (repeatable or comma-separated).
    #[arg(
        long = "dns-name",
        env = "GOMEMLIMIT_INJECTOR_DNS_NAME",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub(crate) dns_names: Vec<String>,
    /// How often the certificate and policy files are checked for changes (e.g. 500ms, 2s).
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_TLS_RELOAD_INTERVAL",
        value_name = "DURATION",
        default_value = "2s",
        value_parser = parse_duration
    )]
    pub(crate) tls_reload_interval: Duration,
    /// Deadline for the TLS handshake and for an HTTP/1.1 request head.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_HEADER_READ_TIMEOUT",
        value_name = "DURATION",
        default_value = "5s",
        value_parser = parse_duration
    )]
    pub(crate) header_read_timeout: Duration,
    /// Deadline for receiving a request body and answering (HTTP 408 after it).
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_REQUEST_TIMEOUT",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub(crate) request_timeout: Duration,
    /// How long a shutdown waits for in-flight reviews before dropping connections.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_SHUTDOWN_TIMEOUT",
        value_name = "DURATION",
        default_value = "20s",
        value_parser = parse_duration
    )]
    pub(crate) shutdown_timeout: Duration,
    /// After SIGTERM, keep serving this long with /readyz at 503 before closing the
    /// listener, so that the API server stops sending reviews here first.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_SHUTDOWN_DELAY",
        value_name = "DURATION",
        default_value = "5s",
        value_parser = parse_duration_or_zero
    )]
    pub(crate) shutdown_delay: Duration,
    /// The most connections each listener (webhook, metrics) holds at once. A connection
    /// beyond it closes the one quiet the longest (never one with a request in flight),
    /// or waits until one ends.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = server::DEFAULT_MAX_CONNECTIONS,
        value_parser = positive
    )]
    pub(crate) max_connections: usize,
    /// The most large reviews (a body of 64 KiB or more, a pod with hundreds of
    /// containers) evaluated at once, each on a thread of its own; the others wait within
    /// --request-timeout, then get 503.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_MAX_LARGE_REVIEWS",
        value_name = "N",
        default_value_t = server::DEFAULT_MAX_LARGE_REVIEWS,
        value_parser = positive
    )]
    pub(crate) max_large_reviews: usize,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
    /// Last: its help heading would carry over to the flags after it.
    #[command(flatten)]
    pub(crate) background: BackgroundAuditArgs,
}

/// `serve` flags of the background audit.
#[derive(Debug, Args)]
#[command(next_help_heading = "Background audit")]
pub(crate) struct BackgroundAuditArgs {
    /// How often one replica lists the pods of the selected namespaces and counts those
    /// the webhook would change (gomemlimit_injector_noncompliant_pods); 0 turns it off.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_BACKGROUND_AUDIT_INTERVAL",
        value_name = "DURATION",
        default_value = "0",
        value_parser = parse_duration_or_zero
    )]
    pub(crate) background_audit_interval: Duration,
    /// The namespaces the webhook configuration selects, as the chart's `selection`.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_SELECTION",
        value_enum,
        default_value_t = Selection::OptIn
    )]
    pub(crate) selection: Selection,
    /// With --selection clusterWide, namespaces left out besides kube-system, kube-public
    /// and kube-node-lease: the webhook's own and the chart's excludeNamespaces
    /// (comma-separated).
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_EXCLUDE_NAMESPACES",
        value_name = "NAMES",
        value_delimiter = ','
    )]
    pub(crate) exclude_namespaces: Vec<String>,
    /// The Lease that decides which replica scans.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_BACKGROUND_AUDIT_LEASE",
        value_name = "NAME",
        default_value = "gomemlimit-injector-background-audit"
    )]
    pub(crate) background_audit_lease: String,
    /// Namespace of the Lease (default: POD_NAMESPACE, else this pod's namespace).
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_BACKGROUND_AUDIT_LEASE_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub(crate) background_audit_lease_namespace: Option<String>,
}

impl BackgroundAuditArgs {
    /// The background audit these flags describe; `None` when it is off.
    fn to_config(&self) -> Option<BackgroundAuditConfig> {
        if self.background_audit_interval.is_zero() {
            return None;
        }
        Some(BackgroundAuditConfig {
            interval: self.background_audit_interval,
            selection: namespace_selection(self.selection, &self.exclude_namespaces),
            lease: LeaseConfig {
                name: self.background_audit_lease.clone(),
                namespace: self
                    .background_audit_lease_namespace
                    .clone()
                    .unwrap_or_else(tls::own_namespace),
                identity: background::identity(),
            },
        })
    }
}

impl ServeArgs {
    /// The server configuration these flags describe.
    pub(crate) fn to_config(&self) -> ServeConfig {
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => TlsSource::Files(KeyPairFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ if self.cert_secret.is_some() => {
                let namespace = self
                    .cert_secret_namespace
                    .clone()
                    .unwrap_or_else(tls::own_namespace);
                TlsSource::Secret(SecretConfig {
                    secret: self.cert_secret.clone().unwrap_or_default(),
                    names: SecretConfig::service_names(
                        self.service_name.as_deref(),
                        &namespace,
                        &self.dns_names,
                    ),
                    namespace,
                    webhook_configuration: self.webhook_configuration.clone(),
                    validity: self.cert_validity,
                })
            }
            // clap enforces: both files, --self-signed or --cert-secret.
            _ => TlsSource::SelfSigned {
                names: self.dns_names.clone(),
                ca_out: self.ca_out.clone(),
            },
        };
        ServeConfig {
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            tls,
            policy: self.policy.source(),
            reload_interval: self.tls_reload_interval,
            header_read_timeout: self.header_read_timeout,
            request_timeout: self.request_timeout,
            shutdown_timeout: self.shutdown_timeout,
            shutdown_delay: self.shutdown_delay,
            background_audit: self.background.to_config(),
            max_connections: self.max_connections,
            max_large_reviews: self.max_large_reviews,
        }
    }
}

/// `certs` flags.
#[derive(Debug, Args)]
pub(crate) struct CertsArgs {
    /// DNS name (or IP address) of the serving certificate, e.g.
    /// gomemlimit-injector.gomemlimit-system.svc (repeatable or comma-separated; the first
    /// is also the common name).
    #[arg(
        long = "dns-name",
        env = "GOMEMLIMIT_INJECTOR_DNS_NAME",
        value_name = "NAME",
        value_delimiter = ',',
        required = true
    )]
    pub(crate) dns_names: Vec<String>,
    /// Directory to write ca.crt, ca.key, tls.crt and tls.key into.
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_OUT_DIR",
        value_name = "DIR",
        default_value = "certs"
    )]
    pub(crate) out_dir: PathBuf,
    /// Validity of the serving certificate in days (the CA is valid ten years).
    #[arg(
        long,
        env = "GOMEMLIMIT_INJECTOR_DAYS",
        default_value_t = 365,
        value_parser = clap::value_parser!(u32).range(1..=3650)
    )]
    pub(crate) days: u32,
    /// Overwrite existing files.
    #[arg(long, env = "GOMEMLIMIT_INJECTOR_FORCE")]
    pub(crate) force: bool,
}

/// Parses a duration such as `500ms`, `2s`, `1m30s` or `1h`; units `ms`, `s`, `m`, `h`,
/// whole numbers only. Zero is refused: every duration here is a poll interval or a
/// deadline, and zero would spin or time out at once.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration: expected e.g. 500ms, 2s, 1m30s");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.checked_mul(60).ok_or_else(invalid)?),
            "h" => Duration::from_secs(number.checked_mul(3600).ok_or_else(invalid)?),
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total = total.checked_add(part).ok_or_else(invalid)?;
    }
    if total.is_zero() {
        return Err(format!("{text:?}: the duration must be greater than zero"));
    }
    Ok(total)
}

/// A count of at least one.
fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{text:?} is not a whole number of at least 1")),
    }
}

/// [`parse_duration`], also accepting `0` (or `0s`) for "none".
pub(crate) fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    let bare = text
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic());
    if !bare.is_empty() && bare.bytes().all(|b| b == b'0') {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("1s500ms", Duration::from_millis(1500)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "2", "0s", "s", "2 s", "-1s", "1.5s", "2d", "1e3ms"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_zero("0s"), Ok(Duration::ZERO));
        assert!(parse_duration_or_zero("x").is_err());
    }
}
