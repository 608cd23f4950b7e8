//! What a session replica is in the store (issue 12; ARCHITECTURE
//! section 5.6): the writes for a shipped request, a stored replica as the
//! cluster's type, the state of a session taken over from one, and the
//! puts a request need not carry.

use std::collections::{HashMap, HashSet};

/// The store's writes for what `owner` shipped here: its sessions'
/// replicas, and second copies of the copies it keeps for nodes that are
/// down.
pub fn replica_ops(owner: u64, batch: cluster::ReplicaBatch) -> Vec<storage::WriteOp> {
    use storage::WriteOp;
    let mut ops = session_replica_ops(owner, batch.updates);
    for k in batch.keep {
        ops.push(WriteOp::PutReplicaForward {
            origin: owner,
            node: k.node,
            seq: k.seq,
            copy: k.copy,
        });
    }
    for (node, seq) in batch.forget {
        ops.push(WriteOp::DeleteReplicaForward {
            origin: owner,
            node,
            seq,
        });
    }
    ops
}

/// One meta write per client per request, and only where the highest seq
/// can have changed (a reset, a new copy, or a completed one whose put was
/// left out): each sled write costs the
/// replica several microseconds, and a request carries many changes.
fn session_replica_ops(owner: u64, updates: Vec<cluster::ReplicaUpdate>) -> Vec<storage::WriteOp> {
    use storage::WriteOp;
    let mut ops = Vec::new();
    let mut metas: HashMap<String, u64> = HashMap::new();
    for u in updates {
        let client_id = u.client_id;
        // deletes too: their puts may have been left out of the request
        // (`skip_completed_puts`)
        let meta_changes = u.reset || !u.put_outgoing.is_empty() || !u.delete_outgoing.is_empty();
        if u.reset {
            ops.push(WriteOp::DropReplica {
                client_id: client_id.clone(),
            });
        }
        for (seq, record) in u.put_outgoing {
            ops.push(WriteOp::PutReplicaOutgoing {
                client_id: client_id.clone(),
                seq,
                record,
            });
        }
        for seq in u.delete_outgoing {
            ops.push(WriteOp::DeleteReplicaOutgoing {
                client_id: client_id.clone(),
                seq,
            });
        }
        for packet_id in u.put_incoming_qos2 {
            ops.push(WriteOp::PutReplicaIncoming {
                client_id: client_id.clone(),
                packet_id,
            });
        }
        for packet_id in u.delete_incoming_qos2 {
            ops.push(WriteOp::DeleteReplicaIncoming {
                client_id: client_id.clone(),
                packet_id,
            });
        }
        if u.drop {
            metas.remove(&client_id);
            ops.push(WriteOp::DropReplica { client_id });
        } else if meta_changes {
            let max_seq = metas.entry(client_id).or_default();
            *max_seq = (*max_seq).max(u.max_seq);
        }
    }
    ops.extend(
        metas
            .into_iter()
            .map(|(client_id, max_seq)| WriteOp::PutReplicaMeta {
                client_id,
                meta: storage::ReplicaMeta { owner, max_seq },
            }),
    );
    ops
}

pub fn replica_from_store(r: storage::Replica) -> cluster::SessionReplica {
    cluster::SessionReplica {
        owner: r.owner,
        max_seq: r.max_seq,
        outgoing: r.outgoing,
        incoming_qos2: r.incoming_qos2,
    }
}

/// The state a session taken over from `replica` starts with: the
/// replicated record's subscriptions and expiry, the replica's messages
/// and received QoS 2 ids; its numbering goes on past the highest seq the
/// owner shipped.
pub fn state_from_replica(
    client_id: &str,
    info: cluster::SessionInfo,
    replica: cluster::SessionReplica,
) -> cluster::SessionState {
    let next_seq = info.next_seq.max(replica.max_seq + 1);
    cluster::SessionState {
        client_id: client_id.to_owned(),
        info,
        protocol_level: 0,
        recent_uids: replica
            .outgoing
            .iter()
            .map(|(_, r)| r.uid)
            .filter(|uid| *uid != 0)
            .collect(),
        outgoing: replica.outgoing,
        incoming_qos2: replica.incoming_qos2,
        next_seq,
    }
}

