//! Tests of the inbound PUBLISH planner: plain values, no actor, no clock.

use bytes::Bytes;

use super::*;
use crate::codec::PublishProperties;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;

fn publish(qos: QoS, packet_id: Option<u16>) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: "sensors/1".into(),
        packet_id,
        payload: Bytes::from_static(b"21.5"),
        properties: PublishProperties::default(),
    }
}

/// A connected session with room in its receive window, nothing held,
/// nothing refused.
fn facts(protocol: ProtocolVersion) -> PublishFacts {
    PublishFacts {
        protocol,
        alias: Ok(()),
        in_flight: 0,
        receive_maximum: 10,
        qos2_held: false,
        pubrec_owed: false,
        refusal: None,
        persistent: false,
    }
}

fn ready(kind: AckKind, packet_id: u16, reason_code: ReasonCode) -> Option<ReadyAck> {
    Some(ReadyAck {
        kind,
        packet_id,
        reason_code,
    })
}

/// The body of a test run for 3.1.1 and 5.0 alike.
fn both(test: impl Fn(ProtocolVersion)) {
    test(V311);
    test(V5);
}

#[test]
fn qos0_is_routed_with_nothing_owed() {
    both(|p| {
        assert_eq!(
            plan_publish(&publish(QoS::AtMostOnce, None), &facts(p)),
            PublishPlan::Route {
                ack: None,
                hold_qos2: false,
                store_qos2: false
            }
        );
    });
}

#[test]
fn qos1_is_routed_and_owes_a_puback() {
    both(|p| {
        assert_eq!(
            plan_publish(&publish(QoS::AtLeastOnce, Some(7)), &facts(p)),
            PublishPlan::Route {
                ack: Some((AckKind::PubAck, 7)),
                hold_qos2: false,
                store_qos2: false
            }
        );
    });
}

#[test]
fn qos2_holds_its_id_and_a_persistent_session_stores_it() {
    both(|p| {
        let clean = facts(p);
        assert_eq!(
            plan_publish(&publish(QoS::ExactlyOnce, Some(9)), &clean),
            PublishPlan::Route {
                ack: Some((AckKind::PubRec, 9)),
                hold_qos2: true,
                store_qos2: false
            }
        );
        let persistent = PublishFacts {
            persistent: true,
            ..clean
        };
        assert_eq!(
            plan_publish(&publish(QoS::ExactlyOnce, Some(9)), &persistent),
            PublishPlan::Route {
                ack: Some((AckKind::PubRec, 9)),
                hold_qos2: true,
                store_qos2: true
            }
        );
    });
}

#[test]
fn qos2_resend_of_a_held_id_is_not_routed_again_method_b() {
    both(|p| {
        let held = PublishFacts {
            qos2_held: true,
            persistent: true,
            ..facts(p)
        };
        let mut resend = publish(QoS::ExactlyOnce, Some(9));
        resend.dup = true;
        assert_eq!(
            plan_publish(&resend, &held),
            PublishPlan::Duplicate {
                ack: ready(AckKind::PubRec, 9, ReasonCode::Success)
            }
        );
        // the first PUBREC is still owed (its copies are being stored):
        // that one answers both
        let owed = PublishFacts {
            pubrec_owed: true,
            ..held
        };
        assert_eq!(
            plan_publish(&resend, &owed),
            PublishPlan::Duplicate { ack: None }
        );
    });
}

#[test]
fn a_qos1_publish_reusing_a_held_qos2_id_is_routed() {
    let held = PublishFacts {
        qos2_held: true,
        ..facts(V5)
    };
    assert_eq!(
        plan_publish(&publish(QoS::AtLeastOnce, Some(9)), &held),
        PublishPlan::Route {
            ack: Some((AckKind::PubAck, 9)),
            hold_qos2: false,
            store_qos2: false
        }
    );
}

