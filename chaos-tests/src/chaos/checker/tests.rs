//! Each check fails on a history that breaks its rule, and passes on one
//! that keeps it.

use super::*;
use crate::chaos::history::{Event, NodeChange, Outcome, Stamped};

fn at(t_ms: u64, event: Event) -> Stamped {
    Stamped { t_ms, event }
}

fn publish(t: u64, publisher: u32, seq: u64, qos: u8, outcome: Outcome) -> Stamped {
    at(
        t,
        Event::Publish {
            publisher,
            seq,
            qos,
            retain: false,
            node: 1,
            connection: 1,
            outcome,
            sent_ms: t,
            latency_ms: Some(1),
        },
    )
}

fn deliver(
    t: u64,
    subscriber: &str,
    publisher: u32,
    seq: u64,
    qos: u8,
    connection: u64,
) -> Stamped {
    at(
        t,
        Event::Deliver {
            subscriber: subscriber.into(),
            publisher,
            seq,
            qos,
            dup: false,
            retain: false,
            packet_id: None,
            connection,
            node: 2,
        },
    )
}

fn subscribed(t: u64, client: &str, node: u64) -> Vec<Stamped> {
    vec![
        at(
            t,
            Event::Connected {
                client: client.into(),
                node,
                connect_ms: t,
                resume: false,
                session_present: false,
            },
        ),
        at(
            t,
            Event::Subscribed {
                client: client.into(),
                node,
            },
        ),
    ]
}

/// The cluster recovered at `t` after fault `after`, in `ms`.
/// A fault of `kind` on `nodes` from `t` to `end`.
fn fault(t: u64, kind: &str, nodes: &[u64], end: u64) -> Stamped {
    at(
        t,
        Event::Fault {
            kind: kind.into(),
            detail: String::new(),
            nodes: nodes.to_vec(),
            end_ms: Some(end),
        },
    )
}

fn recovered(t: u64, after: &str, ms: u64) -> Stamped {
    at(
        t,
        Event::Recovered {
            after: after.into(),
            ms: Some(ms),
        },
    )
}

/// `client` resumed its session on `node` at `t` (CONNECT sent 50 ms before).
fn resumed(t: u64, client: &str, node: u64) -> Stamped {
    at(
        t,
        Event::Connected {
            client: client.into(),
            node,
            connect_ms: t - 50,
            resume: true,
            session_present: true,
        },
    )
}

/// A subscriber, one publisher of QoS 2 messages 0..3 all delivered in
/// order, a recovery, a message after it.
fn good() -> Vec<Stamped> {
    let mut h = subscribed(0, "sub0-v311", 2);
    for seq in 0..3 {
        h.push(publish(3_000 + seq * 10, 1, seq, 2, Outcome::Acked));
        h.push(deliver(3_001 + seq * 10, "sub0-v311", 1, seq, 2, 1));
    }
    h.push(recovered(4_000, "final", 300));
    h.push(publish(4_100, 1, 3, 2, Outcome::Acked));
    h.push(deliver(4_101, "sub0-v311", 1, 3, 2, 1));
    h
}

/// [`good`], with two members of the shared group, shared0 having p1#0-2.
fn group_got_first_three() -> Vec<Stamped> {
    let mut h = good();
    h.extend(subscribed(0, "shared0-v5", 1));
    h.extend(subscribed(0, "shared1-v5", 3));
    for seq in 0..3 {
        h.push(deliver(3_002 + seq * 10, "shared0-v5", 1, seq, 2, 1));
    }
    h
}

fn failed(h: &[Stamped]) -> Vec<&'static str> {
    check(h)
        .into_iter()
        .filter(|v| !v.passed)
        .map(|v| v.check)
        .collect()
}

#[test]
fn a_clean_history_passes_every_check() {
    assert_eq!(failed(&good()), Vec::<&str>::new());
}

