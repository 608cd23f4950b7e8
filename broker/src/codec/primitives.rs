//! Data representations (3.1.1 section 1.5; 5.0 section 1.5): two- and
//! four-byte integers, the variable byte integer, UTF-8 strings, binary data
//! and string pairs.
//!
//! Decoding goes through [`Reader`], which owns the body of one packet (a
//! `Bytes`, so strings, binary data and payloads are split off without
//! copying) and names the packet and the field in every error. A length read
//! from the wire is checked against the bytes left before anything is split
//! off or allocated.
//!
//! Encoding goes through [`Writer`] over a [`Sink`]: the same code runs once
//! over a [`Counter`] (which measures and validates, appending nothing) and
//! then over the `BytesMut`, so lengths are known before they are written.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{DecodeError, EncodeError, PacketType, MAX_REMAINING_LENGTH};

/// Where the first control character (U+0001..U+001F, U+007F..U+009F) of
/// well-formed UTF-8 `bytes` starts. A byte scan, not a char decode (it runs
/// on every topic name): in UTF-8 those are the bytes 0x01..0x1F and 0x7F,
/// and U+0080..U+009F are 0xC2 followed by 0x80..0x9F.
fn control_character_at(bytes: &[u8]) -> Option<usize> {
    // Almost every name has none: a pass without early exit, which the
    // compiler vectorizes, decides that; only a name with a candidate byte
    // is scanned again for the exact position.
    let candidate = bytes.iter().fold(false, |found, &b| {
        found | (b < 0x20) | (b == 0x7F) | (b == 0xC2)
    });
    if !candidate {
        return None;
    }
    bytes.iter().enumerate().position(|(i, &b)| {
        b < 0x20
            || b == 0x7F
            || (b == 0xC2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9F).contains(n)))
    })
}

/// Largest value of a variable byte integer (5.0 section 1.5.5).
pub(super) const MAX_VARIABLE_BYTE_INTEGER: u32 = MAX_REMAINING_LENGTH as u32;

/// The unread rest of one packet.
pub(super) struct Reader {
    buf: Bytes,
    packet: PacketType,
    /// [`Limits::refuse_control_characters`](super::Limits): names read with
    /// [`Reader::name`] must not hold control characters.
    refuse_control_characters: bool,
}

impl Reader {
    pub(super) fn new(buf: Bytes, packet: PacketType) -> Self {
        Reader {
            buf,
            packet,
            refuse_control_characters: false,
        }
    }

    /// Names read by [`Reader::name`] holding a control character are
    /// malformed.
    pub(super) fn refusing_control_characters(mut self, refuse: bool) -> Self {
        self.refuse_control_characters = refuse;
        self
    }

