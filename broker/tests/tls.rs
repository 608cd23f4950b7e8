//! MQTT over TLS with real handshakes (tokio-rustls client, certificates
//! made by rcgen in the test): server certificates, client certificates
//! required or optional, untrusted, expired and revoked client
//! certificates, secure WebSocket, the handshake timeout, the connection
//! limit, certificate reload without a restart (file change, SIGHUP), and
//! the certificate's identity reaching the session (in the `tern` binary's
//! debug log).

mod common;

use std::path::Path;
use std::time::Duration;

use broker::config::{ClientAuth, Config, ListenerProtocol, TlsConfig};
use common::pki::{self, Ca};
use common::process::{free_port, TernProcess};
use common::{build, check_for, listener, poll_until, Raw, TestBroker, PATIENCE};
use tokio::io::AsyncWriteExt;

/// A broker with a TCP listener (`addrs()[0]`) and a TLS listener
/// (`addrs()[1]`) whose certificate is issued by `ca`, configured by `tls`.
fn broker_with_tls(
    dir: &Path,
    ca: &Ca,
    protocol: ListenerProtocol,
    tweak: impl FnOnce(&mut TlsConfig),
    tweak_config: impl FnOnce(&mut Config),
) -> TestBroker {
    let (cert, key) = ca.server().write(dir, "server");
    let ca_path = pki::write(dir, "ca.pem", &ca.cert.pem());
    let mut tls = TlsConfig::new(cert, key);
    tls.ca = Some(ca_path);
    tweak(&mut tls);
    TestBroker::start_with(|c| {
        c.listeners.push(listener(protocol, Some(tls)));
        tweak_config(c);
    })
}

fn required(tls: &mut TlsConfig) {
    tls.client_auth = ClientAuth::Required;
}

/// Publishes `payload` from a TCP client and checks `tls_client` (subscribed
/// to `t`) receives it, then the reverse direction.
async fn exchange(broker: &TestBroker, mut tls_client: Raw) {
    tls_client.send(&build::subscribe(1, &[("t", 1)])).await;
    assert_eq!(
        tls_client.recv_bytes().await.unwrap(),
        build::suback(1, &[1])
    );
    let mut tcp = Raw::mqtt(broker.addr, "tcp-peer", true).await;
    tcp.send(&build::subscribe(1, &[("from-tls", 0)])).await;
    assert_eq!(tcp.recv_bytes().await.unwrap(), build::suback(1, &[0]));
    tcp.send(&build::publish("t", 1, false, false, 7, b"to tls"))
        .await;
    assert_eq!(tcp.recv_bytes().await.unwrap(), build::puback(7));
    assert_eq!(
        tls_client.recv_bytes().await.unwrap(),
        build::publish("t", 1, false, false, 1, b"to tls")
    );
    tls_client.send(&build::puback(1)).await;
    tls_client
        .send(&build::publish("from-tls", 0, false, false, 0, b"hi"))
        .await;
    assert_eq!(
        tcp.recv_bytes().await.unwrap(),
        build::publish("from-tls", 0, false, false, 0, b"hi")
    );
}

#[tokio::test]
async fn tls_listener_serves_mqtt_to_a_client_that_trusts_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server ca");
    let broker = broker_with_tls(dir.path(), &ca, ListenerProtocol::Tls, |_| {}, |_| {});
    let tls_addr = broker.addrs()[1];
    let client = pki::mqtt_over_tls(tls_addr, pki::client_config(&ca, None), "tls-1")
        .await
        .expect("TLS client connects");
    exchange(&broker, client).await;

    // A client that does not trust the server's CA gives up in the handshake.
    let other = Ca::new("other ca");
    let Err(e) = pki::tls_connect(tls_addr, pki::client_config(&other, None)).await else {
        panic!("handshake with an untrusted server certificate succeeded");
    };
    assert!(e.to_string().contains("certificate"), "{e}");
}

#[tokio::test]
async fn required_client_certificate_from_the_ca_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("clients ca");
    let broker = broker_with_tls(dir.path(), &ca, ListenerProtocol::Tls, required, |_| {});
    let device = ca.client("device-1", &[]);
    let client = pki::mqtt_over_tls(
        broker.addrs()[1],
        pki::client_config(&ca, Some(&device)),
        "device-1",
    )
    .await
    .expect("client with a good certificate connects");
    exchange(&broker, client).await;
}

