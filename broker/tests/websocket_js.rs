//! MQTT.js, a WebSocket MQTT client written by others, against Tern: from
//! Node, and from a page in headless Chromium driven by playwright-core.
//! Each checks that the JS client's messages go through Tern both ways and
//! that a raw TCP client sees what the JS client published.
//!
//! Needs `node`, the packages of `tests/js/package-lock.json` installed in
//! `tests/js/node_modules` (`npm ci`), and `/usr/bin/chromium` (or
//! `$TERN_CHROMIUM`); `scripts/test.sh` installs them. A missing one fails
//! the test with a message saying what to install: these tests never pass
//! without running.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use broker::config::ListenerProtocol;
use common::{build, listener, Raw, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Guards against a hung browser or Node process (not a performance bound).
const JS_PATIENCE: Duration = Duration::from_secs(120);

fn js_dir() -> PathBuf {
    common::manifest_dir().join("tests/js")
}

/// Panics with what to install if Node or the npm packages are missing.
fn require_node_packages() {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "`node` is not installed: install Node.js 20 or newer (scripts/test.sh does)"
    );
    for package in ["mqtt", "playwright-core"] {
        let path = js_dir().join("node_modules").join(package);
        assert!(
            path.exists(),
            "{} is missing: run `npm ci` in {} (scripts/test.sh does)",
            path.display(),
            js_dir().display()
        );
    }
}

/// Runs `node SCRIPT ARGS` in `tests/js`; returns its stdout, or panics
/// with its output if it fails.
async fn node(script: &str, args: &[&str]) -> String {
    let child = tokio::process::Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(js_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let out = tokio::time::timeout(JS_PATIENCE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("node {script} still running after {JS_PATIENCE:?}"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node {script} {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    stdout
}

/// A broker with TCP (`addr`) and WebSocket listeners; returns the
/// WebSocket address.
fn broker() -> (TestBroker, SocketAddr) {
    let broker = TestBroker::start_with(|c| c.listeners.push(listener(ListenerProtocol::Ws, None)));
    let ws = broker.addrs()[1];
    (broker, ws)
}

/// A TCP client subscribed to `filter`.
async fn tcp_subscriber(broker: &TestBroker, id: &str, filter: &str) -> Raw {
    let mut s = Raw::mqtt(broker.addr, id, true).await;
    s.send(&build::subscribe(1, &[(filter, 0)])).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::suback(1, &[0]));
    s
}

async fn mqtt_js_in_node(version: &str) {
    require_node_packages();
    let (broker, ws) = broker();
    let prefix = format!("node{version}");
    let mut watcher = tcp_subscriber(&broker, "watcher", &format!("{prefix}/to-rust")).await;
    let url = format!("ws://127.0.0.1:{}/mqtt", ws.port());
    let out = node("node_client.mjs", &[&url, version, &prefix]).await;
    assert!(
        out.contains(r#""connected":true"#)
            && out.contains(&format!(r#""echoed":"hello from node v{version}""#))
            && out.contains(r#""errors":[]"#),
        "{out}"
    );
    assert_eq!(
        watcher.recv_bytes().await.unwrap(),
        build::publish(
            &format!("{prefix}/to-rust"),
            0,
            false,
            false,
            0,
            format!("node v{version} says hi").as_bytes()
        )
    );
}

#[tokio::test]
async fn mqtt_js_in_node_publishes_and_subscribes_over_websocket_v311() {
    mqtt_js_in_node("4").await;
}

#[tokio::test]
async fn mqtt_js_in_node_publishes_and_subscribes_over_websocket_v5() {
    mqtt_js_in_node("5").await;
}

/// Serves the test page and MQTT.js's browser bundle over HTTP on a
/// loopback port, until the returned task is aborted.
async fn serve_page() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let html = std::fs::read(js_dir().join("browser.html")).expect("browser.html");
    let bundle = std::fs::read(js_dir().join("node_modules/mqtt/dist/mqtt.min.js"))
        .expect("node_modules/mqtt/dist/mqtt.min.js (npm ci)");
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = http.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = http.accept().await else {
                return;
            };
            let (html, bundle) = (html.clone(), bundle.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0u8; 2048];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&request);
                let path = line.split_whitespace().nth(1).unwrap_or("/");
                let (status, kind, body): (&str, &str, &[u8]) = match path.split('?').next() {
                    Some("/") => ("200 OK", "text/html; charset=utf-8", &html),
                    Some("/mqtt.min.js") => ("200 OK", "text/javascript", &bundle),
                    _ => ("404 Not Found", "text/plain", b"not found"),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn mqtt_js_in_headless_chromium_publishes_and_subscribes_over_websocket() {
    require_node_packages();
    let chromium = std::env::var("TERN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is not installed at {chromium}: `apt-get install chromium` (scripts/test.sh does), \
         or set TERN_CHROMIUM"
    );
    let (broker, ws) = broker();
    let prefix = "browser";
    let mut watcher = tcp_subscriber(&broker, "watcher", &format!("{prefix}/#")).await;
    // A retained message from Rust, for the browser to receive.
    let mut publisher = Raw::mqtt(broker.addr, "rust-publisher", true).await;
    publisher
        .send(&build::publish(
            &format!("{prefix}/retained"),
            1,
            true,
            false,
            1,
            b"from rust",
        ))
        .await;
    assert_eq!(publisher.recv_bytes().await.unwrap(), build::puback(1));
    assert_eq!(
        watcher.recv_bytes().await.unwrap(),
        build::publish(
            &format!("{prefix}/retained"),
            0,
            false,
            false,
            0,
            b"from rust"
        )
    );

    let (http, server) = serve_page().await;
    let page = format!(
        "http://127.0.0.1:{}/?broker=ws://127.0.0.1:{}/mqtt&prefix={prefix}",
        http.port(),
        ws.port()
    );
    let out = node("browser.mjs", &[&page]).await;
    server.abort();
    assert!(
        out.contains(r#""connected":true"#)
            && out.contains(r#""echoed":"hello from chromium""#)
            && out.contains(r#""retained":"from rust""#)
            && out.contains(r#""errors":[]"#),
        "{out}"
    );

    // The TCP client saw both of the browser's messages, in order.
    assert_eq!(
        watcher.recv_bytes().await.unwrap(),
        build::publish(
            &format!("{prefix}/to-rust"),
            0,
            false,
            false,
            0,
            b"browser says hi"
        )
    );
    assert_eq!(
        watcher.recv_bytes().await.unwrap(),
        build::publish(
            &format!("{prefix}/echo"),
            0,
            false,
            false,
            0,
            b"hello from chromium"
        )
    );
}
