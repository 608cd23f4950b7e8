//! A Jepsen-style chaos suite: a real Tern cluster (one `tern` process per
//! node), a workload over real MQTT connections, a nemesis that injects
//! real faults, and a checker over the recorded history.
//!
//! The run needs root and a private network and mount namespace of its own
//! (`chaos-tests/run.sh` starts `tern-chaos` under `unshare --net
//! --mount`): it adds iptables rules to the namespace's loopback and mounts
//! a tmpfs per node.
//!
//! Lifecycle of a run ([`run`]):
//! 1. start the nodes, wait until they agree on a leader;
//! 2. start the workload ([`workload`]);
//! 3. for each fault of the schedule ([`nemesis::schedule`]): apply it,
//!    hold it, heal it, wait (bounded) until the cluster recovered, pause;
//! 4. heal everything, restart what is down, wait for the final recovery,
//!    publish a few more seconds, stop the publishers;
//! 5. the subscribers' final drain, the final retained reads on every node;
//! 6. stop the nodes with SIGTERM; check ([`checker`]); write the report.

pub mod checker;
pub mod history;
pub mod nemesis;
pub mod nodes;
pub mod proxy;
pub mod report;
pub mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

use history::{Event, History};
use nemesis::{choose, Kind, Planned};
use nodes::Nodes;
use workload::{Targets, Workload, WorkloadSpec};

/// A run's options.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub tern: PathBuf,
    pub nodes: u64,
    pub seed: u64,
    pub quick: bool,
    /// Fault time of a long run (holds and gaps).
    pub time_secs: u64,
    pub nemesis: Vec<Kind>,
    pub publishers: u32,
    pub rate: f64,
    pub subscribers: u32,
    pub shared: u32,
    pub retained_writers: u32,
    /// Bound on every recovery.
    pub recovery_secs: u64,
    pub out: PathBuf,
}

/// Result of a run: the verdicts.
pub struct Outcome {
    pub verdicts: Vec<checker::Verdict>,
}

struct Runner {
    opts: Options,
    nodes: Nodes,
    history: History,
    targets: Targets,
    workload: Option<Workload>,
    next_id: u64,
}

impl Runner {
    fn publish_targets(&self) {
        self.targets.set(
            self.nodes
                .nodes
                .iter()
                .map(|n| (n.id, n.mqtt(), n.up()))
                .collect(),
        );
    }