#[tokio::test]
async fn required_client_certificate_missing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("clients ca");
    let broker = broker_with_tls(dir.path(), &ca, ListenerProtocol::Tls, required, |_| {});
    let refused =
        pki::mqtt_over_tls(broker.addrs()[1], pki::client_config(&ca, None), "anon").await;
    assert!(refused.is_none(), "client without certificate was let in");
}

#[tokio::test]
async fn client_certificate_from_an_untrusted_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("clients ca");
    let rogue = Ca::new("rogue ca");
    let broker = broker_with_tls(dir.path(), &ca, ListenerProtocol::Tls, required, |_| {});
    let intruder = rogue.client("device-1", &[]);
    // The client trusts the server (`ca`) but presents a certificate of `rogue`.
    let refused = pki::mqtt_over_tls(
        broker.addrs()[1],
        pki::client_config(&ca, Some(&intruder)),
        "intruder",
    )
    .await;
    assert!(
        refused.is_none(),
        "untrusted client certificate was accepted"
    );
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("clients ca");
    let broker = broker_with_tls(dir.path(), &ca, ListenerProtocol::Tls, required, |_| {});
    let expired = ca.expired_client("old-device");
    let refused = pki::mqtt_over_tls(
        broker.addrs()[1],
        pki::client_config(&ca, Some(&expired)),
        "old-device",
    )
    .await;
    assert!(refused.is_none(), "expired client certificate was accepted");
}

#[tokio::test]
async fn revoked_client_certificate_is_refused_and_others_of_its_ca_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("clients ca");
    let stolen = ca.client("stolen", &[]);
    let good = ca.client("good", &[]);
    let crl = pki::write(dir.path(), "ca.crl", &ca.crl(&[&stolen]));
    let broker = broker_with_tls(
        dir.path(),
        &ca,
        ListenerProtocol::Tls,
        |tls| {
            tls.client_auth = ClientAuth::Required;
            tls.crl = vec![crl];
        },
        |_| {},
    );
    let addr = broker.addrs()[1];
    let refused = pki::mqtt_over_tls(addr, pki::client_config(&ca, Some(&stolen)), "stolen").await;
    assert!(refused.is_none(), "revoked client certificate was accepted");
    pki::mqtt_over_tls(addr, pki::client_config(&ca, Some(&good)), "good")
        .await
        .expect("a certificate the CRL does not list is accepted");
}

#[tokio::test]
async fn optional_client_certificate_admits_anonymous_clients_but_not_bad_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("clients ca");
    let broker = broker_with_tls(
        dir.path(),
        &ca,
        ListenerProtocol::Tls,
        |tls| tls.client_auth = ClientAuth::Optional,
        |_| {},
    );
    let addr = broker.addrs()[1];
    pki::mqtt_over_tls(addr, pki::client_config(&ca, None), "anon")
        .await
        .expect("client without certificate connects");
    let device = ca.client("device", &[]);
    pki::mqtt_over_tls(addr, pki::client_config(&ca, Some(&device)), "device")
        .await
        .expect("client with a good certificate connects");
    let expired = ca.expired_client("old");
    let refused = pki::mqtt_over_tls(addr, pki::client_config(&ca, Some(&expired)), "old").await;
    assert!(refused.is_none(), "expired certificate accepted");
}

#[tokio::test]
async fn secure_websocket_carries_mqtt_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("clients ca");
    let broker = broker_with_tls(dir.path(), &ca, ListenerProtocol::Wss, required, |_| {});
    let addr = broker.addrs()[1];
    let device = ca.client("ws-device", &[]);
    let tls = pki::tls_connect(addr, pki::client_config(&ca, Some(&device)))
        .await
        .unwrap();
    let (ws, response) = common::ws::upgrade(tls, addr, "wss", "/mqtt", &["mqtt"])
        .await
        .expect("websocket upgrade over TLS");
    assert_eq!(
        response.headers().get("Sec-WebSocket-Protocol").unwrap(),
        "mqtt"
    );
    let mut client = Raw::over(broker::listener::ws::WsTransport::new(ws));
    assert_eq!(client.try_connect_mqtt("ws-device").await, Some(0));
    exchange(&broker, client).await;

    // Without a certificate, the same listener refuses.
    let refused = async {
        let tls = pki::tls_connect(addr, pki::client_config(&ca, None))
            .await
            .ok()?;
        common::ws::upgrade(tls, addr, "wss", "/mqtt", &["mqtt"])
            .await
            .ok()
    }
    .await;
    assert!(refused.is_none(), "wss without client certificate accepted");
}

