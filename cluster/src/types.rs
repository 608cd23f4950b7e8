//! The data the broker exchanges with the cluster, and their conversions to
//! and from the `proto` wire types.
//!
//! Conversions from the wire check every field the broker relies on (QoS at
//! most 2, packet ids that fit 16 bits, ...) and return [`Error::Decode`]
//! naming the field: bytes from a peer never cause a panic.

use bytes::Bytes;
use storage::{OutgoingRecord, StoredMessage};

use crate::error::{Error, Result};

/// A retained message; an empty payload means "deleted". The same record the
/// store keeps, so the broker can write it as it is.
pub type RetainedMessage = StoredMessage;

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// Raft node id, never 0.
    pub id: u64,
    /// host:port of its cluster gRPC endpoint; empty until the node announced
    /// itself (a founding member known only from the seed list).
    pub address: String,
    /// host:port of its MQTT listener; empty until announced.
    pub mqtt_address: String,
}

/// One subscription of a replicated session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSubscription {
    /// The topic filter as the client sent it.
    pub filter: String,
    /// The broker's encoding of the subscription options; opaque here.
    pub options: Bytes,
}

/// The replicated part of a session: enough for another node to resume it if
/// the owner is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's subscriptions.
    pub subscriptions: Vec<SessionSubscription>,
    /// Seconds the session outlives a disconnect; `u32::MAX` never expires.
    pub session_expiry_interval: u32,
    /// Unix time in ms when the client went offline; `None` while connected.
    pub disconnected_at_ms: Option<u64>,
    /// The sequence number the owner would have given the session's next
    /// copy when it wrote this record (0: unknown, an older node).
    pub next_seq: u64,
}

/// A session handed over by its owner ([`crate::Cluster::take_over`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    /// The client id.
    pub client_id: String,
    /// Subscriptions and expiry.
    pub info: SessionInfo,
    /// MQTT protocol level of the client's last CONNECT: 3, 4 or 5.
    pub protocol_level: u8,
    /// Queued and in-flight QoS 1/2 messages with their `seq`, in order.
    pub outgoing: Vec<(u64, OutgoingRecord)>,
    /// QoS 2 packet ids received from the client and not yet released.
    pub incoming_qos2: Vec<u16>,
    /// Ids ([`ForwardedPublish::uid`]) of messages the session got
    /// recently, queued ones included: the new owner does not deliver them
    /// again when another node's copy arrives late (a session move).
    pub recent_uids: Vec<u64>,
    /// Sequence number the old owner would have given its next copy (0 =
    /// unknown: sent by an older node).
    pub next_seq: u64,
}

/// A claim that takes a session from a replica of its unreachable owner
/// `from`, holding that owner's copies through seq `through_seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedOver {
    /// The owner the session was taken from.
    pub from: u64,
    /// The highest seq that owner had shipped to the replica.
    pub through_seq: u64,
}

/// One change of a session's replica (see `ReplicaUpdate` in
/// `session.proto`), applied in field order: `reset`, puts and deletes,
/// `drop`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaUpdate {
    /// The session's client id.
    pub client_id: String,
    /// Forget what the replica held for the session first.
    pub reset: bool,
    /// Queued or in-flight copies stored or changed, with their seq.
    pub put_outgoing: Vec<(u64, OutgoingRecord)>,
    /// Copies the client completed.
    pub delete_outgoing: Vec<u64>,
    /// QoS 2 packet ids received from the client.
    pub put_incoming_qos2: Vec<u16>,
    /// QoS 2 packet ids released.
    pub delete_incoming_qos2: Vec<u16>,
    /// The session ended or is replicated elsewhere now: forget it.
    pub drop: bool,
    /// The highest seq the owner has given a copy of the session so far.
    pub max_seq: u64,
}

/// A copy a node keeps for a node that is down (its `forwards` entry),
/// stored a second time on another node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeptCopy {
    /// The node the copy is for.
    pub node: u64,
    /// The keeping node's key for it.
    pub seq: u64,
    /// The [`ForwardedPublish`], encoded ([`encode_forwarded`]).
    pub copy: bytes::Bytes,
}

