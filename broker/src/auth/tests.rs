//! The authentication chain, the password file and JWT, without sockets.

use std::io::Write;

use jsonwebtoken::{encode, EncodingKey, Header};

use super::password::{edit_file, parse, PasswdAction};
use super::*;
use crate::config::{AuthConfig, JwtAlgorithm, JwtConfig};
use crate::message::unix_ms;

fn request(username: Option<&str>, password: Option<&[u8]>) -> AuthRequest {
    AuthRequest {
        client_id: ByteString::from("c1"),
        username: username.map(ByteString::from),
        password: password.map(Bytes::copy_from_slice),
        peer: "127.0.0.1:1000".parse().unwrap(),
        protocol: ProtocolVersion::V311,
        authentication_method: None,
        certificate_identity: None,
    }
}

fn password_file(users: &[(&str, &str)]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    for (i, (user, password)) in users.iter().enumerate() {
        edit_file(
            file.path(),
            user,
            PasswdAction::Set(password.as_bytes().to_vec()),
            i == 0,
        )
        .unwrap();
    }
    file
}

fn with_passwords(file: &tempfile::NamedTempFile, allow_anonymous: bool) -> Authentication {
    Authentication::from_config(&AuthConfig {
        allow_anonymous,
        password_file: Some(file.path().to_owned()),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn default_config_allows_anonymous_and_takes_names_unverified() {
    let auth = Authentication::from_config(&AuthConfig::default()).unwrap();
    assert_eq!(auth.decide(&request(None, None)), Ok(Principal::default()));
    let p = auth.decide(&request(Some("bob"), Some(b"x"))).unwrap();
    assert_eq!(p.username.as_deref(), Some("bob"));
}

#[test]
fn password_file_accepts_the_right_password_only() {
    let file = password_file(&[("alice", "s3cret"), ("bob", "hunter2")]);
    let auth = with_passwords(&file, false);
    let p = auth
        .decide(&request(Some("alice"), Some(b"s3cret")))
        .unwrap();
    assert_eq!(p.username.as_deref(), Some("alice"));
    assert!(auth.decide(&request(Some("bob"), Some(b"hunter2"))).is_ok());
    for (user, password) in [
        (Some("alice"), Some(&b"wrong"[..])),
        (Some("alice"), None),
        (Some("nobody"), Some(&b"s3cret"[..])),
        (None, Some(&b"s3cret"[..])),
    ] {
        assert_eq!(
            auth.decide(&request(user, password)),
            Err(Failure::BadCredentials),
            "{user:?}"
        );
    }
    assert_eq!(
        auth.decide(&request(None, None)),
        Err(Failure::NotAuthorized)
    );
    // anonymous access is separate from the password file
    let open = with_passwords(&file, true);
    assert!(open.decide(&request(None, None)).is_ok());
    assert_eq!(
        open.decide(&request(Some("alice"), Some(b"wrong"))),
        Err(Failure::BadCredentials)
    );
}

#[test]
fn password_file_holds_argon2id_hashes_never_the_password() {
    let file = password_file(&[("alice", "s3cret")]);
    let text = std::fs::read_to_string(file.path()).unwrap();
    assert!(text.starts_with("alice:$argon2id$v=19$"), "{text}");
    assert!(!text.contains("s3cret"));
    // two hashes of one password differ (salt)
    let again = password::hash_password(b"s3cret").unwrap();
    assert!(!text.contains(&again));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn plain_text_password_file_is_refused_with_its_line() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "# users\nalice:s3cret").unwrap();
    let e = PasswordFile::open(file.path()).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("alice"), "{e}");
    assert!(parse("no-colon")
        .unwrap_err()
        .to_string()
        .contains("line 1"));
}

#[test]
fn passwd_edits_replace_and_delete_users_and_keep_comments() {
    let file = password_file(&[("alice", "a"), ("bob", "b")]);
    let path = file.path();
    let mut text = std::fs::read_to_string(path).unwrap();
    text.insert_str(0, "# team\n");
    std::fs::write(path, text).unwrap();
    edit_file(path, "alice", PasswdAction::Set(b"new".to_vec()), false).unwrap();
    edit_file(path, "bob", PasswdAction::Delete, false).unwrap();
    let users = parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(users.len(), 1);
    assert!(std::fs::read_to_string(path)
        .unwrap()
        .starts_with("# team\n"));
    let pf = PasswordFile::open(path).unwrap();
    assert!(pf.check("alice", b"new"));
    assert!(!pf.check("alice", b"a"));
    assert!(!pf.check("bob", b"b"));
    let e = edit_file(path, "carol", PasswdAction::Delete, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("carol"), "{e}");
}

#[test]
fn password_file_is_reloaded_when_it_changes() {
    let file = password_file(&[("alice", "a")]);
    let pf = PasswordFile::open(file.path()).unwrap();
    assert!(!pf.check("bob", b"b"));
    edit_file(file.path(), "bob", PasswdAction::Set(b"b".to_vec()), false).unwrap();
    pf.reload(true).unwrap();
    assert!(pf.check("bob", b"b"));
    // a broken file keeps the previous users
    std::fs::write(file.path(), "bob:plain\n").unwrap();
    assert!(pf.reload(true).is_err());
    assert!(pf.check("bob", b"b"));
}

fn token(claims: serde_json::Value, secret: &[u8]) -> Vec<u8> {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
    .into_bytes()
}

fn hs256(secret: &str) -> Authentication {
    Authentication::from_config(&AuthConfig {
        allow_anonymous: false,
        jwt: Some(JwtConfig {
            algorithm: JwtAlgorithm::HS256,
            secret: Some(secret.into()),
            public_key_file: None,
            username_claim: "sub".into(),
        }),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn jwt_hs256_valid_token_names_the_user() {
    let auth = hs256("k3y");
    let exp = unix_ms() / 1000 + 3600;
    let t = token(serde_json::json!({"sub": "dev-1", "exp": exp}), b"k3y");
    let p = auth.decide(&request(None, Some(&t))).unwrap();
    assert_eq!(p.username.as_deref(), Some("dev-1"));
    assert!(auth.decide(&request(Some("dev-1"), Some(&t))).is_ok());
    // a user name that is not the token's
    assert_eq!(
        auth.decide(&request(Some("other"), Some(&t))),
        Err(Failure::BadCredentials)
    );
}

#[test]
fn jwt_bad_signature_expired_or_missing_claims_are_refused() {
    let auth = hs256("k3y");
    let now = unix_ms() / 1000;
    for (claims, secret) in [
        (
            serde_json::json!({"sub": "d", "exp": now + 3600}),
            &b"wrong"[..],
        ),
        (serde_json::json!({"sub": "d", "exp": now - 3600}), b"k3y"),
        (serde_json::json!({"sub": "d"}), b"k3y"),
        (serde_json::json!({"exp": now + 3600}), b"k3y"),
        (serde_json::json!({"sub": 7, "exp": now + 3600}), b"k3y"),
        (
            serde_json::json!({"sub": "d", "exp": now + 3600, "nbf": now + 3600}),
            b"k3y",
        ),
    ] {
        let t = token(claims.clone(), secret);
        assert_eq!(
            auth.decide(&request(None, Some(&t))),
            Err(Failure::BadCredentials),
            "{claims}"
        );
    }
    // not a token at all: no backend accepts it
    assert_eq!(
        auth.decide(&request(Some("d"), Some(b"password"))),
        Err(Failure::BadCredentials)
    );
}

#[test]
fn jwt_with_another_algorithm_than_configured_is_refused() {
    let auth = hs256("k3y");
    let exp = unix_ms() / 1000 + 3600;
    let header = Header::new(jsonwebtoken::Algorithm::HS512);
    let t = encode(
        &header,
        &serde_json::json!({"sub": "d", "exp": exp}),
        &EncodingKey::from_secret(b"k3y"),
    )
    .unwrap();
    assert_eq!(
        auth.decide(&request(None, Some(t.as_bytes()))),
        Err(Failure::BadCredentials)
    );
}

#[test]
fn certificate_identity_authenticates_when_configured() {
    let auth = Authentication::from_config(&AuthConfig {
        allow_anonymous: false,
        use_identity_as_username: true,
        ..Default::default()
    })
    .unwrap();
    let mut r = request(None, None);
    assert_eq!(auth.decide(&r), Err(Failure::NotAuthorized));
    r.certificate_identity = Some("CN=gw-7".into());
    let p = auth.decide(&r).unwrap();
    assert_eq!(p.username.as_deref(), Some("CN=gw-7"));
    assert_eq!(p.certificate_identity.as_deref(), Some("CN=gw-7"));
}

#[test]
fn enhanced_authentication_method_is_refused_with_0x8c() {
    let auth = Authentication::from_config(&AuthConfig::default()).unwrap();
    let mut r = request(None, None);
    r.protocol = ProtocolVersion::V5;
    r.authentication_method = Some(ByteString::from("SCRAM-SHA-1"));
    let f = auth.decide(&r).unwrap_err();
    assert_eq!(f.reason_code(), ReasonCode::BadAuthenticationMethod);
}

#[test]
fn request_debug_never_shows_the_password() {
    let r = request(Some("alice"), Some(b"s3cret"));
    let text = format!("{r:?}");
    assert!(
        !text.contains("s3cret") && text.contains("redacted"),
        "{text}"
    );
}
