//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5.0 authentication method,
//! server side, without channel binding.
//!
//! The messages are short comma-separated attribute lists, parsed here; the
//! cryptography (HMAC-SHA-256, PBKDF2, constant-time comparison) comes from
//! the RustCrypto crates. The `scram` crate was not used: it depends on an
//! old `ring`, caps iterations at 65,535 and its typestate borrows the
//! provider, which cannot be kept across AUTH packets in an actor.
//!
//! Credentials are stored as RFC 5802 `StoredKey` and `ServerKey` with their
//! salt and iteration count, never the password. A credentials file has one
//! line per user: `user:iterations:salt:stored_key:server_key`, the last three
//! in base64; lines starting with `#` are comments. [`ScramCredential::new`]
//! derives a line from a password (`tern` can print one: see README).
//!
//! Exchange:
//! 1. client-first `n,,n=user,r=cnonce` -> server-first `r=cnonce+snonce,s=salt,i=n`
//! 2. client-final `c=biws,r=nonce,p=proof` -> server-final `v=signature`,
//!    after checking `H(proof XOR HMAC(StoredKey, AuthMessage)) == StoredKey`.

use std::collections::HashMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthExchange, AuthFailure, AuthMethod, AuthStep, LoadError};
use crate::codec::ReasonCode;

/// The Authentication Method name.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Iterations used when deriving new credentials (RFC 7677 asks for at
/// least 4096).
pub const DEFAULT_ITERATIONS: u32 = 4096;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// What the server keeps of one user's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramCredential {
    /// Derives the credential of `password` with `salt` (RFC 5802 section 3).
    pub fn derive(password: &str, salt: &[u8], iterations: u32) -> ScramCredential {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        ScramCredential {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// A new credential with a random 16-byte salt.
    pub fn new(password: &str) -> ScramCredential {
        let salt: [u8; 16] = rand::thread_rng().gen();
        ScramCredential::derive(password, &salt, DEFAULT_ITERATIONS)
    }

    /// The credentials-file line for `user`.
    pub fn to_line(&self, user: &str) -> String {
        format!(
            "{user}:{}:{}:{}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    fn parse_line(line: &str) -> Result<(String, ScramCredential), CredentialError> {
        let fields: Vec<&str> = line.split(':').collect();
        let [user, iterations, salt, stored, server] = fields[..] else {
            return Err(CredentialError::FieldCount(fields.len()));
        };
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| CredentialError::Iterations(iterations.to_owned()))?;
        let key = |name: &'static str, v: &str| -> Result<[u8; 32], CredentialError> {
            B64.decode(v)
                .ok()
                .and_then(|k| <[u8; 32]>::try_from(k).ok())
                .ok_or(CredentialError::Key(name))
        };
        Ok((
            user.to_owned(),
            ScramCredential {
                iterations,
                salt: B64.decode(salt).map_err(|_| CredentialError::Salt)?,
                stored_key: key("stored_key", stored)?,
                server_key: key("server_key", server)?,
            },
        ))
    }
}

/// Why a line of the credentials file is not a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not five `:`-separated fields.
    #[error("expected user:iterations:salt:stored_key:server_key, found {0} fields")]
    FieldCount(usize),
    /// The iteration count is not a `u32`.
    #[error("iterations `{0}` is not a number")]
    Iterations(String),
    /// The salt is not base64.
    #[error("salt is not base64")]
    Salt,
    /// `stored_key` or `server_key` is not 32 bytes of base64.
    #[error("{0} is not 32 bytes of base64")]
    Key(&'static str),
}

/// The SCRAM-SHA-256 mechanism over a set of credentials.
#[derive(Debug, Clone, Default)]
pub struct ScramSha256 {
    users: HashMap<String, ScramCredential>,
    /// Used for unknown users, so that they get a plausible challenge and
    /// fail only at the proof, like a wrong password.
    decoy: Option<ScramCredential>,
}

impl ScramSha256 {
    pub fn new(users: HashMap<String, ScramCredential>) -> ScramSha256 {
        ScramSha256 {
            users,
            decoy: Some(ScramCredential::new(
                &B64.encode(rand::thread_rng().gen::<[u8; 16]>()),
            )),
        }
    }

    /// Reads a credentials file (see the module documentation).
    pub fn from_file(path: &Path) -> Result<ScramSha256, LoadError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, credential) =
                ScramCredential::parse_line(line).map_err(|reason| LoadError::Parse {
                    path: shown.clone(),
                    line: i + 1,
                    reason,
                })?;
            users.insert(user, credential);
        }
        Ok(ScramSha256::new(users))
    }
}

impl AuthMethod for ScramSha256 {
    fn name(&self) -> &str {
        SCRAM_SHA_256
    }

