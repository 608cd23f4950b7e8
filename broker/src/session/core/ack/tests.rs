//! Tests of the acknowledgement planner with the outgoing state machine it
//! moves: plain values and a fake clock, no actor.

use super::*;
use crate::codec::QoS;
use crate::session::core::fixtures::{T0, V311, V5};
use crate::session::outgoing::{packet_id_of, OutMsg, OutState, Resend, SendAction};

/// A copy queued with sequence number `seq` (packet id `seq` too), expiring
/// at `expires_at_ms` if set.
fn copy(seq: u64, qos: QoS, expires_at_ms: Option<u64>) -> OutMsg {
    crate::session::outgoing::test_copy(seq, qos, expires_at_ms)
}

/// A session with a window of `window` holding `copies` (none expiring),
/// with as many sent at `T0` as the window takes.
fn window(window: usize, copies: &[QoS]) -> Outgoing {
    let mut o = Outgoing::new(window, 100);
    for (i, qos) in copies.iter().enumerate() {
        o.push(copy(i as u64 + 1, *qos, None));
    }
    assert_eq!(send(&mut o, T0).len(), window.min(copies.len()));
    o
}

/// What `poll_send` writes at `now_ms`: packet ids of the PUBLISH packets,
/// and `0` for each copy dropped as expired.
fn send(o: &mut Outgoing, now_ms: u64) -> Vec<u16> {
    let mut out = Vec::new();
    o.poll_send(now_ms, usize::MAX, &mut out);
    out.iter()
        .map(|a| match a {
            SendAction::Publish(p, _) => p.packet_id.unwrap_or(0),
            SendAction::Expired(_) | SendAction::Release(_) => 0,
        })
        .collect()
}

fn ack(kind: ClientAckKind, packet_id: u16) -> ClientAck {
    ClientAck {
        kind,
        packet_id,
        reason_code: ReasonCode::Success,
    }
}

fn facts(protocol: ProtocolVersion, stored: bool) -> AckFacts {
    AckFacts { protocol, stored }
}

/// The body of a test run for 3.1.1 and 5.0 alike.
fn both(test: impl Fn(ProtocolVersion)) {
    test(V311);
    test(V5);
}

use ClientAckKind::{PubAck, PubComp, PubRec};

#[test]
fn qos1_puback_completes_the_copy_and_the_freed_window_sends_the_next() {
    both(|p| {
        let mut o = window(1, &[QoS::AtLeastOnce, QoS::AtLeastOnce]);
        assert_eq!(send(&mut o, T0), Vec::<u16>::new(), "window full");
        assert_eq!(
            handle_client_ack(&mut o, ack(PubAck, 1), facts(p, false)),
            AckAction::Complete {
                seq: 1,
                delete_record: false
            }
        );
        assert_eq!(send(&mut o, T0), vec![2]);
    });
}

#[test]
fn a_stored_copy_loses_its_record_when_its_flow_completes() {
    both(|p| {
        let mut o = window(10, &[QoS::AtLeastOnce, QoS::ExactlyOnce]);
        assert_eq!(
            handle_client_ack(&mut o, ack(PubAck, 1), facts(p, true)),
            AckAction::Complete {
                seq: 1,
                delete_record: true
            }
        );
        handle_client_ack(&mut o, ack(PubRec, 2), facts(p, true));
        assert_eq!(
            handle_client_ack(&mut o, ack(PubComp, 2), facts(p, true)),
            AckAction::Complete {
                seq: 2,
                delete_record: true
            }
        );
        assert!(o.is_empty());
    });
}

#[test]
fn qos2_pubrec_releases_the_copy_and_a_stored_one_is_persisted_before_pubrel() {
    both(|p| {
        for stored in [false, true] {
            let mut o = window(10, &[QoS::ExactlyOnce]);
            assert_eq!(
                handle_client_ack(&mut o, ack(PubRec, 1), facts(p, stored)),
                AckAction::Release {
                    seq: 1,
                    persist: stored
                }
            );
            assert_eq!(o.get(1).map(|m| m.state), Some(OutState::Released));
            // a resumed session resends PUBREL, not the PUBLISH [MQTT-4.4.0-1]
            assert!(matches!(o.resend(T0)[..], [Resend::PubRel(1)]));
        }
    });
}

#[test]
fn qos2_flow_goes_pubrec_then_pubcomp_and_frees_the_window() {
    both(|p| {
        let mut o = window(1, &[QoS::ExactlyOnce, QoS::ExactlyOnce]);
        assert!(matches!(
            handle_client_ack(&mut o, ack(PubRec, 1), facts(p, false)),
            AckAction::Release { seq: 1, .. }
        ));
        assert_eq!(
            send(&mut o, T0),
            Vec::<u16>::new(),
            "Released holds its slot"
        );
        assert_eq!(
            handle_client_ack(&mut o, ack(PubComp, 1), facts(p, false)),
            AckAction::Complete {
                seq: 1,
                delete_record: false
            }
        );
        assert_eq!(send(&mut o, T0), vec![2]);
    });
}

