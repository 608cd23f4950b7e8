//! The nemesis: which faults a run injects, in what order, on which nodes,
//! and how each is applied and healed.
//!
//! The schedule is a pure function of the seed and the options
//! ([`schedule`]); targets are drawn from the seed too, as an index into
//! the nodes sorted by id (the leader and a session's owner are looked up
//! when the fault starts, so they depend on the run).
//!
//! Partitions and packet loss are iptables rules in the run's network
//! namespace (INPUT on `lo`), matching a node's address and its proxy's as
//! destination and the other node's address as source; healing flushes
//! INPUT. Slow links and cut connections are the proxies' doing
//! ([`super::proxy`]); clocks are libfaketime's offset file; a full disk
//! is a file filling the node's tmpfs.

use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::nodes::{node_ip, proxy_ip};

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// SIGKILL a random node, restart it from its data dir.
    KillRandom,
    /// SIGKILL the leader, restart it.
    KillLeader,
    /// SIGKILL the node a persistent subscriber is connected to.
    KillOwner,
    /// SIGSTOP a node (the leader half the time) longer than an election
    /// timeout, then SIGCONT.
    Pause,
    /// One node cut off from the others both ways.
    PartitionIsolate,
    /// The nodes in two halves, the leader in the smaller one.
    PartitionSplit,
    /// Two sides that do not see each other and one node that sees both.
    PartitionBridge,
    /// The leader's packets to one follower dropped, not the other way.
    PartitionOneWay,
    /// 30 % of the packets between any two nodes dropped.
    Lossy,
    /// A node's incoming cluster links delayed (200 ms a chunk) and
    /// throttled (64 KiB/s).
    Slow,
    /// Every connection to a node's cluster endpoint cut every second.
    Cut,
    /// A node's wall clock 90 s behind.
    ClockSkew,
    /// A node's wall clock jumps 10 minutes ahead, then back.
    ClockJump,
    /// A node's data disk full.
    DiskFull,
    /// A node killed, its data lost, removed from the cluster, and replaced
    /// by a new node with a new id.
    Replace,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::KillRandom,
        Kind::KillLeader,
        Kind::KillOwner,
        Kind::Pause,
        Kind::PartitionIsolate,
        Kind::PartitionSplit,
        Kind::PartitionBridge,
        Kind::PartitionOneWay,
        Kind::Lossy,
        Kind::Slow,
        Kind::Cut,
        Kind::ClockSkew,
        Kind::ClockJump,
        Kind::DiskFull,
        Kind::Replace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::KillRandom => "kill-random",
            Kind::KillLeader => "kill-leader",
            Kind::KillOwner => "kill-owner",
            Kind::Pause => "pause",
            Kind::PartitionIsolate => "partition-isolate",
            Kind::PartitionSplit => "partition-split",
            Kind::PartitionBridge => "partition-bridge",
            Kind::PartitionOneWay => "partition-one-way",
            Kind::Lossy => "lossy",
            Kind::Slow => "slow",
            Kind::Cut => "cut",
            Kind::ClockSkew => "clock-skew",
            Kind::ClockJump => "clock-jump",
            Kind::DiskFull => "disk-full",
            Kind::Replace => "replace",
        }
    }

    /// The `--nemesis` group the kind belongs to.
    pub fn group(self) -> &'static str {
        match self {
            Kind::KillRandom | Kind::KillLeader | Kind::KillOwner => "kill",
            Kind::Pause => "pause",
            Kind::PartitionIsolate
            | Kind::PartitionSplit
            | Kind::PartitionBridge
            | Kind::PartitionOneWay => "partition",
            Kind::Lossy | Kind::Slow | Kind::Cut => "link",
            Kind::ClockSkew | Kind::ClockJump => "clock",
            Kind::DiskFull => "disk",
            Kind::Replace => "replace",
        }
    }
}

/// Parses `--nemesis`: comma-separated groups (`kill`, `pause`,
/// `partition`, `link`, `clock`, `disk`, `replace`), kind names, or `all`.
pub fn parse_kinds(list: &str) -> anyhow::Result<Vec<Kind>> {
    let mut kinds = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let matched: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| word == "all" || k.group() == word || k.name() == word)
            .collect();
        if matched.is_empty() {
            bail!("unknown nemesis `{word}`: groups are all, kill, pause, partition, link, clock, disk, replace");
        }
        for k in matched {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
    }
    Ok(kinds)
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown fault {s}"))
    }
}

