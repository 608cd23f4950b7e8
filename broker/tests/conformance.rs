//! Rules where a third-party suite (the paho interoperability tests, the
//! Mosquitto broker tests) or a real client found Tern stricter or laxer than
//! the specification or than the brokers clients are used to, one test per
//! rule, named after it: packets only servers send, control characters in
//! names, MQTT 3.1 client ids over 23 characters, PUBREC for a packet id with
//! no flow, ACL `certificate` sections with a real client certificate
//! (Debian's `mosquitto_pub --cert`), and X.509 v1 client certificates.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use broker::codec::{Packet, ReasonCode};
use broker::config::{ClientAuth, ListenerProtocol, TlsConfig};
use common::pki::{self, Ca};
use common::process::{free_port, TernProcess};
use common::{build, check_for, listener, Raw, TestBroker, PATIENCE};

/// The reason code of the DISCONNECT that ends `packets`, the packets a 5.0
/// client received before the broker closed its connection.
fn disconnect_reason(packets: &[Vec<u8>]) -> u8 {
    let last = packets.last().expect("a DISCONNECT before the close");
    assert_eq!(last[0], 0xE0, "DISCONNECT expected, got {last:02x?}");
    last[2]
}

#[tokio::test]
async fn server_only_packets_from_a_client_are_a_protocol_error_0x82_even_when_malformed_5_0_section_4_13(
) {
    let broker = TestBroker::start();
    for (name, bytes) in [
        ("CONNACK", vec![0x20, 0x03, 0x00, 0x00, 0x00]),
        // a reserved flag set and a body too short to parse
        ("malformed CONNACK", vec![0x21, 0x01, 0x00]),
        ("SUBACK", vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x00]),
        ("malformed UNSUBACK", vec![0xB0, 0x01, 0x00]),
        ("PINGRESP", vec![0xD0, 0x00]),
        ("PINGRESP with a body", vec![0xD0, 0x01, 0x00]),
    ] {
        let mut c = Raw::mqtt5(broker.addr, "forbidden", true, &[]).await;
        c.send(&bytes).await;
        let got = c.expect_closed().await;
        assert_eq!(
            disconnect_reason(&got),
            ReasonCode::ProtocolError as u8,
            "{name}: {got:02x?}"
        );
    }
    // 3.1.1 has no reason codes: the connection is closed
    let mut c = Raw::mqtt(broker.addr, "forbidden-311", true).await;
    c.send(&[0x90, 0x03, 0x00, 0x01, 0x00]).await;
    assert_eq!(c.expect_closed().await, Vec::<Vec<u8>>::new());
}

#[tokio::test]
async fn control_characters_in_names_are_malformed_by_default_3_1_1_section_1_5_3_and_5_0_section_1_5_4(
) {
    let broker = TestBroker::start();
    // 5.0 CONNECT with U+0001 in the client id: closed without CONNACK, as
    // for any malformed CONNECT (5.0 [MQTT-4.13.1-1]: a CONNACK is a MAY)
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect5("dev\u{1}", true, 60, &[])).await;
    assert_eq!(c.expect_closed().await, Vec::<Vec<u8>>::new());
    // user name with U+001B (escape)
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect_full(
        4,
        "dev",
        true,
        60,
        None,
        Some("us\u{1b}er"),
        None,
    ))
    .await;
    assert_eq!(c.expect_closed().await, Vec::<Vec<u8>>::new());
    // PUBLISH topic with U+007F: DISCONNECT 0x81, nothing delivered
    let mut watcher = Raw::mqtt(broker.addr, "watcher", true).await;
    watcher.send(&build::subscribe(1, &[("a/#", 0)])).await;
    assert_eq!(watcher.recv_bytes().await.unwrap(), build::suback(1, &[0]));
    let mut c = Raw::mqtt5(broker.addr, "pub5", true, &[]).await;
    c.send(&build::publish5("a/\u{7f}", 0, false, 0, &[], b"x"))
        .await;
    assert_eq!(
        disconnect_reason(&c.expect_closed().await),
        ReasonCode::MalformedPacket as u8
    );
    // SUBSCRIBE filter with U+0085 (NEL, two bytes in UTF-8)
    let mut c = Raw::mqtt5(broker.addr, "sub5", true, &[]).await;
    c.send(&build::subscribe5(1, &[], &[("a/\u{85}", 0)])).await;
    assert_eq!(
        disconnect_reason(&c.expect_closed().await),
        ReasonCode::MalformedPacket as u8
    );
    watcher.expect_silence().await;
}