#[test]
fn an_acknowledged_message_never_delivered_is_a_loss() {
    let mut h = good();
    h.retain(|e| !matches!(&e.event, Event::Deliver { seq: 1, .. }));
    assert_eq!(failed(&h), vec!["no-loss"]);
    let v = check(&h)
        .into_iter()
        .find(|v| v.check == "no-loss")
        .unwrap();
    assert!(v.listed[0].what.contains("p1#1"), "{:?}", v.listed);
}

#[test]
fn an_unacknowledged_message_may_be_missing() {
    let mut h = good();
    h.push(publish(4_200, 1, 4, 2, Outcome::Unknown));
    assert_eq!(failed(&h), Vec::<&str>::new());
}

#[test]
fn a_message_right_after_the_suback_may_miss_the_route() {
    let mut h = good();
    h.push(publish(ROUTE_GRACE_MS - 1, 1, 9, 2, Outcome::Acked));
    assert_eq!(failed(&h), Vec::<&str>::new());
}

#[test]
fn loss_while_the_owner_lost_its_data_is_excused_only_then() {
    let mut h = good();
    h.push(publish(5_000, 1, 4, 2, Outcome::Acked));
    assert_eq!(failed(&h), vec!["no-loss"]);
    h.push(at(
        5_100,
        Event::Node {
            node: 2,
            what: NodeChange::Removed,
        },
    ));
    h.push(at(
        6_000,
        Event::Connected {
            client: "sub0-v311".into(),
            node: 3,
            connect_ms: 5_900,
            resume: true,
            session_present: true,
        },
    ));
    assert_eq!(failed(&h), Vec::<&str>::new());
    // after the reconnect and its move window, nothing is excused
    h.push(publish(6_000 + ROUTE_GRACE_MS + 1, 1, 5, 2, Outcome::Acked));
    assert_eq!(failed(&h), vec!["no-loss"]);
}

// Issue 12: a session's copies are on its replica, so a replace (the
// node killed with its data) excuses only copies published after the node
// went down (kept for it by the publishing node, dropped at its removal).
#[test]
fn a_replaced_owner_excuses_only_copies_published_after_it_went_down() {
    let replace = at(
        4_800,
        Event::Fault {
            kind: "replace".into(),
            detail: String::new(),
            nodes: vec![2],
            end_ms: Some(5_600),
        },
    );
    let removed = at(
        5_100,
        Event::Node {
            node: 2,
            what: NodeChange::Removed,
        },
    );
    let back = at(
        6_000,
        Event::Connected {
            client: "sub0-v311".into(),
            node: 3,
            connect_ms: 5_900,
            resume: true,
            session_present: true,
        },
    );
    // the subscriber went offline on node 2 before it was lost
    let offline = at(
        3_500,
        Event::Disconnected {
            client: "sub0-v311".into(),
            node: 2,
            reason: "disconnect".into(),
        },
    );
    let mut h = good();
    h.insert(0, replace.clone());
    h.push(offline.clone());
    h.push(publish(5_000, 1, 4, 2, Outcome::Acked));
    h.push(removed.clone());
    h.push(back.clone());
    assert_eq!(
        failed(&h),
        Vec::<&str>::new(),
        "published while node 2 was down"
    );
    let mut h = good();
    h.insert(0, replace);
    h.push(offline);
    h.push(publish(4_800 - IN_FLIGHT_MS - 100, 1, 4, 2, Outcome::Acked));
    h.push(removed);
    h.push(back);
    assert_eq!(
        failed(&h),
        vec!["no-loss"],
        "acknowledged before node 2 went down: on the replica"
    );
}