/// Leaves out of a request's updates the puts of copies a later update of
/// the same request deletes (the client completed them while they waited
/// for the link): the replica would write and then delete them. The
/// deletes stay, for a copy an earlier request stored. Returns how many
/// puts were left out.
pub fn skip_completed_puts(updates: &mut [cluster::ReplicaUpdate]) -> usize {
    let mut deleted_later: HashMap<String, HashSet<u64>> = HashMap::new();
    let mut skipped = 0;
    for u in updates.iter_mut().rev() {
        if u.delete_outgoing.is_empty() && !deleted_later.contains_key(&u.client_id) {
            continue;
        }
        let later = deleted_later.entry(u.client_id.clone()).or_default();
        // within an update the puts are written before the deletes
        later.extend(u.delete_outgoing.iter().copied());
        let before = u.put_outgoing.len();
        u.put_outgoing.retain(|(seq, _)| !later.contains(seq));
        skipped += before - u.put_outgoing.len();
    }
    skipped
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::cluster_bridge) fn record(released: bool) -> storage::OutgoingRecord {
        storage::OutgoingRecord {
            released,
            uid: 7,
            message: storage::StoredMessage {
                topic: "t".into(),
                payload: bytes::Bytes::from_static(b"p"),
                qos: 2,
                retain: false,
                properties: bytes::Bytes::new(),
                expires_at_ms: None,
            },
        }
    }

    pub(in crate::cluster_bridge) fn replica(
        max_seq: u64,
        outgoing: &[(u64, bool)],
    ) -> cluster::SessionReplica {
        cluster::SessionReplica {
            owner: 2,
            max_seq,
            outgoing: outgoing.iter().map(|&(s, r)| (s, record(r))).collect(),
            incoming_qos2: Vec::new(),
        }
    }

    #[test]
    fn a_replica_update_becomes_store_writes_in_its_order() {
        use storage::WriteOp;
        let update = cluster::ReplicaUpdate {
            client_id: "c".into(),
            reset: true,
            put_outgoing: vec![(3, record(false))],
            delete_outgoing: vec![1],
            put_incoming_qos2: vec![9],
            delete_incoming_qos2: vec![8],
            drop: false,
            max_seq: 3,
        };
        let ops = replica_ops(
            2,
            cluster::ReplicaBatch {
                updates: vec![update],
                keep: vec![cluster::KeptCopy {
                    node: 3,
                    seq: 11,
                    copy: bytes::Bytes::from_static(b"copy"),
                }],
                forget: vec![(3, 10)],
            },
        );
        let c = || "c".to_string();
        assert_eq!(
            ops,
            [
                WriteOp::DropReplica { client_id: c() },
                WriteOp::PutReplicaOutgoing {
                    client_id: c(),
                    seq: 3,
                    record: record(false)
                },
                WriteOp::DeleteReplicaOutgoing {
                    client_id: c(),
                    seq: 1
                },
                WriteOp::PutReplicaIncoming {
                    client_id: c(),
                    packet_id: 9
                },
                WriteOp::DeleteReplicaIncoming {
                    client_id: c(),
                    packet_id: 8
                },
                WriteOp::PutReplicaMeta {
                    client_id: c(),
                    meta: storage::ReplicaMeta {
                        owner: 2,
                        max_seq: 3
                    }
                },
                WriteOp::PutReplicaForward {
                    origin: 2,
                    node: 3,
                    seq: 11,
                    copy: bytes::Bytes::from_static(b"copy")
                },
                WriteOp::DeleteReplicaForward {
                    origin: 2,
                    node: 3,
                    seq: 10
                },
            ]
        );
        let dropped = replica_ops(
            2,
            cluster::ReplicaBatch {
                updates: vec![cluster::ReplicaUpdate {
                    client_id: c(),
                    drop: true,
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        assert_eq!(dropped, [WriteOp::DropReplica { client_id: c() }]);
    }

    #[test]
    fn a_session_taken_from_a_replica_numbers_past_its_highest_seq() {
        let info = cluster::SessionInfo {
            next_seq: 4,
            ..Default::default()
        };
        let state = state_from_replica("c", info, replica(9, &[(8, true), (9, false)]));
        assert_eq!(state.next_seq, 10);
        assert_eq!(state.recent_uids, [7, 7]);
        assert_eq!(state.outgoing.len(), 2);
        assert_eq!(state.protocol_level, 0, "the connecting client's");
    }

    fn update(client_id: &str, put: &[u64], delete: &[u64]) -> cluster::ReplicaUpdate {
        cluster::ReplicaUpdate {
            client_id: client_id.into(),
            put_outgoing: put.iter().map(|&s| (s, record(false))).collect(),
            delete_outgoing: delete.to_vec(),
            max_seq: put.iter().copied().max().unwrap_or(0),
            ..Default::default()
        }
    }

    fn puts(u: &cluster::ReplicaUpdate) -> Vec<u64> {
        u.put_outgoing.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn puts_of_copies_completed_in_the_same_request_are_left_out_and_their_deletes_kept() {
        let mut updates = vec![
            update("a", &[1, 2], &[]),
            update("b", &[1], &[]),
            update("a", &[3], &[]),
            // QoS 2: released (put again), then completed
            update("a", &[2], &[]),
            update("a", &[], &[2, 0]),
            update("b", &[], &[7]),
        ];
        assert_eq!(skip_completed_puts(&mut updates), 2);
        assert_eq!(puts(&updates[0]), [1]);
        assert_eq!(puts(&updates[1]), [1], "another client's seq 1");
        assert_eq!(puts(&updates[2]), [3]);
        assert!(puts(&updates[3]).is_empty());
        assert_eq!(updates[4].delete_outgoing, [2, 0], "deletes stay");
        assert_eq!(updates[5].delete_outgoing, [7]);
        // a put after the delete (a later copy cannot reuse a seq, but the
        // order is what counts) is kept
        let mut later = vec![update("a", &[], &[4]), update("a", &[4], &[])];
        assert_eq!(skip_completed_puts(&mut later), 0);
        assert_eq!(puts(&later[1]), [4]);
    }

    #[test]
    fn a_request_whose_puts_were_all_left_out_still_moves_the_highest_seq() {
        let mut updates = vec![update("a", &[5], &[]), update("a", &[], &[5])];
        updates[1].max_seq = 5;
        skip_completed_puts(&mut updates);
        let ops = replica_ops(
            2,
            cluster::ReplicaBatch {
                updates,
                ..Default::default()
            },
        );
        assert!(ops.contains(&storage::WriteOp::PutReplicaMeta {
            client_id: "a".into(),
            meta: storage::ReplicaMeta {
                owner: 2,
                max_seq: 5
            }
        }));
    }
}
