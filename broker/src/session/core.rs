//! The session's policy, without I/O: what a CONNECT is granted, whether a
//! session resumes, when it expires, when its will is due, and what becomes
//! of each copy of a message routed to it. Functions of their inputs and of
//! `now` (unix ms) only; they read no clock, write no socket and submit no
//! store write. The actor (`connect.rs`, `deliver.rs`) asks them and carries
//! out the answer; the tests below drive them with a fake clock.
//!
//! The packets of the client are planned the same way: [`publish`] (inbound
//! PUBLISH, its acknowledgement, PUBREL) and [`subscribe`] (SUBSCRIBE,
//! UNSUBSCRIBE), asked by `publish.rs` and `subscribe.rs`.
//!
//! The QoS state machines of the same session are also sans-IO:
//! `outgoing.rs` (PUBLISH to the client and its acknowledgements, the send
//! window, resend, held acknowledgements) and `incoming.rs` (QoS 2 from the
//! client and the order of acknowledgements owed).
//!
//! Lifecycle ([`Lifecycle`]): `Offline` (restored at startup, or created for
//! a CONNECT that is on its way) -> `Online` (a connection is attached) ->
//! `Offline` (the connection ended and the session outlives it) ... ->
//! `Ended` (Clean Start, expiry, an operator), or `Moved` (to another node;
//! forwarding there for a while) -> `Ended`.

pub mod publish;
pub mod subscribe;

use crate::codec::{ProtocolVersion, QoS};
use crate::counters::DropReason;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// A client is connected.
    Online,
    /// No client is connected; `since_ms` is when the last connection
    /// ended (`None`: never connected to this actor yet, e.g. a new
    /// session whose CONNECT is in its mailbox).
    Offline { since_ms: Option<u64> },
    /// The session went on at node `owner`: for a while this actor
    /// forwards there what still arrives for it (routes to this node are
    /// not all gone yet), then ends.
    /// `retired`: its routes were withdrawn already (a drain's end).
    Moved { owner: u64, retired: bool },
    /// The session is over; what still arrives is ignored.
    Ended,
}

impl Lifecycle {
    /// Over here (ended, or moved to another node).
    pub fn is_ended(self) -> bool {
        matches!(self, Lifecycle::Ended | Lifecycle::Moved { .. })
    }
}

/// Session Expiry Interval a CONNECT is granted (seconds; `u32::MAX`:
/// never expires) and whether CONNACK must say so (5.0 section 3.2.2.3.2:
/// when the server uses another interval than the client asked for).
pub fn granted_expiry(
    protocol: ProtocolVersion,
    clean_start: bool,
    requested_v5: Option<u32>,
    max: u32,
) -> (u32, bool) {
    let requested = match protocol {
        ProtocolVersion::V5 => requested_v5.unwrap_or(0),
        // 3.1.1: a clean session ends with its connection, any other lives on
        _ if clean_start => 0,
        _ => u32::MAX,
    };
    let granted = requested.min(max);
    (granted, granted != requested)
}

/// Keep Alive the connection is held to, and the Server Keep Alive CONNACK
/// carries (5.0) when it differs from what the client asked for. `max`
/// 0: no limit.
pub fn granted_keep_alive(
    protocol: ProtocolVersion,
    requested: u16,
    max: u16,
) -> (u16, Option<u16>) {
    if protocol.is_v5() && max > 0 && (requested == 0 || requested > max) {
        (max, Some(max))
    } else {
        (requested, None)
    }
}

/// What becomes of a will waiting for its Will Delay Interval when a new
/// connection attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingWill {
    /// There is none.
    None,
    /// The session resumes: the delayed will is cancelled [MQTT-3.1.3-9].
    Cancel,
    /// The old session ends here: its delayed will is due now (5.0 section
    /// 3.1.3.2.2).
    PublishNow,
}

/// What attaching a connection does to the session's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachPlan {
    /// The session continues (CONNACK Session Present).
    pub resume: bool,
    /// Subscriptions, queue and records go first (Clean Start, or a session
    /// that was not persistent).
    pub discard: bool,
    pub pending_will: PendingWill,
}

