use super::*;

fn msg(seq: u64, qos: QoS) -> OutMsg {
    test_copy(seq, qos, None)
}

fn sent_ids(actions: &[SendAction]) -> Vec<u16> {
    actions
        .iter()
        .filter_map(|a| match a {
            SendAction::Publish(p, _) => p.packet_id,
            SendAction::Expired(_) | SendAction::Release(_) => None,
        })
        .collect()
}

fn released_ids(actions: &[SendAction]) -> Vec<u16> {
    actions
        .iter()
        .filter_map(|a| match a {
            SendAction::Release(id) => Some(*id),
            _ => None,
        })
        .collect()
}

#[test]
fn window_limits_messages_in_flight_mqtt_4_9() {
    let mut o = Outgoing::new(2, 10);
    for seq in 1..=3 {
        assert_eq!(o.push(msg(seq, QoS::AtLeastOnce)), Pushed::Queued);
    }
    let mut out = Vec::new();
    o.poll_send(0, usize::MAX, &mut out);
    assert_eq!(sent_ids(&out), vec![1, 2]);
    out.clear();
    o.poll_send(0, usize::MAX, &mut out);
    assert!(out.is_empty(), "window full");
    assert_eq!(o.handle_puback(1), Ok(1));
    o.poll_send(0, usize::MAX, &mut out);
    assert_eq!(sent_ids(&out), vec![3]);
}

#[test]
fn packet_ids_wrap_and_never_reuse_one_in_flight() {
    assert_eq!(packet_id_of(1), 1);
    assert_eq!(packet_id_of(65_535), 65_535);
    assert_eq!(packet_id_of(65_536), 1);
    let mut o = Outgoing::new(usize::MAX, 100);
    o.next_seq = 65_535;
    o.push(msg(65_535, QoS::AtLeastOnce));
    o.push(msg(65_536, QoS::AtLeastOnce));
    // seq 65_536 maps to packet id 1 again
    let mut inflight = msg(1, QoS::AtLeastOnce);
    inflight.state = OutState::Sent;
    o.lists_mut().inflight.push_back(inflight);
    let mut out = Vec::new();
    o.poll_send(0, usize::MAX, &mut out);
    assert_eq!(sent_ids(&out), vec![65_535], "id 1 is still in flight");
    assert_eq!(o.handle_puback(1), Ok(1));
    out.clear();
    o.poll_send(0, usize::MAX, &mut out);
    assert_eq!(sent_ids(&out), vec![1]);
}

#[test]
fn qos2_flow_goes_sent_released_complete() {
    let mut o = Outgoing::new(10, 10);
    o.push(msg(1, QoS::ExactlyOnce));
    let mut out = Vec::new();
    o.poll_send(0, usize::MAX, &mut out);
    assert_eq!(
        o.handle_pubcomp(1),
        Err(AckError::WrongState {
            packet: "PUBCOMP",
            packet_id: 1
        })
    );
    assert_eq!(
        o.handle_puback(1),
        Err(AckError::WrongState {
            packet: "PUBACK",
            packet_id: 1
        })
    );
    assert_eq!(o.handle_pubrec(1), Ok(1));
    assert_eq!(
        o.handle_pubrec(1),
        Ok(1),
        "repeated PUBREC is answered again"
    );
    assert!(matches!(o.resend(0)[..], [Resend::PubRel(1)]));
    assert_eq!(o.handle_pubcomp(1), Ok(1));
    assert!(o.is_empty());
    assert_eq!(o.handle_pubcomp(1), Err(AckError::UnknownPacketId(1)));
}

