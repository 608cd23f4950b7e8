//! MQTT 5.0 enhanced authentication (5.0 section 4.12) with SCRAM-SHA-256:
//! the AUTH exchange at CONNECT and re-authentication, over raw packets. The
//! client side of SCRAM is computed here from RFC 5802; no MQTT client
//! library available to the tests implements the AUTH exchange.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use broker::codec::{Packet, ProtocolVersion, ReasonCode};
use broker::enhanced_auth::ScramCredential;
use common::build::{self, prop};
use common::{Raw, TestBroker};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The client side of one SCRAM-SHA-256 exchange.
struct ScramClient {
    user: String,
    password: String,
    nonce: String,
    server_first: String,
    server_signature: Vec<u8>,
}

impl ScramClient {
    fn new(user: &str, password: &str) -> ScramClient {
        ScramClient {
            user: user.into(),
            password: password.into(),
            nonce: "fyko+d2lbbFgONRv9qkxdawL".into(),
            server_first: String::new(),
            server_signature: Vec::new(),
        }
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.user, self.nonce)
    }

    fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare()).into_bytes()
    }

    fn client_final(&mut self, server_first: &[u8]) -> Vec<u8> {
        self.server_first = String::from_utf8(server_first.to_vec()).unwrap();
        let attrs: std::collections::HashMap<&str, &str> = self
            .server_first
            .split(',')
            .filter_map(|a| a.split_once('='))
            .collect();
        let nonce = attrs["r"];
        assert!(nonce.starts_with(&self.nonce), "server nonce extends ours");
        let salt = B64.decode(attrs["s"]).unwrap();
        let iterations: u32 = attrs["i"].parse().unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(self.password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare(),
            self.server_first
        );
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        format!("{without_proof},p={}", B64.encode(proof)).into_bytes()
    }

    fn verify_server_final(&self, data: &[u8]) {
        assert_eq!(
            data,
            format!("v={}", B64.encode(&self.server_signature)).as_bytes(),
            "server proves it knows the key"
        );
    }
}

fn broker_with_user(user: &str, password: &str) -> (TestBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scram-users");
    std::fs::write(
        &file,
        format!(
            "# test users\n{}\n",
            ScramCredential::new(password).to_line(user)
        ),
    )
    .unwrap();
    let broker = TestBroker::start_with(|c| c.enhanced_auth.scram_users_file = Some(file));
    (broker, dir)
}

fn method_and_data(data: &[u8]) -> Vec<u8> {
    [
        prop::str(prop::AUTH_METHOD, "SCRAM-SHA-256"),
        prop::data(prop::AUTH_DATA, data),
    ]
    .concat()
}

/// CONNECT with SCRAM, answering the challenge; returns the client, the
/// CONNACK reason code and the SCRAM client (to verify the server's proof).
async fn scram_connect(
    broker: &TestBroker,
    user: &str,
    password: &str,
) -> (Raw, ReasonCode, ScramClient, Option<Packet>) {
    let mut scram = ScramClient::new(user, password);
    let mut c = Raw::connect(broker.addr).await;
    c.version = ProtocolVersion::V5;
    c.send(&build::connect5(
        "scram-client",
        true,
        60,
        &method_and_data(&scram.client_first()),
    ))
    .await;
    let challenge = match c.recv().await {
        Some(Packet::Auth(a)) => {
            assert_eq!(a.reason_code, ReasonCode::ContinueAuthentication);
            assert_eq!(
                a.properties.authentication_method.as_deref(),
                Some("SCRAM-SHA-256")
            );
            a.properties.authentication_data.unwrap()
        }
        other => panic!("AUTH challenge expected, got {other:?}"),
    };
    let answer = scram.client_final(&challenge);
    c.send(&build::auth5(0x18, &method_and_data(&answer))).await;
    let connack = c.recv().await;
    let code = match &connack {
        Some(Packet::ConnAck(a)) => a.reason_code,
        other => panic!("CONNACK expected, got {other:?}"),
    };
    (c, code, scram, connack)
}

