//! Server-to-client QoS 1 and 2 flows of one session: the queue of messages
//! waiting to be sent and the window of messages sent and not yet
//! acknowledged (3.1.1 section 4.3, 4.4, 4.6; 5.0 sections 4.3, 4.4, 4.9).
//!
//! Sans-IO: methods take packets and `now_ms` and return what to send; the
//! session actor writes, persists and times.
//!
//! Each message gets a sequence number when queued; its packet id is derived
//! from it (`packet_id_of(seq)`), so a restarted broker resends a stored
//! in-flight message with the packet id it had before the crash, without
//! having had to persist the id when it was first sent. A message whose
//! packet id is still held by an older unacknowledged message waits.
//!
//! Lifecycle of a message: `Queued` -> (sent) `Sent` -> PUBACK: gone (QoS 1);
//! `Sent` -> PUBREC -> `Released` -> PUBCOMP: gone (QoS 2). Messages are sent
//! in queue order [MQTT-4.6.0-6]; expired queued messages are dropped, never
//! sent (5.0 [MQTT-3.3.2-5]).

use std::collections::VecDeque;
use std::sync::Arc;

use bytestring::ByteString;
use smallvec::SmallVec;

use crate::codec::{Publish, QoS};
use crate::handle::AckGuard;
use crate::limits::QueueCharge;
use crate::message::Message;

/// Where a message is in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// Not sent on the current connection yet.
    Queued,
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent,
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// A QoS 1 or 2 message bound for this session's client.
#[derive(Debug, Clone)]
pub struct OutMsg {
    pub seq: u64,
    /// Delivered QoS: the lower of the published and the subscribed QoS.
    pub qos: QoS,
    pub retain: bool,
    pub message: Arc<Message>,
    pub subscription_ids: SmallVec<[u32; 2]>,
    /// The shared subscription it came through, if any.
    pub shared_filter: Option<ByteString>,
    pub state: OutState,
    /// False while a copy bound for a persistent session is not on disk yet
    /// and must not be sent (QoS 2: a copy sent before it is stored could be
    /// delivered twice after a crash, because the publisher resends it).
    pub durable: bool,
    /// Counts the copy in the node's held bytes (`limits.max_queued_bytes`)
    /// while it exists.
    pub charge: QueueCharge,
    /// The publisher's acknowledgement, held back while this copy waits in
    /// a congested queue (`limits.backpressure_queued`): released when the
    /// copy is sent, dropped, or at the deadline.
    pub hold: Option<Hold>,
}

/// A publisher's [`AckGuard`] held until a copy is sent, or `until_ms`.
#[derive(Debug, Clone)]
pub struct Hold {
    pub guard: AckGuard,
    pub until_ms: u64,
}

/// Why an acknowledgement from the client does not fit the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No message in flight has this packet id (5.0: reason 0x92).
    #[error("no message in flight with packet id {0}")]
    UnknownPacketId(u16),
    /// The message with this id is in another state (PUBACK for a QoS 2
    /// message, PUBCOMP before PUBREC ...): a protocol error.
    #[error("{packet} for packet id {packet_id} does not fit its flow")]
    WrongState {
        packet: &'static str,
        packet_id: u16,
    },
}

/// What sending the queue produced.
// The PUBLISH variant is the common one: boxing it would cost an
// allocation per message to save stack space in a short-lived value.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum SendAction {
    /// Write this PUBLISH, of a message that arrived at this instant (for
    /// the publish-to-deliver latency).
    Publish(Publish, Option<std::time::Instant>),
    /// This queued message expired before it could be sent: forget it (and
    /// delete its stored copy).
    Expired(u64),
    /// Write PUBREL for this packet id, which the client may hold open from
    /// an owner that lost the session ([`Outgoing::may_be_open`]).
    Release(u16),
}

/// Whether `push` kept the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue is at `max_queued`; the message was dropped.
    Full,
}

/// The packet id a message with sequence number `seq` (from 1) is sent with:
/// 1, 2, ... 65535, 1, ...
pub fn packet_id_of(seq: u64) -> u16 {
    (seq.wrapping_sub(1) % u64::from(u16::MAX)) as u16 + 1
}

/// Outgoing QoS 1/2 state of one session.
#[derive(Debug)]
pub struct Outgoing {
    /// The messages, boxed and only while there are some: an idle session
    /// holds 8 bytes, not two `VecDeque`s and the buffers its last burst
    /// grew them to.
    lists: Option<Box<Lists>>,
    next_seq: u64,
    /// Most messages in flight (the client's Receive Maximum, capped by
    /// the broker's `max_inflight`).
    pub max_inflight: usize,
    /// Most messages in the queue.
    pub max_queued: usize,
    /// Packet ids the client may hold open from an owner that lost the
    /// session's state, released just before this session first uses one
    /// ([`Outgoing::may_be_open`]); `None` almost always.
    open_elsewhere: Option<Box<OpenElsewhere>>,
}

