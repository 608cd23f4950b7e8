//! Cluster tests: several real `tern` processes on loopback, each with its
//! own data directory, MQTT port and cluster (gRPC) port, founded from the
//! same seed list. Clients talk MQTT to different nodes; nodes are killed
//! with SIGKILL, stopped, restarted, added and removed while messages flow.
//!
//! Raft ticks are 20 ms here (the default is 100 ms) so that elections
//! after a kill take a fraction of a second.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;

use broker::codec::{Packet, QoS};
use common::flow::{check, publish_until_broken, Acked, App};
use common::process::{free_port, TernProcess};
use common::{build, wait_until, Raw};

/// Cluster tests start several processes each; one at a time keeps a
/// two-core machine responsive enough for elections to settle.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a test waits for the cluster to reach a state (a guard against
/// hanging, not a performance bound).
const SETTLE: Duration = Duration::from_secs(30);

struct Node {
    id: u64,
    mqtt_port: u16,
    cluster_addr: String,
    dir: PathBuf,
    config: PathBuf,
    process: Option<TernProcess>,
}

impl Node {
    fn mqtt(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.mqtt_port))
    }

    fn start(&mut self) {
        assert!(self.process.is_none(), "node {} already runs", self.id);
        self.process = Some(TernProcess::start(
            &self.dir,
            self.mqtt_port,
            &["--config", self.config.to_str().unwrap()],
        ));
    }

    fn kill9(&mut self) {
        self.process.take().expect("running").kill9();
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the running node.
    fn signal(&self, name: &str) {
        self.process.as_ref().expect("running").signal(name);
    }

    fn stop(&mut self) {
        let status = self.process.take().expect("running").terminate();
        assert!(status.success(), "node {} exit status {status}", self.id);
    }

    /// The node's log, across its restarts.
    fn log(&self) -> String {
        let path = self.dir.with_extension(format!("{}.log", self.mqtt_port));
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

/// Nodes of one cluster, started from the same seeds.
struct TestCluster {
    root: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl TestCluster {
    /// Starts `n` nodes (ids 1..=n) and waits until they agree on a leader.
    fn start(n: u64) -> TestCluster {
        TestCluster::start_with(n, "")
    }

    /// [`TestCluster::start`] with `extra` lines added to the `[cluster]`
    /// section of every node's config.
    fn start_with(n: u64, extra: &str) -> TestCluster {
        let mut cluster = TestCluster {
            root: tempfile::tempdir().unwrap(),
            nodes: Vec::new(),
        };
        for id in 1..=n {
            cluster.define(id);
        }
        let seeds = cluster.seeds();
        for node in &mut cluster.nodes {
            write_config(node, &seeds);
            if !extra.is_empty() {
                // a key `extra` sets replaces the default one
                let set = |line: &str| {
                    let key = line.split('=').next().unwrap_or("").trim();
                    !key.is_empty()
                        && extra
                            .lines()
                            .any(|l| l.split('=').next().unwrap_or("").trim() == key)
                };
                let text = std::fs::read_to_string(&node.config).unwrap();
                let mut text: String = text
                    .lines()
                    .filter(|l| !(l.contains('=') && set(l)))
                    .map(|l| format!("{l}\n"))
                    .collect();
                text.push_str(extra);
                text.push('\n');
                std::fs::write(&node.config, text).unwrap();
            }
            node.start();
        }
        cluster.wait_converged(n as usize);
        cluster
    }

    fn define(&mut self, id: u64) -> usize {
        let dir = self.root.path().join(format!("node{id}"));
        self.nodes.push(Node {
            id,
            mqtt_port: free_port(),
            cluster_addr: format!("127.0.0.1:{}", free_port()),
            config: self.root.path().join(format!("node{id}.toml")),
            dir,
            process: None,
        });
        self.nodes.len() - 1
    }

    fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.cluster_addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node(&mut self, id: u64) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id == id).unwrap()
    }

    fn addr(&self, id: u64) -> SocketAddr {
        self.nodes.iter().find(|n| n.id == id).unwrap().mqtt()
    }

    /// Adds node `id`, seeded with the running nodes, and waits until it is
    /// a member.
    fn add_node(&mut self, id: u64) {
        let seeds = self.seeds();
        let i = self.define(id);
        write_config(&self.nodes[i], &seeds);
        self.nodes[i].start();
        let members = self.running().len();
        self.wait_converged(members);
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.process.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// `tern cluster status --json` through node `id`.
    fn status(&self, id: u64) -> Option<serde_json::Value> {
        let node = self.nodes.iter().find(|n| n.id == id).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args([
                "cluster",
                "status",
                "--json",
                "--address",
                &node.cluster_addr,
            ])
            .output()
            .unwrap();
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `tern cluster remove id`, asked of node 1.
    fn remove(&self, id: u64) {
        self.remove_via(id, self.nodes[0].id);
    }

    /// `tern cluster remove id`, asked of node `via`.
    fn remove_via(&self, id: u64, via: u64) {
        let via = self.nodes.iter().find(|n| n.id == via).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args([
                "cluster",
                "remove",
                "--address",
                &via.cluster_addr,
                &id.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until every running node applied what any of them had applied:
    /// routes and sessions proposed before the call are then known
    /// everywhere. (A SUBACK waits until the route is applied on the
    /// subscriber's node; the other nodes learn it at their next raft
    /// message, so a message published elsewhere in between is not routed
    /// to the new subscription.)
    fn settle(&self) {
        self.settle_past(0);
    }

    /// The highest index a running node has applied.
    fn applied(&self) -> u64 {
        self.running()
            .into_iter()
            .map(|id| self.applied_by(id))
            .max()
            .unwrap()
    }

    fn applied_by(&self, id: u64) -> u64 {
        self.status(id)
            .and_then(|s| s["applied_index"].as_u64())
            .unwrap_or(0)
    }

    /// Like [`settle`](Self::settle), once some node has applied an entry
    /// past `index`: for a change proposed without the client waiting for
    /// it (a session's claim at CONNECT), which may not be committed yet.
    fn settle_past(&self, index: u64) {
        let past = wait_until(SETTLE, Duration::from_millis(20), || self.applied() > index);
        assert!(past, "no node applied an entry past {index}");
        let applied = |id| self.applied_by(id);
        let target = self.running().into_iter().map(applied).max().unwrap();
        let settled = wait_until(SETTLE, Duration::from_millis(20), || {
            self.running().into_iter().all(|id| applied(id) >= target)
        });
        assert!(settled, "nodes did not apply index {target}");
    }

    /// Waits until every running node is ready, knows the same leader and
    /// lists `members` members with addresses; returns the leader.
    fn wait_converged(&self, members: usize) -> u64 {
        let end = Instant::now() + SETTLE;
        let mut last = Vec::new();
        while Instant::now() < end {
            last = self
                .running()
                .into_iter()
                .map(|id| self.status(id))
                .collect::<Vec<_>>();
            let leaders: Vec<u64> = last
                .iter()
                .flatten()
                .filter(|s| {
                    s["ready"] == true
                        && s["members"].as_array().is_some_and(|m| {
                            m.len() == members && m.iter().all(|m| m["address"] != "")
                        })
                })
                .map(|s| s["leader"].as_u64().unwrap_or(0))
                .collect();
            if leaders.len() == last.len()
                && leaders[0] != 0
                && leaders.iter().all(|l| *l == leaders[0])
            {
                return leaders[0];
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs: String = self
            .nodes
            .iter()
            .map(|n| format!("--- node {}\n{}", n.id, n.log()))
            .collect();
        panic!("cluster did not converge on {members} members: {last:#?}\n{logs}");
    }
}

impl Drop for TestCluster {
    /// A failed test prints the end of every node's log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                let log = node.log();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                eprintln!("--- node {} log (last 60 lines)\n{tail}", node.id);
            }
        }
    }
}

/// The node's config file: 20 ms raft ticks, loopback addresses.
fn write_config(node: &Node, seeds: &str) {
    let text = format!(
        "[cluster]\nnode_id = {}\nlisten = \"{}\"\nseeds = [{}]\ntick_ms = 20\nelection_ticks = 10\nforward_timeout_secs = 5\n",
        node.id,
        node.cluster_addr,
        seeds
            .split(',')
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::fs::write(&node.config, text).unwrap();
}

/// One received PUBLISH, acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
}

/// Reads PUBLISHes for `quiet` after the last one, acknowledging each
/// (QoS 2: PUBREC, then PUBCOMP on PUBREL).
async fn collect(c: &mut Raw, quiet: Duration) -> Vec<Got> {
    let mut got = Vec::new();
    while let Some(packet) = next_packet(c, quiet).await {
        match packet {
            Packet::Publish(p) => {
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => c.send(&build::puback(id)).await,
                    (QoS::ExactlyOnce, Some(id)) => c.send(&build::pubrec(id)).await,
                    _ => {}
                }
                got.push(Got {
                    topic: p.topic.to_string(),
                    payload: p.payload.to_vec(),
                    qos: p.qos,
                    retain: p.retain,
                });
            }
            Packet::PubRel(r) => c.send(&build::pubcomp(r.packet_id)).await,
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

/// Publishes and waits for the whole acknowledgement flow.
async fn publish_acked(c: &mut Raw, topic: &str, qos: u8, retain: bool, id: u16, payload: &[u8]) {
    c.send(&build::publish(topic, qos, retain, false, id, payload))
        .await;
    match qos {
        0 => {}
        1 => assert_eq!(c.recv_bytes().await.unwrap(), build::puback(id)),
        _ => {
            assert_eq!(c.recv_bytes().await.unwrap(), build::pubrec(id));
            c.send(&build::pubrel(id)).await;
            assert_eq!(c.recv_bytes().await.unwrap(), build::pubcomp(id));
        }
    }
}

async fn subscribe(c: &mut Raw, id: u16, filters: &[(&str, u8)]) {
    c.send(&build::subscribe(id, filters)).await;
    let granted: Vec<u8> = filters.iter().map(|(_, q)| *q).collect();
    assert_eq!(c.recv_bytes().await.unwrap(), build::suback(id, &granted));
}

/// Connects a 3.1.1 client and checks the CONNACK's session present flag.
async fn connect(addr: SocketAddr, client_id: &str, clean: bool, session_present: bool) -> Raw {
    let mut c = Raw::connect(addr).await;
    c.send(&build::connect(4, client_id, clean, 60)).await;
    assert_eq!(
        c.recv_bytes().await.expect("CONNACK"),
        build::connack(session_present, 0),
        "{client_id} at {addr}"
    );
    c
}

fn payloads(got: &[Got]) -> Vec<Vec<u8>> {
    got.iter().map(|g| g.payload.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_on_one_node_reach_subscribers_on_the_others() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start(3);
    let (a1, a2, a3) = (cluster.addr(1), cluster.addr(2), cluster.addr(3));

    // `tern cluster status` prints the members, the leader and the role
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "cluster",
            "status",
            "--address",
            &cluster.nodes[0].cluster_addr,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for id in 1..=3 {
        assert!(
            text.contains(&format!("127.0.0.1:{}", cluster.addr(id).port())),
            "{text}"
        );
    }

    let mut s2 = connect(a2, "s2", true, false).await;
    subscribe(&mut s2, 1, &[("sensors/+/temp", 2)]).await;
    let mut s3 = connect(a3, "s3", true, false).await;
    subscribe(&mut s3, 1, &[("sensors/#", 1), ("sensors/a/temp", 0)]).await;
    // $-topics are not matched by a top-level wildcard, on any node
    let mut all3 = connect(a3, "all3", true, false).await;
    subscribe(&mut all3, 1, &[("#", 0)]).await;
    cluster.settle();

    let mut p = connect(a1, "p1", true, false).await;
    for (i, qos) in [0u8, 1, 2].into_iter().enumerate() {
        publish_acked(
            &mut p,
            "sensors/a/temp",
            qos,
            false,
            i as u16 + 1,
            &[b'0' + qos],
        )
        .await;
    }
    publish_acked(&mut p, "$app/not-for-wildcards", 0, false, 0, b"x").await;

    let got2 = collect(&mut s2, Duration::from_millis(700)).await;
    assert_eq!(payloads(&got2), [b"0", b"1", b"2"]);
    assert_eq!(
        got2.iter().map(|g| g.qos).collect::<Vec<_>>(),
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce],
        "delivered at min(published, granted) QoS"
    );
    // overlapping subscriptions on s3: one copy each, at the highest QoS
    let got3 = collect(&mut s3, Duration::from_millis(500)).await;
    assert_eq!(payloads(&got3), [b"0", b"1", b"2"]);
    assert_eq!(
        got3.iter().map(|g| g.qos).collect::<Vec<_>>(),
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::AtLeastOnce]
    );
    let got_all = collect(&mut all3, Duration::from_millis(300)).await;
    assert!(
        got_all.iter().all(|g| g.topic == "sensors/a/temp"),
        "{got_all:?}"
    );
    assert_eq!(got_all.len(), 3);

    // a subscriber on the publisher's own node gets it once, not via a peer
    let mut s1 = connect(a1, "s1", true, false).await;
    subscribe(&mut s1, 1, &[("sensors/b/+", 1)]).await;
    publish_acked(&mut p, "sensors/b/temp", 1, false, 7, b"b").await;
    assert_eq!(
        payloads(&collect(&mut s1, Duration::from_millis(500)).await),
        [b"b"]
    );
    assert_eq!(
        payloads(&collect(&mut s2, Duration::from_millis(100)).await),
        [b"b"]
    );

    // unsubscribing on node 2 stops the forwarding there
    s2.send(&build::unsubscribe(9, &["sensors/+/temp"])).await;
    assert_eq!(s2.recv_bytes().await.unwrap(), build::unsuback(9));
    let end = Instant::now() + SETTLE;
    loop {
        publish_acked(&mut p, "sensors/c/temp", 0, false, 0, b"c").await;
        let got = collect(&mut s2, Duration::from_millis(200)).await;
        if got.is_empty() {
            break;
        }
        assert!(
            Instant::now() < end,
            "node 2 still gets messages after UNSUBACK"
        );
    }

    // retained: set on node 1, replaced on node 2, seen from node 3
    publish_acked(&mut p, "config/site", 1, true, 10, b"v1").await;
    let mut q = connect(a2, "q2", true, false).await;
    publish_acked(&mut q, "config/site", 1, true, 1, b"v2").await;
    cluster.settle();
    let mut r = connect(a3, "r3", true, false).await;
    subscribe(&mut r, 1, &[("config/#", 1)]).await;
    let got = collect(&mut r, Duration::from_millis(500)).await;
    assert_eq!(
        got,
        [Got {
            topic: "config/site".into(),
            payload: b"v2".to_vec(),
            qos: QoS::AtLeastOnce,
            retain: true
        }]
    );
    // an empty retained payload deletes it everywhere
    publish_acked(&mut p, "config/site", 1, true, 11, b"").await;
    cluster.settle();
    let mut r2 = connect(a2, "r2", true, false).await;
    subscribe(&mut r2, 1, &[("config/#", 1)]).await;
    assert!(collect(&mut r2, Duration::from_millis(300))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_spreads_messages_across_nodes_once_each() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start(3);
    let mut members = Vec::new();
    for (i, node) in [1u64, 2, 3].into_iter().enumerate() {
        let mut c = connect(cluster.addr(node), &format!("worker{i}"), true, false).await;
        subscribe(&mut c, 1, &[("$share/workers/jobs/#", 1)]).await;
        cluster.settle();
        members.push(c);
    }
    let mut p = connect(cluster.addr(2), "boss", true, false).await;
    let n = 60u16;
    for i in 0..n {
        publish_acked(&mut p, "jobs/x", 1, false, i + 1, &i.to_be_bytes()).await;
    }
    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut per_member = Vec::new();
    for c in &mut members {
        let got = collect(c, Duration::from_millis(500)).await;
        per_member.push(got.len());
        for g in got {
            *seen.entry(g.payload).or_default() += 1;
        }
    }
    assert_eq!(
        seen.len(),
        n as usize,
        "every message delivered: {per_member:?}"
    );
    assert!(seen.values().all(|c| *c == 1), "each to one member only");
    assert!(
        per_member.iter().all(|c| *c > 0),
        "members on every node get a share: {per_member:?}"
    );
}

/// The hand-on tests' config: answers time out (1 s) long before a stopped
/// node counts as down (3 s); one copy in flight per client, the rest
/// queued.
const HAND_ON: &str = "forward_timeout_secs = 1\n[mqtt]\nmax_inflight = 1";

/// Publishes QoS 2 messages 1..=n on `topic` (the payload is the number),
/// each acknowledged.
async fn publish_numbered(p: &mut Raw, topic: &str, n: u16) {
    for i in 1..=n {
        publish_acked(p, topic, 2, false, i, &i.to_be_bytes()).await;
    }
}

/// Stops node `id`, drops `member`'s connection (its group copies are
/// handed on, some to the stopped node) and kills the node once those
/// answers have timed out.
async fn drop_member_while_stopped(cluster: &mut TestCluster, id: u64, member: Raw) {
    cluster.node(id).signal("STOP");
    drop(member);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    cluster.node(id).kill9();
}

/// A new session (`clean`) subscribed at QoS 2 to the shared `filter`.
async fn member(addr: SocketAddr, client_id: &str, clean: bool, filter: &str) -> Raw {
    let mut c = connect(addr, client_id, clean, false).await;
    subscribe(&mut c, 1, &[(filter, 2)]).await;
    c
}

/// Asserts that the members together got every message 1..=n.
fn assert_all_numbered(members: &[(&str, &[Vec<u8>])], n: u16) {
    let got: BTreeSet<Vec<u8>> = members
        .iter()
        .flat_map(|(_, g)| g.iter())
        .cloned()
        .collect();
    let want: BTreeSet<Vec<u8>> = (1..=n).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(
        got, want,
        "every acknowledged message reached a member: {members:?}"
    );
}

/// A member that loses its connection hands its queued group copies on to
/// another member; one that is not taken (here: its node stopped, the
/// answer timed out) comes back to the member's queue and is delivered at
/// its next connection, although the member's ring of recent QoS 2 ids
/// holds it already.
///
/// postmortem: long chaos run seed 25, 2026-12-07 (`shared-no-loss`,
/// p3#3503): the copy that came back was dropped as a duplicate and its
/// record deleted; no member got it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_copy_handed_on_and_not_taken_comes_back_to_its_member_issue_17() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start_with(3, HAND_ON);
    let mut b = member(cluster.addr(2), "back-b", true, "$share/g/back/#").await;
    cluster.settle();
    let a = member(cluster.addr(1), "back-a", false, "$share/g/back/#").await;
    cluster.settle();
    let mut p = connect(cluster.addr(1), "back-p", true, false).await;
    let n = 12u16;
    publish_numbered(&mut p, "back/x", n).await;
    let got_b = payloads(&collect(&mut b, Duration::from_millis(700)).await);
    assert!(
        got_b.len() + 2 <= n as usize,
        "member a holds copies in its queue: b got {} of {n}",
        got_b.len()
    );
    // b's node dies with b's session
    drop_member_while_stopped(&mut cluster, 2, a).await;
    let mut a = connect(cluster.addr(1), "back-a", false, true).await;
    let got_a = payloads(&collect(&mut a, Duration::from_millis(1_500)).await);
    assert_all_numbered(&[("a", &got_a), ("b", &got_b)], n);
}

/// Like the test above, with a member whose session ends as its
/// connection does (Clean Session): the copies it hands on that come back
/// go to another member, not on the node that did not take them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_copy_an_ending_member_handed_on_goes_to_another_member_issue_17() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start_with(3, HAND_ON);
    let mut b = member(cluster.addr(2), "end-b", true, "$share/g/end/#").await;
    let mut c = member(cluster.addr(3), "end-c", true, "$share/g/end/#").await;
    let a = member(cluster.addr(1), "end-a", true, "$share/g/end/#").await;
    cluster.settle();
    let mut p = connect(cluster.addr(1), "end-p", true, false).await;
    let n = 15u16;
    publish_numbered(&mut p, "end/x", n).await;
    let got_b = payloads(&collect(&mut b, Duration::from_millis(700)).await);
    let mut got_c = payloads(&collect(&mut c, Duration::from_millis(300)).await);
    assert!(
        got_b.len() + got_c.len() + 2 <= n as usize,
        "member a holds copies: b got {}, c got {} of {n}",
        got_b.len(),
        got_c.len()
    );
    // those picked for b's node get no answer and go to c
    drop_member_while_stopped(&mut cluster, 2, a).await;
    got_c.extend(payloads(
        &collect(&mut c, Duration::from_millis(1_500)).await,
    ));
    assert_all_numbered(&[("b", &got_b), ("c", &got_c)], n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_loses_no_acknowledged_message() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_converged(3);
    let others: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let (sub_node, spare) = (others[0], others[1]);

    let mut s = App::connect(cluster.addr(sub_node), "chaos-sub", false).await;
    subscribe(&mut s, 1, &[("chaos/q1", 1), ("chaos/q2", 2)]).await;
    cluster.settle();
    let mut app = App::default();
    let publisher = tokio::spawn(publish_until_broken(
        cluster.addr(leader),
        "chaos-pub",
        "chaos",
        0,
        1_000_000,
    ));
    // messages flow for a while, then the leader dies mid-stream
    let _ = tokio::time::timeout(Duration::from_millis(1500), app.drain(&mut s, SETTLE)).await;
    cluster.node(leader).kill9();
    let mut acked: Acked = publisher.await.unwrap();
    assert!(
        !acked.qos1.is_empty() && !acked.qos2.is_empty(),
        "{acked:?}"
    );

    // the publisher reconnects to a surviving node and goes on
    let more =
        publish_until_broken(cluster.addr(spare), "chaos-pub", "chaos", 2_000_000, 2_000).await;
    assert_eq!(more.qos1.len() + more.qos2.len(), 2_000, "all acknowledged");
    acked.qos1.extend(more.qos1);
    acked.qos2.extend(more.qos2);
    app.drain(&mut s, Duration::from_millis(1500)).await;
    check(&app, &acked);

    // the two survivors elected a leader: new subscriptions still work
    let new_leader = cluster.wait_converged(3 /* still members */);
    assert_ne!(new_leader, leader);
    let mut late = connect(cluster.addr(spare), "late", true, false).await;
    subscribe(&mut late, 1, &[("after/kill", 1)]).await;
    cluster.settle();
    let mut p = connect(cluster.addr(sub_node), "p-after", true, false).await;
    publish_acked(&mut p, "after/kill", 1, false, 1, b"ok").await;
    assert_eq!(
        payloads(&collect(&mut late, Duration::from_millis(500)).await),
        [b"ok"]
    );

    // the killed leader comes back and catches up
    cluster.node(leader).start();
    cluster.wait_converged(3);
    let mut back = connect(cluster.addr(leader), "back", true, false).await;
    subscribe(&mut back, 1, &[("after/#", 1)]).await;
    cluster.settle();
    publish_acked(&mut p, "after/restart", 1, false, 2, b"again").await;
    assert_eq!(
        payloads(&collect(&mut back, Duration::from_millis(500)).await),
        [b"again"]
    );
    eprintln!(
        "leader kill: {} QoS 1 and {} QoS 2 acknowledged, all delivered, {} QoS 1 duplicates",
        acked.qos1.len(),
        acked.qos2.len(),
        app.qos1.values().filter(|n| **n > 1).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moves_to_another_node_when_its_client_does() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start(3);
    // persistent session on node 2 with messages queued while offline
    let mut c = connect(cluster.addr(2), "mover", false, false).await;
    subscribe(&mut c, 1, &[("move/#", 1)]).await;
    cluster.settle();
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    let mut p = connect(cluster.addr(1), "mover-pub", true, false).await;
    for i in 1..=20u16 {
        publish_acked(&mut p, "move/a", 1, false, i, &i.to_be_bytes()).await;
    }
    // the client comes back on node 3: node 2 hands over its queue
    let mut c = connect(cluster.addr(3), "mover", false, true).await;
    cluster.settle();
    let got = collect(&mut c, Duration::from_millis(700)).await;
    let want: Vec<Vec<u8>> = (1..=20u16).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(payloads(&got), want, "queued messages in order");
    // new messages follow it to node 3
    publish_acked(&mut p, "move/b", 1, false, 21, b"new").await;
    assert_eq!(
        payloads(&collect(&mut c, Duration::from_millis(500)).await),
        [b"new"]
    );

    // a live takeover: the same client id connecting on node 1 closes node 3's connection
    let mut c1 = connect(cluster.addr(1), "mover", false, true).await;
    c.expect_closed().await;
    publish_acked(&mut p, "move/c", 1, false, 22, b"there").await;
    assert_eq!(
        payloads(&collect(&mut c1, Duration::from_millis(500)).await),
        [b"there"]
    );

    // MQTT 5: the connection a takeover from another node closes gets
    // DISCONNECT 0x8E Session taken over
    let expiry = build::prop::u32(0x11, 300);
    let before = cluster.applied();
    let mut v5 = Raw::mqtt5(cluster.addr(2), "mover5", true, &expiry).await;
    // CONNACK does not wait for node 2's claim: node 3 must have it first
    cluster.settle_past(before);
    let _v5_elsewhere = Raw::mqtt5(cluster.addr(3), "mover5", false, &expiry).await;
    assert_eq!(v5.expect_closed().await, [vec![0xE0, 0x01, 0x8E]]);
}

/// postmortem: chaos seed 21 (400 s rerun, `progress`): a session moved from
/// node 1 to node 2 and back to node 1 within node 1's `Moved` window
/// (`forward_timeout_secs`). Node 1's old copy of the session, still in the
/// router there, forwarded what reached it to node 2, which no longer had
/// the session and refused: publishers on node 1 were told their messages
/// could not be stored until the window ended. Those copies now go to the
/// session that is live on node 1 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_back_on_its_old_node_within_the_moved_window_gets_its_copies() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start(3);
    let mut c = connect(cluster.addr(1), "pingpong", false, false).await;
    subscribe(&mut c, 1, &[("pp/#", 1)]).await;
    cluster.settle();
    // to node 2 and back to node 1, well inside the 5 s window
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    let mut c = connect(cluster.addr(2), "pingpong", false, true).await;
    cluster.settle();
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    let mut c = connect(cluster.addr(1), "pingpong", false, true).await;
    cluster.settle();
    // a 3.1.1 publisher on node 1: a copy that fails closes it without PUBACK
    let mut p = connect(cluster.addr(1), "pingpong-pub", true, false).await;
    for i in 1..=10u16 {
        publish_acked(&mut p, "pp/a", 1, false, i, &i.to_be_bytes()).await;
    }
    let got = collect(&mut c, Duration::from_millis(700)).await;
    let want: Vec<Vec<u8>> = (1..=10u16).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(payloads(&got), want, "each message once, in order");
}

/// The next packet `c` receives within `wait`, decoded.
async fn next_packet(c: &mut Raw, wait: Duration) -> Option<Packet> {
    let bytes = c.recv_bytes_within(wait).await?;
    let mut b = bytes::BytesMut::from(&bytes[..]);
    let limits = broker::codec::Limits {
        max_packet_size: u32::MAX,
        version: c.version,
        refuse_control_characters: false,
    };
    Some(Packet::decode(&mut b, &limits).unwrap().unwrap())
}

/// The first packet `c` receives within [`SETTLE`] that `pick` takes
/// (`Some`); panics naming `what` if none comes.
async fn first_packet<T>(c: &mut Raw, what: &str, mut pick: impl FnMut(Packet) -> Option<T>) -> T {
    let end = Instant::now() + SETTLE;
    while Instant::now() < end {
        if let Some(packet) = next_packet(c, Duration::from_millis(500)).await {
            if let Some(taken) = pick(packet) {
                return taken;
            }
        }
    }
    panic!("no {what} within {SETTLE:?}");
}

/// postmortem: in a chaos run (`tern-chaos`, seed 2) a subscriber answered
/// PUBREC for a QoS 2 message, its node was killed, and it resumed its
/// session on another node from the replicated record. When the old node
/// came back it handed the session's messages over as new copies and left
/// out the one the client had answered: nobody ever sent PUBREL for that
/// packet id, the client kept it open (as 4.3.3 says it must until PUBREL),
/// and 55 s later took a new message the session sent with the same id for
/// a resend of the old one: an acknowledged message was lost. The old
/// node's open QoS 2 flows now go over with their packet ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_qos2_flows_keep_their_packet_ids_when_a_dead_nodes_session_moves_issue_17() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let mut c = connect(cluster.addr(2), "flow-holder", false, false).await;
    subscribe(&mut c, 1, &[("flow/#", 2)]).await;
    cluster.settle();
    let mut p = connect(cluster.addr(1), "flow-pub", true, false).await;
    publish_acked(&mut p, "flow/a", 2, false, 1, b"answered").await;
    publish_acked(&mut p, "flow/a", 2, false, 2, b"unanswered").await;
    // PUBREC for the first (the broker answers PUBREL once the Released
    // state is stored), nothing for the second; no PUBCOMP
    let (mut answered, mut unanswered, mut released) = (None, None, false);
    let end = Instant::now() + SETTLE;
    while answered.is_none() || unanswered.is_none() || !released {
        assert!(Instant::now() < end, "the two messages and a PUBREL");
        match next_packet(&mut c, Duration::from_millis(500)).await {
            Some(Packet::Publish(m)) if &m.payload[..] == b"answered" => {
                let id = m.packet_id.unwrap();
                c.send(&build::pubrec(id)).await;
                answered = Some(id);
            }
            Some(Packet::Publish(m)) => unanswered = m.packet_id,
            Some(Packet::PubRel(r)) => {
                assert_eq!(Some(r.packet_id), answered);
                released = true;
            }
            _ => {}
        }
    }
    let (answered, unanswered) = (answered.unwrap(), unanswered.unwrap());
    cluster.node(2).kill9();
    drop(c);
    // node 2 is down: the session resumes on node 3 from its record
    let mut c = connect(cluster.addr(3), "flow-holder", false, true).await;
    cluster.node(2).start();
    // node 2 learns the session moved and hands over what it held: the
    // client sees PUBREL for the id it answered and the other message again
    // under its id, which it knows (it does not take it twice)
    let (mut pubrel, mut again) = (false, false);
    let end = Instant::now() + SETTLE;
    while !(pubrel && again) {
        assert!(
            Instant::now() < end,
            "PUBREL {answered}: {pubrel}, PUBLISH {unanswered} again: {again}"
        );
        match next_packet(&mut c, Duration::from_millis(500)).await {
            // Resumed from the record, node 3 first releases the ids from
            // where node 2 numbered (`release_lost_flows`), these two among
            // them; node 2's hand-over then sends PUBREL for the answered
            // one again, and the other message under its id.
            Some(Packet::PubRel(r)) => {
                c.send(&build::pubcomp(r.packet_id)).await;
                if r.packet_id == answered {
                    pubrel = true;
                }
            }
            Some(Packet::Publish(m)) => {
                assert_eq!(&m.payload[..], b"unanswered");
                assert_eq!(m.packet_id, Some(unanswered), "sent with the id it had");
                c.send(&build::pubrec(unanswered)).await;
                again = true;
            }
            _ => {}
        }
    }
    // both flows end; a new message gets through
    publish_acked(&mut p, "flow/a", 2, false, 3, b"after").await;
    let got = collect(&mut c, Duration::from_millis(1_000)).await;
    assert_eq!(payloads(&got), vec![b"after".to_vec()]);
}

/// postmortem: in a chaos run (`tern-chaos`, seed 9) a subscriber answered
/// PUBREC for a QoS 2 message and its node was killed 5 ms later, before the
/// Released state reached the disk. Restarted, the node had the copy as
/// queued (a restored copy is "not sent on this connection") and, learning
/// that the session had moved, handed it over as a new message: the new
/// owner sent it under another id, the client kept the answered id open and
/// 69 s later took a new message with that id for a resend (lost). A copy
/// restored from the store goes over with its packet id, answered or not:
/// here the client did not answer, and gets the copy under the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_qos2_copies_keep_their_packet_ids_when_the_session_has_moved_issue_17() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let mut c = connect(cluster.addr(2), "restored-holder", false, false).await;
    subscribe(&mut c, 1, &[("restored/#", 2)]).await;
    cluster.settle();
    let mut p = connect(cluster.addr(1), "restored-pub", true, false).await;
    publish_acked(&mut p, "restored/a", 2, false, 1, b"in flight").await;
    let id = first_packet(&mut c, "the message", |p| match p {
        Packet::Publish(m) => m.packet_id,
        _ => None,
    })
    .await;
    // no PUBREC (as if it had not reached the node before the kill)
    cluster.node(2).kill9();
    drop(c);
    let mut c = connect(cluster.addr(3), "restored-holder", false, true).await;
    cluster.node(2).start();
    let again = first_packet(
        &mut c,
        "the message again from the restarted node",
        |p| match p {
            Packet::Publish(m) => Some(m),
            _ => None,
        },
    )
    .await;
    assert_eq!(&again.payload[..], b"in flight");
    assert_eq!(again.packet_id, Some(id), "sent with the id it had");
    c.send(&build::pubrec(id)).await;
    let released = first_packet(&mut c, "PUBREL", |p| match p {
        Packet::PubRel(r) => Some(r.packet_id),
        _ => None,
    })
    .await;
    assert_eq!(released, id);
    c.send(&build::pubcomp(id)).await;
    publish_acked(&mut p, "restored/a", 2, false, 2, b"after").await;
    let got = collect(&mut c, Duration::from_millis(1_000)).await;
    assert_eq!(payloads(&got), vec![b"after".to_vec()]);
}

/// postmortem: long chaos run, seed 21 (644 s): sub3's CONNECT to node 6
/// was slow, and node 6 sent 41 queued QoS 2 copies (ids 2..42) in the
/// 12 ms before another node's claim took the session. The client answered
/// PUBREC for them and never saw PUBREL. Later the session moved to a
/// fresh actor that numbered its copies from id 1 again, and the client
/// took 20 new messages under the ids it still held open for resends (4.3.3
/// says it must not deliver them): acknowledged messages were lost. A
/// session that moves now goes on numbering where its old owner was (and
/// from a random point where that is not known).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_session_goes_on_numbering_packet_ids_where_its_old_owner_was_issue_17() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start(3);
    let mut c = connect(cluster.addr(2), "numbered", false, false).await;
    subscribe(&mut c, 1, &[("numbered/#", 2)]).await;
    cluster.settle();
    let mut p = connect(cluster.addr(1), "numbered-pub", true, false).await;
    let mut ids = Vec::new();
    for i in 1..=3u16 {
        publish_acked(&mut p, "numbered/a", 2, false, i, b"before").await;
        ids.push(receive_qos2(&mut c).await);
    }
    assert_eq!(ids, [1, 2, 3], "a new session numbers from 1");
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    // node 2 hands the session (with nothing left in it) over to node 3
    let mut c = connect(cluster.addr(3), "numbered", false, true).await;
    cluster.settle();
    publish_acked(&mut p, "numbered/a", 2, false, 4, b"after").await;
    assert_eq!(
        receive_qos2(&mut c).await,
        4,
        "numbering goes on after the move"
    );
}

/// Receives one QoS 2 PUBLISH on `c` and completes its flow as a client
/// does (PUBREC, PUBREL, PUBCOMP); returns its packet id.
async fn receive_qos2(c: &mut Raw) -> u16 {
    let id = first_packet(c, "a QoS 2 PUBLISH", |p| match p {
        Packet::Publish(m) => m.packet_id,
        _ => None,
    })
    .await;
    c.send(&build::pubrec(id)).await;
    let released = first_packet(c, "PUBREL", |p| match p {
        Packet::PubRel(r) => Some(r.packet_id),
        _ => None,
    })
    .await;
    assert_eq!(released, id);
    c.send(&build::pubcomp(id)).await;
    id
}

/// postmortem: in a chaos run (`tern-chaos`, seed 1, node 2 isolated),
/// clients that tried node 2 during the partition gave up on their CONNECT.
/// Node 2 went on with them: with no leader, then while catching up after
/// the heal, it asked each session's former owner, heard "no session",
/// resumed the session from its stale replicated record and claimed it,
/// which closed the client's live connection on the real owner and lost
/// messages that were moving between the nodes. A node must not take a
/// session over before it has caught up with the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_leader_refuses_to_take_a_session_over_issue_17() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let mut c = connect(cluster.addr(1), "stranded", false, false).await;
    subscribe(&mut c, 1, &[("stranded/#", 1)]).await;
    cluster.settle();
    c.send(&build::disconnect()).await;
    c.expect_closed().await;

    // nodes 1 and 2 stop; within an election timeout node 3 knows no leader
    for id in [1, 2] {
        cluster.node(id).process.as_ref().unwrap().signal("STOP");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut c3 = Raw::connect(cluster.addr(3)).await;
    c3.send(&build::connect(4, "stranded", false, 60)).await;
    assert_eq!(
        c3.recv_bytes().await.expect("CONNACK"),
        build::connack(false, 3),
        "Server unavailable, not a session resumed from a stale record"
    );
    for id in [1, 2] {
        cluster.node(id).process.as_ref().unwrap().signal("CONT");
    }
    cluster.wait_converged(3);

    // with a leader again the session moves to node 3, subscription included
    let mut c3 = connect(cluster.addr(3), "stranded", false, true).await;
    cluster.settle();
    let mut p = connect(cluster.addr(2), "stranded-pub", true, false).await;
    publish_acked(&mut p, "stranded/a", 1, false, 1, b"here").await;
    assert_eq!(
        payloads(&collect(&mut c3, Duration::from_millis(700)).await),
        [b"here"]
    );
}

/// postmortem: in a long chaos run (`tern-chaos`, seed 21, 2026-12-06, a
/// bridge partition) a session moved from node 1 to node 2 while node 4 was
/// cut off from the leader. Node 4 caught up 11 s later; until then it
/// routed the session's copies to node 1 by the routes it knew, and node 1
/// had stopped forwarding to the new owner `forward_timeout_secs` (10 s)
/// after the move: 13 acknowledged messages reached nobody. The old node
/// now forwards what still arrives for 20 s after a move. Here node 3 is
/// stopped while the session moves, and routes a PUBLISH that waited in its
/// socket as soon as it runs again, before it hears of the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_a_move_still_reaches_the_session_through_its_old_node_issue_17() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let mut s = connect(cluster.addr(1), "straggler-sub", false, false).await;
    subscribe(&mut s, 1, &[("straggler/#", 1)]).await;
    let mut p = connect(cluster.addr(3), "straggler-pub", true, false).await;
    cluster.settle();
    cluster.node(3).process.as_ref().unwrap().signal("STOP");
    let mut moved = connect(cluster.addr(2), "straggler-sub", false, true).await;
    drop(s);
    // past node 1's forward_timeout_secs (5 s in these tests): its routes
    // for the session are withdrawn
    tokio::time::sleep(Duration::from_secs(7)).await;
    p.send(&build::publish("straggler/a", 1, false, false, 1, b"late"))
        .await;
    cluster.node(3).process.as_ref().unwrap().signal("CONT");
    assert_eq!(p.recv_bytes().await.unwrap(), build::puback(1));
    assert_eq!(
        payloads(&collect(&mut moved, Duration::from_millis(1500)).await),
        [b"late"],
        "the acknowledged message reaches the session on its new node"
    );
}

/// postmortem: in a long chaos run (`tern-chaos`, seed 21, `replace`) a
/// publisher connected to a node 260 ms after it had joined the cluster,
/// before it knew the routes: its QoS 2 message was acknowledged and routed
/// to nobody. A node takes no client before it has caught up with the
/// cluster once since it started: here a restarted node whose only peer is
/// down refuses even a clean session, until the peer is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_not_caught_up_since_start_refuses_clients_issue_17() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(2);
    cluster.node(2).kill9();
    cluster.node(1).kill9();
    cluster.node(1).start();
    let mut c = Raw::connect(cluster.addr(1)).await;
    c.send(&build::connect(4, "early-pub", true, 60)).await;
    assert_eq!(
        c.recv_bytes().await.expect("CONNACK"),
        build::connack(false, 3),
        "Server unavailable while the node knows no routes"
    );
    cluster.node(2).start();
    cluster.wait_converged(2);
    let mut p = connect(cluster.addr(1), "early-pub", true, false).await;
    publish_acked(&mut p, "early/a", 1, false, 1, b"now").await;
}

/// postmortem: in a long chaos run (`tern-chaos`, seed 20, the node of a
/// shared-group member killed) the member resumed on another node while its
/// old node was down. The dead node's route for the group stayed (a node
/// prunes its own routes), so the round robin on the publishing node kept
/// picking it: the copy waited in memory for a node that was down, the
/// publisher was acknowledged, and when the node came back it had no member
/// left. A member on a down node is now picked only when no other is
/// available.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_group_skips_a_member_node_that_is_down_issue_17() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let mut a = connect(cluster.addr(3), "shared-a", false, false).await;
    subscribe(&mut a, 1, &[("$share/g/grp/#", 1)]).await;
    let mut b = connect(cluster.addr(1), "shared-b", false, false).await;
    subscribe(&mut b, 1, &[("$share/g/grp/#", 1)]).await;
    cluster.settle();
    // node 3 dies; its member resumes on node 1; node 3's route stays
    cluster.node(3).kill9();
    drop(a);
    let mut a = connect(cluster.addr(1), "shared-a", false, true).await;
    // past DOWN_AFTER (3 s without contact): node 3 counts as down
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut p = connect(cluster.addr(2), "shared-pub", true, false).await;
    for i in 1..=9u16 {
        publish_acked(&mut p, "grp/x", 1, false, i, &i.to_be_bytes()).await;
    }
    let mut got = payloads(&collect(&mut a, Duration::from_millis(700)).await);
    got.extend(payloads(&collect(&mut b, Duration::from_millis(300)).await));
    got.sort();
    let want: Vec<Vec<u8>> = (1..=9u16).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(got, want, "every message reached a member on an up node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_on_another_node_when_its_node_is_killed() {
    let _one = ONE_AT_A_TIME.lock().await;
    // without replicas (issue 12): the session resumes from its record
    let mut cluster = TestCluster::start_with(3, "session_replicas = 1\n");
    let mut c = connect(cluster.addr(2), "survivor", false, false).await;
    subscribe(&mut c, 1, &[("held/#", 1), ("exact/once", 2)]).await;
    cluster.settle();
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    // messages held by node 2 for the offline session
    let mut p = connect(cluster.addr(1), "held-pub", true, false).await;
    for i in 1..=10u16 {
        publish_acked(&mut p, "held/a", 1, false, i, &i.to_be_bytes()).await;
    }
    publish_acked(&mut p, "exact/once", 2, false, 11, b"q2").await;
    cluster.node(2).kill9();

    // the client resumes on node 3 from the replicated record
    let mut c = connect(cluster.addr(3), "survivor", false, true).await;
    cluster.settle(); // the resumed session's routes
                      // A message published on node 1 reaches the resumed session once node
                      // 1 has applied the session's new routes; one published before that
                      // goes to node 2 and arrives when node 2 is back (README, "Sessions").
                      // settle() can run before node 3 has proposed the routes (seen in
                      // full-suite runs), so publish until one arrives; later copies of
                      // "while-down" are allowed below.
    let mut got = Vec::new();
    let end = Instant::now() + SETTLE;
    let mut packet_id = 20;
    while got.is_empty() {
        assert!(Instant::now() < end, "nothing reached the resumed session");
        publish_acked(&mut p, "held/b", 1, false, packet_id, b"while-down").await;
        packet_id += 1;
        got.extend(collect(&mut c, Duration::from_millis(700)).await);
    }
    assert!(
        payloads(&got).iter().all(|p| p == b"while-down"),
        "only the message published while node 2 is down: {:?}",
        payloads(&got)
    );
    // node 2 restarts, learns the session moved and hands over what it held
    cluster.node(2).start();
    let mut got = Vec::new();
    let end = Instant::now() + SETTLE;
    let held = |got: &[Got]| got.iter().filter(|g| g.payload != b"while-down").count();
    while held(&got) < 11 && Instant::now() < end {
        got.extend(collect(&mut c, Duration::from_millis(500)).await);
    }
    // late copies of "while-down" are acknowledged too
    got.extend(collect(&mut c, Duration::from_millis(500)).await);
    let mut want: BTreeSet<Vec<u8>> = (1..=10u16).map(|i| i.to_be_bytes().to_vec()).collect();
    want.insert(b"q2".to_vec());
    // node 1 also retries "while-down" to node 2 once it is back: a second
    // copy at QoS 1 is allowed (at least once)
    let mut have: BTreeSet<Vec<u8>> = payloads(&got).into_iter().collect();
    have.remove(b"while-down".as_slice());
    assert_eq!(have, want, "held messages arrive once node 2 is back");
    assert_eq!(
        got.iter().filter(|g| g.qos == QoS::ExactlyOnce).count(),
        1,
        "QoS 2 exactly once"
    );
    // and node 2 no longer delivers for it: a client there is a different session
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    let mut c2 = connect(cluster.addr(2), "survivor", false, true).await;
    // nothing held comes twice; only the QoS 1 message node 1 resent to
    // node 2 after its restart may (at least once)
    let again = collect(&mut c2, Duration::from_millis(500)).await;
    assert!(
        again.iter().all(|g| g.payload == b"while-down"),
        "nothing held twice: {again:?}"
    );
}

/// Publishes QoS 2 `next` on `topic` (from packet id `first_id` on) until
/// `c` gets a message, which must be that one, and checks that its packet
/// id is at least 4,096 past `open`, an id the client holds open from the
/// session's old owner. Returns the new message's packet id.
async fn next_numbered_past(
    c: &mut Raw,
    p: &mut Raw,
    topic: &str,
    first_id: u16,
    open: u16,
) -> u16 {
    let end = Instant::now() + SETTLE;
    let mut id = first_id;
    let fresh = loop {
        assert!(Instant::now() < end, "nothing reached the session");
        publish_acked(p, topic, 2, false, id, b"next").await;
        id += 1;
        match next_packet(c, Duration::from_millis(700)).await {
            Some(Packet::Publish(m)) => break m,
            Some(other) => panic!("expected only the new message, got {other:?}"),
            None => {}
        }
    };
    assert_eq!(&fresh.payload[..], b"next");
    let fresh_id = fresh.packet_id.expect("QoS 2 packet id");
    let distance = (u32::from(fresh_id) + 65_535 - u32::from(open)) % 65_535;
    assert!(
        distance >= 4_096,
        "new copies are numbered past the old owner's ids: {open} then {fresh_id}"
    );
    fresh_id
}

/// postmortem: long chaos run seed 23, 2026-12-06 (`shared-no-loss`): a
/// client PUBREC'd a QoS 2 copy under id 1748, and its node lost its data
/// before the client had the PUBREL. Resumed elsewhere from the replicated
/// record, the session numbered its copies from a random point, reached
/// 1748 again 670 s later, and the client, which still held 1748 open,
/// took that message for a resend and dropped it. A session resumed from
/// its record numbers its copies past the ids its owner may have used
/// since the record was written, and releases those only when its
/// numbering comes round to them (`Outgoing::may_be_open`, unit test
/// `ids_possibly_open_elsewhere_are_released_only_when_reused...`).
///
/// postmortem: CI, 2026-12-07 (`k8s_pods` rolling restart): releasing them
/// at once (PUBREL before anything else) freed ids whose messages came
/// later from the old owner with their flows, and the clients took those
/// a second time. Here the old owner comes back with the open flow: the
/// client gets the PUBREL for it, never the message again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumed_from_its_record_numbers_past_ids_the_client_holds_open_issue_17() {
    let _one = ONE_AT_A_TIME.lock().await;
    // without replicas (issue 12): the session resumes from its record
    let mut cluster = TestCluster::start_with(3, "session_replicas = 1\n");
    let mut c = connect(cluster.addr(2), "open-flow", false, false).await;
    subscribe(&mut c, 1, &[("open/#", 2)]).await;
    cluster.settle();
    let mut p = connect(cluster.addr(1), "open-flow-pub", true, false).await;
    publish_acked(&mut p, "open/a", 2, false, 1, b"first").await;
    // the client takes the copy and answers PUBREC; the PUBREL that comes
    // back is never read: the flow stays open in the client
    let open = match next_packet(&mut c, Duration::from_secs(5)).await {
        Some(Packet::Publish(m)) => m.packet_id.expect("QoS 2 packet id"),
        other => panic!("expected the QoS 2 PUBLISH, got {other:?}"),
    };
    c.send(&build::pubrec(open)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // node 2 is killed: the session resumes on node 3 from its record
    cluster.node(2).kill9();
    drop(c);
    let mut c = connect(cluster.addr(3), "open-flow", false, true).await;
    // the session goes on: a new QoS 2 message arrives, under an id past
    // the ones the old owner may have used; the open one is not released
    cluster.settle();
    let fresh_id = next_numbered_past(&mut c, &mut p, "open/b", 2, open).await;
    c.send(&build::pubrec(fresh_id)).await;
    // node 2 comes back with the open flow and sends it to the owner: the
    // client gets its PUBREL, and "first" is not sent again
    cluster.node(2).start();
    let end = Instant::now() + SETTLE;
    loop {
        assert!(
            Instant::now() < end,
            "no PUBREL {open} from the old owner's flow"
        );
        match next_packet(&mut c, Duration::from_millis(500)).await {
            Some(Packet::PubRel(r)) if r.packet_id == open => {
                c.send(&build::pubcomp(open)).await;
                break;
            }
            Some(Packet::PubRel(r)) => c.send(&build::pubcomp(r.packet_id)).await,
            Some(Packet::Publish(m)) => panic!("a message again: {m:?}"),
            Some(other) => panic!("unexpected {other:?}"),
            None => {}
        }
    }
}

/// postmortem: chaos seed 1, 2026-12-07 (`no-loss`, 20 copies): a replica
/// can be behind what its session's client holds: the session's owner sent
/// QoS 2 copies the replica a node then took the session from did not
/// have (an older replica of the session, its newer one out of reach), the
/// client PUBREC'd them and never saw the PUBREL. The new owner numbered
/// its copies from the replica's highest seq, and the client took 20 new
/// messages under the open ids for resends. Here both other nodes are
/// killed, so the owner's copy goes to the client with no replica holding
/// it; the owner is killed after the client's PUBREC, the others come back
/// with the replica they had, and the session is taken from it: its next
/// copy comes under an id past the ones the owner may have used, as for a
/// session resumed from its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_from_a_stale_replica_numbers_past_ids_the_client_holds_open() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let mut c = connect(cluster.addr(2), "replica-open", false, false).await;
    subscribe(&mut c, 1, &[("ropen/#", 2)]).await;
    let mut p = connect(cluster.addr(2), "replica-open-pub", true, false).await;
    cluster.settle();
    // the replica is placed at CONNECT (shown below: the session is taken
    // from it); a moment for its first request to be answered
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.node(1).kill9();
    cluster.node(3).kill9();
    // no replica answers: the owner sends the copy once its own disk has
    // it; the publisher's answer is not awaited
    p.send(&build::publish("ropen/a", 2, false, false, 1, b"first"))
        .await;
    let open = match next_packet(&mut c, Duration::from_secs(15)).await {
        Some(Packet::Publish(m)) => m.packet_id.expect("QoS 2 packet id"),
        other => panic!("expected the QoS 2 PUBLISH, got {other:?}"),
    };
    c.send(&build::pubrec(open)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.node(2).kill9();
    drop((c, p));
    cluster.node(1).start();
    cluster.node(3).start();
    cluster.wait_converged(3);
    let mut c = connect(cluster.addr(3), "replica-open", false, true).await;
    let log = strip_ansi(&cluster.node(3).log());
    assert!(
        log.contains("taking the session over from its replica client_id=replica-open owner=2"),
        "{log}"
    );
    let mut p = connect(cluster.addr(1), "replica-open-pub2", true, false).await;
    cluster.settle();
    // "first" never reached the replica: only the new message comes
    next_numbered_past(&mut c, &mut p, "ropen/b", 1, open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_restarts_with_sessions_routes_and_retained_messages() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let mut c = connect(cluster.addr(3), "sleeper", false, false).await;
    subscribe(&mut c, 1, &[("night/#", 2)]).await;
    cluster.settle();
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    let mut p = connect(cluster.addr(1), "night-pub", true, false).await;
    publish_acked(&mut p, "night/retained", 1, true, 1, b"kept").await;
    for i in 2..=6u16 {
        publish_acked(&mut p, "night/q", 2, false, i, &i.to_be_bytes()).await;
    }
    drop(p);
    // one node killed, the others stopped
    cluster.node(1).kill9();
    cluster.node(2).stop();
    cluster.node(3).stop();
    for id in 1..=3 {
        cluster.node(id).start();
    }
    cluster.wait_converged(3);

    let mut c = connect(cluster.addr(3), "sleeper", false, true).await;
    let got = collect(&mut c, Duration::from_millis(800)).await;
    let want: Vec<Vec<u8>> = std::iter::once(b"kept".to_vec())
        .chain((2..=6u16).map(|i| i.to_be_bytes().to_vec()))
        .collect();
    assert_eq!(payloads(&got), want);
    // routes survived: a message from node 2 reaches the session on node 3
    let mut p = connect(cluster.addr(2), "morning-pub", true, false).await;
    publish_acked(&mut p, "night/after", 2, false, 1, b"morning").await;
    assert_eq!(
        payloads(&collect(&mut c, Duration::from_millis(500)).await),
        [b"morning"]
    );
    // and the retained message is on every node
    let mut r = connect(cluster.addr(1), "reader", true, false).await;
    subscribe(&mut r, 1, &[("night/retained", 0)]).await;
    let got = collect(&mut r, Duration::from_millis(300)).await;
    assert_eq!(payloads(&got), [b"kept"]);
    assert!(got[0].retain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_leave_while_messages_flow() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let mut s = App::connect(cluster.addr(2), "grow-sub", false).await;
    subscribe(&mut s, 1, &[("grow/q1", 1), ("grow/q2", 2)]).await;
    cluster.settle();
    let mut app = App::default();
    let mut acked = Acked::default();

    // a fourth node joins while node 1 publishes
    let load = tokio::spawn(publish_until_broken(
        cluster.addr(1),
        "grow-pub",
        "grow",
        0,
        3_000,
    ));
    cluster.add_node(4);
    app.drain(&mut s, Duration::from_millis(300)).await;
    let a = load.await.unwrap();
    assert_eq!(a.qos1.len() + a.qos2.len(), 3_000);
    acked.qos1.extend(a.qos1);
    acked.qos2.extend(a.qos2);

    // it serves clients at once: a subscriber on node 4, a publisher on node 1
    let mut s4 = connect(cluster.addr(4), "s4", true, false).await;
    subscribe(&mut s4, 1, &[("grow/#", 1)]).await;
    cluster.settle();
    let mut p = connect(cluster.addr(1), "p-grow", true, false).await;
    publish_acked(&mut p, "grow/hello", 1, false, 1, b"hi4").await;
    assert_eq!(
        payloads(&collect(&mut s4, Duration::from_millis(500)).await),
        [b"hi4"]
    );

    // node 3 leaves (stopped, then removed) while node 4 publishes
    let load = tokio::spawn(publish_until_broken(
        cluster.addr(4),
        "grow-pub",
        "grow",
        10_000,
        3_000,
    ));
    cluster.node(3).stop();
    cluster.remove(3);
    app.drain(&mut s, Duration::from_millis(300)).await;
    let a = load.await.unwrap();
    assert_eq!(a.qos1.len() + a.qos2.len(), 3_000);
    acked.qos1.extend(a.qos1);
    acked.qos2.extend(a.qos2);
    cluster.wait_converged(3);
    app.drain(&mut s, Duration::from_millis(1000)).await;
    check(&app, &acked);

    let status = cluster.status(1).unwrap();
    let ids: Vec<u64> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 4]);
}

/// Issue 12 (a node lost for good, in part): the sessions a removed node
/// owned are taken in by the other nodes from their replicated records, so
/// a message published while such a client is offline is queued for it
/// instead of reaching nobody (the removed node's routes are gone). What
/// the dead node held itself is not recovered: it had no replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_a_removed_node_are_taken_in_by_the_others_issue_12() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let c = orphan_on_node_3(&mut cluster).await;
    cluster.remove(3);
    orphan_taken_in(&mut cluster, c).await;
}

