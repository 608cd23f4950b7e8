//! Proposals: queued, batched into entries, handed to raft-rs, re-proposed
//! when overdue (see the parent module's docs).

use prost::Message as _;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

use super::{MemberChange, Pending, PendingConf, RaftNode, Waiter};
use crate::error::Error;

impl RaftNode {
    pub(super) fn next_request_id(&mut self) -> u64 {
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        self.next_request_id
    }

    /// Queues a command; `waiter` gets its outcome once applied here.
    pub fn propose(&mut self, command: proto::proposal::Command, waiter: Option<Waiter>) {
        if self.removed {
            if let Some(w) = waiter {
                let _ = w.send(Err(Error::Removed));
            }
            return;
        }
        let request_id = self.next_request_id();
        let proposal = proto::Proposal {
            origin: self.config.id,
            request_id,
            command: Some(command),
        };
        self.pending.insert(
            request_id,
            Pending {
                proposal,
                waiter,
                proposed: false,
                retry_at: 0,
            },
        );
    }

    /// Queues a configuration change; `waiter` gets `Outcome::Done` once it
    /// is applied here, or `Outcome::Invalid` if raft-rs refused it.
    pub fn propose_member_change(&mut self, change: MemberChange, waiter: Option<Waiter>) {
        if self.removed {
            if let Some(w) = waiter {
                let _ = w.send(Err(Error::Removed));
            }
            return;
        }
        let request_id = self.next_request_id();
        self.pending_conf.insert(
            request_id,
            PendingConf {
                change,
                waiter,
                proposed: false,
                retry_at: 0,
            },
        );
    }

    /// Asks raft to hand leadership to `to` (a no-op unless this node leads).
    pub fn transfer_leader(&mut self, to: u64) {
        self.raw.transfer_leader(to);
    }

    /// Hands leadership to the most up-to-date other voter, if this node
    /// leads (a drain).
    pub fn step_down(&mut self) {
        if self.raw.raft.state == raft::StateRole::Leader {
            if let Some(to) = self.best_other_voter() {
                self.raw.transfer_leader(to);
            }
        }
    }

    /// Hands queued proposals to raft-rs, batched into entries.
    pub(super) fn flush_proposals(&mut self) {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return; // raft-rs would drop them; retried when a leader is known
        }
        let retry_at = self.ticks + self.config.retry_ticks;
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.proposed)
            .map(|(id, _)| *id)
            .collect();
        for chunk in ids.chunks(self.config.max_batch_proposals.max(1)) {
            let mut batch = proto::EntryBatch::default();
            let mut size = 0;
            let mut in_batch = Vec::new();
            for id in chunk {
                let Some(p) = self.pending.get(id) else {
                    continue;
                };
                let proposal = p.proposal.clone();
                let len = proposal.encoded_len();
                if !batch.proposals.is_empty() && size + len > self.config.max_batch_bytes {
                    self.propose_batch(std::mem::take(&mut batch), &in_batch, retry_at);
                    in_batch.clear();
                    size = 0;
                }
                size += len;
                batch.proposals.push(proposal);
                in_batch.push(*id);
            }
            if !batch.proposals.is_empty() {
                self.propose_batch(batch, &in_batch, retry_at);
            }
        }
        self.flush_member_changes(retry_at);
    }

    pub(super) fn propose_batch(&mut self, batch: proto::EntryBatch, ids: &[u64], retry_at: u64) {
        if let Err(e) = self.raw.propose(Vec::new(), batch.encode_to_vec()) {
            tracing::debug!(node = self.config.id, error = %e, "proposal dropped; will retry");
        }
        // Even if dropped now: retried at `retry_at`, not in a tight loop.
        for id in ids {
            if let Some(p) = self.pending.get_mut(id) {
                p.proposed = true;
                p.retry_at = retry_at;
            }
        }
    }

    pub(super) fn flush_member_changes(&mut self, retry_at: u64) {
        let id = self.config.id;
        let ids: Vec<u64> = self
            .pending_conf
            .iter()
            .filter(|(_, p)| !p.proposed)
            .map(|(id, _)| *id)
            .collect();
        for request_id in ids {
            let Some(p) = self.pending_conf.get_mut(&request_id) else {
                continue;
            };
            p.proposed = true;
            p.retry_at = retry_at;
            let change = p.change.clone();
            if let MemberChange::Remove(target) = change {
                // A leader that applies its own removal keeps leading
                // (raft-rs leaves that branch untested, and panics in it):
                // hand leadership to another voter first. A follower's
                // transfer request is forwarded to the leader by raft-rs.
                // The change is proposed again once the leader changed.
                if target == self.raw.raft.leader_id {
                    if let Some(to) = self.transferee(target) {
                        self.raw.transfer_leader(to);
                        continue;
                    }
                }
            }
            let (change_type, node, member) = match &change {
                MemberChange::Add(m) => (ConfChangeType::AddNode, m.id, Some(m.into())),
                MemberChange::Remove(n) => (
                    ConfChangeType::RemoveNode,
                    *n,
                    Some(proto::MemberInfo {
                        id: *n,
                        ..Default::default()
                    }),
                ),
            };
            let context = proto::ConfChangeContext {
                origin: id,
                request_id,
                member,
            };
            let mut cc = ConfChangeV2::default();
            cc.mut_changes().push(ConfChangeSingle {
                change_type,
                node_id: node,
                ..Default::default()
            });
            if let Err(e) = self.raw.propose_conf_change(context.encode_to_vec(), cc) {
                tracing::debug!(node = id, error = %e, "configuration change dropped; will retry");
            }
        }
    }

    /// A voter to hand leadership to instead of `leader`: this node if it is
    /// a voter, else the one with the most replicated log (known on the
    /// leader), else any.
    pub(super) fn transferee(&self, leader: u64) -> Option<u64> {
        let id = self.config.id;
        if id != leader && self.conf_state.voters.contains(&id) {
            return Some(id);
        }
        self.best_other_voter().or_else(|| {
            self.conf_state
                .voters
                .iter()
                .copied()
                .find(|v| *v != leader && *v != id)
        })
    }

    /// The voter other than this node with the most replicated log.
    pub(super) fn best_other_voter(&self) -> Option<u64> {
        let id = self.config.id;
        self.raw
            .raft
            .prs()
            .iter()
            .filter(|(peer, _)| **peer != id && self.conf_state.voters.contains(peer))
            .max_by_key(|(_, pr)| pr.matched)
            .map(|(peer, _)| *peer)
    }
}