#[test]
fn loss_while_the_session_moves_is_excused_only_within_the_window() {
    let mut h = good();
    let moved = |t| {
        at(
            t,
            Event::Connected {
                client: "sub0-v311".into(),
                node: 3,
                connect_ms: t - 50,
                resume: true,
                session_present: true,
            },
        )
    };
    h.push(moved(6_000));
    h.push(publish(5_960, 1, 4, 2, Outcome::Acked));
    h.push(publish(6_000 + ROUTE_GRACE_MS, 1, 5, 2, Outcome::Acked));
    assert_eq!(failed(&h), Vec::<&str>::new());
    h.push(publish(5_940 - IN_FLIGHT_MS, 1, 6, 2, Outcome::Acked));
    assert_eq!(failed(&h), vec!["no-loss"], "sent before the move started");
    // a reconnect to the same node is no move
    let mut h = good();
    h.push(at(
        6_000,
        Event::Connected {
            client: "sub0-v311".into(),
            node: 2,
            connect_ms: 5_950,
            resume: true,
            session_present: true,
        },
    ));
    h.push(publish(5_960, 1, 4, 2, Outcome::Acked));
    assert_eq!(failed(&h), vec!["no-loss"]);
}

#[test]
fn loss_after_the_old_node_failed_is_excused_from_the_end_of_the_old_connection() {
    let mut h = good();
    h.push(fault(5_000, "kill-random", &[2], 9_000));
    h.push(at(
        5_001,
        Event::Disconnected {
            client: "sub0-v311".into(),
            node: 2,
            reason: "closed".into(),
        },
    ));
    h.push(publish(5_500, 1, 4, 2, Outcome::Acked));
    h.push(at(
        7_000,
        Event::Connected {
            client: "sub0-v311".into(),
            node: 3,
            connect_ms: 6_900,
            resume: true,
            session_present: true,
        },
    ));
    assert_eq!(failed(&h), Vec::<&str>::new());
    // without the fault, the old node keeps the copy: its loss counts
    h.remove(
        h.iter()
            .position(|e| matches!(e.event, Event::Fault { .. }))
            .unwrap(),
    );
    assert_eq!(failed(&h), vec!["no-loss"]);
}

#[test]
fn a_message_read_late_by_a_paused_node_counts_in_the_move_window_of_its_acknowledgement() {
    let mut h = good();
    h.push(at(
        5_000,
        Event::Disconnected {
            client: "sub0-v311".into(),
            node: 2,
            reason: "planned".into(),
        },
    ));
    // sent at 5,100, acknowledged 6 s later, when the session moved
    h.push(at(
        11_100,
        Event::Publish {
            publisher: 1,
            seq: 4,
            qos: 2,
            retain: false,
            node: 3,
            connection: 1,
            outcome: Outcome::Acked,
            sent_ms: 5_100,
            latency_ms: Some(6_000),
        },
    ));
    h.push(at(
        11_000,
        Event::Connected {
            client: "sub0-v311".into(),
            node: 3,
            connect_ms: 10_900,
            resume: true,
            session_present: true,
        },
    ));
    assert_eq!(failed(&h), Vec::<&str>::new());
}

// Copies a publishing node keeps for a peer it counts down are on its disk
// (issue 12), so a kill of the publishing node excuses nothing; only a node
// that lost its data (replaced) may have lost them.
#[test]
fn a_copy_kept_by_a_publishing_node_is_excused_only_when_that_node_lost_its_disk() {
    let isolate = at(
        1_000,
        Event::Fault {
            kind: "partition-isolate".into(),
            detail: String::new(),
            nodes: vec![1],
            end_ms: Some(4_500),
        },
    );
    let mut h = good();
    h.insert(0, isolate.clone());
    h.push(publish(5_000, 1, 4, 2, Outcome::Acked));
    h.push(at(
        6_000,
        Event::Node {
            node: 1,
            what: NodeChange::Killed,
        },
    ));
    assert_eq!(
        failed(&h),
        vec!["no-loss"],
        "a kill leaves the kept copy on node 1's disk"
    );
    let mut h = good();
    h.push(publish(5_000, 1, 4, 2, Outcome::Acked));
    h.push(at(
        6_000,
        Event::Node {
            node: 1,
            what: NodeChange::Removed,
        },
    ));
    assert_eq!(
        failed(&h),
        vec!["no-loss"],
        "no fault made node 1 keep the copy"
    );
    h.insert(0, isolate);
    assert_eq!(failed(&h), Vec::<&str>::new());
}

