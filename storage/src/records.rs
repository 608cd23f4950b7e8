//! Stored record types and their value encoding.
//!
//! Every value starts with a format-version byte. This build writes version 2
//! for `outgoing` values and version 1 for every other record type, and reads
//! versions 1 and 2 of `outgoing`; a build that changes a layout writes a new
//! version and keeps a decoder for each older one, so it can read a store
//! written before the upgrade (the migration is this read: an `outgoing`
//! value of version 1 comes back with `uid` 0, "unknown", and is written as
//! version 2 the next time it changes; outgoing records live until the
//! client acknowledges them, so no rewrite pass is needed). Decoding never panics: a truncated value, a bad
//! flag byte, trailing bytes or an unknown version is a [`DecodeError`] that
//! the caller turns into `Error::Corrupt` naming the tree and key.
//!
//! Format version 1, field by field (integers big-endian, `str` and `bytes` are
//! a u32 length then the bytes, `bool` is one byte 0 or 1, `opt<T>` is a byte 0
//! (absent) or 1 followed by `T`):
//! - session: `01 protocol_level:u8 session_expiry_interval:u32 disconnected_at_ms:opt<u64>`
//! - subscription: `01 filter:str qos:u8 no_local:bool retain_as_published:bool
//!   retain_handling:u8 subscription_identifier:opt<u32>`
//! - outgoing: `01 released:bool message`
//! - retained: `01 message`
//! - incoming_qos2: `01` alone
//! - route_queue: `01 uid:u64 client_id:str received_at_ms:u64 message`
//! - hub_routes: `01 definition:str` (the route's JSON, opaque to the store)
//! - forwards: `01 copy:bytes` (a copy forwarded to a node that was down, as
//!   the cluster's `ForwardedPublish` protobuf, opaque to the store)
//! - replica_meta: `01 owner:u64 max_seq:u64` (see `replica.rs`)
//! - replica_incoming: `01` alone, as incoming_qos2
//! - replica_forwards: `01 copy:bytes`, as forwards
//! - message: `topic:str payload:bytes qos:u8 retain:bool properties:bytes
//!   expires_at_ms:opt<u64>`
//!
//! Format version 2 changes `outgoing` only:
//! - outgoing: `02 released:bool uid:u64 message` (`uid`: the message's
//!   cluster-wide id, `Message::uid` in the broker, 0 when unknown; a node
//!   that restarts learns from it which forwarded copies it stored already).
//! - replica_outgoing is written in this version too: the same value as
//!   `outgoing`, one per message of a session replicated here.
//!
//! Format version 3 moves new `outgoing` data to the `outgoing_batches` tree:
//! one value per group-commit batch of a client's messages, and a small acks
//! value beside it (layout and reasoning in `batches.rs`). Values of versions
//! 1 and 2 stay in `outgoing` and are still read; this build no longer writes
//! there, it only deletes.
//!
//! `storage/tests/golden/v1/`, `v2/` and `v3/` hold one file of exact bytes
//! per record type and version.

use bytes::Bytes;

/// The format version this build writes for every record type but `outgoing`.
pub const FORMAT_VERSION: u8 = 1;

/// The format version this build writes for `outgoing` values.
pub const OUTGOING_FORMAT_VERSION: u8 = 2;

/// A client's session state that outlives its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// MQTT protocol level of the last CONNECT: 3 (3.1), 4 (3.1.1) or 5.
    pub protocol_level: u8,
    /// Seconds the session outlives a disconnect; `u32::MAX` means never expires.
    pub session_expiry_interval: u32,
    /// Unix time in ms when the client went offline; `None` while connected.
    pub disconnected_at_ms: Option<u64>,
}

