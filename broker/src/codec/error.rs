//! Decode and encode errors. Each names the packet and field that failed and
//! the value found, and maps to the reason code the server sends before it
//! closes the connection.
//!
//! Which variant a check returns follows 5.0, which distinguishes a Malformed
//! Packet (the bytes cannot be parsed as the specification lays them out:
//! lengths, reserved bits, encodings, unknown values) from a Protocol Error
//! (the packet parses but breaks a rule the specification calls a "Protocol
//! Error"). 3.1 and 3.1.1 close the connection in both cases without a reason.

use super::topic::TopicError;
use super::{PacketType, ProtocolVersion, ReasonCode};

/// Why bytes could not be decoded into a packet. Any of these closes the
/// connection; [`DecodeError::reason_code`] says with which reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The fixed header announces a packet (fixed header included) over
    /// `Limits::max_packet_size`. Returned as soon as the fixed header is
    /// readable, before the body has arrived. `packet` is the packet type
    /// number (1 = CONNECT ... 15 = AUTH).
    #[error("{} of {size} bytes is over the maximum packet size of {max} bytes", packet_type_name(*packet))]
    PacketTooLarge { packet: u8, size: usize, max: u32 },
    /// CONNECT names a protocol or level this server does not speak. The server
    /// answers CONNACK 0x01 (3.1.1) / 0x84 (5.0) before closing [MQTT-3.1.2-2].
    #[error("CONNECT protocol name `{name}` level {level} is not supported")]
    UnsupportedProtocolVersion { name: String, level: u8 },
    /// The packet type nibble is 0, which every version reserves, or 15 (AUTH)
    /// in 3.1 / 3.1.1, where it is reserved too.
    #[error("packet type {packet_type} is reserved in MQTT {version}")]
    ReservedPacketType {
        packet_type: u8,
        version: ProtocolVersion,
    },
    /// The bytes cannot be parsed: a field runs past the end of the packet,
    /// bytes are left over, a reserved bit or flag is set, a string is not
    /// UTF-8 or holds U+0000, a value is outside what its field can hold
    /// (QoS 3, an unknown reason code or property), or a property is not
    /// allowed in this packet.
    #[error("{packet} {field}: {reason}")]
    Malformed {
        packet: PacketType,
        field: &'static str,
        reason: String,
    },
    /// The packet parses but breaks a rule the specification calls a Protocol
    /// Error: a property given twice, Receive Maximum 0, Topic Alias 0, a
    /// packet identifier of 0, an empty SUBSCRIBE, a reason code not allowed
    /// for this packet type, Authentication Data without a method, ...
    #[error("{packet} {field}: {reason}")]
    ProtocolError {
        packet: PacketType,
        field: &'static str,
        reason: String,
    },
    /// A topic name (PUBLISH, Will, Response Topic) or topic filter (SUBSCRIBE,
    /// UNSUBSCRIBE) breaks the rules of section 4.7 (see [`super::topic`]).
    #[error("{packet} {field}: {error}")]
    InvalidTopic {
        packet: PacketType,
        field: &'static str,
        error: TopicError,
    },
}

impl DecodeError {
    /// The reason code sent to a 5.0 client before the connection is closed
    /// (in a CONNACK while connecting, in a DISCONNECT afterwards).
    ///
    /// | variant | reason code |
    /// | --- | --- |
    /// | `PacketTooLarge` | 0x95 Packet too large |
    /// | `UnsupportedProtocolVersion` | 0x84 Unsupported Protocol Version |
    /// | `ReservedPacketType`, `Malformed` | 0x81 Malformed Packet |
    /// | `ProtocolError` | 0x82 Protocol Error |
    /// | `InvalidTopic` in PUBLISH | 0x90 Topic Name invalid |
    /// | `InvalidTopic` elsewhere | 0x81 Malformed Packet |
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            DecodeError::UnsupportedProtocolVersion { .. } => {
                ReasonCode::UnsupportedProtocolVersion
            }
            DecodeError::ReservedPacketType { .. } | DecodeError::Malformed { .. } => {
                ReasonCode::MalformedPacket
            }
            DecodeError::ProtocolError { .. } => ReasonCode::ProtocolError,
            DecodeError::InvalidTopic {
                packet: PacketType::Publish,
                ..
            } => ReasonCode::TopicNameInvalid,
            DecodeError::InvalidTopic { .. } => ReasonCode::MalformedPacket,
        }
    }
}

fn packet_type_name(packet: u8) -> String {
    match PacketType::from_u8(packet) {
        Some(t) => t.to_string(),
        None => format!("packet type {packet}"),
    }
}

/// Why a packet could not be encoded. Nothing is appended to the buffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The encoded packet would exceed what the remaining length can express
    /// (268,435,455 bytes after the fixed header).
    #[error("{packet} of {size} bytes exceeds the largest MQTT packet")]
    PacketTooLarge { packet: PacketType, size: usize },
    /// A field does not fit its encoding or breaks a rule the decoder would
    /// reject: a string or binary over 65,535 bytes, a string with U+0000,
    /// QoS > 0 without a packet id or QoS 0 with one, a packet id of 0, a
    /// reason code not allowed for the packet, a property value the decoder
    /// refuses (Receive Maximum 0, Topic Alias 0, ...), an empty SUBSCRIBE,
    /// or a CONNECT whose `protocol` is not the version asked for.
    #[error("{packet} {field}: {reason}")]
    Invalid {
        packet: PacketType,
        field: &'static str,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_reason_code() {
        let malformed = DecodeError::Malformed {
            packet: PacketType::Subscribe,
            field: "subscription options",
            reason: "reserved bits 6-7 must be 0, got 0xc0".into(),
        };
        assert_eq!(malformed.reason_code(), ReasonCode::MalformedPacket);
        assert_eq!(
            malformed.to_string(),
            "SUBSCRIBE subscription options: reserved bits 6-7 must be 0, got 0xc0"
        );
        let too_large = DecodeError::PacketTooLarge {
            packet: 3,
            size: 2000,
            max: 1024,
        };
        assert_eq!(too_large.reason_code(), ReasonCode::PacketTooLarge);
        assert_eq!(
            too_large.to_string(),
            "PUBLISH of 2000 bytes is over the maximum packet size of 1024 bytes"
        );
        let topic = DecodeError::InvalidTopic {
            packet: PacketType::Publish,
            field: "topic name",
            error: TopicError::WildcardInName("a/#".into()),
        };
        assert_eq!(topic.reason_code(), ReasonCode::TopicNameInvalid);
        let filter = DecodeError::InvalidTopic {
            packet: PacketType::Subscribe,
            field: "topic filter",
            error: TopicError::MisplacedMultiLevelWildcard("a/#/b".into()),
        };
        assert_eq!(filter.reason_code(), ReasonCode::MalformedPacket);
        let reserved = DecodeError::ReservedPacketType {
            packet_type: 15,
            version: ProtocolVersion::V311,
        };
        assert_eq!(reserved.reason_code(), ReasonCode::MalformedPacket);
        assert_eq!(
            reserved.to_string(),
            "packet type 15 is reserved in MQTT 3.1.1"
        );
        let unsupported = DecodeError::UnsupportedProtocolVersion {
            name: "MQTT".into(),
            level: 6,
        };
        assert_eq!(
            unsupported.reason_code(),
            ReasonCode::UnsupportedProtocolVersion
        );
        let protocol = DecodeError::ProtocolError {
            packet: PacketType::Connect,
            field: "Receive Maximum",
            reason: "must be non-zero".into(),
        };
        assert_eq!(protocol.reason_code(), ReasonCode::ProtocolError);
    }
}