#[test]
fn a_qos2_message_delivered_twice_is_a_duplicate_but_qos1_may_be() {
    let mut h = good();
    h.push(deliver(5_000, "sub0-v311", 1, 2, 2, 2));
    assert_eq!(failed(&h), vec!["qos2-exactly-once"]);
    let mut h = good();
    h.push(publish(4_500, 0, 0, 1, Outcome::Acked));
    h.push(deliver(4_501, "sub0-v311", 0, 0, 1, 1));
    h.push(deliver(4_502, "sub0-v311", 0, 0, 1, 1));
    assert_eq!(failed(&h), Vec::<&str>::new());
}

#[test]
fn shared_group_needs_one_copy_and_no_qos2_copy_twice() {
    let mut h = good();
    h.extend(subscribed(0, "shared0-v5", 1));
    h.extend(subscribed(0, "shared1-v5", 3));
    h.push(deliver(3_002, "shared0-v5", 1, 0, 2, 1));
    h.push(deliver(3_012, "shared1-v5", 1, 1, 2, 1));
    h.push(deliver(3_022, "shared0-v5", 1, 2, 2, 1));
    assert_eq!(failed(&h), vec!["shared-no-loss"], "p1#3 reached no member");
    h.push(deliver(4_102, "shared1-v5", 1, 3, 2, 1));
    assert_eq!(failed(&h), Vec::<&str>::new());
    h.push(deliver(4_103, "shared0-v5", 1, 3, 2, 1));
    assert_eq!(failed(&h), vec!["qos2-exactly-once"]);
}

// postmortem: quick chaos runs in CI (seed 1) failed now and then with "shared
// group: QoS 2 message delivered to two members" for a message that reached
// one member twice, the second time excused (the member's session had moved
// while a fault delayed a copy): the group rule counted deliveries, not members.
#[test]
fn a_shared_member_getting_a_copy_again_after_a_move_is_not_a_second_member() {
    let mut h = group_got_first_three();
    // shared0 moves from node 2 (where `deliver` puts it) to node 3 during
    // a fault; p1#2 reaches it again there
    h.push(at(
        3_500,
        Event::Connected {
            client: "shared0-v5".into(),
            node: 3,
            connect_ms: 3_400,
            resume: true,
            session_present: true,
        },
    ));
    h.push(fault(3_100, "pause", &[2], 3_900));
    h.sort_by_key(|e| e.t_ms);
    let mut again = deliver(3_600, "shared0-v5", 1, 2, 2, 2);
    if let Event::Deliver { node, .. } = &mut again.event {
        *node = 3;
    }
    h.push(again);
    assert_eq!(failed(&h), Vec::<&str>::new());
}

#[test]
fn reordering_within_a_connection_fails_but_not_across_connections() {
    let mut h = subscribed(0, "sub0-v311", 2);
    h.push(publish(3_000, 1, 0, 1, Outcome::Acked));
    h.push(publish(3_010, 1, 1, 1, Outcome::Acked));
    h.push(recovered(4_000, "final", 1));
    h.push(publish(4_100, 1, 2, 1, Outcome::Acked));
    h.push(deliver(4_200, "sub0-v311", 1, 1, 1, 1));
    h.push(deliver(4_300, "sub0-v311", 1, 2, 1, 2));
    h.push(deliver(4_400, "sub0-v311", 1, 0, 1, 2));
    assert_eq!(failed(&h), vec!["order"]);
}

