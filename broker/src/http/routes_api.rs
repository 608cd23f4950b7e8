//! The admin API of IoT hub routes, under `/api/v1/` beside `admin.rs` (same
//! protection):
//!
//! | method and path                 | does                                          |
//! |---------------------------------|-----------------------------------------------|
//! | `GET /routes`                   | every route: definition, origin, target, stats |
//! | `GET /routes/{name}`            | one route                                      |
//! | `POST /routes`                  | creates one (JSON, the `[[routes]]` keys)      |
//! | `POST /routes/{name}/pause`     | stops delivering (messages are still queued)   |
//! | `POST /routes/{name}/resume`    | delivers again                                 |
//! | `DELETE /routes/{name}`         | stops it and drops its queue                   |
//!
//! A route made here goes through `Cluster::set_hub_route`: stored on a
//! node alone (the handler then applies it), replicated in a cluster (every
//! node applies it from `ClusterEvent::HubRouteChanged`; the handler waits
//! until this one has), so the answer shows it. Routes of
//! the configuration file are node-local: pausing one applies to this node
//! until restart, and they cannot be deleted here.

use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;

use super::{error, Http};
use crate::hub::config::RouteConfig;
use crate::hub::{build_sink, RouteOrigin};

pub(super) fn routes() -> Router<Http> {
    Router::new()
        .route("/routes", get(list).post(create))
        .route("/routes/{name}", get(show).delete(delete))
        .route("/routes/{name}/pause", post(pause))
        .route("/routes/{name}/resume", post(resume))
}

/// How long a handler waits for a replicated change to be applied here.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn no_route(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no route `{name}`"))
}

async fn list(Extract(http): Extract<Http>) -> Response {
    let routes: Vec<serde_json::Value> = http
        .state
        .hub()
        .routes()
        .iter()
        .map(|r| r.to_json())
        .collect();
    Json(serde_json::json!({ "routes": routes })).into_response()
}

async fn show(Extract(http): Extract<Http>, Path(name): Path<String>) -> Response {
    match http.state.hub().route(&name) {
        Some(route) => Json(route.to_json()).into_response(),
        None => no_route(&name),
    }
}

async fn create(Extract(http): Extract<Http>, body: Bytes) -> Response {
    let json: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(json) => json,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    let config = match RouteConfig::from_json(&json) {
        Ok(config) => config,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let name = config.name.clone();
    let hub = http.state.hub();
    if hub.route(&name).is_some() {
        return error(StatusCode::CONFLICT, format!("route `{name}` exists"));
    }
    // refuse here what the target would refuse at start (a secret this
    // node cannot read, ...), rather than on every node later
    if let Err(e) = build_sink(&config, http.state.config().cluster.node_id) {
        return error(StatusCode::BAD_REQUEST, format!("route `{name}`: {e}"));
    }
    let definition = json.to_string();
    set_and_apply(&http, &name, Some(definition), StatusCode::CREATED).await
}

/// Stores or proposes the change, applies it here, answers with the route
/// (or, deleted, its name).
async fn set_and_apply(
    http: &Http,
    name: &str,
    definition: Option<String>,
    status: StatusCode,
) -> Response {
    if let Err(e) = http
        .state
        .cluster()
        .set_hub_route(name, definition.clone())
        .await
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("route `{name}` not changed: {e}"),
        );
    }
    let hub = http.state.hub();
    if http.state.cluster().raft().is_none() {
        if let Err(e) = hub.apply_api_route(name, definition.as_deref(), http.state.store()) {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
    } else {
        // applied here by `cluster_bridge::run_events`, right after the
        // state machine: wait for it, so the answer shows the change (a
        // later change from another node may overtake it: then that shows)
        let paused = definition.as_deref().map(|d| {
            serde_json::from_str::<serde_json::Value>(d)
                .ok()
                .and_then(|v| v["paused"].as_bool())
                .unwrap_or(false)
        });
        let applied = || match (&paused, hub.route(name)) {
            (None, route) => route.is_none(),
            (Some(paused), Some(route)) => route.is_paused() == *paused,
            (Some(_), None) => false,
        };
        let deadline = tokio::time::Instant::now() + APPLY_WAIT;
        while !applied() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    match (definition, hub.route(name)) {
        (None, _) => Json(serde_json::json!({ "name": name, "deleted": true })).into_response(),
        (Some(_), Some(route)) => (status, Json(route.to_json())).into_response(),
        (Some(_), None) => no_route(name),
    }
}

async fn set_paused(http: Http, name: String, paused: bool) -> Response {
    let Some(route) = http.state.hub().route(&name) else {
        return no_route(&name);
    };
    match route.origin() {
        RouteOrigin::Config => {
            http.state.hub().set_paused(&name, paused);
            Json(route.to_json()).into_response()
        }
        RouteOrigin::Api(json) => {
            let mut json = json.clone();
            if let Some(map) = json.as_object_mut() {
                map.insert("paused".into(), paused.into());
            }
            // the stored definition changes; the running route follows it
            http.state.hub().set_paused(&name, paused);
            set_and_apply(&http, &name, Some(json.to_string()), StatusCode::OK).await
        }
    }
}

async fn pause(Extract(http): Extract<Http>, Path(name): Path<String>) -> Response {
    set_paused(http, name, true).await
}

async fn resume(Extract(http): Extract<Http>, Path(name): Path<String>) -> Response {
    set_paused(http, name, false).await
}

async fn delete(Extract(http): Extract<Http>, Path(name): Path<String>) -> Response {
    let Some(route) = http.state.hub().route(&name) else {
        return no_route(&name);
    };
    if *route.origin() == RouteOrigin::Config {
        return error(
            StatusCode::CONFLICT,
            format!("route `{name}` comes from the configuration file; remove it there"),
        );
    }
    set_and_apply(&http, &name, None, StatusCode::OK).await
}
