//! Attaching a connection to a session, as policy: what a CONNECT is
//! granted (session expiry, keep alive, send window) and whether the
//! session resumes or starts anew, with the fate of a will waiting for its
//! delay (3.1.1 sections 3.1.2.4, 3.1.2.10; 5.0 sections 3.1.2.4,
//! 3.1.2.10, 3.1.2.11, 3.2.2.3). Asked by `session/connect.rs`.
//!
//! [`plan_attach`] says what becomes of the session's state;
//! [`plan_connection`] what the connection is held to and the CONNACK that
//! tells the client, fitted to its Maximum Packet Size. The actor keeps
//! the takeover of an older connection, opening the new one, keep-alive
//! registration, the session record and the claim in a cluster.

use crate::codec::{ConnAck, ConnAckProperties, Connect, ProtocolVersion, ReasonCode};
use crate::config::MqttConfig;
use crate::enhanced_auth::Authenticated;
use crate::session::connack::fit_connack;

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

/// What a new connection is held to, and the CONNACK that tells its client
/// ([`plan_connection`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionTerms {
    /// Session Expiry Interval granted (seconds; `u32::MAX`: never).
    pub session_expiry_interval: u32,
    /// Keep Alive the connection is held to (seconds; 0: none).
    pub keep_alive: u16,
    /// Most copies in flight to the client ([`send_window`]).
    pub send_window: usize,
    /// Largest packet the client takes (5.0 Maximum Packet Size; else no
    /// limit).
    pub client_max_packet_size: u32,
    /// 5.0: topic aliases, the most the client may set and the most the
    /// broker sets on what it sends; `None` for 3.1.1 (no tables).
    pub topic_aliases: Option<(u16, u16)>,
    /// 5.0 Request Problem Information: Reason Strings and User Properties
    /// on acknowledgements (true unless a 5.0 client asks for none).
    pub problem_information: bool,
    /// The CONNACK to send, fitted to `client_max_packet_size`.
    pub connack: ConnAck,
    /// False when not even the CONNACK without its optional properties fits
    /// 5.0 [MQTT-3.1.2-24]: it goes, and the connection closes with 0x95.
    pub connack_fits: bool,
}