// postmortem: long run seed 21 (2026-12-06) failed `order` on a shared
// member whose copies came two ways while it moved (through its old node,
// which had been isolated, and straight); the move excused them, but its new
// node was replaced 4 s later, and only the first excuse found (data lost)
// was asked whether it was a move.
#[test]
fn reordering_while_moving_is_excused_even_if_the_new_node_later_lost_its_data() {
    let mut h = subscribed(0, "sub0-v311", 2);
    h.push(resumed(6_000, "sub0-v311", 3));
    h.push(publish(6_100, 1, 0, 1, Outcome::Acked));
    h.push(publish(6_110, 1, 1, 1, Outcome::Acked));
    h.push(deliver(6_300, "sub0-v311", 1, 1, 1, 2));
    h.push(deliver(6_310, "sub0-v311", 1, 0, 1, 2));
    h.push(recovered(6_500, "final", 1));
    h.push(publish(6_600, 1, 2, 1, Outcome::Acked));
    h.push(deliver(6_601, "sub0-v311", 1, 2, 1, 2));
    assert_eq!(failed(&h), Vec::<&str>::new());
    h.push(at(
        7_000,
        Event::Node {
            node: 3,
            what: NodeChange::Removed,
        },
    ));
    h.push(resumed(8_000, "sub0-v311", 4));
    assert_eq!(failed(&h), Vec::<&str>::new());
}

// Long run seed 21 (2026-12-06): a publishing node isolated until 944.6 s
// caught up only at 951.4 s; until then it routed a shared member's copies
// to the node the member had left at 944.9 s, and they came after newer
// ones. Late by a stale route is excused for `order`, never for `no-loss`.
#[test]
fn reordering_by_a_node_not_caught_up_after_a_fault_is_excused_only_with_a_move() {
    let history = |moved: bool| {
        let mut h = subscribed(0, "sub0-v311", 2);
        h.push(fault(1_000, "partition-isolate", &[1], 4_000));
        if moved {
            h.push(resumed(4_100, "sub0-v311", 3));
        }
        // after the fault and the move's window, before the recovery
        h.push(publish(7_000, 1, 0, 1, Outcome::Acked));
        h.push(publish(7_010, 1, 1, 1, Outcome::Acked));
        h.push(recovered(9_000, "partition-isolate", 5_000));
        h.push(deliver(9_100, "sub0-v311", 1, 1, 1, 2));
        h.push(deliver(9_110, "sub0-v311", 1, 0, 1, 2));
        h.push(recovered(9_500, "final", 1));
        h.push(publish(9_600, 1, 2, 1, Outcome::Acked));
        h
    };
    let mut h = history(true);
    h.push(deliver(9_601, "sub0-v311", 1, 2, 1, 2));
    assert_eq!(failed(&h), Vec::<&str>::new());
    let mut h = history(false);
    h.push(deliver(9_601, "sub0-v311", 1, 2, 1, 2));
    assert_eq!(failed(&h), vec!["order"], "no move: no other path");
    assert_eq!(
        failed(&history(true)),
        vec!["no-loss"],
        "a loss is not excused"
    );
}

// Long run seed 22 (2026-12-06 evening): p0#427 was published on node 1
// 41 ms before a split cut node 1 off, and acknowledged 10 s later; the
// copy was held for the subscriber's node until the heal, the subscriber
// moved before node 1 caught up, and the copy came through the old node
// after #428-#430. A copy on its way when the fault began counts as sent
// during it.
#[test]
fn a_copy_published_just_before_a_fault_and_acknowledged_during_it_may_come_late_after_a_move() {
    let mut h = subscribed(0, "sub0-v311", 2);
    let first = h.len();
    h.push(publish(900, 1, 0, 1, Outcome::Acked));
    h.push(fault(1_000, "partition-split", &[1], 4_000));
    // the subscriber moves after the fault ended, before the recovery
    h.push(at(
        6_500,
        Event::Disconnected {
            client: "sub0-v311".into(),
            node: 2,
            reason: "planned".into(),
        },
    ));
    h.push(resumed(6_600, "sub0-v311", 3));
    h.push(publish(7_000, 1, 1, 1, Outcome::Acked));
    h.push(recovered(9_000, "partition-split", 5_000));
    h.push(deliver(9_100, "sub0-v311", 1, 1, 1, 2));
    h.push(deliver(9_110, "sub0-v311", 1, 0, 1, 2));
    h.push(recovered(9_500, "final", 1));
    h.push(publish(9_600, 1, 2, 1, Outcome::Acked));
    h.push(deliver(9_601, "sub0-v311", 1, 2, 1, 2));
    // acknowledged only after the fault began: on its way during it
    let mut late = h.clone();
    if let Event::Publish { latency_ms, .. } = &mut late[first].event {
        *latency_ms = Some(5_000);
    }
    assert_eq!(failed(&late), Vec::<&str>::new());
    // acknowledged before the fault: it was routed on a fresh view
    if let Event::Publish { latency_ms, .. } = &mut h[first].event {
        *latency_ms = Some(10);
    }
    assert_eq!(failed(&h), vec!["order"]);
}

