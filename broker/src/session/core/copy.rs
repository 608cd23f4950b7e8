//! What becomes of each copy of a message routed to a session: written,
//! queued (stored first for a persistent session, the publisher's
//! acknowledgement held while the queue is congested) or dropped (3.1.1
//! section 4.3; 5.0 sections 3.3.2.3.3, 4.3, 4.9). Asked by
//! `session/deliver.rs`.

use crate::codec::QoS;
use crate::counters::DropReason;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::core::fixtures::T0;

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
}
