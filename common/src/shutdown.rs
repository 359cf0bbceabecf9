//! Turns SIGTERM and SIGINT into a cancellation token, the one shutdown signal every task gets.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT (Ctrl-C). The SIGTERM handler is installed
/// before this returns, so a signal sent right after is not missed. The caller owns the task.
pub fn cancel_on_signal(token: CancellationToken) -> JoinHandle<()> {
    let mut terminate = Terminate::install();
    tokio::spawn(async move {
        tokio::select! {
            () = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            result = tokio::signal::ctrl_c() => match result {
                Ok(()) => tracing::info!(signal = "SIGINT", "shutting down"),
                Err(error) => tracing::error!(%error, "cannot listen for Ctrl-C; shutting down"),
            },
            () = token.cancelled() => return,
        }
        token.cancel();
    })
}

/// SIGTERM, where the platform has it.
struct Terminate {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Terminate {
    #[cfg(unix)]
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let signal = signal(SignalKind::terminate())
            .inspect_err(|error| tracing::error!(%error, "cannot listen for SIGTERM"))
            .ok();
        Self { signal }
    }

    #[cfg(not(unix))]
    fn install() -> Self {
        Self {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            signal.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    }
}