/// The same with `remove_after_down_secs`: the leader removes node 3 by
/// itself once it has been out of contact that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_longer_than_remove_after_down_secs_is_removed_issue_12() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start_with(3, "remove_after_down_secs = 2\n");
    let c = orphan_on_node_3(&mut cluster).await;
    orphan_taken_in(&mut cluster, c).await;
    let leader = cluster.wait_converged(2);
    let log = strip_ansi(&cluster.node(leader).log());
    assert!(
        log.contains(
            "removing a node out of contact for longer than cluster.remove_after_down_secs node=3"
        ),
        "{log}"
    );
}

/// Issue 12 (durable forwards): while a subscriber's node is down, the
/// publishing node acknowledges QoS 1 messages for it once their copies are
/// on its own disk, not while they are only in the link's memory. Node 1
/// is then killed too; after both come back, every acknowledged message
/// reaches the subscriber, in order. Before, node 1's copies were lost with
/// its memory. The first message is published before node 1 counts node 2
/// down (it waits for node 2's answer, then is kept when node 2 is seen
/// down); the others after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_for_a_node_that_is_down_survive_a_kill_of_the_publishing_node_issue_12() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let mut c = connect(cluster.addr(2), "kept-sub", false, false).await;
    subscribe(&mut c, 1, &[("kept/#", 1)]).await;
    cluster.settle();
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    cluster.node(2).kill9();
    let mut p = connect(cluster.addr(1), "kept-pub", true, false).await;
    for i in 1..=40u16 {
        publish_acked(&mut p, "kept/a", 1, false, i, &i.to_be_bytes()).await;
    }
    cluster.node(1).kill9();
    drop(p);
    cluster.node(1).start();
    cluster.node(2).start();
    cluster.wait_converged(3);
    let log = strip_ansi(&cluster.node(1).log());
    assert!(
        log.contains("copies kept for nodes that were down queued again queued=40"),
        "{log}"
    );
    let mut c = connect(cluster.addr(2), "kept-sub", false, true).await;
    let want: Vec<Vec<u8>> = (1..=40u16).map(|i| i.to_be_bytes().to_vec()).collect();
    let mut got = Vec::new();
    let end = Instant::now() + SETTLE;
    while got.len() < want.len() && Instant::now() < end {
        got.extend(payloads(&collect(&mut c, Duration::from_millis(500)).await));
    }
    assert_eq!(got, want, "every acknowledged message, once, in order");
    // node 2 answered: node 1 no longer keeps them
    cluster.node(1).stop();
    cluster.node(1).start();
    cluster.wait_converged(3);
    let log = strip_ansi(&cluster.node(1).log());
    assert_eq!(log.matches("queued again").count(), 1, "{log}");
}

