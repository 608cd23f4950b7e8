//! SUBSCRIBE, SUBACK and UNSUBSCRIBE (3.1.1 sections 3.8-3.10; 5.0 sections 3.8-3.10).

use bytestring::ByteString;

use super::{AckProperties, QoS, ReasonCode, SubscribeProperties, UserProperties};

/// 5.0 Retain Handling subscription option (5.0 section 3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe,
    /// 1: send retained messages only if the subscription did not exist.
    SendAtSubscribeIfNew,
    /// 2: do not send retained messages.
    DoNotSend,
}

/// Options of one topic filter in SUBSCRIBE. For 3.1 / 3.1.1 only `qos` is on
/// the wire; the others keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    /// At least one [MQTT-3.8.3-3]. Filters are checked for UTF-8 and for the
    /// wildcard rules of `topic::validate_filter`.
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
    pub properties: SubscribeProperties,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    /// One per filter. For 3.1.1 GrantedQoS0/1/2 (0x00-0x02) or any failure,
    /// encoded as 0x80; 3.1 has no failure code.
    pub reason_codes: Vec<ReasonCode>,
    pub properties: AckProperties,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    /// At least one [MQTT-3.10.3-2].
    pub filters: Vec<ByteString>,
    pub user_properties: UserProperties,
}
