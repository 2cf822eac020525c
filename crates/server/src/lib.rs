//! # ballast-server
//!
//! The Ballast service (`ballast serve`): the journaled engine on one dedicated thread behind
//! an HTTP and WebSocket API.
//!
//! - [`engine_task`]: the engine thread. Every queued command joins one group commit (one
//!   write, one fdatasync), and a command is acknowledged only once its group is durable.
//! - [`routes`]: POST /v1/commands, the queries, the event stream, /metrics, /healthz,
//!   /openapi.json and the dashboard at `/` (docs/api.md lists them all).
//! - [`auth`]: roles by API key (stored as SHA-256 hashes), per-key token buckets.
//! - [`config`]: the configuration file, `ballast.toml`.
//! - [`client`]: a small blocking HTTP/1.1 client for tests, benchmarks and the crash test.

#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod client;
pub mod config;
mod dashboard;
pub mod engine_task;
pub mod error;
pub mod events;
pub mod metrics;
mod metrics_state;
mod risk;
pub mod routes;

pub use config::Config;
pub use engine_task::{Backend, EngineHandle, Prepared};

use axum::serve::ListenerExt;
use ballast_journal::{JournalError, JournaledEngine, Recovery};
use std::sync::Arc;

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the journal in {dir}: {source}")]
    Journal { dir: std::path::PathBuf, source: JournalError },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the server stopped: {0}")]
    Serve(std::io::Error),
}

/// Start the engine thread on `backend` and build the router.
pub fn build<B: Backend>(backend: B, config: &Config) -> (axum::Router, EngineHandle) {
    let events = Arc::new(events::EventLog::new(config.limits.event_ring, backend.last_seq()));
    let metrics = Arc::new(metrics::Metrics::default());
    let handle = EngineHandle::start(backend, events, metrics);
    let state = routes::AppState {
        engine: handle.clone(),
        keys: Arc::new(auth::Keys::new(&config.keys)),
        limiter: Arc::new(auth::RateLimiter::new(config.limits.rate_per_sec, config.limits.burst)),
        limits: config.limits,
    };
    (routes::router(state), handle)
}

/// Open (and recover) the journal in the configured data directory.
pub fn open_journal(config: &Config) -> Result<(JournaledEngine, Recovery), ServeError> {
    JournaledEngine::open(&config.data_dir, config.journal.options())
        .map_err(|source| ServeError::Journal { dir: config.data_dir.clone(), source })
}

/// Run the service until SIGINT or SIGTERM: recover the journal, listen, serve. Prints the
/// recovery report and `listening on http://ADDR` on stdout once ready.
pub fn run(config: Config) -> Result<(), ServeError> {
    let (journaled, recovery) = open_journal(&config)?;
    for w in &recovery.warnings {
        eprintln!("ballast serve: warning: {w}");
    }
    match &recovery.snapshot {
        Some((seq, path)) => println!(
            "recovered: snapshot {} (seq {seq}) + {} records replayed; last seq {}",
            path.display(),
            recovery.replayed,
            recovery.last_seq
        ),
        None => println!(
            "recovered: {} records replayed from an empty engine; last seq {}",
            recovery.replayed, recovery.last_seq
        ),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(ServeError::Runtime)?;
    let handle = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Listen { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: config.listen, source })?;
        let (router, handle) = build(journaled, &config);
        if let Some((seq, _)) = &recovery.snapshot {
            handle.metrics.snapshot_recovered(*seq);
        }
        println!("listening on http://{addr} (data dir {})", config.data_dir.display());
        use std::io::Write;
        let _ = std::io::stdout().flush();
        axum::serve(listener.tap_io(no_delay), router)
            .with_graceful_shutdown(shutdown())
            .await
            .map_err(ServeError::Serve)?;
        Ok::<_, ServeError>(handle)
    })?;
    // Dropping the runtime drops the connections and streams that still hold the engine; then
    // the engine thread ends its last group commit and any snapshot being written.
    runtime.shutdown_timeout(STOP_LIMIT);
    let health = handle.health.clone();
    match handle.stop(STOP_LIMIT) {
        true => println!("stopped: last seq {}", health.last_seq.load(std::sync::atomic::Ordering::Relaxed)),
        false => eprintln!(
            "ballast serve: warning: the engine thread did not stop within {} s; exiting anyway (every acknowledged command is durable)",
            STOP_LIMIT.as_secs()
        ),
    }
    Ok(())
}

/// How long a stop waits for the runtime and then for the engine thread.
const STOP_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Replies are small and latency matters: send them without waiting to coalesce (Nagle).
pub fn no_delay(stream: &mut tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
