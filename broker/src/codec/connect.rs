//! CONNECT and CONNACK (3.1.1 sections 3.1, 3.2; 5.0 sections 3.1, 3.2).

use bytes::Bytes;
use bytestring::ByteString;

use super::{ConnAckProperties, ConnectProperties, ProtocolVersion, QoS, ReasonCode, WillProperties};

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// From the protocol name and level: `MQIsdp`/3, `MQTT`/4 or `MQTT`/5.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1, 3.1.1) or Clean Start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 disables keep alive.
    pub keep_alive: u16,
    /// May be empty; the session decides what an empty id means.
    pub client_id: ByteString,
    pub will: Option<LastWill>,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    /// Always default for 3.1 / 3.1.1.
    pub properties: ConnectProperties,
}

/// The Will Message carried by CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Always default for 3.1 / 3.1.1.
    pub properties: WillProperties,
}

/// CONNACK. For 3.1 / 3.1.1 the reason code is encoded as the return code:
/// Success 0, UnsupportedProtocolVersion 1, ClientIdentifierNotValid 2,
/// ServerUnavailable 3, BadUserNameOrPassword 4, NotAuthorized 5; any other
/// reason is encoded as the closest of these (see `ReasonCode::connack_return_code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Always false when encoding for 3.1, which has no such flag.
    pub session_present: bool,
    pub reason_code: ReasonCode,
    /// Always default for 3.1 / 3.1.1.
    pub properties: ConnAckProperties,
}
