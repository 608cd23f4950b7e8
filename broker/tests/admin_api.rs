//! The admin API (`/api/v1/`) of a real broker driven by real MQTT clients,
//! its protection (loopback only without a token; 401 with one), and the
//! `tern clients|sessions|kick|retained` commands run as real processes.

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;

use broker::codec::Packet;
use common::http::{call, eventually, get, json};
use common::{build, with_http, Raw, TestBroker};
use hyper::Method;

fn broker_with_http() -> TestBroker {
    TestBroker::start_with(with_http)
}

async fn subscribe(c: &mut Raw, packet_id: u16, filters: &[(&str, u8)]) {
    c.send(&build::subscribe(packet_id, filters)).await;
    let granted: Vec<u8> = filters.iter().map(|(_, q)| *q).collect();
    assert_eq!(
        c.recv_bytes().await.unwrap(),
        build::suback(packet_id, &granted)
    );
}

fn ids(answer: &serde_json::Value) -> Vec<String> {
    answer["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn clients_are_listed_filtered_and_paged() {
    let broker = broker_with_http();
    let http = broker.http_addr();
    let mut clients = Vec::new();
    for id in ["dev-3", "dev-1", "app-1", "dev-2", "dev-4"] {
        clients.push(Raw::mqtt(broker.addr, id, !id.ends_with('4')).await);
    }
    // dev-4 is persistent and goes offline
    clients.pop().unwrap().send(&build::disconnect()).await;
    eventually(|| async {
        let all = json(&get(http, "/api/v1/clients").await);
        all["clients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["client_id"] == "dev-4" && c["online"] == false)
    })
    .await;

    let all = json(&get(http, "/api/v1/clients").await);
    assert_eq!(ids(&all), ["app-1", "dev-1", "dev-2", "dev-3", "dev-4"]);
    assert_eq!(all["next"], serde_json::Value::Null);
    let dev4 = &all["clients"][4];
    assert_eq!(
        (dev4["online"].as_bool(), dev4["persistent"].as_bool()),
        (Some(false), Some(true))
    );

    let page1 = json(&get(http, "/api/v1/clients?prefix=dev-&limit=2").await);
    assert_eq!(ids(&page1), ["dev-1", "dev-2"]);
    assert_eq!(page1["next"], "dev-2");
    let page2 = json(&get(http, "/api/v1/clients?prefix=dev-&limit=2&after=dev-2").await);
    assert_eq!(ids(&page2), ["dev-3", "dev-4"]);
    assert_eq!(page2["next"], serde_json::Value::Null);

    for bad in ["?limit=0", "?limit=5000", "?limit=many", "?colour=red"] {
        let answer = get(http, &format!("/api/v1/clients{bad}")).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        assert!(json(&answer)["error"].is_string());
    }
}

#[tokio::test]
async fn a_session_shows_its_subscriptions_and_queue() {
    let broker = broker_with_http();
    let http = broker.http_addr();
    let mut sub = Raw::mqtt(broker.addr, "watcher", false).await;
    subscribe(&mut sub, 1, &[("b/#", 1), ("a/+", 0)]).await;
    sub.send(&build::disconnect()).await;
    eventually(|| async { json(&get(http, "/api/v1/sessions/watcher").await)["online"] == false })
        .await;
    // three messages queue for the offline persistent session
    let mut publisher = Raw::mqtt(broker.addr, "pub", true).await;
    for i in 1..=3u16 {
        publisher
            .send(&build::publish("b/x", 1, false, false, i, b"m"))
            .await;
        assert_eq!(publisher.recv_bytes().await.unwrap(), build::puback(i));
    }
    let s = json(&get(http, "/api/v1/sessions/watcher").await);
    assert_eq!(s["client_id"], "watcher");
    assert_eq!(s["persistent"], true);
    assert_eq!(s["protocol"], "3.1.1");
    assert_eq!(s["queued_messages"], 3);
    assert_eq!(s["inflight_messages"], 0);
    assert!(s["offline_since_ms"].is_u64());
    let filters: Vec<(&str, u64)> = s["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["filter"].as_str().unwrap(), f["qos"].as_u64().unwrap()))
        .collect();
    assert_eq!(filters, [("a/+", 0), ("b/#", 1)]);

    let online = json(&get(http, "/api/v1/sessions/pub").await);
    assert_eq!(online["online"], true);
    assert_eq!(online["persistent"], false);
    assert!(online["peer"].as_str().unwrap().starts_with("127.0.0.1:"));

    let missing = get(http, "/api/v1/sessions/nobody").await;
    assert_eq!(missing.status, 404);
    assert!(json(&missing)["error"].as_str().unwrap().contains("nobody"));
}

#[tokio::test]
async fn kick_closes_the_connection_and_keeps_a_persistent_session() {
    let broker = broker_with_http();
    let http = broker.http_addr();
    // 5.0: told why (DISCONNECT 0x98 Administrative action)
    let mut v5 = Raw::mqtt5(broker.addr, "kick-me", true, &[]).await;
    let answer = call(http, Method::DELETE, "/api/v1/clients/kick-me", None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(json(&answer)["kicked"], true);
    let got = v5.expect_closed().await;
    match got.first().map(|b| b.as_slice()) {
        Some([0xE0, _, 0x98, ..]) => {}
        other => panic!("DISCONNECT 0x98 expected, got {other:02x?}"),
    }
    // a clean session ends with its connection
    assert_eq!(get(http, "/api/v1/sessions/kick-me").await.status, 404);

    // 3.1.1, persistent, through POST .../kick: the socket closes, the
    // session stays with its subscription
    let mut v3 = Raw::mqtt(broker.addr, "kick-keep", false).await;
    subscribe(&mut v3, 1, &[("k/#", 1)]).await;
    let answer = call(http, Method::POST, "/api/v1/clients/kick-keep/kick", None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(v3.expect_closed().await.is_empty());
    let s = json(&get(http, "/api/v1/sessions/kick-keep").await);
    assert_eq!(
        (
            s["online"].as_bool(),
            s["subscriptions"][0]["filter"].as_str()
        ),
        (Some(false), Some("k/#"))
    );
    // kicking it again: not connected
    let again = call(http, Method::DELETE, "/api/v1/clients/kick-keep", None).await;
    assert_eq!(again.status, 404);
    let unknown = call(http, Method::DELETE, "/api/v1/clients/nobody", None).await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn deleting_a_session_discards_it() {
    let broker = broker_with_http();
    let http = broker.http_addr();
    let mut c = Raw::mqtt(broker.addr, "doomed", false).await;
    subscribe(&mut c, 1, &[("d/#", 1)]).await;
    let answer = call(http, Method::DELETE, "/api/v1/sessions/doomed", None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(json(&answer)["deleted"], true);
    c.expect_closed().await;
    assert_eq!(get(http, "/api/v1/sessions/doomed").await.status, 404);
    assert!(ids(&json(&get(http, "/api/v1/clients").await)).is_empty());
    // reconnecting without Clean Session finds no session
    let mut back = Raw::connect(broker.addr).await;
    back.send(&build::connect(4, "doomed", false, 60)).await;
    assert_eq!(back.recv_bytes().await.unwrap(), build::connack(false, 0));
    // and its subscription is gone: nothing arrives for d/x
    let mut p = Raw::mqtt(broker.addr, "p", true).await;
    p.send(&build::publish("d/x", 0, false, false, 0, b"x"))
        .await;
    back.expect_silence().await;
    assert_eq!(
        call(http, Method::DELETE, "/api/v1/sessions/nobody", None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn retained_messages_are_listed_read_and_deleted() {
    let broker = broker_with_http();
    let http = broker.http_addr();
    let mut p = Raw::mqtt(broker.addr, "retainer", true).await;
    p.send(&build::publish("r/b", 0, true, false, 0, b"bee"))
        .await;
    p.send(&build::publish("r/a", 1, true, false, 1, b"ay"))
        .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(1));
    p.send(&build::publish("other", 0, true, false, 0, &[0xff, 0x00]))
        .await;
    eventually(|| async {
        json(&get(http, "/api/v1/retained").await)["retained"]
            .as_array()
            .unwrap()
            .len()
            == 3
    })
    .await;
    let list = json(&get(http, "/api/v1/retained?prefix=r/").await);
    let topics: Vec<&str> = list["retained"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["r/a", "r/b"]);
    let one = json(&get(http, "/api/v1/retained/r/a").await);
    assert_eq!(
        (one["payload"].as_str(), one["qos"].as_u64()),
        (Some("ay"), Some(1))
    );
    let binary = json(&get(http, "/api/v1/retained/other").await);
    assert_eq!(binary["payload"], serde_json::Value::Null);
    assert_eq!(binary["payload_base64"], "/wA=");

    let deleted = call(http, Method::DELETE, "/api/v1/retained/r/a", None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(get(http, "/api/v1/retained/r/a").await.status, 404);
    // a new subscriber gets r/b only
    let mut s = Raw::mqtt(broker.addr, "late", true).await;
    subscribe(&mut s, 1, &[("r/#", 0)]).await;
    match s.recv().await {
        Some(Packet::Publish(p)) => assert_eq!(&p.topic[..], "r/b"),
        other => panic!("retained r/b expected, got {other:?}"),
    }
    s.expect_silence().await;
    let again = call(http, Method::DELETE, "/api/v1/retained/r/a", None).await;
    assert_eq!(again.status, 404);
}

/// An address of this machine that is not loopback.
fn non_loopback_ip() -> IpAddr {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    // no packet is sent: connecting a UDP socket only picks a route
    socket
        .connect("10.255.255.1:9")
        .expect("a route to a non-loopback address");
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

#[tokio::test]
async fn without_a_token_only_loopback_peers_reach_the_admin_api() {
    let broker = TestBroker::start_with(|c| c.http.bind = "0.0.0.0:0".into());
    let port = broker.http_addr().port();
    let outside = SocketAddr::new(non_loopback_ip(), port);
    let refused = get(outside, "/api/v1/clients").await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(json(&refused)["error"]
        .as_str()
        .unwrap()
        .contains("loopback"));
    // metrics and health stay open
    assert_eq!(get(outside, "/metrics").await.status, 200);
    assert_eq!(get(outside, "/healthz").await.status, 200);
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(get(local, "/api/v1/clients").await.status, 200);
}

#[tokio::test]
async fn with_a_token_the_admin_api_wants_it_from_everyone() {
    let broker = TestBroker::start_with(|c| {
        with_http(c);
        c.http.admin_token = Some("let-me-in".into());
    });
    let http = broker.http_addr();
    for token in [None, Some("wrong"), Some("let-me-i")] {
        let answer = call(http, Method::GET, "/api/v1/clients", token).await;
        assert_eq!(answer.status, 401, "{token:?}");
    }
    let ok = call(http, Method::GET, "/api/v1/clients", Some("let-me-in")).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(get(http, "/metrics").await.status, 200);
}

/// Runs `tern ARGS` and returns (success, stdout, stderr).
fn tern(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .env_remove("TERN_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn cli_commands_call_the_admin_api() {
    let broker = TestBroker::start_with(|c| {
        with_http(c);
        c.http.admin_token = Some("t0ken".into());
    });
    let http = broker.http_addr().to_string();
    let mut c = Raw::mqtt(broker.addr, "cli-client", false).await;
    subscribe(&mut c, 1, &[("cli/#", 1)]).await;
    c.send(&build::publish("cli/kept", 0, true, false, 0, b"hello"))
        .await;
    let _other = Raw::mqtt(broker.addr, "zz-other", true).await;
    let http = http.as_str();

    let (ok, out, err) = tern(&["clients", "list", "--http", http, "--token", "t0ken"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("client id"), "{out}");
    assert!(
        lines[1].starts_with("cli-client") && lines[1].contains("true"),
        "{out}"
    );
    assert!(lines[2].starts_with("zz-other"), "{out}");
    let (ok, out, _) = tern(&[
        "clients", "list", "--http", http, "--token", "t0ken", "--prefix", "zz", "--json",
    ]);
    assert!(ok);
    let page: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ids(&page), ["zz-other"]);

    let (ok, out, err) = tern(&[
        "sessions",
        "show",
        "cli-client",
        "--http",
        http,
        "--token",
        "t0ken",
    ]);
    assert!(ok, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["subscriptions"][0]["filter"], "cli/#");

    let (ok, out, err) = tern(&["retained", "list", "--http", http, "--token", "t0ken"]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("cli/kept") && l.ends_with("hello")),
        "{out}"
    );

    // the token from the environment, as TERN_ADMIN_TOKEN
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["kick", "cli-client", "--http", http])
        .env("TERN_ADMIN_TOKEN", "t0ken")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.expect_closed().await;

    // errors: a wrong token, an unknown session, nothing listening
    let (ok, _, err) = tern(&["clients", "list", "--http", http, "--token", "nope"]);
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = tern(&[
        "sessions", "show", "ghost", "--http", http, "--token", "t0ken",
    ]);
    assert!(!ok && err.contains("404") && err.contains("ghost"), "{err}");
    let closed = common::process::free_port();
    let (ok, _, err) = tern(&["clients", "list", "--http", &format!("127.0.0.1:{closed}")]);
    assert!(!ok && err.contains("cannot reach the admin API"), "{err}");
}
