//! The `tern` processes under test: one per node, each with its own
//! loopback address, its data directory on a tmpfs of its own (so that one
//! node's disk can be filled), its clock behind libfaketime, and its
//! cluster endpoint reached by the others through a [`Proxy`].
//!
//! Addresses of node `id` (the whole run is inside a private network
//! namespace, see `run.sh`):
//! - `127.0.0.(10+id)`: MQTT `:1883`, WebSocket `:8083`, HTTP `:8080`,
//!   cluster gRPC `:7000`; the node's outgoing cluster connections are
//!   bound to it, so iptables rules tell nodes apart;
//! - `127.0.1.(10+id):7000`: the proxy in front of its cluster endpoint,
//!   the address it advertises and is seeded with.
//!
//! Lifecycle of a node: `start` (mount, spawn) -> `kill` / `pause` /
//! `resume` / `start` again on the same data -> `stop` (SIGTERM) at the
//! end, or `wipe` when it is replaced.

use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::history::{Event, History, NodeChange};
use super::proxy::Proxy;

/// Where libfaketime is on Debian (package `libfaketime`).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Size of each node's tmpfs data directory.
pub const DATA_TMPFS: &str = "size=192m";

pub fn node_ip(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + id as u8)
}

pub fn proxy_ip(id: u64) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, 10 + id as u8)
}

pub struct Node {
    pub id: u64,
    pub dir: PathBuf,
    pub log: PathBuf,
    /// libfaketime's offset for this node (`+0`, `-90`, ...), read again
    /// every second by the running process.
    pub clock_file: PathBuf,
    pub proxy: Proxy,
    pub child: Option<Child>,
    pub paused: bool,
    /// Set while a fault explains an exit of the process (disk full).
    pub exit_expected: bool,
    /// Log bytes already searched for panics.
    log_seen: u64,
}

impl Node {
    pub fn mqtt(&self) -> SocketAddr {
        SocketAddr::new(node_ip(self.id).into(), 1883)
    }

