//! Reloading: on every tick, the certificate source and the policy file are polled; a good
//! change is applied, a bad one is logged and counted while the last good version stays
//! in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tracing::{error, info};

use super::LOG_TARGET;
use super::routes::AppState;
use crate::error::error_chain;
use crate::policy::{Policy, PolicyError, PolicySource};
use crate::tls::{CertStore, CertificateSource};
use crate::watch::{LastSeen, Reload};

/// Why a changed policy file could not be used. Causes are part of the message rather than
/// sources, so that the log line names each once.
#[derive(Debug, thiserror::Error)]
enum PolicyReloadError {
    #[error("failed to read policy file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Load(PolicyError),
    #[error("failed to load the policy: {0}")]
    Task(tokio::task::JoinError),
}

/// Watches the policy file by content, as the key pair's files are watched (ConfigMap
/// volumes are updated by the same atomic symlink swap).
pub(super) struct PolicyWatcher {
    source: PolicySource,
    path: PathBuf,
    /// The contents, or the text of the error reading them.
    seen: LastSeen<Result<Vec<u8>, String>>,
}

impl PolicyWatcher {
    /// Reads the file before the policy is loaded from it, so a change in between is seen
    /// at the first poll rather than missed.
    pub(super) fn start(source: &PolicySource) -> Option<Self> {
        let path = source.file.clone()?;
        let seen = std::fs::read(&path).map_err(|e| e.to_string());
        Some(PolicyWatcher {
            source: source.clone(),
            path,
            seen: LastSeen::new(seen),
        })
    }

    /// Re-reads the file and, when it changed, loads the policy from it.
    async fn poll(&mut self) -> Reload<Policy, PolicyReloadError> {
        let (seen, error) = match tokio::fs::read(&self.path).await {
            Ok(contents) => (Ok(contents), None),
            Err(e) => (Err(e.to_string()), Some(e)),
        };
        if !self.seen.changed(seen) {
            return Reload::Unchanged;
        }
        if let Some(error) = error {
            let path = self.path.clone();
            return Reload::Failed(PolicyReloadError::Read { path, error });
        }
        let source = self.source.clone();
        match tokio::task::spawn_blocking(move || source.load()).await {
            Ok(Ok(policy)) => Reload::Loaded(policy),
            Ok(Err(e)) => Reload::Failed(PolicyReloadError::Load(e)),
            Err(e) => Reload::Failed(PolicyReloadError::Task(e)),
        }
    }
}

/// What the reloader polls, and where it puts what it finds.
pub(super) struct Reloader {
    pub(super) certificates: CertificateSource,
    pub(super) store: Arc<CertStore>,
    pub(super) policy: Option<PolicyWatcher>,
    pub(super) state: AppState,
}

impl Reloader {
    /// Polls the certificate source and the policy file every `interval`, and at once when
    /// `now` is notified, for as long as the task runs.
    pub(super) async fn run(mut self, interval: Duration, now: Arc<Notify>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is immediate and the inputs were just read.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = now.notified() => ticker.reset(),
            }
            self.reload_certificate().await;
            self.reload_policy().await;
        }
    }

    async fn reload_certificate(&mut self) {
        let metrics = self.state.metrics();
        match self.certificates.poll().await {
            Reload::Unchanged => {}
            Reload::Loaded(credentials) => {
                info!(
                    target: LOG_TARGET,
                    serial = credentials.serial(),
                    not_after = credentials.not_after(),
                    names = ?credentials.names(),
                    "serving certificate reloaded"
                );
                metrics.set_certificate_expiry(credentials.not_after());
                metrics.tls_reload(true);
                self.store.store(credentials);
            }
            Reload::Failed(e) => {
                error!(
                    target: LOG_TARGET,
                    error = %error_chain(&e),
                    serial = self.store.current().serial(),
                    "failed to reload the serving certificate; keeping the current one"
                );
                metrics.tls_reload(false);
            }
        }
    }

    async fn reload_policy(&mut self) {
        let Some(watcher) = &mut self.policy else {
            return;
        };
        let metrics = self.state.metrics();
        match watcher.poll().await {
            Reload::Unchanged => {}
            Reload::Loaded(policy) => {
                info!(target: LOG_TARGET, policy = ?policy, "policy reloaded");
                self.state.set_policy(policy);
                metrics.policy_reload(true);
            }
            Reload::Failed(e) => {
                error!(
                    target: LOG_TARGET,
                    error = %error_chain(&e),
                    "failed to reload the policy; keeping the current one"
                );
                metrics.policy_reload(false);
            }
        }
    }
}
