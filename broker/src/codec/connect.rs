//! CONNECT and CONNACK (3.1.1 sections 3.1, 3.2; 5.0 sections 3.1, 3.2), and
//! the properties of CONNECT, its Will and CONNACK.
//!
//! CONNECT is decoded whatever version was negotiated: it announces its own.
//! Left to the session: what an empty client identifier means, the 3.1 limit
//! of 23 characters, authentication, and the CONNACK answer to an unsupported
//! version ([MQTT-3.1.2-2]: return code 0x01 / reason 0x84, then close).

use bytes::Bytes;
use bytestring::ByteString;

use super::primitives::{Reader, Sink, Writer};
use super::properties::*;
use super::reason::read_reason_code;
use super::{topic, DecodeError, EncodeError, PacketType, ProtocolVersion, QoS, ReasonCode};

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

impl LastWill {
    /// A copy whose strings and bytes are its own: decoded, they are slices
    /// of the connection's read buffer, which a will kept for the whole
    /// connection would keep alive.
    pub fn detached(&self) -> LastWill {
        let text = |s: &ByteString| ByteString::from(String::from(&**s));
        let bytes = |b: &Bytes| Bytes::copy_from_slice(b);
        let p = &self.properties;
        LastWill {
            topic: text(&self.topic),
            payload: bytes(&self.payload),
            qos: self.qos,
            retain: self.retain,
            properties: WillProperties {
                will_delay_interval: p.will_delay_interval,
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                content_type: p.content_type.as_ref().map(text),
                response_topic: p.response_topic.as_ref().map(text),
                correlation_data: p.correlation_data.as_ref().map(bytes),
                user_properties: p
                    .user_properties
                    .iter()
                    .map(|(k, v)| (text(k), text(v)))
                    .collect(),
            },
        }
    }
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

/// Protocol name and level of each version (3.1.1 sections 3.1.2.1-2).
fn protocol_name_and_level(version: ProtocolVersion) -> (&'static str, u8) {
    match version {
        ProtocolVersion::V31 => ("MQIsdp", 3),
        ProtocolVersion::V311 => ("MQTT", 4),
        ProtocolVersion::V5 => ("MQTT", 5),
    }
}

const CLEAN_START: u8 = 0x02;
const WILL_FLAG: u8 = 0x04;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD_FLAG: u8 = 0x40;
const USER_NAME_FLAG: u8 = 0x80;

impl Connect {
    pub(super) fn decode(r: &mut Reader) -> Result<Connect, DecodeError> {
        let name = r.string("protocol name")?;
        let level = r.u8("protocol level")?;
        let protocol = match (&*name, level) {
            ("MQIsdp", 3) => ProtocolVersion::V31,
            ("MQTT", 4) => ProtocolVersion::V311,
            ("MQTT", 5) => ProtocolVersion::V5,
            // [MQTT-3.1.2-1] unknown protocol name, [MQTT-3.1.2-2] unknown level
            _ => {
                return Err(DecodeError::UnsupportedProtocolVersion {
                    name: name.to_string(),
                    level,
                })
            }
        };
        let v5 = protocol.is_v5();
        let flags = r.u8("connect flags")?;
        // [MQTT-3.1.2-3] reserved flag must be 0
        if flags & 0x01 != 0 {
            return Err(r.malformed(
                "connect flags",
                format!("[MQTT-3.1.2-3] reserved bit 0 must be 0, got 0x{flags:02X}"),
            ));
        }
        let will_flag = flags & WILL_FLAG != 0;
        let will_qos = (flags >> 3) & 0x03;
        let will_retain = flags & WILL_RETAIN != 0;
        let password_flag = flags & PASSWORD_FLAG != 0;
        let user_name_flag = flags & USER_NAME_FLAG != 0;
        if !will_flag && will_qos != 0 {
            // [MQTT-3.1.2-13] (5.0 [MQTT-3.1.2-11]) no will, will QoS 0
            return Err(r.malformed(
                "will QoS",
                format!("[MQTT-3.1.2-13] must be 0 without the will flag, got {will_qos}"),
            ));
        }
        if !will_flag && will_retain {
            // [MQTT-3.1.2-15] (5.0 [MQTT-3.1.2-13]) no will, will retain 0
            return Err(r.malformed(
                "will retain",
                "[MQTT-3.1.2-15] must be 0 without the will flag, got 1",
            ));
        }
        // [MQTT-3.1.2-14] (5.0 [MQTT-3.1.2-12]) will QoS 3 is malformed
        let Some(will_qos) = QoS::from_u8(will_qos) else {
            return Err(r.malformed("will QoS", "[MQTT-3.1.2-14] 3 is not a QoS level"));
        };
        // [MQTT-3.1.2-22] a password needs a user name before 5.0, which
        // allows a password alone (5.0 section 3.1.2.9)
        if password_flag && !user_name_flag && !v5 {
            return Err(r.malformed(
                "connect flags",
                format!(
                    "[MQTT-3.1.2-22] password flag set without the user name flag: 0x{flags:02X}"
                ),
            ));
        }
        let keep_alive = r.u16("keep alive")?;
        let properties = if v5 {
            ConnectProperties::decode(r)?
        } else {
            ConnectProperties::default()
        };
        // [MQTT-3.1.3-3] (5.0 [MQTT-3.1.3-3]) the client identifier is present
        let client_id = r.name("client identifier")?;
        let will = if will_flag {
            // 5.0 [MQTT-3.1.2-9] will properties, topic and payload follow
            let properties = if v5 {
                WillProperties::decode(r)?
            } else {
                WillProperties::default()
            };
            let topic = r.name("will topic")?;
            topic::validate_topic_name(&topic).map_err(|error| DecodeError::InvalidTopic {
                packet: PacketType::Connect,
                field: "will topic",
                error,
            })?;
            let payload = r.binary("will payload")?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        // [MQTT-3.1.2-19] the user name is present when its flag is set
        let username = if user_name_flag {
            Some(r.name("user name")?)
        } else {
            None
        };
        // [MQTT-3.1.2-21] the password is present when its flag is set.
        // 3.1 clients may set the flag and send no password (mosquitto
        // accepts that too): no bytes left means no password.
        let password = if password_flag && !(protocol == ProtocolVersion::V31 && r.is_empty()) {
            Some(r.binary("password")?)
        } else {
            None
        };
        Ok(Connect {
            protocol,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        w: &mut Writer<'_, S>,
    ) -> Result<(), EncodeError> {
        if self.protocol != version {
            return Err(w.invalid(
                "protocol",
                format!(
                    "CONNECT for MQTT {} cannot be encoded as MQTT {version}",
                    self.protocol
                ),
            ));
        }
        let v5 = version.is_v5();
        if self.password.is_some() && self.username.is_none() && !v5 {
            return Err(w.invalid("password", "[MQTT-3.1.2-22] a password needs a user name"));
        }
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= WILL_FLAG | ((will.qos as u8) << 3);
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USER_NAME_FLAG;
        }
        if self.password.is_some() {
            flags |= PASSWORD_FLAG;
        }
        let (name, level) = protocol_name_and_level(version);
        w.string("protocol name", name)?;
        w.u8(level);
        w.u8(flags);
        w.u16(self.keep_alive);
        if v5 {
            write_properties(&self.properties, w)?;
        }
        w.string("client identifier", &self.client_id)?;
        if let Some(will) = &self.will {
            if v5 {
                write_properties(&will.properties, w)?;
            }
            w.string("will topic", &will.topic)?;
            w.binary("will payload", &will.payload)?;
        }
        if let Some(username) = &self.username {
            w.string("user name", username)?;
        }
        if let Some(password) = &self.password {
            w.binary("password", password)?;
        }
        Ok(())
    }
}

impl ConnAck {
    pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
        let flags = r.u8("connect acknowledge flags")?;
        let session_present = match version {
            // 3.1: the first byte is reserved and has no session present flag
            ProtocolVersion::V31 => false,
            _ => {
                // [MQTT-3.2.2-1] (5.0 the same) bits 7-1 are reserved
                if flags & 0xFE != 0 {
                    return Err(r.malformed(
                        "connect acknowledge flags",
                        format!("[MQTT-3.2.2-1] bits 7-1 must be 0, got 0x{flags:02X}"),
                    ));
                }
                flags & 0x01 != 0
            }
        };
        let reason_code = if version.is_v5() {
            read_reason_code(r, "reason code")?
        } else {
            let code = r.u8("return code")?;
            // 3.1.1 section 3.2.2.3: 6-255 are reserved
            ReasonCode::from_connack_return_code(code).ok_or_else(|| {
                r.malformed(
                    "return code",
                    format!("{code} is reserved (0-5 are defined)"),
                )
            })?
        };
        // [MQTT-3.2.2-4] (5.0 [MQTT-3.2.2-6]) no session on refusal
        if session_present && reason_code != ReasonCode::Success {
            return Err(r.protocol(
                "session present",
                format!("[MQTT-3.2.2-4] must be 0 with reason code {reason_code:?}"),
            ));
        }
        let properties = if version.is_v5() {
            ConnAckProperties::decode(r)?
        } else {
            ConnAckProperties::default()
        };
        Ok(ConnAck {
            session_present,
            reason_code,
            properties,
        })
    }

    pub(super) fn write<S: Sink>(
        &self,
        version: ProtocolVersion,
        w: &mut Writer<'_, S>,
    ) -> Result<(), EncodeError> {
        if !self.reason_code.is_valid_for(PacketType::ConnAck) {
            return Err(w.invalid(
                "reason code",
                format!("{:?} is not a CONNACK reason code", self.reason_code),
            ));
        }
        if self.session_present && self.reason_code != ReasonCode::Success {
            return Err(w.invalid(
                "session present",
                format!("[MQTT-3.2.2-4] must be false with {:?}", self.reason_code),
            ));
        }
        match version {
            ProtocolVersion::V31 => {
                w.u8(0);
                w.u8(self.reason_code.connack_return_code());
            }
            ProtocolVersion::V311 => {
                w.u8(u8::from(self.session_present));
                w.u8(self.reason_code.connack_return_code());
            }
            ProtocolVersion::V5 => {
                w.u8(u8::from(self.session_present));
                w.u8(self.reason_code.as_u8());
                write_properties(&self.properties, w)?;
            }
        }
        Ok(())
    }
}

impl Properties for ConnectProperties {
    fn write<S: Sink>(&self, w: &mut Writer<'_, S>) -> Result<(), EncodeError> {
        non_zero(w, RECEIVE_MAXIMUM, self.receive_maximum)?;
        non_zero(w, MAXIMUM_PACKET_SIZE, self.maximum_packet_size)?;
        authentication(w, &self.authentication_method, &self.authentication_data)?;
        put_four(w, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_two(w, RECEIVE_MAXIMUM, self.receive_maximum);
        put_four(w, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_two(w, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_flag(
            w,
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
        );
        put_flag(
            w,
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
        );
        put_string(w, AUTHENTICATION_METHOD, &self.authentication_method)?;
        put_binary(w, AUTHENTICATION_DATA, &self.authentication_data)?;
        self.user_properties.write(w)
    }
}

impl ConnectProperties {
    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        const ALLOWED: &[u8] = &[
            SESSION_EXPIRY_INTERVAL,
            RECEIVE_MAXIMUM,
            MAXIMUM_PACKET_SIZE,
            TOPIC_ALIAS_MAXIMUM,
            REQUEST_RESPONSE_INFORMATION,
            REQUEST_PROBLEM_INFORMATION,
            USER_PROPERTY,
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
        ];
        let mut props = PropertyReader::open(r, ALLOWED, &[USER_PROPERTY])?;
        let mut p = ConnectProperties::default();
        while let Some((id, name, value)) = props.next()? {
            match (id, value) {
                (SESSION_EXPIRY_INTERVAL, Value::Four(v)) => p.session_expiry_interval = Some(v),
                (RECEIVE_MAXIMUM, Value::Two(v)) => {
                    p.receive_maximum = Some(props.non_zero_u16(name, v)?)
                }
                (MAXIMUM_PACKET_SIZE, Value::Four(v)) => {
                    p.maximum_packet_size = Some(props.non_zero_u32(name, v)?)
                }
                (TOPIC_ALIAS_MAXIMUM, Value::Two(v)) => p.topic_alias_maximum = Some(v),
                (REQUEST_RESPONSE_INFORMATION, Value::Byte(v)) => {
                    p.request_response_information = Some(props.flag(name, v)?)
                }
                (REQUEST_PROBLEM_INFORMATION, Value::Byte(v)) => {
                    p.request_problem_information = Some(props.flag(name, v)?)
                }
                (USER_PROPERTY, Value::Pair(k, v)) => p.user_properties.push((k, v)),
                (AUTHENTICATION_METHOD, Value::String(v)) => p.authentication_method = Some(v),
                (AUTHENTICATION_DATA, Value::Binary(v)) => p.authentication_data = Some(v),
                _ => return Err(props.mismatch(name)),
            }
        }
        props.check_authentication(&p.authentication_method, &p.authentication_data)?;
        Ok(p)
    }
}

impl Properties for WillProperties {
    fn write<S: Sink>(&self, w: &mut Writer<'_, S>) -> Result<(), EncodeError> {
        put_four(w, WILL_DELAY_INTERVAL, self.will_delay_interval);
        put_flag(w, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        put_four(w, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        put_string(w, CONTENT_TYPE, &self.content_type)?;
        put_string(w, RESPONSE_TOPIC, &self.response_topic)?;
        put_binary(w, CORRELATION_DATA, &self.correlation_data)?;
        self.user_properties.write(w)
    }
}

impl WillProperties {
    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        const ALLOWED: &[u8] = &[
            WILL_DELAY_INTERVAL,
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            USER_PROPERTY,
        ];
        let mut props = PropertyReader::open(r, ALLOWED, &[USER_PROPERTY])?;
        let mut p = WillProperties::default();
        while let Some((id, name, value)) = props.next()? {
            match (id, value) {
                (WILL_DELAY_INTERVAL, Value::Four(v)) => p.will_delay_interval = Some(v),
                (PAYLOAD_FORMAT_INDICATOR, Value::Byte(v)) => {
                    p.payload_format_indicator = Some(props.flag(name, v)?)
                }
                (MESSAGE_EXPIRY_INTERVAL, Value::Four(v)) => p.message_expiry_interval = Some(v),
                (CONTENT_TYPE, Value::String(v)) => p.content_type = Some(v),
                (RESPONSE_TOPIC, Value::String(v)) => {
                    p.response_topic = Some(props.topic(name, v)?)
                }
                (CORRELATION_DATA, Value::Binary(v)) => p.correlation_data = Some(v),
                (USER_PROPERTY, Value::Pair(k, v)) => p.user_properties.push((k, v)),
                _ => return Err(props.mismatch(name)),
            }
        }
        Ok(p)
    }
}

impl Properties for ConnAckProperties {
    fn write<S: Sink>(&self, w: &mut Writer<'_, S>) -> Result<(), EncodeError> {
        non_zero(w, RECEIVE_MAXIMUM, self.receive_maximum)?;
        non_zero(w, MAXIMUM_PACKET_SIZE, self.maximum_packet_size)?;
        if let Some(qos) = self.maximum_qos.filter(|&q| q > 1) {
            return Err(w.invalid("Maximum QoS", format!("must be 0 or 1, got {qos}")));
        }
        authentication(w, &self.authentication_method, &self.authentication_data)?;
        put_four(w, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        put_two(w, RECEIVE_MAXIMUM, self.receive_maximum);
        put_byte(w, MAXIMUM_QOS, self.maximum_qos);
        put_flag(w, RETAIN_AVAILABLE, self.retain_available);
        put_four(w, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        put_string(
            w,
            ASSIGNED_CLIENT_IDENTIFIER,
            &self.assigned_client_identifier,
        )?;
        put_two(w, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        put_string(w, REASON_STRING, &self.reason_string)?;
        put_flag(
            w,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
        );
        put_flag(
            w,
            SUBSCRIPTION_IDENTIFIERS_AVAILABLE,
            self.subscription_identifiers_available,
        );
        put_flag(
            w,
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
        );
        put_two(w, SERVER_KEEP_ALIVE, self.server_keep_alive);
        put_string(w, RESPONSE_INFORMATION, &self.response_information)?;
        put_string(w, SERVER_REFERENCE, &self.server_reference)?;
        put_string(w, AUTHENTICATION_METHOD, &self.authentication_method)?;
        put_binary(w, AUTHENTICATION_DATA, &self.authentication_data)?;
        self.user_properties.write(w)
    }
}

impl ConnAckProperties {
    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        const ALLOWED: &[u8] = &[
            SESSION_EXPIRY_INTERVAL,
            RECEIVE_MAXIMUM,
            MAXIMUM_QOS,
            RETAIN_AVAILABLE,
            MAXIMUM_PACKET_SIZE,
            ASSIGNED_CLIENT_IDENTIFIER,
            TOPIC_ALIAS_MAXIMUM,
            REASON_STRING,
            USER_PROPERTY,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            SUBSCRIPTION_IDENTIFIERS_AVAILABLE,
            SHARED_SUBSCRIPTION_AVAILABLE,
            SERVER_KEEP_ALIVE,
            RESPONSE_INFORMATION,
            SERVER_REFERENCE,
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
        ];
        let mut props = PropertyReader::open(r, ALLOWED, &[USER_PROPERTY])?;
        let mut p = ConnAckProperties::default();
        while let Some((id, name, value)) = props.next()? {
            match (id, value) {
                (SESSION_EXPIRY_INTERVAL, Value::Four(v)) => p.session_expiry_interval = Some(v),
                (RECEIVE_MAXIMUM, Value::Two(v)) => {
                    p.receive_maximum = Some(props.non_zero_u16(name, v)?)
                }
                // 5.0 section 3.2.2.3.4: Maximum QoS other than 0 or 1 is a
                // Protocol Error
                (MAXIMUM_QOS, Value::Byte(v)) => {
                    p.maximum_qos = Some(u8::from(props.flag(name, v)?))
                }
                (RETAIN_AVAILABLE, Value::Byte(v)) => {
                    p.retain_available = Some(props.flag(name, v)?)
                }
                (MAXIMUM_PACKET_SIZE, Value::Four(v)) => {
                    p.maximum_packet_size = Some(props.non_zero_u32(name, v)?)
                }
                (ASSIGNED_CLIENT_IDENTIFIER, Value::String(v)) => {
                    p.assigned_client_identifier = Some(v)
                }
                (TOPIC_ALIAS_MAXIMUM, Value::Two(v)) => p.topic_alias_maximum = Some(v),
                (REASON_STRING, Value::String(v)) => p.reason_string = Some(v),
                (USER_PROPERTY, Value::Pair(k, v)) => p.user_properties.push((k, v)),
                (WILDCARD_SUBSCRIPTION_AVAILABLE, Value::Byte(v)) => {
                    p.wildcard_subscription_available = Some(props.flag(name, v)?)
                }
                (SUBSCRIPTION_IDENTIFIERS_AVAILABLE, Value::Byte(v)) => {
                    p.subscription_identifiers_available = Some(props.flag(name, v)?)
                }
                (SHARED_SUBSCRIPTION_AVAILABLE, Value::Byte(v)) => {
                    p.shared_subscription_available = Some(props.flag(name, v)?)
                }
                (SERVER_KEEP_ALIVE, Value::Two(v)) => p.server_keep_alive = Some(v),
                (RESPONSE_INFORMATION, Value::String(v)) => p.response_information = Some(v),
                (SERVER_REFERENCE, Value::String(v)) => p.server_reference = Some(v),
                (AUTHENTICATION_METHOD, Value::String(v)) => p.authentication_method = Some(v),
                (AUTHENTICATION_DATA, Value::Binary(v)) => p.authentication_data = Some(v),
                _ => return Err(props.mismatch(name)),
            }
        }
        props.check_authentication(&p.authentication_method, &p.authentication_data)?;
        Ok(p)
    }
}