/// Issue 12 (a): a persistent subscriber's node loses its disk. 1,000
/// QoS 1 and 100 QoS 2 messages are acknowledged for the offline session
/// on node 2 (each stored there and on the session's replica before the
/// publisher's answer); node 2 is killed and its data directory deleted.
/// The client reconnects to node 3 and gets every one of them at once, from
/// the replica, each QoS 2 message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_node_lost_its_disk_resumes_from_its_replica_issue_12() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    queue_for_replicated(&mut cluster, "replicated").await;
    cluster.node(2).kill9();
    std::fs::remove_dir_all(&cluster.node(2).dir).unwrap();

    let mut c = connect(cluster.addr(3), "replicated", false, true).await;
    let got = collect_replicated(&mut c).await;
    assert_replicated_once(&got);
    let log = strip_ansi(&cluster.node(3).log());
    assert!(
        log.contains(
            "taking the session over from its replica client_id=replicated owner=2 messages=1100"
        ),
        "{log}"
    );
}

/// Issue 12 (a, the old node back): as above, but node 2 keeps its disk
/// and comes back after the client has had everything from the replica.
/// It learns the session was taken from its replica (the fail-over claim)
/// and does not hand over its copies again: nothing reaches the client a
/// second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_after_a_fail_over_does_not_deliver_the_replicated_copies_again_issue_12() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    queue_for_replicated(&mut cluster, "back").await;
    cluster.node(2).kill9();
    let mut c = connect(cluster.addr(3), "back", false, true).await;
    let got = collect_replicated(&mut c).await;
    assert_replicated_once(&got);

    cluster.node(2).start();
    cluster.wait_converged(3);
    let superseded = wait_until(SETTLE, Duration::from_millis(100), || {
        strip_ansi(&cluster.node(2).log())
            .contains("copies up to that seq are not sent again client_id=back owner=3")
    });
    assert!(superseded, "{}", cluster.node(2).log());
    let again = collect(&mut c, Duration::from_millis(1_500)).await;
    assert!(
        again.is_empty(),
        "nothing delivered twice: {} copies",
        again.len()
    );
    // and a new message still reaches the session on node 3
    let mut p = connect(cluster.addr(1), "back-pub2", true, false).await;
    publish_acked(&mut p, "rep/q1", 1, false, 1, b"after").await;
    let after = collect(&mut c, Duration::from_millis(1_000)).await;
    assert_eq!(payloads(&after), [b"after"]);
}

