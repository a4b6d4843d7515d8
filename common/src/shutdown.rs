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
///
/// The handlers are installed when this is called, not when the future is first polled, so a
/// process that calls it first thing is covered during its whole start-up too.
pub fn signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received, draining"),
                        _ = int.recv() => tracing::info!("SIGINT received, draining"),
                    }
                }
                (term, int) => {
                    if let Err(e) = term.and(int) {
                        tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                    }
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
