//! Attaching a connection to a session, as policy: what a CONNECT is
//! granted (session expiry, keep alive, send window) and whether the
//! session resumes or starts anew, with the fate of a will waiting for its
//! delay (3.1.1 sections 3.1.2.4, 3.1.2.10; 5.0 sections 3.1.2.4,
//! 3.1.2.10, 3.1.2.11, 3.2.2.3). Asked by `session/connect.rs`.

use crate::codec::ProtocolVersion;

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

/// Receive Maximum of the client (the outgoing window), bounded by ours.
pub fn send_window(requested: Option<u16>, max_inflight: u16) -> usize {
    usize::from(requested.map_or(max_inflight, |r| r.min(max_inflight)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::core::fixtures::{V311, V5};

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
    fn send_window_is_the_smaller_receive_maximum() {
        assert_eq!(send_window(None, 256), 256);
        assert_eq!(send_window(Some(10), 256), 10);
        assert_eq!(send_window(Some(1000), 256), 256);
    }
}
