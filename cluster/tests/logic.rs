//! Logic tests of the raft node over an in-process network (see
//! `common/network.rs`): elections, replication, partitions, compaction and
//! membership, with references to the Raft paper (Ongaro and Ousterhout,
//! "In Search of an Understandable Consensus Algorithm", extended version).
//! Every wait is bounded in ticks.

#[path = "common/network.rs"]
mod network;

use cluster::{
    node::{MemberChange, NodeConfig},
    state::Outcome,
};
use network::*;
use raft::Storage;

#[test]
fn three_nodes_elect_one_leader() {
    // Reference: section 5.2
    let mut net = Network::new(&[1, 2, 3], test_config);
    let leader = net.wait_for_leader(200);
    let term = net.node(leader).status().term;
    for id in net.followers() {
        let status = net.node(id).status();
        assert_eq!(status.leader, Some(leader));
        assert_eq!(status.term, term, "one leader per term");
    }
    assert!(net.run_until(50, |net| net.nodes.values().all(|n| n.became_ready)));
}

#[test]
fn a_followers_proposal_is_forwarded_and_applied_everywhere() {
    // Reference: section 5.3 (log replication); a follower redirects
    // proposals to the leader (section 8, done by raft-rs's MsgPropose).
    let mut net = Network::new(&[1, 2, 3], test_config);
    net.wait_for_leader(200);
    let follower = net.followers()[0];
    let mut rx = net.propose(follower, add_route("a/#", follower));
    assert_eq!(net.wait_outcome(&mut rx, 100), Outcome::Done);
    // The proposer sees its own write when the outcome arrives.
    assert!(net.node(follower).state().read().has_route("a/#", follower));
    assert!(net.run_until(50, |net| {
        [1, 2, 3]
            .iter()
            .all(|id| net.node(*id).state().read().has_route("a/#", follower))
    }));
}

#[test]
fn proposals_commit_over_lossy_links() {
    // Reference: section 5.3 (the leader retries AppendEntries until every
    // follower stores the entries); lost proposals are proposed again.
    let mut net = Network::new(&[1, 2, 3], test_config);
    net.wait_for_leader(200);
    for a in 1..=3 {
        for b in 1..=3 {
            if a != b {
                net.drop(a, b, 0.3);
            }
        }
    }
    let mut receivers: Vec<_> = (0..20)
        .map(|i| {
            let proposer = 1 + i % 3;
            net.propose(proposer, add_route(&format!("lossy/{i}"), proposer))
        })
        .collect();
    for rx in &mut receivers {
        assert_eq!(net.wait_outcome(rx, 2000), Outcome::Done);
    }
    net.recover();
    assert!(net.run_until(200, |net| {
        (1..=3).all(|id| net.node(id).state().read().routes().len() == 20)
    }));
}

#[test]
fn many_proposals_are_batched_into_few_entries() {
    let mut net = Network::new(&[1, 2, 3], test_config);
    let leader = net.wait_for_leader(200);
    let before = net.node(leader).storage().last_index().unwrap();
    let mut receivers: Vec<_> = (0..200)
        .map(|i| net.propose(leader, add_route(&format!("t/{i}"), leader)))
        .collect();
    for rx in &mut receivers {
        net.wait_outcome(rx, 100);
    }
    let entries = net.node(leader).storage().last_index().unwrap() - before;
    assert!(entries < 10, "200 proposals took {entries} entries");
}

#[test]
fn after_leader_loss_a_new_leader_is_elected_and_the_old_one_follows() {
    // Reference: section 5.2 (a follower that hears from no leader starts an
    // election) and 5.1 (a stale leader steps down on a higher term).
    let mut net = Network::new(&[1, 2, 3], test_config);
    let old = net.wait_for_leader(200);
    let old_term = net.node(old).status().term;
    net.isolate(old);
    assert!(net.run_until(300, |net| net.leader().is_some_and(|l| l != old)));
    let new = net.leader().unwrap();
    assert!(net.node(new).status().term > old_term);
    let mut rx = net.propose(new, add_route("after", new));
    net.wait_outcome(&mut rx, 100);

    net.recover();
    assert!(net.run_until(200, |net| {
        let s = net.node(old).status();
        s.role == "follower"
            && s.leader == Some(new)
            && net.node(old).state().read().has_route("after", new)
    }));
}

