//! Fitting a 5.0 CONNACK to the client's Maximum Packet Size.
//!
//! A client may announce a Maximum Packet Size smaller than the CONNACK Tern
//! would send, and the server MUST NOT send it a larger packet (5.0
//! [MQTT-3.1.2-24]). Rather than leave the client waiting for a CONNACK that
//! never comes, [`fit_connack`] drops optional properties until it fits:
//! first those whose absence means the same (the "available" flags, which
//! are all true; Topic Alias Maximum, absent meaning no aliases; Response
//! Information, which the client may do without), then those whose absence
//! changes what the client assumes (Session Expiry Interval, Server Keep
//! Alive, Receive Maximum, Maximum Packet Size, Assigned Client Identifier).
//! Authentication Method and Data are never dropped: without them an
//! enhanced-authentication client cannot finish; such a CONNACK does not fit.

use crate::codec::{ConnAck, Packet, ProtocolVersion};

/// Drops optional properties from `connack` until its 5.0 encoding is at
/// most `max` bytes. False if it cannot fit (then it must not be sent).
pub(super) fn fit_connack(connack: &mut ConnAck, max: u32) -> bool {
    let fits = |c: &ConnAck| {
        Packet::ConnAck(c.clone())
            .encoded_len(ProtocolVersion::V5)
            .is_ok_and(|n| n as u64 <= u64::from(max))
    };
    // Each step removes one property, in the order the module doc gives.
    let steps: [fn(&mut ConnAck); 13] = [
        |c| c.properties.reason_string = None,
        |c| c.properties.user_properties = Default::default(),
        |c| c.properties.retain_available = None,
        |c| c.properties.wildcard_subscription_available = None,
        |c| c.properties.subscription_identifiers_available = None,
        |c| c.properties.shared_subscription_available = None,
        |c| c.properties.topic_alias_maximum = None,
        |c| c.properties.response_information = None,
        |c| c.properties.session_expiry_interval = None,
        |c| c.properties.server_keep_alive = None,
        |c| c.properties.receive_maximum = None,
        |c| c.properties.maximum_packet_size = None,
        |c| c.properties.assigned_client_identifier = None,
    ];
    let mut steps = steps.iter();
    while !fits(connack) {
        match steps.next() {
            Some(drop_one) => drop_one(connack),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ConnAckProperties, ReasonCode};

    fn full() -> ConnAck {
        ConnAck {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties: ConnAckProperties {
                session_expiry_interval: Some(60),
                receive_maximum: Some(256),
                maximum_packet_size: Some(1 << 20),
                assigned_client_identifier: Some("tern-0123456789abcdef".into()),
                topic_alias_maximum: Some(64),
                retain_available: Some(true),
                wildcard_subscription_available: Some(true),
                subscription_identifiers_available: Some(true),
                shared_subscription_available: Some(true),
                server_keep_alive: Some(30),
                response_information: Some("response/tern-0123456789abcdef".into()),
                ..Default::default()
            },
        }
    }

    fn len(c: &ConnAck) -> usize {
        Packet::ConnAck(c.clone())
            .encoded_len(ProtocolVersion::V5)
            .unwrap()
    }

    #[test]
    fn a_connack_that_fits_is_left_alone() {
        let mut c = full();
        assert!(fit_connack(&mut c, len(&full()) as u32));
        assert_eq!(c, full());
    }

    #[test]
    fn lossless_properties_go_first_mqtt_3_1_2_24() {
        let whole = len(&full());
        // without the four flags (2 bytes each) and Topic Alias Maximum (3)
        let mut c = full();
        assert!(fit_connack(&mut c, (whole - 11) as u32));
        assert_eq!(c.properties.retain_available, None);
        assert_eq!(c.properties.shared_subscription_available, None);
        assert_eq!(c.properties.topic_alias_maximum, None);
        assert_eq!(
            c.properties.response_information,
            full().properties.response_information
        );
        assert_eq!(c.properties.receive_maximum, Some(256));
        assert!(len(&c) <= whole - 11);
    }

    #[test]
    fn the_bare_connack_fits_five_bytes_and_nothing_fits_four() {
        let mut c = full();
        assert!(fit_connack(&mut c, 5));
        assert_eq!(c.properties, ConnAckProperties::default());
        assert_eq!(len(&c), 5);
        assert!(!fit_connack(&mut full(), 4));
    }

    #[test]
    fn authentication_properties_are_never_dropped() {
        let mut c = full();
        c.properties.authentication_method = Some("SCRAM-SHA-256".into());
        c.properties.authentication_data = Some(vec![0u8; 32].into());
        let bare_with_auth = {
            let mut b = c.clone();
            let method = b.properties.authentication_method.take();
            let data = b.properties.authentication_data.take();
            b.properties = ConnAckProperties {
                authentication_method: method,
                authentication_data: data,
                ..Default::default()
            };
            len(&b)
        };
        let mut fitted = c.clone();
        assert!(fit_connack(&mut fitted, bare_with_auth as u32));
        assert_eq!(
            fitted.properties.authentication_method,
            c.properties.authentication_method
        );
        assert!(!fit_connack(&mut c, bare_with_auth as u32 - 1));
    }
}
