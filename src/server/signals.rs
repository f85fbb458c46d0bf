//! Signals: SIGTERM and SIGINT start a graceful shutdown, a second one aborts it; SIGHUP
//! re-reads the certificate and policy files at once.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use super::{LOG_TARGET, ServeConfig, Server, ServerError};

/// SIGTERM and SIGINT, counted. The first starts a graceful shutdown, the second aborts it.
/// SIGHUP notifies `hangup`.
#[derive(Clone, Debug)]
pub(crate) struct Signals {
    count: watch::Receiver<u32>,
    hangup: Arc<Notify>,
}

impl Signals {
    /// Installs the handlers; from then on the signals no longer kill the process.
    pub(crate) fn install() -> Result<Self, ServerError> {
        let (tx, rx) = watch::channel(0u32);
        let hangup = Arc::new(Notify::new());
        let counted = move |name: &'static str| {
            if *tx.borrow() == 0 {
                info!(
                    target: LOG_TARGET,
                    signal = name,
                    "shutting down; send the signal again to abort"
                );
            } else {
                warn!(target: LOG_TARGET, signal = name, "aborting the shutdown");
            }
            tx.send_modify(|n| *n += 1);
        };
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signal)?;
            let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signal)?;
            let mut hup = signal(SignalKind::hangup()).map_err(ServerError::Signal)?;
            let reload = Arc::clone(&hangup);
            tokio::spawn(async move {
                while let Some(()) = hup.recv().await {
                    info!(
                        target: LOG_TARGET,
                        signal = "SIGHUP",
                        "re-reading the certificate and policy files"
                    );
                    reload.notify_one();
                }
            });
            tokio::spawn(async move {
                loop {
                    let name = tokio::select! {
                        Some(()) = term.recv() => "SIGTERM",
                        Some(()) = int.recv() => "SIGINT",
                        else => break,
                    };
                    counted(name);
                }
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                counted("ctrl-c");
            }
        });
        Ok(Signals { count: rx, hangup })
    }

    /// Completes at the `n`th signal.
    pub(crate) fn nth(&self, n: u32) -> impl Future<Output = ()> + Send + 'static {
        let mut count = self.count.clone();
        async move {
            if count.wait_for(|c| *c >= n).await.is_err() {
                // The listener task is gone; no more signals can arrive.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Runs the binary's server: binds, serves until SIGTERM/SIGINT, drains within the
/// shutdown timeout; a second signal aborts the drain.
pub(crate) async fn serve_until_signalled(config: ServeConfig) -> Result<(), ServerError> {
    // Installed before binding, so a signal during start-up is not lost.
    let signals = Signals::install()?;
    let mut server = Server::bind(config).await?;
    server.reload_on(Arc::clone(&signals.hangup));
    tokio::select! {
        result = server.run(signals.nth(1)) => result,
        () = signals.nth(2) => Err(ServerError::Aborted),
    }
}
