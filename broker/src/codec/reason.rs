//! Reason codes (5.0 section 2.4) and their 3.1.1 equivalents: which codes
//! each packet type may carry, and the mapping to and from the 3.1.1 CONNACK
//! and SUBACK return codes.

use super::primitives::{Reader, Sink, Writer};
use super::{DecodeError, EncodeError, PacketType};

/// Every MQTT 5.0 reason code. Values that the specification gives several
/// names (0x00 is Success, Normal disconnection and Granted QoS 0) have one
/// variant here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum ReasonCode {
    /// 0x00: Success / Normal disconnection / Granted QoS 0.
    #[default]
    Success = 0x00,
    GrantedQoS1 = 0x01,
    GrantedQoS2 = 0x02,
    DisconnectWithWillMessage = 0x04,
    NoMatchingSubscribers = 0x10,
    NoSubscriptionExisted = 0x11,
    ContinueAuthentication = 0x18,
    ReAuthenticate = 0x19,
    UnspecifiedError = 0x80,
    MalformedPacket = 0x81,
    ProtocolError = 0x82,
    ImplementationSpecificError = 0x83,
    UnsupportedProtocolVersion = 0x84,
    ClientIdentifierNotValid = 0x85,
    BadUserNameOrPassword = 0x86,
    NotAuthorized = 0x87,
    ServerUnavailable = 0x88,
    ServerBusy = 0x89,
    Banned = 0x8A,
    ServerShuttingDown = 0x8B,
    BadAuthenticationMethod = 0x8C,
    KeepAliveTimeout = 0x8D,
    SessionTakenOver = 0x8E,
    TopicFilterInvalid = 0x8F,
    TopicNameInvalid = 0x90,
    PacketIdentifierInUse = 0x91,
    PacketIdentifierNotFound = 0x92,
    ReceiveMaximumExceeded = 0x93,
    TopicAliasInvalid = 0x94,
    PacketTooLarge = 0x95,
    MessageRateTooHigh = 0x96,
    QuotaExceeded = 0x97,
    AdministrativeAction = 0x98,
    PayloadFormatInvalid = 0x99,
    RetainNotSupported = 0x9A,
    QoSNotSupported = 0x9B,
    UseAnotherServer = 0x9C,
    ServerMoved = 0x9D,
    SharedSubscriptionsNotSupported = 0x9E,
    ConnectionRateExceeded = 0x9F,
    MaximumConnectTime = 0xA0,
    SubscriptionIdentifiersNotSupported = 0xA1,
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// The reason code with this value, `None` for values 5.0 does not define.
    pub fn from_u8(value: u8) -> Option<ReasonCode> {
        use ReasonCode::*;
        Some(match value {
            0x00 => Success,
            0x01 => GrantedQoS1,
            0x02 => GrantedQoS2,
            0x04 => DisconnectWithWillMessage,
            0x10 => NoMatchingSubscribers,
            0x11 => NoSubscriptionExisted,
            0x18 => ContinueAuthentication,
            0x19 => ReAuthenticate,
            0x80 => UnspecifiedError,
            0x81 => MalformedPacket,
            0x82 => ProtocolError,
            0x83 => ImplementationSpecificError,
            0x84 => UnsupportedProtocolVersion,
            0x85 => ClientIdentifierNotValid,
            0x86 => BadUserNameOrPassword,
            0x87 => NotAuthorized,
            0x88 => ServerUnavailable,
            0x89 => ServerBusy,
            0x8A => Banned,
            0x8B => ServerShuttingDown,
            0x8C => BadAuthenticationMethod,
            0x8D => KeepAliveTimeout,
            0x8E => SessionTakenOver,
            0x8F => TopicFilterInvalid,
            0x90 => TopicNameInvalid,
            0x91 => PacketIdentifierInUse,
            0x92 => PacketIdentifierNotFound,
            0x93 => ReceiveMaximumExceeded,
            0x94 => TopicAliasInvalid,
            0x95 => PacketTooLarge,
            0x96 => MessageRateTooHigh,
            0x97 => QuotaExceeded,
            0x98 => AdministrativeAction,
            0x99 => PayloadFormatInvalid,
            0x9A => RetainNotSupported,
            0x9B => QoSNotSupported,
            0x9C => UseAnotherServer,
            0x9D => ServerMoved,
            0x9E => SharedSubscriptionsNotSupported,
            0x9F => ConnectionRateExceeded,
            0xA0 => MaximumConnectTime,
            0xA1 => SubscriptionIdentifiersNotSupported,
            0xA2 => WildcardSubscriptionsNotSupported,
            _ => return None,
        })
    }

    /// The byte on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// True for failures (0x80 and above, 5.0 section 2.4).
    pub fn is_error(self) -> bool {
        self.as_u8() >= 0x80
    }

    /// Whether 5.0 allows this reason code in a packet of type `packet`:
    /// CONNACK 5.0 section 3.2.2.2, PUBACK 3.4.2.1, PUBREC 3.5.2.1, PUBREL
    /// 3.6.2.1, PUBCOMP 3.7.2.1, SUBACK 3.9.3, UNSUBACK 3.11.3, DISCONNECT
    /// 3.14.2.1, AUTH 3.15.2.1. Packets without a reason code allow none.
    pub fn is_valid_for(self, packet: PacketType) -> bool {
        use ReasonCode::*;
        match packet {
            PacketType::ConnAck => matches!(
                self,
                Success
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | UnsupportedProtocolVersion
                    | ClientIdentifierNotValid
                    | BadUserNameOrPassword
                    | NotAuthorized
                    | ServerUnavailable
                    | ServerBusy
                    | Banned
                    | BadAuthenticationMethod
                    | TopicNameInvalid
                    | PacketTooLarge
                    | QuotaExceeded
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | ConnectionRateExceeded
            ),
            PacketType::PubAck | PacketType::PubRec => matches!(
                self,
                Success
                    | NoMatchingSubscribers
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicNameInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | PayloadFormatInvalid
            ),
            PacketType::PubRel | PacketType::PubComp => {
                matches!(self, Success | PacketIdentifierNotFound)
            }
            PacketType::SubAck => matches!(
                self,
                Success
                    | GrantedQoS1
                    | GrantedQoS2
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | SharedSubscriptionsNotSupported
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::UnsubAck => matches!(
                self,
                Success
                    | NoSubscriptionExisted
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
            ),
            PacketType::Disconnect => matches!(
                self,
                Success
                    | DisconnectWithWillMessage
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | ServerBusy
                    | ServerShuttingDown
                    | KeepAliveTimeout
                    | SessionTakenOver
                    | TopicFilterInvalid
                    | TopicNameInvalid
                    | ReceiveMaximumExceeded
                    | TopicAliasInvalid
                    | PacketTooLarge
                    | MessageRateTooHigh
                    | QuotaExceeded
                    | AdministrativeAction
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | SharedSubscriptionsNotSupported
                    | ConnectionRateExceeded
                    | MaximumConnectTime
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::Auth => matches!(self, Success | ContinueAuthentication | ReAuthenticate),
            _ => false,
        }
    }

    /// The 3.1 / 3.1.1 CONNACK return code (3.1.1 section 3.2.2.3) for this
    /// reason code. The six codes 3.1.1 has map one to one; every other
    /// reason maps to the closest of them:
    ///
    /// | reason code | return code |
    /// | --- | --- |
    /// | Success | 0 Connection Accepted |
    /// | UnsupportedProtocolVersion | 1 unacceptable protocol version |
    /// | ClientIdentifierNotValid | 2 identifier rejected |
    /// | BadUserNameOrPassword, BadAuthenticationMethod | 4 bad user name or password |
    /// | NotAuthorized, Banned | 5 not authorized |
    /// | anything else (ServerUnavailable, ServerBusy, QuotaExceeded, UseAnotherServer, MalformedPacket, ...) | 3 server unavailable |
    pub fn connack_return_code(self) -> u8 {
        use ReasonCode::*;
        match self {
            Success => 0,
            UnsupportedProtocolVersion => 1,
            ClientIdentifierNotValid => 2,
            BadUserNameOrPassword | BadAuthenticationMethod => 4,
            NotAuthorized | Banned => 5,
            _ => 3,
        }
    }

    /// The reason code for a 3.1 / 3.1.1 CONNACK return code; `None` for the
    /// reserved values 6-255.
    pub fn from_connack_return_code(code: u8) -> Option<ReasonCode> {
        use ReasonCode::*;
        Some(match code {
            0 => Success,
            1 => UnsupportedProtocolVersion,
            2 => ClientIdentifierNotValid,
            3 => ServerUnavailable,
            4 => BadUserNameOrPassword,
            5 => NotAuthorized,
            _ => return None,
        })
    }

    /// The 3.1 / 3.1.1 SUBACK return code (3.1.1 section 3.9.3): the granted
    /// QoS 0x00-0x02, or 0x80 for any failure. `None` for codes that are
    /// neither a grant nor a failure (not valid in a SUBACK).
    pub fn suback_return_code(self) -> Option<u8> {
        match self {
            ReasonCode::Success => Some(0x00),
            ReasonCode::GrantedQoS1 => Some(0x01),
            ReasonCode::GrantedQoS2 => Some(0x02),
            code if code.is_error() => Some(0x80),
            _ => None,
        }
    }

    /// The reason code for a 3.1 / 3.1.1 SUBACK return code: 0x00-0x02 are
    /// the granted QoS, 0x80 is UnspecifiedError; `None` for anything else.
    pub fn from_suback_return_code(code: u8) -> Option<ReasonCode> {
        match code {
            0x00 => Some(ReasonCode::Success),
            0x01 => Some(ReasonCode::GrantedQoS1),
            0x02 => Some(ReasonCode::GrantedQoS2),
            0x80 => Some(ReasonCode::UnspecifiedError),
            _ => None,
        }
    }
}

/// Reads a 5.0 reason code and checks that the packet being read allows it.
pub(super) fn read_reason_code(
    r: &mut Reader,
    field: &'static str,
) -> Result<ReasonCode, DecodeError> {
    let value = r.u8(field)?;
    let Some(code) = ReasonCode::from_u8(value) else {
        return Err(r.malformed(field, format!("0x{value:02X} is not a reason code")));
    };
    // 5.0 [MQTT-3.2.2-7], [MQTT-3.4.2-1], [MQTT-3.5.2-1], ...: the sender
    // MUST use one of the packet's reason codes
    if !code.is_valid_for(r.packet()) {
        return Err(r.protocol(
            field,
            format!("0x{value:02X} ({code:?}) is not allowed in {}", r.packet()),
        ));
    }
    Ok(code)
}

/// Refuses to encode a reason code the packet does not allow.
pub(super) fn check_reason_code<S: Sink>(
    w: &Writer<'_, S>,
    code: ReasonCode,
) -> Result<(), EncodeError> {
    if !code.is_valid_for(w.packet()) {
        return Err(w.invalid(
            "reason code",
            format!(
                "0x{:02X} ({code:?}) is not allowed in {}",
                code.as_u8(),
                w.packet()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_u8_inverts_as_u8_for_every_defined_value() {
        let mut defined = 0;
        for value in 0..=255u8 {
            if let Some(code) = ReasonCode::from_u8(value) {
                assert_eq!(code.as_u8(), value);
                defined += 1;
            }
        }
        assert_eq!(defined, 43);
    }

    #[test]
    fn connack_return_codes_map_both_ways() {
        for code in 0..=5u8 {
            let reason = ReasonCode::from_connack_return_code(code).unwrap();
            assert_eq!(reason.connack_return_code(), code);
            assert!(reason.is_valid_for(PacketType::ConnAck));
        }
        assert_eq!(ReasonCode::from_connack_return_code(6), None);
        assert_eq!(ReasonCode::ServerBusy.connack_return_code(), 3);
        assert_eq!(ReasonCode::Banned.connack_return_code(), 5);
        assert_eq!(ReasonCode::BadAuthenticationMethod.connack_return_code(), 4);
        assert_eq!(ReasonCode::MalformedPacket.connack_return_code(), 3);
    }

    #[test]
    fn suback_return_codes_map_both_ways() {
        for code in [0x00, 0x01, 0x02, 0x80] {
            let reason = ReasonCode::from_suback_return_code(code).unwrap();
            assert_eq!(reason.suback_return_code(), Some(code));
        }
        assert_eq!(ReasonCode::NotAuthorized.suback_return_code(), Some(0x80));
        assert_eq!(ReasonCode::NoMatchingSubscribers.suback_return_code(), None);
        assert_eq!(ReasonCode::from_suback_return_code(0x03), None);
    }

    #[test]
    fn reason_codes_are_checked_per_packet_type_5_0_section_2_4() {
        assert!(ReasonCode::NoMatchingSubscribers.is_valid_for(PacketType::PubAck));
        assert!(!ReasonCode::NoMatchingSubscribers.is_valid_for(PacketType::PubRel));
        assert!(ReasonCode::PacketIdentifierNotFound.is_valid_for(PacketType::PubComp));
        assert!(!ReasonCode::GrantedQoS1.is_valid_for(PacketType::UnsubAck));
        assert!(ReasonCode::ReAuthenticate.is_valid_for(PacketType::Auth));
        assert!(!ReasonCode::ReAuthenticate.is_valid_for(PacketType::Disconnect));
        assert!(ReasonCode::DisconnectWithWillMessage.is_valid_for(PacketType::Disconnect));
        assert!(!ReasonCode::Success.is_valid_for(PacketType::Publish));
    }
}