/// One subscription of a client, keyed by `client_id \0 filter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// The topic filter as the client sent it (shared subscriptions included).
    pub filter: String,
    /// Maximum QoS granted: 0, 1 or 2.
    pub qos: u8,
    /// 5.0 No Local option.
    pub no_local: bool,
    /// 5.0 Retain As Published option.
    pub retain_as_published: bool,
    /// 5.0 Retain Handling option: 0, 1 or 2.
    pub retain_handling: u8,
    /// 5.0 Subscription Identifier, if the client gave one.
    pub subscription_identifier: Option<u32>,
}

/// An application message as stored: in an outgoing record or as retained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Topic name.
    pub topic: String,
    /// Application payload.
    pub payload: Bytes,
    /// QoS: the delivery QoS in an outgoing record, the publish QoS when retained.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// MQTT 5 PUBLISH properties, encoded; opaque to the store.
    pub properties: Bytes,
    /// Unix time in ms after which the message must not be delivered (5.0
    /// Message Expiry Interval), if it has one.
    pub expires_at_ms: Option<u64>,
}

/// A QoS 1/2 message bound for a client: queued, or in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// PUBREC received: only PUBREL/PUBCOMP are left, the message is not resent.
    pub released: bool,
    /// The message's cluster-wide id (the broker's `Message::uid`); 0 when
    /// unknown (a value of format version 1).
    pub uid: u64,
    /// The message; its `qos` is the delivery QoS.
    pub message: StoredMessage,
}

/// A message waiting in a hub route's durable queue, keyed by
/// `route \0 seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRecord {
    /// The message's id in the cluster, 0 when unknown.
    pub uid: u64,
    /// Client id of the publisher.
    pub client_id: String,
    /// When the broker received it, Unix ms.
    pub received_at_ms: u64,
    /// The message; its `qos` is the QoS it was published with.
    pub message: StoredMessage,
}

/// Why a stored value could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) type DecodeResult<T> = Result<T, DecodeError>;