/// [MQTT-3.1.2-6] Clean Session discards the previous session; 5.0
/// [MQTT-3.1.2-4] Clean Start likewise; a session that was not persistent
/// ended with its connection. A session imported from another node resumes
/// unless Clean Start.
pub fn plan_attach(
    persistent: bool,
    clean_start: bool,
    imported: bool,
    has_pending_will: bool,
) -> AttachPlan {
    let resume = !clean_start && (persistent || imported);
    AttachPlan {
        resume,
        discard: !resume,
        pending_will: match (has_pending_will, resume) {
            (false, _) => PendingWill::None,
            (true, true) => PendingWill::Cancel,
            (true, false) => PendingWill::PublishNow,
        },
    }
}

/// When the will of a connection that ended goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WillFate {
    /// Not at all: the client disconnected normally [MQTT-3.1.2-8]
    /// [MQTT-3.14.4-3], or there is none.
    Dropped,
    Now,
    /// At this unix ms, unless a connection resumes the session first.
    At(u64),
}

/// The will is due `will_delay` seconds after the connection ended, or when
/// the session ends if that is sooner (5.0 section 3.1.3.2.2); a session
/// that ends with its connection publishes it at once.
pub fn will_fate(
    now_ms: u64,
    has_will: bool,
    publishes_will: bool,
    will_delay: u32,
    session_expiry_interval: u32,
) -> WillFate {
    if !has_will || !publishes_will {
        return WillFate::Dropped;
    }
    if will_delay == 0 || session_expiry_interval == 0 {
        return WillFate::Now;
    }
    WillFate::At(now_ms + u64::from(will_delay.min(session_expiry_interval)) * 1000)
}

/// When an offline session expires (unix ms); `None`: never (`u32::MAX`,
/// a 3.1.1 persistent session). A session offline since an unknown time
/// counts from `now_ms`.
pub fn expires_at(now_ms: u64, offline_since_ms: Option<u64>, interval: u32) -> Option<u64> {
    (interval != u32::MAX).then(|| {
        offline_since_ms
            .unwrap_or(now_ms)
            .saturating_add(u64::from(interval) * 1000)
    })
}

/// Whether a stored session had expired when its broker was down (checked
/// at startup): a session with interval 0 never outlives its connection.
pub fn expired_while_down(now_ms: u64, disconnected_at_ms: Option<u64>, interval: u32) -> bool {
    interval == 0
        || disconnected_at_ms.is_some_and(|at| {
            expires_at(now_ms, Some(at), interval).is_some_and(|end| now_ms >= end)
        })
}

/// What the actor does, in this order, when its connection ends
/// ([`on_connection_lost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostAction {
    /// Publish the will now.
    PublishWill,
    /// Publish the will at this unix ms unless a connection resumes the
    /// session first.
    ArmWill { at_ms: u64 },
    /// Queued copies that came through shared subscriptions go to other
    /// members of their groups (5.0 section 4.8.2); what is in flight waits
    /// for this client.
    RedistributeShared,
    /// The session is offline since `since_ms`: its record says so, on disk
    /// and in the cluster.
    GoOffline { since_ms: u64 },
    /// End the session at this unix ms unless a connection resumes it.
    ArmExpiry { at_ms: u64 },
    /// The session ends with its connection.
    End,
}

/// The connection of a session ended: the will (if the connection had one,
/// `will_delay` its Will Delay Interval) and the session's fate. A session
/// with expiry 0 ends; a persistent one goes offline and its expiry is
/// armed (never for `u32::MAX`).
pub fn on_connection_lost(
    now_ms: u64,
    session_expiry_interval: u32,
    will_delay: Option<u32>,
    publishes_will: bool,
) -> Vec<LostAction> {
    let mut actions = Vec::with_capacity(4);
    match will_fate(
        now_ms,
        will_delay.is_some(),
        publishes_will,
        will_delay.unwrap_or(0),
        session_expiry_interval,
    ) {
        WillFate::Dropped => {}
        WillFate::Now => actions.push(LostAction::PublishWill),
        WillFate::At(at_ms) => actions.push(LostAction::ArmWill { at_ms }),
    }
    if session_expiry_interval == 0 {
        actions.push(LostAction::End);
        return actions;
    }
    actions.push(LostAction::RedistributeShared);
    actions.push(LostAction::GoOffline { since_ms: now_ms });
    if let Some(at_ms) = expires_at(now_ms, Some(now_ms), session_expiry_interval) {
        actions.push(LostAction::ArmExpiry { at_ms });
    }
    actions
}