    /// Sleeps `d`, watching the processes.
    async fn hold(&mut self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.nodes.poll();
            self.publish_targets();
            tokio::time::sleep(Duration::from_millis(200).min(end - Instant::now())).await;
        }
    }

    fn seeds(&self) -> Vec<String> {
        self.nodes
            .ids()
            .into_iter()
            .map(|id| format!("{id}={}:7000", nodes::proxy_ip(id)))
            .collect()
    }

    /// Starts every defined node that is not running.
    fn restart_down(&mut self) -> anyhow::Result<()> {
        let seeds = self.seeds();
        for id in self.nodes.ids() {
            if !self.nodes.get(id).running() {
                self.nodes.start(id, &seeds)?;
            }
        }
        self.publish_targets();
        Ok(())
    }

    async fn recover(&mut self, after: &str) {
        let took = self
            .nodes
            .wait_converged(Duration::from_secs(self.opts.recovery_secs))
            .await;
        self.history.record(Event::Recovered {
            after: after.to_owned(),
            ms: took.map(|d| d.as_millis() as u64),
        });
        self.publish_targets();
        let _ = self.nodes.leader().await;
    }

    /// Applies, holds and heals one fault.
    async fn inject(&mut self, p: &Planned) -> anyhow::Result<()> {
        let up = self.nodes.up_ids();
        if up.is_empty() {
            bail!("no node is up");
        }
        let random = choose(&up, p.pick);
        let other = |x: u64| -> Vec<u64> { up.iter().copied().filter(|&n| n != x).collect() };
        let leader = self.nodes.leader().await.unwrap_or(random);
        let start = |h: &History, detail: String, nodes: Vec<u64>| {
            h.record(Event::Fault {
                kind: p.kind.name().to_owned(),
                detail,
                nodes,
                end_ms: None,
            })
        };
        match p.kind {
            Kind::KillRandom | Kind::KillLeader | Kind::KillOwner => {
                let (target, why) = match p.kind {
                    Kind::KillRandom => (random, "random node".to_owned()),
                    Kind::KillLeader => (leader, "the leader".to_owned()),
                    _ => match self.workload.as_ref().and_then(|w| w.owner_of(p.pick)) {
                        Some(owner) if up.contains(&owner) => {
                            (owner, "a persistent session's node".to_owned())
                        }
                        _ => (random, "random node (no session owner known)".to_owned()),
                    },
                };
                let f = start(
                    &self.history,
                    format!("SIGKILL {why}, restart after {:?}", p.hold),
                    vec![target],
                );
                self.nodes.kill(target);
                self.publish_targets();
                self.hold(p.hold).await;
                self.restart_down()?;
                self.history.end_fault(f);
            }
            Kind::Pause => {
                let target = if p.pick.is_multiple_of(2) {
                    leader
                } else {
                    random
                };
                let f = start(
                    &self.history,
                    format!("SIGSTOP for {:?}", p.hold),
                    vec![target],
                );
                self.nodes.pause(target);
                self.publish_targets();
                self.hold(p.hold).await;
                self.nodes.resume(target);
                self.history.end_fault(f);
            }
            Kind::PartitionIsolate
            | Kind::PartitionSplit
            | Kind::PartitionBridge
            | Kind::PartitionOneWay => {
                let all = self.nodes.ids();
                let (detail, nodes) = match p.kind {
                    Kind::PartitionIsolate => {
                        for o in other(random) {
                            nemesis::cut_both(random, o)?;
                        }
                        (format!("node {random} isolated"), vec![random])
                    }
                    Kind::PartitionSplit => {
                        // the leader and (n-1)/2 - 1 others on the minority side
                        let minority_size = (all.len() - 1) / 2;
                        let mut rest: Vec<u64> =
                            all.iter().copied().filter(|&n| n != leader).collect();
                        let rot = (p.pick % rest.len().max(1) as u64) as usize;
                        rest.rotate_left(rot);
                        let mut minority = vec![leader];
                        minority.extend(rest.iter().take(minority_size.saturating_sub(1)));
                        let majority: Vec<u64> = all
                            .iter()
                            .copied()
                            .filter(|n| !minority.contains(n))
                            .collect();
                        for &a in &minority {
                            for &b in &majority {
                                nemesis::cut_both(a, b)?;
                            }
                        }
                        (
                            format!(
                                "minority {minority:?} (with the leader) | majority {majority:?}"
                            ),
                            minority,
                        )
                    }
                    Kind::PartitionBridge => {
                        let bridge = random;
                        let rest = other(bridge);
                        let (a, b) = rest.split_at(rest.len() / 2);
                        for &x in a {
                            for &y in b {
                                nemesis::cut_both(x, y)?;
                            }
                        }
                        (
                            format!("{a:?} | {b:?}, node {bridge} sees both"),
                            vec![bridge],
                        )
                    }
                    _ => {
                        let follower = other(leader);
                        let to = choose(&follower, p.pick);
                        nemesis::drop_link(leader, to, None)?;
                        (
                            format!(
                                "packets from the leader {leader} to node {to} dropped, not back"
                            ),
                            vec![leader, to],
                        )
                    }
                };
                let f = start(&self.history, detail, nodes);
                self.hold(p.hold).await;
                nemesis::heal_network()?;
                self.history.end_fault(f);
            }
            Kind::Lossy => {
                let all = self.nodes.ids();
                for &a in &all {
                    for &b in &all {
                        if a != b {
                            nemesis::drop_link(a, b, Some(0.3))?;
                        }
                    }
                }
                let f = start(
                    &self.history,
                    "30% of packets between nodes dropped".into(),
                    all,
                );
                self.hold(p.hold).await;
                nemesis::heal_network()?;
                self.history.end_fault(f);
            }
            Kind::Slow => {
                let target = if p.pick.is_multiple_of(2) {
                    leader
                } else {
                    random
                };
                let f = start(
                    &self.history,
                    "links into the node: 200 ms per chunk, 64 KiB/s".into(),
                    vec![target],
                );
                let proxy = &self.nodes.get(target).proxy;
                proxy.set_delay(Duration::from_millis(200));
                proxy.set_rate(64 * 1024);
                self.hold(p.hold).await;
                self.nodes.get(target).proxy.heal();
                self.history.end_fault(f);
            }
            Kind::Cut => {
                let f = start(
                    &self.history,
                    "every connection into the node cut each second".into(),
                    vec![random],
                );
                let end = Instant::now() + p.hold;
                while Instant::now() < end {
                    self.nodes.get(random).proxy.cut();
                    self.hold(Duration::from_secs(1)).await;
                }
                self.history.end_fault(f);
            }
            Kind::ClockSkew | Kind::ClockJump => {
                let offset = if p.kind == Kind::ClockSkew {
                    "-90"
                } else {
                    "+600"
                };
                let f = start(
                    &self.history,
                    format!("wall clock {offset} s, then back"),
                    vec![random],
                );
                self.nodes.set_clock(random, offset)?;
                self.hold(p.hold).await;
                self.nodes.set_clock(random, "+0")?;
                self.history.end_fault(f);
            }
            Kind::DiskFull => {
                let dir = self.nodes.data_mount(random);
                let f = start(&self.history, "data tmpfs filled".into(), vec![random]);
                self.nodes.get(random).exit_expected = true;
                let filled = nodes::fill_disk(&dir).context("filling the disk")?;
                tracing_line(&format!("disk of node {random}: {filled} bytes of filler"));
                self.hold(p.hold).await;
                nodes::free_disk(&dir);
                self.nodes.poll();
                self.nodes.get(random).exit_expected = false;
                self.restart_down()?;
                self.history.end_fault(f);
            }
            Kind::Replace => {
                let new = self.next_id;
                self.next_id += 1;
                let f = start(
                    &self.history,
                    format!("node {random} loses its data, removed, replaced by node {new}"),
                    vec![random, new],
                );
                self.nodes.wipe(random)?;
                self.publish_targets();
                self.nodes.remove_member(random).await?;
                self.nodes.define(new).await?;
                let seeds = self.seeds();
                self.nodes.start(new, &seeds)?;
                self.publish_targets();
                self.hold(p.hold).await;
                self.history.end_fault(f);
            }
        }
        self.publish_targets();
        Ok(())
    }
}