#[tokio::test]
async fn control_characters_in_names_are_accepted_when_not_strict() {
    let broker = TestBroker::start_with(|c| c.mqtt.strict_control_characters = false);
    let mut sub = Raw::mqtt(broker.addr, "dev\u{1}sub", true).await;
    sub.send(&build::subscribe(1, &[("a/\u{7f}", 0)])).await;
    assert_eq!(sub.recv_bytes().await.unwrap(), build::suback(1, &[0]));
    let mut publisher = Raw::mqtt(broker.addr, "dev\u{1}pub", true).await;
    publisher
        .send(&build::publish("a/\u{7f}", 0, false, false, 0, b"x"))
        .await;
    assert_eq!(
        sub.recv_bytes().await.unwrap(),
        build::publish("a/\u{7f}", 0, false, false, 0, b"x")
    );
}

#[tokio::test]
async fn mqtt_3_1_client_ids_over_23_characters_are_accepted_unless_strict() {
    let id = "a-3.1-client-id-of-31-characters";
    let broker = TestBroker::start();
    let mut c = Raw::mqtt_level(broker.addr, id, true, 3).await;
    c.send(&build::pingreq()).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());

    let strict = TestBroker::start_with(|c| c.mqtt.strict_v31_client_id = true);
    let mut c = Raw::connect(strict.addr).await;
    c.send(&build::connect(3, id, true, 60)).await;
    // 3.1 CONNACK return code 2: identifier rejected
    assert_eq!(c.expect_closed().await, vec![build::connack(false, 2)]);
    // 23 characters are fine there
    Raw::mqtt_level(strict.addr, &id[..23], true, 3).await;
}

#[tokio::test]
async fn pubrec_for_an_unknown_packet_id_is_answered_with_pubrel_mqtt_4_3_3() {
    let broker = TestBroker::start();
    // 3.1.1: PUBREL, as Mosquitto and EMQX answer
    let mut c = Raw::mqtt(broker.addr, "unsolicited", true).await;
    c.send(&build::pubrec(7)).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::pubrel(7));
    // the client completes the flow; the broker ignores the PUBCOMP
    c.send(&build::pubcomp(7)).await;
    c.send(&build::pingreq()).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());
    // 5.0: PUBREL with 0x92 Packet Identifier not found
    let mut c = Raw::mqtt5(broker.addr, "unsolicited5", true, &[]).await;
    c.send(&build::ack5(0x50, 9, 0x00)).await;
    match c.recv().await {
        Some(Packet::PubRel(r)) => {
            assert_eq!(r.packet_id, 9);
            assert_eq!(r.reason_code, ReasonCode::PacketIdentifierNotFound);
        }
        other => panic!("PUBREL expected, got {other:?}"),
    }
}

/// A TLS listener requiring client certificates of `ca`, and an ACL file.
fn tls_broker_with_acl(dir: &Path, ca: &Ca, acl: &str, identity_as_username: bool) -> TestBroker {
    let (cert, key) = ca.server().write(dir, "server");
    let mut tls = TlsConfig::new(cert, key);
    tls.ca = Some(pki::write(dir, "ca.pem", &ca.cert.pem()));
    tls.client_auth = ClientAuth::Required;
    let acl_file = dir.join("acl");
    std::fs::write(&acl_file, acl).unwrap();
    TestBroker::start_with(|c| {
        c.listeners.push(listener(ListenerProtocol::Tls, Some(tls)));
        c.acl.file = Some(acl_file);
        c.auth.use_identity_as_username = identity_as_username;
    })
}

/// `mosquitto_pub` over TLS with the client certificate `name` of `dir`.
fn mosquitto_pub_with_cert(broker: &TestBroker, dir: &Path, name: &str, topic: &str) {
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.addrs()[1].port().to_string(),
        ])
        .args(["-V", "311", "-q", "1", "-t", topic, "-m", name])
        .arg("--cafile")
        .arg(dir.join("ca.pem"))
        .arg("--cert")
        .arg(dir.join(format!("{name}.pem")))
        .arg("--key")
        .arg(dir.join(format!("{name}.key")))
        // the server certificate names localhost and 127.0.0.1; libmosquitto
        // checks the host name as a DNS name only
        .arg("--insecure")
        .status()
        .expect("mosquitto_pub runs (Debian's mosquitto-clients; scripts/test.sh installs it)");
    assert!(status.success(), "mosquitto_pub --cert {name} failed");
}