/// Issue 12 (c): a node removed for good. The session `rehomed` with 60
/// messages queued on node 3; node 3 is killed and removed. The member that
/// takes the session in is the one holding its replica, so the messages
/// come with it; it then places a new replica on the other member (the
/// replica count restored). A node 4 joins, and the new owner loses its
/// disk too: the client, back on the last original node, still gets every
/// message, from the re-created replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_nodes_sessions_keep_their_messages_and_get_a_new_replica_issue_12() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let mut c = connect(cluster.addr(3), "rehomed", false, false).await;
    subscribe(&mut c, 1, &[("rehome/q1", 1), ("rehome/q2", 2)]).await;
    cluster.settle();
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    let mut p = connect(cluster.addr(1), "rehome-pub", true, false).await;
    for i in 0..50u16 {
        publish_acked(
            &mut p,
            "rehome/q1",
            1,
            false,
            i + 1,
            format!("q1-{i}").as_bytes(),
        )
        .await;
    }
    for i in 0..10u16 {
        publish_acked(
            &mut p,
            "rehome/q2",
            2,
            false,
            51 + i,
            format!("q2-{i}").as_bytes(),
        )
        .await;
    }
    drop(p);
    cluster.node(3).kill9();
    cluster.remove(3);
    cluster.wait_converged(2);
    let mut taker = None;
    let taken = wait_until(SETTLE, Duration::from_millis(100), || {
        taker = [1, 2].into_iter().find(|&id| {
            strip_ansi(&cluster.node(id).log())
                .contains("session of a removed node taken in from its replica client_id=rehomed from=3 messages=60")
        });
        taker.is_some()
    });
    assert!(taken, "no node took the session in from its replica");
    let taker = taker.unwrap();
    let other = 3 - taker;
    cluster.add_node(4);
    cluster.settle();
    cluster.node(taker).kill9();
    std::fs::remove_dir_all(&cluster.node(taker).dir).unwrap();

    let mut c = connect(cluster.addr(other), "rehomed", false, true).await;
    let mut got = Vec::new();
    let end = Instant::now() + SETTLE;
    while got.len() < 60 && Instant::now() < end {
        got.extend(collect(&mut c, Duration::from_millis(500)).await);
    }
    got.extend(collect(&mut c, Duration::from_millis(500)).await);
    let q1: BTreeSet<Vec<u8>> = got
        .iter()
        .filter(|g| g.qos == QoS::AtLeastOnce)
        .map(|g| g.payload.clone())
        .collect();
    let want_q1: BTreeSet<Vec<u8>> = (0..50).map(|i| format!("q1-{i}").into_bytes()).collect();
    assert_eq!(q1, want_q1, "every QoS 1 message");
    let q2: Vec<Vec<u8>> = got
        .iter()
        .filter(|g| g.qos == QoS::ExactlyOnce)
        .map(|g| g.payload.clone())
        .collect();
    let want_q2: Vec<Vec<u8>> = (0..10).map(|i| format!("q2-{i}").into_bytes()).collect();
    assert_eq!(q2, want_q2, "every QoS 2 message once");
}

