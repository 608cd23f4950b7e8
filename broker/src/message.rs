//! The application message as it travels through the broker: received once,
//! shared by reference count with every session that delivers it, stored as a
//! retained message or a queued copy.
//!
//! A [`Message`] is immutable. What differs per receiver (packet id, delivered
//! QoS, retain flag, subscription identifiers, remaining expiry) is applied
//! when the PUBLISH for that receiver is built ([`Message::to_publish`]).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use smallvec::SmallVec;

use crate::codec::{self, Publish, PublishProperties, QoS};

/// Milliseconds since the Unix epoch: the clock of message expiry and session
/// expiry, because both must survive a restart.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Session id used as the origin of messages the broker publishes itself
/// (`$SYS`, wills of sessions already gone). No session has it.
pub const BROKER_ORIGIN: u64 = 0;

/// An application message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag it was published with.
    pub retain: bool,
    /// 5.0 properties passed through to receivers. Never carries a topic
    /// alias or subscription identifiers: those are per connection.
    pub properties: PublishProperties,
    /// Unix ms after which it must not be sent (from Message Expiry Interval).
    pub expires_at_ms: Option<u64>,
    /// Id of the session that published it, for No Local; [`BROKER_ORIGIN`]
    /// for messages the broker publishes itself.
    pub origin: u64,
    /// When this node got it (its PUBLISH, or its forward from another
    /// node): the start of `tern_publish_to_deliver_seconds`. `None` for
    /// messages read from the store, retained ones and the broker's own.
    pub received_at: Option<Instant>,
    /// The message's id in the cluster ([`next_uid`]), the same in every
    /// copy of it, so that a session that moved between nodes recognizes a
    /// copy it got already; 0 when unknown (the broker's own, a retained
    /// message read back, a copy stored by a build before outgoing format
    /// version 2).
    pub uid: u64,
}

/// A new message id: a per-process counter from a random start, so ids of
/// different nodes (and of one node across restarts) do not meet in the
/// window they are compared in.
pub fn next_uid() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    let next = NEXT.get_or_init(|| AtomicU64::new(rand::random::<u64>() | 1));
    match next.fetch_add(1, Ordering::Relaxed) {
        0 => next.fetch_add(1, Ordering::Relaxed),
        uid => uid,
    }
}

impl Message {
    /// Builds the message from a received PUBLISH whose topic alias has already
    /// been resolved into `publish.topic`; it arrived at `now_ms` (Unix) and
    /// `received_at`.
    pub fn from_publish(
        publish: Publish,
        origin: u64,
        now_ms: u64,
        received_at: Instant,
    ) -> Message {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let expires_at_ms = properties
            .message_expiry_interval
            .map(|secs| now_ms.saturating_add(u64::from(secs) * 1000));
        Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            expires_at_ms,
            origin,
            received_at: Some(received_at),
            uid: next_uid(),
        }
    }

    /// True once its expiry has passed.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| now_ms >= at)
    }

    /// The PUBLISH for one receiver. The Message Expiry Interval is the time
    /// left, rounded up to whole seconds (5.0 section 3.3.2.3.3).
    pub fn to_publish(
        &self,
        qos: QoS,
        retain: bool,
        packet_id: Option<u16>,
        dup: bool,
        subscription_ids: &[u32],
        now_ms: u64,
    ) -> Publish {
        let mut properties = self.properties.clone();
        if let Some(at) = self.expires_at_ms {
            let left_ms = at.saturating_sub(now_ms);
            properties.message_expiry_interval = Some(left_ms.div_ceil(1000).max(1) as u32);
        }
        properties.subscription_identifiers = subscription_ids.to_vec();
        Publish {
            dup,
            qos,
            retain,
            topic: self.topic.clone(),
            packet_id,
            payload: self.payload.clone(),
            properties,
        }
    }

    /// The stored form, for retained messages and queued copies. `qos` is the
    /// QoS to store (the delivery QoS for a queued copy); the subscription
    /// identifiers of a queued copy travel inside the stored properties.
    pub fn to_stored(
        &self,
        qos: QoS,
        retain: bool,
        subscription_ids: &[u32],
    ) -> storage::StoredMessage {
        let mut properties = BytesMut::new();
        if subscription_ids.is_empty() {
            codec::encode_publish_properties(&self.properties, &mut properties);
        } else {
            let mut with_ids = self.properties.clone();
            with_ids.subscription_identifiers = subscription_ids.to_vec();
            codec::encode_publish_properties(&with_ids, &mut properties);
        }
        storage::StoredMessage {
            topic: self.topic.to_string(),
            payload: self.payload.clone(),
            qos: qos as u8,
            retain,
            properties: properties.freeze(),
            expires_at_ms: self.expires_at_ms,
        }
    }

    /// Reads a stored message back, with the subscription identifiers stored
    /// with it. Fails on properties that do not decode, which only a corrupt
    /// store produces.
    pub fn from_stored(
        stored: storage::StoredMessage,
    ) -> Result<(Message, SmallVec<[u32; 2]>), codec::DecodeError> {
        let mut raw = stored.properties;
        let mut properties = codec::decode_publish_properties(&mut raw)?;
        let subscription_ids = properties.subscription_identifiers.drain(..).collect();
        let message = Message {
            topic: ByteString::from(stored.topic),
            payload: stored.payload,
            qos: QoS::from_u8(stored.qos).unwrap_or(QoS::AtMostOnce),
            retain: stored.retain,
            properties,
            expires_at_ms: stored.expires_at_ms,
            origin: BROKER_ORIGIN,
            received_at: None,
            uid: 0,
        };
        Ok((message, subscription_ids))
    }
}