/// The expiry timer of a session fired at `now_ms`: true if the session
/// ends now (it is still offline and its time has come; a timer that fires
/// early, or a session that reconnected meanwhile, does not end it).
pub fn expiry_due(now_ms: u64, lifecycle: Lifecycle, session_expiry_interval: u32) -> bool {
    match lifecycle {
        Lifecycle::Offline { since_ms } => {
            expires_at(now_ms, since_ms, session_expiry_interval).is_some_and(|at| now_ms >= at)
        }
        Lifecycle::Online | Lifecycle::Moved { .. } | Lifecycle::Ended => false,
    }
}

/// What a session knows when a copy of a message arrives for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyFacts {
    /// Delivery QoS.
    pub qos: QoS,
    /// Its Message Expiry Interval has passed.
    pub expired: bool,
    /// A client is connected.
    pub online: bool,
    /// The connection's write buffer has room (QoS 0 is written or dropped).
    pub has_room: bool,
    pub persistent: bool,
    /// The queue holds `mqtt.max_queued_messages` already.
    pub queue_full: bool,
    /// The router found the session congested, the publisher waits for this
    /// copy, and the session has not stalled: its acknowledgement is held
    /// at most this long (`limits.backpressure_wait_secs`).
    pub hold_ms: Option<u64>,
}

/// What becomes of a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPlan {
    /// Counted as dropped for this reason.
    Drop(DropReason),
    /// QoS 0 to a connected client with room: written now, never queued.
    Write,
    /// A QoS 1/2 copy for a clean session whose client is gone: the session
    /// is ending, nobody will take it.
    Ignore,
    /// Queued (and sent when the window allows).
    Queue {
        /// Stored before the publisher is acknowledged (persistent session).
        store: bool,
        /// Sent only once stored: a QoS 2 copy sent earlier could be
        /// delivered twice after a crash (the publisher resends it).
        send_after_store: bool,
        /// The publisher's acknowledgement waits until the copy is sent, at
        /// most until this unix ms.
        hold_until_ms: Option<u64>,
    },
}

/// Write, queue or drop a copy: expired copies and those over the queue
/// limit are dropped; QoS 0 is written or dropped, never queued; QoS 1/2 is
/// queued (and stored, for a persistent session).
pub fn plan_copy(now_ms: u64, c: CopyFacts) -> CopyPlan {
    if c.expired {
        return CopyPlan::Drop(DropReason::Expired);
    }
    if c.qos == QoS::AtMostOnce {
        return if c.online && c.has_room {
            CopyPlan::Write
        } else {
            CopyPlan::Drop(DropReason::ClientUnavailable)
        };
    }
    if !c.online && !c.persistent {
        return CopyPlan::Ignore;
    }
    if c.queue_full {
        return CopyPlan::Drop(DropReason::QueueFull);
    }
    CopyPlan::Queue {
        store: c.persistent,
        send_after_store: c.persistent && c.qos == QoS::ExactlyOnce,
        hold_until_ms: c.hold_ms.filter(|_| c.online).map(|wait| now_ms + wait),
    }
}