/// Appends the encodings of one format version.
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn new() -> Writer {
        Writer::version(FORMAT_VERSION)
    }
    pub(crate) fn version(version: u8) -> Writer {
        Writer(vec![version])
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn bool(&mut self, v: bool) {
        self.0.push(u8::from(v));
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        // Lengths above u32::MAX are refused by `validate_message` before
        // anything is encoded, so the cast cannot truncate.
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    pub(crate) fn opt_u32(&mut self, v: Option<u32>) {
        self.bool(v.is_some());
        if let Some(v) = v {
            self.u32(v);
        }
    }
    pub(crate) fn opt_u64(&mut self, v: Option<u64>) {
        self.bool(v.is_some());
        if let Some(v) = v {
            self.u64(v);
        }
    }
    pub(crate) fn message(&mut self, m: &StoredMessage) {
        self.bytes(m.topic.as_bytes());
        self.bytes(&m.payload);
        self.u8(m.qos);
        self.bool(m.retain);
        self.bytes(&m.properties);
        self.opt_u64(m.expires_at_ms);
    }
}

/// Reads fields off a value, naming the field in every error.
pub(crate) struct Reader<'a> {
    value: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Checks the version byte ([`FORMAT_VERSION`]) and positions the
    /// reader after it.
    pub(crate) fn new(value: &'a [u8]) -> DecodeResult<Reader<'a>> {
        Reader::versioned(value, FORMAT_VERSION).map(|(r, _)| r)
    }
    /// Checks that the version byte is exactly `version` (a record type
    /// that exists in one version only); `what` names it in the error.
    pub(crate) fn exact(value: &'a [u8], version: u8, what: &str) -> DecodeResult<Reader<'a>> {
        match value.first() {
            None => Err(DecodeError("empty value: no format version byte".into())),
            Some(&v) if v == version => Ok(Reader { value, pos: 1 }),
            Some(&v) => Err(DecodeError(format!(
                "unknown format version {v} (this build reads version {version} of {what})"
            ))),
        }
    }
    /// Bytes not read yet.
    pub(crate) fn left(&self) -> usize {
        self.value.len() - self.pos
    }
    /// Checks that the version byte is 1 to `latest`; returns the reader
    /// after it and the version.
    pub(crate) fn versioned(value: &'a [u8], latest: u8) -> DecodeResult<(Reader<'a>, u8)> {
        match value.first() {
            None => Err(DecodeError("empty value: no format version byte".into())),
            Some(&v) if (1..=latest).contains(&v) => Ok((Reader { value, pos: 1 }, v)),
            Some(&v) if latest == 1 => Err(DecodeError(format!(
                "unknown format version {v} (this build reads version 1)"
            ))),
            Some(&v) => Err(DecodeError(format!(
                "unknown format version {v} (this build reads versions 1 to {latest})"
            ))),
        }
    }
    pub(crate) fn take(&mut self, n: usize, field: &str) -> DecodeResult<std::ops::Range<usize>> {
        let left = self.value.len() - self.pos;
        if n > left {
            return Err(DecodeError(format!(
                "truncated: {field} needs {n} bytes, {left} left"
            )));
        }
        let range = self.pos..self.pos + n;
        self.pos += n;
        Ok(range)
    }
    pub(crate) fn array<const N: usize>(&mut self, field: &str) -> DecodeResult<[u8; N]> {
        let range = self.take(N, field)?;
        let mut out = [0; N];
        out.copy_from_slice(&self.value[range]);
        Ok(out)
    }
    pub(crate) fn u8(&mut self, field: &str) -> DecodeResult<u8> {
        self.array::<1>(field).map(|[b]| b)
    }
    pub(crate) fn bool(&mut self, field: &str) -> DecodeResult<bool> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError(format!("{field}: invalid bool byte {b}"))),
        }
    }
    pub(crate) fn u32(&mut self, field: &str) -> DecodeResult<u32> {
        self.array(field).map(u32::from_be_bytes)
    }
    pub(crate) fn u64(&mut self, field: &str) -> DecodeResult<u64> {
        self.array(field).map(u64::from_be_bytes)
    }
    pub(crate) fn bytes(&mut self, field: &str) -> DecodeResult<Bytes> {
        let len = self.u32(field)? as usize;
        let range = self.take(len, field)?;
        Ok(Bytes::copy_from_slice(&self.value[range]))
    }
    pub(crate) fn string(&mut self, field: &str) -> DecodeResult<String> {
        let len = self.u32(field)? as usize;
        let range = self.take(len, field)?;
        std::str::from_utf8(&self.value[range])
            .map(str::to_owned)
            .map_err(|_| DecodeError(format!("{field}: not UTF-8")))
    }
    pub(crate) fn opt_u32(&mut self, field: &str) -> DecodeResult<Option<u32>> {
        Ok(if self.bool(field)? {
            Some(self.u32(field)?)
        } else {
            None
        })
    }
    pub(crate) fn opt_u64(&mut self, field: &str) -> DecodeResult<Option<u64>> {
        Ok(if self.bool(field)? {
            Some(self.u64(field)?)
        } else {
            None
        })
    }
    pub(crate) fn qos(&mut self, field: &str) -> DecodeResult<u8> {
        match self.u8(field)? {
            q @ 0..=2 => Ok(q),
            q => Err(DecodeError(format!("{field}: {q} is not 0, 1 or 2"))),
        }
    }
    pub(crate) fn message(&mut self) -> DecodeResult<StoredMessage> {
        Ok(StoredMessage {
            topic: self.string("topic")?,
            payload: self.bytes("payload")?,
            qos: self.qos("qos")?,
            retain: self.bool("retain")?,
            properties: self.bytes("properties")?,
            expires_at_ms: self.opt_u64("expires_at_ms")?,
        })
    }
    /// Refuses bytes after the last field: a value this build did not write.
    pub(crate) fn finish(self) -> DecodeResult<()> {
        let left = self.value.len() - self.pos;
        if left != 0 {
            return Err(DecodeError(format!(
                "{left} trailing bytes after the last field"
            )));
        }
        Ok(())
    }
}

