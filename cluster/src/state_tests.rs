//! Unit tests of the state machine: determinism, snapshot round trips and the
//! rules of each command.

use bytes::Bytes;
use proto::proposal::Command;

use super::*;
use crate::types::SessionSubscription;

fn proposal(origin: u64, request_id: u64, command: Command) -> proto::Proposal {
    proto::Proposal {
        origin,
        request_id,
        command: Some(command),
    }
}

fn add_route(filter: &str, node: u64) -> Command {
    Command::AddRoute(proto::AddRoute {
        filter: filter.into(),
        node,
    })
}

fn remove_route(filter: &str, node: u64) -> Command {
    Command::RemoveRoute(proto::RemoveRoute {
        filter: filter.into(),
        node,
    })
}

fn info(filter: &str) -> SessionInfo {
    SessionInfo {
        subscriptions: vec![SessionSubscription {
            filter: filter.into(),
            options: Bytes::from_static(&[1]),
        }],
        session_expiry_interval: 3600,
        disconnected_at_ms: None,
        next_seq: 0,
    }
}

/// An unconditional claim, as nodes before `expected_owner` proposed it.
fn claim(client_id: &str, node: u64) -> Command {
    Command::ClaimSession(proto::ClaimSession {
        client_id: client_id.into(),
        node,
        info: Some((&info("a/#")).into()),
        expected_owner: None,
        ..Default::default()
    })
}

/// A claim by `node`, which saw `seen` own the session (0: no owner).
fn claim_seen(client_id: &str, node: u64, seen: u64) -> Command {
    Command::ClaimSession(proto::ClaimSession {
        client_id: client_id.into(),
        node,
        info: Some((&info("a/#")).into()),
        expected_owner: Some(seen),
        ..Default::default()
    })
}

/// A fail-over claim by `node`, from a replica of `from` holding its
/// copies through `through_seq`.
fn claim_failed_over(client_id: &str, node: u64, from: u64, through_seq: u64) -> Command {
    Command::ClaimSession(proto::ClaimSession {
        client_id: client_id.into(),
        node,
        info: Some((&info("a/#")).into()),
        expected_owner: Some(from),
        failed_over_from: from,
        through_seq,
    })
}

fn release(client_id: &str, node: u64) -> Command {
    Command::ReleaseSession(proto::ReleaseSession {
        client_id: client_id.into(),
        node,
    })
}

fn retained(topic: &str, payload: &'static [u8]) -> Command {
    Command::SetRetained(proto::SetRetained {
        message: Some(proto::StoredMessage {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: 1,
            retain: true,
            properties: Bytes::new(),
            expires_at_ms: None,
        }),
    })
}