/// Receive Maximum of the client (the outgoing window), bounded by ours.
pub fn send_window(requested: Option<u16>, max_inflight: u16) -> usize {
    usize::from(requested.map_or(max_inflight, |r| r.min(max_inflight)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake clock: 2026-12-04 12:00:00 UTC in unix ms.
    const T0: u64 = 1_796_385_600_000;
    const V5: ProtocolVersion = ProtocolVersion::V5;
    const V311: ProtocolVersion = ProtocolVersion::V311;

    #[test]
    fn session_expiry_by_protocol_and_limit() {
        // 3.1.1: clean session 0, otherwise never expires (capped by max)
        assert_eq!(granted_expiry(V311, true, None, u32::MAX), (0, false));
        assert_eq!(
            granted_expiry(V311, false, None, u32::MAX),
            (u32::MAX, false)
        );
        assert_eq!(granted_expiry(V311, false, None, 3600), (3600, true));
        // 5.0: what the client asks, 0 when absent, capped and then told
        assert_eq!(granted_expiry(V5, false, None, 3600), (0, false));
        assert_eq!(granted_expiry(V5, true, Some(60), 3600), (60, false));
        assert_eq!(granted_expiry(V5, false, Some(7200), 3600), (3600, true));
    }

    #[test]
    fn keep_alive_is_capped_for_5_0_only() {
        assert_eq!(granted_keep_alive(V5, 0, 60), (60, Some(60)));
        assert_eq!(granted_keep_alive(V5, 600, 60), (60, Some(60)));
        assert_eq!(granted_keep_alive(V5, 30, 60), (30, None));
        assert_eq!(granted_keep_alive(V5, 0, 0), (0, None));
        assert_eq!(granted_keep_alive(V311, 600, 60), (600, None));
    }

    #[test]
    fn takeover_resumes_a_persistent_session_and_cancels_its_delayed_will() {
        let p = plan_attach(true, false, false, true);
        assert!(p.resume && !p.discard);
        assert_eq!(p.pending_will, PendingWill::Cancel);
    }

    #[test]
    fn clean_start_discards_the_session_and_its_delayed_will_is_due_now() {
        let p = plan_attach(true, true, false, true);
        assert!(!p.resume && p.discard);
        assert_eq!(p.pending_will, PendingWill::PublishNow);
        // also with a session imported from another node
        assert!(!plan_attach(false, true, true, false).resume);
    }

    #[test]
    fn a_session_that_was_not_persistent_starts_anew() {
        let p = plan_attach(false, false, false, false);
        assert!(!p.resume && p.discard);
        assert_eq!(p.pending_will, PendingWill::None);
        // unless it comes from another node, where it was persistent
        assert!(plan_attach(false, false, true, false).resume);
    }

    #[test]
    fn will_without_delay_or_session_is_due_at_once() {
        assert_eq!(will_fate(T0, true, true, 0, 3600), WillFate::Now);
        assert_eq!(will_fate(T0, true, true, 30, 0), WillFate::Now);
    }

    #[test]
    fn will_delay_is_bounded_by_the_session_expiry() {
        assert_eq!(
            will_fate(T0, true, true, 30, 3600),
            WillFate::At(T0 + 30_000)
        );
        assert_eq!(
            will_fate(T0, true, true, 300, 10),
            WillFate::At(T0 + 10_000)
        );
        assert_eq!(
            will_fate(T0, true, true, 5, u32::MAX),
            WillFate::At(T0 + 5_000)
        );
    }

    #[test]
    fn normal_disconnect_drops_the_will() {
        assert_eq!(will_fate(T0, true, false, 0, 3600), WillFate::Dropped);
        assert_eq!(will_fate(T0, false, true, 0, 3600), WillFate::Dropped);
    }

    #[test]
    fn expiry_counts_from_the_end_of_the_last_connection() {
        assert_eq!(expires_at(T0, Some(T0 - 5_000), 10), Some(T0 + 5_000));
        assert_eq!(expires_at(T0, None, 10), Some(T0 + 10_000));
        assert_eq!(expires_at(T0, Some(T0), u32::MAX), None);
    }

    #[test]
    fn sessions_expired_while_the_broker_was_down_are_dropped_at_startup() {
        assert!(expired_while_down(T0, Some(T0 - 10_000), 10));
        assert!(!expired_while_down(T0, Some(T0 - 9_999), 10));
        assert!(!expired_while_down(T0, Some(0), u32::MAX));
        assert!(!expired_while_down(T0, None, 10));
        assert!(expired_while_down(T0, None, 0));
    }

    fn copy(qos: QoS) -> CopyFacts {
        CopyFacts {
            qos,
            expired: false,
            online: true,
            has_room: true,
            persistent: false,
            queue_full: false,
            hold_ms: None,
        }
    }

    #[test]
    fn qos0_is_written_or_dropped_never_queued() {
        assert_eq!(plan_copy(T0, copy(QoS::AtMostOnce)), CopyPlan::Write);
        let full_buffer = CopyFacts {
            has_room: false,
            ..copy(QoS::AtMostOnce)
        };
        assert_eq!(
            plan_copy(T0, full_buffer),
            CopyPlan::Drop(DropReason::ClientUnavailable)
        );
        let offline = CopyFacts {
            online: false,
            persistent: true,
            ..copy(QoS::AtMostOnce)
        };
        assert_eq!(
            plan_copy(T0, offline),
            CopyPlan::Drop(DropReason::ClientUnavailable)
        );
    }

    #[test]
    fn expired_and_overflowing_copies_are_dropped() {
        let expired = CopyFacts {
            expired: true,
            ..copy(QoS::AtLeastOnce)
        };
        assert_eq!(plan_copy(T0, expired), CopyPlan::Drop(DropReason::Expired));
        let full = CopyFacts {
            queue_full: true,
            ..copy(QoS::AtLeastOnce)
        };
        assert_eq!(plan_copy(T0, full), CopyPlan::Drop(DropReason::QueueFull));
    }

    #[test]
    fn persistent_sessions_store_copies_and_send_qos2_only_once_stored() {
        let qos1 = CopyFacts {
            persistent: true,
            online: false,
            ..copy(QoS::AtLeastOnce)
        };
        assert_eq!(
            plan_copy(T0, qos1),
            CopyPlan::Queue {
                store: true,
                send_after_store: false,
                hold_until_ms: None
            }
        );
        let qos2 = CopyFacts {
            qos: QoS::ExactlyOnce,
            ..qos1
        };
        assert_eq!(
            plan_copy(T0, qos2),
            CopyPlan::Queue {
                store: true,
                send_after_store: true,
                hold_until_ms: None
            }
        );
        assert_eq!(
            plan_copy(T0, copy(QoS::AtLeastOnce)),
            CopyPlan::Queue {
                store: false,
                send_after_store: false,
                hold_until_ms: None
            }
        );
        let gone = CopyFacts {
            online: false,
            ..copy(QoS::ExactlyOnce)
        };
        assert_eq!(plan_copy(T0, gone), CopyPlan::Ignore);
    }

    #[test]
    fn a_congested_online_session_holds_the_publishers_ack_until_a_deadline() {
        let held = CopyFacts {
            hold_ms: Some(2_000),
            ..copy(QoS::AtLeastOnce)
        };
        assert_eq!(
            plan_copy(T0, held),
            CopyPlan::Queue {
                store: false,
                send_after_store: false,
                hold_until_ms: Some(T0 + 2_000)
            }
        );
        // offline: nothing would send it, publishers do not wait
        let offline = CopyFacts {
            online: false,
            persistent: true,
            ..held
        };
        assert!(matches!(
            plan_copy(T0, offline),
            CopyPlan::Queue {
                hold_until_ms: None,
                ..
            }
        ));
    }

    #[test]
    fn send_window_is_the_smaller_receive_maximum() {
        assert_eq!(send_window(None, 256), 256);
        assert_eq!(send_window(Some(10), 256), 10);
        assert_eq!(send_window(Some(1000), 256), 256);
    }

    #[test]
    fn a_clean_session_publishes_its_will_and_ends_with_its_connection() {
        assert_eq!(
            on_connection_lost(T0, 0, Some(30), true),
            [LostAction::PublishWill, LostAction::End]
        );
        assert_eq!(on_connection_lost(T0, 0, None, true), [LostAction::End]);
        // DISCONNECT 0x00: no will
        assert_eq!(on_connection_lost(T0, 0, Some(0), false), [LostAction::End]);
    }

    #[test]
    fn a_persistent_session_goes_offline_with_its_delayed_will_and_expiry_armed() {
        assert_eq!(
            on_connection_lost(T0, 60, Some(10), true),
            [
                LostAction::ArmWill { at_ms: T0 + 10_000 },
                LostAction::RedistributeShared,
                LostAction::GoOffline { since_ms: T0 },
                LostAction::ArmExpiry { at_ms: T0 + 60_000 },
            ]
        );
        // a 3.1.1 persistent session never expires
        assert_eq!(
            on_connection_lost(T0, u32::MAX, None, true),
            [
                LostAction::RedistributeShared,
                LostAction::GoOffline { since_ms: T0 }
            ]
        );
    }

    #[test]
    fn expiry_fires_only_for_an_offline_session_whose_time_has_come() {
        let offline = Lifecycle::Offline { since_ms: Some(T0) };
        assert!(!expiry_due(T0 + 59_999, offline, 60));
        assert!(expiry_due(T0 + 60_000, offline, 60));
        // reconnected meanwhile, ended, or never expiring
        assert!(!expiry_due(T0 + 60_000, Lifecycle::Online, 60));
        assert!(!expiry_due(T0 + 60_000, Lifecycle::Ended, 60));
        assert!(!expiry_due(u64::MAX, offline, u32::MAX));
        // restored at startup: counts from the disconnect time on disk
        let restored = Lifecycle::Offline {
            since_ms: Some(T0 - 50_000),
        };
        assert!(expiry_due(T0 + 10_000, restored, 60));
    }

    #[test]
    fn lifecycle_ends_once() {
        assert!(Lifecycle::Ended.is_ended());
        assert!(Lifecycle::Moved {
            owner: 2,
            retired: false
        }
        .is_ended());
        assert!(!expiry_due(
            T0 + 60_000,
            Lifecycle::Moved {
                owner: 2,
                retired: false
            },
            60
        ));
        assert!(!Lifecycle::Offline { since_ms: None }.is_ended());
        assert!(!Lifecycle::Online.is_ended());
    }
}