    pub fn cluster_addr(&self) -> String {
        format!("{}:7000", node_ip(self.id))
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Usable by clients: running and not stopped.
    pub fn up(&self) -> bool {
        self.child.is_some() && !self.paused
    }
}

/// The cluster: its nodes and how to start them.
pub struct Nodes {
    pub tern: PathBuf,
    /// Where the tmpfs mounts and clock files are.
    pub root: PathBuf,
    /// Where the node logs go (`node<id>.log`).
    pub logs: PathBuf,
    pub nodes: Vec<Node>,
    pub history: History,
    /// Seeds of the founding nodes, `id=proxy:7000`.
    pub seeds: Vec<String>,
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Nodes {
    /// Defines nodes `1..=n` (nothing started yet).
    pub async fn new(
        tern: PathBuf,
        root: PathBuf,
        logs: PathBuf,
        n: u64,
        history: History,
    ) -> anyhow::Result<Nodes> {
        std::fs::create_dir_all(&logs)?;
        let mut nodes = Nodes {
            tern,
            root,
            logs,
            nodes: Vec::new(),
            history,
            seeds: (1..=n)
                .map(|id| format!("{id}={}:7000", proxy_ip(id)))
                .collect(),
        };
        for id in 1..=n {
            nodes.define(id).await?;
        }
        Ok(nodes)
    }

    /// Adds node `id`: its directories, mounted tmpfs and proxy.
    pub async fn define(&mut self, id: u64) -> anyhow::Result<()> {
        let dir = self.root.join(format!("node{id}"));
        std::fs::create_dir_all(&dir)?;
        run_cmd(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", DATA_TMPFS, "tmpfs"])
                .arg(&dir),
        )?;
        let clock_file = self.root.join(format!("node{id}.faketime"));
        std::fs::write(&clock_file, "+0\n")?;
        let proxy = Proxy::start(
            SocketAddr::new(proxy_ip(id).into(), 7000),
            SocketAddr::new(node_ip(id).into(), 7000),
        )
        .await?;
        self.nodes.push(Node {
            id,
            log: self.logs.join(format!("node{id}.log")),
            dir,
            clock_file,
            proxy,
            child: None,
            paused: false,
            exit_expected: false,
            log_seen: 0,
        });
        Ok(())
    }

    pub fn get(&mut self, id: u64) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("node ids come from Nodes")
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn up_ids(&self) -> Vec<u64> {
        self.nodes.iter().filter(|n| n.up()).map(|n| n.id).collect()
    }

    /// Starts node `id` on its data directory, with `seeds`.
    pub fn start(&mut self, id: u64, seeds: &[String]) -> anyhow::Result<()> {
        let tern = self.tern.clone();
        let node = self.get(id);
        if node.child.is_some() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let ip = node_ip(id);
        let child = Command::new(&tern)
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(node.dir.join("data"))
            .args(["--bind", &format!("{ip}:1883")])
            .args(["--ws-bind", &format!("{ip}:8083")])
            .args(["--http-bind", &format!("{ip}:8080")])
            .args(["--cluster-listen", &format!("{ip}:7000")])
            .args(["--cluster-advertise", &format!("{}:7000", proxy_ip(id))])
            .args(["--seeds", &seeds.join(",")])
            .args(["--workers", "1"])
            // `TERN_CHAOS_NODE_LOG` (a tracing filter) widens the nodes'
            // logs for a diagnosis run, e.g. `info,broker::session=debug`
            .env(
                "TERN_LOG",
                std::env::var("TERN_CHAOS_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", &node.clock_file)
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("DONT_FAKE_MONOTONIC", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", tern.display()))?;
        node.child = Some(child);
        node.paused = false;
        self.history.record(Event::Node {
            node: id,
            what: NodeChange::Started,
        });
        Ok(())
    }

    fn signal(pid: u32, sig: &str) {
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    }

    /// SIGKILL.
    pub fn kill(&mut self, id: u64) {
        let node = self.get(id);
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            node.paused = false;
            self.history.record(Event::Node {
                node: id,
                what: NodeChange::Killed,
            });
        }
    }

    pub fn pause(&mut self, id: u64) {
        let node = self.get(id);
        if let Some(child) = &node.child {
            Self::signal(child.id(), "-STOP");
            node.paused = true;
            self.history.record(Event::Node {
                node: id,
                what: NodeChange::Paused,
            });
        }
    }

    pub fn resume(&mut self, id: u64) {
        let node = self.get(id);
        if let Some(child) = &node.child {
            if node.paused {
                Self::signal(child.id(), "-CONT");
                node.paused = false;
                self.history.record(Event::Node {
                    node: id,
                    what: NodeChange::Resumed,
                });
            }
        }
    }

    /// SIGTERM and wait (SIGKILL after 20 s); records a non-zero exit as a
    /// crash.
    pub async fn stop(&mut self, id: u64) {
        self.resume(id);
        let node = self.get(id);
        let Some(mut child) = node.child.take() else {
            return;
        };
        Self::signal(child.id(), "-TERM");
        let end = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let what = match status {
            Some(s) if s.success() => NodeChange::Stopped,
            Some(s) => NodeChange::Exited {
                status: format!("{s} after SIGTERM"),
                expected: false,
            },
            None => NodeChange::Exited {
                status: "still running 20 s after SIGTERM".into(),
                expected: false,
            },
        };
        self.history.record(Event::Node { node: id, what });
    }

    /// Kills node `id`, deletes its data and stops its proxy: the node is
    /// gone for good (its id is not reused).
    pub fn wipe(&mut self, id: u64) -> anyhow::Result<()> {
        self.kill(id);
        let node = self.get(id);
        node.proxy.close();
        let dir = node.dir.clone();
        run_cmd(Command::new("umount").arg(&dir))?;
        self.nodes.retain(|n| n.id != id);
        self.history.record(Event::Node {
            node: id,
            what: NodeChange::Removed,
        });
        Ok(())
    }

    /// Notices processes that exited and new panics in the logs.
    pub fn poll(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    node.paused = false;
                    self.history.record(Event::Node {
                        node: node.id,
                        what: NodeChange::Exited {
                            status: status.to_string(),
                            expected: node.exit_expected,
                        },
                    });
                }
            }
            if let Ok(text) = std::fs::read(&node.log) {
                let new = text.get(node.log_seen as usize..).unwrap_or_default();
                for line in String::from_utf8_lossy(new).lines() {
                    if line.contains(") panicked at ") || line.contains("' panicked at ") {
                        self.history.record(Event::Node {
                            node: node.id,
                            what: NodeChange::Panicked {
                                line: line.chars().take(300).collect(),
                                expected: node.exit_expected,
                            },
                        });
                    }
                }
                node.log_seen = text.len() as u64;
            }
        }
    }

