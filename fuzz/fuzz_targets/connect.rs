//! Drives the CONNECT path without a socket: arbitrary bytes are decoded as
//! the first packet of a connection (as `listener::bootstrap` does), and a
//! decoded CONNECT goes through admission (`broker::listener::admit::decide`: the
//! authentication chain, then the will's topic limits and ACL) under one of
//! eight configurations picked by the first input byte:
//! - bit 0: anonymous access allowed;
//! - bit 1: a client certificate identity authenticates;
//! - bit 2: the connection presents a certificate identity.
//!
//! The chain always has a JWT (HS256, secret `fuzz-secret`) and a password
//! file (user `u`, password `p`, cheap argon2 parameters), and the ACL lets
//! user `u` write `u/#` and everyone write `devices/%c/#`. Checked:
//! - nothing panics;
//! - a refusal's reason code is valid in a CONNACK, and the CONNACK encodes
//!   for the client's version;
//! - an accepted client without a certificate identity and with anonymous
//!   access off presented credentials that some backend accepted (the user
//!   name is `u`, or it came from a token);
//! - an accepted client's will topic is writable under the ACL.
//!
//! Run from the repository root: `cargo +nightly fuzz run connect --
//! -max_total_time=60`, or, starting from the seeds (a CONNECT with the right
//! password, a token, wills, a certificate), `mkdir -p fuzz/corpus/connect &&
//! cargo +nightly fuzz run connect fuzz/corpus/connect fuzz/seeds_connect --
//! -max_total_time=60` (new inputs go to the first directory).

#![no_main]

use std::sync::OnceLock;

use broker::acl::{rules, Access, Acl, Subject};
use broker::auth::password::hash_password_with_cost;
use broker::auth::Authentication;
use broker::listener::admit::decide;
use broker::codec::{
    ConnAck, ConnAckProperties, Limits as CodecLimits, Packet, PacketType, ProtocolVersion,
};
use broker::config::{AuthConfig, JwtAlgorithm, JwtConfig, LimitsConfig};
use broker::limits::Limits;
use bytes::BytesMut;
use bytestring::ByteString;
use libfuzzer_sys::fuzz_target;

const ACL: &str = "user u\ntopic readwrite u/#\npattern write devices/%c/#\n";

struct World {
    /// Indexed by (allow_anonymous, use_identity_as_username).
    auth: [Authentication; 4],
    acl: Acl,
    limits: Limits,
    _dir: std::path::PathBuf,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tern-fuzz-connect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let passwd = dir.join("passwd");
        let hash = hash_password_with_cost(b"p", 8, 1, 1).unwrap();
        std::fs::write(&passwd, format!("u:{hash}\n")).unwrap();
        let auth = |allow_anonymous: bool, use_identity_as_username: bool| {
            Authentication::from_config(&AuthConfig {
                allow_anonymous,
                password_file: Some(passwd.clone()),
                jwt: Some(JwtConfig {
                    algorithm: JwtAlgorithm::HS256,
                    secret: Some("fuzz-secret".into()),
                    public_key_file: None,
                    username_claim: "sub".into(),
                }),
                use_identity_as_username,
            })
            .unwrap()
        };
        World {
            auth: [
                auth(false, false),
                auth(true, false),
                auth(false, true),
                auth(true, true),
            ],
            acl: Acl::from_rules(rules::parse(ACL).unwrap()),
            limits: Limits::new(&LimitsConfig {
                max_topic_levels: 8,
                max_topic_length: 64,
                ..Default::default()
            }),
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let allow_anonymous = flags & 1 != 0;
    let use_identity = flags & 2 != 0;
    let certificate = (flags & 4 != 0).then(|| "CN=fuzz".to_owned());
    let mut buf = BytesMut::from(bytes);
    let limits = CodecLimits {
        max_packet_size: 64 * 1024,
        version: ProtocolVersion::V311,
        refuse_control_characters: true,
    };
    let Ok(Some(Packet::Connect(connect))) = Packet::decode(&mut buf, &limits) else {
        return;
    };
    let w = world();
    let auth = &w.auth[usize::from(allow_anonymous) + 2 * usize::from(use_identity)];
    let client_id = if connect.client_id.is_empty() {
        ByteString::from_static("generated")
    } else {
        connect.client_id.clone()
    };
    let peer = "127.0.0.1:1883".parse().unwrap();
    match decide(
        auth,
        &w.acl,
        &w.limits,
        &connect,
        &client_id,
        peer,
        certificate.clone(),
    ) {
        Err(refusal) => {
            let code = refusal.reason_code();
            assert!(code.is_error(), "{refusal:?} maps to {code:?}");
            assert!(code.is_valid_for(PacketType::ConnAck), "{code:?}");
            let connack = Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: code,
                properties: ConnAckProperties::default(),
            });
            let mut out = BytesMut::new();
            connack
                .encode(connect.protocol, &mut out)
                .unwrap_or_else(|e| panic!("CONNACK {code:?} does not encode: {e}"));
        }
        Ok(principal) => {
            assert!(connect.properties.authentication_method.is_none());
            let by_certificate = use_identity && certificate.is_some();
            if !allow_anonymous && !by_certificate {
                let name = principal.username.as_deref().expect("a user name");
                let password_ok = name == "u" && connect.password.as_deref() == Some(b"p");
                let token = connect
                    .password
                    .as_deref()
                    .is_some_and(|p| p.split(|&b| b == b'.').count() == 3);
                assert!(
                    password_ok || token,
                    "accepted {principal:?} for {connect:?}"
                );
            }
            if let Some(will) = &connect.will {
                let subject = Subject::new(&client_id, &principal);
                assert!(w.acl.check_topic(&subject, &will.topic, Access::Write));
                assert!(w.limits.topic_violation(&will.topic).is_none());
            }
        }
    }
});
