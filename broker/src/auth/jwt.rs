//! JSON Web Tokens in the CONNECT password field (RFC 7519), signed with
//! HS256 (shared secret) or RS256 (RSA key; the broker holds the public key).
//!
//! A password that looks like a compact JWS (three base64url parts separated
//! by dots, the first decoding to a JSON header) is verified here; any other
//! password passes to the next authenticator. A token is accepted when its
//! signature verifies with the configured algorithm (no other: the header's
//! `alg` must match), `exp` is present and in the future and `nbf`, if
//! present, has passed (60 s leeway for clock skew, the `jsonwebtoken`
//! default). The configured claim (`sub` by default) must be a string: it is
//! the client's user name. A CONNECT that also carries a user name must carry
//! that same name.
//!
//! The key file is re-read on SIGHUP and when it changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytestring::ByteString;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use parking_lot::{Mutex, RwLock};

use super::{AuthError, AuthRequest, Authenticator, Failure, Principal, Verdict};
use crate::config::{JwtAlgorithm, JwtConfig};

/// Verifies tokens with one key.
pub struct JwtAuthenticator {
    algorithm: Algorithm,
    key: RwLock<Arc<DecodingKey>>,
    key_file: Option<PathBuf>,
    key_stamp: Mutex<(Option<SystemTime>, u64)>,
    username_claim: String,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("algorithm", &self.algorithm)
            .field("key_file", &self.key_file)
            .field("username_claim", &self.username_claim)
            .finish_non_exhaustive()
    }
}

/// Why a token in the password field is refused. Each is a
/// [`Failure::BadCredentials`] to the client ([`TokenError::failure`]); the
/// text is for the debug log only.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Bad signature, wrong `alg`, expired, not yet valid, no `exp`, ...
    #[error("{0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// The configured user name claim is absent, empty or not a string.
    #[error("claim `{0}` is missing or not a string")]
    NoUsername(String),
    /// The CONNECT's user name is not the one the token names.
    #[error("token names another user")]
    OtherUser,
}

impl TokenError {
    /// How the client is refused (its reason code is the failure's).
    pub fn failure(&self) -> Failure {
        match self {
            TokenError::Invalid(_) | TokenError::NoUsername(_) | TokenError::OtherUser => {
                Failure::BadCredentials
            }
        }
    }
}

fn read_rsa_key(path: &Path) -> Result<DecodingKey, AuthError> {
    let pem = std::fs::read(path).map_err(|source| AuthError::ReadPublicKey {
        path: path.to_owned(),
        source,
    })?;
    DecodingKey::from_rsa_pem(&pem).map_err(|source| AuthError::BadPublicKey {
        path: path.to_owned(),
        source,
    })
}

fn stamp_of(path: &Path) -> (Option<SystemTime>, u64) {
    std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()))
}

/// True if `password` has the shape of a compact JWS with a JSON header.
fn looks_like_jwt(password: &[u8]) -> Option<&str> {
    let token = std::str::from_utf8(password).ok()?;
    if token.split('.').count() != 3 {
        return None;
    }
    decode_header(token).ok()?;
    Some(token)
}

impl JwtAuthenticator {
    pub fn from_config(config: &JwtConfig) -> Result<JwtAuthenticator, AuthError> {
        let (algorithm, key, key_file) = match config.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = config.secret.as_deref().unwrap_or("");
                (
                    Algorithm::HS256,
                    DecodingKey::from_secret(secret.as_bytes()),
                    None,
                )
            }
            JwtAlgorithm::RS256 => {
                let path = config
                    .public_key_file
                    .as_ref()
                    .ok_or(AuthError::NoPublicKeyFile)?;
                (Algorithm::RS256, read_rsa_key(path)?, Some(path.clone()))
            }
        };
        let key_stamp = key_file.as_deref().map_or((None, 0), stamp_of);
        Ok(JwtAuthenticator {
            algorithm,
            key: RwLock::new(Arc::new(key)),
            key_file,
            key_stamp: Mutex::new(key_stamp),
            username_claim: config.username_claim.clone(),
        })
    }

    /// The user name a valid token names, or why it is refused. `username`:
    /// the CONNECT's, which must be the token's if present.
    fn verify(&self, token: &str, username: Option<&str>) -> Result<String, TokenError> {
        let mut validation = Validation::new(self.algorithm);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_nbf = true;
        let key = self.key.read().clone();
        let data = decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)?;
        let name = match data.claims.get(&self.username_claim) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(TokenError::NoUsername(self.username_claim.clone())),
        };
        if username.is_some_and(|u| u != name) {
            return Err(TokenError::OtherUser);
        }
        Ok(name)
    }
}

impl Authenticator for JwtAuthenticator {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn is_expensive(&self) -> bool {
        self.algorithm == Algorithm::RS256
    }

    fn authenticate(&self, request: &AuthRequest) -> Verdict {
        let Some(token) = request.password.as_deref().and_then(looks_like_jwt) else {
            return Verdict::Pass;
        };
        match self.verify(token, request.username.as_deref()) {
            Ok(name) => Verdict::Accept(Principal {
                username: Some(ByteString::from(name)),
                certificate_identity: None,
            }),
            Err(e) => {
                tracing::debug!(client_id = %request.client_id, error = %e, "token refused");
                Verdict::Reject(e.failure())
            }
        }
    }

    fn reload(&self, force: bool) -> Result<(), AuthError> {
        let Some(path) = &self.key_file else {
            return Ok(());
        };
        let stamp = stamp_of(path);
        if !force && *self.key_stamp.lock() == stamp {
            return Ok(());
        }
        *self.key_stamp.lock() = stamp;
        let key = read_rsa_key(path)?;
        *self.key.write() = Arc::new(key);
        tracing::info!(file = %path.display(), "JWT public key reloaded");
        Ok(())
    }
}
