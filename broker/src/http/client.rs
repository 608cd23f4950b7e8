//! The admin commands of the `tern` binary (`tern clients list`, `tern
//! sessions show|delete`, `tern kick`, `tern retained list|delete`): HTTP/1
//! requests to a node's admin API (hyper-util's client, plain HTTP), the
//! answer printed as a table or as JSON.

use std::process::ExitCode;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{AdminArgs, ClientsAction, Command, RetainedAction, SessionsAction};

/// Why a request to the admin API failed before an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address or path does not make a URI.
    #[error("bad address `{address}`: {reason}")]
    Address { address: String, reason: String },
    /// No connection, or the connection broke.
    #[error("{address}: {reason}")]
    Request { address: String, reason: String },
    /// No answer within the timeout.
    #[error("{address}: no answer within {0:?}", TIMEOUT)]
    Timeout { address: String },
}

/// How long a command waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An answer of the admin API (or any endpoint of the node).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    pub body: String,
}

/// One request to `http://{address}{path_and_query}`.
pub async fn request(
    address: &str,
    method: Method,
    path_and_query: &str,
    token: Option<&str>,
) -> Result<Answer, ClientError> {
    let uri = format!("http://{address}{path_and_query}");
    let mut builder = Request::builder().method(method).uri(&uri);
    if let Some(token) = token {
        builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Address {
            address: address.to_owned(),
            reason: e.to_string(),
        })?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let failed = |e: &dyn std::fmt::Display| ClientError::Request {
        address: address.to_owned(),
        reason: e.to_string(),
    };
    let exchange = async {
        let response = client.request(request).await.map_err(|e| failed(&e))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(&e))?
            .to_bytes();
        Ok(Answer {
            status,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout {
            address: address.to_owned(),
        })?
}

/// Percent-encodes a path segment or query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A topic as a path: its levels encoded, `/` kept.
fn encode_topic(topic: &str) -> String {
    topic.split('/').map(encode).collect::<Vec<_>>().join("/")
}

fn page_query(prefix: &Option<String>, limit: usize, after: &Option<String>) -> String {
    let mut q = format!("?limit={limit}");
    if let Some(p) = prefix {
        q.push_str(&format!("&prefix={}", encode(p)));
    }
    if let Some(a) = after {
        q.push_str(&format!("&after={}", encode(a)));
    }
    q
}

/// Runs an admin command; `None` if `command` is not one.
pub fn run(command: &Command) -> Option<ExitCode> {
    let (admin, method, path, table): (
        &AdminArgs,
        Method,
        String,
        fn(&serde_json::Value) -> String,
    ) = match command {
        Command::Clients {
            admin,
            action:
                ClientsAction::List {
                    prefix,
                    limit,
                    after,
                    json,
                },
        } => (
            admin,
            Method::GET,
            format!("/api/v1/clients{}", page_query(prefix, *limit, after)),
            if *json { pretty } else { clients_table },
        ),
        Command::Sessions { admin, action } => match action {
            SessionsAction::Show { id } => (
                admin,
                Method::GET,
                format!("/api/v1/sessions/{}", encode(id)),
                pretty,
            ),
            SessionsAction::Delete { id } => (
                admin,
                Method::DELETE,
                format!("/api/v1/sessions/{}", encode(id)),
                pretty,
            ),
        },
        Command::Kick { admin, id } => (
            admin,
            Method::POST,
            format!("/api/v1/clients/{}/kick", encode(id)),
            pretty,
        ),
        Command::Retained { admin, action } => match action {
            RetainedAction::List {
                prefix,
                limit,
                after,
            } => (
                admin,
                Method::GET,
                format!("/api/v1/retained{}", page_query(prefix, *limit, after)),
                retained_table,
            ),
            RetainedAction::Delete { topic } => (
                admin,
                Method::DELETE,
                format!("/api/v1/retained/{}", encode_topic(topic)),
                pretty,
            ),
        },
        _ => return None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    let result = runtime.block_on(request(&admin.http, method, &path, admin.token.as_deref()));
    Some(match result {
        Ok(Answer { status, body, .. }) => {
            let json: Option<serde_json::Value> = serde_json::from_str(&body).ok();
            match (status.is_success(), json) {
                (true, Some(json)) => {
                    print!("{}", table(&json));
                    ExitCode::SUCCESS
                }
                (_, Some(json)) => {
                    let message = json["error"].as_str().unwrap_or(&body).to_owned();
                    eprintln!(
                        "tern: {} {}: {message}",
                        status.as_u16(),
                        status.canonical_reason().unwrap_or("")
                    );
                    ExitCode::FAILURE
                }
                (_, None) => {
                    eprintln!("tern: {}: unexpected answer: {body}", status.as_u16());
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("tern: cannot reach the admin API: {e}");
            ExitCode::FAILURE
        }
    })
}

fn pretty(json: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(json).unwrap_or_default();
    text.push('\n');
    text
}

fn clients_table(json: &serde_json::Value) -> String {
    let mut out = format!("{:<40} {:<8} {}\n", "client id", "online", "persistent");
    for c in json["clients"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<40} {:<8} {}\n",
            c["client_id"].as_str().unwrap_or(""),
            c["online"].as_bool().unwrap_or(false),
            c["persistent"].as_bool().unwrap_or(false),
        ));
    }
    if let Some(next) = json["next"].as_str() {
        out.push_str(&format!("(more: --after {next})\n"));
    }
    out
}

fn retained_table(json: &serde_json::Value) -> String {
    let mut out = format!("{:<40} {:<4} {:>8} payload\n", "topic", "qos", "bytes");
    for m in json["retained"].as_array().into_iter().flatten() {
        let payload = m["payload"].as_str().map_or("(binary)".to_owned(), |p| {
            let mut p: String = p.chars().take(40).collect();
            p = p.replace('\n', " ");
            p
        });
        out.push_str(&format!(
            "{:<40} {:<4} {:>8} {payload}\n",
            m["topic"].as_str().unwrap_or(""),
            m["qos"].as_u64().unwrap_or(0),
            m["payload_bytes"].as_u64().unwrap_or(0),
        ));
    }
    if let Some(next) = json["next"].as_str() {
        out.push_str(&format!("(more: --after {next})\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_are_percent_encoded() {
        assert_eq!(encode("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(
            encode_topic("$SYS/broker/retained messages/count"),
            "%24SYS/broker/retained%20messages/count"
        );
        assert_eq!(
            page_query(&Some("dev-".into()), 5, &Some("dev-1".into())),
            "?limit=5&prefix=dev-&after=dev-1"
        );
    }
}