/// `certificate CN=gateway-3` as the README writes it, and the bare form, end
/// to end: a real client certificate (mosquitto_pub --cert) may publish where
/// its section allows and nowhere else (3.1.1 publishes that are denied are
/// acknowledged and dropped).
#[tokio::test]
async fn acl_certificate_sections_match_real_client_certificates_in_readme_and_bare_form() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("acl test CA");
    ca.client("gateway-3", &[]).write(dir.path(), "gateway-3");
    ca.client("sensor-9", &[]).write(dir.path(), "sensor-9");
    let broker = tls_broker_with_acl(
        dir.path(),
        &ca,
        "topic read #\n\
         certificate CN=gateway-3\n\
         topic write gateways/#\n\
         certificate sensor-9\n\
         topic write sensors/#\n",
        false,
    );
    let mut watcher = Raw::mqtt(broker.addr, "watcher", true).await;
    watcher.send(&build::subscribe(1, &[("#", 1)])).await;
    assert_eq!(watcher.recv_bytes().await.unwrap(), build::suback(1, &[1]));

    // denied first, then allowed: the first message the watcher gets is the allowed one
    mosquitto_pub_with_cert(&broker, dir.path(), "gateway-3", "sensors/1");
    mosquitto_pub_with_cert(&broker, dir.path(), "gateway-3", "gateways/3");
    assert_eq!(
        watcher.recv_bytes().await.unwrap(),
        build::publish("gateways/3", 1, false, false, 1, b"gateway-3")
    );
    watcher.send(&build::puback(1)).await;
    mosquitto_pub_with_cert(&broker, dir.path(), "sensor-9", "gateways/9");
    mosquitto_pub_with_cert(&broker, dir.path(), "sensor-9", "sensors/9");
    assert_eq!(
        watcher.recv_bytes().await.unwrap(),
        build::publish("sensors/9", 1, false, false, 2, b"sensor-9")
    );
}

/// `use_identity_as_username`: the certificate's CN is the user name, so a
/// `user` section applies to it (until now only a unit test showed it).
#[tokio::test]
async fn certificate_identity_as_user_name_selects_the_user_section() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("identity test CA");
    ca.client("gateway-4", &[]).write(dir.path(), "gateway-4");
    let broker = tls_broker_with_acl(
        dir.path(),
        &ca,
        "topic read #\n\
         user gateway-4\n\
         topic write gateways/4/#\n",
        true,
    );
    let mut watcher = Raw::mqtt(broker.addr, "watcher", true).await;
    watcher.send(&build::subscribe(1, &[("#", 1)])).await;
    assert_eq!(watcher.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    mosquitto_pub_with_cert(&broker, dir.path(), "gateway-4", "gateways/5/x");
    mosquitto_pub_with_cert(&broker, dir.path(), "gateway-4", "gateways/4/x");
    assert_eq!(
        watcher.recv_bytes().await.unwrap(),
        build::publish("gateways/4/x", 1, false, false, 1, b"gateway-4")
    );
}

/// Runs `openssl ARGS` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client certificate made the way many guides make one, `openssl x509
/// -req` without an extensions file, is X.509 v1, which webpki refuses. The
/// client only sees a TLS alert; the broker's log says why at warn, with
/// what to do.
#[tokio::test]
async fn x509_v1_client_certificate_is_refused_with_a_hint_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new("v1 test CA");
    ca.server().write(d, "server");
    pki::write(d, "ca.pem", &ca.cert.pem());
    pki::write(d, "ca.key", &ca.key.serialize_pem());
    openssl(d, &["genrsa", "-out", "v1.key", "2048"]);
    openssl(
        d,
        &[
            "req",
            "-new",
            "-key",
            "v1.key",
            "-subj",
            "/CN=v1-device",
            "-out",
            "v1.csr",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "v1.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "v1.pem",
        ],
    );
    let tls_addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = d.join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[[listeners]]\nbind = \"{tls_addr}\"\nprotocol = \"tls\"\n\
             [listeners.tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\nclient_auth = \"required\"\n",
            d.join("server.pem"),
            d.join("server.key"),
            d.join("ca.pem"),
        ),
    )
    .unwrap();
    let tern = TernProcess::start(
        &d.join("data"),
        free_port(),
        &["--config", config.to_str().unwrap()],
    );
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &tls_addr.port().to_string()])
        .args(["-t", "t", "-m", "x", "--insecure"])
        .args(["--cafile", "ca.pem", "--cert", "v1.pem", "--key", "v1.key"])
        .current_dir(d)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("mosquitto_pub runs");
    assert!(!status.success(), "a v1 client certificate was accepted");
    let warned = check_for(PATIENCE, Duration::from_millis(20), || {
        tern.log_text()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("handshake failed") && l.contains("X.509 v1"))
    })
    .await;
    assert!(warned, "no warning with a hint:\n{}", tern.log_text());
}

