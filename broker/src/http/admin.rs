//! The admin API under `/api/v1/` (JSON), per node: this node's sessions and
//! retained messages. Protected by `crate::http::protect`.
//!
//! | method and path                         | does                                    |
//! |-----------------------------------------|-----------------------------------------|
//! | `GET /clients?prefix=&limit=&after=`    | sessions in client id order, paged      |
//! | `DELETE /clients/{id}`, `POST .../kick` | closes the client's connection          |
//! | `GET /sessions/{id}`                    | one session, its subscriptions, queue   |
//! | `DELETE /sessions/{id}`                 | ends the session                        |
//! | `GET /retained?prefix=&limit=&after=`   | retained messages in topic order, paged |
//! | `GET /retained/{topic}`                 | one retained message                    |
//! | `DELETE /retained/{topic}`              | deletes it, as an empty retained PUBLISH |
//! | `GET /cluster/status`                   | as `tern cluster status --json`         |
//! | `/routes...`                            | IoT hub routes (`routes_api.rs`)        |
//!
//! Paging: `limit` (default 100, at most 1000) items after the key `after`;
//! the answer's `next` is the `after` of the next page, `null` on the last.
//! Kicking and deleting go to the session actor (`crate::session::admin`);
//! deleting a retained message goes through the same path as a client's
//! empty retained PUBLISH (local index, store or cluster).

use std::sync::Arc;

use axum::extract::{Path, Query, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

use super::{error, Http};
use crate::codec::QoS;
use crate::fanout::store_retained;
use crate::handle::{Input, LazyGuard, SessionRef};
use crate::message::{Message, BROKER_ORIGIN};

/// Default and largest page.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(super) fn routes() -> Router<Http> {
    Router::new()
        .route("/clients", get(list_clients))
        .route("/clients/{id}", axum::routing::delete(kick))
        .route("/clients/{id}/kick", post(kick))
        .route("/sessions/{id}", get(show_session).delete(delete_session))
        .route("/retained", get(list_retained))
        .route(
            "/retained/{*topic}",
            get(get_retained).delete(delete_retained),
        )
        .route("/cluster/status", get(cluster_status))
        .merge(super::routes_api::routes())
}

/// `?prefix=&limit=&after=`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    prefix: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

impl Page {
    /// The positions in `keys` (sorted) of one page, and the next `after`.
    fn select(&self, keys: &[&str], limit: usize) -> (std::ops::Range<usize>, Option<String>) {
        let prefix = self.prefix.as_deref().unwrap_or("");
        let start = match &self.after {
            Some(after) => keys.partition_point(|k| *k <= after.as_str()),
            None => 0,
        };
        let start = start.max(keys.partition_point(|k| *k < prefix));
        let matching = keys[start..]
            .iter()
            .position(|k| !k.starts_with(prefix))
            .unwrap_or(keys.len() - start);
        let end = start + matching.min(limit);
        let next = (matching > limit).then(|| keys[end - 1].to_owned());
        (start..end, next)
    }
}

type PageQuery = Result<Query<Page>, axum::extract::rejection::QueryRejection>;

/// The page asked for and its limit; why the query is bad (an unknown
/// parameter, a limit that is not a number or out of range).
fn parse_page(q: PageQuery) -> Result<(Page, usize), String> {
    let Query(page) = q.map_err(|e| e.body_text())?;
    match page.limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok((page, n)),
        n => Err(format!("limit {n}: must be between 1 and {MAX_LIMIT}")),
    }
}

fn session(http: &Http, id: &str) -> Option<SessionRef> {
    http.state.registry().get(id)
}

fn no_session(http: &Http, id: &str) -> Response {
    let owner = http
        .state
        .cluster()
        .raft()
        .and_then(|raft| raft.session_owner(id))
        .filter(|o| http.state.cluster().node_id() != *o);
    match owner {
        Some(node) => error(
            StatusCode::NOT_FOUND,
            format!("no session `{id}` on this node; node {node} owns it"),
        ),
        None => error(StatusCode::NOT_FOUND, format!("no session `{id}`")),
    }
}

async fn list_clients(Extract(http): Extract<Http>, page: PageQuery) -> Response {
    let (page, limit) = match parse_page(page) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut sessions: Vec<(String, SessionRef)> = http
        .state
        .registry()
        .snapshot()
        .into_iter()
        .map(|(id, s)| (id.to_string(), s))
        .collect();
    sessions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let keys: Vec<&str> = sessions.iter().map(|(id, _)| id.as_str()).collect();
    let (range, next) = page.select(&keys, limit);
    let clients: Vec<serde_json::Value> = sessions[range]
        .iter()
        .map(|(id, s)| {
            serde_json::json!({
                "client_id": id,
                "online": s.is_online(),
                "persistent": s.is_persistent(),
            })
        })
        .collect();
    Json(serde_json::json!({ "clients": clients, "next": next })).into_response()
}