#[test]
fn a_cut_off_leader_is_no_longer_confirmed_while_the_new_one_is() {
    // A leader that hears nothing (isolated, or paused) may still believe
    // it leads; `confirmed_at` is when a majority last answered it, so the
    // broker can tell its view is old (chaos seed 5).
    let mut net = Network::new(&[1, 2, 3], test_config);
    let old = net.wait_for_leader(200);
    assert!(net.run_until(50, |net| net.node(old).status().confirmed_at.is_some()));
    let mut rx = net.propose(old, add_route("before", old));
    net.wait_outcome(&mut rx, 100);
    let before = net.node(old).status().confirmed_at.unwrap();
    net.isolate(old);
    assert!(net.run_until(300, |net| net.leader().is_some_and(|l| l != old)));
    let new = net.leader().unwrap();
    assert!(net.run_until(50, |net| net
        .node(new)
        .status()
        .confirmed_at
        .is_some_and(|t| t > before)));
    let stale = net.node(old).status().confirmed_at;
    assert!(
        stale.is_none_or(|t| t <= before),
        "nothing confirmed the cut-off leader since"
    );
    net.recover();
    assert!(net.run_until(200, |net| {
        let s = net.node(old).status();
        s.leader == Some(new) && s.confirmed_at.is_some_and(|t| t > before)
    }));
}

#[test]
fn a_minority_partition_cannot_commit_and_its_proposal_applies_once_healed() {
    // Reference: section 5.3 (an entry is committed once stored on a
    // majority) and 5.4.2.
    let mut net = Network::new(&[1, 2, 3, 4, 5], test_config);
    let leader = net.wait_for_leader(200);
    let minority: Vec<u64> = net.followers().into_iter().take(2).collect();
    for &m in &minority {
        for other in [1, 2, 3, 4, 5] {
            if !minority.contains(&other) {
                net.cut(m, other);
            }
        }
    }
    let mut rx = net.propose(minority[0], add_route("minority", minority[0]));
    assert!(
        !net.run_until(300, |_| rx.try_recv().is_ok()),
        "a minority must not commit"
    );
    assert!(!net
        .node(leader)
        .state()
        .read()
        .has_route("minority", minority[0]));
    // The majority side keeps committing.
    let mut rx_majority = net.propose(leader, add_route("majority", leader));
    net.wait_outcome(&mut rx_majority, 100);

    net.recover();
    let outcome = net.wait_outcome(&mut rx, 300);
    assert_eq!(outcome, Outcome::Done);
    assert!(net.run_until(100, |net| {
        (1..=5).all(|id| {
            net.node(id)
                .state()
                .read()
                .has_route("minority", minority[0])
        })
    }));
}

fn compacting_config(id: u64) -> NodeConfig {
    NodeConfig {
        snapshot_threshold: 20,
        log_keep: 0,
        ..test_config(id)
    }
}

#[test]
fn a_lagging_follower_catches_up_from_a_snapshot_after_compaction() {
    // Reference: section 7 (log compaction; InstallSnapshot to a follower
    // that lags behind the leader's log).
    let mut net = Network::new(&[1, 2, 3], compacting_config);
    let leader = net.wait_for_leader(200);
    let lagging = net.followers()[0];
    net.isolate(lagging);
    let lag_last = net.node(lagging).storage().last_index().unwrap();
    for i in 0..100 {
        let mut rx = net.propose(leader, add_route(&format!("c/{i}"), leader));
        net.wait_outcome(&mut rx, 100);
    }
    let first = net.node(leader).storage().first_index().unwrap();
    assert!(
        first > lag_last + 1,
        "leader compacted past the follower: {first} > {lag_last}"
    );

    net.recover();
    assert!(net.run_until(300, |net| {
        *net.node(lagging).state().read() == *net.node(leader).state().read()
    }));
    let snapshot = net.node(lagging).storage().snapshot_metadata();
    assert!(snapshot.index >= first - 1, "caught up from a snapshot");
    // Its changes were reported from the snapshot's diff.
    assert!(net.nodes[&lagging].changes.len() >= 100);
}

#[test]
fn a_restarted_node_replays_its_log_without_reporting_it() {
    let mut net = Network::new(&[1, 2, 3], compacting_config);
    let leader = net.wait_for_leader(200);
    let follower = net.followers()[0];
    for i in 0..30 {
        let mut rx = net.propose(leader, add_route(&format!("r/{i}"), leader));
        net.wait_outcome(&mut rx, 100);
    }
    assert!(
        net.run_until(50, |net| net.node(follower).status().applied_index
            == net.node(leader).status().applied_index)
    );
    let before = net.node(follower).state().read().clone();
    net.stop(follower);
    net.restart(follower);
    net.nodes.get_mut(&follower).unwrap().changes.clear();
    net.deliver();
    assert_eq!(*net.node(follower).state().read(), before);
    assert!(
        net.nodes[&follower].changes.is_empty(),
        "replay is not reported"
    );
    let mut rx = net.propose(follower, add_route("later", follower));
    net.wait_outcome(&mut rx, 200);
    assert_eq!(net.nodes[&follower].changes.len(), 1);
}

