//! MQTT.js, a WebSocket MQTT client written by others, against Tern: from
//! Node, and from a page in headless Chromium. Each checks that the JS
//! client's messages go through Tern both ways and that a raw TCP client sees
//! what the JS client published.
//!
//! The client is Debian's `node-mqtt` (MQTT.js 4.3), found through
//! `NODE_PATH`; the page gets a bundle of it that the test builds with
//! Debian's `browserify`; Chromium is `/usr/bin/chromium` (or
//! `$TERN_CHROMIUM`), driven by Python's `playwright` (`$TERN_PYTHON`, else
//! `python3`). `scripts/test.sh` installs all of them. A missing one fails
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

/// Where Debian installs Node modules (`node-mqtt`, `browserify` and their
/// dependencies). Debian's own `nodejs` searches them by default; other
/// builds of Node (NodeSource's) need them in `NODE_PATH`.
const DEBIAN_NODE_PATH: &str = "/usr/share/nodejs:/usr/lib/nodejs";

/// MQTT.js's entry point in Debian's `node-mqtt`.
const MQTT_JS: &str = "/usr/share/nodejs/mqtt/mqtt.js";

fn js_dir() -> PathBuf {
    common::manifest_dir().join("tests/js")
}

/// Panics with what to install if Node or Debian's MQTT.js is missing.
fn require_node_mqtt() {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "`node` is not installed: install Node.js (scripts/test.sh does)"
    );
    assert!(
        Path::new(MQTT_JS).exists(),
        "{MQTT_JS} is missing: `apt-get install node-mqtt` (scripts/test.sh does)"
    );
}

/// Runs `PROGRAM ARGS` in `tests/js` with Debian's Node modules on
/// `NODE_PATH`; returns its stdout, or panics with its output if it fails.
async fn run(program: &str, args: &[&str]) -> String {
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(js_dir())
        .env("NODE_PATH", DEBIAN_NODE_PATH)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let out = tokio::time::timeout(JS_PATIENCE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} still running after {JS_PATIENCE:?}"))
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
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
    require_node_mqtt();
    let (broker, ws) = broker();
    let prefix = format!("node{version}");
    let mut watcher = tcp_subscriber(&broker, "watcher", &format!("{prefix}/to-rust")).await;
    let url = format!("ws://127.0.0.1:{}/mqtt", ws.port());
    let out = run("node", &["node_client.js", &url, version, &prefix]).await;
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

/// MQTT.js for the browser: Debian's `node-mqtt` bundled by Debian's
/// `browserify` as a standalone script defining `mqtt` (how MQTT.js builds
/// its own `dist/mqtt.js`).
async fn browser_bundle() -> Vec<u8> {
    assert!(
        Path::new("/usr/bin/browserify").exists(),
        "/usr/bin/browserify is missing: `apt-get install node-browserify` (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("mqtt.js");
    run(
        "browserify",
        &[
            MQTT_JS,
            "--standalone",
            "mqtt",
            "-o",
            bundle.to_str().unwrap(),
        ],
    )
    .await;
    std::fs::read(&bundle).expect("browserify wrote the bundle")
}

/// Serves the test page and MQTT.js's browser bundle over HTTP on a
/// loopback port, until the returned task is aborted.
async fn serve_page() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let html = std::fs::read(js_dir().join("browser.html")).expect("browser.html");
    let bundle = browser_bundle().await;
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
    require_node_mqtt();
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
    let python = std::env::var("TERN_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = run(&python, &["browser.py", &page]).await;
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