    pub(super) fn packet(&self) -> PacketType {
        self.packet
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// What was not read, for callers that read a prefix of a larger buffer.
    pub(super) fn into_rest(self) -> Bytes {
        self.buf
    }

    /// A Malformed Packet error for `field` of this packet.
    pub(super) fn malformed(&self, field: &'static str, reason: impl Into<String>) -> DecodeError {
        DecodeError::Malformed {
            packet: self.packet,
            field,
            reason: reason.into(),
        }
    }

    /// A Protocol Error for `field` of this packet.
    pub(super) fn protocol(&self, field: &'static str, reason: impl Into<String>) -> DecodeError {
        DecodeError::ProtocolError {
            packet: self.packet,
            field,
            reason: reason.into(),
        }
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            return Err(self.malformed(
                field,
                format!(
                    "needs {n} bytes, only {} left in the packet",
                    self.buf.len()
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    /// Two Byte Integer, big-endian (section 1.5.2).
    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    /// Four Byte Integer, big-endian (5.0 section 1.5.3).
    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    /// Variable Byte Integer (5.0 section 1.5.5), at most four bytes.
    pub(super) fn variable_byte_integer(
        &mut self,
        field: &'static str,
    ) -> Result<u32, DecodeError> {
        match parse_variable_byte_integer(&self.buf) {
            VarInt::Value { value, len } => {
                self.buf.advance(len);
                Ok(value)
            }
            VarInt::Incomplete => Err(self.malformed(
                field,
                "variable byte integer runs past the end of the packet",
            )),
            VarInt::TooLong => Err(self.malformed(
                field,
                "variable byte integer has a continuation bit in its fourth byte",
            )),
        }
    }

    /// `n` bytes, split off without copying.
    pub(super) fn take(&mut self, n: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, field)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything left, split off without copying (the PUBLISH payload).
    pub(super) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary Data: a two-byte length, then that many bytes (section 1.5.6).
    pub(super) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(field)? as usize;
        self.take(len, field)
    }

    /// UTF-8 Encoded String (section 1.5.3; 5.0 section 1.5.4).
    pub(super) fn string(&mut self, field: &'static str) -> Result<ByteString, DecodeError> {
        let bytes = self.binary(field)?;
        // [MQTT-1.5.3-2] (5.0 [MQTT-1.5.4-2]) no U+0000
        if let Some(at) = bytes.iter().position(|&b| b == 0) {
            return Err(self.malformed(
                field,
                format!("contains U+0000 at byte {at}: {:?}", lossy_prefix(&bytes)),
            ));
        }
        // [MQTT-1.5.3-1] (5.0 [MQTT-1.5.4-1]) well-formed UTF-8, no
        // surrogates. The clone is a reference count, kept for the message.
        ByteString::try_from(bytes.clone()).map_err(|e| {
            self.malformed(
                field,
                format!("is not well-formed UTF-8 ({e}): {:?}", lossy_prefix(&bytes)),
            )
        })
    }

    /// A UTF-8 string that names something: a client id, a user name, a topic
    /// name or filter. When the reader refuses control characters, U+0001..
    /// U+001F and U+007F..U+009F (Unicode's `Cc`, `char::is_control`) make it
    /// malformed: the specification says they SHOULD NOT be sent and a
    /// receiver MAY treat them as a Malformed Packet (3.1.1 section 1.5.3,
    /// 5.0 section 1.5.4).
    pub(super) fn name(&mut self, field: &'static str) -> Result<ByteString, DecodeError> {
        let s = self.string(field)?;
        if self.refuse_control_characters {
            if let Some(at) = control_character_at(s.as_bytes()) {
                let c = s[at..].chars().next().map_or(0, u32::from);
                return Err(self.malformed(
                    field,
                    format!(
                        "contains the control character U+{c:04X} at byte {at}: {:?}",
                        lossy_prefix(s.as_bytes())
                    ),
                ));
            }
        }
        Ok(s)
    }

    /// UTF-8 String Pair (5.0 section 1.5.7): name, then value.
    pub(super) fn string_pair(
        &mut self,
        field: &'static str,
    ) -> Result<(ByteString, ByteString), DecodeError> {
        let name = self.string(field)?;
        let value = self.string(field)?;
        Ok((name, value))
    }

    /// [MQTT-2.3.1-1] (5.0 [MQTT-2.2.1-3]) packet identifiers are non-zero.
    pub(super) fn packet_id(&mut self) -> Result<u16, DecodeError> {
        let id = self.u16("packet identifier")?;
        if id == 0 {
            return Err(self.protocol("packet identifier", "must be non-zero, got 0"));
        }
        Ok(id)
    }

    /// A reader over the next `len` bytes, which this one skips.
    pub(super) fn sub_reader(
        &mut self,
        len: usize,
        field: &'static str,
    ) -> Result<Reader, DecodeError> {
        if self.buf.len() < len {
            return Err(self.malformed(
                field,
                format!(
                    "is {len} bytes, but only {} are left in the packet",
                    self.buf.len()
                ),
            ));
        }
        Ok(Reader::new(self.buf.split_to(len), self.packet)
            .refusing_control_characters(self.refuse_control_characters))
    }

    /// The packet must end where its last field ends.
    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        if !self.buf.is_empty() {
            return Err(self.malformed(
                "remaining length",
                format!("{} bytes left over after the last field", self.buf.len()),
            ));
        }
        Ok(())
    }
}

/// At most 32 bytes of `bytes`, for error messages.
fn lossy_prefix(bytes: &[u8]) -> String {
    let end = bytes.len().min(32);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Outcome of reading a variable byte integer from the front of a slice.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum VarInt {
    /// The value and how many bytes it took.
    Value { value: u32, len: usize },
    /// The slice ends before the last byte.
    Incomplete,
    /// The fourth byte has its continuation bit set.
    TooLong,
}

/// Reads a variable byte integer (3.1.1 section 2.2.3; 5.0 section 1.5.5).
/// Non-minimal encodings (`0x80 0x00` for 0) are accepted: 5.0
/// [MQTT-1.5.5-1] binds the sender, and the value is unambiguous.
pub(super) fn parse_variable_byte_integer(bytes: &[u8]) -> VarInt {
    let mut value = 0u32;
    for (i, &byte) in bytes.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return VarInt::Value { value, len: i + 1 };
        }
    }
    if bytes.len() >= 4 {
        VarInt::TooLong
    } else {
        VarInt::Incomplete
    }
}

/// Bytes the variable byte integer encoding of `value` takes.
pub(super) fn variable_byte_integer_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Where encoded bytes go: a [`Counter`] or a `BytesMut`.
pub(super) trait Sink {
    fn put_bytes(&mut self, bytes: &[u8]);
}

/// A sink that only counts.
#[derive(Default)]
pub(super) struct Counter(pub usize);

impl Sink for Counter {
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

impl Sink for BytesMut {
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.put_slice(bytes);
    }
}

/// Writes the fields of one packet to a sink, naming the packet and field in
/// every error.
pub(super) struct Writer<'a, S: Sink> {
    sink: &'a mut S,
    packet: PacketType,
}

impl<'a, S: Sink> Writer<'a, S> {
    pub(super) fn new(sink: &'a mut S, packet: PacketType) -> Self {
        Writer { sink, packet }
    }