/// What one `Replicate` request carries: session changes, and copies kept
/// for nodes that are down (stored, or forgotten: `(node, seq)`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaBatch {
    pub updates: Vec<ReplicaUpdate>,
    pub keep: Vec<KeptCopy>,
    pub forget: Vec<(u64, u64)>,
}

impl ReplicaBatch {
    pub fn len(&self) -> usize {
        self.updates.len() + self.keep.len() + self.forget.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a replica holds of one session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionReplica {
    /// The node that shipped it (the session's owner then).
    pub owner: u64,
    /// The highest seq that owner shipped.
    pub max_seq: u64,
    /// Queued and in-flight copies, in seq order.
    pub outgoing: Vec<(u64, OutgoingRecord)>,
    /// QoS 2 packet ids received from the client and not yet released.
    pub incoming_qos2: Vec<u16>,
}

/// A PUBLISH forwarded from the node its client published to.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ForwardedPublish {
    /// Set by the cluster when sending (any value given is replaced); unique
    /// within the link, so a receiver can recognize a resend.
    pub id: u64,
    /// Topic name.
    pub topic: String,
    /// Application payload.
    pub payload: Bytes,
    /// Publish QoS: 0, 1 or 2.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// MQTT 5 PUBLISH properties, encoded; opaque here.
    pub properties: Bytes,
    /// Unix time in ms after which it must not be delivered.
    pub expires_at_ms: Option<u64>,
    /// The node whose client published it.
    pub origin_node: u64,
    /// Not for the receiving node's plain subscriptions: only for the shared
    /// groups in `shared_filters` or the session `target_client`.
    pub no_plain_match: bool,
    /// Shared subscriptions for which the receiving node was picked.
    pub shared_filters: Vec<String>,
    /// Deliver to this session only (handing a session's messages over).
    pub target_client: Option<String>,
    /// Subscription identifiers of a message for `target_client`.
    pub subscription_ids: Vec<u32>,
    /// W3C `traceparent` of the sender's span; opaque here, empty when none.
    pub traceparent: String,
    /// The message's id, given by the node it was published to (0:
    /// unknown); the same in every copy, so a session that moved between
    /// nodes recognizes a copy it got already.
    pub uid: u64,
    /// For a message to `target_client`: the QoS 2 flow the session's old
    /// owner had open with the client for it (the packet id it sent the
    /// message with, and whether PUBREC came back), which the new owner
    /// continues with the same id.
    pub flow: Option<OpenFlow>,
}

/// A server-to-client QoS 2 flow a session's old owner left open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFlow {
    /// The packet id the client knows the message by (1..=65535).
    pub packet_id: u16,
    /// PUBREC received: only PUBREL and PUBCOMP are left.
    pub released: bool,
}

fn qos(field: &'static str, v: u32) -> Result<u8> {
    match v {
        0..=2 => Ok(v as u8),
        _ => Err(Error::decode(field, format!("QoS {v} is not 0, 1 or 2"))),
    }
}

fn required<T>(field: &'static str, v: Option<T>) -> Result<T> {
    v.ok_or_else(|| Error::decode(field, "missing"))
}

pub(crate) fn message_to_proto(m: &StoredMessage) -> proto::StoredMessage {
    {
        proto::StoredMessage {
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            qos: u32::from(m.qos),
            retain: m.retain,
            properties: m.properties.clone(),
            expires_at_ms: m.expires_at_ms,
        }
    }
}

pub(crate) fn message_from_proto(m: proto::StoredMessage) -> Result<StoredMessage> {
    Ok(StoredMessage {
        qos: qos("stored message qos", m.qos)?,
        topic: m.topic,
        payload: m.payload,
        retain: m.retain,
        properties: m.properties,
        expires_at_ms: m.expires_at_ms,
    })
}

impl From<&Member> for proto::MemberInfo {
    fn from(m: &Member) -> Self {
        proto::MemberInfo {
            id: m.id,
            raft_address: m.address.clone(),
            mqtt_address: m.mqtt_address.clone(),
        }
    }
}

