//! MQTT 3.1, 3.1.1 and 5.0 packets: their types, decoding and encoding.
//!
//! This module owns the wire format and nothing else: it never touches a socket,
//! a clock or the session state. It takes bytes and returns packets
//! ([`Packet::decode`]) and takes packets and returns bytes ([`Packet::encode`]).
//! Every check a packet needs to be well formed lives here, next to the rule it
//! implements (`// [MQTT-x.y.z-n]`); checks that need session state (packet id in
//! use, topic alias range, receive maximum) belong to the session.
//!
//! Specifications: MQTT 3.1 (IBM, protocol name `MQIsdp`, level 3), OASIS MQTT
//! 3.1.1 (level 4) and OASIS MQTT 5.0 (level 5). Section numbers in comments are
//! those of 3.1.1 unless marked `5.0`.
//!
//! Layout: one file per packet family (`connect`, `publish`, `ack`,
//! `subscribe`, `disconnect`, `auth`), the shared primitives
//! (`primitives`: integers, strings, variable byte integers), the fixed header
//! (`header`), 5.0 properties (`properties`), reason codes (`reason`) and topic
//! rules (`topic`). [`Packet::decode`] and [`Packet::encode`] dispatch on the
//! packet type.
//!
//! Errors: every [`DecodeError`] closes the connection; `reason_code()` gives
//! the 5.0 reason (0x81 malformed, 0x82 protocol error, 0x84 unsupported
//! version, 0x90 invalid PUBLISH topic, 0x95 too large). The encoder refuses
//! (with [`EncodeError`], appending nothing) what the decoder would refuse.
//!
//! Left to the session, which alone knows the direction and the state:
//! - packets in the wrong direction or order (a client sending CONNACK, a
//!   second CONNECT, AUTH outside enhanced authentication, and a PUBLISH from
//!   a client carrying a Subscription Identifier, 5.0 section 3.3.4: the
//!   decoder accepts it because clients decode server PUBLISHes with it);
//! - setting `Limits::version` from the CONNECT, and answering
//!   [`DecodeError::UnsupportedProtocolVersion`] with CONNACK 0x01 / 0x84;
//! - Topic Alias against Topic Alias Maximum and the alias mapping, packet
//!   identifiers in use, Receive Maximum, the peer's Maximum Packet Size
//!   (see [`Publish::encoded_len`]), Maximum QoS and Retain Available;
//! - the Payload Format Indicator against the payload, the Authentication
//!   Method against the CONNECT's, and a DISCONNECT Session Expiry Interval
//!   after a CONNECT with 0.

mod ack;
mod auth;
mod connect;
mod disconnect;
mod error;
mod header;
mod primitives;
mod properties;
mod publish;
mod reason;
mod subscribe;
pub mod topic;

#[cfg(test)]
mod tests;

use bytes::BytesMut;

pub use ack::{PubResponse, UnsubAck};
pub use auth::Auth;
pub use connect::{ConnAck, Connect, LastWill};
pub use disconnect::Disconnect;
pub use error::{DecodeError, EncodeError};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UserProperties, WillProperties,
};
pub use publish::{decode_publish_properties, encode_publish_properties, Publish};
pub use reason::ReasonCode;
pub use subscribe::{RetainHandling, SubAck, Subscribe, SubscriptionOptions, Unsubscribe};

/// Largest remaining length the variable byte integer can express (256 MiB - 1).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Protocol level announced in CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1, protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0, protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// True for MQTT 5.0, the only version with properties and reason codes.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

impl std::fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProtocolVersion::V31 => "3.1",
            ProtocolVersion::V311 => "3.1.1",
            ProtocolVersion::V5 => "5.0",
        })
    }
}

/// Quality of service of a PUBLISH or the maximum granted by a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u8)]
pub enum QoS {
    /// Fire and forget.
    #[default]
    AtMostOnce = 0,
    /// Acknowledged by PUBACK; may arrive more than once.
    AtLeastOnce = 1,
    /// Four-step PUBLISH / PUBREC / PUBREL / PUBCOMP flow; arrives exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// `None` for 3, which no version allows.
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// What the decoder needs to know that is not in the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole packet (fixed header included) accepted, in bytes. A packet
    /// whose fixed header announces more is rejected before its body is read.
    pub max_packet_size: u32,
    /// Version negotiated by CONNECT. CONNECT itself is decoded whatever this is.
    pub version: ProtocolVersion,
    /// Client ids, user names, will topics, topic names and filters holding a
    /// control character (U+0001..U+001F, U+007F..U+009F) are malformed
    /// (a MAY of 3.1.1 section 1.5.3 / 5.0 section 1.5.4). U+0000 always is.
    pub refuse_control_characters: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet_size: MAX_REMAINING_LENGTH as u32 + 5,
            version: ProtocolVersion::V311,
            refuse_control_characters: false,
        }
    }
}

