//! Authentication and authorization over real sockets: password file, JWT,
//! anonymous access, `tern passwd`, denied PUBLISH / SUBSCRIBE / delivery /
//! will, for 3.1.1 and 5.0.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use broker::auth::password::{edit_file, PasswdAction};
use broker::codec::{Packet, ProtocolVersion, ReasonCode};
use broker::config::{Config, JwtAlgorithm, JwtConfig};
use common::{build, check_for, poll_until, Raw, TestBroker, PATIENCE};

/// A password file with `users` in `dir`.
fn password_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("passwd");
    for (i, (user, password)) in users.iter().enumerate() {
        edit_file(
            &path,
            user,
            PasswdAction::Set(password.as_bytes().to_vec()),
            i == 0,
        )
        .unwrap();
    }
    path
}

fn acl_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("acl");
    std::fs::write(&path, text).unwrap();
    path
}

/// CONNECT with credentials (and a will) for level 4 or 5.
fn connect_as(level: u8, client_id: &str, user: Option<&str>, password: Option<&[u8]>) -> Vec<u8> {
    build::connect_full(level, client_id, true, 60, None, user, password)
}

/// Connects and expects success.
async fn login(
    addr: std::net::SocketAddr,
    level: u8,
    client_id: &str,
    user: &str,
    pw: &str,
) -> Raw {
    let mut c = Raw::connect(addr).await;
    if level == 5 {
        c.version = ProtocolVersion::V5;
    }
    c.send(&connect_as(
        level,
        client_id,
        Some(user),
        Some(pw.as_bytes()),
    ))
    .await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.reason_code, ReasonCode::Success),
        other => panic!("CONNACK expected, got {other:?}"),
    }
    c
}

/// Sends `connect` and expects a refusing CONNACK with `code` (5.0) or its
/// 3.1.1 return code, then the connection closed.
async fn expect_refused(addr: std::net::SocketAddr, level: u8, connect: Vec<u8>, code: ReasonCode) {
    let mut c = Raw::connect(addr).await;
    c.send(&connect).await;
    let got = c.expect_closed().await;
    assert_eq!(got.len(), 1, "one CONNACK then close: {got:02x?}");
    if level == 5 {
        // fixed header, remaining length, flags, reason code, properties
        assert_eq!(
            &got[0][..4],
            &[0x20, got[0][1], 0, code.as_u8()],
            "{got:02x?}"
        );
    } else {
        assert_eq!(got[0], build::connack(false, code.connack_return_code()));
    }
}

fn with_passwords(dir: &Path, allow_anonymous: bool) -> impl FnOnce(&mut Config) {
    let file = password_file(dir, &[("alice", "s3cret"), ("bob", "hunter2")]);
    move |c: &mut Config| {
        c.auth.allow_anonymous = allow_anonymous;
        c.auth.password_file = Some(file);
    }
}

async fn password_checks(level: u8) {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(with_passwords(dir.path(), false));
    let addr = broker.addr;
    // the right password
    let mut c = login(addr, level, "c1", "alice", "s3cret").await;
    c.send(&build::pingreq()).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());
    // wrong password, unknown user: the same answer (3.1.1: 4, 5.0: 0x86)
    let bad = ReasonCode::BadUserNameOrPassword;
    expect_refused(
        addr,
        level,
        connect_as(level, "c2", Some("alice"), Some(b"nope")),
        bad,
    )
    .await;
    expect_refused(
        addr,
        level,
        connect_as(level, "c3", Some("mallory"), Some(b"s3cret")),
        bad,
    )
    .await;
    expect_refused(addr, level, connect_as(level, "c4", Some("bob"), None), bad).await;
    // anonymous access is off (3.1.1: 5, 5.0: 0x87)
    expect_refused(
        addr,
        level,
        connect_as(level, "c5", None, None),
        ReasonCode::NotAuthorized,
    )
    .await;
}

#[tokio::test]
async fn password_file_accepts_right_and_refuses_wrong_password_and_unknown_user_v311() {
    password_checks(4).await;
}

#[tokio::test]
async fn password_file_accepts_right_and_refuses_wrong_password_and_unknown_user_v5() {
    password_checks(5).await;
}

