//! Admin HTTP port: `/metrics` (Prometheus text), `/health/live` (the process runs),
//! `/health/ready` (200 only when the broker and ClickHouse answer and no insert is failing).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
}

impl Health {
    pub fn ready(&self) -> bool {
        self.started.load(Ordering::Relaxed)
            && self.kafka_ok.load(Ordering::Relaxed)
            && self.clickhouse_ok.load(Ordering::Relaxed)
            && !self.sink_failing.load(Ordering::Relaxed)
    }

    pub fn describe(&self) -> String {
        format!(
            "started={} kafka={} clickhouse={} sink_failing={}",
            self.started.load(Ordering::Relaxed),
            self.kafka_ok.load(Ordering::Relaxed),
            self.clickhouse_ok.load(Ordering::Relaxed),
            self.sink_failing.load(Ordering::Relaxed)
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
