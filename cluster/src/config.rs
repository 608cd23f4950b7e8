//! `ClusterConfig` and seeds.

use std::{net::IpAddr, net::SocketAddr, str::FromStr, time::Duration};

use crate::error::{Error, Result};

/// A node to contact at start: `id=host:port`, or `host:port` alone (a
/// StatefulSet's `tern-0.tern-headless:7000`), whose id is learned by asking
/// it. Host names are resolved at every connection attempt, and retried.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Seed {
    /// Its node id, if configured.
    pub id: Option<u64>,
    /// host:port of its cluster gRPC endpoint.
    pub address: String,
}

impl FromStr for Seed {
    type Err = Error;

    fn from_str(s: &str) -> Result<Seed> {
        let (id, address) = match s.split_once('=') {
            Some((id, address)) => {
                let id = id
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|id| *id != 0)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "seed `{s}`: node id `{id}` is not a number above 0"
                        ))
                    })?;
                (Some(id), address.trim())
            }
            None => (None, s.trim()),
        };
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(Seed {
                id,
                address: address.to_owned(),
            }),
            _ => Err(Error::Config(format!(
                "seed `{s}`: expected `host:port` or `id=host:port`"
            ))),
        }
    }
}

/// How to run this node. [`ClusterConfig::new`] gives working defaults.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Raft node id: unique in the cluster, never 0, never reused after a
    /// node is removed.
    pub node_id: u64,
    /// Where the cluster gRPC server listens.
    pub listen: SocketAddr,
    /// host:port other nodes use to reach `listen`; empty: the bound address.
    pub advertise: String,
    /// host:port of this node's MQTT listener, published to the others.
    pub mqtt_advertise: String,
    /// Nodes to contact at first start. Empty, or only this node: a cluster
    /// of one, bootstrapped at once. Ignored once the data directory holds
    /// raft state.
    pub seeds: Vec<Seed>,
    /// Raft's clock.
    pub tick: Duration,
    /// Ticks without a leader before an election (randomized up to twice).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// How long a proposal may take to be applied on this node before the
    /// call fails with `Error::Timeout`.
    pub proposal_timeout: Duration,
    /// Timeout of one gRPC call to a peer (connect included).
    pub rpc_timeout: Duration,
    /// How long a takeover request waits for the local broker's answer.
    pub takeover_timeout: Duration,
    /// Entries applied between two snapshots of the state machine.
    pub snapshot_threshold: u64,
    /// Entries kept in the log before the snapshot.
    pub log_keep: u64,
    /// Source address of outgoing connections (so that firewall rules can
    /// tell nodes on one host apart); `None`: the listen IP unless it is
    /// unspecified (0.0.0.0).
    pub bind_outgoing: Option<IpAddr>,
    /// Most messages in one forwarding frame.
    pub forward_batch: usize,
    /// Most forwarded messages not yet acked per peer; `forward` waits for
    /// room beyond it.
    pub forward_window: usize,
    /// Most forwarded messages waiting per peer beyond `forward_window`
    /// (while the peer is slow or down); past it `forward` fails at once
    /// with `Error::Backlog` instead of holding more in memory.
    pub forward_queue_limit: usize,
    /// Pause between two rounds of contacting the seeds while joining.
    pub join_retry: Duration,
}

impl ClusterConfig {
    /// Defaults: 100 ms ticks, elections after 1 to 2 s, heartbeats every
    /// 200 ms, 10 s proposal timeout.
    pub fn new(node_id: u64, listen: SocketAddr) -> ClusterConfig {
        ClusterConfig {
            node_id,
            listen,
            advertise: String::new(),
            mqtt_advertise: String::new(),
            seeds: Vec::new(),
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            proposal_timeout: Duration::from_secs(10),
            rpc_timeout: Duration::from_secs(5),
            takeover_timeout: Duration::from_secs(10),
            snapshot_threshold: 10_000,
            log_keep: 1_000,
            bind_outgoing: None,
            forward_batch: 256,
            forward_window: 10_000,
            forward_queue_limit: 100_000,
            join_retry: Duration::from_millis(500),
        }
    }

    /// Parses seeds from a comma-separated list.
    pub fn parse_seeds(list: &str) -> Result<Vec<Seed>> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }

    /// Refuses a configuration that cannot work.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.node_id == 0 {
            return Err(Error::Config("node_id must not be 0".into()));
        }
        if self.tick.is_zero() {
            return Err(Error::Config("tick must be above 0".into()));
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return Err(Error::Config(format!(
                "election_ticks ({}) must exceed heartbeat_ticks ({}), which must be above 0",
                self.election_ticks, self.heartbeat_ticks
            )));
        }
        let mut ids = std::collections::HashSet::new();
        for seed in &self.seeds {
            if let Some(id) = seed.id {
                if !ids.insert(id) {
                    return Err(Error::Config(format!("seed id {id} appears twice")));
                }
            }
        }
        Ok(())
    }

    /// Only this node among the seeds (or none): a cluster of one.
    pub(crate) fn is_single_node(&self) -> bool {
        self.seeds.iter().all(|s| s.id == Some(self.node_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_with_and_without_ids() {
        let seeds =
            ClusterConfig::parse_seeds("1=10.0.0.1:7000, tern-1.tern-headless:7000,3=[::1]:7000")
                .unwrap();
        assert_eq!(
            seeds,
            [
                Seed {
                    id: Some(1),
                    address: "10.0.0.1:7000".into()
                },
                Seed {
                    id: None,
                    address: "tern-1.tern-headless:7000".into()
                },
                Seed {
                    id: Some(3),
                    address: "[::1]:7000".into()
                },
            ]
        );
    }

    #[test]
    fn bad_seeds_are_refused_naming_the_seed() {
        for bad in ["0=a:1", "x=a:1", "a", "a:port", ":7000", "1=a:70000"] {
            let err = bad.parse::<Seed>().unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn validation() {
        let listen = "127.0.0.1:0".parse().unwrap();
        assert!(ClusterConfig::new(0, listen).validate().is_err());
        let mut c = ClusterConfig::new(1, listen);
        assert!(c.validate().is_ok());
        assert!(c.is_single_node());
        c.seeds = ClusterConfig::parse_seeds("1=a:1,1=b:1").unwrap();
        assert!(c.validate().is_err());
        c.seeds = ClusterConfig::parse_seeds("1=a:1,2=b:1").unwrap();
        assert!(!c.is_single_node());
    }
}