/// How many ids past the front of the queue are released ahead, so that a
/// session reaching ids the client may hold open does not wait a round trip
/// for each.
const RELEASE_AHEAD: u64 = 1_024;

/// Packet ids a client may hold open (PUBREC sent, PUBREL never came) from
/// a session owner whose state was lost: each is released (PUBREL, the
/// client answers PUBCOMP) before this session sends under it, and no
/// PUBLISH goes under it until the PUBCOMP is in.
#[derive(Debug)]
struct OpenElsewhere {
    /// Bit `id` set: may be open, not released yet.
    open: Box<[u64; 1024]>,
    /// How many bits are set.
    left: usize,
    /// Released, PUBCOMP not in yet.
    releasing: Vec<u16>,
    /// Sequence numbers below this one were looked at.
    scanned_to: u64,
}

impl OpenElsewhere {
    fn contains(&self, id: u16) -> bool {
        self.open[usize::from(id) / 64] & (1 << (id % 64)) != 0
    }

    /// Clears `id`; true if it was set.
    fn take(&mut self, id: u16) -> bool {
        let (word, bit) = (usize::from(id) / 64, 1u64 << (id % 64));
        let was = self.open[word] & bit != 0;
        self.open[word] &= !bit;
        // Not `self.left -= usize::from(was)`: rustc 1.95.0 at opt-level 3
        // compiles that to no decrement at all (reduced in the issue 15
        // note; nightly and opt-level 1 are right), and the set would
        // never be freed. The test below catches it in release builds.
        if was {
            self.left -= 1;
        }
        was
    }

    fn is_done(&self) -> bool {
        self.left == 0 && self.releasing.is_empty()
    }
}

#[derive(Debug, Default)]
struct Lists {
    /// Sent and unacknowledged (`Sent` or `Released`), in sequence order.
    inflight: VecDeque<OutMsg>,
    /// Waiting to be sent, in sequence order.
    queue: VecDeque<OutMsg>,
}

impl Outgoing {
    pub fn new(max_inflight: usize, max_queued: usize) -> Outgoing {
        Outgoing {
            lists: None,
            next_seq: 1,
            max_inflight,
            max_queued,
            open_elsewhere: None,
        }
    }

    /// The lists, created for a message to go in.
    fn lists_mut(&mut self) -> &mut Lists {
        self.lists.get_or_insert_with(Box::default)
    }

    /// Frees the lists once the last message has left them.
    fn tidy(&mut self) {
        if self
            .lists
            .as_ref()
            .is_some_and(|l| l.inflight.is_empty() && l.queue.is_empty())
        {
            self.lists = None;
        }
    }

    /// Number of messages queued and in flight.
    pub fn len(&self) -> usize {
        self.inflight_len() + self.queued_len()
    }

    pub fn is_empty(&self) -> bool {
        self.lists.is_none()
    }

    pub fn inflight_len(&self) -> usize {
        self.lists.as_ref().map_or(0, |l| l.inflight.len())
    }

    /// Number of messages waiting to be sent (not in flight).
    pub fn queued_len(&self) -> usize {
        self.lists.as_ref().map_or(0, |l| l.queue.len())
    }

    /// Releases the held acknowledgements whose deadline is before
    /// `before_ms` (all of them for `u64::MAX`); returns how many, and the
    /// earliest deadline still held.
    pub fn release_holds(&mut self, before_ms: u64) -> (usize, Option<u64>) {
        let mut released = 0;
        let mut earliest: Option<u64> = None;
        let Some(lists) = &mut self.lists else {
            return (0, None);
        };
        for m in &mut lists.queue {
            match &m.hold {
                Some(h) if h.until_ms < before_ms => {
                    m.hold = None;
                    released += 1;
                }
                Some(h) => earliest = Some(earliest.map_or(h.until_ms, |e| e.min(h.until_ms))),
                None => {}
            }
        }
        (released, earliest)
    }

    /// True when a new message could not be sent at once: others wait
    /// before it, or the window is full.
    pub fn would_wait(&self) -> bool {
        self.queued_len() > 0 || self.inflight_len() >= self.max_inflight
    }

    /// True when a new message would be dropped.
    pub fn is_full(&self) -> bool {
        self.queued_len() >= self.max_queued
    }

