//! The background audit: while the webhook serves, one replica at a time lists the pods of
//! the namespaces the webhook selects and counts those it would change, per namespace.
//!
//! Pods escape the webhook under `failurePolicy: Ignore` whenever the API server cannot
//! reach it, and pods created before the install or before their namespace was opted in
//! never went through it. Nothing in admission can see them afterwards; this can, and
//! says so in `gomemlimit_injector_noncompliant_pods{namespace}`.
//!
//! Its parts: which namespaces are selected (`selection`), which replica scans
//! (`lease`), and one scan (`scan`). The evaluation is the live `audit` command's, so the
//! count and `kubectl gomemlimit audit` always agree on which pods need recreating.

mod lease;
mod scan;
mod selection;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info};

pub use lease::LeaseConfig;
pub(crate) use lease::identity;
pub use selection::{NamespaceSelection, SYSTEM_NAMESPACES, Selection};

use crate::error::error_chain;
use crate::metrics::Findings;
use crate::server::AppState;
use crate::watch::LastSeen;

/// At most this many namespaces are named in a scan's log line.
const LOGGED_NAMESPACES: usize = 10;

/// What `serve --background-audit-interval` configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackgroundAuditConfig {
    /// Time between the starts of two scans.
    pub interval: Duration,
    pub selection: NamespaceSelection,
    pub lease: LeaseConfig,
}

/// Errors setting the background audit up.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundAuditError {
    /// Kube's configuration errors name their causes in their own text already.
    #[error(
        "failed to load a kubeconfig or in-cluster configuration for the background audit: {0}"
    )]
    Config(String),
}

/// A configured background audit with its client, ready to run.
pub(crate) struct BackgroundAudit {
    config: BackgroundAuditConfig,
    client: Client,
    /// The API server's URL, for messages.
    url: String,
}

impl std::fmt::Debug for BackgroundAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundAudit")
            .field("config", &self.config)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The background audit as the server runs it (or not, when it is off).
pub(crate) struct Running {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Asks it to stop: at the start of a shutdown, so that another replica can take the
    /// Lease over at once.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Stops it and waits, at most `timeout`, for the Lease to be released.
    pub(crate) async fn finish(self, timeout: Duration) {
        self.stop();
        let Some(task) = self.task else {
            return;
        };
        let abort = task.abort_handle();
        if tokio::time::timeout(timeout, task).await.is_err() {
            abort.abort();
        }
    }
}

impl BackgroundAudit {
    /// Starts `audit`, if there is one, on its own task.
    pub(crate) fn start(audit: Option<Self>, state: &AppState) -> Running {
        let (stop, stopped) = watch::channel(false);
        let task = audit.map(|audit| tokio::spawn(audit.run(state.clone(), stopped)));
        Running { stop, task }
    }

    /// Loads the client configuration (in-cluster, else kubeconfig). Nothing is sent to
    /// the API server yet: one that is unreachable at start-up is retried, not fatal.
    pub(crate) async fn connect(
        config: BackgroundAuditConfig,
    ) -> Result<Self, BackgroundAuditError> {
        let kube_config = kube::Config::infer()
            .await
            .map_err(|e| BackgroundAuditError::Config(e.to_string()))?;
        let url = kube_config.cluster_url.to_string();
        let client = Client::try_from(kube_config)
            .map_err(|e| BackgroundAuditError::Config(error_chain(&e)))?;
        Ok(BackgroundAudit {
            config,
            client,
            url,
        })
    }

    /// Runs until `stop` turns true: takes part in the election, scans while leading, and
    /// releases the Lease at the end.
    pub(crate) async fn run(self, state: AppState, stop: watch::Receiver<bool>) {
        let metrics = state.metrics().clone();
        metrics.background_audit_enabled(self.config.interval);
        metrics.set_background_leader(false);
        info!(
            interval_ms = self.config.interval.as_millis() as u64,
            selection = ?self.config.selection.selection,
            excluded_namespaces = %self.config.selection.excluded.join(","),
            lease = %self.config.lease.name,
            lease_namespace = %self.config.lease.namespace,
            identity = %self.config.lease.identity,
            "background audit on"
        );
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.config.lease.namespace);
        let (leading_tx, leading) = watch::channel(false);
        let election = tokio::spawn(lease::run(
            leases,
            self.config.lease.clone(),
            leading_tx,
            stop.clone(),
        ));
        self.scan_while_leading(&state, leading, stop).await;
        metrics.set_background_leader(false);
        // The election task releases the Lease when it sees `stop`.
        let _ = election.await;
    }

    /// Waits for leadership, then scans at once and every interval while it lasts.
    async fn scan_while_leading(
        &self,
        state: &AppState,
        mut leading: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let metrics = state.metrics();
        let mut last_error = LastSeen::new(None::<String>);
        loop {
            tokio::select! {
                result = leading.wait_for(|l| *l) => if result.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            info!("background audit: this replica leads and scans");
            metrics.set_background_leader(true);
            loop {
                let started = Instant::now();
                let policy = state.policy();
                let outcome = tokio::select! {
                    result = scan::scan(&self.client, &self.url, &self.config.selection, &policy) => Some(result),
                    _ = leading.wait_for(|l| !*l) => None,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match outcome {
                    None => break,
                    Some(Ok(findings)) => {
                        last_error = LastSeen::new(None);
                        log_findings(&findings, started.elapsed());
                        metrics.record_scan(findings, started.elapsed(), unix_now());
                    }
                    Some(Err(e)) => {
                        metrics.scan_failed();
                        let message = error_chain(&e);
                        if last_error.changed(Some(message.clone())) {
                            error!(error = %message, "background audit scan failed; will retry at the next interval");
                        }
                    }
                }
                let next = started + self.config.interval;
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {}
                    _ = leading.wait_for(|l| !*l) => break,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            info!("background audit: this replica no longer leads; it stops scanning");
            metrics.set_background_leader(false);
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// One line per scan: how many pods, and where the non-compliant ones are.
fn log_findings(findings: &Findings, took: Duration) {
    let total: u64 = findings.noncompliant.values().sum();
    let mut namespaces: Vec<(&String, &u64)> = findings.noncompliant.iter().collect();
    namespaces.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let named: Vec<String> = namespaces
        .iter()
        .take(LOGGED_NAMESPACES)
        .map(|(ns, n)| format!("{ns}={n}"))
        .collect();
    info!(
        pods = findings.pods,
        noncompliant = total,
        noncompliant_namespaces = findings.noncompliant.len(),
        top = %named.join(","),
        duration_ms = took.as_millis() as u64,
        "background audit scan completed"
    );
}