#[test]
fn resend_sets_dup_and_keeps_order_mqtt_4_4_0_1() {
    let mut o = Outgoing::new(10, 10);
    o.push(msg(1, QoS::AtLeastOnce));
    o.push(msg(2, QoS::ExactlyOnce));
    let mut out = Vec::new();
    o.poll_send(0, usize::MAX, &mut out);
    let resent = o.resend(0);
    let ids: Vec<_> = resent
        .iter()
        .map(|r| match r {
            Resend::Publish(p) => {
                assert!(p.dup);
                p.packet_id.unwrap()
            }
            Resend::PubRel(id) => *id,
        })
        .collect();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn full_queue_drops_new_messages() {
    let mut o = Outgoing::new(1, 2);
    assert_eq!(o.push(msg(1, QoS::AtLeastOnce)), Pushed::Queued);
    assert_eq!(o.push(msg(2, QoS::AtLeastOnce)), Pushed::Queued);
    assert_eq!(o.push(msg(3, QoS::AtLeastOnce)), Pushed::Full);
    assert_eq!(o.len(), 2);
}

#[test]
fn expired_queued_messages_are_dropped_not_sent() {
    let mut o = Outgoing::new(10, 10);
    let mut m = msg(1, QoS::AtLeastOnce);
    Arc::make_mut(&mut m.message).expires_at_ms = Some(1_000);
    o.push(m);
    o.push(msg(2, QoS::AtLeastOnce));
    let mut out = Vec::new();
    o.poll_send(1_000, usize::MAX, &mut out);
    assert!(matches!(out[0], SendAction::Expired(1)));
    assert_eq!(sent_ids(&out), vec![2]);
}

#[test]
fn not_durable_message_holds_the_queue_in_order() {
    let mut o = Outgoing::new(10, 10);
    let mut m = msg(1, QoS::ExactlyOnce);
    m.durable = false;
    o.push(m);
    o.push(msg(2, QoS::AtLeastOnce));
    let mut out = Vec::new();
    o.poll_send(0, usize::MAX, &mut out);
    assert!(out.is_empty());
    o.mark_durable(1);
    o.poll_send(0, usize::MAX, &mut out);
    assert_eq!(sent_ids(&out), vec![1, 2]);
}

#[test]
fn room_limits_how_many_are_sent() {
    let mut o = Outgoing::new(10, 10);
    for seq in 1..=3 {
        o.push(msg(seq, QoS::AtLeastOnce));
    }
    let mut out = Vec::new();
    o.poll_send(0, 2, &mut out);
    assert_eq!(sent_ids(&out), vec![1, 2]);
}

#[test]
fn lists_are_freed_when_the_last_message_leaves() {
    let mut o = Outgoing::new(10, 10);
    assert!(o.lists.is_none(), "nothing allocated for an idle session");
    o.push(msg(1, QoS::AtLeastOnce));
    o.push(msg(2, QoS::AtLeastOnce));
    let mut out = Vec::new();
    o.poll_send(0, usize::MAX, &mut out);
    assert_eq!(o.handle_puback(1), Ok(1));
    assert!(o.lists.is_some(), "one message still in flight");
    assert_eq!(o.handle_puback(2), Ok(2));
    assert!(o.lists.is_none(), "freed with the last acknowledgement");
    assert_eq!(o.next_seq(), 3, "sequence numbers go on");
    assert_eq!(o.handle_puback(2), Err(AckError::UnknownPacketId(2)));
}

/// A hold whose release the test can observe: the guard answers a
/// forwarding node, whose oneshot resolves when the last holder lets go.
fn held(
    seq: u64,
    until_ms: u64,
) -> (
    OutMsg,
    tokio::sync::oneshot::Receiver<Result<(), cluster::ForwardRefusal>>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut m = msg(seq, QoS::AtLeastOnce);
    m.hold = Some(Hold {
        guard: AckGuard::forwarded(tx, tracing::Span::none()),
        until_ms,
    });
    (m, rx)
}

/// A fake clock: 2026-12-04 12:00:00 UTC in unix ms.
const T0: u64 = 1_796_385_600_000;

#[test]
fn held_acknowledgements_are_released_at_their_deadline_not_before() {
    let mut o = Outgoing::new(0, 10); // window 0: nothing is sent, all wait
    let (m1, mut rx1) = held(1, T0 + 2_000);
    let (m2, mut rx2) = held(2, T0 + 5_000);
    o.push(m1);
    o.push(m2);
    assert_eq!(o.release_holds(T0 + 1_000), (0, Some(T0 + 2_000)));
    assert!(rx1.try_recv().is_err(), "held until its deadline");
    assert_eq!(o.release_holds(T0 + 2_001), (1, Some(T0 + 5_000)));
    assert_eq!(rx1.try_recv(), Ok(Ok(())));
    assert!(rx2.try_recv().is_err());
    // the client stalled: every hold goes at once
    assert_eq!(o.release_holds(u64::MAX), (1, None));
    assert_eq!(rx2.try_recv(), Ok(Ok(())));
    assert_eq!(o.queued_len(), 2, "released holds leave the copies queued");
}

#[test]
fn a_held_acknowledgement_goes_when_its_copy_is_sent() {
    let mut o = Outgoing::new(10, 10);
    let (m, mut rx) = held(1, T0 + 60_000);
    o.push(m);
    assert!(rx.try_recv().is_err());
    let mut out = Vec::new();
    o.poll_send(T0, usize::MAX, &mut out);
    assert_eq!(sent_ids(&out), vec![1]);
    assert_eq!(rx.try_recv(), Ok(Ok(())), "sent: the publisher is answered");
}

#[test]
fn qos1_flow_ends_at_puback_and_a_pubrec_for_it_is_a_protocol_error() {
    let mut o = Outgoing::new(10, 10);
    o.push(msg(1, QoS::AtLeastOnce));
    let mut out = Vec::new();
    o.poll_send(T0, usize::MAX, &mut out);
    assert_eq!(o.inflight_len(), 1);
    assert_eq!(
        o.handle_pubrec(1),
        Err(AckError::WrongState {
            packet: "PUBREC",
            packet_id: 1
        })
    );
    assert_eq!(o.handle_puback(1), Ok(1));
    assert!(o.is_empty());
    assert_eq!(o.handle_puback(1), Err(AckError::UnknownPacketId(1)));
}

#[test]
fn a_copy_not_yet_stored_is_not_resent_before_it_was_sent() {
    // QoS 2 to a persistent session: sent only once durable
    let mut o = Outgoing::new(10, 10);
    let mut m = msg(1, QoS::ExactlyOnce);
    m.durable = false;
    o.push(m);
    let mut out = Vec::new();
    o.poll_send(T0, usize::MAX, &mut out);
    assert!(out.is_empty(), "waits for the store");
    assert!(o.resend(T0).is_empty(), "never sent, nothing to resend");
    o.mark_durable(1);
    o.poll_send(T0, usize::MAX, &mut out);
    assert_eq!(sent_ids(&out), vec![1]);
}

#[test]
fn a_handed_over_flow_is_queued_under_its_packet_id_and_waits_while_it_is_in_flight() {
    let mut o = Outgoing::new(10, 100);
    assert_eq!(o.next_seq_with(1), 1, "the next id already");
    assert_eq!(packet_id_of(o.next_seq_with(836)), 836);
    o.skip(65_534);
    assert_eq!(packet_id_of(o.next_seq()), 65_535);
    assert_eq!(packet_id_of(o.next_seq_with(2)), 2, "across the wrap");
    assert!(o.next_seq_with(2) > o.next_seq());

    let mut o = Outgoing::new(10, 100);
    o.push(msg(1, QoS::ExactlyOnce));
    let mut out = Vec::new();
    o.poll_send(0, 10, &mut out);
    assert_eq!(sent_ids(&out), [1]);
    assert!(o.holds_packet_id(1));
    assert!(!o.holds_packet_id(2));
    // a flow the client holds open as id 1 waits until this one ends
    let seq = o.next_seq_with(1);
    assert_eq!(seq, 65_536);
    o.push(msg(seq, QoS::ExactlyOnce));
    o.push(msg(seq + 1, QoS::ExactlyOnce));
    let mut out = Vec::new();
    o.poll_send(0, 10, &mut out);
    assert!(out.is_empty(), "id 1 is in flight: {:?}", sent_ids(&out));
    o.handle_pubrec(1).unwrap();
    o.handle_pubcomp(1).unwrap();
    o.poll_send(0, 10, &mut out);
    assert_eq!(sent_ids(&out), [1, 2]);
}

/// Issue 17: a session resumed from its record after its owner lost the
/// state (owner's numbering at seq 1,001 then) numbers past the ids the
/// owner may have used since (1,001 .. 1,003 here) and releases each only
/// when its numbering comes round to it, PUBCOMP before the PUBLISH.
#[test]
fn ids_possibly_open_elsewhere_are_released_only_when_reused_and_pubcomp_comes_first_issue_17() {
    let mut o = Outgoing::new(10, 100);
    o.continue_from(1_001 + 3);
    o.may_be_open(1_001, 3);
    let mut out = Vec::new();
    let seq = o.next_seq();
    o.push(msg(seq, QoS::ExactlyOnce));
    o.poll_send(0, usize::MAX, &mut out);
    assert_eq!(released_ids(&out), Vec::<u16>::new(), "far from the ids");
    assert_eq!(sent_ids(&out), vec![1_004]);
    assert_eq!(o.handle_pubrec(1_004), Ok(seq));
    assert_eq!(o.handle_pubcomp(1_004), Ok(seq));

    // the numbering comes round: ids 1,000 .. 1,004 next
    o.skip(u64::from(u16::MAX) - 5);
    assert_eq!(packet_id_of(o.next_seq()), 1_000);
    for _ in 0..5 {
        let seq = o.next_seq();
        o.push(msg(seq, QoS::AtLeastOnce));
    }
    out.clear();
    o.poll_send(0, usize::MAX, &mut out);
    assert_eq!(
        released_ids(&out),
        vec![1_001, 1_002, 1_003],
        "released ahead"
    );
    assert_eq!(sent_ids(&out), vec![1_000], "1,001 waits for its PUBCOMP");
    assert!(
        matches!(out[0], SendAction::Release(1_001)),
        "PUBREL before the PUBLISH"
    );
    assert_eq!(
        o.releasing(),
        &[1_001, 1_002, 1_003],
        "resent on a new connection"
    );
    out.clear();
    o.poll_send(0, usize::MAX, &mut out);
    assert!(out.is_empty());
    // the client's PUBCOMP is not an error, and frees the id
    assert_eq!(
        o.handle_pubcomp(1_001),
        Err(AckError::UnknownPacketId(1_001))
    );
    o.poll_send(0, usize::MAX, &mut out);
    assert_eq!(sent_ids(&out), vec![1_001]);
    out.clear();
    assert_eq!(
        o.handle_pubcomp(1_003),
        Err(AckError::UnknownPacketId(1_003))
    );
    assert_eq!(
        o.handle_pubcomp(1_002),
        Err(AckError::UnknownPacketId(1_002))
    );
    o.poll_send(0, usize::MAX, &mut out);
    assert_eq!(sent_ids(&out), vec![1_002, 1_003, 1_004]);
    assert!(o.open_elsewhere.is_none(), "nothing left to release");
    // a PUBCOMP for an id of this session's own is checked as ever
    assert!(matches!(
        o.handle_pubcomp(1_003),
        Err(AckError::WrongState { .. })
    ));
}

/// Issue 17 (CI, 2026-12-07): the old owner had the state after all (it
/// was cut off, or draining): once one of its flows arrives, nothing is
/// released, not even the ids after that flow's (its other flows follow).
#[test]
fn ids_possibly_open_elsewhere_are_not_released_once_the_old_owners_flows_arrive_issue_17() {
    let mut o = Outgoing::new(10, 100);
    o.continue_from(1_001 + 3);
    o.may_be_open(1_001, 3);
    o.continues_flow();
    // the old owner's flow under 1,001, then a new message
    let first = o.next_seq_with(1_001);
    o.push(msg(first, QoS::ExactlyOnce));
    let next = o.next_seq();
    o.push(msg(next, QoS::ExactlyOnce));
    let mut out = Vec::new();
    o.poll_send(0, usize::MAX, &mut out);
    assert_eq!(released_ids(&out), Vec::<u16>::new());
    assert_eq!(sent_ids(&out), vec![1_001, 1_002]);
    assert!(o.open_elsewhere.is_none());
}