    /// Sequence number the next pushed message gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The first sequence number from [`Outgoing::next_seq`] on whose
    /// packet id is `packet_id`: a message handed over with a flow the
    /// client holds open under that id is queued at it (the numbers in
    /// between are skipped).
    pub fn next_seq_with(&self, packet_id: u16) -> u64 {
        let from = packet_id_of(self.next_seq);
        let ahead =
            (u64::from(packet_id) + u64::from(u16::MAX) - u64::from(from)) % u64::from(u16::MAX);
        self.next_seq + ahead
    }

    /// Moves the next sequence number (and so packet id) `n` ahead.
    pub fn skip(&mut self, n: u64) {
        self.next_seq += n;
    }

    /// Numbers the next message at `seq` or later (never goes back): the
    /// numbering a session's previous owner had reached.
    pub fn continue_from(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }

    /// The client may hold open the packet ids of sequence numbers `from ..
    /// from + count` (a session resumed from its replicated record after
    /// its owner lost the state; its own numbering goes on past them):
    /// each is released just before this session first sends under it
    /// ([`poll_send`](Self::poll_send) returns [`SendAction::Release`]),
    /// which is after the numbering wrapped; not at all once the old
    /// owner turns out to have the state, its flows arriving late
    /// ([`continues_flow`](Self::continues_flow)). Releasing them at once
    /// would free an id whose message reaches this session later with its
    /// flow: the client would take it a second time.
    pub fn may_be_open(&mut self, from: u64, count: u64) {
        let mut open = OpenElsewhere {
            open: Box::new([0; 1024]),
            left: 0,
            releasing: Vec::new(),
            scanned_to: 0,
        };
        for seq in from..from + count.min(u64::from(u16::MAX)) {
            let id = packet_id_of(seq);
            if !open.contains(id) {
                open.open[usize::from(id) / 64] |= 1 << (id % 64);
                open.left += 1;
            }
        }
        self.open_elsewhere = (open.left > 0).then(|| Box::new(open));
    }

    /// A message of the old owner's arrived with its open flow: that owner
    /// did not lose the session's state (it was cut off, or moving it) and
    /// sends every copy it held, each with its flow, in order. No id is
    /// released then: one released ahead of a flow still on its way would
    /// make the client take that copy a second time. (Ids released already
    /// wait for their PUBCOMP as before.)
    pub fn continues_flow(&mut self) {
        if let Some(open) = &mut self.open_elsewhere {
            open.open.fill(0);
            open.left = 0;
            if open.is_done() {
                self.open_elsewhere = None;
            }
        }
    }

    /// Packet ids released ([`SendAction::Release`]) whose PUBCOMP is not
    /// in: released again on a new connection.
    pub fn releasing(&self) -> &[u16] {
        self.open_elsewhere
            .as_ref()
            .map_or(&[], |o| o.releasing.as_slice())
    }

    /// True when a message in flight has `packet_id`.
    pub fn holds_packet_id(&self, packet_id: u16) -> bool {
        self.lists
            .as_ref()
            .is_some_and(|l| l.inflight.iter().any(|m| packet_id_of(m.seq) == packet_id))
    }

    /// Queues a new message; its `seq` is [`Outgoing::next_seq`] or, for a
    /// handed-over flow, [`Outgoing::next_seq_with`].
    pub fn push(&mut self, msg: OutMsg) -> Pushed {
        if self.is_full() {
            return Pushed::Full;
        }
        debug_assert!(msg.seq >= self.next_seq);
        self.next_seq = msg.seq + 1;
        self.lists_mut().queue.push_back(msg);
        Pushed::Queued
    }

    /// Puts a message back in its place in sequence order: a stored one
    /// after a restart, or one taken out and not handed elsewhere. Restored
    /// messages are never dropped for a full queue: they were accepted before.
    pub fn restore(&mut self, mut msg: OutMsg) {
        msg.charge.set_in_flight(msg.state == OutState::Released);
        self.next_seq = self.next_seq.max(msg.seq + 1);
        let lists = self.lists_mut();
        let list = if msg.state == OutState::Released {
            &mut lists.inflight
        } else {
            &mut lists.queue
        };
        let at = list.partition_point(|m| m.seq < msg.seq);
        list.insert(at, msg);
    }

    /// Marks a message as stored on disk; it may be sent now.
    pub fn mark_durable(&mut self, seq: u64) {
        let Some(lists) = &mut self.lists else { return };
        if let Some(m) = lists.queue.iter_mut().find(|m| m.seq == seq) {
            m.durable = true;
        }
    }

