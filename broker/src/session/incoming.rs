//! Client-to-server QoS 1 and 2 flows of one session (3.1.1 sections 4.3.2,
//! 4.3.3, 4.6; 5.0 sections 4.3.2, 4.3.3, 4.9).
//!
//! Sans-IO. Two things live here:
//! - the packet ids of QoS 2 messages received and not yet released by PUBREL
//!   (method B of 3.1.1 figure 4.3: store the id, deliver at once, forget the id
//!   on PUBREL), so a resent PUBLISH with DUP is not delivered twice;
//! - the acknowledgements owed to the client, in the order its PUBLISH packets
//!   arrived [MQTT-4.6.0-2] [MQTT-4.6.0-3]. An acknowledgement may have to wait
//!   until the copies bound for persistent sessions are on disk; later ones
//!   wait behind it.

use std::collections::{HashSet, VecDeque};

use crate::codec::ReasonCode;

/// Which acknowledgement is owed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// PUBACK for a QoS 1 PUBLISH.
    PubAck,
    /// PUBREC for a QoS 2 PUBLISH.
    PubRec,
}

/// An acknowledgement ready to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyAck {
    pub kind: AckKind,
    pub packet_id: u16,
    pub reason_code: ReasonCode,
}

#[derive(Debug)]
struct Pending {
    token: u64,
    ack: ReadyAck,
    ready: bool,
}

/// Incoming QoS state of one session.
#[derive(Debug, Default)]
pub struct Incoming {
    /// Boxed, and only while something is owed or unreleased: most
    /// sessions are idle most of the time.
    state: Option<Box<State>>,
    next_token: u64,
}

#[derive(Debug, Default)]
struct State {
    /// QoS 2 packet ids received and not released.
    qos2: HashSet<u16>,
    /// Acknowledgements owed, in arrival order.
    pending: VecDeque<Pending>,
}

impl Incoming {
    pub fn new() -> Incoming {
        Incoming::default()
    }

    fn state_mut(&mut self) -> &mut State {
        self.state.get_or_insert_with(Box::default)
    }

    /// Frees the state once nothing is owed or unreleased.
    fn tidy(&mut self) {
        if self
            .state
            .as_ref()
            .is_some_and(|s| s.qos2.is_empty() && s.pending.is_empty())
        {
            self.state = None;
        }
    }

    /// True if a QoS 2 PUBLISH with this id was received and not released:
    /// a resend must not be delivered again.
    pub fn has_qos2(&self, packet_id: u16) -> bool {
        self.state
            .as_ref()
            .is_some_and(|s| s.qos2.contains(&packet_id))
    }

    /// Records a QoS 2 id (received, or restored from the store).
    pub fn insert_qos2(&mut self, packet_id: u16) {
        self.state_mut().qos2.insert(packet_id);
    }

    /// PUBREL: forgets the id; false if it was not known.
    pub fn release_qos2(&mut self, packet_id: u16) -> bool {
        let Some(state) = &mut self.state else {
            return false;
        };
        let known = state.qos2.remove(&packet_id);
        self.tidy();
        known
    }

    /// The QoS 2 ids awaiting PUBREL.
    pub fn qos2_ids(&self) -> Vec<u16> {
        self.state
            .as_ref()
            .map_or_else(Vec::new, |s| s.qos2.iter().copied().collect())
    }

