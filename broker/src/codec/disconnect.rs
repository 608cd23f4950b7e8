//! DISCONNECT (3.1.1 section 3.14; 5.0 section 3.14).

use super::{DisconnectProperties, ReasonCode};

/// DISCONNECT. For 3.1 / 3.1.1 it has no body and is only sent by clients; the
/// reason is always NormalDisconnection (Success).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    pub reason_code: ReasonCode,
    pub properties: DisconnectProperties,
}