    /// Moves messages from the queue into the window while there is room and
    /// returns what to write. `room` is how many more PUBLISH packets the
    /// connection can take now (write-buffer limit).
    pub fn poll_send(&mut self, now_ms: u64, mut room: usize, out: &mut Vec<SendAction>) {
        let Some(lists) = &mut self.lists else { return };
        while room > 0 && lists.inflight.len() < self.max_inflight {
            let Some(front) = lists.queue.front() else {
                break;
            };
            if front.message.is_expired(now_ms) {
                let seq = front.seq;
                lists.queue.pop_front();
                out.push(SendAction::Expired(seq));
                continue;
            }
            if !front.durable {
                break;
            }
            let packet_id = packet_id_of(front.seq);
            if lists
                .inflight
                .iter()
                .any(|m| packet_id_of(m.seq) == packet_id)
            {
                break;
            }
            if let Some(open) = &mut self.open_elsewhere {
                let ahead = front.seq + RELEASE_AHEAD;
                for seq in open.scanned_to.max(front.seq)..ahead {
                    let id = packet_id_of(seq);
                    if open.take(id) {
                        open.releasing.push(id);
                        out.push(SendAction::Release(id));
                    }
                }
                open.scanned_to = open.scanned_to.max(ahead);
                if open.releasing.contains(&packet_id) {
                    // its PUBCOMP comes first
                    break;
                }
            }
            let mut msg = lists
                .queue
                .pop_front()
                .expect("front exists: checked above");
            msg.state = OutState::Sent;
            msg.charge.set_in_flight(true);
            // sent: the publisher may be acknowledged
            msg.hold = None;
            let publish = msg.message.to_publish(
                msg.qos,
                msg.retain,
                Some(packet_id),
                false,
                &msg.subscription_ids,
                now_ms,
            );
            out.push(SendAction::Publish(publish, msg.message.received_at));
            lists.inflight.push_back(msg);
            room -= 1;
        }
        self.tidy();
    }

    /// What to resend on a resumed session: every `Sent` message again with
    /// DUP set, every `Released` one as a PUBREL, in order [MQTT-4.4.0-1].
    /// Returns (PUBLISH to resend, packet ids to re-release).
    pub fn resend(&mut self, now_ms: u64) -> Vec<Resend> {
        let Some(lists) = &self.lists else {
            return Vec::new();
        };
        lists
            .inflight
            .iter()
            .map(|m| {
                let packet_id = packet_id_of(m.seq);
                match m.state {
                    OutState::Released => Resend::PubRel(packet_id),
                    _ => Resend::Publish(m.message.to_publish(
                        m.qos,
                        m.retain,
                        Some(packet_id),
                        true,
                        &m.subscription_ids,
                        now_ms,
                    )),
                }
            })
            .collect()
    }

    /// The in-flight list and the index of the message with `packet_id`.
    fn find(&mut self, packet_id: u16) -> Result<(&mut VecDeque<OutMsg>, usize), AckError> {
        let inflight = &mut self
            .lists
            .as_mut()
            .ok_or(AckError::UnknownPacketId(packet_id))?
            .inflight;
        let i = inflight
            .iter()
            .position(|m| packet_id_of(m.seq) == packet_id)
            .ok_or(AckError::UnknownPacketId(packet_id))?;
        Ok((inflight, i))
    }

    /// Takes the in-flight message `i` out (an index from `find`).
    fn take_inflight(&mut self, i: usize) -> u64 {
        let lists = self.lists.as_mut().expect("`find` found the lists");
        let seq = lists.inflight.remove(i).expect("index from `find`").seq;
        self.tidy();
        seq
    }

    /// PUBACK: completes a QoS 1 message; returns its seq.
    pub fn handle_puback(&mut self, packet_id: u16) -> Result<u64, AckError> {
        let (inflight, i) = self.find(packet_id)?;
        let m = &inflight[i];
        if m.qos != QoS::AtLeastOnce || m.state != OutState::Sent {
            return Err(AckError::WrongState {
                packet: "PUBACK",
                packet_id,
            });
        }
        Ok(self.take_inflight(i))
    }

    /// PUBREC: a QoS 2 message is received; returns its seq (the session
    /// stores the `Released` state, then sends PUBREL). A PUBREC for a message
    /// already released is answered again (the PUBREL may have been lost).
    pub fn handle_pubrec(&mut self, packet_id: u16) -> Result<u64, AckError> {
        let (inflight, i) = self.find(packet_id)?;
        let m = &mut inflight[i];
        if m.qos != QoS::ExactlyOnce {
            return Err(AckError::WrongState {
                packet: "PUBREC",
                packet_id,
            });
        }
        m.state = OutState::Released;
        Ok(m.seq)
    }

