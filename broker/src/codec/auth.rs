//! AUTH (5.0 section 3.15). Not part of 3.1 / 3.1.1: decoding it for those
//! versions is an error.

use super::{AuthProperties, ReasonCode};

/// AUTH: one step of enhanced authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Success, ContinueAuthentication or ReAuthenticate.
    pub reason_code: ReasonCode,
    pub properties: AuthProperties,
}