/// Refuses a QoS-like field the decoder would refuse to read back.
fn check_0_to_2(field: &str, v: u8) -> Result<(), String> {
    if v > 2 {
        return Err(format!("{field} {v} is not 0, 1 or 2"));
    }
    Ok(())
}

/// Refuses a message the decoder could not read back.
pub(crate) fn validate_message(m: &StoredMessage) -> Result<(), String> {
    check_0_to_2("qos", m.qos)?;
    for (field, len) in [
        ("topic", m.topic.len()),
        ("payload", m.payload.len()),
        ("properties", m.properties.len()),
    ] {
        if u32::try_from(len).is_err() {
            return Err(format!("{field} of {len} bytes does not fit a u32 length"));
        }
    }
    Ok(())
}

/// Refuses a subscription the decoder could not read back.
pub(crate) fn validate_subscription(s: &SubscriptionRecord) -> Result<(), String> {
    check_0_to_2("qos", s.qos)?;
    check_0_to_2("retain_handling", s.retain_handling)?;
    if u32::try_from(s.filter.len()).is_err() {
        return Err("filter does not fit a u32 length".into());
    }
    Ok(())
}

impl SessionRecord {
    /// Encodes at [`FORMAT_VERSION`].
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.protocol_level);
        w.u32(self.session_expiry_interval);
        w.opt_u64(self.disconnected_at_ms);
        w.0
    }

    /// Decodes a value of any supported format version.
    pub(crate) fn decode(value: &[u8]) -> Result<SessionRecord, DecodeError> {
        let mut r = Reader::new(value)?;
        let record = SessionRecord {
            protocol_level: r.u8("protocol_level")?,
            session_expiry_interval: r.u32("session_expiry_interval")?,
            disconnected_at_ms: r.opt_u64("disconnected_at_ms")?,
        };
        r.finish()?;
        Ok(record)
    }
}

impl SubscriptionRecord {
    /// The record's stored value (format above), for whoever carries a
    /// subscription elsewhere (the cluster's replicated session record):
    /// one encoding of subscription options in the workspace.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode()
    }

    /// Reads a value [`to_bytes`](Self::to_bytes) wrote (any supported
    /// format version); `Err` says which field is wrong.
    pub fn from_bytes(value: &[u8]) -> std::result::Result<SubscriptionRecord, String> {
        SubscriptionRecord::decode(value).map_err(|e| e.to_string())
    }

    /// Encodes at [`FORMAT_VERSION`].
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(self.filter.as_bytes());
        w.u8(self.qos);
        w.bool(self.no_local);
        w.bool(self.retain_as_published);
        w.u8(self.retain_handling);
        w.opt_u32(self.subscription_identifier);
        w.0
    }

    /// Decodes a value of any supported format version.
    pub(crate) fn decode(value: &[u8]) -> Result<SubscriptionRecord, DecodeError> {
        let mut r = Reader::new(value)?;
        let record = SubscriptionRecord {
            filter: r.string("filter")?,
            qos: r.qos("qos")?,
            no_local: r.bool("no_local")?,
            retain_as_published: r.bool("retain_as_published")?,
            retain_handling: r.qos("retain_handling")?,
            subscription_identifier: r.opt_u32("subscription_identifier")?,
        };
        r.finish()?;
        Ok(record)
    }
}

impl OutgoingRecord {
    /// Encodes at [`OUTGOING_FORMAT_VERSION`]: what builds before batches
    /// wrote to `outgoing`. This build writes a session's own outgoing
    /// records in batches (`batches.rs`); one value per record is what it
    /// writes to `replica_outgoing` (`replica.rs`).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::version(OUTGOING_FORMAT_VERSION);
        w.bool(self.released);
        w.u64(self.uid);
        w.message(&self.message);
        w.0
    }

    /// Decodes a value of format version 1 (`uid` 0) or 2.
    pub(crate) fn decode(value: &[u8]) -> Result<OutgoingRecord, DecodeError> {
        let (mut r, version) = Reader::versioned(value, OUTGOING_FORMAT_VERSION)?;
        let released = r.bool("released")?;
        let uid = if version >= 2 { r.u64("uid")? } else { 0 };
        let record = OutgoingRecord {
            released,
            uid,
            message: r.message()?,
        };
        r.finish()?;
        Ok(record)
    }
}

