//! Authentication: who a connecting client is, decided once per connection
//! right after its CONNECT is decoded, before it reaches a session.
//!
//! Owns the [`Authenticator`] trait, its implementations (certificate
//! identity, JWT in the password field, the password file) and the chain that
//! asks them in order ([`Authentication`]). Never touches sockets or
//! sessions: the listener builds an [`AuthRequest`] and refuses the
//! connection with the [`Failure`]'s reason code.
//!
//! The chain, in order:
//! 1. a 5.0 Authentication Method (enhanced authentication) is handled
//!    before this chain, by `crate::enhanced_auth` (which refuses methods it
//!    does not offer with 0x8C); a request that still carries one here is
//!    refused with 0x8C;
//! 2. `use_identity_as_username` and a client certificate identity: accepted,
//!    the identity is the user name;
//! 3. with a user name or a password: the JWT authenticator, if the password
//!    looks like a token; then the password file. The first that accepts or
//!    rejects decides. Credentials nobody checks are rejected (0x86 / 4),
//!    unless no credential backend is configured at all: then, as in
//!    Mosquitto, the user name is taken unverified if anonymous access is
//!    allowed;
//! 4. without credentials: allowed if `allow_anonymous`, else 0x87 / 5.
//!
//! Expensive checks (argon2 hashing, RSA signatures) run on tokio's blocking
//! pool, at most one per core at a time, never on the arbiter that reads the
//! CONNECT. Nothing is cached.
//!
//! Logs: one info line per refusal with client id, peer and the category
//! (`bad credentials`, `not authorized`, ...), never which part was wrong.
//!
//! Known issues:
//! - JWT: `aud` and `iss` are not checked, and a token cannot be revoked
//!   before its `exp`; an authenticated connection outlives its token.
//! - A client's identity is decided at CONNECT only: a password file reload
//!   does not disconnect users it removed.

mod error;
pub mod jwt;
pub mod password;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::{Connect, ProtocolVersion, ReasonCode};
use crate::config::AuthConfig;

pub use error::{AuthError, PasswordLineError};
pub use jwt::{JwtAuthenticator, TokenError};
pub use password::PasswordFile;

/// What a connecting client presents.
#[derive(Clone)]
pub struct AuthRequest {
    /// The client id (generated ones included).
    pub client_id: ByteString,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    pub peer: SocketAddr,
    pub protocol: ProtocolVersion,
    /// 5.0 Authentication Method, if the client asks for enhanced auth.
    pub authentication_method: Option<ByteString>,
    /// Identity of the verified client certificate (TLS listeners), e.g. its
    /// subject common name. `None` on plain TCP.
    pub certificate_identity: Option<String>,
}

impl AuthRequest {
    /// The request for a decoded CONNECT.
    pub fn from_connect(
        connect: &Connect,
        client_id: ByteString,
        peer: SocketAddr,
        certificate_identity: Option<String>,
    ) -> AuthRequest {
        AuthRequest {
            client_id,
            username: connect.username.clone(),
            password: connect.password.clone(),
            peer,
            protocol: connect.protocol,
            authentication_method: connect.properties.authentication_method.clone(),
            certificate_identity,
        }
    }

    fn has_credentials(&self) -> bool {
        self.username.is_some() || self.password.is_some()
    }
}

impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("peer", &self.peer)
            .field("certificate_identity", &self.certificate_identity)
            .finish()
    }
}

/// Who an accepted client is, for authorization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principal {
    /// The verified user name (from the password file, the token's claim or
    /// the certificate), or the unverified one when no backend checks names.
    pub username: Option<ByteString>,
    /// The client certificate identity, if the listener verified one.
    pub certificate_identity: Option<String>,
}

/// Why a client is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Wrong password, unknown user, invalid or expired token (3.1.1: 4,
    /// 5.0: 0x86).
    #[error("bad credentials")]
    BadCredentials,
    /// No credentials and anonymous access is off (3.1.1: 5, 5.0: 0x87).
    #[error("not authorized")]
    NotAuthorized,
    /// 5.0 enhanced authentication with a method the broker lacks (0x8C).
    #[error("unsupported authentication method")]
    BadAuthenticationMethod,
    /// The check itself failed (3.1.1: 3, 5.0: 0x88).
    #[error("authentication unavailable")]
    Unavailable,
}

impl Failure {
    /// The CONNACK reason code (3.1.1 return codes follow from it).
    pub fn reason_code(self) -> ReasonCode {
        match self {
            Failure::BadCredentials => ReasonCode::BadUserNameOrPassword,
            Failure::NotAuthorized => ReasonCode::NotAuthorized,
            Failure::BadAuthenticationMethod => ReasonCode::BadAuthenticationMethod,
            Failure::Unavailable => ReasonCode::ServerUnavailable,
        }
    }
}

/// One authenticator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept(Principal),
    Reject(Failure),
    /// Not for this authenticator: ask the next.
    Pass,
}