/// One scheduled fault.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub kind: Kind,
    /// How long the fault lasts before it is healed.
    pub hold: Duration,
    /// Quiet time after recovery, before the next fault.
    pub gap: Duration,
    /// Draws for choosing targets.
    pub pick: u64,
}

/// The faults of a run. `quick`: every kind once, in a seeded order, each
/// held 5-7 s. Otherwise kinds drawn at random, held 5-15 s, until their
/// holds and gaps fill `time` (recovery waits come on top, so a run takes
/// somewhat longer than `time`).
pub fn schedule(seed: u64, kinds: &[Kind], quick: bool, time: Duration) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let mut plan = Vec::new();
    if kinds.is_empty() {
        return plan;
    }
    if quick {
        let mut order = kinds.to_vec();
        order.shuffle(&mut rng);
        for kind in order {
            plan.push(Planned {
                kind,
                hold: Duration::from_millis(rng.gen_range(5_000..7_000)),
                gap: Duration::from_millis(rng.gen_range(1_000..2_000)),
                pick: rng.gen(),
            });
        }
        return plan;
    }
    let mut used = Duration::ZERO;
    while used < time {
        let p = Planned {
            kind: kinds[rng.gen_range(0..kinds.len())],
            hold: Duration::from_millis(rng.gen_range(5_000..15_000)),
            gap: Duration::from_millis(rng.gen_range(2_000..8_000)),
            pick: rng.gen(),
        };
        used += p.hold + p.gap;
        plan.push(p);
    }
    plan
}

/// Runs `iptables` with `args`.
pub fn iptables(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .context("running iptables")?;
    if !out.status.success() {
        bail!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Drops packets from node `from` to node `to` (to its address and its
/// proxy's), with `probability` if given.
pub fn drop_link(from: u64, to: u64, probability: Option<f64>) -> anyhow::Result<()> {
    let src = node_ip(from).to_string();
    for dst in [node_ip(to).to_string(), proxy_ip(to).to_string()] {
        let mut args = vec!["-A", "INPUT", "-i", "lo", "-s", &src, "-d", &dst];
        let p;
        if let Some(prob) = probability {
            p = format!("{prob}");
            args.extend(["-m", "statistic", "--mode", "random", "--probability", &p]);
        }
        args.extend(["-j", "DROP"]);
        iptables(&args)?;
    }
    Ok(())
}

/// Cuts `a` and `b` apart both ways.
pub fn cut_both(a: u64, b: u64) -> anyhow::Result<()> {
    drop_link(a, b, None)?;
    drop_link(b, a, None)
}

/// Removes every rule.
pub fn heal_network() -> anyhow::Result<()> {
    iptables(&["-F", "INPUT"])
}

/// The node at `pick` among `ids` (sorted).
pub fn choose(ids: &[u64], pick: u64) -> u64 {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids[(pick % ids.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_a_function_of_the_seed() {
        let kinds = parse_kinds("all").unwrap();
        let a = schedule(7, &kinds, false, Duration::from_secs(300));
        let b = schedule(7, &kinds, false, Duration::from_secs(300));
        let c = schedule(8, &kinds, false, Duration::from_secs(300));
        let key = |p: &[Planned]| {
            p.iter()
                .map(|p| (p.kind, p.hold, p.pick))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
    }

    #[test]
    fn quick_schedule_has_every_kind_once() {
        let kinds = parse_kinds("all").unwrap();
        let plan = schedule(1, &kinds, true, Duration::ZERO);
        assert_eq!(plan.len(), Kind::ALL.len());
        for k in Kind::ALL {
            assert_eq!(plan.iter().filter(|p| p.kind == k).count(), 1, "{k:?}");
        }
    }

    #[test]
    fn nemesis_groups_parse() {
        assert_eq!(
            parse_kinds("partition,kill").unwrap().len(),
            7,
            "4 partitions and 3 kills"
        );
        assert_eq!(parse_kinds("pause").unwrap(), vec![Kind::Pause]);
        assert!(parse_kinds("flood").is_err());
    }
}