#[tokio::test]
async fn anonymous_clients_still_connect_when_allowed_beside_a_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(with_passwords(dir.path(), true));
    Raw::mqtt(broker.addr, "anon", true).await;
    expect_refused(
        broker.addr,
        4,
        connect_as(4, "c2", Some("alice"), Some(b"nope")),
        ReasonCode::BadUserNameOrPassword,
    )
    .await;
}

#[tokio::test]
async fn v5_enhanced_authentication_method_is_refused_with_0x8c() {
    let broker = TestBroker::start();
    // CONNECT properties: Authentication Method (0x15) "SCRAM-SHA-1"
    let mut props = vec![0x15];
    props.extend(build::string("SCRAM-SHA-1"));
    expect_refused(
        broker.addr,
        5,
        build::connect5("c", true, 60, &props),
        ReasonCode::BadAuthenticationMethod,
    )
    .await;
}

fn now_secs() -> u64 {
    broker::message::unix_ms() / 1000
}

#[tokio::test]
async fn jwt_hs256_in_the_password_field_authenticates_and_expired_is_refused() {
    let broker = TestBroker::start_with(|c| {
        c.auth.allow_anonymous = false;
        c.auth.jwt = Some(JwtConfig {
            algorithm: JwtAlgorithm::HS256,
            secret: Some("k3y".into()),
            public_key_file: None,
            username_claim: "device".into(),
        });
    });
    let key = jsonwebtoken::EncodingKey::from_secret(b"k3y");
    let header = jsonwebtoken::Header::default();
    let good = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"device": "d-1", "exp": now_secs() + 600}),
        &key,
    )
    .unwrap();
    let expired = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"device": "d-1", "exp": now_secs() - 600}),
        &key,
    )
    .unwrap();
    // 5.0 allows a password without a user name
    let mut c = Raw::connect(broker.addr).await;
    c.version = ProtocolVersion::V5;
    c.send(&connect_as(5, "d1", None, Some(good.as_bytes())))
        .await;
    assert!(
        matches!(c.recv().await, Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::Success)
    );
    login(broker.addr, 4, "d2", "d-1", &good).await;
    expect_refused(
        broker.addr,
        4,
        connect_as(4, "d3", Some("d-1"), Some(expired.as_bytes())),
        ReasonCode::BadUserNameOrPassword,
    )
    .await;
}

#[tokio::test]
async fn jwt_rs256_verifies_with_the_public_key_file() {
    // The directory at run time (cargo test sets it): the one baked in at
    // build time is stale when a cached build of an unchanged crate is reused
    // from another checkout path.
    let data = common::manifest_dir().join("tests/data");
    let public = data.join("jwt-test-public.pem");
    let broker = TestBroker::start_with(move |c| {
        c.auth.allow_anonymous = false;
        c.auth.jwt = Some(JwtConfig {
            algorithm: JwtAlgorithm::RS256,
            secret: None,
            public_key_file: Some(public),
            username_claim: "sub".into(),
        });
    });
    let private = std::fs::read(data.join("jwt-test-private.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap();
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    let token = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"sub": "gw", "exp": now_secs() + 600}),
        &key,
    )
    .unwrap();
    login(broker.addr, 4, "gw", "gw", &token).await;
    // signed with the HS256 "secret" of the public key's bytes: refused
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "gw", "exp": now_secs() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(
            &std::fs::read(data.join("jwt-test-public.pem")).unwrap(),
        ),
    )
    .unwrap();
    expect_refused(
        broker.addr,
        4,
        connect_as(4, "gw2", Some("gw"), Some(forged.as_bytes())),
        ReasonCode::BadUserNameOrPassword,
    )
    .await;
}