#[test]
fn a_node_is_added_and_another_removed_by_configuration_changes() {
    // Reference: section 6 (cluster membership changes), one server at a
    // time as in the Raft thesis 4.1.
    let mut net = Network::new(&[1, 2, 3], test_config);
    let leader = net.wait_for_leader(200);
    for i in 0..5 {
        let mut rx = net.propose(leader, add_route(&format!("m/{i}"), leader));
        net.wait_outcome(&mut rx, 100);
    }
    net.add(4, None);
    assert!(!net.node(4).status().initialized);
    let follower = net.followers()[0];
    let mut rx = net.propose_member_change(follower, MemberChange::Add(member(4)));
    assert_eq!(net.wait_outcome(&mut rx, 200), Outcome::Done);
    assert!(net.run_until(200, |net| {
        *net.node(4).state().read() == *net.node(leader).state().read()
    }));
    assert_eq!(net.node(4).status().voters, [1, 2, 3, 4]);
    let member4 = net.node(leader).state().read().member(4).cloned();
    assert_eq!(member4, Some(member(4)));

    // Remove a follower other than the proposer.
    let removed = *net.followers().iter().find(|id| **id != 4).unwrap();
    let mut rx = net.propose_member_change(4, MemberChange::Remove(removed));
    assert_eq!(net.wait_outcome(&mut rx, 200), Outcome::Done);
    assert!(net.run_until(100, |net| net.nodes[&removed].removed));
    assert!(net.node(leader).state().read().member(removed).is_none());
    let mut rx = net.propose(removed, add_route("x", removed));
    assert!(matches!(rx.try_recv(), Ok(Err(cluster::Error::Removed))));
}

#[test]
fn removing_the_leader_hands_leadership_over_first() {
    // Reference: section 6 (a leader that is not in the new configuration
    // steps down); the Raft thesis 3.10 describes leadership transfer.
    let mut net = Network::new(&[1, 2, 3], test_config);
    let leader = net.wait_for_leader(200);
    let mut rx = net.propose_member_change(leader, MemberChange::Remove(leader));
    assert_eq!(net.wait_outcome_from_others(&mut rx, 400), None);
    let new = net.wait_for_leader(300);
    assert_ne!(new, leader);
    assert!(net.run_until(100, |net| net.node(new).status().voters.len() == 2));
    let mut rx = net.propose(new, add_route("after", new));
    net.wait_outcome(&mut rx, 200);
}

#[test]
fn a_follower_removing_the_leader_gets_leadership_moved_first() {
    // Reference: section 6; the Raft thesis 3.10 (leadership transfer).
    let mut net = Network::new(&[1, 2, 3], test_config);
    let leader = net.wait_for_leader(200);
    let follower = net.followers()[0];
    let mut rx = net.propose_member_change(follower, MemberChange::Remove(leader));
    assert_eq!(net.wait_outcome(&mut rx, 400), Outcome::Done);
    assert!(net.run_until(100, |net| net.nodes[&leader].removed));
    let new = net.wait_for_leader(300);
    assert_ne!(new, leader);
    let mut rx = net.propose(new, add_route("after", new));
    net.wait_outcome(&mut rx, 200);
}

trait OutcomeOrRemoved {
    fn wait_outcome_from_others(
        &mut self,
        rx: &mut tokio::sync::oneshot::Receiver<cluster::Result<Outcome>>,
        max_ticks: usize,
    ) -> Option<Outcome>;
}

impl OutcomeOrRemoved for Network {
    /// For a node proposing its own removal: it sees the change applied
    /// (`Done`) or learns it was removed first (`Removed`); both mean done.
    fn wait_outcome_from_others(
        &mut self,
        rx: &mut tokio::sync::oneshot::Receiver<cluster::Result<Outcome>>,
        max_ticks: usize,
    ) -> Option<Outcome> {
        let mut result = None;
        let done = self.run_until(max_ticks, |_| match rx.try_recv() {
            Ok(r) => {
                result = Some(r);
                true
            }
            Err(_) => false,
        });
        assert!(done, "removal not applied within {max_ticks} ticks");
        match result.unwrap() {
            Ok(Outcome::Done) | Err(cluster::Error::Removed) => None,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
}
