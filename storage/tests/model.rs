//! Model test: random write ops, commits and reboots go to the store and to a
//! `BTreeMap` model; every load must match the model (after sled's
//! `fuzz/fuzz_targets/fuzz_model.rs`). Set `PROPTEST_CASES` for a longer run.
//!
//! Outgoing messages come as single ops and as runs of consecutive seqs for
//! one client (a queue filling: one batch per group, see `src/batches.rs`),
//! deletes and Released states then land inside batches, and a reboot may
//! add per-message records the way a build before batches wrote them, so
//! the two formats mix under every op.
//!
//! Replica ops (`replica_*` trees) go to the same clients as the session
//! ops, so `DeleteSession` and `DropReplica` of one client id are checked to
//! leave each other's records alone; replica forwards use the same node
//! and seq numbers as the node's own forwards, so `DeleteForward` and
//! `DropReplicaForwards` are checked to leave each other's records alone.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use common::config;
use proptest::prelude::*;
use storage::{
    GroupCommitter, OutgoingRecord, Replica, ReplicaMeta, RouteRecord, SessionRecord, Store,
    StoredMessage, SubscriptionRecord, WriteOp,
};

/// Client ids chosen so that some are prefixes of others.
const CLIENTS: [&str; 5] = ["", "a", "ab", "abc", "b"];
const FILTERS: [&str; 3] = ["#", "a/+", "a/b"];
const TOPICS: [&str; 3] = ["t", "t/1", "u"];
/// Route names chosen so that one is a prefix of another.
const ROUTES: [&str; 3] = ["r", "r-2", "s"];

#[derive(Clone, Debug)]
enum Action {
    /// One `submit`: its ops are queued, not yet applied.
    Submit(Vec<WriteOp>),
    /// `GroupCommitter::step`: applies everything queued as one group.
    Step,
    /// Close without committing what is queued (it is lost), then reopen.
    Reboot,
    /// As `Reboot`, writing these outgoing records in between as a build
    /// from before batches would have (one key each, format version 2),
    /// for the seqs the store does not hold.
    RebootWithOldRecords(Vec<(String, u64, OutgoingRecord)>),
}

/// Outgoing seqs: few enough that puts, deletes and runs meet.
const SEQS: u64 = 16;

fn outgoing_record() -> impl Strategy<Value = OutgoingRecord> {
    (any::<bool>(), any::<u64>(), message()).prop_map(|(released, uid, message)| OutgoingRecord {
        released,
        uid,
        message,
    })
}

/// A run of puts for one client with consecutive seqs, as a queue fills.
fn outgoing_run() -> impl Strategy<Value = Vec<WriteOp>> {
    (client(), 0..SEQS, 1..10u64, outgoing_record()).prop_map(|(client_id, first, len, record)| {
        (first..first + len)
            .map(|seq| WriteOp::PutOutgoing {
                client_id: client_id.clone(),
                seq,
                record: OutgoingRecord {
                    uid: seq,
                    ..record.clone()
                },
            })
            .collect()
    })
}

/// An `outgoing` value of format version 2, as a build before batches
/// wrote it (encoded here, not by the store).
fn old_outgoing_value(r: &OutgoingRecord) -> Vec<u8> {
    let m = &r.message;
    let mut v = vec![2, u8::from(r.released)];
    v.extend_from_slice(&r.uid.to_be_bytes());
    for field in [m.topic.as_bytes(), &m.payload] {
        v.extend_from_slice(&(field.len() as u32).to_be_bytes());
        v.extend_from_slice(field);
    }
    v.push(m.qos);
    v.push(u8::from(m.retain));
    v.extend_from_slice(&(m.properties.len() as u32).to_be_bytes());
    v.extend_from_slice(&m.properties);
    match m.expires_at_ms {
        Some(t) => {
            v.push(1);
            v.extend_from_slice(&t.to_be_bytes());
        }
        None => v.push(0),
    }
    v
}

fn client() -> impl Strategy<Value = String> {
    prop::sample::select(&CLIENTS[..]).prop_map(str::to_owned)
}

