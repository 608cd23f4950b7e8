//! The fixed header (3.1.1 section 2.2; 5.0 section 2.1) and the dispatch to
//! each packet family.
//!
//! Decoding checks, in this order and before waiting for the body: the packet
//! type, the flags of the first byte, the remaining length (at most four
//! bytes), the whole size against `Limits::max_packet_size`, and the remaining
//! length of packets whose size is fixed. Only then does it wait for the body,
//! split it off the buffer and hand it to the family's decoder, which must
//! consume it exactly.
//!
//! Encoding runs the family's `write` twice: over a [`Counter`] to learn the
//! remaining length (and validate every field, so that nothing is appended
//! on error), then over the buffer.

use bytes::{Buf, BufMut, BytesMut};

use super::primitives::{
    parse_variable_byte_integer, put_variable_byte_integer, variable_byte_integer_len, Counter,
    Reader, Sink, VarInt, Writer,
};
use super::{
    Auth, ConnAck, Connect, DecodeError, Disconnect, EncodeError, Limits, Packet, PacketType,
    ProtocolVersion, PubResponse, Publish, SubAck, Subscribe, UnsubAck, Unsubscribe,
    MAX_REMAINING_LENGTH,
};

pub(super) fn decode_packet(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Packet>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let version = limits.version;
    let packet_type = check_first_byte(first, version)?;
    let (remaining, len_bytes) = match parse_variable_byte_integer(&buf[1..]) {
        VarInt::Value { value, len } => (value as usize, len),
        VarInt::Incomplete => return Ok(None),
        // 3.1.1 section 2.2.3 (5.0 section 1.5.5): at most four bytes
        VarInt::TooLong => {
            return Err(DecodeError::Malformed {
                packet: packet_type,
                field: "remaining length",
                reason: "has a continuation bit in its fourth byte".into(),
            })
        }
    };
    let size = 1 + len_bytes + remaining;
    if size > limits.max_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            packet: packet_type as u8,
            size,
            max: limits.max_packet_size,
        });
    }
    check_remaining_length(packet_type, version, remaining)?;
    if buf.len() < size {
        return Ok(None);
    }
    let mut frame = buf.split_to(size);
    frame.advance(1 + len_bytes);
    let mut r = Reader::new(frame.freeze(), packet_type)
        .refusing_control_characters(limits.refuse_control_characters);
    let packet = match packet_type {
        // CONNECT announces its own version; `limits.version` is not yet known
        PacketType::Connect => Packet::Connect(Box::new(Connect::decode(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(&mut r, version)?),
        PacketType::Publish => Packet::Publish(Publish::decode(&mut r, first & 0x0F, version)?),
        PacketType::PubAck => Packet::PubAck(PubResponse::decode(&mut r, version)?),
        PacketType::PubRec => Packet::PubRec(PubResponse::decode(&mut r, version)?),
        PacketType::PubRel => Packet::PubRel(PubResponse::decode(&mut r, version)?),
        PacketType::PubComp => Packet::PubComp(PubResponse::decode(&mut r, version)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(&mut r, version)?),
        PacketType::SubAck => Packet::SubAck(SubAck::decode(&mut r, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(&mut r, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(&mut r, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(&mut r, version)?),
        PacketType::Auth => Packet::Auth(Auth::decode(&mut r)?),
    };
    r.finish()?;
    Ok(Some(packet))
}

/// The packet type and its flags (3.1.1 section 2.2.2; 5.0 section 2.1.3).
fn check_first_byte(first: u8, version: ProtocolVersion) -> Result<PacketType, DecodeError> {
    let nibble = first >> 4;
    let flags = first & 0x0F;
    let reserved = DecodeError::ReservedPacketType {
        packet_type: nibble,
        version,
    };
    let packet_type = PacketType::from_u8(nibble).ok_or(reserved.clone())?;
    // 3.1.1 section 2.2.1: 15 is reserved; AUTH exists only in 5.0
    if packet_type == PacketType::Auth && !version.is_v5() {
        return Err(reserved);
    }
    let bad_flags = |rule: &str| DecodeError::Malformed {
        packet: packet_type,
        field: "fixed header flags",
        reason: format!("{rule}, got 0b{flags:04b}"),
    };
    match packet_type {
        PacketType::Publish => {
            let qos = (flags >> 1) & 0x03;
            // [MQTT-3.3.1-4] a PUBLISH must not have both QoS bits set
            if qos == 3 {
                return Err(bad_flags("[MQTT-3.3.1-4] QoS 3 is not a QoS level"));
            }
            // [MQTT-3.3.1-2] DUP must be 0 for QoS 0
            if qos == 0 && flags & 0x08 != 0 {
                return Err(bad_flags("[MQTT-3.3.1-2] DUP must be 0 for QoS 0"));
            }
        }
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => {
            // 3.1 sets DUP on retried PUBREL / SUBSCRIBE / UNSUBSCRIBE; the
            // QoS bits are 1 and RETAIN 0 there too
            let checked = if version == ProtocolVersion::V31 {
                flags & 0x07
            } else {
                flags
            };
            // [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1] flags must be 0b0010
            if checked != 0b0010 {
                return Err(bad_flags("[MQTT-2.2.2-1] flags must be 0b0010"));
            }
        }
        // [MQTT-2.2.2-1] (5.0 [MQTT-2.1.3-1]) reserved flags must be 0
        _ if flags != 0 => return Err(bad_flags("[MQTT-2.2.2-1] reserved flags must be 0")),
        _ => {}
    }
    Ok(packet_type)
}

/// The remaining length of packets whose size the specification fixes,
/// checked before waiting for the body.
fn check_remaining_length(
    packet_type: PacketType,
    version: ProtocolVersion,
    remaining: usize,
) -> Result<(), DecodeError> {
    let expected = match packet_type {
        // 3.1.1 sections 3.12.1, 3.13.1 (5.0 the same): no body
        PacketType::PingReq | PacketType::PingResp => 0,
        // 3.1.1 section 3.14.1: DISCONNECT has no body before 5.0
        PacketType::Disconnect if !version.is_v5() => 0,
        // 3.1.1 sections 3.2.1, 3.4.1-3.7.1, 3.11.1: two bytes
        PacketType::ConnAck
        | PacketType::PubAck
        | PacketType::PubRec
        | PacketType::PubRel
        | PacketType::PubComp
        | PacketType::UnsubAck
            if !version.is_v5() =>
        {
            2
        }
        _ => return Ok(()),
    };
    if remaining != expected {
        return Err(DecodeError::Malformed {
            packet: packet_type,
            field: "remaining length",
            reason: format!("must be {expected} in MQTT {version}, got {remaining}"),
        });
    }
    Ok(())
}

/// The first byte: packet type and flags.
fn first_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(p) => (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    ((packet.packet_type() as u8) << 4) | flags
}

/// Writes the variable header and payload of `packet` (everything after the
/// remaining length).
fn write_body<S: Sink>(
    packet: &Packet,
    version: ProtocolVersion,
    w: &mut Writer<'_, S>,
) -> Result<(), EncodeError> {
    match packet {
        Packet::Connect(c) => c.write(version, w),
        Packet::ConnAck(c) => c.write(version, w),
        Packet::Publish(p) => p.write(version, w),
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            a.write(version, w)
        }
        Packet::Subscribe(s) => s.write(version, w),
        Packet::SubAck(s) => s.write(version, w),
        Packet::Unsubscribe(u) => u.write(version, w),
        Packet::UnsubAck(u) => u.write(version, w),
        Packet::PingReq | Packet::PingResp => Ok(()),
        Packet::Disconnect(d) => d.write(version, w),
        Packet::Auth(a) => {
            if !version.is_v5() {
                return Err(w.invalid(
                    "packet type",
                    format!("AUTH does not exist in MQTT {version}"),
                ));
            }
            a.write(w)
        }
    }
}

/// Size of the whole packet whose body is `remaining` bytes, or an error if
/// the remaining length cannot express it.
fn packet_size(packet_type: PacketType, remaining: usize) -> Result<usize, EncodeError> {
    if remaining > MAX_REMAINING_LENGTH {
        return Err(EncodeError::PacketTooLarge {
            packet: packet_type,
            size: 1 + 4 + remaining,
        });
    }
    Ok(1 + variable_byte_integer_len(remaining) + remaining)
}

/// Size of `packet` encoded for `version`, fixed header included.
pub(super) fn encoded_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    write_body(
        packet,
        version,
        &mut Writer::new(&mut counter, packet.packet_type()),
    )?;
    packet_size(packet.packet_type(), counter.0)
}

/// Size of a PUBLISH encoded for `version`, without building a [`Packet`].
pub(super) fn publish_encoded_len(
    publish: &Publish,
    version: ProtocolVersion,
) -> Result<usize, EncodeError> {
    let mut counter = Counter::default();
    publish.write(version, &mut Writer::new(&mut counter, PacketType::Publish))?;
    packet_size(PacketType::Publish, counter.0)
}

pub(super) fn encode_packet(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let packet_type = packet.packet_type();
    // First pass: validates every field and measures; appends nothing.
    let mut counter = Counter::default();
    write_body(packet, version, &mut Writer::new(&mut counter, packet_type))?;
    let remaining = counter.0;
    let size = packet_size(packet_type, remaining)?;
    let start = buf.len();
    buf.reserve(size);
    buf.put_u8(first_byte(packet));
    let mut len = [0u8; 4];
    let n = put_variable_byte_integer(&mut len, remaining as u32);
    buf.put_slice(&len[..n]);
    if let Err(e) = write_body(packet, version, &mut Writer::new(buf, packet_type)) {
        buf.truncate(start);
        return Err(e);
    }
    Ok(buf.len() - start)
}