impl StoredMessage {
    /// Encodes as a `retained` value at [`FORMAT_VERSION`].
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.message(self);
        w.0
    }

    /// Decodes a `retained` value of any supported format version.
    pub(crate) fn decode(value: &[u8]) -> Result<StoredMessage, DecodeError> {
        let mut r = Reader::new(value)?;
        let message = r.message()?;
        r.finish()?;
        Ok(message)
    }
}

impl RouteRecord {
    /// Format version 1: `01 uid:u64 client_id:str received_at_ms:u64 message`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.uid);
        w.bytes(self.client_id.as_bytes());
        w.u64(self.received_at_ms);
        w.message(&self.message);
        w.0
    }

    pub(crate) fn decode(value: &[u8]) -> Result<RouteRecord, DecodeError> {
        let mut r = Reader::new(value)?;
        let record = RouteRecord {
            uid: r.u64("uid")?,
            client_id: r.string("client_id")?,
            received_at_ms: r.u64("received_at_ms")?,
            message: r.message()?,
        };
        r.finish()?;
        Ok(record)
    }
}

/// Encodes a `hub_routes` value: `01 definition:str`.
pub(crate) fn encode_hub_route(definition: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(definition.as_bytes());
    w.0
}

/// Decodes a `hub_routes` value.
pub(crate) fn decode_hub_route(value: &[u8]) -> Result<String, DecodeError> {
    let mut r = Reader::new(value)?;
    let definition = r.string("definition")?;
    r.finish()?;
    Ok(definition)
}

/// Encodes a `forwards` (and `replica_forwards`) value: `01 copy:bytes` (the copy as the cluster
/// sends it between nodes, opaque to the store).
pub(crate) fn encode_forward(copy: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(copy);
    w.0
}

/// Decodes a `forwards` (and `replica_forwards`) value.
pub(crate) fn decode_forward(value: &[u8]) -> Result<Bytes, DecodeError> {
    let mut r = Reader::new(value)?;
    let copy = r.bytes("copy")?;
    r.finish()?;
    Ok(copy)
}

/// Refuses a route record the decoder could not read back.
pub(crate) fn validate_route_record(r: &RouteRecord) -> Result<(), String> {
    if r.client_id.len() > u32::MAX as usize {
        return Err("client_id is longer than 4294967295 bytes".into());
    }
    validate_message(&r.message)
}

/// The `incoming_qos2` value: the version byte alone.
pub(crate) fn encode_incoming_qos2() -> Vec<u8> {
    Writer::new().0
}