#[test]
fn tern_passwd_creates_updates_and_deletes_users() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .arg("passwd")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let f = file.to_str().unwrap();
    assert!(run(&["-c", f, "alice"], "s3cret\n").status.success());
    assert!(run(&[f, "bob"], "hunter2\n").status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("alice:$argon2id$") && text.contains("bob:$argon2id$"));
    assert!(!text.contains("s3cret") && !text.contains("hunter2"));
    assert!(run(&["-D", f, "bob"], "").status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("bob:"), "{text}");
    let out = run(&[f, "carol"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty password"));
    let pf = broker::auth::PasswordFile::open(&file).unwrap();
    assert!(pf.check("alice", b"s3cret"));
}

const ACL: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic read shared/#
topic deny shared/secret
topic write shared/in

user bob
topic write shared/#

pattern readwrite devices/%c/#
";

fn with_acl(dir: &Path) -> impl FnOnce(&mut Config) {
    let file = password_file(dir, &[("alice", "s3cret"), ("bob", "hunter2")]);
    let acl = acl_file(dir, ACL);
    move |c: &mut Config| {
        c.auth.password_file = Some(file);
        c.acl.file = Some(acl);
    }
}

async fn denied_publish(level: u8) {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(with_acl(dir.path()));
    let mut sub = login(broker.addr, 4, "s", "alice", "s3cret").await;
    sub.send(&build::subscribe(1, &[("alice/#", 1), ("shared/#", 1)]))
        .await;
    assert_eq!(sub.recv_bytes().await.unwrap(), build::suback(1, &[1, 1]));
    let mut p = login(broker.addr, level, "p", "bob", "hunter2").await;
    let (publish, pubrec) = if level == 5 {
        (
            build::publish5("alice/x", 1, false, 9, &[], b"no"),
            build::publish5("alice/x", 2, false, 10, &[], b"no"),
        )
    } else {
        (
            build::publish("alice/x", 1, false, false, 9, b"no"),
            build::publish("alice/x", 2, false, false, 10, b"no"),
        )
    };
    p.send(&publish).await;
    p.send(&pubrec).await;
    if level == 5 {
        // PUBACK / PUBREC 0x87 Not authorized, with a reason string (the
        // client did not set Request Problem Information to 0)
        let reason = b"not authorized";
        for (kind, id) in [(0x40u8, 9u8), (0x50, 10)] {
            let mut expected = vec![kind, 4 + 3 + reason.len() as u8, 0, id, 0x87];
            expected.extend([3 + reason.len() as u8, 0x1F, 0, reason.len() as u8]);
            expected.extend(reason);
            assert_eq!(p.recv_bytes().await.unwrap(), expected);
        }
    } else {
        // 3.1.1 cannot refuse: acknowledged, then dropped
        assert_eq!(p.recv_bytes().await.unwrap(), build::puback(9));
        assert_eq!(p.recv_bytes().await.unwrap(), build::pubrec(10));
    }
    // bob's own device topic is allowed by the pattern
    p.send(&build::publish("devices/p/t", 0, false, false, 0, b"ok"))
        .await;
    sub.expect_silence().await;
    // and alice may publish to her own tree
    sub.send(&build::publish("alice/x", 0, false, false, 0, b"mine"))
        .await;
    assert_eq!(
        sub.recv_bytes().await.unwrap(),
        build::publish("alice/x", 0, false, false, 0, b"mine")
    );
}

#[tokio::test]
async fn denied_publish_is_acknowledged_and_dropped_v311() {
    denied_publish(4).await;
}

#[tokio::test]
async fn denied_publish_gets_0x87_and_is_not_delivered_v5() {
    denied_publish(5).await;
}

#[tokio::test]
async fn denied_subscribe_gets_0x80_v311_and_0x87_v5() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(with_acl(dir.path()));
    let mut c = login(broker.addr, 4, "c4", "alice", "s3cret").await;
    c.send(&build::subscribe(
        1,
        &[("alice/#", 1), ("bob/#", 1), ("#", 0), ("shared/secret", 0)],
    ))
    .await;
    assert_eq!(
        c.recv_bytes().await.unwrap(),
        build::suback(1, &[1, 0x80, 0x80, 0x80])
    );
    let mut c = login(broker.addr, 5, "c5", "alice", "s3cret").await;
    c.send(&build::subscribe5(1, &[], &[("alice/+", 0), ("bob/#", 0)]))
        .await;
    match c.recv().await {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.reason_codes,
            vec![ReasonCode::Success, ReasonCode::NotAuthorized]
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wildcard_subscription_never_delivers_a_denied_topic_live_or_retained() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(with_acl(dir.path()));
    let mut bob = login(broker.addr, 4, "b", "bob", "hunter2").await;
    bob.send(&build::publish("shared/open", 1, true, false, 1, b"o"))
        .await;
    assert_eq!(bob.recv_bytes().await.unwrap(), build::puback(1));
    bob.send(&build::publish("shared/secret", 1, true, false, 2, b"s"))
        .await;
    assert_eq!(bob.recv_bytes().await.unwrap(), build::puback(2));

    // alice's `shared/#` is granted (a read rule covers it), and delivers
    // the open retained message but never the secret one, retained or live
    let mut alice = login(broker.addr, 4, "a", "alice", "s3cret").await;
    alice.send(&build::subscribe(1, &[("shared/#", 0)])).await;
    assert_eq!(alice.recv_bytes().await.unwrap(), build::suback(1, &[0]));
    assert_eq!(
        alice.recv_bytes().await.unwrap(),
        build::publish("shared/open", 0, true, false, 0, b"o")
    );
    alice.expect_silence().await;
    bob.send(&build::publish(
        "shared/secret",
        0,
        false,
        false,
        0,
        b"live",
    ))
    .await;
    bob.send(&build::publish("shared/open", 0, false, false, 0, b"live"))
        .await;
    assert_eq!(
        alice.recv_bytes().await.unwrap(),
        build::publish("shared/open", 0, false, false, 0, b"live")
    );
    alice.expect_silence().await;
}

#[tokio::test]
async fn acl_file_changes_apply_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(with_acl(dir.path()));
    let mut alice = login(broker.addr, 4, "a", "alice", "s3cret").await;
    alice.send(&build::subscribe(1, &[("news", 0)])).await;
    assert_eq!(alice.recv_bytes().await.unwrap(), build::suback(1, &[0x80]));
    acl_file(dir.path(), &format!("{ACL}\nuser alice\ntopic read news\n"));
    let mut packet_id = 1;
    let granted = poll_until(PATIENCE, Duration::from_millis(200), async || {
        packet_id += 1;
        alice
            .send(&build::subscribe(packet_id, &[("news", 0)]))
            .await;
        alice.recv_bytes().await.unwrap() == build::suback(packet_id, &[0])
    })
    .await;
    assert!(granted, "the new ACL file was not picked up");
}