    pub(super) fn packet(&self) -> PacketType {
        self.packet
    }

    pub(super) fn invalid(&self, field: &'static str, reason: impl Into<String>) -> EncodeError {
        EncodeError::Invalid {
            packet: self.packet,
            field,
            reason: reason.into(),
        }
    }

    pub(super) fn u8(&mut self, value: u8) {
        self.sink.put_bytes(&[value]);
    }

    pub(super) fn u16(&mut self, value: u16) {
        self.sink.put_bytes(&value.to_be_bytes());
    }

    pub(super) fn u32(&mut self, value: u32) {
        self.sink.put_bytes(&value.to_be_bytes());
    }

    pub(super) fn raw(&mut self, bytes: &[u8]) {
        self.sink.put_bytes(bytes);
    }

    pub(super) fn variable_byte_integer(
        &mut self,
        field: &'static str,
        value: usize,
    ) -> Result<(), EncodeError> {
        if value > MAX_VARIABLE_BYTE_INTEGER as usize {
            return Err(self.invalid(
                field,
                format!("{value} is over the variable byte integer maximum of 268,435,455"),
            ));
        }
        let mut out = [0u8; 4];
        let len = put_variable_byte_integer(&mut out, value as u32);
        self.sink.put_bytes(&out[..len]);
        Ok(())
    }

    /// Binary Data: two-byte length, then the bytes.
    pub(super) fn binary(&mut self, field: &'static str, bytes: &[u8]) -> Result<(), EncodeError> {
        let Ok(len) = u16::try_from(bytes.len()) else {
            return Err(self.invalid(field, format!("is {} bytes long, over 65,535", bytes.len())));
        };
        self.u16(len);
        self.sink.put_bytes(bytes);
        Ok(())
    }

    /// UTF-8 Encoded String. `&str` is well-formed UTF-8 already; U+0000 is
    /// refused so that what we send is what we would accept.
    pub(super) fn string(&mut self, field: &'static str, s: &str) -> Result<(), EncodeError> {
        if s.as_bytes().contains(&0) {
            return Err(self.invalid(field, format!("contains U+0000: {s:?}")));
        }
        self.binary(field, s.as_bytes())
    }