/// A client whose Maximum Packet Size is smaller than the CONNACK Tern
/// would send gets a CONNACK without the optional properties that do not
/// fit, instead of waiting for one that never comes; one whose maximum
/// nothing fits is closed.
#[tokio::test]
async fn connack_drops_optional_properties_to_fit_the_clients_maximum_packet_size_mqtt_3_1_2_24() {
    let broker = TestBroker::start();
    // an empty client id: the CONNACK would carry an assigned identifier
    // (~25 bytes) and the capability properties (~30 bytes)
    let max_packet_size = build::prop::u32(0x27, 20);
    let mut c = Raw::connect(broker.addr).await;
    c.version = broker::codec::ProtocolVersion::V5;
    c.send(&build::connect5("", true, 60, &max_packet_size))
        .await;
    let connack = c.recv_bytes().await.expect("a CONNACK");
    assert!(
        connack.len() <= 20,
        "{} bytes: {connack:02x?}",
        connack.len()
    );
    assert_eq!((connack[0], connack[3]), (0x20, 0x00), "{connack:02x?}");
    c.send(&build::pingreq()).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());

    // 4 bytes: not even a CONNACK without properties (5 bytes) fits; the
    // 3-byte DISCONNECT 0x95 (Packet too large) does
    let mut c = Raw::connect(broker.addr).await;
    c.send(&build::connect5(
        "tiny",
        true,
        60,
        &build::prop::u32(0x27, 4),
    ))
    .await;
    assert_eq!(c.expect_closed().await, vec![vec![0xE0, 0x01, 0x95]]);
}

/// 5.0 acknowledgements with reason 0x00 and no properties use the short
/// form (remaining length 2, 5.0 sections 3.4.2.1 to 3.7.2.1), in both
/// directions of a QoS 2 flow.
#[tokio::test]
async fn v5_success_acknowledgements_are_the_two_byte_form() {
    let broker = TestBroker::start();
    let mut sub = Raw::mqtt5(broker.addr, "short-sub", true, &[]).await;
    sub.send(&build::subscribe5(1, &[], &[("short/#", 2)]))
        .await;
    sub.recv_bytes().await.expect("SUBACK");
    let mut publisher = Raw::mqtt5(broker.addr, "short-pub", true, &[]).await;
    publisher
        .send(&build::publish5("short/1", 1, false, 1, &[], b"q1"))
        .await;
    assert_eq!(publisher.recv_bytes().await.unwrap(), build::puback(1));
    publisher
        .send(&build::publish5("short/2", 2, false, 2, &[], b"q2"))
        .await;
    assert_eq!(publisher.recv_bytes().await.unwrap(), build::pubrec(2));
    publisher.send(&build::pubrel(2)).await;
    assert_eq!(publisher.recv_bytes().await.unwrap(), build::pubcomp(2));
    // towards the subscriber: its PUBREC is answered with a short PUBREL
    sub.recv_bytes().await.expect("the QoS 1 message");
    sub.send(&build::puback(1)).await;
    let q2 = sub.recv_bytes().await.expect("the QoS 2 message");
    let packet_id = u16::from_be_bytes([q2[11], q2[12]]);
    sub.send(&build::pubrec(packet_id)).await;
    assert_eq!(sub.recv_bytes().await.unwrap(), build::pubrel(packet_id));
}

/// A 5.0 publisher that keeps sending QoS 1 while the broker holds its
/// acknowledgements (a congested subscriber) has more unacknowledged
/// PUBLISH packets than the Receive Maximum the broker announced: DISCONNECT
/// 0x93, not a connection that hangs (5.0 [MQTT-3.3.4-9]).
#[tokio::test]
async fn receive_maximum_exceeded_while_acknowledgements_are_held_disconnects_with_0x93() {
    let broker = TestBroker::start_with(|c| {
        c.mqtt.max_inflight = 10; // the Receive Maximum announced
        c.limits.backpressure_queued = 5;
        c.limits.backpressure_wait_secs = 60;
    });
    // 10 copies in flight to a subscriber that never acknowledges, 5 queued:
    // from the 16th message on, the publisher's PUBACKs are held
    let mut sub = Raw::mqtt(broker.addr, "stuck", true).await;
    sub.send(&build::subscribe(1, &[("held/#", 1)])).await;
    assert_eq!(sub.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    let mut publisher = Raw::mqtt5(broker.addr, "eager", true, &[]).await;
    for packet_id in 1..=40 {
        if !publisher
            .try_send(&build::publish5("held/x", 1, false, packet_id, &[], b"m"))
            .await
        {
            break;
        }
    }
    let got = publisher.expect_closed().await;
    assert_eq!(
        disconnect_reason(&got),
        ReasonCode::ReceiveMaximumExceeded as u8,
        "{got:02x?}"
    );
    // the copies not held were acknowledged: at least the 5 the queue takes,
    // at most those plus the subscriber's window of 10 (copies still in its
    // mailbox count towards the queue, so holding may start at the 6th)
    let acks = got.iter().filter(|p| p[0] == 0x40).count();
    assert!((5..=15).contains(&acks), "{acks} acknowledged: {got:02x?}");
}