/// Issue 12 (item 4, replicas re-created): a session's replica node goes
/// down; within seconds its owner writes the whole session to the other
/// node. That node's replica then serves a fail-over: the owner loses its
/// disk, the first replica's node is back with its stale copy, and the
/// client still gets every message, those queued after the move included
/// (the newer replica wins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_node_goes_down_is_written_again_elsewhere_issue_12() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let mut c = connect(cluster.addr(2), "re-placed", false, false).await;
    subscribe(&mut c, 1, &[("replace/#", 1)]).await;
    cluster.settle();
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    let mut p = connect(cluster.addr(1), "re-placed-pub", true, false).await;
    for i in 0..100u16 {
        publish_acked(
            &mut p,
            "replace/a",
            1,
            false,
            i + 1,
            format!("m-{i}").as_bytes(),
        )
        .await;
    }
    drop(p);
    // The replica is on node 1 or node 3: stop node 1; if the replica was
    // there, node 2 moves it to node 3, else bring node 1 back and stop 3.
    let moved = |cluster: &mut TestCluster, from: u64| {
        wait_until(Duration::from_secs(8), Duration::from_millis(100), || {
            strip_ansi(&cluster.node(2).log()).contains(&format!(
                "session replica moved to another node client_id=re-placed from={from} to={}",
                4 - from
            ))
        })
    };
    cluster.node(1).kill9();
    let first = if moved(&mut cluster, 1) {
        1
    } else {
        cluster.node(1).start();
        cluster.wait_converged(3);
        cluster.node(3).kill9();
        assert!(moved(&mut cluster, 3), "{}", cluster.node(2).log());
        3
    };
    let second = 4 - first;
    // more messages, on the new replica only
    let mut p = connect(cluster.addr(second), "re-placed-pub2", true, false).await;
    for i in 100..120u16 {
        publish_acked(
            &mut p,
            "replace/a",
            1,
            false,
            i + 1,
            format!("m-{i}").as_bytes(),
        )
        .await;
    }
    drop(p);
    cluster.node(first).start();
    cluster.wait_converged(3);
    cluster.node(2).kill9();
    std::fs::remove_dir_all(&cluster.node(2).dir).unwrap();

    let mut c = connect(cluster.addr(first), "re-placed", false, true).await;
    let mut got = Vec::new();
    let end = Instant::now() + SETTLE;
    while got.len() < 120 && Instant::now() < end {
        got.extend(collect(&mut c, Duration::from_millis(500)).await);
    }
    let have: BTreeSet<Vec<u8>> = payloads(&got).into_iter().collect();
    let want: BTreeSet<Vec<u8>> = (0..120).map(|i| format!("m-{i}").into_bytes()).collect();
    assert_eq!(
        have, want,
        "every message, from the replica written after the move"
    );
}

