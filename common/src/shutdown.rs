//! Graceful shutdown: wait for SIGTERM or SIGINT.

/// Completes when the process receives SIGTERM or SIGINT (Ctrl-C).
///
/// Every fleet process stops fetching new work when this completes, drains what it holds within
/// its grace period, and exits 0.
///
/// ```no_run
/// # async fn f() {
/// fleet_common::shutdown::signal().await;
/// # }
/// ```
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, draining"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