#[test]
fn refused_by_the_checks_5_0_says_why_3_1_1_acknowledges_and_drops() {
    for code in [
        ReasonCode::NotAuthorized,
        ReasonCode::TopicNameInvalid,
        ReasonCode::QuotaExceeded,
    ] {
        let refused = |p| PublishFacts {
            refusal: Some(code),
            ..facts(p)
        };
        assert_eq!(
            plan_publish(&publish(QoS::AtLeastOnce, Some(3)), &refused(V5)),
            PublishPlan::Refuse {
                ack: ready(AckKind::PubAck, 3, code),
                by: RefusedBy::Checks
            }
        );
        assert_eq!(
            plan_publish(&publish(QoS::ExactlyOnce, Some(4)), &refused(V5)),
            PublishPlan::Refuse {
                ack: ready(AckKind::PubRec, 4, code),
                by: RefusedBy::Checks
            }
        );
        assert_eq!(
            plan_publish(&publish(QoS::AtLeastOnce, Some(3)), &refused(V311)),
            PublishPlan::Refuse {
                ack: ready(AckKind::PubAck, 3, ReasonCode::Success),
                by: RefusedBy::Checks
            }
        );
        // QoS 0: dropped unanswered
        assert_eq!(
            plan_publish(&publish(QoS::AtMostOnce, None), &refused(V5)),
            PublishPlan::Refuse {
                ack: None,
                by: RefusedBy::Checks
            }
        );
    }
}

#[test]
fn a_refused_qos2_publish_is_refused_even_if_its_id_is_held() {
    // the refusal comes before the duplicate rule
    let f = PublishFacts {
        qos2_held: true,
        refusal: Some(ReasonCode::NotAuthorized),
        ..facts(V5)
    };
    assert_eq!(
        plan_publish(&publish(QoS::ExactlyOnce, Some(4)), &f),
        PublishPlan::Refuse {
            ack: ready(AckKind::PubRec, 4, ReasonCode::NotAuthorized),
            by: RefusedBy::Checks
        }
    );
}