#[tokio::test]
async fn will_to_a_topic_the_client_may_not_write_refuses_the_connect() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(with_acl(dir.path()));
    for level in [4, 5] {
        let connect = build::connect_full(
            level,
            "w",
            true,
            60,
            Some(("public/will", b"bye", 0, false)),
            Some("alice"),
            Some(b"s3cret"),
        );
        expect_refused(broker.addr, level, connect, ReasonCode::NotAuthorized).await;
    }
    let ok = build::connect_full(
        4,
        "w",
        true,
        60,
        Some(("alice/will", b"bye", 0, false)),
        Some("alice"),
        Some(b"s3cret"),
    );
    let mut c = Raw::connect(broker.addr).await;
    c.send(&ok).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::connack(false, 0));
}

/// `mosquitto_pub` with `args`; (success, stderr).
fn mosquitto_pub(broker: &TestBroker, args: &[&str]) -> (bool, String) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.addr.port().to_string()])
        .args(args)
        .output()
        .expect("mosquitto_pub (Debian's mosquitto-clients; scripts/test.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_lowercase(),
    )
}

#[test]
fn mosquitto_pub_authenticates_with_a_password_and_is_refused_a_wrong_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(with_passwords(dir.path(), false));
    for version in ["mqttv311", "mqttv5"] {
        let ok = mosquitto_pub(
            &broker,
            &[
                "-V", version, "-u", "alice", "-P", "s3cret", "-t", "t", "-m", "hi", "-q", "1",
            ],
        );
        assert!(ok.0, "{version}: {}", ok.1);
        let (success, stderr) = mosquitto_pub(
            &broker,
            &[
                "-V", version, "-u", "alice", "-P", "wrong", "-t", "t", "-m", "hi",
            ],
        );
        assert!(!success);
        assert!(
            stderr.contains("bad user name or password"),
            "{version}: {stderr}"
        );
        let (success, stderr) = mosquitto_pub(&broker, &["-V", version, "-t", "t", "-m", "hi"]);
        assert!(!success);
        assert!(stderr.contains("not authori"), "{version}: {stderr}");
    }
}