    fn start(&self, data: &[u8]) -> (Box<dyn AuthExchange>, AuthStep) {
        let nonce: [u8; 18] = rand::thread_rng().gen();
        self.start_with_nonce(data, &B64.encode(nonce))
    }
}

impl ScramSha256 {
    fn start_with_nonce(
        &self,
        data: &[u8],
        server_nonce: &str,
    ) -> (Box<dyn AuthExchange>, AuthStep) {
        match self.client_first(data, server_nonce) {
            Ok((exchange, server_first)) => (
                Box::new(exchange),
                AuthStep::Continue(Bytes::from(server_first)),
            ),
            Err(step) => (Box::new(Finished), step),
        }
    }

    fn client_first(
        &self,
        data: &[u8],
        server_nonce: &str,
    ) -> Result<(Exchange, String), AuthStep> {
        let text = std::str::from_utf8(data).map_err(|_| malformed("client-first is not UTF-8"))?;
        // gs2-header: `n,,` or `y,,` (no channel binding); `p=` asks for
        // channel binding, which MQTT over TCP cannot offer.
        let bare = text
            .strip_prefix("n,,")
            .or_else(|| text.strip_prefix("y,,"))
            .ok_or_else(|| malformed("client-first must start with `n,,` (no channel binding)"))?;
        let gs2_header = &text[..text.len() - bare.len()];
        let mut user = None;
        let mut client_nonce = None;
        for attr in bare.split(',') {
            match attr.split_once('=') {
                Some(("n", v)) => user = Some(sasl_name(v)?),
                Some(("r", v)) if !v.is_empty() => client_nonce = Some(v),
                Some(("m", _)) => return Err(malformed("mandatory extensions are not supported")),
                _ => {}
            }
        }
        let user = user.ok_or_else(|| malformed("client-first has no user name"))?;
        let client_nonce = client_nonce.ok_or_else(|| malformed("client-first has no nonce"))?;
        let known = self.users.get(&user).cloned();
        let credential = match (&known, &self.decoy) {
            (Some(c), _) | (None, Some(c)) => c.clone(),
            (None, None) => ScramCredential::new(""),
        };
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        Ok((
            Exchange {
                user,
                known: known.is_some(),
                credential,
                nonce,
                channel_binding: B64.encode(gs2_header),
                auth_message_prefix: format!("{bare},{server_first}"),
            },
            server_first,
        ))
    }
}

