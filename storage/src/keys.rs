//! Tree names and key encoding.
//!
//! A note on key order: sled orders keys as byte strings, so every per-client
//! key starts with `client_id \0`. MQTT forbids U+0000 in UTF-8 strings
//! ([MQTT-1.5.4-2] in 5.0, [MQTT-1.5.3-2] in 3.1.1), so the separator never
//! occurs inside a client id and `client_id \0` is a prefix of exactly that
//! client's keys:
//! - `ab\0` is a prefix of `ab\0x` (client `ab`, suffix `x`): matches;
//! - `ab\0` is not a prefix of `abc\0x` (client `abc`): no match, although `ab`
//!   is a prefix of `abc`;
//! - a client id containing `\0` is refused by the writer (`Error::InvalidWrite`),
//!   it would make its prefix ambiguous.
//!
//! Numeric suffixes (outgoing `seq`, incoming `packet_id`) are big-endian, so
//! a prefix scan returns them in numeric order.

use crate::error::{Error, Result};

/// The sled trees the store uses. `raft_log` and `raft_state` will join them
/// with the cluster crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeId {
    /// `client_id` -> `SessionRecord`.
    Sessions = 0,
    /// `client_id \0 filter` -> `SubscriptionRecord`.
    Subscriptions = 1,
    /// `client_id \0 seq (u64 BE)` -> `OutgoingRecord`.
    Outgoing = 2,
    /// `client_id \0 packet_id (u16 BE)` -> version byte only.
    IncomingQos2 = 3,
    /// `topic` -> `StoredMessage`.
    Retained = 4,
    /// `route \0 seq (u64 BE)` -> `RouteRecord`: the durable queue of each
    /// hub route.
    RouteQueue = 5,
    /// `route` -> route definition (JSON): the hub routes made through the
    /// admin API on a node without a cluster.
    HubRoutes = 6,
    /// `node (u64 BE) seq (u64 BE)` -> a copy of a message forwarded to a
    /// peer node that was down, kept until that node acknowledges it.
    Forwards = 7,
    /// `client_id \0 batch_id (u64 BE) kind (u8)` -> a batch of outgoing
    /// messages (kind 0) or the acknowledgements of one (kind 1): format
    /// version 3 of the outgoing messages, see `batches.rs`.
    OutgoingBatches = 8,
    /// `client_id \0 seq (u64 BE)` -> `OutgoingRecord` (as `outgoing`,
    /// format version 2): another node's session queue kept here as its
    /// replica, see `replica.rs`.
    ReplicaOutgoing = 9,
    /// `client_id \0 packet_id (u16 BE)` -> version byte only (as
    /// `incoming_qos2`), for a session replicated here.
    ReplicaIncoming = 10,
    /// `client_id` -> `ReplicaMeta`: which node owns a session replicated
    /// here and how far it has shipped.
    ReplicaMeta = 11,
    /// `origin (u64 BE) node (u64 BE) seq (u64 BE)` -> a copy as in
    /// `forwards`: another node's kept forward shipped here so that it
    /// survives the loss of that node's disk, see `replica.rs`.
    ReplicaForwards = 12,
}

impl TreeId {
    /// Every tree, in the order of their indices.
    pub(crate) const ALL: [TreeId; 13] = [
        TreeId::Sessions,
        TreeId::Subscriptions,
        TreeId::Outgoing,
        TreeId::IncomingQos2,
        TreeId::Retained,
        TreeId::RouteQueue,
        TreeId::HubRoutes,
        TreeId::Forwards,
        TreeId::OutgoingBatches,
        TreeId::ReplicaOutgoing,
        TreeId::ReplicaIncoming,
        TreeId::ReplicaMeta,
        TreeId::ReplicaForwards,
    ];

    /// The trees whose keys start with `client_id \0` and that hold a
    /// session's own records (`DeleteSession` empties them; the replica
    /// trees are not among them).
    pub(crate) const PER_CLIENT: [TreeId; 4] = [
        TreeId::Subscriptions,
        TreeId::Outgoing,
        TreeId::IncomingQos2,
        TreeId::OutgoingBatches,
    ];

