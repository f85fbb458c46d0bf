//! Command line: `serve`, `certs`, `mutate`, `audit` and `policy render`, and what each runs. Their flags
//! are in `args`; every `serve` and policy flag also reads `GOMEMLIMIT_INJECTOR_<NAME>`.

mod args;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::live;
use crate::manifests::{self, ManifestError};
use crate::native;
use crate::report::{self, ObjectReport};
use crate::server;
use crate::telemetry;
use crate::tls;
use args::{
    AuditArgs, CertsArgs, LogArgs, MutateArgs, OutputFormat, PolicyCommand, RenderArgs,
    RenderFormat, ServeArgs,
};

/// Gives Go containers GOMEMLIMIT and a memory request equal to their limit.
#[derive(Debug, Parser)]
#[command(name = "gomemlimit-injector", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub(crate) log: LogArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Installed as `kubectl-gomemlimit`, the binary is the kubectl plugin `kubectl gomemlimit`.
const KUBECTL_PLUGIN: &str = "kubectl-gomemlimit";

impl Cli {
    /// Parses the process arguments, naming the command as it was invoked: as a kubectl
    /// plugin, help and errors say `kubectl gomemlimit`.
    pub fn parse_invoked() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let invoked = std::env::args_os()
            .next()
            .map(std::path::PathBuf::from)
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let mut command = Cli::command();
        if invoked.as_deref() == Some(KUBECTL_PLUGIN) {
            command = command
                .bin_name("kubectl gomemlimit")
                .name("kubectl gomemlimit");
        }
        let matches = command.get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the admission webhook.
    Serve(Box<ServeArgs>),
    /// Write a CA and a serving certificate (ca.crt, ca.key, tls.crt, tls.key).
    Certs(CertsArgs),
    /// Print manifests as the webhook would leave them (Pods and workload pod templates).
    Mutate(MutateArgs),
    /// Report what the webhook would change, in manifests (-f) or in the live cluster.
    /// Exit status: 0 compliant, 1 something would change, 2 error.
    Audit(AuditArgs),
    /// The policy for other engines.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// Runs the parsed command line; the exit code is for the process on success.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // Held until the command returns: the log lines still queued are written then.
    let _log = telemetry::init(cli.log.log_format, &cli.log.log_level)?;
    // Everything here passes the ring provider explicitly; installing it as the process
    // default as well keeps any rustls user that relies on the default off aws-lc.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Certs(args) => certs(&args),
        Command::Mutate(args) => mutate(&args),
        Command::Audit(args) => audit(&args),
        Command::Policy(PolicyCommand::Render(args)) => render(&args),
    }
}

/// Manifests to read: how messages name them, and their text.
struct Input {
    name: String,
    text: String,
}

/// Reads a file, or stdin for `-`.
fn read_input(file: &str) -> Result<Input, ManifestError> {
    use std::io::Read;
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| ManifestError::Read {
                name: "standard input".to_owned(),
                source,
            })?;
        let name = "stdin".to_owned();
        return Ok(Input { name, text });
    }
    let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
        name: file.to_owned(),
        source,
    })?;
    let name = file.to_owned();
    Ok(Input { name, text })
}

fn mutate(args: &MutateArgs) -> anyhow::Result<ExitCode> {
    let policy = args.policy.source().load()?;
    let Input { name, text } = read_input(&args.file)?;
    let output = manifests::process_text(&name, &text, &policy, &args.namespace)?;
    let mut stdout = std::io::stdout().lock();
    if args.diff {
        write!(
            stdout,
            "{}",
            manifests::unified_diff(&name, &text, &output.text)
        )?;
    } else {
        write!(stdout, "{}", output.text)?;
    }
    eprint!("{}", report::messages(&output.reports));
    // A manifest the webhook would reject cannot be applied as it is.
    Ok(if output.reports.iter().any(ObjectReport::would_deny) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn audit(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let policy = args.policy.source().load()?;
    let reports = match &args.file {
        Some(file) => {
            let Input { name, text } = read_input(file)?;
            let namespace = args.namespace.as_deref().unwrap_or("default");
            manifests::process_text(&name, &text, &policy, namespace)?.reports
        }
        None => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start the async runtime")?;
            runtime.block_on(live::audit(args.namespace.as_deref(), &policy))?
        }
    };
    let text = match args.output {
        OutputFormat::Table => report::table(&reports),
        OutputFormat::Json => report::json(&reports),
    };
    print!("{text}");
    Ok(
        if reports.iter().any(|r| r.would_change() || r.would_deny()) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        },
    )
}