/// The terms of a connection whose CONNECT was admitted: session expiry
/// and keep alive granted within `mqtt`'s limits, the send window, and
/// for 5.0 the client's limits and the CONNACK properties (5.0 section
/// 3.2.2.3: what the server uses when it differs from what the client
/// asked, its own limits, the available features, the Assigned Client
/// Identifier, Response Information, the authentication's final data).
pub fn plan_connection(
    connect: &Connect,
    mqtt: &MqttConfig,
    client_id: &str,
    assigned_client_id: bool,
    authenticated: Option<&Authenticated>,
    session_present: bool,
) -> ConnectionTerms {
    let (expiry, expiry_changed) = granted_expiry(
        connect.protocol,
        connect.clean_start,
        connect.properties.session_expiry_interval,
        mqtt.max_session_expiry_secs,
    );
    let (keep_alive, server_keep_alive) =
        granted_keep_alive(connect.protocol, connect.keep_alive, mqtt.max_keep_alive);
    let mut terms = ConnectionTerms {
        session_expiry_interval: expiry,
        keep_alive,
        send_window: send_window(connect.properties.receive_maximum, mqtt.max_inflight),
        client_max_packet_size: u32::MAX,
        topic_aliases: None,
        problem_information: true,
        connack: ConnAck {
            session_present,
            reason_code: ReasonCode::Success,
            properties: ConnAckProperties::default(),
        },
        connack_fits: true,
    };
    if !connect.protocol.is_v5() {
        return terms;
    }
    let properties = &mut terms.connack.properties;
    properties.server_keep_alive = server_keep_alive;
    if let Some(max) = connect.properties.maximum_packet_size {
        terms.client_max_packet_size = max;
    }
    if expiry_changed {
        // 5.0 section 3.2.2.3.2: CONNACK carries the interval when the
        // server uses another than the client asked for
        properties.session_expiry_interval = Some(expiry);
    }
    let outbound_aliases = connect
        .properties
        .topic_alias_maximum
        .unwrap_or(0)
        .min(mqtt.max_outbound_topic_alias);
    terms.topic_aliases = Some((mqtt.max_topic_alias, outbound_aliases));
    terms.problem_information = connect.properties.request_problem_information != Some(false);
    if connect.properties.request_response_information == Some(true) {
        properties.response_information =
            Some(format!("{}{}", mqtt.response_topic_prefix, client_id).into());
    }
    properties.receive_maximum = Some(mqtt.max_inflight);
    properties.maximum_packet_size = Some(mqtt.max_packet_size);
    properties.topic_alias_maximum = Some(mqtt.max_topic_alias);
    properties.retain_available = Some(true);
    properties.wildcard_subscription_available = Some(true);
    properties.subscription_identifiers_available = Some(true);
    properties.shared_subscription_available = Some(true);
    if assigned_client_id {
        properties.assigned_client_identifier = Some(client_id.into());
    }
    if let Some(auth) = authenticated {
        properties.authentication_method = Some(auth.method.clone());
        properties.authentication_data = auth.data.clone();
    }
    // 5.0 [MQTT-3.1.2-24]: optional properties go rather than the CONNACK
    terms.connack_fits = fit_connack(&mut terms.connack, terms.client_max_packet_size);
    terms
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

    fn connect(protocol: ProtocolVersion) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 30,
            client_id: "sensor-1".into(),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        }
    }

    fn terms(c: &Connect, mqtt: &MqttConfig) -> ConnectionTerms {
        plan_connection(c, mqtt, "sensor-1", false, None, false)
    }

    #[test]
    fn a_3_1_1_connection_gets_a_connack_without_properties_and_no_alias_tables() {
        let mqtt = MqttConfig {
            max_keep_alive: 10,
            ..MqttConfig::default()
        };
        let t = plan_connection(&connect(V311), &mqtt, "c", true, None, true);
        assert_eq!(
            t.connack,
            ConnAck {
                session_present: true,
                reason_code: ReasonCode::Success,
                properties: ConnAckProperties::default()
            }
        );
        assert!(t.connack_fits);
        // 3.1.1: Keep Alive is not capped, aliases and limits do not exist
        assert_eq!(t.keep_alive, 30);
        assert_eq!(t.session_expiry_interval, 0);
        assert_eq!(t.client_max_packet_size, u32::MAX);
        assert_eq!(t.topic_aliases, None);
        assert!(t.problem_information);
        assert_eq!(t.send_window, 256);
    }

    #[test]
    fn a_5_0_connack_announces_the_brokers_limits_and_features() {
        let mqtt = MqttConfig {
            max_inflight: 100,
            max_packet_size: 4096,
            max_topic_alias: 16,
            ..MqttConfig::default()
        };
        let t = terms(&connect(V5), &mqtt);
        let p = &t.connack.properties;
        assert_eq!(p.receive_maximum, Some(100));
        assert_eq!(p.maximum_packet_size, Some(4096));
        assert_eq!(p.topic_alias_maximum, Some(16));
        for available in [
            p.retain_available,
            p.wildcard_subscription_available,
            p.subscription_identifiers_available,
            p.shared_subscription_available,
        ] {
            assert_eq!(available, Some(true));
        }
        // what the client got as asked is not repeated
        assert_eq!(p.session_expiry_interval, None);
        assert_eq!(p.server_keep_alive, None);
        assert_eq!(p.assigned_client_identifier, None);
        assert_eq!(p.response_information, None);
        assert_eq!(p.authentication_method, None);
        assert!(t.connack_fits);
    }

    #[test]
    fn a_5_0_connack_says_when_expiry_or_keep_alive_differ_from_the_request() {
        let mqtt = MqttConfig {
            max_session_expiry_secs: 3600,
            max_keep_alive: 20,
            ..MqttConfig::default()
        };
        let mut c = connect(V5);
        c.properties.session_expiry_interval = Some(7200);
        let t = terms(&c, &mqtt);
        assert_eq!(t.session_expiry_interval, 3600);
        assert_eq!(t.connack.properties.session_expiry_interval, Some(3600));
        assert_eq!(t.keep_alive, 20);
        assert_eq!(t.connack.properties.server_keep_alive, Some(20));
    }

    #[test]
    fn a_5_0_client_sets_its_packet_size_window_aliases_and_problem_information() {
        let mqtt = MqttConfig {
            max_outbound_topic_alias: 8,
            ..MqttConfig::default()
        };
        let mut c = connect(V5);
        c.properties.maximum_packet_size = Some(2048);
        c.properties.receive_maximum = Some(10);
        c.properties.topic_alias_maximum = Some(100);
        c.properties.request_problem_information = Some(false);
        let t = terms(&c, &mqtt);
        assert_eq!(t.client_max_packet_size, 2048);
        assert_eq!(t.send_window, 10);
        // outbound aliases: the client's maximum, capped by ours
        assert_eq!(t.topic_aliases, Some((64, 8)));
        assert!(!t.problem_information);
        // asked for none: none outbound
        let t = terms(&connect(V5), &mqtt);
        assert_eq!(t.topic_aliases, Some((64, 0)));
        assert!(t.problem_information);
    }

    #[test]
    fn assigned_client_id_response_information_and_authentication_go_in_connack() {
        let mut c = connect(V5);
        c.properties.request_response_information = Some(true);
        let auth = Authenticated {
            method: "SCRAM-SHA-256".into(),
            data: Some(bytes::Bytes::from_static(b"v=sig")),
            username: "user".into(),
        };
        let t = plan_connection(
            &c,
            &MqttConfig::default(),
            "tern-abc",
            true,
            Some(&auth),
            false,
        );
        let p = &t.connack.properties;
        assert_eq!(p.assigned_client_identifier.as_deref(), Some("tern-abc"));
        assert_eq!(p.response_information.as_deref(), Some("response/tern-abc"));
        assert_eq!(p.authentication_method.as_deref(), Some("SCRAM-SHA-256"));
        assert_eq!(
            p.authentication_data,
            Some(bytes::Bytes::from_static(b"v=sig"))
        );
    }

    #[test]
    fn a_connack_too_large_for_the_client_loses_optional_properties_mqtt_3_1_2_24() {
        let mut c = connect(V5);
        c.properties.maximum_packet_size = Some(20);
        c.properties.request_response_information = Some(true);
        let t = terms(&c, &MqttConfig::default());
        assert!(t.connack_fits);
        assert_eq!(t.connack.properties.response_information, None);
        assert_eq!(t.connack.properties.retain_available, None);
        // authentication data is never dropped: then nothing fits
        let auth = Authenticated {
            method: "SCRAM-SHA-256".into(),
            data: Some(bytes::Bytes::from(vec![b'v'; 64])),
            username: "user".into(),
        };
        let t = plan_connection(
            &c,
            &MqttConfig::default(),
            "sensor-1",
            false,
            Some(&auth),
            false,
        );
        assert!(!t.connack_fits);
    }
}
