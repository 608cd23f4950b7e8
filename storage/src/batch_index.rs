//! The group-commit writer's index of where each stored outgoing message
//! is: the per-message key of an older build, or an entry of a batch (see
//! `batches.rs`, "The writer's index" and "Rules the writer keeps"). It turns
//! a group's net `PutOutgoing` / `DeleteOutgoing` ops for one client into the
//! sled changes that keep those rules: new batches, acks values, removals.
//! It never writes: the writer puts its changes into the group's overlay.
//!
//! Lifecycle: a client's entry is loaded from disk the first time a group
//! touches the client, updated as each group is planned (before it commits),
//! dropped when the client holds nothing, and the whole index is cleared
//! after a failed group (the writer reopens sled then).

use std::collections::{BTreeMap, HashMap};

use crate::{
    batches::{
        batch_head, bitmap_len, decode_acks, encode_acks, encode_batch, entry_len, is_set,
        BATCH_HEADER, MAX_BATCH_BYTES,
    },
    error::{Error, Result},
    keys::{self, BatchKind, TreeId},
    records::{DecodeError, OutgoingRecord},
    store::Handles,
};

/// Where one live `(client_id, seq)` is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    /// Its own key in `outgoing` (written by a build before batches).
    Legacy,
    /// Entry `pos` of batch `id`.
    Batch { id: u64, pos: u32 },
}

/// A batch on disk, as the writer tracks it.
#[derive(Debug)]
struct BatchState {
    /// The acks bitmap as on disk (all clear when there is no acks value).
    acked: Vec<u8>,
    /// Entries not acknowledged.
    live: u32,
}

/// One client's stored messages, as the writer tracks them.
#[derive(Debug, Default)]
struct ClientIndex {
    seqs: BTreeMap<u64, Loc>,
    batches: BTreeMap<u64, BatchState>,
    /// The id of the client's next batch: above every id on disk.
    next_batch: u64,
}

impl ClientIndex {
    /// Reads where the client's messages are: the keys of `outgoing`, the
    /// seq lists of its batches and their acks. A record it cannot decode is
    /// logged and left alone (the reader reports it): writes for the client
    /// go on.
    fn load(handles: &Handles, client_id: &str) -> Result<ClientIndex> {
        let prefix = keys::client_prefix(client_id);
        let mut index = ClientIndex::default();
        for key in handles.tree(TreeId::Outgoing).scan_prefix(&prefix).keys() {
            let key = key.map_err(|e| Error::from_sled("indexing a client's records", e))?;
            match keys::decode_outgoing_seq(&prefix, &key) {
                Ok(seq) => {
                    index.seqs.insert(seq, Loc::Legacy);
                }
                Err(e) => tracing::warn!(error = %e, "not indexed"),
            }
        }
        let mut seqs_of: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for entry in handles.tree(TreeId::OutgoingBatches).scan_prefix(&prefix) {
            let (key, value) =
                entry.map_err(|e| Error::from_sled("indexing a client's batches", e))?;
            let decoded = keys::decode_outgoing_batch(&prefix, &key).and_then(|(id, kind)| {
                index.next_batch = index.next_batch.max(id.saturating_add(1));
                let corrupt = |e: DecodeError| Error::corrupt("outgoing_batches", &key, e.0);
                match kind {
                    BatchKind::Messages => {
                        let (_, seqs) = batch_head(&value).map_err(corrupt)?;
                        index.batches.insert(
                            id,
                            BatchState {
                                acked: vec![0; bitmap_len(seqs.len())],
                                live: seqs.len() as u32,
                            },
                        );
                        seqs_of.insert(id, seqs);
                    }
                    BatchKind::Acks => {
                        let count = seqs_of.get(&id).map_or(0, Vec::len);
                        let acked = decode_acks(&value, count).map_err(corrupt)?;
                        let live = (0..count).filter(|&i| !is_set(&acked, i)).count();
                        if let Some(batch) = index.batches.get_mut(&id) {
                            *batch = BatchState {
                                acked,
                                live: live as u32,
                            };
                        }
                    }
                }
                Ok(())
            });
            if let Err(e) = decoded {
                tracing::warn!(error = %e, "not indexed");
            }
        }
        for (id, seqs) in seqs_of {
            let batch = &index.batches[&id];
            for (pos, seq) in seqs.into_iter().enumerate() {
                if !is_set(&batch.acked, pos) {
                    index.seqs.insert(
                        seq,
                        Loc::Batch {
                            id,
                            pos: pos as u32,
                        },
                    );
                }
            }
        }
        Ok(index)
    }