// Long run seed 23 (2026-12-06 evening): p3#1542 was published on node 5
// during a split, held 13 s and routed by a stale group route to another
// node; it reached member shared1 after #1543-#1547, which node 5 gave it
// directly after the heal, although shared1 never left node 5. A shared
// member's copy on its way during a fault may come late; a plain
// subscriber's only with a move.
#[test]
fn a_shared_members_copy_held_by_a_fault_may_come_late_without_a_move() {
    let history = |subscriber: &str| {
        let mut h = subscribed(0, subscriber, 2);
        h.push(fault(1_000, "partition-split", &[1], 4_000));
        let held = h.len();
        h.push(publish(3_000, 1, 0, 1, Outcome::Acked));
        if let Event::Publish { latency_ms, .. } = &mut h[held].event {
            *latency_ms = Some(2_500);
        }
        h.push(recovered(6_000, "partition-split", 2_000));
        h.push(publish(6_100, 1, 1, 1, Outcome::Acked));
        h.push(deliver(6_101, subscriber, 1, 1, 1, 1));
        h.push(deliver(6_200, subscriber, 1, 0, 1, 1));
        h.push(recovered(6_500, "final", 1));
        h.push(publish(6_600, 1, 2, 1, Outcome::Acked));
        h.push(deliver(6_601, subscriber, 1, 2, 1, 1));
        h
    };
    let failed_order = |h: &[Stamped]| failed(h).contains(&"order");
    assert!(!failed_order(&history("shared0-v5")));
    assert!(
        failed_order(&history("sub0-v311")),
        "a plain subscriber that stayed put"
    );
}

#[test]
fn a_lost_session_a_crash_and_a_slow_recovery_fail() {
    let mut h = good();
    h.push(at(
        5_000,
        Event::Connected {
            client: "sub0-v311".into(),
            node: 1,
            connect_ms: 4_900,
            resume: true,
            session_present: false,
        },
    ));
    assert_eq!(failed(&h), vec!["sessions-kept"]);
    let mut h = good();
    h.push(at(
        5_000,
        Event::Node {
            node: 1,
            what: NodeChange::Exited {
                status: "signal 6".into(),
                expected: false,
            },
        },
    ));
    h.push(at(
        5_001,
        Event::Node {
            node: 2,
            what: NodeChange::Exited {
                status: "exit 1".into(),
                expected: true,
            },
        },
    ));
    assert_eq!(failed(&h), vec!["no-crash"]);
    let mut h = good();
    h.insert(
        0,
        at(
            0,
            Event::Recovered {
                after: "pause".into(),
                ms: None,
            },
        ),
    );
    assert_eq!(failed(&h), vec!["recovery"]);
}