/// Subscribes `client_id` on node 2 (`rep/q1` at QoS 1, `rep/q2` at QoS
/// 2), takes it offline and has 1,000 QoS 1 and 100 QoS 2 messages
/// acknowledged for it by node 1.
async fn queue_for_replicated(cluster: &mut TestCluster, client_id: &str) {
    let mut c = connect(cluster.addr(2), client_id, false, false).await;
    subscribe(&mut c, 1, &[("rep/q1", 1), ("rep/q2", 2)]).await;
    cluster.settle();
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    let mut p = connect(cluster.addr(1), &format!("{client_id}-pub"), true, false).await;
    for i in 0..1_000u16 {
        publish_acked(
            &mut p,
            "rep/q1",
            1,
            false,
            i + 1,
            format!("q1-{i}").as_bytes(),
        )
        .await;
    }
    for i in 0..100u16 {
        publish_acked(
            &mut p,
            "rep/q2",
            2,
            false,
            1_001 + i,
            format!("q2-{i}").as_bytes(),
        )
        .await;
    }
}

/// Reads until the 1,100 messages of [`queue_for_replicated`] are in (or
/// [`SETTLE`]), then a little longer for any copy that comes twice.
async fn collect_replicated(c: &mut Raw) -> Vec<Got> {
    let mut got = Vec::new();
    let end = Instant::now() + SETTLE;
    while got.len() < 1_100 && Instant::now() < end {
        got.extend(collect(c, Duration::from_millis(500)).await);
    }
    got.extend(collect(c, Duration::from_millis(500)).await);
    got
}