#[test]
fn a_repeated_pubrec_is_answered_again_mqtt_4_3_3() {
    // the PUBREL may have been lost: released again, not an error
    both(|p| {
        let mut o = window(10, &[QoS::ExactlyOnce]);
        for _ in 0..2 {
            assert_eq!(
                handle_client_ack(&mut o, ack(PubRec, 1), facts(p, true)),
                AckAction::Release {
                    seq: 1,
                    persist: true
                }
            );
        }
    });
}

#[test]
fn pubcomp_before_pubrec_is_a_protocol_error() {
    both(|p| {
        let mut o = window(10, &[QoS::ExactlyOnce]);
        let action = handle_client_ack(&mut o, ack(PubComp, 1), facts(p, false));
        assert_eq!(
            action,
            AckAction::Close(SessionError::Ack(AckError::WrongState {
                packet: "PUBCOMP",
                packet_id: 1
            }))
        );
        let AckAction::Close(e) = action else {
            unreachable!("asserted above")
        };
        assert_eq!(e.reason_code(), ReasonCode::ProtocolError);
        assert_eq!(o.get(1).map(|m| m.state), Some(OutState::Sent), "unchanged");
    });
}

#[test]
fn puback_for_a_qos2_copy_is_a_protocol_error_before_and_after_pubrec() {
    both(|p| {
        let mut o = window(10, &[QoS::ExactlyOnce]);
        let wrong = AckAction::Close(SessionError::Ack(AckError::WrongState {
            packet: "PUBACK",
            packet_id: 1,
        }));
        assert_eq!(
            handle_client_ack(&mut o, ack(PubAck, 1), facts(p, false)),
            wrong
        );
        handle_client_ack(&mut o, ack(PubRec, 1), facts(p, false));
        assert_eq!(
            handle_client_ack(&mut o, ack(PubAck, 1), facts(p, false)),
            wrong
        );
    });
}

#[test]
fn pubrec_and_pubcomp_for_a_qos1_copy_are_protocol_errors() {
    both(|p| {
        let mut o = window(10, &[QoS::AtLeastOnce]);
        assert_eq!(
            handle_client_ack(&mut o, ack(PubRec, 1), facts(p, false)),
            AckAction::Close(SessionError::Ack(AckError::WrongState {
                packet: "PUBREC",
                packet_id: 1
            }))
        );
        assert_eq!(
            handle_client_ack(&mut o, ack(PubComp, 1), facts(p, false)),
            AckAction::Close(SessionError::Ack(AckError::WrongState {
                packet: "PUBCOMP",
                packet_id: 1
            }))
        );
        // the copy is still in flight, and a PUBACK completes it
        assert!(matches!(
            handle_client_ack(&mut o, ack(PubAck, 1), facts(p, false)),
            AckAction::Complete { seq: 1, .. }
        ));
    });
}

#[test]
fn puback_and_pubcomp_for_an_unknown_packet_id_are_ignored() {
    both(|p| {
        let mut o = window(10, &[QoS::AtLeastOnce]);
        assert_eq!(
            handle_client_ack(&mut o, ack(PubAck, 9), facts(p, false)),
            AckAction::Unknown { packet_id: 9 }
        );
        assert_eq!(
            handle_client_ack(&mut o, ack(PubComp, 9), facts(p, false)),
            AckAction::Unknown { packet_id: 9 }
        );
        assert_eq!(o.inflight_len(), 1, "the copy in flight is untouched");
        // nothing at all in flight
        let mut empty = Outgoing::new(10, 10);
        assert_eq!(
            handle_client_ack(&mut empty, ack(PubAck, 1), facts(p, false)),
            AckAction::Unknown { packet_id: 1 }
        );
    });
}

#[test]
fn a_repeated_puback_or_pubcomp_is_unknown_once_the_flow_is_over() {
    both(|p| {
        let mut o = window(10, &[QoS::AtLeastOnce, QoS::ExactlyOnce]);
        handle_client_ack(&mut o, ack(PubAck, 1), facts(p, false));
        assert_eq!(
            handle_client_ack(&mut o, ack(PubAck, 1), facts(p, false)),
            AckAction::Unknown { packet_id: 1 }
        );
        handle_client_ack(&mut o, ack(PubRec, 2), facts(p, false));
        handle_client_ack(&mut o, ack(PubComp, 2), facts(p, false));
        assert_eq!(
            handle_client_ack(&mut o, ack(PubComp, 2), facts(p, false)),
            AckAction::Unknown { packet_id: 2 }
        );
    });
}

