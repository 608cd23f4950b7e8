//! Applying: committed entries and snapshots into the state machine, the
//! removal check, and snapshots of the state machine for log compaction.

use prost::Message as _;
use protobuf::Message as _;
use raft::{
    eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Snapshot},
    StateRole, Storage as _,
};

use super::{in_config, raft_err, Output, Pending, PendingConf, RaftNode};
use crate::{
    error::{Error, Result},
    state::{ClusterState, Outcome},
    types::member_from_proto,
};

impl RaftNode {
    pub(super) fn apply_snapshot(&mut self, snapshot: &Snapshot, out: &mut Output) -> Result<()> {
        self.storage.apply_snapshot(snapshot)?;
        let meta = snapshot.get_metadata();
        let mut new = ClusterState::restore(snapshot.get_data())?;
        self.conf_state = meta.get_conf_state().clone();
        new.set_config(&in_config(&self.conf_state));
        let mut state = self.state.write();
        if meta.index > self.replay_until {
            out.changes.extend(state.diff(&new));
        }
        *state = new;
        self.applied = meta.index;
        // Our proposals that the snapshot already contains.
        let id = self.config.id;
        let done: Vec<(u64, Outcome)> = self
            .pending
            .keys()
            .filter_map(|rid| state.recent_outcome(id, *rid).map(|o| (*rid, o.clone())))
            .collect();
        drop(state);
        for (rid, outcome) in done {
            if let Some(Pending {
                waiter: Some(w), ..
            }) = self.pending.remove(&rid)
            {
                let _ = w.send(Ok(outcome));
            }
        }
        self.check_removed(out);
        Ok(())
    }

    pub(super) fn apply_entries(&mut self, entries: Vec<Entry>, out: &mut Output) -> Result<()> {
        for entry in entries {
            self.applied = entry.index;
            let report = entry.index > self.replay_until;
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&entry, report, out),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_entry(&entry, report, out)
                }
            }
        }
        Ok(())
    }

    pub(super) fn apply_normal(&mut self, entry: &Entry, report: bool, out: &mut Output) {
        if entry.data.is_empty() {
            return; // a new leader's empty entry
        }
        let batch = match proto::EntryBatch::decode(entry.get_data()) {
            Ok(batch) => batch,
            Err(e) => {
                // Every node skips it the same way: the state stays identical.
                tracing::error!(node = self.config.id, index = entry.index, error = %e,
                    "skipping a log entry that does not decode");
                return;
            }
        };
        let mut state = self.state.write();
        for proposal in batch.proposals {
            let (origin, request_id) = (proposal.origin, proposal.request_id);
            let (outcome, changes) = state.apply(proposal);
            if report {
                out.changes.extend(changes);
            }
            if origin == self.config.id {
                if let Some(Pending {
                    waiter: Some(w), ..
                }) = self.pending.remove(&request_id)
                {
                    let _ = w.send(Ok(outcome));
                }
            }
        }
    }

    pub(super) fn apply_conf_entry(&mut self, entry: &Entry, report: bool, out: &mut Output) {
        let context = proto::ConfChangeContext::decode(entry.get_context()).unwrap_or_default();
        let applied = if entry.get_entry_type() == EntryType::EntryConfChange {
            ConfChange::parse_from_bytes(entry.get_data())
                .map_err(|e| e.to_string())
                .and_then(|cc| self.raw.apply_conf_change(&cc).map_err(|e| e.to_string()))
        } else {
            ConfChangeV2::parse_from_bytes(entry.get_data())
                .map_err(|e| e.to_string())
                .and_then(|cc| {
                    let duplicate = context.request_id != 0
                        && self
                            .state
                            .read()
                            .recent_outcome(context.origin, context.request_id)
                            .is_some();
                    if duplicate {
                        return Err("duplicate of an applied change".into());
                    }
                    self.raw.apply_conf_change(&cc).map_err(|e| e.to_string())
                })
        };
        let outcome = match applied {
            Ok(cs) => {
                self.conf_state = cs;
                let added = context
                    .member
                    .clone()
                    .and_then(|m| member_from_proto(m).ok());
                self.snapshot_due |= added.is_some();
                let changes = self.state.write().apply_conf_change(
                    context.origin,
                    context.request_id,
                    &in_config(&self.conf_state),
                    added.filter(|m| !m.address.is_empty()),
                );
                if report {
                    out.changes.extend(changes);
                }
                self.check_removed(out);
                Outcome::Done
            }
            Err(reason) => {
                tracing::warn!(node = self.config.id, index = entry.index, %reason,
                    "configuration change not applied");
                Outcome::Invalid(reason)
            }
        };
        if context.origin == self.config.id {
            if let Some(PendingConf {
                waiter: Some(w), ..
            }) = self.pending_conf.remove(&context.request_id)
            {
                let _ = w.send(Ok(outcome));
            }
        }
    }

    /// Notices this node's removal from the configuration.
    pub(super) fn check_removed(&mut self, out: &mut Output) {
        let id = self.config.id;
        let member = in_config(&self.conf_state).contains(&id);
        self.member_seen |= member;
        if !member && self.member_seen && !self.removed {
            self.removed = true;
            out.removed = true;
            for (_, p) in std::mem::take(&mut self.pending) {
                if let Some(w) = p.waiter {
                    let _ = w.send(Err(Error::Removed));
                }
            }
            for (_, p) in std::mem::take(&mut self.pending_conf) {
                if let Some(w) = p.waiter {
                    let _ = w.send(Err(Error::Removed));
                }
            }
        }
        if !self.conf_state.voters.contains(&id) && self.raw.raft.state == StateRole::Leader {
            // Removed (or demoted) while leading, despite the transfer the
            // proposer asked for: hand over if possible, and step down now,
            // before raft-rs persists anything as a leader without its own
            // progress entry (it panics there).
            if let Some(to) = self.best_other_voter() {
                self.raw.transfer_leader(to);
            }
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
        }
    }

    /// Saves a snapshot and compacts once `snapshot_threshold` entries were
    /// applied since the last one; saves one without compacting after a node
    /// was added.
    pub(super) fn maybe_compact(&mut self) -> Result<()> {
        let snapshot_index = self.storage.snapshot_metadata().index;
        let compact = self.applied >= snapshot_index + self.config.snapshot_threshold.max(1);
        let due = std::mem::take(&mut self.snapshot_due) && self.applied > snapshot_index;
        if !compact && !due {
            return Ok(());
        }
        let term = self.storage.term(self.applied).map_err(raft_err)?;
        let mut snapshot = Snapshot::default();
        snapshot.set_data(self.state.read().snapshot().into());
        let meta = snapshot.mut_metadata();
        meta.index = self.applied;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        self.storage.save_snapshot(&snapshot)?;
        if !compact {
            return Ok(());
        }
        let compact_to = (self.applied + 1).saturating_sub(self.config.log_keep);
        self.storage.compact(compact_to)?;
        tracing::debug!(
            node = self.config.id,
            index = self.applied,
            "saved a snapshot and compacted the raft log"
        );
        Ok(())
    }
}