fn tracing_line(s: &str) {
    println!("  {s}");
}

/// Runs the whole thing; the verdicts and the report in `opts.out`.
pub async fn run(opts: Options) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let history = History::new();
    let root = std::env::temp_dir().join(format!("tern-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let _ = std::fs::remove_dir_all(&opts.out);
    let nodes = Nodes::new(
        opts.tern.clone(),
        root.clone(),
        opts.out.clone(),
        opts.nodes,
        history.clone(),
    )
    .await?;
    let mut runner = Runner {
        next_id: opts.nodes + 1,
        opts: opts.clone(),
        nodes,
        history: history.clone(),
        targets: Targets::default(),
        workload: None,
    };
    let result = drive(&mut runner).await;
    runner.nodes.teardown();
    let _ = nemesis::heal_network();
    let _ = std::fs::remove_dir_all(&root);
    result?;
    let events = history.snapshot();
    let verdicts = checker::check(&events);
    let options = serde_json::to_value(&opts)?;
    report::write(&opts.out, &options, &events, &verdicts)?;
    println!(
        "run took {:.0} s, {} events; history and report in {}",
        started.elapsed().as_secs_f64(),
        events.len(),
        opts.out.display()
    );
    Ok(Outcome { verdicts })
}

async fn drive(r: &mut Runner) -> anyhow::Result<()> {
    let seeds = r.seeds();
    for id in r.nodes.ids() {
        r.nodes.start(id, &seeds)?;
    }
    r.publish_targets();
    if r.nodes
        .wait_converged(Duration::from_secs(60))
        .await
        .is_none()
    {
        bail!(
            "the cluster did not form within 60 s (logs in {})",
            r.nodes.logs.display()
        );
    }
    println!("cluster of {} nodes up", r.opts.nodes);
    let spec = WorkloadSpec {
        publishers: r.opts.publishers,
        rate: r.opts.rate,
        subscribers: r.opts.subscribers,
        shared: r.opts.shared,
        retained_writers: r.opts.retained_writers,
        seed: r.opts.seed,
        tag: format!("s{}", r.opts.seed),
    };
    r.workload = Some(Workload::start(spec, r.history.clone(), r.targets.clone()));
    r.hold(Duration::from_secs(5)).await;
    let plan = nemesis::schedule(
        r.opts.seed,
        &r.opts.nemesis,
        r.opts.quick,
        Duration::from_secs(r.opts.time_secs),
    );
    println!("{} faults scheduled", plan.len());
    for (i, p) in plan.iter().enumerate() {
        println!(
            "[{:>4.0} s] fault {}/{}: {} for {:.1} s",
            r.history.now_ms() as f64 / 1e3,
            i + 1,
            plan.len(),
            p.kind.name(),
            p.hold.as_secs_f64()
        );
        r.inject(p)
            .await
            .with_context(|| format!("fault {}", p.kind.name()))?;
        r.recover(p.kind.name()).await;
        r.hold(p.gap).await;
    }
    nemesis::heal_network()?;
    r.restart_down()?;
    r.recover("final").await;
    println!(
        "[{:>4.0} s] healed; publishing on, then the final drain",
        r.history.now_ms() as f64 / 1e3
    );
    r.hold(Duration::from_secs(5)).await;
    let mut workload = r.workload.take().expect("started above");
    workload.stop_publishing().await;
    workload.drain(Duration::from_secs(120)).await;
    workload.read_retained_everywhere().await;
    r.nodes.poll();
    for id in r.nodes.ids() {
        r.nodes.stop(id).await;
    }
    r.nodes.poll();
    Ok(())
}