    /// Number of QoS 2 ids awaiting PUBREL.
    pub fn qos2_len(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.qos2.len())
    }

    /// Acknowledgements owed and not yet written (counts against the broker's
    /// Receive Maximum together with unreleased QoS 2 ids).
    pub fn pending_len(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.pending.len())
    }

    /// True if an acknowledgement for this QoS 2 id is already owed.
    pub fn is_pending(&self, kind: AckKind, packet_id: u16) -> bool {
        self.state.as_ref().is_some_and(|s| {
            s.pending
                .iter()
                .any(|p| p.ack.kind == kind && p.ack.packet_id == packet_id)
        })
    }

    /// Owes an acknowledgement that waits for `complete(token)`; returns the token.
    pub fn begin(&mut self, kind: AckKind, packet_id: u16) -> u64 {
        self.push(kind, packet_id, ReasonCode::Success, false)
    }

    /// Owes an acknowledgement that can go as soon as those before it have.
    pub fn push_ready(&mut self, kind: AckKind, packet_id: u16, reason_code: ReasonCode) {
        self.push(kind, packet_id, reason_code, true);
    }

    fn push(&mut self, kind: AckKind, packet_id: u16, reason_code: ReasonCode, ready: bool) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        self.state_mut().pending.push_back(Pending {
            token,
            ack: ReadyAck {
                kind,
                packet_id,
                reason_code,
            },
            ready,
        });
        token
    }

    /// The awaited work for `token` finished; `reason_code` is Success or why
    /// it failed. Unknown tokens (from a previous connection) are ignored.
    pub fn complete(&mut self, token: u64, reason_code: ReasonCode) {
        let Some(state) = &mut self.state else { return };
        if let Some(p) = state.pending.iter_mut().find(|p| p.token == token) {
            p.ready = true;
            p.ack.reason_code = reason_code;
        }
    }

    /// Acknowledgements that may be written now, in order.
    pub fn poll_ready(&mut self, out: &mut Vec<ReadyAck>) {
        let Some(state) = &mut self.state else { return };
        while state.pending.front().is_some_and(|p| p.ready) {
            out.push(state.pending.pop_front().expect("front checked").ack);
        }
        self.tidy();
    }

    /// The connection is gone: owed acknowledgements are void (the client
    /// resends its PUBLISH packets on a resumed session). Received QoS 2 ids
    /// stay with a persistent session.
    pub fn clear_pending(&mut self) {
        if let Some(state) = &mut self.state {
            state.pending.clear();
        }
        self.tidy();
    }

    /// Forgets everything (Clean Start, session end).
    pub fn clear(&mut self) {
        self.state = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_go_out_in_publish_order_mqtt_4_6_0_2() {
        let mut i = Incoming::new();
        let slow = i.begin(AckKind::PubAck, 1);
        i.push_ready(AckKind::PubAck, 2, ReasonCode::Success);
        let mut out = Vec::new();
        i.poll_ready(&mut out);
        assert!(out.is_empty(), "2 waits behind 1");
        i.complete(slow, ReasonCode::Success);
        i.poll_ready(&mut out);
        let ids: Vec<_> = out.iter().map(|a| a.packet_id).collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn failed_work_carries_its_reason() {
        let mut i = Incoming::new();
        let t = i.begin(AckKind::PubRec, 9);
        i.complete(t, ReasonCode::UnspecifiedError);
        let mut out = Vec::new();
        i.poll_ready(&mut out);
        assert_eq!(
            out,
            vec![ReadyAck {
                kind: AckKind::PubRec,
                packet_id: 9,
                reason_code: ReasonCode::UnspecifiedError
            }]
        );
    }

    #[test]
    fn qos2_ids_are_held_until_pubrel() {
        let mut i = Incoming::new();
        i.insert_qos2(5);
        assert!(i.has_qos2(5));
        assert!(i.release_qos2(5));
        assert!(!i.has_qos2(5));
        assert!(!i.release_qos2(5));
    }

    #[test]
    fn stale_tokens_are_ignored() {
        let mut i = Incoming::new();
        i.begin(AckKind::PubAck, 1);
        i.clear_pending();
        i.complete(1, ReasonCode::Success);
        let mut out = Vec::new();
        i.poll_ready(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn state_is_freed_when_nothing_is_owed_or_unreleased() {
        let mut i = Incoming::new();
        assert!(i.state.is_none());
        i.insert_qos2(5);
        let token = i.begin(AckKind::PubRec, 5);
        i.complete(token, ReasonCode::Success);
        let mut out = Vec::new();
        i.poll_ready(&mut out);
        assert_eq!(out.len(), 1);
        assert!(i.state.is_some(), "id 5 awaits its PUBREL");
        assert!(i.release_qos2(5));
        assert!(i.state.is_none());
        assert!(!i.release_qos2(5));
        assert!(i.begin(AckKind::PubAck, 6) > token, "tokens go on");
    }
}