pub(crate) fn member_from_proto(m: proto::MemberInfo) -> Result<Member> {
    if m.id == 0 {
        return Err(Error::decode("member", "node id 0"));
    }
    Ok(Member {
        id: m.id,
        address: m.raft_address,
        mqtt_address: m.mqtt_address,
    })
}

impl From<&SessionInfo> for proto::SessionInfo {
    fn from(s: &SessionInfo) -> Self {
        proto::SessionInfo {
            subscriptions: s
                .subscriptions
                .iter()
                .map(|s| proto::Subscription {
                    filter: s.filter.clone(),
                    options: s.options.clone(),
                })
                .collect(),
            session_expiry_interval: s.session_expiry_interval,
            disconnected_at_ms: s.disconnected_at_ms,
            next_seq: s.next_seq,
        }
    }
}

impl From<proto::SessionInfo> for SessionInfo {
    fn from(s: proto::SessionInfo) -> Self {
        SessionInfo {
            subscriptions: s
                .subscriptions
                .into_iter()
                .map(|s| SessionSubscription {
                    filter: s.filter,
                    options: s.options,
                })
                .collect(),
            session_expiry_interval: s.session_expiry_interval,
            disconnected_at_ms: s.disconnected_at_ms,
            next_seq: s.next_seq,
        }
    }
}

impl From<&SessionState> for proto::SessionState {
    fn from(s: &SessionState) -> Self {
        proto::SessionState {
            client_id: s.client_id.clone(),
            info: Some((&s.info).into()),
            protocol_level: u32::from(s.protocol_level),
            outgoing: outgoing_to_proto(&s.outgoing),
            incoming_qos2: packet_ids_to_proto(&s.incoming_qos2),
            recent_uids: s.recent_uids.clone(),
            next_seq: s.next_seq,
        }
    }
}

fn outgoing_to_proto(outgoing: &[(u64, OutgoingRecord)]) -> Vec<proto::OutgoingMessage> {
    outgoing
        .iter()
        .map(|(seq, r)| proto::OutgoingMessage {
            seq: *seq,
            released: r.released,
            message: Some(message_to_proto(&r.message)),
            uid: r.uid,
        })
        .collect()
}

fn outgoing_from_proto(
    outgoing: Vec<proto::OutgoingMessage>,
) -> Result<Vec<(u64, OutgoingRecord)>> {
    outgoing
        .into_iter()
        .map(|o| {
            let message = message_from_proto(required("outgoing message", o.message)?)?;
            Ok((
                o.seq,
                OutgoingRecord {
                    released: o.released,
                    uid: o.uid,
                    message,
                },
            ))
        })
        .collect()
}

fn packet_ids_from_proto(ids: Vec<u32>, what: &'static str) -> Result<Vec<u16>> {
    ids.into_iter()
        .map(|p| u16::try_from(p).map_err(|_| Error::decode(what, p)))
        .collect()
}

fn packet_ids_to_proto(ids: &[u16]) -> Vec<u32> {
    ids.iter().map(|&p| u32::from(p)).collect()
}

impl From<&ReplicaUpdate> for proto::ReplicaUpdate {
    fn from(u: &ReplicaUpdate) -> Self {
        proto::ReplicaUpdate {
            client_id: u.client_id.clone(),
            reset: u.reset,
            put_outgoing: outgoing_to_proto(&u.put_outgoing),
            delete_outgoing: u.delete_outgoing.clone(),
            put_incoming_qos2: packet_ids_to_proto(&u.put_incoming_qos2),
            delete_incoming_qos2: packet_ids_to_proto(&u.delete_incoming_qos2),
            drop: u.drop,
            max_seq: u.max_seq,
        }
    }
}