#[test]
fn retained_must_converge_to_the_last_acknowledged_write() {
    let retained = |t, seq, outcome| {
        at(
            t,
            Event::Publish {
                publisher: 1000,
                seq,
                qos: 1,
                retain: true,
                node: 1,
                connection: 1,
                outcome,
                sent_ms: t,
                latency_ms: None,
            },
        )
    };
    let read = |node, seq| {
        at(
            9_000,
            Event::RetainedRead {
                node,
                publisher: 1000,
                seq,
                last: true,
            },
        )
    };
    let mut h = good();
    h.push(retained(4_100, 0, Outcome::Acked));
    h.push(retained(4_200, 1, Outcome::Acked));
    h.push(retained(4_300, 2, Outcome::Unknown));
    let mut ok = h.clone();
    ok.extend([read(1, Some(2)), read(2, Some(2))]);
    assert_eq!(
        failed(&ok),
        Vec::<&str>::new(),
        "the unacknowledged write may have won"
    );
    let mut stale = h.clone();
    stale.extend([read(1, Some(0)), read(2, Some(0))]);
    assert_eq!(failed(&stale), vec!["retained-converges"]);
    let mut split = h.clone();
    split.extend([read(1, Some(1)), read(2, Some(2))]);
    assert_eq!(failed(&split), vec!["retained-converges"]);
    let mut missing = h;
    missing.extend([read(1, Some(1)), read(2, None)]);
    assert_eq!(failed(&missing), vec!["retained-converges"]);
}

#[test]
fn a_delivery_nobody_published_is_a_phantom() {
    let mut h = good();
    h.push(deliver(5_000, "sub0-v311", 7, 7, 1, 1));
    assert_eq!(failed(&h), vec!["no-phantom"]);
}

#[test]
fn a_publisher_without_acks_after_the_last_recovery_is_stuck() {
    let mut h = good();
    h.push(publish(3_500, 5, 0, 1, Outcome::Acked));
    h.push(deliver(3_501, "sub0-v311", 5, 0, 1, 1));
    h.push(publish(4_500, 5, 1, 1, Outcome::Unknown));
    assert_eq!(failed(&h), vec!["progress"]);
}

// postmortem: long chaos run seed 22, 2026-12-07 (p3#1886): node 3 sent a
// group copy to node 1 by a stale route; node 1 passed it to the member
// that had just moved from it (shared1, on node 2) and was killed before
// it answered; node 3 kept the copy, node 1 refused it once restarted (no
// member there) and it went to shared0. A documented limit (README,
// "Delivery guarantees", Cluster), counted apart only when a node was
// killed while the message was unacknowledged.
#[test]
fn a_second_shared_member_is_counted_apart_only_after_a_kill_before_the_acknowledgement() {
    let mut h = group_got_first_three();
    // p1#3, sent at 4.1 s, acknowledged 10 s later (recorded then)
    h.retain(|e| !matches!(e.event, Event::Publish { seq: 3, .. }));
    h.push(at(
        14_100,
        Event::Publish {
            publisher: 1,
            seq: 3,
            qos: 2,
            retain: false,
            node: 1,
            connection: 1,
            outcome: Outcome::Acked,
            sent_ms: 4_100,
            latency_ms: Some(10_000),
        },
    ));
    h.push(deliver(4_110, "shared1-v5", 1, 3, 2, 1));
    h.push(deliver(14_200, "shared0-v5", 1, 3, 2, 1));
    assert_eq!(failed(&h), vec!["qos2-exactly-once"], "no kill");
    let mut after = h.clone();
    after.push(fault(3_500, "kill-random", &[2], 3_600));
    after.push(recovered(3_700, "kill-random", 100));
    assert_eq!(
        failed(&after),
        vec!["qos2-exactly-once"],
        "a kill before the message was sent explains nothing"
    );
    h.push(fault(4_120, "kill-random", &[2], 9_000));
    h.push(recovered(9_500, "kill-random", 300));
    // progress after that recovery
    h.push(publish(15_000, 1, 4, 2, Outcome::Acked));
    h.push(deliver(15_001, "sub0-v311", 1, 4, 2, 1));
    h.push(deliver(15_002, "shared1-v5", 1, 4, 2, 1));
    assert_eq!(failed(&h), Vec::<&str>::new());
}