#[tokio::test]
async fn sighup_rereads_the_password_file_in_the_tern_binary() {
    use common::process::{free_port, TernProcess};
    let dir = tempfile::tempdir().unwrap();
    let passwd = password_file(dir.path(), &[("alice", "s3cret")]);
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nallow_anonymous = false\npassword_file = {:?}\n",
            passwd.to_str().unwrap()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let tern = TernProcess::start(&data, free_port(), &["--config", config.to_str().unwrap()]);
    login(tern.addr, 4, "a", "alice", "s3cret").await;
    let pid = tern.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    // the file did not change: only the signal makes it re-read
    let reloaded = check_for(PATIENCE, Duration::from_millis(50), || {
        tern.log_text().contains("password file reloaded")
    })
    .await;
    assert!(reloaded, "not reloaded:\n{}", tern.log_text());
    assert!(tern.log_text().contains("SIGHUP"), "{}", tern.log_text());
    // still running and still checking passwords
    login(tern.addr, 4, "b", "alice", "s3cret").await;
    expect_refused(
        tern.addr,
        4,
        connect_as(4, "c", Some("alice"), Some(b"wrong")),
        ReasonCode::BadUserNameOrPassword,
    )
    .await;
    // a refusal is logged with its category, never the password
    let log = tern.log_text();
    assert!(
        log.contains("bad credentials") && !log.contains("wrong"),
        "{log}"
    );
}

#[tokio::test]
async fn queued_messages_of_a_restored_session_are_checked_when_its_client_returns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut broker = TestBroker::start_in(&data, with_acl(dir.path()));
    // alice's persistent session subscribes to shared/# at QoS 1, goes offline
    let mut alice = login_persistent(broker.addr, "alice-s").await;
    alice.send(&build::subscribe(1, &[("shared/#", 1)])).await;
    assert_eq!(alice.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    alice.send(&build::disconnect()).await;
    assert!(alice.expect_closed().await.is_empty());
    // restarted, the session is restored without knowing its user
    broker.stop();
    let broker = TestBroker::start_in(&data, with_acl(dir.path()));
    let mut bob = login(broker.addr, 4, "b", "bob", "hunter2").await;
    for (id, topic) in [(1, "shared/secret"), (2, "shared/open")] {
        bob.send(&build::publish(topic, 1, false, false, id, b"m"))
            .await;
        assert_eq!(bob.recv_bytes().await.unwrap(), build::puback(id));
    }
    // alice returns: only what she may read is delivered
    let mut alice = Raw::connect(broker.addr).await;
    alice
        .send(&build::connect_full(
            4,
            "alice-s",
            false,
            60,
            None,
            Some("alice"),
            Some(b"s3cret"),
        ))
        .await;
    assert_eq!(alice.recv_bytes().await.unwrap(), build::connack(true, 0));
    let got = alice.recv_bytes().await.unwrap();
    assert_eq!(got[0] & 0xf0, 0x30, "{got:02x?}");
    assert!(
        got.windows(11).any(|w| w == b"shared/open"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    alice.expect_silence().await;
}

/// A 3.1.1 persistent session (Clean Session 0) for alice.
async fn login_persistent(addr: std::net::SocketAddr, client_id: &str) -> Raw {
    let mut c = Raw::connect(addr).await;
    c.send(&build::connect_full(
        4,
        client_id,
        false,
        60,
        None,
        Some("alice"),
        Some(b"s3cret"),
    ))
    .await;
    let ack = c.recv_bytes().await.unwrap();
    assert_eq!(&ack[..2], &[0x20, 2]);
    assert_eq!(ack[3], 0);
    c
}