    fn is_empty(&self) -> bool {
        self.seqs.is_empty() && self.batches.is_empty()
    }
}

/// A change to `outgoing` or `outgoing_batches` the group must make:
/// `(tree, key, value)`, `None` removing the key.
pub(crate) type Change = (TreeId, Vec<u8>, Option<Vec<u8>>);

/// The writer's index of where each stored outgoing message is (see "The
/// writer's index"). Owned by the group-commit writer.
#[derive(Debug, Default)]
pub(crate) struct OutgoingIndex {
    clients: HashMap<String, ClientIndex>,
}

impl OutgoingIndex {
    /// Forgets everything: after a failed group, whose changes may or may
    /// not be on disk.
    pub(crate) fn clear(&mut self) {
        self.clients.clear();
    }

    fn client(&mut self, handles: &Handles, client_id: &str) -> Result<&mut ClientIndex> {
        if !self.clients.contains_key(client_id) {
            let index = ClientIndex::load(handles, client_id)?;
            self.clients.insert(client_id.to_owned(), index);
        }
        Ok(self
            .clients
            .get_mut(client_id)
            .expect("inserted just above"))
    }

    /// The client's records are all being removed (`DeleteSession`): it
    /// holds nothing once the group commits. Batch ids keep counting up.
    pub(crate) fn reset(&mut self, handles: &Handles, client_id: &str) -> Result<()> {
        let next_batch = match self.clients.get(client_id) {
            Some(index) => index.next_batch,
            // Not indexed: the last key on disk is enough, no need to read
            // batches that are being removed.
            None => {
                let prefix = keys::client_prefix(client_id);
                let tree = handles.tree(TreeId::OutgoingBatches);
                match tree.scan_prefix(&prefix).keys().next_back() {
                    None => 0,
                    Some(key) => {
                        let key = key.map_err(|e| Error::from_sled("indexing a client", e))?;
                        keys::decode_outgoing_batch(&prefix, &key)
                            .map_or(0, |(id, _)| id.saturating_add(1))
                    }
                }
            }
        };
        let index = ClientIndex {
            next_batch,
            ..ClientIndex::default()
        };
        self.clients.insert(client_id.to_owned(), index);
        Ok(())
    }

    /// Drops the client's entry if it tracks nothing.
    pub(crate) fn forget_if_empty(&mut self, client_id: &str) {
        if self
            .clients
            .get(client_id)
            .is_some_and(ClientIndex::is_empty)
        {
            self.clients.remove(client_id);
        }
    }