pub(crate) fn replica_update_from_proto(u: proto::ReplicaUpdate) -> Result<ReplicaUpdate> {
    Ok(ReplicaUpdate {
        client_id: u.client_id,
        reset: u.reset,
        put_outgoing: outgoing_from_proto(u.put_outgoing)?,
        delete_outgoing: u.delete_outgoing,
        put_incoming_qos2: packet_ids_from_proto(u.put_incoming_qos2, "replica packet id")?,
        delete_incoming_qos2: packet_ids_from_proto(u.delete_incoming_qos2, "replica packet id")?,
        drop: u.drop,
        max_seq: u.max_seq,
    })
}

impl From<&SessionReplica> for proto::Replica {
    fn from(r: &SessionReplica) -> Self {
        proto::Replica {
            owner: r.owner,
            max_seq: r.max_seq,
            outgoing: outgoing_to_proto(&r.outgoing),
            incoming_qos2: packet_ids_to_proto(&r.incoming_qos2),
        }
    }
}

pub(crate) fn replica_from_proto(r: proto::Replica) -> Result<SessionReplica> {
    Ok(SessionReplica {
        owner: r.owner,
        max_seq: r.max_seq,
        outgoing: outgoing_from_proto(r.outgoing)?,
        incoming_qos2: packet_ids_from_proto(r.incoming_qos2, "replica packet id")?,
    })
}

pub(crate) fn session_state_from_proto(s: proto::SessionState) -> Result<SessionState> {
    let protocol_level = u8::try_from(s.protocol_level)
        .map_err(|_| Error::decode("protocol_level", s.protocol_level))?;
    let outgoing = outgoing_from_proto(s.outgoing)?;
    let incoming_qos2 = packet_ids_from_proto(s.incoming_qos2, "incoming_qos2 packet id")?;
    Ok(SessionState {
        client_id: s.client_id,
        info: s.info.unwrap_or_default().into(),
        protocol_level,
        outgoing,
        incoming_qos2,
        recent_uids: s.recent_uids,
        next_seq: s.next_seq,
    })
}

impl From<&ForwardedPublish> for proto::ForwardedPublish {
    fn from(m: &ForwardedPublish) -> Self {
        proto::ForwardedPublish {
            id: m.id,
            topic: m.topic.clone(),
            payload: m.payload.clone(),
            qos: u32::from(m.qos),
            retain: m.retain,
            properties: m.properties.clone(),
            expires_at_ms: m.expires_at_ms,
            origin_node: m.origin_node,
            no_plain_match: m.no_plain_match,
            shared_filters: m.shared_filters.clone(),
            target_client: m.target_client.clone().unwrap_or_default(),
            subscription_ids: m.subscription_ids.clone(),
            traceparent: m.traceparent.clone(),
            uid: m.uid,
            packet_id: m.flow.map_or(0, |f| u32::from(f.packet_id)),
            released: m.flow.is_some_and(|f| f.released),
        }
    }
}

/// `m` in the form the cluster sends it between nodes (protobuf), for a
/// node that keeps a copy on disk while its peer is down.
pub fn encode_forwarded(m: &ForwardedPublish) -> Vec<u8> {
    prost::Message::encode_to_vec(&proto::ForwardedPublish::from(m))
}

/// Reads back what [`encode_forwarded`] wrote.
pub fn decode_forwarded(bytes: &[u8]) -> Result<ForwardedPublish> {
    let m = <proto::ForwardedPublish as prost::Message>::decode(bytes)
        .map_err(|e| Error::decode("forwarded publish", e))?;
    forwarded_from_proto(m)
}