fn config(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

/// A mixed workload of every command kind, with a duplicate and an invalid one.
fn workload() -> Vec<proto::Proposal> {
    let mut out = Vec::new();
    let mut id = 0;
    let mut push = |origin, command| {
        id += 1;
        out.push(proposal(origin, id, command));
    };
    for i in 0..50u64 {
        let node = 1 + i % 3;
        push(node, add_route(&format!("t/{}/#", i % 7), node));
        push(node, claim(&format!("c{}", i % 11), node));
        if i % 6 == 1 {
            let from = 1 + (i + 1) % 3;
            push(
                node,
                claim_failed_over(&format!("c{}", i % 11), node, from, i),
            );
        }
        if i % 5 == 0 {
            push(node, remove_route(&format!("t/{}/#", (i + 1) % 7), node));
            push(node, release(&format!("c{}", i % 11), node));
        }
        push(
            node,
            retained(&format!("r/{}", i % 4), if i % 9 == 0 { b"" } else { b"v" }),
        );
    }
    let dup = out[3].clone();
    out.push(dup);
    out.push(proposal(
        1,
        10_000,
        Command::SetRetained(proto::SetRetained { message: None }),
    ));
    out
}

fn apply_all(proposals: &[proto::Proposal]) -> ClusterState {
    let mut state = ClusterState::default();
    state.set_config(&config(&[1, 2, 3]));
    for p in proposals {
        state.apply(p.clone());
    }
    state
}

#[test]
fn same_entries_give_the_same_state_and_snapshot_bytes() {
    let a = apply_all(&workload());
    let b = apply_all(&workload());
    assert_eq!(a, b);
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn snapshot_restore_round_trips() {
    let state = apply_all(&workload());
    let restored = ClusterState::restore(&state.snapshot()).unwrap();
    assert_eq!(restored, state);
    assert_eq!(restored.snapshot(), state.snapshot());
    assert_eq!(ClusterState::restore(&[]).unwrap(), ClusterState::default());
}

#[test]
fn a_restored_state_applies_the_rest_of_the_log_like_the_original() {
    let all = workload();
    let (head, tail) = all.split_at(all.len() / 2);
    let mut restored = ClusterState::restore(&apply_all(head).snapshot()).unwrap();
    for p in tail {
        restored.apply(p.clone());
    }
    assert_eq!(restored, apply_all(&all));
}

#[test]
fn corrupt_snapshot_is_an_error_not_a_panic() {
    for data in [
        &[0xff_u8][..],
        &[0x0a, 0x05, 0x08],
        &[0x22, 0x02, 0x18, 0x09],
    ] {
        assert!(ClusterState::restore(data).is_err(), "{data:?}");
    }
}

#[test]
fn routes_are_idempotent_sets_per_node() {
    let mut s = ClusterState::default();
    let (_, changes) = s.apply(proposal(1, 1, add_route("a/+", 1)));
    assert_eq!(
        changes,
        [Change::RouteAdded {
            filter: "a/+".into(),
            node: 1
        }]
    );
    let (_, changes) = s.apply(proposal(1, 2, add_route("a/+", 1)));
    assert!(
        changes.is_empty(),
        "a second add of the same node changes nothing"
    );
    s.apply(proposal(2, 1, add_route("a/+", 2)));
    s.apply(proposal(1, 3, remove_route("a/+", 1)));
    assert!(!s.has_route("a/+", 1));
    assert!(s.has_route("a/+", 2));
    s.apply(proposal(2, 2, remove_route("a/+", 2)));
    assert!(s.routes().is_empty(), "an empty filter is dropped");
}

#[test]
fn a_resent_proposal_is_applied_once_with_its_first_outcome() {
    let mut s = ClusterState::default();
    let (first, _) = s.apply(proposal(2, 7, claim("c", 2)));
    assert_eq!(first, Outcome::Claimed(None));
    s.apply(proposal(3, 1, claim("c", 3)));
    // Node 2's claim committed a second time (re-sent after a leader change):
    // it must not take the session back from node 3.
    let (again, changes) = s.apply(proposal(2, 7, claim("c", 2)));
    assert_eq!(again, Outcome::Claimed(None));
    assert!(changes.is_empty());
    assert_eq!(s.session("c").unwrap().owner, 3);
}

#[test]
fn the_dedupe_window_is_bounded() {
    let mut s = ClusterState::default();
    for id in 0..(RECENT_REQUESTS as u64 + 10) {
        s.apply(proposal(1, id, add_route("x", 1)));
    }
    assert!(s.recent_outcome(1, 0).is_none());
    assert!(s.recent_outcome(1, RECENT_REQUESTS as u64 + 9).is_some());
}

#[test]
fn claim_reports_the_previous_owner_and_update_needs_ownership() {
    let mut s = ClusterState::default();
    assert_eq!(
        s.apply(proposal(1, 1, claim("c", 1))).0,
        Outcome::Claimed(None)
    );
    let (outcome, changes) = s.apply(proposal(2, 1, claim("c", 2)));
    assert_eq!(outcome, Outcome::Claimed(Some(1)));
    assert_eq!(
        changes,
        [Change::SessionOwnerChanged {
            client_id: "c".into(),
            owner: 2
        }]
    );
    let update = Command::UpdateSession(proto::UpdateSession {
        client_id: "c".into(),
        node: 1,
        info: Some((&info("b")).into()),
    });
    assert_eq!(
        s.apply(proposal(1, 2, update)).0,
        Outcome::NotOwner(Some(2))
    );
    assert_eq!(s.session("c").unwrap().info, info("a/#"), "not overwritten");
    assert_eq!(
        s.apply(proposal(1, 3, release("c", 1))).0,
        Outcome::NotOwner(Some(2))
    );
    let (outcome, changes) = s.apply(proposal(2, 2, release("c", 2)));
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(
        changes,
        [Change::SessionReleased {
            client_id: "c".into()
        }]
    );
    assert_eq!(
        s.apply(proposal(2, 3, release("c", 2))).0,
        Outcome::NotOwner(None)
    );
}

#[test]
fn empty_retained_payload_deletes() {
    let mut s = ClusterState::default();
    s.apply(proposal(1, 1, retained("r", b"v")));
    assert_eq!(s.retained()["r"].payload, Bytes::from_static(b"v"));
    let (_, changes) = s.apply(proposal(1, 2, retained("r", b"")));
    assert!(s.retained().is_empty());
    assert!(matches!(&changes[..], [Change::RetainedChanged(m)] if m.payload.is_empty()));
    let (_, changes) = s.apply(proposal(1, 3, retained("r", b"")));
    assert!(changes.is_empty(), "deleting nothing changes nothing");
}

#[test]
fn invalid_commands_change_nothing() {
    let mut s = ClusterState::default();
    let bad_qos = Command::SetRetained(proto::SetRetained {
        message: Some(proto::StoredMessage {
            topic: "t".into(),
            payload: Bytes::from_static(b"v"),
            qos: 3,
            ..Default::default()
        }),
    });
    let (outcome, changes) = s.apply(proposal(1, 1, bad_qos));
    assert!(
        matches!(outcome, Outcome::Invalid(ref r) if r.contains("QoS 3")),
        "{outcome:?}"
    );
    assert!(changes.is_empty());
    let (outcome, _) = s.apply(proto::Proposal {
        origin: 1,
        request_id: 2,
        command: None,
    });
    assert!(matches!(outcome, Outcome::Invalid(_)));
    assert!(s.retained().is_empty());
}

#[test]
fn members_follow_the_configuration() {
    let mut s = ClusterState::default();
    s.set_config(&config(&[1, 2]));
    let set_member = |id, addr: &str| {
        Command::SetMember(proto::SetMember {
            member: Some(proto::MemberInfo {
                id,
                raft_address: addr.into(),
                mqtt_address: String::new(),
            }),
        })
    };
    let (_, changes) = s.apply(proposal(1, 1, set_member(1, "n1:7000")));
    assert_eq!(changes, [Change::MembersChanged]);
    s.apply(proposal(9, 1, set_member(9, "n9:7000")));
    assert!(s.member(9).is_none(), "not in the configuration");

    let joining = Member {
        id: 3,
        address: "n3:7000".into(),
        mqtt_address: "n3:1883".into(),
    };
    s.apply_conf_change(1, 2, &config(&[1, 2, 3]), Some(joining.clone()));
    assert_eq!(s.member(3), Some(&joining));
    s.apply(proposal(3, 1, add_route("x", 3)));
    s.apply(proposal(3, 2, claim("c", 3)));
    let changes = s.apply_conf_change(1, 3, &config(&[1, 2]), None);
    assert!(changes.contains(&Change::RouteRemoved {
        filter: "x".into(),
        node: 3
    }));
    assert!(changes.contains(&Change::MembersChanged));
    assert!(s.member(3).is_none());
    assert_eq!(
        s.session("c").unwrap().owner,
        3,
        "sessions stay for a claim"
    );
}

#[test]
fn a_fail_over_marks_the_old_owners_copy_superseded_until_it_claims_again() {
    let mut s = ClusterState::default();
    s.set_config(&config(&[1, 2, 3]));
    s.apply(proposal(2, 1, claim("c", 2)));
    let (outcome, _) = s.apply(proposal(3, 1, claim_failed_over("c", 3, 2, 40)));
    assert_eq!(outcome, Outcome::Claimed(Some(2)));
    assert_eq!(
        s.session("c").unwrap().superseded,
        BTreeMap::from([(2, 40)])
    );
    // kept across later claims by other nodes
    s.apply(proposal(1, 1, claim_seen("c", 1, 3)));
    s.apply(proposal(3, 2, claim_failed_over("c", 3, 1, 7)));
    assert_eq!(
        s.session("c").unwrap().superseded,
        BTreeMap::from([(1, 7), (2, 40)]),
        "node 1's copy stale through 7; node 2's still through 40"
    );
    // a late fail-over claim (the owner it saw is gone) changes nothing
    s.apply(proposal(1, 2, claim_failed_over("c", 1, 2, 30)));
    assert_eq!(s.session("c").unwrap().owner, 3);
    let restored = ClusterState::restore(&s.snapshot()).unwrap();
    assert_eq!(restored, s, "kept in snapshots");
    // a node that claims the session again has a current copy
    s.apply(proposal(2, 2, claim_seen("c", 2, 3)));
    assert_eq!(s.session("c").unwrap().superseded, BTreeMap::from([(1, 7)]));
    // a node that leaves the cluster leaves the map
    s.apply_conf_change(1, 9, &config(&[2, 3]), None);
    assert!(s.session("c").unwrap().superseded.is_empty());
}

#[test]
fn diff_lists_what_a_snapshot_changed() {
    let mut old = ClusterState::default();
    old.apply(proposal(1, 1, add_route("gone", 1)));
    old.apply(proposal(1, 2, retained("r", b"old")));
    old.apply(proposal(1, 3, claim("c", 1)));
    let mut new = ClusterState::default();
    new.apply(proposal(2, 1, add_route("new", 2)));
    new.apply(proposal(2, 2, claim("c", 2)));
    let changes = old.diff(&new);
    assert!(changes.contains(&Change::RouteAdded {
        filter: "new".into(),
        node: 2
    }));
    assert!(changes.contains(&Change::RouteRemoved {
        filter: "gone".into(),
        node: 1
    }));
    assert!(changes.contains(&Change::SessionOwnerChanged {
        client_id: "c".into(),
        owner: 2
    }));
    assert!(changes.iter().any(
        |c| matches!(c, Change::RetainedChanged(m) if m.topic == "r" && m.payload.is_empty())
    ));
}

fn hub_route(name: &str, definition: &str) -> Command {
    Command::SetHubRoute(proto::SetHubRoute {
        name: name.into(),
        definition: definition.into(),
    })
}

#[test]
fn hub_routes_are_set_replaced_deleted_and_kept_in_snapshots() {
    let mut state = ClusterState::default();
    let (_, changes) = state.apply(proposal(1, 1, hub_route("r", "{\"v\":1}")));
    assert_eq!(
        changes,
        [Change::HubRouteChanged {
            name: "r".into(),
            definition: Some("{\"v\":1}".into())
        }]
    );
    // the same definition again changes nothing
    let (_, changes) = state.apply(proposal(1, 2, hub_route("r", "{\"v\":1}")));
    assert!(changes.is_empty());
    state.apply(proposal(2, 1, hub_route("s", "{}")));
    let before = state.clone();
    let restored = ClusterState::restore(&state.snapshot()).unwrap();
    assert_eq!(restored.hub_routes(), state.hub_routes());
    let delete = Command::DeleteHubRoute(proto::DeleteHubRoute { name: "r".into() });
    let (_, changes) = state.apply(proposal(1, 3, delete));
    assert_eq!(
        changes,
        [Change::HubRouteChanged {
            name: "r".into(),
            definition: None
        }]
    );
    assert_eq!(
        state.diff(&before),
        [Change::HubRouteChanged {
            name: "r".into(),
            definition: Some("{\"v\":1}".into())
        }]
    );
    let (outcome, changes) = state.apply(proposal(1, 4, hub_route("", "{}")));
    assert!(matches!(outcome, Outcome::Invalid(_)) && changes.is_empty());
}

/// Chaos seed 21: a claim that committed late (its node was cut off) took
/// the session from a newer claim, and the client's live connection was
/// closed with Session Taken Over. A claim now applies only if the session
/// is still owned by the node its claimant saw.
#[test]
fn a_claim_applies_only_while_the_owner_it_saw_still_owns_the_session() {
    let mut s = ClusterState::default();
    // a new session: claimed by whoever saw no owner, first
    assert_eq!(
        s.apply(proposal(1, 1, claim_seen("c", 1, 0))).0,
        Outcome::Claimed(None)
    );
    let (late, changes) = s.apply(proposal(2, 1, claim_seen("c", 2, 0)));
    assert_eq!(late, Outcome::NotOwner(Some(1)));
    assert!(changes.is_empty(), "{changes:?}");
    // nodes 2 and 3 both took it over from 1: the first to commit has it,
    // the other's claim is refused and names the owner
    assert_eq!(
        s.apply(proposal(2, 2, claim_seen("c", 2, 1))).0,
        Outcome::Claimed(Some(1))
    );
    let (stale, changes) = s.apply(proposal(3, 1, claim_seen("c", 3, 1)));
    assert_eq!(stale, Outcome::NotOwner(Some(2)));
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(s.session("c").map(|x| x.owner), Some(2));
    // the owner claiming again (a reconnect to it) applies whatever it saw
    assert_eq!(
        s.apply(proposal(2, 3, claim_seen("c", 2, 1))).0,
        Outcome::Claimed(Some(2))
    );
    // released: a claim that saw an owner is refused, one that saw none applies
    s.apply(proposal(2, 4, release("c", 2)));
    assert_eq!(
        s.apply(proposal(3, 2, claim_seen("c", 3, 2))).0,
        Outcome::NotOwner(None)
    );
    assert_eq!(
        s.apply(proposal(3, 3, claim_seen("c", 3, 0))).0,
        Outcome::Claimed(None)
    );
    // an entry of an older node (no expected owner) still always applies
    assert_eq!(
        s.apply(proposal(1, 2, claim("c", 1))).0,
        Outcome::Claimed(Some(3))
    );
}