/// Control packet type, the high nibble of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    /// CONNACK, SUBACK, UNSUBACK and PINGRESP: the packets whose direction of
    /// flow is server to client only (3.1.1 section 2.2.1, 5.0 section
    /// 2.1.2). PUBLISH, its acknowledgements, DISCONNECT and AUTH go both ways.
    pub fn sent_by_servers_only(self) -> bool {
        matches!(
            self,
            PacketType::ConnAck | PacketType::SubAck | PacketType::UnsubAck | PacketType::PingResp
        )
    }

    /// The packet type with this number (the high nibble of the first byte);
    /// `None` for 0, which is reserved.
    pub fn from_u8(value: u8) -> Option<PacketType> {
        Some(match value {
            1 => PacketType::Connect,
            2 => PacketType::ConnAck,
            3 => PacketType::Publish,
            4 => PacketType::PubAck,
            5 => PacketType::PubRec,
            6 => PacketType::PubRel,
            7 => PacketType::PubComp,
            8 => PacketType::Subscribe,
            9 => PacketType::SubAck,
            10 => PacketType::Unsubscribe,
            11 => PacketType::UnsubAck,
            12 => PacketType::PingReq,
            13 => PacketType::PingResp,
            14 => PacketType::Disconnect,
            15 => PacketType::Auth,
            _ => return None,
        })
    }
}

impl std::fmt::Display for PacketType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PacketType::Connect => "CONNECT",
            PacketType::ConnAck => "CONNACK",
            PacketType::Publish => "PUBLISH",
            PacketType::PubAck => "PUBACK",
            PacketType::PubRec => "PUBREC",
            PacketType::PubRel => "PUBREL",
            PacketType::PubComp => "PUBCOMP",
            PacketType::Subscribe => "SUBSCRIBE",
            PacketType::SubAck => "SUBACK",
            PacketType::Unsubscribe => "UNSUBSCRIBE",
            PacketType::UnsubAck => "UNSUBACK",
            PacketType::PingReq => "PINGREQ",
            PacketType::PingResp => "PINGRESP",
            PacketType::Disconnect => "DISCONNECT",
            PacketType::Auth => "AUTH",
        })
    }
}

/// One MQTT control packet of any version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResponse),
    PubRec(PubResponse),
    PubRel(PubResponse),
    PubComp(PubResponse),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Decodes one packet from the front of `buf`.
    ///
    /// - `Ok(Some(packet))`: a whole packet was consumed from `buf`.
    /// - `Ok(None)`: `buf` holds only a prefix of a valid packet; nothing is
    ///   consumed; call again when more bytes have arrived.
    /// - `Err(e)`: the bytes can never become a valid packet; the connection must
    ///   be closed (with `e.reason_code()` where the version allows). The fixed
    ///   header is checked, and the announced size against
    ///   `limits.max_packet_size`, before the body is waited for or read.
    ///
    /// PUBLISH payloads are split off `buf` without copying.
    pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Packet>, DecodeError> {
        header::decode_packet(buf, limits)
    }

    /// [`Packet::decode`] for a server reading a client: a packet only servers
    /// send (CONNACK, SUBACK, UNSUBACK, PINGRESP) is a Protocol Error as soon
    /// as its first byte is read, whatever its body: the packet is forbidden
    /// in this direction, not malformed (5.0 section 4.13: 0x82 rather than
    /// 0x81; 3.1.1 closes the connection either way).
    pub fn decode_from_client(
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Packet>, DecodeError> {
        if let Some(packet) = buf.first().and_then(|b| PacketType::from_u8(b >> 4)) {
            if packet.sent_by_servers_only() {
                return Err(DecodeError::ProtocolError {
                    packet,
                    field: "packet type",
                    reason: "is sent by servers, never by clients".into(),
                });
            }
        }
        Packet::decode(buf, limits)
    }

    /// Appends the packet, encoded for `version`, to `buf`, and returns the number
    /// of bytes written. On error nothing is appended. 5.0-only fields
    /// (properties, reason codes other than those 3.1.1 can express) are left out
    /// when encoding for 3.1 / 3.1.1.
    pub fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        header::encode_packet(self, version, buf)
    }

    /// The number of bytes [`Packet::encode`] would append, or its error.
    pub fn encoded_len(&self, version: ProtocolVersion) -> Result<usize, EncodeError> {
        header::encoded_len(self, version)
    }
}