fn message() -> impl Strategy<Value = StoredMessage> {
    (
        prop::sample::select(&TOPICS[..]),
        prop::collection::vec(any::<u8>(), 0..8),
        0..=2u8,
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..3),
        prop::option::of(any::<u64>()),
    )
        .prop_map(
            |(topic, payload, qos, retain, properties, expires_at_ms)| StoredMessage {
                topic: topic.to_owned(),
                payload: Bytes::from(payload),
                qos,
                retain,
                properties: Bytes::from(properties),
                expires_at_ms,
            },
        )
}

fn write_op() -> impl Strategy<Value = WriteOp> {
    let session = (any::<u8>(), any::<u32>(), prop::option::of(any::<u64>())).prop_map(
        |(protocol_level, session_expiry_interval, disconnected_at_ms)| SessionRecord {
            protocol_level,
            session_expiry_interval,
            disconnected_at_ms,
        },
    );
    let subscription = (
        prop::sample::select(&FILTERS[..]),
        0..=2u8,
        any::<bool>(),
        any::<bool>(),
        0..=2u8,
        prop::option::of(any::<u32>()),
    )
        .prop_map(
            |(filter, qos, no_local, rap, retain_handling, id)| SubscriptionRecord {
                filter: filter.to_owned(),
                qos,
                no_local,
                retain_as_published: rap,
                retain_handling,
                subscription_identifier: id,
            },
        );
    let outgoing = outgoing_record();
    prop_oneof![
        1 => (client(), session).prop_map(|(client_id, record)| WriteOp::PutSession { client_id, record }),
        1 => client().prop_map(|client_id| WriteOp::DeleteSession { client_id }),
        1 => (client(), subscription)
            .prop_map(|(client_id, record)| WriteOp::PutSubscription { client_id, record }),
        1 => (client(), prop::sample::select(&FILTERS[..])).prop_map(|(client_id, filter)| {
            WriteOp::DeleteSubscription { client_id, filter: filter.to_owned() }
        }),
        3 => (client(), 0..SEQS, outgoing)
            .prop_map(|(client_id, seq, record)| WriteOp::PutOutgoing { client_id, seq, record }),
        4 => (client(), 0..SEQS).prop_map(|(client_id, seq)| WriteOp::DeleteOutgoing { client_id, seq }),
        1 => (client(), 0..4u16)
            .prop_map(|(client_id, packet_id)| WriteOp::PutIncomingQos2 { client_id, packet_id }),
        1 => (client(), 0..4u16)
            .prop_map(|(client_id, packet_id)| WriteOp::DeleteIncomingQos2 { client_id, packet_id }),
        1 => message().prop_map(|message| WriteOp::PutRetained { message }),
        1 => prop::sample::select(&TOPICS[..])
            .prop_map(|topic| WriteOp::DeleteRetained { topic: topic.to_owned() }),
        2 => (prop::sample::select(&ROUTES[..]), 0..6u64, any::<u64>(), client(), message())
            .prop_map(|(route, seq, uid, client_id, message)| WriteOp::PutRouteMessage {
                route: route.to_owned(),
                seq,
                record: RouteRecord { uid, client_id, received_at_ms: seq * 7, message },
            }),
        1 => (prop::sample::select(&ROUTES[..]), 0..6u64)
            .prop_map(|(route, seq)| WriteOp::DeleteRouteMessage { route: route.to_owned(), seq }),
        1 => prop::sample::select(&ROUTES[..])
            .prop_map(|route| WriteOp::DeleteRouteQueue { route: route.to_owned() }),
        1 => (prop::sample::select(&ROUTES[..]), prop::sample::select(&TOPICS[..]))
            .prop_map(|(route, d)| WriteOp::PutHubRoute { route: route.to_owned(), definition: d.to_owned() }),
        1 => prop::sample::select(&ROUTES[..])
            .prop_map(|route| WriteOp::DeleteHubRoute { route: route.to_owned() }),
        2 => (1..4u64, 0..6u64, prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(node, seq, copy)| WriteOp::PutForward { node, seq, copy: copy.into() }),
        1 => (1..4u64, 0..6u64).prop_map(|(node, seq)| WriteOp::DeleteForward { node, seq }),
        2 => (client(), 0..SEQS, outgoing_record()).prop_map(|(client_id, seq, record)| {
            WriteOp::PutReplicaOutgoing { client_id, seq, record }
        }),
        2 => (client(), 0..SEQS)
            .prop_map(|(client_id, seq)| WriteOp::DeleteReplicaOutgoing { client_id, seq }),
        1 => (client(), 0..4u16)
            .prop_map(|(client_id, packet_id)| WriteOp::PutReplicaIncoming { client_id, packet_id }),
        1 => (client(), 0..4u16)
            .prop_map(|(client_id, packet_id)| WriteOp::DeleteReplicaIncoming { client_id, packet_id }),
        1 => (client(), 1..4u64, 0..SEQS).prop_map(|(client_id, owner, max_seq)| {
            WriteOp::PutReplicaMeta { client_id, meta: ReplicaMeta { owner, max_seq } }
        }),
        1 => client().prop_map(|client_id| WriteOp::DropReplica { client_id }),
        1 => (client(), 1..4u64).prop_map(|(client_id, owner)| WriteOp::DropReplicaOf { client_id, owner }),
        3 => (1..4u64, 1..4u64, 0..6u64, prop::collection::vec(any::<u8>(), 0..40)).prop_map(
            |(origin, node, seq, copy)| WriteOp::PutReplicaForward { origin, node, seq, copy: copy.into() },
        ),
        1 => (1..4u64, 1..4u64, 0..6u64)
            .prop_map(|(origin, node, seq)| WriteOp::DeleteReplicaForward { origin, node, seq }),
        2 => (1..4u64).prop_map(|origin| WriteOp::DropReplicaForwards { origin }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => prop::collection::vec(write_op(), 0..4).prop_map(Action::Submit),
        2 => outgoing_run().prop_map(Action::Submit),
        3 => Just(Action::Step),
        1 => Just(Action::Reboot),
        1 => prop::collection::vec((client(), 0..SEQS, outgoing_record()), 1..6)
            .prop_map(Action::RebootWithOldRecords),
    ]
}

#[derive(Default, Debug)]
struct Model {
    sessions: BTreeMap<String, SessionRecord>,
    subscriptions: BTreeMap<(String, String), SubscriptionRecord>,
    outgoing: BTreeMap<(String, u64), OutgoingRecord>,
    incoming_qos2: BTreeSet<(String, u16)>,
    retained: BTreeMap<String, StoredMessage>,
    route_queue: BTreeMap<(String, u64), RouteRecord>,
    hub_routes: BTreeMap<String, String>,
    forwards: BTreeMap<(u64, u64), bytes::Bytes>,
    replica_outgoing: BTreeMap<(String, u64), OutgoingRecord>,
    replica_incoming: BTreeSet<(String, u16)>,
    replica_meta: BTreeMap<String, ReplicaMeta>,
    replica_forwards: BTreeMap<(u64, u64, u64), bytes::Bytes>,
}

impl Model {
    fn apply(&mut self, op: WriteOp) {
        match op {
            WriteOp::PutSession { client_id, record } => {
                self.sessions.insert(client_id, record);
            }
            WriteOp::DeleteSession { client_id } => {
                self.sessions.remove(&client_id);
                self.subscriptions.retain(|(c, _), _| *c != client_id);
                self.outgoing.retain(|(c, _), _| *c != client_id);
                self.incoming_qos2.retain(|(c, _)| *c != client_id);
            }
            WriteOp::PutSubscription { client_id, record } => {
                self.subscriptions
                    .insert((client_id, record.filter.clone()), record);
            }
            WriteOp::DeleteSubscription { client_id, filter } => {
                self.subscriptions.remove(&(client_id, filter));
            }
            WriteOp::PutOutgoing {
                client_id,
                seq,
                record,
            } => {
                self.outgoing.insert((client_id, seq), record);
            }
            WriteOp::DeleteOutgoing { client_id, seq } => {
                self.outgoing.remove(&(client_id, seq));
            }
            WriteOp::PutIncomingQos2 {
                client_id,
                packet_id,
            } => {
                self.incoming_qos2.insert((client_id, packet_id));
            }
            WriteOp::DeleteIncomingQos2 {
                client_id,
                packet_id,
            } => {
                self.incoming_qos2.remove(&(client_id, packet_id));
            }
            WriteOp::PutRetained { message } => {
                self.retained.insert(message.topic.clone(), message);
            }
            WriteOp::DeleteRetained { topic } => {
                self.retained.remove(&topic);
            }
            WriteOp::PutRouteMessage { route, seq, record } => {
                self.route_queue.insert((route, seq), record);
            }
            WriteOp::DeleteRouteMessage { route, seq } => {
                self.route_queue.remove(&(route, seq));
            }
            WriteOp::DeleteRouteQueue { route } => {
                self.route_queue.retain(|(r, _), _| *r != route);
            }
            WriteOp::PutHubRoute { route, definition } => {
                self.hub_routes.insert(route, definition);
            }
            WriteOp::DeleteHubRoute { route } => {
                self.hub_routes.remove(&route);
            }
            WriteOp::PutForward { node, seq, copy } => {
                self.forwards.insert((node, seq), copy);
            }
            WriteOp::DeleteForward { node, seq } => {
                self.forwards.remove(&(node, seq));
            }
            WriteOp::PutReplicaOutgoing {
                client_id,
                seq,
                record,
            } => {
                self.replica_outgoing.insert((client_id, seq), record);
            }
            WriteOp::DeleteReplicaOutgoing { client_id, seq } => {
                self.replica_outgoing.remove(&(client_id, seq));
            }
            WriteOp::PutReplicaIncoming {
                client_id,
                packet_id,
            } => {
                self.replica_incoming.insert((client_id, packet_id));
            }
            WriteOp::DeleteReplicaIncoming {
                client_id,
                packet_id,
            } => {
                self.replica_incoming.remove(&(client_id, packet_id));
            }
            WriteOp::PutReplicaMeta { client_id, meta } => {
                self.replica_meta.insert(client_id, meta);
            }
            WriteOp::DropReplica { client_id } => self.drop_replica(&client_id),
            WriteOp::DropReplicaOf { client_id, owner } => {
                if self.replica_meta.get(&client_id).map(|m| m.owner) == Some(owner) {
                    self.drop_replica(&client_id);
                }
            }
            WriteOp::PutReplicaForward {
                origin,
                node,
                seq,
                copy,
            } => {
                self.replica_forwards.insert((origin, node, seq), copy);
            }
            WriteOp::DeleteReplicaForward { origin, node, seq } => {
                self.replica_forwards.remove(&(origin, node, seq));
            }
            WriteOp::DropReplicaForwards { origin } => {
                self.replica_forwards.retain(|(o, _, _), _| *o != origin);
            }
        }
    }

    fn drop_replica(&mut self, client_id: &str) {
        self.replica_meta.remove(client_id);
        self.replica_outgoing.retain(|(c, _), _| c != client_id);
        self.replica_incoming.retain(|(c, _)| c != client_id);
    }

    fn check(&self, store: &Store) -> Result<(), TestCaseError> {
        let sessions: Vec<_> = self.sessions.clone().into_iter().collect();
        prop_assert_eq!(store.load_sessions().unwrap(), sessions);
        for client in CLIENTS {
            let subscriptions: Vec<_> = self
                .subscriptions
                .iter()
                .filter(|((c, _), _)| c == client)
                .map(|(_, r)| r.clone())
                .collect();
            prop_assert_eq!(store.load_subscriptions(client).unwrap(), subscriptions);
            let outgoing: Vec<_> = self
                .outgoing
                .iter()
                .filter(|((c, _), _)| c == client)
                .map(|((_, seq), r)| (*seq, r.clone()))
                .collect();
            prop_assert_eq!(store.load_outgoing(client).unwrap(), outgoing);
            let incoming: Vec<_> = self
                .incoming_qos2
                .iter()
                .filter(|(c, _)| c == client)
                .map(|(_, p)| *p)
                .collect();
            prop_assert_eq!(store.load_incoming_qos2(client).unwrap(), incoming);
            let replica = self.replica_meta.get(client).map(|meta| Replica {
                owner: meta.owner,
                max_seq: meta.max_seq,
                outgoing: self
                    .replica_outgoing
                    .iter()
                    .filter(|((c, _), _)| c == client)
                    .map(|((_, seq), r)| (*seq, r.clone()))
                    .collect(),
                incoming_qos2: self
                    .replica_incoming
                    .iter()
                    .filter(|(c, _)| c == client)
                    .map(|(_, p)| *p)
                    .collect(),
            });
            prop_assert_eq!(store.load_replica(client).unwrap(), replica);
        }
        let replica_clients: Vec<_> = self.replica_meta.clone().into_iter().collect();
        prop_assert_eq!(store.load_replica_clients().unwrap(), replica_clients);
        let retained: Vec<_> = self.retained.values().cloned().collect();
        prop_assert_eq!(store.load_retained().unwrap(), retained);
        let hub_routes: Vec<_> = self.hub_routes.clone().into_iter().collect();
        prop_assert_eq!(store.load_hub_routes().unwrap(), hub_routes);
        let forwards: Vec<_> = self
            .forwards
            .iter()
            .map(|(&(node, seq), copy)| (node, seq, copy.clone()))
            .collect();
        prop_assert_eq!(store.load_forwards().unwrap(), forwards);
        let origins: BTreeSet<u64> = self.replica_forwards.keys().map(|k| k.0).collect();
        prop_assert_eq!(
            store.load_replica_forward_origins().unwrap(),
            origins.into_iter().collect::<Vec<_>>()
        );
        for origin in 1..4u64 {
            let copies: Vec<_> = self
                .replica_forwards
                .iter()
                .filter(|((o, _, _), _)| *o == origin)
                .map(|(&(_, node, seq), copy)| (node, seq, copy.clone()))
                .collect();
            prop_assert_eq!(store.load_replica_forwards(origin).unwrap(), copies);
        }
        for route in ROUTES {
            let queue: Vec<_> = self
                .route_queue
                .iter()
                .filter(|((r, _), _)| r == route)
                .map(|((_, seq), record)| (*seq, record.clone()))
                .collect();
            prop_assert_eq!(store.load_route_queue(route).unwrap(), queue);
        }
        Ok(())
    }
}

fn open(dir: &std::path::Path) -> (Store, GroupCommitter) {
    Store::open_with_committer(&config(dir)).expect("open store")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_a_btreemap_model(actions in prop::collection::vec(action(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut committer) = open(dir.path());
        let mut model = Model::default();
        let mut queued: Vec<WriteOp> = Vec::new();
        for action in actions {
            match action {
                Action::Submit(ops) => {
                    queued.extend(ops.iter().cloned());
                    store.writer().submit(ops, None);
                }
                Action::Step => {
                    committer.step();
                    queued.drain(..).for_each(|op| model.apply(op));
                    model.check(&store)?;
                }
                Action::Reboot => {
                    store.close().unwrap();
                    drop(committer);
                    queued.clear();
                    (store, committer) = open(dir.path());
                    model.check(&store)?;
                }
                Action::RebootWithOldRecords(records) => {
                    store.close().unwrap();
                    drop(committer);
                    queued.clear();
                    {
                        let db = common::sled_open(dir.path());
                        let tree = db.open_tree("outgoing").unwrap();
                        for (client_id, seq, record) in records {
                            if model.outgoing.contains_key(&(client_id.clone(), seq)) {
                                continue;
                            }
                            let mut key = format!("{client_id}\0").into_bytes();
                            key.extend_from_slice(&seq.to_be_bytes());
                            tree.insert(key, old_outgoing_value(&record)).unwrap();
                            model.outgoing.insert((client_id, seq), record);
                        }
                        db.flush().unwrap();
                    }
                    (store, committer) = open(dir.path());
                    model.check(&store)?;
                }
            }
        }
        committer.step();
        queued.drain(..).for_each(|op| model.apply(op));
        model.check(&store)?;
    }
}
