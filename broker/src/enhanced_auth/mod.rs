//! MQTT 5.0 enhanced authentication (5.0 section 4.12): challenge/response
//! exchanges carried by CONNECT, AUTH and CONNACK, and re-authentication on a
//! live connection.
//!
//! A mechanism is an [`AuthMethod`] named by the client's Authentication
//! Method property; each exchange is an [`AuthExchange`] fed the client's
//! Authentication Data step by step. The listener runs the exchange that
//! starts with CONNECT before the session is attached; the session runs
//! re-authentication (AUTH with reason 0x19). Mechanisms are pure: no I/O,
//! they only look credentials up in memory.
//!
//! Lifecycle of an exchange: `start` with the CONNECT's (or the 0x19 AUTH's)
//! data -> `Continue(challenge)` sent as AUTH 0x18 -> `step` with the client's
//! AUTH 0x18 data -> ... -> `Success` (CONNACK 0x00, or AUTH 0x00 on
//! re-authentication) or `Failure` (CONNACK / DISCONNECT with its code).

mod connect;
mod scram;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::ReasonCode;

pub use connect::{authenticate, Authenticated, ExchangeError};
pub use scram::{CredentialError, ScramCredential, ScramSha256, SCRAM_SHA_256};

/// What one step of an exchange produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send this challenge (AUTH 0x18) and wait for the client's answer.
    Continue(Bytes),
    /// Authenticated as `username`; send `data` with the final CONNACK / AUTH.
    Success {
        username: String,
        data: Option<Bytes>,
    },
    /// Refused, with the code to send and why (for the log only: the client
    /// is not told which part was wrong).
    Failure { code: ReasonCode, why: AuthFailure },
}

/// Why a mechanism refused a client: for the log only, the client is told
/// a reason code. Crosses from a mechanism to the listener (CONNECT,
/// inside [`ExchangeError::Refused`]) and to the session
/// (re-authentication).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// A message of the exchange breaks the mechanism's syntax, asks for
    /// something it does not support, or comes after the exchange ended.
    #[error("{method}: {what}")]
    Malformed {
        method: &'static str,
        what: &'static str,
    },
    /// The client's proof does not match the credential of `user` (also
    /// for an unknown user, whose exchange runs to the end on a decoy).
    #[error("{method}: wrong proof for user `{user}`")]
    WrongProof { method: &'static str, user: String },
}

/// One authentication exchange in progress.
pub trait AuthExchange: Send {
    /// Feeds the client's next Authentication Data.
    fn step(&mut self, data: &[u8]) -> AuthStep;
}

/// An enhanced authentication mechanism.
pub trait AuthMethod: Send + Sync {
    /// The Authentication Method name clients use, e.g. `SCRAM-SHA-256`.
    fn name(&self) -> &str;
    /// Starts an exchange with the first Authentication Data (possibly empty).
    fn start(&self, data: &[u8]) -> (Box<dyn AuthExchange>, AuthStep);
}

/// The mechanisms a node offers, by name.
#[derive(Clone, Default)]
pub struct AuthMethods(HashMap<String, Arc<dyn AuthMethod>>);

impl std::fmt::Debug for AuthMethods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Why the mechanisms could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The credentials file could not be read.
    #[error("cannot read SCRAM credentials file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A line of the credentials file is not a credential.
    #[error("SCRAM credentials file {path}, line {line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: CredentialError,
    },
}

impl AuthMethods {
    /// No mechanism: a CONNECT with an Authentication Method is refused with
    /// 0x8C Bad authentication method.
    pub fn none() -> AuthMethods {
        AuthMethods::default()
    }

    /// Adds a mechanism.
    pub fn with(mut self, method: Arc<dyn AuthMethod>) -> AuthMethods {
        self.0.insert(method.name().to_owned(), method);
        self
    }

    /// The mechanisms configured: SCRAM-SHA-256 when a credentials file is set.
    pub fn from_config(scram_users: Option<&Path>) -> Result<AuthMethods, LoadError> {
        let mut methods = AuthMethods::none();
        if let Some(path) = scram_users {
            methods = methods.with(Arc::new(ScramSha256::from_file(path)?));
        }
        Ok(methods)
    }

    /// The mechanism named `name`, if offered.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn AuthMethod>> {
        self.0.get(name)
    }
}
