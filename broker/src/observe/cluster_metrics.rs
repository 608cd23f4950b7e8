//! The cluster's families of `/metrics` (see `metrics.rs`): raft state,
//! peers, forward links, session replicas.

use std::sync::atomic::Ordering;

use prometheus::proto::MetricType;

use super::metrics::{histogram_sample, Families, PEER_DOWN_AFTER};

pub(super) fn cluster_families(f: &mut Families, s: &cluster::ClusterStatus) {
    f.gauge("tern_cluster_node_id", "This node's id.", s.node_id as f64);
    f.gauge("tern_cluster_term", "Current raft term.", s.term as f64);
    f.gauge(
        "tern_cluster_commit_index",
        "Highest raft log index known committed.",
        s.commit_index as f64,
    );
    f.gauge(
        "tern_cluster_applied_index",
        "Highest raft log index applied to the state machine.",
        s.applied_index as f64,
    );
    f.gauge(
        "tern_cluster_leader",
        "Id of the leader this node knows; 0: none.",
        s.leader.unwrap_or(0) as f64,
    );
    f.gauge(
        "tern_cluster_is_leader",
        "1 if this node is the raft leader.",
        f64::from(u8::from(s.leader == Some(s.node_id))),
    );
    f.gauge(
        "tern_cluster_ready",
        "1 if this node knows a leader and applied the log it knew committed.",
        f64::from(u8::from(s.ready)),
    );
    f.gauge(
        "tern_cluster_members",
        "Members of the cluster, this node included.",
        s.members.len() as f64,
    );
    let ids: Vec<String> = s.peers.iter().map(|p| p.id.to_string()).collect();
    let peers = || s.peers.iter().zip(ids.iter().map(String::as_str));
    f.gauges(
        "tern_cluster_peer_up",
        "1 if the peer was heard from in the last 3 seconds.",
        "peer",
        peers().map(|(p, id)| {
            let up = p.last_contact.is_some_and(|t| t <= PEER_DOWN_AFTER);
            (id, f64::from(u8::from(up)))
        }),
    );
    f.gauges(
        "tern_cluster_peer_last_contact_seconds",
        "Seconds since a message was last received from or delivered to the peer.",
        "peer",
        peers().filter_map(|(p, id)| Some((id, p.last_contact?.as_secs_f64()))),
    );
    f.gauges(
        "tern_cluster_peer_matched_index",
        "Highest log index known replicated on the peer (on the leader; else 0).",
        "peer",
        peers().map(|(p, id)| (id, p.matched as f64)),
    );
}

pub(super) fn forward_families(f: &mut Families, stats: &[cluster::ForwardStats]) {
    let ids: Vec<String> = stats.iter().map(|s| s.node.to_string()).collect();
    let links = || stats.iter().zip(ids.iter().map(String::as_str));
    f.counters(
        "tern_cluster_forwarded_total",
        "Messages forwarded to the peer (accepted on its link: sent, acked or waiting).",
        "peer",
        links().map(|(s, id)| (id, s.forwarded)),
    );
    f.gauges(
        "tern_cluster_forward_queued",
        "Messages waiting in the link to the peer beyond its unacknowledged window.",
        "peer",
        links().map(|(s, id)| (id, s.queued as f64)),
    );
    f.counters(
        "tern_cluster_forward_refused_total",
        "Messages for the peer dropped because its link's queue was at cluster.forward_queue_limit.",
        "peer",
        links().map(|(s, id)| (id, s.refused)),
    );
    let latencies = links()
        .map(|(s, id)| {
            histogram_sample(
                &[("peer", id)],
                &storage::LATENCY_SECONDS_BUCKETS,
                &s.latency.buckets,
                s.latency.nanos as f64 / 1e9,
            )
        })
        .collect();
    f.family(
        "tern_cluster_forward_duration_seconds",
        "From handing a message to the peer's link to the peer's answer (its copies stored), resends included.",
        MetricType::HISTOGRAM,
        latencies,
    );
}

pub(super) fn replica_families(f: &mut Families, s: &crate::nodes::ReplicaStats) {
    f.counter(
        "tern_session_replica_requests_total",
        "Requests to other nodes storing changes of this node's sessions in their replicas (stored).",
        s.requests.load(Ordering::Relaxed),
    );
    f.counter(
        "tern_session_replica_updates_total",
        "Session changes stored in replicas on other nodes.",
        s.updates.load(Ordering::Relaxed),
    );
    f.counter(
        "tern_session_replica_puts_skipped_total",
        "Copies not sent to a replica because the client completed them before their request left.",
        s.puts_skipped.load(Ordering::Relaxed),
    );
    f.counter(
        "tern_session_replica_failed_requests_total",
        "Replica requests that failed (node down, refused, timed out): their sessions place their replica elsewhere.",
        s.failed_requests.load(Ordering::Relaxed),
    );
    f.counter(
        "tern_session_fail_overs_total",
        "Sessions this node took over from a replica while their owner was unreachable.",
        s.fail_overs.load(Ordering::Relaxed),
    );
}
