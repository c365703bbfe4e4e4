//! Admin HTTP port: `/metrics` (Prometheus text), `/health/live` (the process runs),
//! `/health/ready` (200 only when the broker and ClickHouse answer, no insert is failing and
//! the progress watch sees no stall) and `/health/progress` (the stall alone, with its reason).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;

#[derive(Default)]
pub struct Health {
    pub kafka_ok: AtomicBool,
    pub clickhouse_ok: AtomicBool,
    /// Set while a ClickHouse insert or DLQ write is being retried.
    pub sink_failing: AtomicBool,
    pub started: AtomicBool,
    /// The progress watch's stall, described (None: progressing).
    stall: Mutex<Option<String>>,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.started.load(Ordering::Relaxed)
            && self.kafka_ok.load(Ordering::Relaxed)
            && self.clickhouse_ok.load(Ordering::Relaxed)
            && !self.sink_failing.load(Ordering::Relaxed)
            && self.stall().is_none()
    }

    pub fn set_progress(&self, stall: Option<String>) {
        if let Ok(mut s) = self.stall.lock() {
            *s = stall;
        }
    }

    pub fn stall(&self) -> Option<String> {
        self.stall.lock().ok().and_then(|s| s.clone())
    }

    pub fn describe(&self) -> String {
        format!(
            "started={} kafka={} clickhouse={} sink_failing={} progress={}",
            self.started.load(Ordering::Relaxed),
            self.kafka_ok.load(Ordering::Relaxed),
            self.clickhouse_ok.load(Ordering::Relaxed),
            self.sink_failing.load(Ordering::Relaxed),
            self.stall().unwrap_or_else(|| "progressing".into())
        )
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Binds the admin port and serves it until the runtime ends. Returns the bound address (port 0
/// picks a free port).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move {
                s.metrics.ready.set(i64::from(s.health.ready()));
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    s.metrics.render(),
                )
            }),
        )
        .route("/health/live", get(|| async { "live\n" }))
        .route(
            "/health/ready",
            get(|State(s): State<AdminState>| async move {
                let code = if s.health.ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (code, format!("{}\n", s.health.describe()))
            }),
        )
        .route(
            "/health/progress",
            get(|State(s): State<AdminState>| async move {
                match s.health.stall() {
                    None => (StatusCode::OK, "progressing\n".to_string()),
                    Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                }
            }),
        )
        .with_state(AdminState { metrics, health });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    Ok(bound)
}