fn render(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let policy = args.policy.source().load()?;
    let objects = native::render(&policy, &args.options());
    let text = match args.output {
        RenderFormat::Yaml => {
            native::to_yaml(&objects).map_err(|e| anyhow::anyhow!("failed to write YAML: {e}"))?
        }
        RenderFormat::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
            let mut text = serde_json::to_string_pretty(&list)?;
            text.push('\n');
            text
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.to_config();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let result = runtime.block_on(server::serve_until_signalled(config));
    // After an abort, connection tasks may still be parked; do not wait on them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result?;
    Ok(ExitCode::SUCCESS)
}

fn certs(args: &CertsArgs) -> anyhow::Result<ExitCode> {
    let pki = tls::generate(&args.dns_names, args.days)?;
    let written = tls::write_pki(&args.out_dir, &pki, args.force)?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::LogFormat;
    use crate::tls::TlsSource;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_needs_exactly_one_tls_source() {
        let parse =
            |args: &[&str]| Cli::try_parse_from([&["gomemlimit-injector", "serve"], args].concat());
        assert!(parse(&[]).is_err());
        assert!(parse(&["--self-signed"]).is_ok());
        assert!(parse(&["--tls-cert-file", "c", "--tls-key-file", "k"]).is_ok());
        assert!(parse(&["--tls-cert-file", "c"]).is_err());
        assert!(
            parse(&[
                "--self-signed",
                "--tls-cert-file",
                "c",
                "--tls-key-file",
                "k"
            ])
            .is_err()
        );
    }

    #[test]
    fn serve_defaults_match_the_contract() {
        let cli = Cli::try_parse_from(["gomemlimit-injector", "serve", "--self-signed"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        let config = args.to_config();
        assert_eq!(config.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(config.metrics_listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.reload_interval, Duration::from_secs(2));
        assert_eq!(config.header_read_timeout, Duration::from_secs(5));
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(20));
        assert_eq!(config.shutdown_delay, Duration::from_secs(5));
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.max_large_reviews, 2);
        assert!(matches!(
            config.tls,
            TlsSource::SelfSigned { ref ca_out, .. } if ca_out == std::path::Path::new("gomemlimit-injector-ca.crt")
        ));
        assert_eq!(
            config.background_audit, None,
            "the background audit is off by default"
        );
    }

    #[test]
    fn background_audit_flags_become_its_configuration() {
        let cli = Cli::try_parse_from([
            "gomemlimit-injector",
            "serve",
            "--self-signed",
            "--background-audit-interval",
            "5m",
            "--selection",
            "clusterWide",
            "--exclude-namespaces",
            "gomemlimit-system,monitoring",
            "--background-audit-lease",
            "injector-audit",
            "--background-audit-lease-namespace",
            "gomemlimit-system",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        let audit = args.to_config().background_audit.expect("on");
        assert_eq!(audit.interval, Duration::from_secs(300));
        assert_eq!(
            audit.selection.selection,
            crate::background::Selection::ClusterWide
        );
        assert_eq!(
            audit.selection.excluded,
            ["gomemlimit-system", "monitoring"]
        );
        assert_eq!(audit.lease.name, "injector-audit");
        assert_eq!(audit.lease.namespace, "gomemlimit-system");
        assert!(!audit.lease.identity.is_empty());
    }

    #[test]
    fn background_audit_is_off_at_zero_and_selections_are_spelled_as_in_the_chart() {
        let off = Cli::try_parse_from([
            "gomemlimit-injector",
            "serve",
            "--self-signed",
            "--background-audit-interval",
            "0",
        ])
        .unwrap();
        let Command::Serve(args) = off.command else {
            panic!("not serve");
        };
        assert_eq!(args.to_config().background_audit, None);
        for bad in ["optin", "cluster-wide"] {
            let parsed = Cli::try_parse_from([
                "gomemlimit-injector",
                "serve",
                "--self-signed",
                "--selection",
                bad,
            ]);
            assert!(parsed.is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_render_takes_the_policy_flags_and_the_selection() {
        let cli = Cli::try_parse_from([
            "gomemlimit-injector",
            "policy",
            "render",
            "--percent",
            "90",
            "--selection",
            "clusterWide",
            "--exclude-namespaces",
            "monitoring,istio-system",
            "--failure-policy",
            "Ignore",
        ])
        .unwrap();
        let Command::Policy(PolicyCommand::Render(args)) = cli.command else {
            panic!("not policy render");
        };
        assert_eq!(args.policy.source().load().unwrap().percent, 90);
        let options = args.options();
        assert_eq!(
            options.selection,
            crate::background::NamespaceSelection {
                selection: crate::background::Selection::ClusterWide,
                excluded: vec!["monitoring".into(), "istio-system".into()]
            }
        );
        assert_eq!(options.failure_policy, native::FailurePolicy::Ignore);
        assert_eq!(options.name, native::DEFAULT_NAME);
    }

    #[test]
    fn policy_render_refuses_a_name_that_is_no_dns_subdomain() {
        for bad in ["Pods.example", "-x", "a..b", &"a".repeat(250)] {
            let parsed =
                Cli::try_parse_from(["gomemlimit-injector", "policy", "render", "--name", bad]);
            assert!(parsed.is_err(), "{bad}");
        }
    }

    #[test]
    fn log_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "gomemlimit-injector",
            "serve",
            "--self-signed",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.log.log_format, LogFormat::Json);
    }
}