    /// The changes that apply a group's net outgoing ops for one client
    /// (`seq -> Some(record)` put, `None` delete), updating the index as if
    /// they were committed.
    pub(crate) fn apply(
        &mut self,
        handles: &Handles,
        client_id: &str,
        ops: &BTreeMap<u64, Option<&OutgoingRecord>>,
    ) -> Result<Vec<Change>> {
        let index = self.client(handles, client_id)?;
        let mut changes = Vec::new();
        let mut touched = Vec::new();
        let mut puts = Vec::new();
        for (&seq, op) in ops {
            match index.seqs.remove(&seq) {
                Some(Loc::Legacy) => {
                    changes.push((TreeId::Outgoing, keys::outgoing(client_id, seq), None));
                }
                Some(Loc::Batch { id, pos }) => {
                    if let Some(batch) = index.batches.get_mut(&id) {
                        let (byte, bit) = (pos as usize / 8, 1u8 << (pos % 8));
                        if batch.acked[byte] & bit == 0 {
                            batch.acked[byte] |= bit;
                            batch.live -= 1;
                        }
                        touched.push(id);
                    }
                }
                None => {}
            }
            if let Some(record) = op {
                puts.push((seq, *record));
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            let messages = keys::outgoing_batch(client_id, id, BatchKind::Messages);
            let acks = keys::outgoing_batch(client_id, id, BatchKind::Acks);
            let batch = &index.batches[&id];
            if batch.live == 0 {
                index.batches.remove(&id);
                changes.push((TreeId::OutgoingBatches, messages, None));
                changes.push((TreeId::OutgoingBatches, acks, None));
            } else {
                changes.push((
                    TreeId::OutgoingBatches,
                    acks,
                    Some(encode_acks(&batch.acked)),
                ));
            }
        }
        for chunk in split_batches(&puts) {
            let id = index.next_batch;
            index.next_batch += 1;
            for (pos, (seq, _)) in chunk.iter().enumerate() {
                index.seqs.insert(
                    *seq,
                    Loc::Batch {
                        id,
                        pos: pos as u32,
                    },
                );
            }
            index.batches.insert(
                id,
                BatchState {
                    acked: vec![0; bitmap_len(chunk.len())],
                    live: chunk.len() as u32,
                },
            );
            changes.push((
                TreeId::OutgoingBatches,
                keys::outgoing_batch(client_id, id, BatchKind::Messages),
                Some(encode_batch(chunk)),
            ));
        }
        if index.is_empty() {
            self.clients.remove(client_id);
        }
        Ok(changes)
    }

    /// Clients indexed now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.clients.len()
    }
}

/// Cuts `puts` (ascending by seq) into batches of at most
/// [`MAX_BATCH_BYTES`], each of at least one entry.
fn split_batches<'r>(
    puts: &'r [(u64, &'r OutgoingRecord)],
) -> Vec<&'r [(u64, &'r OutgoingRecord)]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, BATCH_HEADER);
    for (i, (_, record)) in puts.iter().enumerate() {
        let len = entry_len(record);
        if i > start && bytes + len > MAX_BATCH_BYTES {
            chunks.push(&puts[start..i]);
            (start, bytes) = (i, BATCH_HEADER);
        }
        bytes += len;
    }
    if start < puts.len() {
        chunks.push(&puts[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batches::tests::record;

    #[test]
    fn puts_are_cut_into_batches_under_the_size_limit() {
        let big: Vec<_> = (0..10).map(|s| record(s, 1500)).collect();
        let puts: Vec<_> = (0..10).zip(&big).collect();
        let chunks = split_batches(&puts);
        assert!(chunks.len() > 1);
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 10);
        for chunk in &chunks {
            assert!(encode_batch(chunk).len() <= MAX_BATCH_BYTES);
        }
        let huge = record(0, MAX_BATCH_BYTES * 2);
        let puts = [(0, &huge), (1, &big[1])];
        assert_eq!(split_batches(&puts).len(), 2);
        assert!(split_batches(&[]).is_empty());
    }

    #[test]
    fn an_empty_client_leaves_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::StoreConfig {
            flush_every_ms: None,
            ..crate::StoreConfig::new(dir.path())
        };
        let (store, _committer) = crate::Store::open_with_committer(&config).unwrap();
        store
            .shared()
            .with_handles(|h| {
                let mut index = OutgoingIndex::default();
                let r = record(1, 1);
                let put = BTreeMap::from([(1, Some(&r)), (2, Some(&r))]);
                let changes = index.apply(h, "c", &put)?;
                assert_eq!(changes.len(), 1);
                assert_eq!(index.len(), 1);
                let ack = BTreeMap::from([(1, None)]);
                let changes = index.apply(h, "c", &ack)?;
                assert_eq!(changes[0].2, Some(encode_acks(&[0b01])));
                let ack = BTreeMap::from([(2, None)]);
                let changes = index.apply(h, "c", &ack)?;
                // the batch and its acks go
                assert_eq!(changes.len(), 2);
                assert!(changes.iter().all(|c| c.2.is_none()));
                assert_eq!(index.len(), 0);
                Ok(())
            })
            .unwrap();
    }
}