fn assert_replicated_once(got: &[Got]) {
    let q1: BTreeSet<Vec<u8>> = got
        .iter()
        .filter(|g| g.topic == "rep/q1")
        .map(|g| g.payload.clone())
        .collect();
    let want_q1: BTreeSet<Vec<u8>> = (0..1_000).map(|i| format!("q1-{i}").into_bytes()).collect();
    assert_eq!(q1.len(), want_q1.len(), "every QoS 1 message");
    assert_eq!(q1, want_q1);
    let q2: Vec<Vec<u8>> = got
        .iter()
        .filter(|g| g.qos == QoS::ExactlyOnce)
        .map(|g| g.payload.clone())
        .collect();
    let want_q2: Vec<Vec<u8>> = (0..100).map(|i| format!("q2-{i}").into_bytes()).collect();
    assert_eq!(q2, want_q2, "every QoS 2 message exactly once, in order");
}

/// Issue 12 (b, the publishing node lost for good): while the
/// subscriber's node 2 is down, node 1 acknowledges QoS 1 and QoS 2
/// messages once each copy for node 2 is on its own disk and on node 3's
/// (the second copy of a kept copy). Node 1 is then killed, its disk lost,
/// and removed; node 2 comes back. Node 3 takes the copies over from their
/// second copies and sends them to node 2: the client gets every one, QoS 2
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_kept_for_a_down_node_survive_the_loss_of_the_publishing_node_issue_12() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    let mut c = connect(cluster.addr(2), "kept-twice", false, false).await;
    subscribe(&mut c, 1, &[("twice/q1", 1), ("twice/q2", 2)]).await;
    cluster.settle();
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    cluster.node(2).kill9();
    let mut p = connect(cluster.addr(1), "kept-twice-pub", true, false).await;
    for i in 0..40u16 {
        publish_acked(
            &mut p,
            "twice/q1",
            1,
            false,
            i + 1,
            format!("q1-{i}").as_bytes(),
        )
        .await;
    }
    for i in 0..10u16 {
        publish_acked(
            &mut p,
            "twice/q2",
            2,
            false,
            41 + i,
            format!("q2-{i}").as_bytes(),
        )
        .await;
    }
    drop(p);
    cluster.node(1).kill9();
    std::fs::remove_dir_all(&cluster.node(1).dir).unwrap();
    cluster.node(2).start();
    cluster.remove_via(1, 3);
    cluster.wait_converged(2);
    let taken = wait_until(SETTLE, Duration::from_millis(100), || {
        strip_ansi(&cluster.node(3).log()).contains(
            "copies kept by a node removed from the cluster taken over from their second copies origin=1 sent=50",
        )
    });
    assert!(taken, "{}", cluster.node(3).log());
    let mut c = connect(cluster.addr(2), "kept-twice", false, true).await;
    let mut got = Vec::new();
    let end = Instant::now() + SETTLE;
    while got.len() < 50 && Instant::now() < end {
        got.extend(collect(&mut c, Duration::from_millis(500)).await);
    }
    got.extend(collect(&mut c, Duration::from_millis(500)).await);
    let q1: BTreeSet<Vec<u8>> = got
        .iter()
        .filter(|g| g.qos == QoS::AtLeastOnce)
        .map(|g| g.payload.clone())
        .collect();
    let want_q1: BTreeSet<Vec<u8>> = (0..40).map(|i| format!("q1-{i}").into_bytes()).collect();
    assert_eq!(q1, want_q1, "every QoS 1 message");
    let q2: Vec<Vec<u8>> = got
        .iter()
        .filter(|g| g.qos == QoS::ExactlyOnce)
        .map(|g| g.payload.clone())
        .collect();
    let want_q2: Vec<Vec<u8>> = (0..10).map(|i| format!("q2-{i}").into_bytes()).collect();
    assert_eq!(q2, want_q2, "every QoS 2 message once, in order");
}