    /// The trees whose keys start with `client_id \0` and that hold a
    /// replica of another node's session (`DropReplica` empties them, with
    /// the client's key in `replica_meta`).
    pub(crate) const REPLICA_PER_CLIENT: [TreeId; 2] =
        [TreeId::ReplicaOutgoing, TreeId::ReplicaIncoming];

    /// The sled tree name, also used in error messages.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            TreeId::Sessions => "sessions",
            TreeId::Subscriptions => "subscriptions",
            TreeId::Outgoing => "outgoing",
            TreeId::IncomingQos2 => "incoming_qos2",
            TreeId::Retained => "retained",
            TreeId::RouteQueue => "route_queue",
            TreeId::HubRoutes => "hub_routes",
            TreeId::Forwards => "forwards",
            TreeId::OutgoingBatches => "outgoing_batches",
            TreeId::ReplicaOutgoing => "replica_outgoing",
            TreeId::ReplicaIncoming => "replica_incoming",
            TreeId::ReplicaMeta => "replica_meta",
            TreeId::ReplicaForwards => "replica_forwards",
        }
    }

    /// Index into per-tree arrays.
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// Separator between the client id and the rest of a per-client key.
pub(crate) const SEPARATOR: u8 = 0;

/// Refuses client ids that would break the prefix property of per-client keys.
pub(crate) fn check_client_id(client_id: &str) -> Result<()> {
    if client_id.as_bytes().contains(&SEPARATOR) {
        return Err(Error::InvalidWrite {
            reason: format!(
                "client id {:?} contains U+0000, which MQTT forbids [MQTT-1.5.4-2]",
                client_id
            ),
        });
    }
    Ok(())
}

/// Key in `sessions`.
pub(crate) fn session(client_id: &str) -> Vec<u8> {
    client_id.as_bytes().to_vec()
}

/// Key in `replica_meta`: the client id alone, as in `sessions`.
pub(crate) fn replica_meta(client_id: &str) -> Vec<u8> {
    session(client_id)
}

/// `client_id \0`: the prefix of all of one client's keys in the per-client trees.
pub(crate) fn client_prefix(client_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(client_id.len() + 1);
    key.extend_from_slice(client_id.as_bytes());
    key.push(SEPARATOR);
    key
}

/// Key in `subscriptions`: `client_id \0 filter`.
pub(crate) fn subscription(client_id: &str, filter: &str) -> Vec<u8> {
    let mut key = client_prefix(client_id);
    key.extend_from_slice(filter.as_bytes());
    key
}