/// A way to tell who a client is.
pub trait Authenticator: Send + Sync {
    /// Short name for logs.
    fn name(&self) -> &'static str;

    /// True if `authenticate` costs CPU (hashing, signatures): it then runs
    /// on the blocking pool.
    fn is_expensive(&self) -> bool {
        false
    }

    /// True if it checks user names or passwords (see the module doc, 3.).
    fn checks_credentials(&self) -> bool {
        true
    }

    /// Decides, or passes to the next authenticator. May block (CPU).
    fn authenticate(&self, request: &AuthRequest) -> Verdict;

    /// Re-reads files it depends on if they changed (`force`: even if not).
    fn reload(&self, _force: bool) -> Result<(), AuthError> {
        Ok(())
    }
}

/// Accepts a client certificate identity as the user name.
#[derive(Debug, Default)]
pub struct CertificateAuthenticator;

impl Authenticator for CertificateAuthenticator {
    fn name(&self) -> &'static str {
        "certificate"
    }

    fn checks_credentials(&self) -> bool {
        false
    }

    fn authenticate(&self, request: &AuthRequest) -> Verdict {
        match &request.certificate_identity {
            Some(identity) => Verdict::Accept(Principal {
                username: Some(ByteString::from(identity.as_str())),
                certificate_identity: Some(identity.clone()),
            }),
            None => Verdict::Pass,
        }
    }
}

/// The configured chain of authenticators.
pub struct Authentication {
    chain: Vec<Box<dyn Authenticator>>,
    allow_anonymous: bool,
    /// Bounds the expensive checks running at once, so that a flood of
    /// CONNECTs with passwords queues instead of taking every blocking thread.
    permits: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.chain.iter().map(|a| a.name()).collect();
        f.debug_struct("Authentication")
            .field("chain", &names)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

impl Authentication {
    /// Builds the chain from the configuration, reading the password file and
    /// the JWT key.
    pub fn from_config(config: &AuthConfig) -> Result<Authentication, AuthError> {
        let mut chain: Vec<Box<dyn Authenticator>> = Vec::new();
        if config.use_identity_as_username {
            chain.push(Box::new(CertificateAuthenticator));
        }
        if let Some(jwt) = &config.jwt {
            chain.push(Box::new(JwtAuthenticator::from_config(jwt)?));
        }
        if let Some(path) = &config.password_file {
            chain.push(Box::new(PasswordFile::open(path)?));
        }
        Ok(Authentication::new(chain, config.allow_anonymous))
    }

    /// A chain of the given authenticators.
    pub fn new(chain: Vec<Box<dyn Authenticator>>, allow_anonymous: bool) -> Authentication {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Authentication {
            chain,
            allow_anonymous,
            permits: tokio::sync::Semaphore::new(cores),
        }
    }

    /// Decides synchronously (may block for a password hash).
    pub fn decide(&self, request: &AuthRequest) -> Result<Principal, Failure> {
        if request.authentication_method.is_some() {
            return Err(Failure::BadAuthenticationMethod);
        }
        let with_certificate = |mut p: Principal| {
            if p.certificate_identity.is_none() {
                p.certificate_identity = request.certificate_identity.clone();
            }
            p
        };
        let mut credential_backends = false;
        for authenticator in &self.chain {
            let checks = authenticator.checks_credentials();
            credential_backends |= checks;
            if checks && !request.has_credentials() {
                continue;
            }
            match authenticator.authenticate(request) {
                Verdict::Accept(p) => return Ok(with_certificate(p)),
                Verdict::Reject(f) => return Err(f),
                Verdict::Pass => {}
            }
        }
        if request.has_credentials() && credential_backends {
            return Err(Failure::BadCredentials);
        }
        if !self.allow_anonymous {
            return Err(if request.has_credentials() {
                Failure::BadCredentials
            } else {
                Failure::NotAuthorized
            });
        }
        Ok(with_certificate(Principal {
            // unverified: no backend checks user names
            username: request.username.clone(),
            certificate_identity: None,
        }))
    }

    /// Decides without blocking the caller's thread: expensive checks run on
    /// the blocking pool, a bounded number at a time.
    pub async fn authenticate(
        self: &Arc<Self>,
        request: AuthRequest,
    ) -> Result<Principal, Failure> {
        let expensive = request.has_credentials() && self.chain.iter().any(|a| a.is_expensive());
        if !expensive {
            return self.decide(&request);
        }
        // The semaphore is never closed, so `acquire` cannot fail.
        let Ok(_permit) = self.permits.acquire().await else {
            return Err(Failure::Unavailable);
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.decide(&request))
            .await
            .unwrap_or(Err(Failure::Unavailable))
    }

    /// Re-reads the files of every authenticator (see [`Authenticator::reload`]).
    pub fn reload(&self, force: bool) {
        for a in &self.chain {
            if let Err(e) = a.reload(force) {
                tracing::warn!(authenticator = a.name(), error = %e, "reload failed; keeping the previous contents");
            }
        }
    }
}

#[cfg(test)]
mod tests;
