//! The node's HTTP endpoint (`[http] bind`, default `0.0.0.0:8080`): Prometheus
//! metrics, health checks and the admin API, served by axum.
//!
//! - `GET /metrics`: [`crate::observe::metrics`].
//! - `GET /healthz`: 200 while the process serves HTTP.
//! - `GET /readyz`: 200 when the node takes clients: it is not shutting
//!   down, every MQTT listener's accept loop runs, its store is open (sled
//!   open and the group-commit writer running: `storage::Store::health`)
//!   and, in a cluster, it knows a leader and has applied the log up to the
//!   commit index it learned from it. Otherwise 503 with
//!   `{"ready":false,"reason":"..."}`, the first of these that fails.
//! - `/api/v1/...`: the admin API ([`admin`]), JSON. With `http.admin_token`
//!   set, it wants `Authorization: Bearer TOKEN` (401 otherwise); without,
//!   it answers loopback peers only (403 otherwise).
//!
//! It never changes broker state itself: the admin API asks session actors
//! ([`crate::session::admin`]) and the routing path.
//!
//! Lifecycle: [`bind`] after the MQTT listeners are bound (an error if the
//! port is taken), [`serve`] until `stop` turns true; requests in progress
//! then finish.

pub mod admin;
pub mod client;
mod routes_api;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State as Extract};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::observe::{metrics, NodeInfo};
use crate::state::State;

/// What the handlers share.
#[derive(Clone)]
pub struct Http {
    pub state: State,
    pub info: Arc<NodeInfo>,
}

/// A JSON error answer: `{"error": "..."}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Binds the endpoint.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for HTTP: {e}"))
}

/// The routes.
pub fn router(http: Http) -> Router {
    let api = admin::routes().layer(middleware::from_fn_with_state(http.clone(), protect));
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/api/v1", api)
        .with_state(http)
}

/// Serves until `stop` turns true.
pub async fn serve(listener: tokio::net::TcpListener, http: Http, mut stop: watch::Receiver<bool>) {
    let app = router(http).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "HTTP endpoint failed");
    }
}

async fn get_metrics(Extract(http): Extract<Http>) -> Response {
    match metrics::render(&http.state, &http.info) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "alive": true })).into_response()
}

/// Why the node does not take clients now, if it does not.
pub fn not_ready(state: &State, info: &NodeInfo) -> Option<String> {
    if state.is_shutting_down() {
        return Some("shutting down: listeners closed, store closing".into());
    }
    if state.is_draining() {
        return Some("draining: clients sent to other nodes, sessions handed over".into());
    }
    let stopped = info
        .listeners
        .iter()
        .find(|l| !l.accepting.load(std::sync::atomic::Ordering::Acquire));
    if let Some(l) = stopped {
        return Some(format!(
            "{} listener {} is not accepting",
            l.protocol, l.addr
        ));
    }
    if let Err(e) = state.store().health() {
        return Some(format!("store not open: {e}"));
    }
    let s = state.cluster().raft()?.status();
    if let Some(reason) = s.failed {
        return Some(format!("cluster node failed: {reason}"));
    }
    if s.removed {
        return Some("removed from the cluster".into());
    }
    if !s.initialized {
        return Some("not a member of a cluster yet (joining)".into());
    }
    let Some(leader) = s.leader else {
        return Some(format!("no leader known (term {}, {})", s.term, s.role));
    };
    if !s.ready || s.applied_index < s.commit_index {
        return Some(format!(
            "applied index {} behind commit index {} (leader {leader})",
            s.applied_index, s.commit_index
        ));
    }
    None
}

async fn readyz(Extract(http): Extract<Http>) -> Response {
    match not_ready(&http.state, &http.info) {
        None => Json(serde_json::json!({ "ready": true })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": reason })),
        )
            .into_response(),
    }
}

/// The admin API's protection: the bearer token if one is configured,
/// else loopback peers only.
async fn protect(
    Extract(http): Extract<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    match &http.state.config().http.admin_token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())));
            if !ok {
                let mut response = error(
                    StatusCode::UNAUTHORIZED,
                    "the admin API wants `Authorization: Bearer <http.admin_token>`",
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    "Bearer".parse().expect("static header value"),
                );
                return response;
            }
        }
        None if !peer.ip().is_loopback() => {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "without http.admin_token the admin API answers loopback clients only, not {}",
                    peer.ip()
                ),
            )
        }
        None => {}
    }
    next.run(request).await
}
