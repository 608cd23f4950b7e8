//! A session in a cluster: telling the cluster about it (ownership,
//! subscriptions, routes), and leaving this node when another one takes it
//! (`HandOver`, asked by that node) or owns it now (`OwnerMoved`, learned
//! from the replicated state).

use actix::prelude::*;

use super::error::CloseReason;
use super::outgoing::{packet_id_of, OutState};
use super::{Restored, Session};
use crate::codec::QoS;
use crate::handle::Imported;
use crate::handle::{Backpressure, Deliver, HandOver, OwnerMoved};
use crate::nodes::Proposal;
use crate::records;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Session {
    /// The session as the replicated state keeps it.
    pub(super) fn session_info(&self) -> cluster::SessionInfo {
        cluster::SessionInfo {
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(filter, entry)| records::to_replicated(filter, entry))
                .collect(),
            session_expiry_interval: self.session_expiry_interval,
            disconnected_at_ms: self.offline_since(),
            next_seq: self.outgoing.next_seq(),
        }
    }

    /// Proposes a change about this session to the cluster.
    pub(super) fn propose(&self, proposal: impl Fn(&Session) -> Proposal) {
        self.state.cluster().propose_with(&mut || proposal(self));
    }

    /// Claims the session for this node (at each connection), from the
    /// owner this node sees now: if another node's claim commits first,
    /// this one is refused and that node keeps the session.
    pub(super) fn claim(&mut self) {
        let failed_over = self.replica.as_mut().and_then(|r| r.failed_over.take());
        self.propose(|s| {
            let seen = s.state.cluster().session_owner(s.client_id());
            Proposal::Claim(
                s.client_id().to_string(),
                s.session_info(),
                seen,
                failed_over,
            )
        });
    }

    /// Tells the cluster the session's record changed (subscriptions,
    /// expiry, offline time).
    pub(super) fn update_record(&self) {
        self.propose(|s| Proposal::Update(s.client_id().to_string(), s.session_info()));
    }

    /// Loads a session taken over from another node (or resumed from the
    /// replicated record when its owner is down), and stores it here.
    pub(super) fn import(&mut self, imported: Imported) {
        let from_replica = matches!(imported, Imported::Replica(..));
        let imported = match imported {
            Imported::Replica(state, failed_over) => {
                self.replica.get_or_insert_with(Box::default).failed_over = Some(failed_over);
                Imported::State(state)
            }
            other => other,
        };
        let handed_over = match &imported {
            Imported::State(s) | Imported::Replica(s, _) => s.recent_uids.clone(),
            Imported::Record(_) => Vec::new(),
        };
        self.recent = Some(Box::new(super::recent::Recent::after_move(
            crate::message::unix_ms(),
            handed_over,
        )));
        // The client may still hold QoS 2 packet ids open (PUBREC sent, no
        // PUBREL yet) from copies the old owner sent, and takes a new
        // PUBLISH under such an id for a resend it must not deliver. So the
        // ids here go on from where the old owner was; where that is not
        // known (resumed from the replicated record while the owner is
        // down, or state from an older node), they start at a random point
        // of the id space rather than at 1, away from open ones with high
        // odds. (A node whose claim lost to this one numbered its copies on
        // its own: the random start also keeps this numbering off them.)
        //
        // Resumed from a record that says where the owner's numbering was
        // when it wrote it (at the client's last CONNECT or disconnect):
        // the ids the owner used since, some maybe still open in the
        // client, follow that point. This node numbers its copies past
        // them and releases each (PUBREL) only when its numbering comes
        // round to it ([`Outgoing::may_be_open`]): the owner may not have
        // lost the session at all (it was cut off, or moving it in a
        // drain) and send its messages here later with their flows, under
        // the ids the client holds.
        //
        // postmortem: long chaos run seed 23, 2026-12-06 (`shared-no-loss`):
        // a member PUBREC'd a QoS 2 copy under id 1748 and its node lost its
        // data 80 ms later (`replace`); resumed from the record elsewhere, the
        // session numbered from a random point, reached 1748 again 670 s
        // later, and the client, which still held 1748 open, dropped p3#3662.
        // postmortem: CI, 2026-12-07 (`k8s_pods` rolling restart, 57 QoS 2
        // copies twice): the first fix released those ids at once, and the
        // copies in flight on a draining node, sent here afterwards with
        // their flows, were taken a second time by the clients.
        //
        // Taken from a replica, likewise: the replica knows the copies the
        // owner shipped to it, but the owner gives a copy to its client
        // without waiting for the replica (or for its own disk), so the
        // client may hold ids past the replica's highest seq open.
        // postmortem: chaos seed 1, 2026-12-07 (`no-loss`, 20 copies): the
        // owner sent 23 QoS 2 copies while its disk was full and its
        // replica behind; the client PUBREC'd them, the owner never sent
        // PUBREL. Two fail-overs later a node took the session from the
        // replica, numbered its copies from the replica's seq, and the
        // client took 20 new messages under those ids for resends.
        match &imported {
            Imported::State(s) if s.next_seq > 0 && from_replica => {
                self.outgoing
                    .continue_from(s.next_seq + RELEASED_AFTER_LOSS);
                self.outgoing.may_be_open(s.next_seq, RELEASED_AFTER_LOSS);
            }
            Imported::State(s) if s.next_seq > 0 => self.outgoing.continue_from(s.next_seq),
            Imported::Record(info) if info.next_seq > 0 => {
                self.outgoing
                    .continue_from(info.next_seq + RELEASED_AFTER_LOSS);
                self.outgoing
                    .may_be_open(info.next_seq, RELEASED_AFTER_LOSS);
            }
            _ => self
                .outgoing
                .skip(rand::random::<u64>() % u64::from(u16::MAX)),
        }
        let restored = Restored::from_imported(self.state.limits(), imported);
        if let Some(protocol) = restored.protocol {
            self.protocol = protocol;
        }
        self.set_session_expiry(restored.session_expiry_interval);
        let mut ops = Vec::new();
        {
            let mut router = self.state.router().write();
            let me = self.subscriber();
            for (filter, entry) in restored.subscriptions {
                router.subscribe(&filter, me.clone(), entry.clone());
                self.propose(|_| Proposal::AddRoute(filter.to_string()));
                ops.push(storage::WriteOp::PutSubscription {
                    client_id: self.client_id().to_string(),
                    record: records::to_record(&filter, &entry),
                });
                self.subscriptions.insert(filter, entry);
            }
        }
        for m in restored.outgoing {
            ops.push(storage::WriteOp::PutOutgoing {
                client_id: self.client_id().to_string(),
                seq: m.seq,
                record: storage::OutgoingRecord {
                    released: m.state == OutState::Released,
                    uid: m.message.uid,
                    message: m.message.to_stored(m.qos, m.retain, &m.subscription_ids),
                },
            });
            self.outgoing.restore(m);
        }
        for packet_id in restored.incoming_qos2 {
            ops.push(storage::WriteOp::PutIncomingQos2 {
                client_id: self.client_id().to_string(),
                packet_id,
            });
            self.incoming.insert_qos2(packet_id);
        }
        if self.is_persistent() && !ops.is_empty() {
            self.stored = true;
            self.state.writer().submit(ops, None);
        }
        // its replica is placed by this node now
        self.replicate_all();
    }

    /// Ends the session here because node `owner` has it now; `leaving`
    /// says what becomes of its messages and stored records.
    ///
    /// The actor stays a while ([`Lifecycle::Moved`]), its subscriptions in
    /// the router: routes to this node are not gone from the other nodes
    /// yet, and what still arrives for the session is forwarded to `owner`
    /// (the new owner drops copies it got already, `recent.rs`). Then its
    /// routes go and it stops ([`end_move`](Self::end_move)).
    fn leave(&mut self, leaving: Leaving, owner: u64, ctx: &mut Context<Self>) {
        self.stop_replicating();
        if let Some(conn) = self.conn.take() {
            self.close_connection(*conn, CloseReason::TakenOver, ctx);
        }
        // The session goes on elsewhere: a delayed will is not due (5.0
        // [MQTT-3.1.3-9]); an immediate one is, as on any takeover.
        if let Some(will) = self.will.take() {
            if will.properties.will_delay_interval.unwrap_or(0) == 0 {
                self.publish_will(will);
            }
        }
        if let Some((_, timer)) = self.pending_will.take() {
            ctx.cancel_future(timer);
        }
        if let Some(timer) = self.expiry_timer.take() {
            ctx.cancel_future(timer);
        }
        let kept = leaving == Leaving::Tentative;
        match leaving {
            Leaving::KeepStored => self.stored = false,
            Leaving::Delete if self.stored => {
                self.stored = false;
                self.state.writer().submit(
                    vec![storage::WriteOp::DeleteSession {
                        client_id: self.client_id().to_string(),
                    }],
                    None,
                );
            }
            Leaving::Delete | Leaving::Tentative => {}
        }
        if !kept {
            self.outgoing.clear();
            self.incoming.clear();
            self.recent = None;
        }
        self.lifecycle = super::core::Lifecycle::Moved {
            owner,
            retired: false,
            kept,
        };
        self.state
            .registry()
            .remove_if_same(self.client_id(), &self.handle);
        self.state.registry().add_moved(self.handle.clone(), owner);
        if kept {
            self.watch_claim(ctx);
        }
        let linger = Duration::from_secs(self.state.config().cluster.forward_timeout_secs.max(1));
        ctx.run_later(linger, move |session, ctx| {
            // Nodes that are up to date stop sending here; a node cut off
            // from the leader during the move still routes by what it knew
            // and sends here once it is back: forward that a while longer.
            session.retire();
            let stragglers = MOVED_FORWARDS_FOR.saturating_sub(linger);
            ctx.run_later(stragglers, |session, ctx| {
                session.end_move(Duration::ZERO, ctx)
            });
        });
    }

    /// The forwarding window of a move is over: the actor stops. One that
    /// kept the session ([`Leaving::Tentative`]) stops once this node sees
    /// that the session is no longer its own (the new owner's claim
    /// committed), deleting the records it kept; until then it checks
    /// again every [`KEPT_RECHECK`], for at most [`KEPT_AT_MOST`], after
    /// which its records stay on disk for the next start. Nothing to do
    /// for an actor that came back to life meanwhile ([`revive`](Self::revive)).
    fn end_move(&mut self, waited: Duration, ctx: &mut Context<Self>) {
        let super::core::Lifecycle::Moved { kept, owner, .. } = self.lifecycle else {
            return;
        };
        if !kept || !self.still_mine() {
            if self.state.registry().get(self.client_id()).is_some() {
                // a newer session of the client runs here: the records are its own
                self.stored = false;
            }
            return self.finish(true, ctx);
        }
        if waited >= KEPT_AT_MOST {
            tracing::warn!(client_id = %self.client_id(), owner, "the node the session was handed to never claimed it; its records here stay for the next start");
            self.stored = false;
            return self.finish(true, ctx);
        }
        ctx.run_later(KEPT_RECHECK, move |session, ctx| {
            session.end_move(waited + KEPT_RECHECK, ctx)
        });
    }

    /// While this actor keeps the session after a hand-over: once the
    /// replicated state no longer says this node owns it, what it kept goes
    /// ([`supersede`](Self::supersede)) if the owner is the node it was
    /// handed to (that node's claim committed), or is sent to the owner if
    /// that is another node ([`send_kept`](Self::send_kept)).
    fn watch_claim(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(CLAIM_CHECK, |session, ctx| {
            if !matches!(
                session.lifecycle,
                super::core::Lifecycle::Moved { kept: true, .. }
            ) {
                return;
            }
            let super::core::Lifecycle::Moved { owner: taker, .. } = session.lifecycle else {
                return;
            };
            let cluster = session.state.cluster();
            match cluster.session_owner(session.client_id()) {
                Some(me) if me == cluster.node_id() => session.watch_claim(ctx),
                // resumed from its record elsewhere: the owner lacks this
                Some(owner) if owner != taker => session.send_kept(owner),
                _ => session.supersede(),
            }
        });
    }

    /// True while the replicated state says this node owns the session.
    fn still_mine(&self) -> bool {
        let cluster = self.state.cluster();
        cluster.session_owner(self.client_id()) == Some(cluster.node_id())
    }

    /// The session was handed over at another node's request and kept
    /// here ([`Leaving::Tentative`]), but that node could not be reached
    /// since and its claim is not in: the session goes on here, offline,
    /// with the messages it held (its client is reconnecting here). False
    /// when this actor kept nothing, or a session of the client runs here
    /// already.
    ///
    /// postmortem: long chaos run seed 22, 2026-12-06 (`no-loss`, 40
    /// copies): node 3 took `sub3` over from node 2 and was killed 0.1 s
    /// later, before it stored the session or claimed it. Node 2 had
    /// deleted its copy when it handed it over; the client, back on node 2
    /// 0.2 s later, resumed from the replicated record (no messages), and
    /// the 40 acknowledged copies queued for it were gone.
    pub(super) fn revive(&mut self, ctx: &mut Context<Self>) -> bool {
        let super::core::Lifecycle::Moved {
            owner,
            retired,
            kept: true,
        } = self.lifecycle
        else {
            return false;
        };
        if !self.state.registry().insert_if_absent(self.handle.clone()) {
            return false;
        }
        self.state.registry().remove_moved(&self.handle);
        tracing::warn!(client_id = %self.client_id(), owner, queued = self.outgoing.len(), "the node the session was handed to did not claim it; it goes on here");
        if retired {
            for filter in self.subscriptions.keys() {
                self.state
                    .cluster()
                    .propose(Proposal::AddRoute(filter.to_string()));
            }
        }
        // That node may have stored the session before it failed: once
        // back, it sends here what it holds, which this session has.
        let now = crate::message::unix_ms();
        let mut uids = self.recent.as_ref().map(|r| r.ids()).unwrap_or_default();
        uids.extend(self.outgoing.iter().map(|m| m.message.uid));
        self.recent = Some(Box::new(super::recent::Recent::after_move(now, uids)));
        self.lifecycle = super::core::Lifecycle::Offline {
            since_ms: Some(now),
        };
        self.start_expiry_timer(ctx);
        true
    }

    /// A newer session of this client starts on this node (it took the
    /// session back, or the client asked for a clean start): what this
    /// actor kept goes, its stored records first (the store's writer keeps
    /// the order, so they go before the newer session's writes). Records
    /// are left alone if a session of the client runs here already: they
    /// are its own.
    pub(super) fn supersede(&mut self) {
        if let super::core::Lifecycle::Moved {
            owner,
            retired,
            kept: true,
        } = self.lifecycle
        {
            if self.stored && self.state.registry().get(self.client_id()).is_none() {
                self.state.writer().submit(
                    vec![storage::WriteOp::DeleteSession {
                        client_id: self.client_id().to_string(),
                    }],
                    None,
                );
            }
            self.forget_kept(owner, retired);
        }
    }

    /// A kept session's messages and state are gone (deleted, or with
    /// their owner): the actor only forwards to `owner` from now on.
    fn forget_kept(&mut self, owner: u64, retired: bool) {
        self.stored = false;
        self.outgoing.clear();
        self.incoming.clear();
        self.recent = None;
        self.lifecycle = super::core::Lifecycle::Moved {
            owner,
            retired,
            kept: false,
        };
    }

    /// Sends every message this session holds to the session on node
    /// `owner`, in order; each future says whether it arrived. A QoS 2
    /// copy goes with its packet id and flow state (`OwnerMoved`).
    ///
    /// Copies a fail-over superseded are not sent: another node took the
    /// session from its replica while this node was unreachable, and the
    /// replica held every copy of this node's up to that seq (in the state
    /// it last shipped; `Cluster::superseded_through`).
    fn forward_all(&self, owner: u64) -> Vec<futures::future::BoxFuture<'static, bool>> {
        let cluster = self.state.cluster();
        let stale_through = cluster.superseded_through(self.client_id());
        if let Some(through) = stale_through {
            let stale = self.outgoing.iter().filter(|m| m.seq <= through).count();
            tracing::info!(client_id = %self.client_id(), owner, through_seq = through, stale, "session taken from its replica while this node was unreachable: copies up to that seq are not sent again");
        }
        self.outgoing
            .iter()
            .filter(|m| stale_through.is_none_or(|through| m.seq > through))
            .map(|m| {
                let flow = (m.qos == QoS::ExactlyOnce).then(|| cluster::OpenFlow {
                    packet_id: packet_id_of(m.seq),
                    released: m.state == OutState::Released,
                });
                cluster.forward_to_session(
                    owner,
                    self.client_id(),
                    &m.message,
                    (m.qos, m.retain),
                    &m.subscription_ids,
                    flow,
                )
            })
            .collect()
    }

    /// A session kept after a hand-over is owned by `owner` now, another
    /// node than the one it was handed to (that one failed before its
    /// claim, and the client resumed elsewhere from the replicated record):
    /// what it kept goes to `owner`, and its records here once all of it
    /// arrived.
    fn send_kept(&mut self, owner: u64) {
        let super::core::Lifecycle::Moved {
            retired,
            kept: true,
            ..
        } = self.lifecycle
        else {
            return;
        };
        tracing::info!(client_id = %self.client_id(), owner, queued = self.outgoing.len(), "session kept after a hand-over is owned by another node: sending it what was kept");
        let sends = self.forward_all(owner);
        if self.stored {
            let client_id = self.client_id().to_owned();
            let state = self.state.clone();
            actix_rt::spawn(async move {
                let mut all = true;
                for send in sends {
                    all &= send.await;
                }
                if !all {
                    tracing::warn!(%client_id, "some kept messages did not reach the session's owner; kept for the next restart");
                } else if state.registry().get(&client_id).is_none() {
                    state.writer().submit(
                        vec![storage::WriteOp::DeleteSession {
                            client_id: client_id.to_string(),
                        }],
                        None,
                    );
                }
            });
        } else {
            actix_rt::spawn(futures::future::join_all(sends));
        }
        self.forget_kept(owner, retired);
        self.state.registry().add_moved(self.handle.clone(), owner);
    }

    /// A copy routed to this session after it moved to `owner`: sent to
    /// the session's owner (`owner`, or where the replicated state says it
    /// went since), retried while that node is not ready for it; its
    /// publisher is acknowledged once the owner has it.
    pub(super) fn forward_moved(&mut self, owner: u64, mut d: Deliver) {
        let cluster = self.state.cluster().clone();
        let client_id = self.client_id().to_string();
        let me = cluster.node_id();
        let state = self.state.clone();
        state.registry().forwarding().fetch_add(1, Ordering::AcqRel);
        // A copy not forwarded (the node stopped first) fails its publisher
        // rather than counting as delivered.
        let ack = FailUnlessDone(d.ack.take());
        tracing::debug!(%client_id, uid = d.message.uid, owner, "a copy for a session that moved forwarded to its owner");
        actix_rt::spawn(async move {
            let _count = ForwardingCount(state.clone());
            let mut ack = ack;
            for _ in 0..FORWARD_ATTEMPTS {
                let current = cluster.session_owner(&client_id);
                if current == Some(me) {
                    // The session came back to this node within the
                    // window: the copy goes to it here (it drops a copy it
                    // has already), not to the node it left.
                    if let Some(live) = state.registry().get(client_id.as_str()) {
                        live.send(Deliver {
                            ack: ack.0.take(),
                            backpressure: Backpressure::Untracked,
                            ..d
                        });
                        return;
                    }
                }
                let owner = current.filter(|o| *o != me).unwrap_or(owner);
                let sent = cluster.forward_to_session(
                    owner,
                    &client_id,
                    &d.message,
                    (d.qos, d.retain),
                    &d.subscription_ids,
                    d.flow,
                );
                if sent.await {
                    ack.succeed();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tracing::warn!(%client_id, owner, topic = %d.message.topic, "a message for a session that moved did not reach its new owner");
        });
    }

    /// The drain is over: withdraw this moved session's routes (the other
    /// nodes stop sending here) while it still forwards what is on its way.
    pub(super) fn retire(&mut self) {
        if let super::core::Lifecycle::Moved {
            owner,
            retired: false,
            kept,
        } = self.lifecycle
        {
            for filter in self.subscriptions.keys() {
                self.state
                    .cluster()
                    .propose(Proposal::RemoveRoute(filter.to_string()));
            }
            self.lifecycle = super::core::Lifecycle::Moved {
                owner,
                retired: true,
                kept,
            };
        }
    }
}

/// Fails the guard it holds when dropped with it (a forward that did not
/// complete); `.0 = None` once done.
struct FailUnlessDone(Option<crate::handle::AckGuard>);

impl FailUnlessDone {
    /// The copy arrived: release the guard without failing it.
    fn succeed(mut self) {
        drop(self.0.take());
    }
}

impl Drop for FailUnlessDone {
    fn drop(&mut self) {
        if let Some(ack) = self.0.take() {
            ack.fail();
        }
    }
}

/// Counts a copy in `Registry::forwarding` while alive.
struct ForwardingCount(crate::state::State);

impl Drop for ForwardingCount {
    fn drop(&mut self) {
        self.0
            .registry()
            .forwarding()
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tries of a copy for a session that moved (100 ms apart).
const FORWARD_ATTEMPTS: usize = 30;

/// How long a session that moved away goes on forwarding what arrives for
/// it (its routes withdrawn after `forward_timeout_secs`): within the new
/// owner's move window (`recent::WINDOW_MS`, 30 s), so that a copy arriving
/// both ways is still dropped there. A node that was cut off from the
/// leader for longer than this during a move can route copies to the old
/// node after it stopped forwarding (README, Cluster, known limits).
const MOVED_FORWARDS_FOR: Duration = Duration::from_secs(20);
const _: () = assert!(MOVED_FORWARDS_FOR.as_secs() * 1000 < super::recent::WINDOW_MS);

/// How many packet ids past its old owner's numbering a session resumed
/// from its replicated record, or taken from a replica, treats as possibly
/// open in the client
/// (`Outgoing::may_be_open`): more than a session gets copies between two
/// writes of its record at the rates this was sized for (about 1,000 per
/// minute for two minutes); each is released once, 4 bytes on the wire,
/// when the numbering comes round to it.
pub(super) const RELEASED_AFTER_LOSS: u64 = 4_096;

/// How often a session kept after a hand-over looks whether its taker's
/// claim is in.
const CLAIM_CHECK: Duration = Duration::from_millis(250);
/// How often a session kept after a hand-over looks whether the new
/// owner's claim is in, once its forwarding window is over.
const KEPT_RECHECK: Duration = Duration::from_secs(5);
/// How long it waits for that claim at most (then its records stay on
/// disk, and the next start restores the session here or hands its
/// messages to the owner of the day).
const KEPT_AT_MOST: Duration = Duration::from_secs(600);

/// What a session leaving this node does with what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaving {
    /// Its stored records go now.
    Delete,
    /// The caller deletes its stored records once their messages reached
    /// the new owner.
    KeepStored,
    /// Handed over at the new owner's request: messages and stored
    /// records stay with the actor until that node's claim is seen
    /// committed (`Session::end_move`, `Session::revive`).
    Tentative,
}

impl Session {
    /// The node drains: close the connection, telling a 5.0 client where
    /// to reconnect; a persistent session stays here, offline, until
    /// another node adopts it.
    pub(super) fn drain(
        &mut self,
        reference: Option<bytestring::ByteString>,
        ctx: &mut Context<Self>,
    ) {
        if self.conn.is_some() {
            self.connection_lost(CloseReason::UseAnotherServer(reference), ctx);
        }
    }

    /// Takes on a session a draining node handed over: it replaces what
    /// this one held, is stored, and waits offline for its client (its
    /// expiry counts from when it went offline there). A client that
    /// connected here meanwhile took the session over itself: nothing to
    /// do. Returns the record to claim.
    pub(super) fn adopt(
        &mut self,
        imported: Imported,
        ctx: &mut Context<Self>,
    ) -> Option<cluster::SessionInfo> {
        if self.is_ended() {
            return None;
        }
        if self.conn.is_none() {
            let since = match &imported {
                Imported::State(s) | Imported::Replica(s, _) => s.info.disconnected_at_ms,
                Imported::Record(info) => info.disconnected_at_ms,
            }
            .unwrap_or_else(crate::message::unix_ms);
            self.discard_state();
            self.import(imported);
            // the adopting node claims it, fail-over included (`drain::install`)
            if let Some(link) = self.replica.as_mut() {
                link.failed_over = None;
            }
            self.lifecycle = super::core::Lifecycle::Offline {
                since_ms: Some(since),
            };
            self.store_session_record(Some(since));
            self.start_expiry_timer(ctx);
        }
        Some(self.session_info())
    }
}

impl Handler<HandOver> for Session {
    type Result = Option<cluster::SessionState>;

    fn handle(&mut self, msg: HandOver, ctx: &mut Context<Self>) -> Self::Result {
        // A session kept after a hand-over whose taker failed is handed
        // over again to the next node that asks.
        let again = matches!(
            self.lifecycle,
            super::core::Lifecycle::Moved { kept: true, .. }
        );
        if self.is_ended() && !again {
            return None;
        }
        tracing::info!(client_id = %self.client_id(), to = msg.to, again, "session handed over to another node");
        let mut recent_uids = self.recent.as_ref().map(|r| r.ids()).unwrap_or_default();
        recent_uids.extend(
            self.outgoing
                .iter()
                .map(|m| m.message.uid)
                .filter(|u| *u != 0),
        );
        let state = cluster::SessionState {
            client_id: self.client_id().to_string(),
            info: self.session_info(),
            protocol_level: self.protocol.level(),
            outgoing: self
                .outgoing
                .iter()
                .map(|m| {
                    (
                        m.seq,
                        storage::OutgoingRecord {
                            released: m.state == OutState::Released,
                            uid: m.message.uid,
                            message: m.message.to_stored(m.qos, m.retain, &m.subscription_ids),
                        },
                    )
                })
                .collect(),
            incoming_qos2: self.incoming.qos2_ids(),
            recent_uids,
            next_seq: self.outgoing.next_seq(),
        };
        if let super::core::Lifecycle::Moved { retired, .. } = self.lifecycle {
            self.lifecycle = super::core::Lifecycle::Moved {
                owner: msg.to,
                retired,
                kept: true,
            };
            self.state.registry().add_moved(self.handle.clone(), msg.to);
        } else {
            self.leave(Leaving::Tentative, msg.to, ctx);
        }
        Some(state)
    }
}

impl Handler<OwnerMoved> for Session {
    type Result = ();

    fn handle(&mut self, msg: OwnerMoved, ctx: &mut Context<Self>) {
        if self.is_ended() {
            return;
        }
        tracing::info!(client_id = %self.client_id(), owner = msg.owner, "session owned by another node now");
        // What the client has not completed goes to the new owner, in
        // order; the local copies are deleted once all have arrived. A QoS
        // 2 copy goes with its packet id, and one the client answered with
        // PUBREC only as that open flow: the client may hold the id until
        // PUBREL, and would take a later message the new owner sent with
        // that id for a resend of this one (chaos seed 2: a copy lost 55 s
        // after the session had moved this way). Queued copies too: after
        // a restart every copy not stored as Released is restored as
        // Queued, also one the client had answered with PUBREC when the
        // node was killed before that state reached the disk (chaos seed 9:
        // the id stayed open in the client, a copy lost 69 s later). Under
        // the same id the client answers PUBREC for it without taking it
        // twice, or takes it once if it never had it.
        let sends = self.forward_all(msg.owner);
        let keep_stored = self.stored;
        let client_id = self.client_id().to_string();
        let writer = self.state.writer().clone();
        self.leave(
            if keep_stored {
                Leaving::KeepStored
            } else {
                Leaving::Delete
            },
            msg.owner,
            ctx,
        );
        if keep_stored {
            actix_rt::spawn(async move {
                let mut all = true;
                for send in sends {
                    all &= send.await;
                }
                if all {
                    writer.submit(vec![storage::WriteOp::DeleteSession { client_id }], None);
                } else {
                    tracing::warn!(%client_id, "some messages did not reach the session's new owner; kept for the next restart");
                }
            });
        }
    }
}