    /// `tern cluster status --json` of node `id`, if it answers.
    pub async fn status(&self, id: u64) -> Option<serde_json::Value> {
        let node = self.nodes.iter().find(|n| n.id == id)?;
        let out = tokio::process::Command::new(&self.tern)
            .args([
                "cluster",
                "status",
                "--json",
                "--address",
                &node.cluster_addr(),
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(3), out)
            .await
            .ok()?
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The leader as most up nodes see it.
    pub async fn leader(&self) -> Option<u64> {
        let mut votes: Vec<u64> = Vec::new();
        for id in self.up_ids() {
            if let Some(l) = self.status(id).await.and_then(|s| s["leader"].as_u64()) {
                if l != 0 {
                    votes.push(l);
                }
            }
        }
        votes.sort_unstable();
        let mut best = None;
        let mut best_count = 0;
        for &v in &votes {
            let c = votes.iter().filter(|&&x| x == v).count();
            if c > best_count {
                best = Some(v);
                best_count = c;
            }
        }
        best
    }

    /// Whether every defined node runs, is ready, sees the same leader and
    /// lists exactly the defined nodes as members.
    pub async fn converged(&self) -> bool {
        if self.nodes.iter().any(|n| !n.up()) {
            return false;
        }
        let mut ids = self.ids();
        ids.sort_unstable();
        let mut leader = None;
        for &id in &ids {
            let Some(s) = self.status(id).await else {
                return false;
            };
            let mut members: Vec<u64> = s["members"]
                .as_array()
                .map(|m| m.iter().filter_map(|m| m["id"].as_u64()).collect())
                .unwrap_or_default();
            members.sort_unstable();
            let l = s["leader"].as_u64().filter(|&l| l != 0);
            if s["ready"] != true || members != ids || l.is_none() {
                return false;
            }
            if leader.is_some() && leader != l {
                return false;
            }
            leader = l;
        }
        true
    }

    /// Waits until [`Nodes::converged`], at most `bound`; the time it took.
    pub async fn wait_converged(&mut self, bound: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < bound {
            self.poll();
            if self.converged().await {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// `tern cluster remove ID` through any up node.
    pub async fn remove_member(&self, id: u64) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..20 {
            for node in self.nodes.iter().filter(|n| n.up() && n.id != id) {
                let out = tokio::process::Command::new(&self.tern)
                    .args([
                        "cluster",
                        "remove",
                        "--address",
                        &node.cluster_addr(),
                        &id.to_string(),
                    ])
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output();
                match tokio::time::timeout(Duration::from_secs(10), out).await {
                    Ok(Ok(o)) if o.status.success() => return Ok(()),
                    Ok(Ok(o)) => last = Some(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
                    Ok(Err(e)) => last = Some(e.to_string()),
                    Err(_) => last = Some("timed out".into()),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        bail!("cannot remove node {id}: {}", last.unwrap_or_default())
    }

    /// Sets libfaketime's offset of node `id` (`+0`, `-90`, `+600`).
    pub fn set_clock(&mut self, id: u64, offset: &str) -> anyhow::Result<()> {
        let node = self.get(id);
        std::fs::write(&node.clock_file, format!("{offset}\n"))?;
        Ok(())
    }

    /// The data directory's mount of node `id`.
    pub fn data_mount(&mut self, id: u64) -> PathBuf {
        self.get(id).dir.clone()
    }

    /// Kills every process and unmounts every tmpfs (the end of the run,
    /// or an error).
    pub fn teardown(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = &mut node.child {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
            }
            node.child = None;
            let _ = Command::new("umount").arg(&node.dir).status();
        }
    }
}

/// Fills the file system of `dir` with a file `dir/filler` until it is
/// full; returns the bytes written.
pub fn fill_disk(dir: &Path) -> std::io::Result<u64> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(dir.join("filler"))?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(_) => break,
        }
    }
    Ok(written)
}

pub fn free_disk(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("filler"));
}
