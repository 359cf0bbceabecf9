//! Turns SIGTERM and SIGINT into a cancellation token, the one shutdown signal every task gets.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT (Ctrl-C). The caller owns the returned task.
pub fn cancel_on_signal(token: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            () = terminate() => tracing::info!(signal = "SIGTERM", "shutting down"),
            result = tokio::signal::ctrl_c() => match result {
                Ok(()) => tracing::info!(signal = "SIGINT", "shutting down"),
                Err(error) => tracing::error!(%error, "cannot listen for Ctrl-C; shutting down"),
            },
            () = token.cancelled() => return,
        }
        token.cancel();
    })
}

#[cfg(unix)]
async fn terminate() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut sigterm) => {
            sigterm.recv().await;
        }
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await;
}
