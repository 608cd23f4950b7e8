//! Decode and encode errors. Each names the packet and field that failed and
//! the value found, and maps to the reason code the server sends before it
//! closes the connection.

use super::{PacketType, ReasonCode};

/// Why bytes could not be decoded into a packet. Any of these closes the
/// connection; [`DecodeError::reason_code`] says with which reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The packet's announced size is over the negotiated maximum.
    #[error("{packet} of {size} bytes is over the maximum packet size of {max} bytes")]
    PacketTooLarge { packet: u8, size: usize, max: u32 },
    /// CONNECT names a protocol or level this server does not speak. The server
    /// answers CONNACK 0x01 (3.1.1) / 0x84 (5.0) before closing [MQTT-3.1.2-2].
    #[error("CONNECT protocol name `{name}` level {level} is not supported")]
    UnsupportedProtocolVersion { name: String, level: u8 },
    /// The bytes break a rule of the specification.
    #[error("{packet} {field}: {reason}")]
    Malformed {
        packet: PacketType,
        field: &'static str,
        reason: String,
    },
    /// Placeholder until the codec lands.
    #[error("{packet}: {reason}")]
    Protocol { packet: PacketType, reason: String },
}

impl DecodeError {
    /// The reason code sent to a 5.0 client before the connection is closed.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocolVersion { .. } => ReasonCode::UnsupportedProtocolVersion,
            DecodeError::Malformed { .. } => ReasonCode::MalformedPacket,
            DecodeError::Protocol { .. } => ReasonCode::ProtocolError,
        }
    }
}

/// Why a packet could not be encoded. Nothing is appended to the buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded packet would exceed what the remaining length can express.
    #[error("{packet} of {size} bytes exceeds the largest MQTT packet")]
    PacketTooLarge { packet: PacketType, size: usize },
    /// A field does not fit its encoding or breaks a rule (a string over 65,535
    /// bytes, QoS > 0 without a packet id, ...).
    #[error("{packet} {field}: {reason}")]
    Invalid {
        packet: PacketType,
        field: &'static str,
        reason: String,
    },
}