async fn show_session(Extract(http): Extract<Http>, Path(id): Path<String>) -> Response {
    let Some(s) = session(&http, &id) else {
        return no_session(&http, &id);
    };
    match s.ask(Input::Describe).await {
        Some(Some(details)) => Json(details).into_response(),
        _ => no_session(&http, &id),
    }
}

async fn kick(Extract(http): Extract<Http>, Path(id): Path<String>) -> Response {
    let Some(s) = session(&http, &id) else {
        return no_session(&http, &id);
    };
    match s.ask(Input::Kick).await {
        Some(true) => Json(serde_json::json!({ "client_id": id, "kicked": true })).into_response(),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("client `{id}` is not connected"),
        ),
    }
}

async fn delete_session(Extract(http): Extract<Http>, Path(id): Path<String>) -> Response {
    let Some(s) = session(&http, &id) else {
        return no_session(&http, &id);
    };
    match s.ask(Input::Discard).await {
        Some(true) => Json(serde_json::json!({ "client_id": id, "deleted": true })).into_response(),
        _ => no_session(&http, &id),
    }
}

/// A retained message as the API shows it.
fn retained_json(m: &Message) -> serde_json::Value {
    serde_json::json!({
        "topic": m.topic.to_string(),
        "qos": m.qos as u8,
        "payload_bytes": m.payload.len(),
        "payload": std::str::from_utf8(&m.payload).ok(),
        "payload_base64": base64::engine::general_purpose::STANDARD.encode(&m.payload),
        "expires_at_ms": m.expires_at_ms,
    })
}

async fn list_retained(Extract(http): Extract<Http>, page: PageQuery) -> Response {
    let (page, limit) = match parse_page(page) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut all: Vec<(String, Arc<Message>)> = Vec::new();
    http.state
        .retained()
        .read()
        .all(|topic, m| all.push((topic.to_owned(), m.clone())));
    all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let keys: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
    let (range, next) = page.select(&keys, limit);
    let messages: Vec<serde_json::Value> =
        all[range].iter().map(|(_, m)| retained_json(m)).collect();
    Json(serde_json::json!({ "retained": messages, "next": next })).into_response()
}

async fn get_retained(Extract(http): Extract<Http>, Path(topic): Path<String>) -> Response {
    match http.state.retained().read().get(&topic) {
        Some(m) => Json(retained_json(m)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no retained message on `{topic}`"),
        ),
    }
}

async fn delete_retained(Extract(http): Extract<Http>, Path(topic): Path<String>) -> Response {
    if http.state.retained().read().get(&topic).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no retained message on `{topic}`"),
        );
    }
    // An empty retained message deletes, as from a client [MQTT-3.3.1-10].
    let message = Arc::new(Message {
        topic: topic.as_str().into(),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: Default::default(),
        expires_at_ms: None,
        origin: BROKER_ORIGIN,
        received_at: None,
        uid: crate::message::next_uid(),
    });
    store_retained(&http.state, &message, &mut LazyGuard::none());
    Json(serde_json::json!({ "topic": topic, "deleted": true })).into_response()
}

async fn cluster_status(Extract(http): Extract<Http>) -> Response {
    match http.state.cluster().raft() {
        Some(raft) => Json(status_json(&remote_status(raft.status()))).into_response(),
        None => error(StatusCode::NOT_FOUND, "this node runs without a cluster"),
    }
}

/// This node's status in the form `tern cluster status` receives it.
pub fn remote_status(s: cluster::ClusterStatus) -> cluster::admin::RemoteStatus {
    cluster::admin::RemoteStatus {
        node_id: s.node_id,
        leader: s.leader,
        term: s.term,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        role: s.role.to_owned(),
        ready: s.ready,
        initialized: s.initialized,
        members: s.members,
        voters: s.voters,
        peers: s.peers,
    }
}

/// The JSON of `tern cluster status --json` and `GET /api/v1/cluster/status`.
pub fn status_json(s: &cluster::admin::RemoteStatus) -> serde_json::Value {
    let members: Vec<serde_json::Value> = s
        .members
        .iter()
        .map(|m| {
            let contact = s
                .peers
                .iter()
                .find(|p| p.id == m.id)
                .and_then(|p| p.last_contact)
                .map(|t| t.as_millis() as u64);
            serde_json::json!({
                "id": m.id,
                "address": m.address,
                "mqtt_address": m.mqtt_address,
                "voter": s.voters.contains(&m.id),
                "last_contact_ms": contact,
            })
        })
        .collect();
    serde_json::json!({
        "node_id": s.node_id,
        "leader": s.leader,
        "role": s.role,
        "term": s.term,
        "commit_index": s.commit_index,
        "applied_index": s.applied_index,
        "ready": s.ready,
        "members": members,
    })
}