/// Checks an `incoming_qos2` value.
pub(crate) fn decode_incoming_qos2(value: &[u8]) -> Result<(), DecodeError> {
    Reader::new(value)?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> StoredMessage {
        StoredMessage {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"\x00hi"),
            qos: 2,
            retain: true,
            properties: Bytes::from_static(&[0x01, 0x01]),
            expires_at_ms: Some(1_700_000_000_000),
        }
    }

    #[test]
    fn session_round_trips() {
        for disconnected_at_ms in [None, Some(0), Some(u64::MAX)] {
            let r = SessionRecord {
                protocol_level: 5,
                session_expiry_interval: u32::MAX,
                disconnected_at_ms,
            };
            assert_eq!(SessionRecord::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn subscription_round_trips() {
        for subscription_identifier in [None, Some(268_435_455)] {
            let r = SubscriptionRecord {
                filter: "sport/+/#".into(),
                qos: 1,
                no_local: true,
                retain_as_published: false,
                retain_handling: 2,
                subscription_identifier,
            };
            assert_eq!(SubscriptionRecord::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn outgoing_round_trips() {
        let mut m = message();
        for (released, uid) in [(false, 0), (true, u64::MAX)] {
            m.expires_at_ms = None;
            let r = OutgoingRecord {
                released,
                uid,
                message: m.clone(),
            };
            let value = r.encode();
            assert_eq!(value[0], OUTGOING_FORMAT_VERSION);
            assert_eq!(OutgoingRecord::decode(&value).unwrap(), r);
        }
    }

    #[test]
    fn an_outgoing_value_of_version_1_reads_with_an_unknown_uid() {
        let r = OutgoingRecord {
            released: true,
            uid: 77,
            message: message(),
        };
        // version 1: the same fields without the uid
        let v2 = r.encode();
        let mut v1 = vec![1, v2[1]];
        v1.extend_from_slice(&v2[10..]);
        let read = OutgoingRecord::decode(&v1).unwrap();
        assert_eq!(read, OutgoingRecord { uid: 0, ..r });
        let mut v3 = v2.clone();
        v3[0] = 3;
        let err = OutgoingRecord::decode(&v3).unwrap_err();
        assert_eq!(
            err.0,
            "unknown format version 3 (this build reads versions 1 to 2)"
        );
    }

    #[test]
    fn retained_round_trips() {
        let m = message();
        assert_eq!(StoredMessage::decode(&m.encode()).unwrap(), m);
        let empty = StoredMessage {
            topic: String::new(),
            payload: Bytes::new(),
            qos: 0,
            retain: false,
            properties: Bytes::new(),
            expires_at_ms: None,
        };
        assert_eq!(StoredMessage::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn incoming_qos2_is_the_version_byte_alone() {
        assert_eq!(encode_incoming_qos2(), [FORMAT_VERSION]);
        assert!(decode_incoming_qos2(&[1]).is_ok());
        assert!(decode_incoming_qos2(&[1, 0]).is_err());
        assert!(decode_incoming_qos2(&[]).is_err());
    }

    #[test]
    fn every_truncation_of_a_value_is_rejected() {
        let value = OutgoingRecord {
            released: true,
            uid: 9,
            message: message(),
        }
        .encode();
        for len in 0..value.len() {
            let err = OutgoingRecord::decode(&value[..len]).unwrap_err();
            assert!(
                err.0.contains("truncated") || err.0.contains("empty value"),
                "len {len}: {err}"
            );
        }
    }

    #[test]
    fn bad_flag_bytes_are_rejected_naming_the_field() {
        let mut value = SubscriptionRecord {
            filter: "t".into(),
            qos: 0,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            subscription_identifier: None,
        }
        .encode();
        // version, filter length (4), "t", qos, no_local
        value[7] = 2;
        let err = SubscriptionRecord::decode(&value).unwrap_err();
        assert_eq!(err.0, "no_local: invalid bool byte 2");
        value[7] = 0;
        value[6] = 3;
        let err = SubscriptionRecord::decode(&value).unwrap_err();
        assert_eq!(err.0, "qos: 3 is not 0, 1 or 2");
    }

    #[test]
    fn huge_length_prefix_is_rejected_without_allocating() {
        // version, topic length u32::MAX, no bytes
        let value = [1, 0xff, 0xff, 0xff, 0xff];
        let err = StoredMessage::decode(&value).unwrap_err();
        assert!(err.0.starts_with("truncated: topic"), "{err}");
    }

    #[test]
    fn invalid_records_fail_validation() {
        let mut m = message();
        m.qos = 3;
        assert!(validate_message(&m).is_err());
        let s = SubscriptionRecord {
            filter: "t".into(),
            qos: 1,
            no_local: false,
            retain_as_published: false,
            retain_handling: 3,
            subscription_identifier: None,
        };
        assert!(validate_subscription(&s).is_err());
    }
}
