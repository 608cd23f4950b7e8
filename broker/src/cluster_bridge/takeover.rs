//! Taking a session over from the node that owns it: when its client
//! connects here (`take_session`), or when its node drains (`adopting`,
//! `crate::drain::adopt`), and where to send a client instead (`redirect`).

use std::hash::BuildHasher;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::handle::Input;

impl ClusterBridge {
    /// Asks `owner` to hand the session over; bounded by the forward timeout.
    pub async fn take_over(
        &self,
        owner: u64,
        client_id: &str,
    ) -> Result<cluster::SessionState, TakeOverError> {
        let cluster = self.cluster.clone();
        let client_id = client_id.to_owned();
        let timeout = self.forward_timeout;
        let task = self.runtime.spawn(async move {
            tokio::time::timeout(timeout, cluster.take_over(owner, client_id)).await
        });
        match task.await {
            Ok(Ok(Ok(state))) => Ok(state),
            Ok(Ok(Err(cluster::Error::SessionNotFound { .. }))) => Err(TakeOverError::NotThere),
            Ok(Ok(Err(e))) => Err(TakeOverError::Failed(e.to_string())),
            Ok(Err(_)) => Err(TakeOverError::Failed("timed out".into())),
            Err(e) => Err(TakeOverError::Failed(e.to_string())),
        }
    }

