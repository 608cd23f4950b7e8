//! The `tern` binary: help, configuration errors, startup errors and
//! graceful shutdown on SIGTERM.

mod common;

use std::process::Command;

use common::process::{free_port, TernProcess};
use common::{build, Raw};

fn tern(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .env_remove("TERN_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn help_documents_the_options_and_their_variables() {
    let out = tern(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--config",
        "--data-dir",
        "--bind",
        "--log-level",
        "TERN_DATA_DIR",
        "TERN_BIND",
        "--ws-bind",
        "TERN_WS_BIND",
        "--http-bind",
        "TERN_HTTP_BIND",
        "clients",
        "sessions",
        "kick",
        "retained",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn unknown_config_key_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tern.toml");
    std::fs::write(&file, "[mqtt]\nmax_packet_sise = 10\n").unwrap();
    let out = tern(&["--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("max_packet_sise") && err.contains("tern.toml"),
        "{err}"
    );
}

#[test]
fn invalid_toml_and_bad_values_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    for (text, needle) in [
        ("[mqtt\nmax_inflight = 1", "broken.toml"),
        ("[mqtt]\nmax_inflight = -1", "max_inflight"),
        ("[mqtt]\nmax_packet_size = 1", "mqtt.max_packet_size"),
        ("[[listeners]]\nbind = \"nowhere\"", "bind"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = tern(&["--config", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(needle), "{text}: {err}");
    }
    let out = tern(&["--config", "/nonexistent/tern.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn port_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = tern(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--ws-bind",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot listen on 127.0.0.1:"), "{err}");
}

/// A cluster member whose MQTT port is taken stops with the same message:
/// the cluster's runtime, already started by then, is shut down without a
/// panic that would hide it (CI once saw only "Cannot drop a runtime in a
/// context where blocking is not allowed").
#[test]
fn port_in_use_is_reported_by_a_cluster_member() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mqtt = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let cluster = format!("127.0.0.1:{}", free_port());
    let out = tern(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--bind",
        &mqtt,
        "--ws-bind",
        "127.0.0.1:0",
        "--http-bind",
        "",
        "--node-id",
        "1",
        "--cluster-listen",
        &cluster,
        "--seeds",
        &format!("1={cluster}"),
    ]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on {mqtt}")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn http_port_in_use_and_bad_http_address_are_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mqtt = format!("127.0.0.1:{}", free_port());
    let data = dir.path().to_str().unwrap();
    let base = [
        "--data-dir",
        data,
        "--bind",
        &mqtt,
        "--ws-bind",
        "127.0.0.1:0",
    ];
    let out = tern(&[&base[..], &["--http-bind", &http]].concat());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("cannot listen on {http} for HTTP")),
        "{err}"
    );
    let out = tern(&[&base[..], &["--http-bind", "somewhere:80"]].concat());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("http.bind") && err.contains("somewhere:80"),
        "{err}"
    );
}

#[test]
fn data_directory_in_use_by_another_tern_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _first = TernProcess::start(&data, free_port(), &[]);
    let out = tern(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--bind",
        &format!("127.0.0.1:{}", free_port()),
        "--ws-bind",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("in use"), "{err}");
}

#[tokio::test]
async fn sigterm_tells_clients_flushes_the_store_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let tern = TernProcess::start(&data, port, &[]);
    let addr = tern.addr;

    // A persistent session with a queued message.
    let mut s = Raw::mqtt(addr, "graceful", false).await;
    s.send(&build::subscribe(1, &[("g", 1)])).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    s.send(&build::disconnect()).await;
    s.expect_closed().await;
    let mut p = Raw::mqtt(addr, "pub", true).await;
    p.send(&build::publish("g", 1, false, false, 1, b"queued"))
        .await;
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(1));

    // A 5.0 client is told the server is shutting down (0x8B).
    let mut v5 = Raw::mqtt5(addr, "five", true, &[]).await;
    let status = tern.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(v5.expect_closed().await, vec![vec![0xE0, 0x01, 0x8B]]);
    let log = std::fs::read_to_string(data.with_extension(format!("{port}.log"))).unwrap();
    assert!(log.contains("store flushed"), "{log}");

    let _tern = TernProcess::start(&data, port, &[]);
    let mut s = Raw::connect(addr).await;
    s.send(&build::connect(4, "graceful", false, 60)).await;
    assert_eq!(s.recv_bytes().await.unwrap(), build::connack(true, 0));
    assert_eq!(
        s.recv_bytes().await.unwrap(),
        build::publish("g", 1, false, false, 1, b"queued")
    );
}