/// Key in `outgoing` and `replica_outgoing`: `client_id \0 seq` with `seq`
/// big-endian.
pub(crate) fn outgoing(client_id: &str, seq: u64) -> Vec<u8> {
    let mut key = client_prefix(client_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// What an `outgoing_batches` key names (its last byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BatchKind {
    /// The batch's messages.
    Messages = 0,
    /// Which of the batch's messages are acknowledged or replaced.
    Acks = 1,
}

/// Key in `outgoing_batches`: `client_id \0 batch_id kind`, `batch_id`
/// big-endian, so a scan returns a client's batches in the order they were
/// written, each followed by its acks.
pub(crate) fn outgoing_batch(client_id: &str, batch_id: u64, kind: BatchKind) -> Vec<u8> {
    let mut key = client_prefix(client_id);
    key.extend_from_slice(&batch_id.to_be_bytes());
    key.push(kind as u8);
    key
}

/// Decodes an `outgoing_batches` key found by a scan of `prefix` back to
/// `(batch_id, kind)`.
pub(crate) fn decode_outgoing_batch(prefix: &[u8], key: &[u8]) -> Result<(u64, BatchKind)> {
    let tree = TreeId::OutgoingBatches;
    let suffix = suffix::<9>(tree, prefix, key)?;
    let (id, kind) = suffix.split_at(8);
    let id = u64::from_be_bytes(id.try_into().expect("8 bytes"));
    match kind[0] {
        0 => Ok((id, BatchKind::Messages)),
        1 => Ok((id, BatchKind::Acks)),
        k => Err(Error::corrupt(
            tree.name(),
            key,
            format!("unknown batch record kind {k}"),
        )),
    }
}

/// Key in `incoming_qos2` and `replica_incoming`: `client_id \0 packet_id`
/// with `packet_id` big-endian.
pub(crate) fn incoming_qos2(client_id: &str, packet_id: u16) -> Vec<u8> {
    let mut key = client_prefix(client_id);
    key.extend_from_slice(&packet_id.to_be_bytes());
    key
}

/// Refuses route names that would break the prefix property of
/// `route_queue` keys (the hub allows only `[A-Za-z0-9_-]+`).
pub(crate) fn check_route(route: &str) -> Result<()> {
    if route.is_empty() || route.as_bytes().contains(&SEPARATOR) {
        return Err(Error::InvalidWrite {
            reason: format!("route name {route:?} is empty or contains U+0000"),
        });
    }
    Ok(())
}

/// `route \0`: the prefix of one route's queue in `route_queue`.
pub(crate) fn route_prefix(route: &str) -> Vec<u8> {
    client_prefix(route)
}

/// Key in `route_queue`: `route \0 seq` with `seq` big-endian.
pub(crate) fn route_queue(route: &str, seq: u64) -> Vec<u8> {
    let mut key = route_prefix(route);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Decodes the `seq` of a `route_queue` key found by a scan of `prefix`.
pub(crate) fn decode_route_seq(prefix: &[u8], key: &[u8]) -> Result<u64> {
    suffix::<8>(TreeId::RouteQueue, prefix, key).map(u64::from_be_bytes)
}

/// Key in `forwards`: `node seq`, both big-endian, so a scan returns one
/// node's copies in the order they were stored.
pub(crate) fn forward(node: u64, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&node.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Decodes a `forwards` key back to `(node, seq)`.
pub(crate) fn decode_forward(key: &[u8]) -> Result<(u64, u64)> {
    let key16 = <[u8; 16]>::try_from(key).map_err(|_| {
        Error::corrupt(
            TreeId::Forwards.name(),
            key,
            "expected a 16-byte node and seq",
        )
    })?;
    let (node, seq) = key16.split_at(8);
    Ok((
        u64::from_be_bytes(node.try_into().expect("8 bytes")),
        u64::from_be_bytes(seq.try_into().expect("8 bytes")),
    ))
}

/// `origin`: the prefix of the copies `origin` kept, in `replica_forwards`.
pub(crate) fn replica_forward_prefix(origin: u64) -> [u8; 8] {
    origin.to_be_bytes()
}

/// Key in `replica_forwards`: `origin node seq`, each big-endian, so a scan
/// of one origin returns its copies as its own `forwards` tree orders them.
pub(crate) fn replica_forward(origin: u64, node: u64, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&replica_forward_prefix(origin));
    key.extend_from_slice(&forward(node, seq));
    key
}

/// Decodes a `replica_forwards` key back to `(origin, node, seq)`.
pub(crate) fn decode_replica_forward(key: &[u8]) -> Result<(u64, u64, u64)> {
    let key24 = <[u8; 24]>::try_from(key).map_err(|_| {
        Error::corrupt(
            TreeId::ReplicaForwards.name(),
            key,
            "expected a 24-byte origin, node and seq",
        )
    })?;
    let [origin, node, seq] = [0, 8, 16]
        .map(|at| u64::from_be_bytes(key24[at..at + 8].try_into().expect("8 of 24 bytes")));
    Ok((origin, node, seq))
}

/// Key in `retained`.
pub(crate) fn retained(topic: &str) -> Vec<u8> {
    topic.as_bytes().to_vec()
}

/// Decodes a `sessions` key back to the client id.
pub(crate) fn decode_session(key: &[u8]) -> Result<String> {
    decode_client_id(TreeId::Sessions, key)
}

/// Decodes a key that is a client id alone (`sessions`, `replica_meta`).
pub(crate) fn decode_client_id(tree: TreeId, key: &[u8]) -> Result<String> {
    let corrupt = |reason: &str| Error::corrupt(tree.name(), key, reason);
    let client_id = std::str::from_utf8(key).map_err(|_| corrupt("client id is not UTF-8"))?;
    if key.contains(&SEPARATOR) {
        return Err(corrupt("client id contains U+0000"));
    }
    Ok(client_id.to_owned())
}

/// The fixed-size suffix of a per-client key found by a scan of `prefix`.
fn suffix<const N: usize>(tree: TreeId, prefix: &[u8], key: &[u8]) -> Result<[u8; N]> {
    key.strip_prefix(prefix)
        .and_then(|rest| <[u8; N]>::try_from(rest).ok())
        .ok_or_else(|| {
            Error::corrupt(
                tree.name(),
                key,
                format!("expected client prefix and a {N}-byte suffix"),
            )
        })
}

/// Decodes the `seq` of an `outgoing` key found by a scan of `prefix`.
pub(crate) fn decode_outgoing_seq(prefix: &[u8], key: &[u8]) -> Result<u64> {
    decode_seq(TreeId::Outgoing, prefix, key)
}

/// Decodes the `seq` of a `client_id \0 seq` key of `tree` found by a scan
/// of `prefix`.
pub(crate) fn decode_seq(tree: TreeId, prefix: &[u8], key: &[u8]) -> Result<u64> {
    suffix::<8>(tree, prefix, key).map(u64::from_be_bytes)
}

/// Decodes the `packet_id` of an `incoming_qos2` key found by a scan of `prefix`.
pub(crate) fn decode_incoming_packet_id(prefix: &[u8], key: &[u8]) -> Result<u16> {
    decode_packet_id(TreeId::IncomingQos2, prefix, key)
}

/// Decodes the `packet_id` of a `client_id \0 packet_id` key of `tree`
/// found by a scan of `prefix`.
pub(crate) fn decode_packet_id(tree: TreeId, prefix: &[u8], key: &[u8]) -> Result<u16> {
    suffix::<2>(tree, prefix, key).map(u16::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_keys_sort_by_seq_within_a_client() {
        let seqs = [0u64, 1, 255, 256, 65_535, 1 << 40, u64::MAX];
        let keys: Vec<_> = seqs.iter().map(|&s| outgoing("c", s)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn incoming_keys_sort_by_packet_id_within_a_client() {
        let ids = [1u16, 2, 255, 256, 65_535];
        let keys: Vec<_> = ids.iter().map(|&p| incoming_qos2("c", p)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn route_queue_keys_sort_by_seq_and_decode_back() {
        let seqs = [0u64, 1, 256, 1 << 40, u64::MAX];
        let keys: Vec<_> = seqs.iter().map(|&s| route_queue("r", s)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(!route_queue("rest-2", 0).starts_with(&route_prefix("rest")));
        let prefix = route_prefix("rest");
        assert_eq!(
            decode_route_seq(&prefix, &route_queue("rest", 9)).unwrap(),
            9
        );
        let err = decode_route_seq(&prefix, b"rest\0\x01").unwrap_err();
        assert!(err.to_string().contains("tree `route_queue`"), "{err}");
        assert!(check_route("a\0b").is_err() && check_route("").is_err());
    }

    #[test]
    fn client_prefix_does_not_match_a_longer_client_id() {
        let prefix = client_prefix("ab");
        assert!(outgoing("ab", 7).starts_with(&prefix));
        assert!(subscription("ab", "x/#").starts_with(&prefix));
        assert!(!outgoing("abc", 7).starts_with(&prefix));
        assert!(!subscription("abc", "").starts_with(&prefix));
        // The shorter id's records sort before the longer one's.
        assert!(outgoing("ab", u64::MAX) < outgoing("abc", 0));
    }

    #[test]
    fn keys_decode_back() {
        let prefix = client_prefix("dev-1");
        assert_eq!(
            decode_outgoing_seq(&prefix, &outgoing("dev-1", 42)).unwrap(),
            42
        );
        assert_eq!(
            decode_incoming_packet_id(&prefix, &incoming_qos2("dev-1", 9)).unwrap(),
            9
        );
        assert_eq!(decode_session(&session("dev-1")).unwrap(), "dev-1");
    }

    #[test]
    fn malformed_keys_are_rejected_naming_the_tree() {
        let prefix = client_prefix("c");
        let err = decode_outgoing_seq(&prefix, b"c\0\x01\x02").unwrap_err();
        assert!(err.to_string().contains("tree `outgoing`"), "{err}");
        let err = decode_incoming_packet_id(&prefix, b"c\0\x01\x02\x03").unwrap_err();
        assert!(err.to_string().contains("tree `incoming_qos2`"), "{err}");
        let err = decode_session(b"\xff\xfe").unwrap_err();
        assert!(err.to_string().contains("tree `sessions`"), "{err}");
        let err = decode_seq(TreeId::ReplicaOutgoing, &prefix, b"c\0\x01").unwrap_err();
        assert!(err.to_string().contains("tree `replica_outgoing`"), "{err}");
        let err = decode_packet_id(TreeId::ReplicaIncoming, &prefix, b"c\0\x01").unwrap_err();
        assert!(err.to_string().contains("tree `replica_incoming`"), "{err}");
        let err = decode_client_id(TreeId::ReplicaMeta, b"a\0b").unwrap_err();
        assert!(err.to_string().contains("tree `replica_meta`"), "{err}");
    }

    #[test]
    fn replica_trees_are_not_among_a_sessions_own_trees() {
        for tree in TreeId::REPLICA_PER_CLIENT {
            assert!(!TreeId::PER_CLIENT.contains(&tree), "{}", tree.name());
        }
        for (i, tree) in TreeId::ALL.iter().enumerate() {
            assert_eq!(tree.index(), i, "{}", tree.name());
        }
    }

    #[test]
    fn replica_forward_keys_are_24_bytes_big_endian_and_decode_back() {
        let key = replica_forward(1, 0x0203, 0x0405_0607);
        assert_eq!(
            key,
            [
                [0, 0, 0, 0, 0, 0, 0, 1],
                [0, 0, 0, 0, 0, 0, 2, 3],
                [0, 0, 0, 0, 4, 5, 6, 7],
            ]
            .concat()
        );
        assert!(key.starts_with(&replica_forward_prefix(1)));
        assert_eq!(
            decode_replica_forward(&key).unwrap(),
            (1, 0x0203, 0x0405_0607)
        );
        let max = replica_forward(u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(
            decode_replica_forward(&max).unwrap(),
            (u64::MAX, u64::MAX, u64::MAX)
        );
        // by origin, then node, then seq
        let keys = [(1, 0, 5), (1, 2, 0), (1, 2, 256), (2, 0, 0)]
            .map(|(o, n, s)| replica_forward(o, n, s));
        let mut sorted = keys.to_vec();
        sorted.sort();
        assert_eq!(keys.to_vec(), sorted);
        for len in [0, 8, 16, 23, 25] {
            let err = decode_replica_forward(&vec![0; len]).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{len}: {err:?}");
            assert!(err.to_string().contains("tree `replica_forwards`"), "{err}");
            assert!(err.to_string().contains("24-byte"), "{err}");
        }
    }

    #[test]
    fn batch_keys_sort_by_id_then_kind_and_decode_back() {
        let keys = [
            outgoing_batch("c", 0, BatchKind::Messages),
            outgoing_batch("c", 0, BatchKind::Acks),
            outgoing_batch("c", 1, BatchKind::Messages),
            outgoing_batch("c", 256, BatchKind::Messages),
            outgoing_batch("c", 256, BatchKind::Acks),
        ];
        let mut sorted = keys.to_vec();
        sorted.sort();
        assert_eq!(keys.to_vec(), sorted);
        let prefix = client_prefix("c");
        assert_eq!(
            decode_outgoing_batch(&prefix, &keys[4]).unwrap(),
            (256, BatchKind::Acks)
        );
        let err = decode_outgoing_batch(&prefix, b"c\0\0\0\0\0\0\0\0\x01\x02").unwrap_err();
        assert!(
            err.to_string().contains("unknown batch record kind 2"),
            "{err}"
        );
        let err = decode_outgoing_batch(&prefix, b"c\0\0\0\0\0\0\0\0\x01").unwrap_err();
        assert!(err.to_string().contains("9-byte suffix"), "{err}");
    }

    #[test]
    fn client_id_with_nul_is_refused_mqtt_1_5_4_2() {
        assert!(check_client_id("a\0b").is_err());
        assert!(check_client_id("").is_ok());
        assert!(check_client_id("ünïcödé").is_ok());
    }
}