/// A persistent session `orphan` with a subscription, offline, on node 3,
/// which is then killed. Returns the client's closed connection.
async fn orphan_on_node_3(cluster: &mut TestCluster) -> Raw {
    let mut c = connect(cluster.addr(3), "orphan", false, false).await;
    subscribe(&mut c, 1, &[("orphan/#", 1)]).await;
    cluster.settle();
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    cluster.node(3).kill9();
    c
}

/// Node 3 is being removed: once the cluster is nodes 1 and 2, one of them
/// takes `orphan` in, and a message published on the other while the
/// client is away reaches it when it connects.
async fn orphan_taken_in(cluster: &mut TestCluster, old: Raw) {
    drop(old);
    cluster.wait_converged(2);
    let mut taker = None;
    let taken = wait_until(SETTLE, Duration::from_millis(100), || {
        taker = [1, 2].into_iter().find(|&id| {
            strip_ansi(&cluster.node(id).log()).contains(
                "session of a removed node taken in from its replicated record client_id=orphan",
            )
        });
        taker.is_some()
    });
    assert!(taken, "no node took the session in");
    let taker = taker.unwrap();
    cluster.settle();
    let other = 3 - taker;
    let mut p = connect(cluster.addr(other), "orphan-pub", true, false).await;
    publish_acked(&mut p, "orphan/a", 1, false, 1, b"kept").await;
    let mut c = connect(cluster.addr(other), "orphan", false, true).await;
    assert_eq!(
        payloads(&collect(&mut c, Duration::from_millis(1_000)).await),
        [b"kept"]
    );
}

/// Issue 18: SIGTERM drains a node. A connected MQTT 5 client gets
/// DISCONNECT 0x9C with the Server Reference of another node and finds its
/// session there; an offline 3.1.1 session with queued QoS 1 and QoS 2
/// messages is handed to another node before the process exits 0, so its
/// client finds every message elsewhere while the drained node is still
/// down; the node restarts with its identity and rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_node_sessions_move_and_clients_are_sent_elsewhere_issue_18() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut cluster = TestCluster::start(3);
    // an MQTT 5 persistent session connected to node 2
    let expiry = build::prop::u32(0x11, 300);
    let mut v5 = Raw::mqtt5(cluster.addr(2), "drain5", true, &expiry).await;
    v5.send(&build::subscribe5(1, &[], &[("drain/#", 1)])).await;
    assert!(matches!(v5.recv().await, Some(Packet::SubAck(_))));
    // a 3.1.1 persistent session on node 2, offline, queueing
    let mut c = connect(cluster.addr(2), "drain3", false, false).await;
    subscribe(&mut c, 1, &[("drain/#", 2)]).await;
    c.send(&build::disconnect()).await;
    c.expect_closed().await;
    cluster.settle();
    let mut p = connect(cluster.addr(1), "drain-pub", true, false).await;
    for i in 1..=10u16 {
        publish_acked(&mut p, "drain/a", 1, false, i, &i.to_be_bytes()).await;
    }
    for i in 11..=20u16 {
        publish_acked(&mut p, "drain/b", 2, false, i, &i.to_be_bytes()).await;
    }
    // the 5.0 client read them all (QoS 1 to it)
    let mut live = 0;
    while live < 20 {
        match v5.recv().await.expect("PUBLISH") {
            Packet::Publish(m) => {
                v5.send(&build::ack5(0x40, m.packet_id.unwrap(), 0)).await;
                live += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // ... and node 2 has read the acknowledgements (a PINGREQ is answered
    // after the packets before it): unacknowledged copies would be sent
    // again after the move, as QoS 1 allows
    v5.send(&build::pingreq()).await;
    assert!(matches!(v5.recv().await, Some(Packet::PingResp)));

    // SIGTERM node 2: it drains and exits 0
    cluster.node(2).stop();
    let log = cluster.node(2).log();
    assert!(
        log.contains("drained") && log.contains("handed_over"),
        "drain logged:\n{log}"
    );
    // the 5.0 client was told where to go
    let reference = match v5.recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, broker::codec::ReasonCode::UseAnotherServer);
            d.properties
                .server_reference
                .expect("Server Reference")
                .to_string()
        }
        other => panic!("expected DISCONNECT 0x9C, got {other:?}"),
    };
    let there: SocketAddr = reference.parse().expect("host:port");
    assert!(
        [cluster.addr(1), cluster.addr(3)].contains(&there),
        "{there} is a live node"
    );
    // ... and finds its session there
    let mut v5 = Raw::connect(there).await;
    v5.version = broker::codec::ProtocolVersion::V5;
    v5.send(&build::connect5("drain5", false, 60, &expiry))
        .await;
    match v5.recv().await {
        Some(Packet::ConnAck(a)) => assert!(a.session_present, "session present at {there}"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // the offline session moved with its queue while node 2 is down
    let mut c = connect(cluster.addr(3), "drain3", false, true).await;
    let got = collect(&mut c, Duration::from_millis(700)).await;
    let want: Vec<Vec<u8>> = (1..=20u16).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(payloads(&got), want, "queued messages, in order, once");
    // new messages reach both where they are now
    publish_acked(&mut p, "drain/c", 1, false, 21, b"after").await;
    assert_eq!(
        payloads(&collect(&mut c, Duration::from_millis(500)).await),
        [b"after"]
    );
    match v5.recv().await {
        Some(Packet::Publish(m)) => assert_eq!(&m.payload[..], b"after"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }

    // node 2 comes back with its identity, holding none of the sessions it
    // handed over (it keeps a handed-over session until the taker's claim
    // is in, and drops it once adopted): nothing is sent a second time
    cluster.node(2).start();
    cluster.wait_converged(3);
    let restarted = cluster.node(2).log();
    let loaded = restarted
        .lines()
        .rfind(|l| l.contains("store loaded"))
        .map(strip_ansi)
        .expect("store loaded line");
    assert!(loaded.contains("sessions=0"), "{loaded}");
    assert!(
        collect(&mut c, Duration::from_millis(1500))
            .await
            .is_empty(),
        "no copy again from the drained node"
    );
}

/// How long a drain takes with many sessions (issue 18): N persistent
/// sessions on node 2, offline with 3 queued QoS 1 messages each; SIGTERM
/// node 2; its log's `drained` line says how many were handed over and how
/// long it took, and a sample of the sessions is checked on the other nodes
/// (session present, the 3 messages). Prints the figures; ignored by
/// default because 10,000 sessions take minutes on two cores:
/// `TERN_DRAIN_SESSIONS=1000,10000 cargo test -p broker --test cluster
/// drain_timing -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn drain_timing_with_many_sessions_issue_18() {
    let _one = ONE_AT_A_TIME.lock().await;
    let counts = std::env::var("TERN_DRAIN_SESSIONS").unwrap_or_else(|_| "1000".into());
    for n in counts
        .split(',')
        .map(|c| c.trim().parse::<usize>().unwrap())
    {
        drain_many(n).await;
    }
}

async fn drain_many(n: usize) {
    let mut cluster = TestCluster::start_with(3, "drain_timeout_secs = 600");
    let node2 = cluster.addr(2);
    let made = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| async move {
            let id = format!("drain-{i}");
            let mut c = connect(node2, &id, false, false).await;
            subscribe(&mut c, 1, &[("drain/all", 1)]).await;
            c.send(&build::disconnect()).await;
            c.expect_closed().await;
        })
        .buffer_unordered(200)
        .collect::<Vec<()>>()
        .await;
    // a clean session on node 2 that gets the messages too: once it has
    // the third, node 2 has handed all three to every session there
    let mut probe = connect(node2, "drain-probe", true, false).await;
    subscribe(&mut probe, 1, &[("drain/all", 1)]).await;
    cluster.settle();
    let mut p = connect(cluster.addr(1), "drain-pub", true, false).await;
    for i in 1..=3u16 {
        publish_acked(&mut p, "drain/all", 1, false, i, &i.to_be_bytes()).await;
    }
    let got = collect(&mut probe, Duration::from_millis(500)).await;
    assert_eq!(got.len(), 3, "the probe on node 2 got the messages");
    let setup = made.elapsed();

    let stopping = Instant::now();
    let status = cluster
        .node(2)
        .process
        .take()
        .unwrap()
        .terminate_within(Duration::from_secs(900));
    let stopped = stopping.elapsed();
    assert!(status.success(), "node 2 exit status {status}");
    let log = strip_ansi(&cluster.node(2).log());
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(" drained "))
        .unwrap_or_else(|| panic!("no drained line:\n{log}"));
    let field = |name: &str| -> u64 {
        let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("handed_over") as usize, n, "{line}");
    assert_eq!(field("left"), 0, "{line}");
    let elapsed_ms = field("elapsed_ms");
    // a sample of the sessions, on the nodes that adopted them
    for i in (0..n).step_by((n / 50).max(1)) {
        let id = format!("drain-{i}");
        let at = if i % 2 == 0 { 1 } else { 3 };
        let mut c = connect(cluster.addr(at), &id, false, true).await;
        let got = collect(&mut c, Duration::from_millis(500)).await;
        let want: Vec<Vec<u8>> = (1..=3u16).map(|i| i.to_be_bytes().to_vec()).collect();
        assert_eq!(payloads(&got), want, "{id} at node {at}");
    }
    println!(
        "drain of {n} sessions (3 queued messages each): drained in {elapsed_ms} ms \
         ({:.0} sessions/s), process exit {:.1} s after SIGTERM; setup {:.1} s",
        n as f64 * 1000.0 / elapsed_ms.max(1) as f64,
        stopped.as_secs_f64(),
        setup.as_secs_f64()
    );
}

/// `text` without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