/// Decodes a saslname: `=2C` is `,` and `=3D` is `=` (RFC 5802 section 5.1).
fn sasl_name(v: &str) -> Result<String, AuthStep> {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(malformed("bad escape in the user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn malformed(what: &'static str) -> AuthStep {
    AuthStep::Failure {
        code: ReasonCode::BadAuthenticationMethod,
        why: AuthFailure::Malformed {
            method: SCRAM_SHA_256,
            what,
        },
    }
}

/// An exchange past client-first, waiting for client-final.
struct Exchange {
    user: String,
    known: bool,
    credential: ScramCredential,
    nonce: String,
    channel_binding: String,
    /// `client-first-bare,server-first`.
    auth_message_prefix: String,
}

/// An exchange that is over: any further step fails.
struct Finished;

impl AuthExchange for Finished {
    fn step(&mut self, _data: &[u8]) -> AuthStep {
        malformed("the exchange is over")
    }
}

impl AuthExchange for Exchange {
    fn step(&mut self, data: &[u8]) -> AuthStep {
        let Ok(text) = std::str::from_utf8(data) else {
            return malformed("client-final is not UTF-8");
        };
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
            return malformed("client-final has no proof");
        };
        let mut channel_binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            match attr.split_once('=') {
                Some(("c", v)) => channel_binding = Some(v),
                Some(("r", v)) => nonce = Some(v),
                _ => {}
            }
        }
        if channel_binding != Some(self.channel_binding.as_str()) {
            return malformed("channel binding does not match client-first");
        }
        if nonce != Some(self.nonce.as_str()) {
            return malformed("nonce does not match");
        }
        let Some(proof) = B64.decode(proof).ok().filter(|p| p.len() == 32) else {
            return malformed("proof is not 32 bytes of base64");
        };
        let auth_message = format!("{},{without_proof}", self.auth_message_prefix);
        let client_signature = hmac(&self.credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let stored_key: [u8; 32] = Sha256::digest(&client_key).into();
        let matches: bool = stored_key.ct_eq(&self.credential.stored_key).into();
        if !(matches && self.known) {
            return AuthStep::Failure {
                code: ReasonCode::BadUserNameOrPassword,
                why: AuthFailure::WrongProof {
                    method: SCRAM_SHA_256,
                    user: self.user.clone(),
                },
            };
        }
        let server_signature = hmac(&self.credential.server_key, auth_message.as_bytes());
        AuthStep::Success {
            username: self.user.clone(),
            data: Some(Bytes::from(format!("v={}", B64.encode(server_signature)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user `user`, password `pencil`.
    fn rfc7677() -> ScramSha256 {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let mut users = HashMap::new();
        users.insert(
            "user".to_owned(),
            ScramCredential::derive("pencil", &salt, 4096),
        );
        ScramSha256::new(users)
    }

    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";

    #[test]
    fn rfc_7677_example_exchange() {
        let scram = rfc7677();
        let (mut exchange, step) = scram.start_with_nonce(CLIENT_FIRST.as_bytes(), SERVER_NONCE);
        assert_eq!(
            step,
            AuthStep::Continue(Bytes::from_static(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
            ))
        );
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            exchange.step(client_final.as_bytes()),
            AuthStep::Success {
                username: "user".into(),
                data: Some(Bytes::from_static(
                    b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
                )),
            }
        );
    }

    #[test]
    fn wrong_proof_is_bad_user_name_or_password() {
        let scram = rfc7677();
        let (mut exchange, _) = scram.start_with_nonce(CLIENT_FIRST.as_bytes(), SERVER_NONCE);
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAAZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert!(matches!(
            exchange.step(client_final.as_bytes()),
            AuthStep::Failure {
                code: ReasonCode::BadUserNameOrPassword,
                ..
            }
        ));
    }

    #[test]
    fn unknown_user_gets_a_challenge_and_fails_at_the_proof() {
        let scram = rfc7677();
        let (mut exchange, step) = scram.start_with_nonce(b"n,,n=nobody,r=abc", "xyz");
        assert!(matches!(step, AuthStep::Continue(_)));
        let step = exchange.step(b"c=biws,r=abcxyz,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        assert!(matches!(
            step,
            AuthStep::Failure {
                code: ReasonCode::BadUserNameOrPassword,
                ..
            }
        ));
    }

    #[test]
    fn a_failure_names_the_mechanism_and_its_cause_for_the_log() {
        let scram = rfc7677();
        let (_, step) = scram.start_with_nonce(b"n,,n=user", "s");
        let AuthStep::Failure { code, why } = step else {
            panic!("no nonce: {step:?}")
        };
        assert_eq!(code, ReasonCode::BadAuthenticationMethod);
        assert_eq!(why.to_string(), "SCRAM-SHA-256: client-first has no nonce");
        let (mut exchange, _) = scram.start_with_nonce(CLIENT_FIRST.as_bytes(), SERVER_NONCE);
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAAZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            exchange.step(client_final.as_bytes()),
            AuthStep::Failure {
                code: ReasonCode::BadUserNameOrPassword,
                why: AuthFailure::WrongProof {
                    method: SCRAM_SHA_256,
                    user: "user".into()
                }
            }
        );
        assert_eq!(
            AuthFailure::WrongProof {
                method: SCRAM_SHA_256,
                user: "user".into()
            }
            .to_string(),
            "SCRAM-SHA-256: wrong proof for user `user`"
        );
    }

    #[test]
    fn malformed_messages_fail_cleanly() {
        let scram = rfc7677();
        for first in [
            "",
            "p=tls-unique,,n=user,r=x",
            "n,,r=x",
            "n,,n=user",
            "n,,n=us=er,r=x",
            "n,,m=ext,n=user,r=x",
        ] {
            let (_, step) = scram.start_with_nonce(first.as_bytes(), "s");
            assert!(matches!(step, AuthStep::Failure { .. }), "{first:?}");
        }
        let (mut exchange, _) = scram.start_with_nonce(CLIENT_FIRST.as_bytes(), SERVER_NONCE);
        for last in [
            "",
            "c=biws,r=wrong,p=AAAA",
            "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
            "\u{ff}",
        ] {
            assert!(
                matches!(exchange.step(last.as_bytes()), AuthStep::Failure { .. }),
                "{last:?}"
            );
        }
    }

    #[test]
    fn escaped_user_names_are_decoded() {
        assert_eq!(sasl_name("a=2Cb=3Dc").unwrap(), "a,b=c");
    }

    #[test]
    fn credential_lines_round_trip() {
        let c = ScramCredential::new("secret");
        let (user, parsed) = ScramCredential::parse_line(&c.to_line("alice")).unwrap();
        assert_eq!((user.as_str(), parsed), ("alice", c));
        assert_eq!(
            ScramCredential::parse_line("alice:x:y").unwrap_err(),
            CredentialError::FieldCount(3)
        );
        assert_eq!(
            ScramCredential::parse_line("alice:4096:AAAA:AAAA:AAAA").unwrap_err(),
            CredentialError::Key("stored_key")
        );
        assert_eq!(
            ScramCredential::parse_line("alice:many:AAAA:AAAA:AAAA")
                .unwrap_err()
                .to_string(),
            "iterations `many` is not a number"
        );
    }
}
