//! `[cluster]`: this node's membership, and its id from a StatefulSet pod's
//! host name (`--node-id-from-hostname`).

use super::*;

/// Cluster membership of this node. With `node_id` 0 (the default) the node
/// runs alone, with no cluster at all.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// This node's id, unique in the cluster and never reused; 0: no cluster.
    pub node_id: u64,
    /// Take the node id from the host name instead: a StatefulSet pod
    /// `tern-N` (ordinal N) is node N+1 (ids start at 1). Applied by
    /// [`Config::derive_node_id`]; `node_id` must then be 0.
    pub node_id_from_hostname: bool,
    /// Address of the cluster's gRPC endpoint.
    pub listen: SocketAddr,
    /// host:port the other nodes use to reach `listen`; empty: the bound address.
    pub advertise: String,
    /// host:port of this node's MQTT listener as clients of other nodes reach it.
    pub mqtt_advertise: String,
    /// Nodes to contact at first start: `id=host:port` or `host:port`
    /// (e.g. a StatefulSet's `tern-0.tern-headless:7000`). Empty: a cluster
    /// of one.
    pub seeds: Vec<String>,
    /// Raft's clock tick, in milliseconds.
    pub tick_ms: u64,
    /// Ticks without a leader before an election (randomized up to twice).
    pub election_ticks: usize,
    /// How long a publisher's acknowledgement waits for another node that is
    /// up to store its copies, in seconds.
    pub forward_timeout_secs: u64,
    /// Most messages waiting per other node beyond the 10,000 unacknowledged
    /// (while it is slow or down); copies past it are dropped.
    pub forward_queue_limit: usize,
    /// On SIGTERM, how long the node may spend draining (sending clients
    /// to other nodes, handing its sessions over, leaving leadership)
    /// before it stops anyway, in seconds; keep it under the pod's
    /// `terminationGracePeriodSeconds`. 0: no drain (clients get 0x8B and
    /// sessions stay here).
    pub drain_timeout_secs: u64,
    /// Removes a member from the cluster once it has been out of contact
    /// this long, in seconds (the leader does, as `tern cluster remove`
    /// would); its sessions are then taken in by the other nodes. 0 (the
    /// default): never, an operator removes nodes. Keep it well above the
    /// longest planned outage (a restart, an upgrade): a removed node
    /// cannot come back under its id.
    pub remove_after_down_secs: u64,
    /// Copies of each persistent session's queued and in-flight messages
    /// and received QoS 2 ids, the owner's included: 2 (the default) keeps
    /// a replica on one other node, written and fsynced before a publisher
    /// is answered, so a client whose node is lost gets its messages from
    /// there; 1 keeps them on the owner only. A node alone keeps one.
    pub session_replicas: usize,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            node_id: 0,
            node_id_from_hostname: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 7000)),
            advertise: String::new(),
            mqtt_advertise: String::new(),
            seeds: Vec::new(),
            tick_ms: 100,
            election_ticks: 10,
            forward_timeout_secs: 10,
            forward_queue_limit: 100_000,
            drain_timeout_secs: 40,
            remove_after_down_secs: 0,
            session_replicas: 2,
        }
    }
}

/// The node id of a StatefulSet pod: its host name is `<name>-<ordinal>`
/// (`tern-2`), and ids start at 1 because 0 means "no cluster", so `tern-2`
/// is node 3. Only the first label of a dotted name counts
/// (`tern-2.tern-headless` is node 3 too).
pub fn node_id_from_hostname(hostname: &str) -> Result<u64, ConfigError> {
    let fail = |reason: &str| ConfigError::Hostname {
        hostname: hostname.to_owned(),
        reason: reason.to_owned(),
    };
    let label = hostname.trim().split('.').next().unwrap_or_default();
    let ordinal = match label.rsplit_once('-') {
        Some((name, n)) if !name.is_empty() && !n.is_empty() => n,
        _ => return Err(fail("has no trailing `-N`")),
    };
    if !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail("does not end in `-` and a number"));
    }
    ordinal
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| fail("ends in an ordinal too large for a node id"))
}

/// This machine's host name (a pod's is its name), from the kernel.
pub fn system_hostname() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_owned())
}