    /// Ends the flow of a message in flight whatever its state: a 5.0 PUBREC
    /// with a failure reason, or a message too large for the client, which is
    /// treated as delivered [MQTT-3.1.2-25]. Returns its seq.
    pub fn remove(&mut self, packet_id: u16) -> Result<u64, AckError> {
        let (_, i) = self.find(packet_id)?;
        Ok(self.take_inflight(i))
    }

    /// PUBCOMP: completes a QoS 2 message; returns its seq. For an id
    /// released as possibly open elsewhere ([`Outgoing::may_be_open`]):
    /// `UnknownPacketId`, and the id is free for this session's messages.
    pub fn handle_pubcomp(&mut self, packet_id: u16) -> Result<u64, AckError> {
        if let Some(open) = &mut self.open_elsewhere {
            if let Some(i) = open.releasing.iter().position(|id| *id == packet_id) {
                open.releasing.swap_remove(i);
                if open.is_done() {
                    self.open_elsewhere = None;
                }
                return Err(AckError::UnknownPacketId(packet_id));
            }
        }
        let (inflight, i) = self.find(packet_id)?;
        if inflight[i].state != OutState::Released {
            return Err(AckError::WrongState {
                packet: "PUBCOMP",
                packet_id,
            });
        }
        Ok(self.take_inflight(i))
    }

    /// Every message, in flight then queued.
    pub fn iter(&self) -> impl Iterator<Item = &OutMsg> {
        self.lists
            .iter()
            .flat_map(|l| l.inflight.iter().chain(l.queue.iter()))
    }

    /// The message with this seq, queued or in flight.
    pub fn get(&self, seq: u64) -> Option<&OutMsg> {
        self.iter().find(|m| m.seq == seq)
    }

    /// Takes the messages that came through shared subscriptions, to hand
    /// them to other members of their groups: those still queued, and with
    /// `in_flight` those sent but not yet received by the client (`Sent`; a
    /// `Released` one was received).
    pub fn take_shared(&mut self, in_flight: bool) -> Vec<OutMsg> {
        let mut taken = Vec::new();
        let Some(lists) = &mut self.lists else {
            return taken;
        };
        let take = |m: &OutMsg| m.shared_filter.is_some() && m.state != OutState::Released;
        let lists = if in_flight {
            vec![&mut lists.inflight, &mut lists.queue]
        } else {
            vec![&mut lists.queue]
        };
        for list in lists {
            let mut kept = VecDeque::with_capacity(list.len());
            for m in list.drain(..) {
                if take(&m) {
                    taken.push(m);
                } else {
                    kept.push_back(m);
                }
            }
            *list = kept;
        }
        self.tidy();
        taken
    }

    /// Forgets everything (Clean Start, session end).
    pub fn clear(&mut self) {
        self.lists = None;
        self.open_elsewhere = None;
    }

    /// Removes the queued (not in-flight) messages for which `drop` is true;
    /// returns their sequence numbers.
    pub fn remove_queued_where(&mut self, mut drop: impl FnMut(&OutMsg) -> bool) -> Vec<u64> {
        let mut removed = Vec::new();
        let Some(lists) = &mut self.lists else {
            return removed;
        };
        lists.queue.retain(|m| {
            let d = drop(m);
            if d {
                removed.push(m.seq);
            }
            !d
        });
        self.tidy();
        removed
    }
}

/// One packet to resend when a session resumes.
// The PUBLISH variant is the common one: boxing it would cost an
// allocation per message to save stack space in a short-lived value.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Resend {
    Publish(Publish),
    PubRel(u16),
}

/// A queued copy for tests of this state machine and of the planners that
/// move it: sequence number `seq` (packet id `seq` too), expiring at
/// `expires_at_ms` if set.
#[cfg(test)]
pub(crate) fn test_copy(seq: u64, qos: QoS, expires_at_ms: Option<u64>) -> OutMsg {
    OutMsg {
        seq,
        qos,
        retain: false,
        message: Arc::new(Message {
            topic: bytestring::ByteString::from_static("t"),
            payload: bytes::Bytes::from_static(b"p"),
            qos,
            retain: false,
            properties: Default::default(),
            expires_at_ms,
            origin: 7,
            received_at: None,
            uid: 0,
        }),
        subscription_ids: SmallVec::new(),
        shared_filter: None,
        state: OutState::Queued,
        durable: true,
        hold: None,
        charge: QueueCharge::none(),
    }
}

#[cfg(test)]
mod tests;