    /// Waits (at most `bound`) until the replicated owner of `client_id` is
    /// no longer `owner`; the owner then.
    async fn owner_after(&self, client_id: &str, owner: u64, bound: Duration) -> Option<u64> {
        let end = tokio::time::Instant::now() + bound;
        loop {
            let now = self.session_owner(client_id);
            if now != Some(owner) || tokio::time::Instant::now() >= end {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Before a client's connection is attached here: if another node owns
    /// its session, take it over (the owner closes the old connection and
    /// sends the session's state and messages). With Clean Start the state
    /// is discarded; without, it is returned to be imported. When the owner
    /// cannot be reached, the session is resumed from its replicated record
    /// (subscriptions, expiry); the owner sends the messages it held once it
    /// learns the session moved.
    ///
    /// The owner is looked up only once this node is ready (a leader known,
    /// everything committed applied): a node cut off from the leader, or
    /// catching up after a partition, would ask a former owner, hear that
    /// it has no such session and claim it, closing the client's current
    /// connection on its real owner. `Err(NotReady)` when the node is not
    /// ready within half the forward timeout: the CONNECT is refused
    /// (Server Unavailable) and the client tries again.
    ///
    /// `here`: what this node's registry knows of the session; see
    /// [`owner_to_ask`] and [`resume_from_record`]. A session that moved
    /// from here and kept what it held (its taker's claim is not in) goes
    /// on here where the session would otherwise be resumed from its
    /// record or start empty, and drops what it kept where a newer session
    /// takes its place ([`kept_copy_goes_on`]).
    pub async fn take_session(
        &self,
        client_id: &str,
        clean_start: bool,
        here: crate::nodes::SessionHere,
    ) -> Result<Option<Imported>, NotReady> {
        let taken = self
            .take_session_from_owner(client_id, clean_start, &here)
            .await;
        let (Ok(outcome), Some(moved)) = (&taken, &here.moved) else {
            return taken;
        };
        let imported_state = matches!(outcome, Some(Imported::State(_) | Imported::Replica(..)));
        if kept_copy_goes_on(clean_start, imported_state)
            && moved.ask(Input::Revive).await.unwrap_or(false)
        {
            return Ok(None);
        }
        moved.ask(Input::Supersede).await;
        taken
    }

    async fn take_session_from_owner(
        &self,
        client_id: &str,
        clean_start: bool,
        here: &crate::nodes::SessionHere,
    ) -> Result<Option<Imported>, NotReady> {
        // One move of a session at a time on this node: a session being
        // adopted from a draining node is owned here once that ends.
        let end = tokio::time::Instant::now() + self.forward_timeout;
        let _moving = loop {
            if let Some(guard) = self.adopting(client_id) {
                break Some(guard);
            }
            if tokio::time::Instant::now() >= end {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // A resume is decided on a caught-up view only: a node restarted
        // after a kill still reads itself as the owner (or nobody) until it
        // applied the entries committed while it was down. Attaching the
        // client to its old local copy then, the entry that moved the
        // session away arrives a moment later and sends the session off
        // again, and the client's next CONNECT found no session (chaos
        // seed 21, `sessions-kept`).
        // A node that has not caught up with the cluster once since it
        // started (joining, or restarted) does not know the routes yet: a
        // publisher it accepted would be acknowledged for messages routed
        // to nobody (chaos seed 21: a QoS 2 publish acknowledged by a node
        // 260 ms after it joined, lost for every subscriber). It waits, then
        // refuses, as for a resume below. Once caught up it serves clean
        // sessions on its view, majority or not.
        if !self.caught_up_once.load(Ordering::Acquire) {
            if !self.wait_ready(self.forward_timeout / 2).await {
                tracing::info!(%client_id, "not caught up with the cluster since start; refusing the connection");
                return Err(NotReady);
            }
            self.caught_up_once.store(true, Ordering::Release);
        }
        if clean_start
            && owner_to_ask(self.session_owner(client_id), self.node_id, here.handed_to).is_none()
        {
            return Ok(None);
        }
        if !self.wait_ready(self.forward_timeout / 2).await {
            tracing::info!(%client_id, "not caught up with the cluster; refusing the session's takeover");
            return Err(NotReady);
        }
        let Some(mut owner) =
            owner_to_ask(self.session_owner(client_id), self.node_id, here.handed_to)
        else {
            return Ok(None);
        };
        if go_on_with_live(here.live, owner, self.taken_from(client_id)) {
            tracing::info!(%client_id, owner, "session taken over from the owner is live here, its claim not in yet: going on with it");
            return Ok(None);
        }
        // The owner may have handed the session on (a drain) just before:
        // then ask the node that has it now.
        for _ in 0..3 {
            match self.take_over(owner, client_id).await {
                Ok(state) if !clean_start => {
                    self.record_taken_from(client_id, owner);
                    return Ok(Some(Imported::State(state)));
                }
                Ok(_) => return Ok(None),
                Err(TakeOverError::NotThere) => {
                    match self
                        .owner_after(client_id, owner, self.forward_timeout / 4)
                        .await
                    {
                        Some(next) if next == self.node_id => return Ok(None),
                        Some(next) if next != owner => owner = next,
                        _ => break,
                    }
                }
                Err(TakeOverError::Failed(e)) => {
                    tracing::warn!(%client_id, owner, error = %e, live_here = here.live, "session owner unreachable; resuming from this node's copy if live, else from the replicated record");
                    break;
                }
            }
        }
        if !resume_from_record(clean_start, here.live) {
            return Ok(None);
        }
        let Some(info) = self.cluster.session(client_id) else {
            return Ok(None);
        };
        // The owner is unreachable: its messages are on the session's
        // replica (every acknowledged one, `replicas.rs`).
        if let Some(replica) = self.fetch_replica(client_id, owner).await {
            self.replica_stats()
                .fail_overs
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%client_id, owner, messages = replica.outgoing.len(), through_seq = replica.max_seq, "session owner unreachable: taking the session over from its replica");
            let failed_over = cluster::FailedOver {
                from: owner,
                through_seq: replica.max_seq,
            };
            let state = super::replica_records::state_from_replica(client_id, info, replica);
            return Ok(Some(Imported::Replica(state, failed_over)));
        }
        Ok(Some(Imported::Record(info)))
    }

    /// The node this node took `client_id`'s session over from, if its
    /// entry has not aged out (`TAKEN_FROM_FOR`).
    fn taken_from(&self, client_id: &str) -> Option<u64> {
        let mut taken = self.taken_from.lock();
        match taken.get(client_id) {
            Some((node, at)) if at.elapsed() < TAKEN_FROM_FOR => Some(*node),
            Some(_) => {
                taken.remove(client_id);
                None
            }
            None => None,
        }
    }

    fn record_taken_from(&self, client_id: &str, node: u64) {
        let mut taken = self.taken_from.lock();
        if taken.len() >= TAKEN_FROM_PRUNE_AT {
            taken.retain(|_, (_, at)| at.elapsed() < TAKEN_FROM_FOR);
        }
        taken.insert(client_id.to_owned(), (node, std::time::Instant::now()));
    }

    /// Marks `client_id` as moving to this node (adopted from a draining
    /// node, or taken over for a connecting client) until the guard is
    /// dropped; `None` if a move of it is running already.
    pub fn adopting(&self, client_id: &str) -> Option<AdoptingGuard> {
        if !self.adopting.lock().insert(client_id.to_owned()) {
            return None;
        }
        Some(AdoptingGuard {
            moving: self.adopting.clone(),
            client_id: client_id.to_owned(),
        })
    }

    /// Another node to send a client to (5.0 Server Reference) and to hand
    /// its session to when this node drains: one of the members heard from
    /// recently that advertise an MQTT address, picked by the client id's
    /// hash so that a client and its session go to the same node. `None`
    /// when there is no such member.
    pub fn redirect(&self, client_id: &str) -> Option<(u64, String)> {
        let mut live: Vec<(u64, String)> = self
            .cluster
            .members()
            .into_iter()
            .filter(|m| m.id != self.node_id && !m.mqtt_address.is_empty() && self.is_up(m.id))
            .map(|m| (m.id, m.mqtt_address))
            .collect();
        if live.is_empty() {
            return None;
        }
        live.sort();
        let i = (self.hasher.hash_one(client_id) % live.len() as u64) as usize;
        Some(live.swap_remove(i))
    }

    /// Waits until the cluster node is ready and in contact with the
    /// cluster, at most `bound`. In contact: a leader stopped (SIGSTOP)
    /// for longer than an election still believes it leads, with
    /// everything it knows applied, until the new term reaches it; it took
    /// a session over from its owner in that moment, CONNACKed, and its
    /// claim (proposed at the old term) was lost when the new leader's log
    /// replaced it; killed a second later, the session was gone (chaos
    /// seed 5, `sessions-kept`).
    async fn wait_ready(&self, bound: Duration) -> bool {
        let end = tokio::time::Instant::now() + bound;
        loop {
            if self.cluster.status().ready && self.cluster.in_contact() {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The node to take a session over from: its replicated owner when that
/// is another node. When the replicated owner is this node (or nobody) but
/// this node handed the session to `handed_to` lately, that node: its claim
/// may not have committed yet, or ever (it was cut off from the leader), and
/// it has the session.
///
/// postmortem: long chaos run seed 21, 2026-12-06 (`sessions-kept`): node 4
/// took `sub2` over from node 1 0.3 s into a bridge partition that cut it
/// off from the leader; its claim timed out. The client, back on node 1 six
/// seconds later, found node 1 the replicated owner without the session and
/// got a new, empty one (Session Present 0).
fn owner_to_ask(replicated: Option<u64>, me: u64, handed_to: Option<u64>) -> Option<u64> {
    match replicated {
        Some(owner) if owner != me => Some(owner),
        _ => handed_to.filter(|node| *node != me),
    }
}

/// How long a session taken over from another node counts as newer than
/// the copy that node kept, while the replicated owner is still that node
/// (its claim should be in long before).
const TAKEN_FROM_FOR: Duration = Duration::from_secs(300);
/// How many sessions taken over are remembered before aged entries go.
const TAKEN_FROM_PRUNE_AT: usize = 4096;

/// Whether a client connecting here goes on with the session live here
/// instead of asking `owner` for it: when this node took the session over
/// from `owner` (`taken_from`) and the replicated owner is still that node.
/// Its claim is not in (no leader reachable then), and `owner` kept what
/// it handed over, to hand it again to this node should it have failed
/// (`events::hand_kept_again`); that copy is older than the session here,
/// which got what arrived since. A node that restarted has no live
/// session and asks for the kept copy.
///
/// postmortem: long chaos run seed 27, 2026-12-07 (`no-loss`, 4 copies):
/// node 5 took `sub3` over from node 4 just as a one-way partition cut it
/// off from the leader; its claim failed, the client went offline and
/// came back to node 5 twelve seconds later; node 5 asked node 4, which
/// handed the kept copy over again, and its import replaced node 5's own
/// session with the 4 copies queued there meanwhile.
fn go_on_with_live(live_here: bool, owner: u64, taken_from: Option<u64>) -> bool {
    live_here && taken_from == Some(owner)
}

/// Whether a session whose owner could not be asked resumes from its
/// replicated record (subscriptions and expiry, no messages): not with
/// Clean Start, and not when this node runs the session already. Such a
/// copy was resumed here while the owner was unreachable and its claim is
/// not in yet; it holds the messages queued since, which importing the
/// record over it would discard.
///
/// postmortem: long chaos run seed 21, 2026-12-06 (`no-loss`, 22 copies):
/// during a `replace` node 1 resumed `sub2` from its record (its owner,
/// node 4, was killed) while commits stalled for 10 s; the client went
/// offline, 22 acknowledged copies were queued for it on node 1, and when
/// it came back the owner was still node 4 (now removed), so node 1
/// imported the record over its own session and dropped them.
fn resume_from_record(clean_start: bool, live_here: bool) -> bool {
    !clean_start && !live_here
}

/// Whether a session kept here after a hand-over (its taker's claim not
/// in) goes on when its client connects here again: yes when the client
/// resumes and no node sent the session's state, so that the session would
/// come from its replicated record (no messages) or start empty; no with
/// Clean Start, or when the state came from the node that has it now.
fn kept_copy_goes_on(clean_start: bool, imported_state: bool) -> bool {
    !clean_start && !imported_state
}

/// Why a takeover gave no session.
#[derive(Debug)]
pub enum TakeOverError {
    /// The node asked has no such session (it moved on, or ended).
    NotThere,
    /// The node could not be asked, or failed.
    Failed(String),
}

impl std::fmt::Display for TakeOverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TakeOverError::NotThere => f.write_str("the node has no such session"),
            TakeOverError::Failed(e) => f.write_str(e),
        }
    }
}

/// Held while a session is adopted (`ClusterBridge::adopting`).
pub struct AdoptingGuard {
    moving: Arc<parking_lot::Mutex<HashSet<String>>>,
    client_id: String,
}

impl Drop for AdoptingGuard {
    fn drop(&mut self) {
        self.moving.lock().remove(&self.client_id);
    }
}

#[cfg(test)]
mod tests {
    use super::{go_on_with_live, kept_copy_goes_on, owner_to_ask, resume_from_record};

    #[test]
    fn a_session_kept_after_a_hand_over_goes_on_unless_its_state_came_back_or_clean_start() {
        // the taker could not be asked (or had nothing): the kept copy, not
        // the record, has the queued messages
        assert!(kept_copy_goes_on(false, false));
        // the taker sent the state back: that one is newer
        assert!(!kept_copy_goes_on(false, true));
        // Clean Start: nothing goes on
        assert!(!kept_copy_goes_on(true, false));
        assert!(!kept_copy_goes_on(true, true));
    }

    #[test]
    fn a_session_taken_from_the_owner_goes_on_here_while_the_owner_is_unchanged() {
        assert!(
            go_on_with_live(true, 4, Some(4)),
            "live, taken from the owner"
        );
        assert!(
            !go_on_with_live(false, 4, Some(4)),
            "restarted: ask for the kept copy"
        );
        assert!(
            !go_on_with_live(true, 4, Some(2)),
            "owner changed since: ask it"
        );
        assert!(
            !go_on_with_live(true, 4, None),
            "not taken over: ask the owner"
        );
    }

    #[test]
    fn a_live_copy_here_is_kept_rather_than_replaced_by_the_record() {
        assert!(resume_from_record(false, false));
        assert!(!resume_from_record(false, true));
        assert!(!resume_from_record(true, false));
    }

    #[test]
    fn the_replicated_owner_is_asked_when_it_is_another_node() {
        assert_eq!(owner_to_ask(Some(2), 1, None), Some(2));
        assert_eq!(owner_to_ask(Some(2), 1, Some(3)), Some(2));
        assert_eq!(owner_to_ask(Some(1), 1, None), None);
        assert_eq!(owner_to_ask(None, 1, None), None);
    }

    #[test]
    fn a_node_that_handed_a_session_on_asks_for_it_back_while_the_claim_is_not_in() {
        assert_eq!(owner_to_ask(Some(1), 1, Some(4)), Some(4));
        assert_eq!(owner_to_ask(None, 1, Some(4)), Some(4));
        assert_eq!(owner_to_ask(Some(1), 1, Some(1)), None);
    }
}