#[test]
fn pubrec_for_an_unknown_packet_id_gets_pubrel_0x92_in_5_0_and_success_in_3_1_1() {
    let mut o = window(10, &[QoS::ExactlyOnce]);
    assert_eq!(
        handle_client_ack(&mut o, ack(PubRec, 4), facts(V5, false)),
        AckAction::PubRelUnknown {
            packet_id: 4,
            reason_code: ReasonCode::PacketIdentifierNotFound
        }
    );
    assert_eq!(
        handle_client_ack(&mut o, ack(PubRec, 4), facts(V311, true)),
        AckAction::PubRelUnknown {
            packet_id: 4,
            reason_code: ReasonCode::Success
        }
    );
    assert_eq!(o.get(1).map(|m| m.state), Some(OutState::Sent), "untouched");
}

#[test]
fn a_5_0_pubrec_refusing_the_message_ends_its_flow() {
    for code in [
        ReasonCode::UnspecifiedError,
        ReasonCode::NotAuthorized,
        ReasonCode::QuotaExceeded,
    ] {
        let mut o = window(1, &[QoS::ExactlyOnce, QoS::ExactlyOnce]);
        let refused = ClientAck {
            reason_code: code,
            ..ack(PubRec, 1)
        };
        assert_eq!(
            handle_client_ack(&mut o, refused, facts(V5, true)),
            AckAction::Complete {
                seq: 1,
                delete_record: true
            }
        );
        // gone, not Released: no PUBREL, and the next copy goes
        assert!(o.get(1).is_none());
        assert_eq!(send(&mut o, T0), vec![2]);
        // refused again, or for an id not in flight: nothing to do
        assert_eq!(
            handle_client_ack(&mut o, refused, facts(V5, true)),
            AckAction::Nothing
        );
    }
}

#[test]
fn pubrec_with_a_success_code_below_0x80_releases() {
    // 0x10 No matching subscribers is a success (5.0 section 3.5.2.1)
    let mut o = window(10, &[QoS::ExactlyOnce]);
    let no_subscribers = ClientAck {
        reason_code: ReasonCode::NoMatchingSubscribers,
        ..ack(PubRec, 1)
    };
    assert_eq!(
        handle_client_ack(&mut o, no_subscribers, facts(V5, false)),
        AckAction::Release {
            seq: 1,
            persist: false
        }
    );
}

#[test]
fn acknowledgements_out_of_order_complete_each_copy() {
    both(|p| {
        let mut o = window(3, &[QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtLeastOnce]);
        assert!(matches!(
            handle_client_ack(&mut o, ack(PubAck, 3), facts(p, false)),
            AckAction::Complete { seq: 3, .. }
        ));
        assert!(matches!(
            handle_client_ack(&mut o, ack(PubRec, 2), facts(p, false)),
            AckAction::Release { seq: 2, .. }
        ));
        assert!(matches!(
            handle_client_ack(&mut o, ack(PubAck, 1), facts(p, false)),
            AckAction::Complete { seq: 1, .. }
        ));
        assert!(matches!(
            handle_client_ack(&mut o, ack(PubComp, 2), facts(p, false)),
            AckAction::Complete { seq: 2, .. }
        ));
        assert!(o.is_empty());
    });
}

#[test]
fn the_window_freed_late_skips_copies_that_expired_meanwhile() {
    // window 1: copy 1 in flight at T0; copy 2 expires at T0 + 5 s; the
    // PUBACK comes at T0 + 10 s
    let mut o = Outgoing::new(1, 100);
    o.push(copy(1, QoS::AtLeastOnce, None));
    o.push(copy(2, QoS::AtLeastOnce, Some(T0 + 5_000)));
    o.push(copy(3, QoS::AtLeastOnce, None));
    assert_eq!(send(&mut o, T0), vec![1]);
    assert_eq!(send(&mut o, T0 + 4_999), Vec::<u16>::new());
    assert!(matches!(
        handle_client_ack(&mut o, ack(PubAck, 1), facts(V5, true)),
        AckAction::Complete { seq: 1, .. }
    ));
    // 5.0 [MQTT-3.3.2-5] an expired copy is dropped, never sent
    assert_eq!(send(&mut o, T0 + 10_000), vec![0, 3]);
}

#[test]
fn packet_ids_wrap_and_acknowledge_the_copy_in_flight_under_them() {
    // seq 65_536 is sent as packet id 1 again
    let mut o = Outgoing::new(1, 100);
    o.skip(65_535);
    o.push(copy(65_536, QoS::AtLeastOnce, None));
    assert_eq!(packet_id_of(65_536), 1);
    assert_eq!(send(&mut o, T0), vec![1]);
    assert_eq!(
        handle_client_ack(&mut o, ack(PubAck, 1), facts(V5, false)),
        AckAction::Complete {
            seq: 65_536,
            delete_record: false
        }
    );
}