#[tokio::test]
async fn enhanced_auth_scram_sha_256_authenticates_through_an_auth_exchange() {
    let (broker, _dir) = broker_with_user("alice", "wonderland");
    let (mut c, code, scram, connack) = scram_connect(&broker, "alice", "wonderland").await;
    assert_eq!(code, ReasonCode::Success);
    let Some(Packet::ConnAck(ack)) = connack else {
        unreachable!()
    };
    assert_eq!(
        ack.properties.authentication_method.as_deref(),
        Some("SCRAM-SHA-256")
    );
    scram.verify_server_final(&ack.properties.authentication_data.unwrap());
    c.send(&build::pingreq()).await;
    assert_eq!(c.recv_bytes().await.unwrap(), build::pingresp());
}

#[tokio::test]
async fn enhanced_auth_wrong_password_or_unknown_user_is_refused_with_0x86() {
    let (broker, _dir) = broker_with_user("alice", "wonderland");
    for (user, password) in [("alice", "looking-glass"), ("bob", "wonderland")] {
        let (mut c, code, _, _) = scram_connect(&broker, user, password).await;
        assert_eq!(code, ReasonCode::BadUserNameOrPassword, "{user}");
        assert!(c.expect_closed().await.is_empty());
    }
}

#[tokio::test]
async fn enhanced_auth_unknown_method_is_refused_with_0x8c_mqtt_4_12_0_1() {
    let (broker, _dir) = broker_with_user("alice", "wonderland");
    let without = TestBroker::start();
    for (b, method) in [(&broker, "KERBEROS"), (&without, "SCRAM-SHA-256")] {
        let mut c = Raw::connect(b.addr).await;
        c.version = ProtocolVersion::V5;
        c.send(&build::connect5(
            "m",
            true,
            60,
            &prop::str(prop::AUTH_METHOD, method),
        ))
        .await;
        let got = c.expect_closed().await;
        assert_eq!(got.len(), 1, "{got:02x?}");
        assert_eq!(
            (got[0][0], got[0][3]),
            (0x20, 0x8C),
            "CONNACK 0x8C: {got:02x?}"
        );
    }
}

#[tokio::test]
async fn enhanced_auth_reauthentication_succeeds_while_the_connection_works() {
    let (broker, _dir) = broker_with_user("alice", "wonderland");
    let (mut c, code, _, _) = scram_connect(&broker, "alice", "wonderland").await;
    assert_eq!(code, ReasonCode::Success);
    let mut again = ScramClient::new("alice", "wonderland");
    c.send(&build::auth5(0x19, &method_and_data(&again.client_first())))
        .await;
    let challenge = match c.recv().await {
        Some(Packet::Auth(a)) if a.reason_code == ReasonCode::ContinueAuthentication => {
            a.properties.authentication_data.unwrap()
        }
        other => panic!("{other:?}"),
    };
    // Other packets flow during re-authentication.
    c.send(&build::pingreq()).await;
    assert!(matches!(c.recv().await, Some(Packet::PingResp)));
    c.send(&build::auth5(
        0x18,
        &method_and_data(&again.client_final(&challenge)),
    ))
    .await;
    match c.recv().await {
        Some(Packet::Auth(a)) => {
            assert_eq!(a.reason_code, ReasonCode::Success);
            again.verify_server_final(&a.properties.authentication_data.unwrap());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn enhanced_auth_failed_reauthentication_disconnects_with_0x87() {
    let (broker, _dir) = broker_with_user("alice", "wonderland");
    let (mut c, _, _, _) = scram_connect(&broker, "alice", "wonderland").await;
    let mut wrong = ScramClient::new("alice", "nope");
    c.send(&build::auth5(0x19, &method_and_data(&wrong.client_first())))
        .await;
    let Some(Packet::Auth(a)) = c.recv().await else {
        panic!("challenge")
    };
    c.send(&build::auth5(
        0x18,
        &method_and_data(&wrong.client_final(&a.properties.authentication_data.unwrap())),
    ))
    .await;
    let got = c.expect_closed().await;
    assert_eq!((got[0][0], got[0][2]), (0xE0, 0x87), "{got:02x?}");
}

#[tokio::test]
async fn auth_without_a_method_at_connect_is_a_protocol_error() {
    let broker = TestBroker::start();
    let mut c = Raw::mqtt5(broker.addr, "noauth", true, &[]).await;
    c.send(&build::auth5(
        0x19,
        &prop::str(prop::AUTH_METHOD, "SCRAM-SHA-256"),
    ))
    .await;
    let got = c.expect_closed().await;
    assert_eq!((got[0][0], got[0][2]), (0xE0, 0x82), "{got:02x?}");
}