#[test]
fn topic_alias_errors_close_a_5_0_connection_mqtt_3_3_2_9() {
    let over = PublishFacts {
        alias: Err(AliasError::OutOfRange { alias: 11, max: 10 }),
        // the alias is checked first
        refusal: Some(ReasonCode::NotAuthorized),
        ..facts(V5)
    };
    let plan = plan_publish(&publish(QoS::AtLeastOnce, Some(1)), &over);
    assert_eq!(
        plan,
        PublishPlan::Disconnect(SessionError::TopicAlias(AliasError::OutOfRange {
            alias: 11,
            max: 10
        }))
    );
    let PublishPlan::Disconnect(e) = plan else {
        unreachable!("checked above")
    };
    assert_eq!(e.reason_code(), ReasonCode::TopicAliasInvalid);
    let unknown = PublishFacts {
        alias: Err(AliasError::Unknown(3)),
        ..facts(V5)
    };
    let PublishPlan::Disconnect(e) = plan_publish(&publish(QoS::AtMostOnce, None), &unknown) else {
        panic!("an alias used before it was set closes the connection")
    };
    assert_eq!(e, SessionError::TopicAlias(AliasError::Unknown(3)));
    assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn a_subscription_identifier_from_a_client_closes_the_connection_mqtt_3_3_4_6() {
    let mut p = publish(QoS::AtMostOnce, None);
    p.properties.subscription_identifiers = vec![5];
    assert_eq!(
        plan_publish(&p, &facts(V5)),
        PublishPlan::Disconnect(SessionError::SubscriptionIdFromClient)
    );
}

#[test]
fn receive_maximum_exceeded_closes_the_connection_mqtt_3_3_4_9() {
    let full = PublishFacts {
        in_flight: 10,
        ..facts(V5)
    };
    let plan = plan_publish(&publish(QoS::AtLeastOnce, Some(11)), &full);
    assert_eq!(
        plan,
        PublishPlan::Disconnect(SessionError::ReceiveMaximumExceeded(10))
    );
    // one below the maximum is fine, QoS 0 does not count, nor does
    // the resend of a held QoS 2 id
    let below = PublishFacts {
        in_flight: 9,
        ..full
    };
    assert!(matches!(
        plan_publish(&publish(QoS::AtLeastOnce, Some(11)), &below),
        PublishPlan::Route { .. }
    ));
    assert!(matches!(
        plan_publish(&publish(QoS::AtMostOnce, None), &full),
        PublishPlan::Route { ack: None, .. }
    ));
    let resend = PublishFacts {
        qos2_held: true,
        ..full
    };
    assert_eq!(
        plan_publish(&publish(QoS::ExactlyOnce, Some(2)), &resend),
        PublishPlan::Duplicate {
            ack: ready(AckKind::PubRec, 2, ReasonCode::Success)
        }
    );
}

#[test]
fn the_5_0_protocol_rules_do_not_apply_to_3_1_1() {
    // no aliases, properties or announced Receive Maximum in 3.1.1: a
    // 3.1.1 packet never carries these, and they are not checked
    let f = PublishFacts {
        alias: Err(AliasError::Unknown(1)),
        in_flight: 10,
        ..facts(V311)
    };
    let mut p = publish(QoS::AtLeastOnce, Some(1));
    p.properties.payload_format_indicator = Some(true);
    p.payload = Bytes::from_static(&[0xff, 0xfe]);
    assert!(matches!(plan_publish(&p, &f), PublishPlan::Route { .. }));
}

#[test]
fn an_invalid_utf8_payload_announced_as_utf8_is_refused_mqtt_3_3_2_4() {
    let mut p = publish(QoS::ExactlyOnce, Some(6));
    p.properties.payload_format_indicator = Some(true);
    p.payload = Bytes::from_static(&[0xc3, 0x28]);
    assert_eq!(
        plan_publish(&p, &facts(V5)),
        PublishPlan::Refuse {
            ack: ready(AckKind::PubRec, 6, ReasonCode::PayloadFormatInvalid),
            by: RefusedBy::PayloadFormat
        }
    );
    // indicator 0 (unspecified bytes): anything goes
    p.properties.payload_format_indicator = Some(false);
    assert!(matches!(
        plan_publish(&p, &facts(V5)),
        PublishPlan::Route { .. }
    ));
    // valid UTF-8
    p.properties.payload_format_indicator = Some(true);
    p.payload = Bytes::from("température".as_bytes().to_vec());
    assert!(matches!(
        plan_publish(&p, &facts(V5)),
        PublishPlan::Route { .. }
    ));
}

#[test]
fn accepted_says_whether_anyone_received_it() {
    assert_eq!(accepted(0), ReasonCode::NoMatchingSubscribers);
    assert_eq!(accepted(3), ReasonCode::Success);
}

#[test]
fn a_ready_ack_keeps_its_code_for_5_0() {
    let ack = ReadyAck {
        kind: AckKind::PubAck,
        packet_id: 1,
        reason_code: ReasonCode::NoMatchingSubscribers,
    };
    assert_eq!(
        plan_ack(V5, ack),
        AckPlan {
            forget_qos2: false,
            outcome: AckOutcome::Send(ack)
        }
    );
    // 3.1.1 has no reason codes: every success is 0
    assert_eq!(
        plan_ack(V311, ack),
        AckPlan {
            forget_qos2: false,
            outcome: AckOutcome::Send(ReadyAck {
                reason_code: ReasonCode::Success,
                ..ack
            })
        }
    );
}

#[test]
fn a_failed_pubrec_forgets_the_id_and_closes_a_3_1_1_connection() {
    let failed = ReadyAck {
        kind: AckKind::PubRec,
        packet_id: 8,
        reason_code: ReasonCode::UnspecifiedError,
    };
    assert_eq!(
        plan_ack(V5, failed),
        AckPlan {
            forget_qos2: true,
            outcome: AckOutcome::Send(failed)
        }
    );
    assert_eq!(
        plan_ack(V311, failed),
        AckPlan {
            forget_qos2: true,
            outcome: AckOutcome::Disconnect(SessionError::MessageNotStored(8))
        }
    );
    // a failed PUBACK has no id to forget
    let puback = ReadyAck {
        kind: AckKind::PubAck,
        ..failed
    };
    assert_eq!(
        plan_ack(V311, puback),
        AckPlan {
            forget_qos2: false,
            outcome: AckOutcome::Disconnect(SessionError::MessageNotStored(8))
        }
    );
}

#[test]
fn pubrel_of_an_unknown_id_is_0x92_for_5_0_only() {
    assert_eq!(pubcomp_code(V5, true), ReasonCode::Success);
    assert_eq!(
        pubcomp_code(V5, false),
        ReasonCode::PacketIdentifierNotFound
    );
    assert_eq!(pubcomp_code(V311, false), ReasonCode::Success);
}

#[test]
fn reason_strings_explain_failures_unless_the_client_declined_mqtt_3_1_2_29() {
    assert_eq!(
        reason_string(true, ReasonCode::NotAuthorized),
        Some("not authorized")
    );
    assert_eq!(reason_string(false, ReasonCode::NotAuthorized), None);
    assert_eq!(reason_string(true, ReasonCode::Success), None);
    assert_eq!(reason_string(true, ReasonCode::NoMatchingSubscribers), None);
}
