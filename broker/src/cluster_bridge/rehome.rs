//! A node lost for good: which sessions of removed members this node takes
//! in (`crate::drain::rehome_orphans` does it), and which members the
//! leader removes under `cluster.remove_after_down_secs`.

use std::hash::BuildHasher;
use std::time::Duration;

use super::ClusterBridge;

impl ClusterBridge {
    /// Sessions owned by a node that is no longer a member of the cluster
    /// (removed with `tern cluster remove`) that this node is to take in
    /// (`drain::rehome_orphans`), with their owner and replicated record:
    /// each goes to the member with the highest hash of (client id, member
    /// id), the same pick on every node, so one node takes each (a double
    /// pick while views differ is settled by the conditional claim). Empty
    /// unless this node is ready, in contact with the cluster and a member.
    pub fn orphans_to_rehome(&self) -> Vec<(String, u64, cluster::SessionInfo)> {
        if !(self.cluster.status().ready && self.cluster.in_contact()) {
            return Vec::new();
        }
        let me = self.node_id;
        self.cluster.with_state(|s| {
            let members: Vec<u64> = s.members().map(|m| m.id).collect();
            if !members.contains(&me) {
                return Vec::new();
            }
            s.sessions()
                .iter()
                .filter(|(id, session)| {
                    !members.contains(&session.owner) && rehome_pick(id, &members) == Some(me)
                })
                .map(|(id, session)| (id.clone(), session.owner, session.info.clone()))
                .collect()
        })
    }

    /// Members out of contact for at least `after`, when this node leads
    /// the cluster (and is in contact with it): those it removes under
    /// `cluster.remove_after_down_secs`. A peer not heard from since this
    /// node started counts from the start.
    pub fn down_for(&self, after: Duration) -> Vec<u64> {
        let status = self.cluster.status();
        if status.role != "leader" || !self.cluster.in_contact() {
            return Vec::new();
        }
        let uptime = self.started.elapsed();
        status
            .peers
            .iter()
            .filter(|p| p.last_contact.unwrap_or(uptime) >= after)
            .map(|p| p.id)
            .collect()
    }
}

/// The member that takes in the session `client_id` of a removed node:
/// rendezvous hashing, so a change of members moves only the sessions of
/// the members that changed. The hash is fixed (not per process): every
/// node of one build computes the same pick.
pub(super) fn rehome_pick(client_id: &str, members: &[u64]) -> Option<u64> {
    let hasher = foldhash::fast::FixedState::with_seed(0x7465_726e_7265_686f);
    members
        .iter()
        .copied()
        .max_by_key(|m| hasher.hash_one((client_id, *m)))
}

#[cfg(test)]
mod tests {
    use super::rehome_pick;

    #[test]
    fn a_removed_nodes_sessions_spread_over_the_members_and_move_only_to_a_new_one() {
        let members = [1, 2, 4];
        let ids: Vec<String> = (0..3_000).map(|i| format!("client-{i}")).collect();
        let picks: Vec<u64> = ids
            .iter()
            .map(|id| rehome_pick(id, &members).unwrap())
            .collect();
        // the same pick every time (every node computes it)
        for (id, pick) in ids.iter().zip(&picks) {
            assert_eq!(rehome_pick(id, &[4, 1, 2]), Some(*pick));
        }
        // each member takes a share
        for m in members {
            let n = picks.iter().filter(|p| **p == m).count();
            assert!((700..1_300).contains(&n), "member {m}: {n} of 3000");
        }
        // a member joins: a session either stays or goes to it
        for (id, pick) in ids.iter().zip(&picks) {
            let now = rehome_pick(id, &[1, 2, 4, 5]).unwrap();
            assert!(now == *pick || now == 5, "{id}: {pick} -> {now}");
        }
        assert_eq!(rehome_pick("c", &[]), None);
    }
}