#[tokio::test]
async fn stalled_tls_handshake_is_closed_after_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server ca");
    let broker = broker_with_tls(
        dir.path(),
        &ca,
        ListenerProtocol::Tls,
        |_| {},
        |c| c.mqtt.connect_timeout_secs = 1,
    );
    // Silent after connecting; then another that sends the first bytes of a
    // TLS record (a ClientHello header) and stalls.
    let mut silent = Raw::connect(broker.addrs()[1]).await;
    let mut partial = Raw::connect(broker.addrs()[1]).await;
    partial.send(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await;
    assert!(silent.expect_closed().await.is_empty());
    assert!(partial.expect_closed().await.is_empty());
}

#[tokio::test]
async fn connection_limit_applies_to_tls_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server ca");
    let broker = broker_with_tls(
        dir.path(),
        &ca,
        ListenerProtocol::Tls,
        |_| {},
        |c| c.listeners[1].max_connections = 1,
    );
    let addr = broker.addrs()[1];
    let first = pki::mqtt_over_tls(addr, pki::client_config(&ca, None), "first")
        .await
        .expect("first connection");
    let second = pki::mqtt_over_tls(addr, pki::client_config(&ca, None), "second").await;
    assert!(
        second.is_none(),
        "second connection over the limit accepted"
    );
    drop(first);
    // Once the first is gone, a new one is let in again.
    let admitted = poll_until(PATIENCE, Duration::from_millis(50), async || {
        pki::mqtt_over_tls(addr, pki::client_config(&ca, None), "third")
            .await
            .is_some()
    })
    .await;
    assert!(admitted, "no connection admitted after the first closed");
}

/// Replaces the files atomically (write then rename), as deployment tools do.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn changed_certificate_files_are_used_for_new_handshakes_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old ca");
    let broker = broker_with_tls(
        dir.path(),
        &old_ca,
        ListenerProtocol::Tls,
        |tls| tls.reload_interval_secs = 1,
        |_| {},
    );
    let addr = broker.addrs()[1];
    let mut established = pki::mqtt_over_tls(addr, pki::client_config(&old_ca, None), "kept")
        .await
        .expect("connects with the first certificate");

    let new_ca = Ca::new("new ca");
    let new_server = new_ca.server();
    // The new pair: new handshakes use it once the watcher has seen it.
    replace(&dir.path().join("server.pem"), &new_server.cert.pem());
    replace(
        &dir.path().join("server.key"),
        &new_server.key.serialize_pem(),
    );
    let switched = poll_until(PATIENCE, Duration::from_millis(100), async || {
        pki::tls_connect(addr, pki::client_config(&new_ca, None))
            .await
            .is_ok()
    })
    .await;
    assert!(switched, "new certificate not served within {PATIENCE:?}");
    pki::mqtt_over_tls(addr, pki::client_config(&new_ca, None), "new")
        .await
        .expect("client trusting the new CA connects");
    assert!(
        pki::tls_connect(addr, pki::client_config(&old_ca, None))
            .await
            .is_err(),
        "old certificate still served"
    );

    // The connection made with the old certificate lives on.
    established.send(&build::pingreq()).await;
    assert_eq!(established.recv_bytes().await.unwrap(), build::pingresp());
    let _ = established.stream.shutdown().await;
}

#[test]
fn unreadable_certificate_stops_startup_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let mut config = common::test_config(dir.path());
    config.listeners.push(listener(
        ListenerProtocol::Tls,
        Some(TlsConfig::new(&missing, dir.path().join("missing.key"))),
    ));
    let e = broker::server::start(config).err().expect("startup fails");
    let e = format!("{e:#}");
    assert!(
        e.contains("missing.pem") && e.contains("certificate"),
        "{e}"
    );
}