pub(crate) fn forwarded_from_proto(m: proto::ForwardedPublish) -> Result<ForwardedPublish> {
    Ok(ForwardedPublish {
        id: m.id,
        qos: qos("forwarded publish qos", m.qos)?,
        topic: m.topic,
        payload: m.payload,
        retain: m.retain,
        properties: m.properties,
        expires_at_ms: m.expires_at_ms,
        origin_node: m.origin_node,
        no_plain_match: m.no_plain_match,
        shared_filters: m.shared_filters,
        target_client: (!m.target_client.is_empty()).then_some(m.target_client),
        subscription_ids: m.subscription_ids,
        traceparent: m.traceparent,
        uid: m.uid,
        flow: match (m.packet_id, m.released) {
            (0, false) => None,
            (0, true) => {
                return Err(Error::decode(
                    "forwarded publish released",
                    "a released flow without a packet id",
                ))
            }
            (id, released) => Some(OpenFlow {
                packet_id: u16::try_from(id).map_err(|_| {
                    Error::decode(
                        "forwarded publish packet_id",
                        format!("packet id {id} is over 65535"),
                    )
                })?,
                released,
            }),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_state_round_trips_and_rejects_bad_fields() {
        let state = SessionState {
            client_id: "c".into(),
            info: SessionInfo {
                subscriptions: vec![SessionSubscription {
                    filter: "a/#".into(),
                    options: Bytes::from_static(&[1]),
                }],
                session_expiry_interval: 60,
                disconnected_at_ms: Some(5),
                next_seq: 1_234,
            },
            protocol_level: 5,
            outgoing: vec![(
                3,
                OutgoingRecord {
                    released: true,
                    uid: 12,
                    message: StoredMessage {
                        topic: "a/b".into(),
                        payload: Bytes::from_static(b"x"),
                        qos: 2,
                        retain: false,
                        properties: Bytes::new(),
                        expires_at_ms: None,
                    },
                },
            )],
            incoming_qos2: vec![7, 65535],
            recent_uids: vec![1, u64::MAX],
            next_seq: 70_000,
        };
        let wire = proto::SessionState::from(&state);
        assert_eq!(session_state_from_proto(wire.clone()).unwrap(), state);

        let mut bad = wire.clone();
        bad.incoming_qos2.push(65536);
        let err = session_state_from_proto(bad).unwrap_err();
        assert!(err.to_string().contains("incoming_qos2"), "{err}");
        let mut bad = wire;
        bad.outgoing[0].message.as_mut().unwrap().qos = 3;
        let err = session_state_from_proto(bad).unwrap_err();
        assert!(err.to_string().contains("QoS 3"), "{err}");
    }

    #[test]
    fn an_open_flow_round_trips_and_a_bad_one_is_refused() {
        let m = ForwardedPublish {
            target_client: Some("c".into()),
            flow: Some(OpenFlow {
                packet_id: 836,
                released: true,
            }),
            ..Default::default()
        };
        let back = forwarded_from_proto(proto::ForwardedPublish::from(&m)).unwrap();
        assert_eq!(back.flow, m.flow);
        let none =
            forwarded_from_proto(proto::ForwardedPublish::from(&ForwardedPublish::default()));
        assert_eq!(none.unwrap().flow, None);
        let wire = |packet_id, released| proto::ForwardedPublish {
            packet_id,
            released,
            ..Default::default()
        };
        assert!(forwarded_from_proto(wire(70_000, false)).is_err());
        assert!(forwarded_from_proto(wire(0, true)).is_err());
    }

    #[test]
    fn a_copy_kept_on_disk_reads_back_and_damaged_bytes_are_refused() {
        let m = ForwardedPublish {
            id: 7,
            topic: "plant/a/temp".into(),
            payload: Bytes::from_static(b"21.5"),
            qos: 1,
            retain: true,
            properties: Bytes::from_static(&[0x01, 0x01]),
            expires_at_ms: Some(1_700_000_000_000),
            origin_node: 1,
            no_plain_match: true,
            shared_filters: vec!["$share/g/plant/#".into()],
            target_client: None,
            subscription_ids: vec![3],
            traceparent: String::new(),
            uid: 0x0102_0304_0506_0708,
            flow: None,
        };
        let bytes = encode_forwarded(&m);
        assert_eq!(decode_forwarded(&bytes).unwrap(), m);
        let err = decode_forwarded(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.to_string().contains("forwarded publish"), "{err}");
        let mut bad = proto::ForwardedPublish::from(&m);
        bad.qos = 3;
        let err = decode_forwarded(&prost::Message::encode_to_vec(&bad)).unwrap_err();
        assert!(err.to_string().contains("QoS 3"), "{err}");
    }
}
