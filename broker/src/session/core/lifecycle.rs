//! The life of a session, as policy: its [`Lifecycle`], what happens when
//! its connection ends (the will, going offline, expiry), when an offline
//! session expires and whether a stored one expired while the broker was
//! down (3.1.1 sections 3.1.2.4, 3.1.2.5; 5.0 sections 3.1.2.5, 3.1.2.11.2,
//! 3.1.3.2.2, 4.1). Asked by `session/connect.rs` and `restore.rs`.

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
    /// `kept`: handed over to `owner` at its request, and until this node
    /// sees `owner`'s claim committed the actor keeps the session's
    /// messages and stored records: should `owner` fail before its claim
    /// is in, the session goes on from here (`clustered.rs`).
    Moved {
        owner: u64,
        retired: bool,
        kept: bool,
    },
    /// The session is over; what still arrives is ignored.
    Ended,
}

impl Lifecycle {
    /// Over here (ended, or moved to another node).
    pub fn is_ended(self) -> bool {
        matches!(self, Lifecycle::Ended | Lifecycle::Moved { .. })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::core::fixtures::T0;

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
            retired: false,
            kept: false,
        }
        .is_ended());
        assert!(!expiry_due(
            T0 + 60_000,
            Lifecycle::Moved {
                owner: 2,
                retired: false,
                kept: true,
            },
            60
        ));
        assert!(!Lifecycle::Offline { since_ms: None }.is_ended());
        assert!(!Lifecycle::Online.is_ended());
    }
}