/// The log of `tern` without its colour codes.
fn plain_log(tern: &TernProcess) -> String {
    let log = tern.log_text();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits until the log of `tern` satisfies `check`; panics with the log if not.
async fn wait_for_log(tern: &TernProcess, what: &str, check: impl Fn(&str) -> bool) {
    let seen = check_for(PATIENCE, Duration::from_millis(20), || {
        check(&plain_log(tern))
    })
    .await;
    assert!(seen, "log never showed {what}:\n{}", plain_log(tern));
}

/// Connects over TLS, retrying while the listener may still be starting.
async fn first_tls_client(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    client_id: &str,
) -> Raw {
    let end = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(raw) = pki::mqtt_over_tls(addr, config.clone(), client_id).await {
            return raw;
        }
        assert!(
            std::time::Instant::now() < end,
            "TLS listener never admitted {client_id}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn connected_with_identity(log: &str, client_id: &str, identity: &str) -> bool {
    log.lines().any(|l| {
        l.contains("client connected")
            && l.contains(&format!("client_id={client_id} "))
            && l.contains(&format!("cert_identity=Some(\"{identity}\")"))
    })
}

#[tokio::test]
async fn tern_hands_the_certificate_cn_to_the_session_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca1 = Ca::new("ca one");
    ca1.server().write(d, "server");
    let ca_path = pki::write(d, "ca.pem", &ca1.cert.pem());
    let tls_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = d.join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nbind = \"{tls_addr}\"\nprotocol = \"tls\"\n\
             [listeners.tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n\
             client_auth = \"required\"\nidentity = \"cn\"\nreload_interval_secs = 0\n",
            d.join("server.pem"),
            d.join("server.key"),
            ca_path
        ),
    )
    .unwrap();
    let tern = TernProcess::start(
        &d.join("data"),
        free_port(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--log-level",
            "info,broker=debug",
        ],
    );

    // The CN of the client's certificate reaches the session.
    let device = ca1.client("device-42", &["device-42.example.com"]);
    let _c1 = first_tls_client(tls_addr, pki::client_config(&ca1, Some(&device)), "c1").await;
    wait_for_log(&tern, "c1 with identity device-42", |log| {
        connected_with_identity(log, "c1", "device-42")
    })
    .await;

    // A bad key and SIGHUP: the error is logged and the old material stays.
    replace(&d.join("server.key"), "not a key");
    tern.signal("HUP");
    wait_for_log(&tern, "the failed reload", |log| {
        log.contains("TLS reload failed") && log.contains("server.key")
    })
    .await;
    pki::mqtt_over_tls(tls_addr, pki::client_config(&ca1, Some(&device)), "c2")
        .await
        .expect("old certificates still in use after a failed reload");

    // New server certificate and client CA, and SIGHUP: new handshakes use them.
    let ca2 = Ca::new("ca two");
    let server2 = ca2.server();
    replace(&d.join("server.pem"), &server2.cert.pem());
    replace(&d.join("server.key"), &server2.key.serialize_pem());
    replace(&ca_path, &ca2.cert.pem());
    tern.signal("HUP");
    wait_for_log(&tern, "the reload", |log| {
        log.contains("TLS certificates reloaded")
    })
    .await;
    let device43 = ca2.client("device-43", &[]);
    pki::mqtt_over_tls(tls_addr, pki::client_config(&ca2, Some(&device43)), "c3")
        .await
        .expect("client of the new CA connects");
    wait_for_log(&tern, "c3 with identity device-43", |log| {
        connected_with_identity(log, "c3", "device-43")
    })
    .await;
    let refused = pki::mqtt_over_tls(tls_addr, pki::client_config(&ca2, Some(&device)), "c4").await;
    assert!(refused.is_none(), "certificate of the replaced CA accepted");
}

#[test]
fn tls_listener_without_certificate_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.listeners.push(listener(ListenerProtocol::Wss, None));
    let e = format!(
        "{:#}",
        broker::server::start(config).err().expect("startup fails")
    );
    assert!(
        e.contains("wss listener") && e.contains("[listeners.tls]"),
        "{e}"
    );
}