    pub(super) fn packet_id(&mut self, id: u16) -> Result<(), EncodeError> {
        if id == 0 {
            return Err(self.invalid("packet identifier", "must be non-zero, got 0"));
        }
        self.u16(id);
        Ok(())
    }
}

/// Writes `value` (at most [`MAX_VARIABLE_BYTE_INTEGER`]) into `out`, returns
/// the number of bytes used.
pub(super) fn put_variable_byte_integer(out: &mut [u8; 4], mut value: u32) -> usize {
    let mut len = 0;
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out[len] = byte;
        len += 1;
        if value == 0 || len == 4 {
            return len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &'static [u8]) -> Reader {
        Reader::new(Bytes::from_static(bytes), PacketType::Publish)
    }

    #[test]
    fn variable_byte_integer_boundaries_follow_5_0_table_1_1() {
        let cases: [(&[u8], u32); 8] = [
            (&[0x00], 0),
            (&[0x7F], 127),
            (&[0x80, 0x01], 128),
            (&[0xFF, 0x7F], 16_383),
            (&[0x80, 0x80, 0x01], 16_384),
            (&[0xFF, 0xFF, 0x7F], 2_097_151),
            (&[0x80, 0x80, 0x80, 0x01], 2_097_152),
            (&[0xFF, 0xFF, 0xFF, 0x7F], 268_435_455),
        ];
        for (bytes, value) in cases {
            assert_eq!(
                parse_variable_byte_integer(bytes),
                VarInt::Value {
                    value,
                    len: bytes.len()
                }
            );
            let mut out = [0u8; 4];
            let len = put_variable_byte_integer(&mut out, value);
            assert_eq!(&out[..len], bytes);
            assert_eq!(variable_byte_integer_len(value as usize), bytes.len());
        }
    }

    #[test]
    fn variable_byte_integer_over_four_bytes_is_malformed() {
        assert_eq!(
            parse_variable_byte_integer(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            VarInt::TooLong
        );
        assert_eq!(
            parse_variable_byte_integer(&[0xFF, 0xFF]),
            VarInt::Incomplete
        );
        assert_eq!(parse_variable_byte_integer(&[]), VarInt::Incomplete);
    }

    #[test]
    fn strings_must_be_well_formed_utf8_mqtt_1_5_3_1() {
        // length 3, then an encoded surrogate U+D800
        let err = reader(&[0x00, 0x03, 0xED, 0xA0, 0x80])
            .string("topic name")
            .unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Malformed {
                    field: "topic name",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn strings_must_not_contain_null_mqtt_1_5_3_2() {
        let err = reader(&[0x00, 0x03, b'a', 0x00, b'b'])
            .string("client identifier")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PUBLISH client identifier: contains U+0000 at byte 1: \"a\\0b\""
        );
    }

    #[test]
    fn a_length_longer_than_the_packet_is_malformed_before_allocating() {
        let err = reader(&[0xFF, 0xFF, b'a'])
            .binary("correlation data")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PUBLISH correlation data: needs 65535 bytes, only 1 left in the packet"
        );
    }

    #[test]
    fn strings_and_binary_over_65535_bytes_cannot_be_encoded() {
        let mut sink = Counter::default();
        let mut w = Writer::new(&mut sink, PacketType::Connect);
        let long = "a".repeat(65_536);
        assert!(w.string("client identifier", &long).is_err());
        assert!(w.string("client identifier", &long[..65_535]).is_ok());
        assert_eq!(sink.0, 65_537);
    }

    #[test]
    fn control_characters_found_by_the_byte_scan_are_unicodes_cc() {
        for c in (0u32..0x800).filter_map(char::from_u32) {
            let text = format!("a/{c}/b");
            let expected = c.is_control().then_some(2);
            assert_eq!(
                control_character_at(text.as_bytes()),
                expected,
                "U+{:04X}",
                c as u32
            );
        }
        assert_eq!(control_character_at("caf\u{e9} \u{2603}".as_bytes()), None);
    }
}
