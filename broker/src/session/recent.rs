//! The ids of messages a session got lately, so that a copy it got already
//! is not delivered twice when the session moves between nodes (a drain, a
//! client reconnecting elsewhere). During a move a message can reach the
//! new owner twice: straight from the publishing node (which routes to the
//! new owner once it has the session's route) and through the old owner,
//! which forwards what still arrives for the session for a while
//! (`clustered.rs`). Both copies carry the message's cluster-wide id
//! (`Message::uid`).
//!
//! Two regimes, without I/O (the caller passes `now`):
//! - always, for a persistent session: the last [`RING`] ids of QoS 2
//!   copies, checked by a scan, handed over with the session (a QoS 2
//!   message must not arrive twice; QoS 1 duplicates are allowed);
//! - for [`WINDOW_MS`] after the session arrived from another node: every
//!   id, with the ones the old owner handed over, in a hash set (at most
//!   [`WINDOW_CAP`]).

use std::collections::{HashSet, VecDeque};

use crate::codec::QoS;

/// QoS 2 ids kept outside a move window.
pub const RING: usize = 64;
/// How long after a move every id is kept.
pub const WINDOW_MS: u64 = 30_000;
/// Most ids kept in a move window.
pub const WINDOW_CAP: usize = 200_000;

#[derive(Debug, Default)]
pub struct Recent {
    /// Newest last.
    ring: VecDeque<u64>,
    /// A move window: every id until `.1` (unix ms).
    window: Option<(HashSet<u64>, u64)>,
}

impl Recent {
    /// After a move: the ids the old owner handed over, and every id from
    /// now until `now + WINDOW_MS`.
    pub fn after_move(now: u64, handed_over: impl IntoIterator<Item = u64>) -> Recent {
        let mut set: HashSet<u64> = handed_over.into_iter().filter(|u| *u != 0).collect();
        set.shrink_to_fit();
        Recent {
            ring: VecDeque::new(),
            window: Some((set, now + WINDOW_MS)),
        }
    }

    /// At startup, for a session restored with stored copies: their ids,
    /// and every id from now until `now + WINDOW_MS` (a node killed before
    /// it acknowledged a forwarded copy gets it again once it is back, from
    /// the link's resend). `None` when there are none.
    pub fn restored(now: u64, stored: Vec<u64>) -> Option<Box<Recent>> {
        if stored.is_empty() {
            None
        } else {
            Some(Box::new(Recent::after_move(now, stored)))
        }
    }

    /// Records a copy about to be delivered; false if the session got this
    /// message already (drop the copy). Id 0 (unknown) is never a duplicate.
    pub fn first_time(&mut self, now: u64, uid: u64, qos: QoS) -> bool {
        if uid == 0 {
            return true;
        }
        if let Some((set, until)) = &mut self.window {
            if now < *until {
                if set.contains(&uid) {
                    return false;
                }
                if set.len() < WINDOW_CAP {
                    set.insert(uid);
                }
            } else {
                self.window = None;
            }
        }
        if self.ring.contains(&uid) {
            return false;
        }
        if qos == QoS::ExactlyOnce {
            if self.ring.len() == RING {
                self.ring.pop_front();
            }
            self.ring.push_back(uid);
        }
        true
    }

    /// Forgets `uid`: a group copy the session hands on to another member
    /// can come back to it (refused there, or through another node's stale
    /// route for the group that leads to this session) and must then be
    /// taken, not dropped as a copy the session has.
    pub fn forget(&mut self, uid: u64) {
        self.ring.retain(|u| *u != uid);
        if let Some((set, _)) = &mut self.window {
            set.remove(&uid);
        }
    }

    /// The ids to hand over with the session.
    pub fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.ring.iter().copied().collect();
        if let Some((set, _)) = &self.window {
            ids.extend(set.iter().copied());
        }
        ids
    }

    /// True when there is nothing to keep (the session may drop it).
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty() && self.window.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn qos2_ids_are_remembered_in_a_ring_qos1_ones_are_not() {
        let mut r = Recent::default();
        assert!(r.first_time(T0, 7, QoS::ExactlyOnce));
        assert!(
            !r.first_time(T0, 7, QoS::ExactlyOnce),
            "second copy dropped"
        );
        assert!(r.first_time(T0, 8, QoS::AtLeastOnce));
        assert!(r.first_time(T0, 8, QoS::AtLeastOnce), "QoS 1 may repeat");
        assert!(r.first_time(T0, 0, QoS::ExactlyOnce));
        assert!(r.first_time(T0, 0, QoS::ExactlyOnce), "unknown id");
        for uid in 100..100 + RING as u64 {
            assert!(r.first_time(T0, uid, QoS::ExactlyOnce));
        }
        assert!(
            r.first_time(T0, 7, QoS::ExactlyOnce),
            "pushed out of the ring"
        );
        assert_eq!(r.ids().len(), RING);
    }

    #[test]
    fn a_forgotten_id_is_taken_again_from_the_ring_and_from_a_move_window() {
        let mut r = Recent::after_move(T0, [7]);
        assert!(r.first_time(T0, 8, QoS::ExactlyOnce));
        assert!(!r.first_time(T0 + 1, 8, QoS::ExactlyOnce));
        r.forget(7);
        r.forget(8);
        assert!(r.first_time(T0 + 2, 7, QoS::ExactlyOnce));
        assert!(r.first_time(T0 + 2, 8, QoS::ExactlyOnce));
        // remembered again once taken
        assert!(!r.first_time(T0 + 3, 8, QoS::ExactlyOnce));
    }

    #[test]
    fn a_move_window_holds_every_id_until_it_ends() {
        let mut r = Recent::after_move(T0, [1, 2, 0]);
        assert!(!r.first_time(T0 + 1, 1, QoS::AtLeastOnce), "handed over");
        assert!(r.first_time(T0 + 1, 3, QoS::AtLeastOnce));
        assert!(
            !r.first_time(T0 + 2, 3, QoS::AtLeastOnce),
            "seen in the window"
        );
        let mut handed = r.ids();
        handed.sort();
        assert_eq!(handed, [1, 2, 3]);
        // after the window only the QoS 2 ring is left
        assert!(r.first_time(T0 + WINDOW_MS, 3, QoS::AtLeastOnce));
        assert!(r.is_empty());
        assert!(r.first_time(T0 + WINDOW_MS, 9, QoS::ExactlyOnce));
        assert!(!r.first_time(T0 + WINDOW_MS + 1, 9, QoS::ExactlyOnce));
    }

    #[test]
    fn a_window_stops_growing_at_its_cap_but_keeps_what_it_has() {
        let mut r = Recent::after_move(T0, 0..WINDOW_CAP as u64 + 10);
        assert!(!r.first_time(T0, 5, QoS::AtLeastOnce));
        assert!(r.first_time(T0, u64::MAX, QoS::AtLeastOnce));
    }
}
