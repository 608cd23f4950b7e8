//! The HTTP endpoint of cluster nodes (real `tern` processes): `/readyz`
//! follows the raft state (503 until the cluster forms, 200 once it has a
//! leader and the log is applied, 503 again on a node cut off from the
//! majority), the cluster's metrics and status, and `$SYS/cluster/...`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::http::{eventually, get, json, scrape};
use common::process::{free_port, TernProcess};
use common::{build, Raw};

fn mqtt(node: &Node) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], node.mqtt_port))
}

/// How long a test waits for the cluster to reach a state (a guard against
/// hanging, not a performance bound).
const SETTLE: Duration = Duration::from_secs(30);

struct Node {
    id: u64,
    mqtt_port: u16,
    http: SocketAddr,
    cluster_addr: String,
    dir: PathBuf,
    config: PathBuf,
    process: Option<TernProcess>,
}

impl Node {
    fn start(&mut self) {
        let http = self.http.to_string();
        self.process = Some(TernProcess::start(
            &self.dir,
            self.mqtt_port,
            &[
                "--config",
                self.config.to_str().unwrap(),
                "--http-bind",
                &http,
            ],
        ));
    }

    fn signal(&self, name: &str) {
        self.process.as_ref().expect("running").signal(name);
    }
}

/// Three nodes defined (not started) with the same seeds, 20 ms raft ticks
/// and `$SYS` every second.
fn define(root: &std::path::Path) -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| Node {
            id,
            mqtt_port: free_port(),
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            cluster_addr: format!("127.0.0.1:{}", free_port()),
            dir: root.join(format!("node{id}")),
            config: root.join(format!("node{id}.toml")),
            process: None,
        })
        .collect();
    let seeds = nodes
        .iter()
        .map(|n| format!("\"{}={}\"", n.id, n.cluster_addr))
        .collect::<Vec<_>>()
        .join(", ");
    for n in &mut nodes {
        let text = format!(
            "sys_interval_secs = 1\n[cluster]\nnode_id = {}\nlisten = \"{}\"\nseeds = [{seeds}]\ntick_ms = 20\nelection_ticks = 10\n",
            n.id, n.cluster_addr
        );
        std::fs::write(&n.config, text).unwrap();
    }
    nodes
}

/// Polls `/readyz` of `node` until its status is `want`; returns the last
/// answer's JSON.
async fn wait_ready(node: &Node, want: u16) -> serde_json::Value {
    let end = tokio::time::Instant::now() + SETTLE;
    loop {
        let answer = get(node.http, "/readyz").await;
        if answer.status == want {
            return json(&answer);
        }
        assert!(
            tokio::time::Instant::now() < end,
            "node {}: /readyz still {} ({}) after {SETTLE:?}",
            node.id,
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readyz_follows_the_cluster_forming_and_losing_its_majority() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = define(root.path());

    // alone, node 1 cannot found the cluster: alive, not ready
    nodes[0].start();
    assert_eq!(get(nodes[0].http, "/healthz").await.status, 200);
    let alone = get(nodes[0].http, "/readyz").await;
    assert_eq!(alone.status, 503, "{}", alone.body);
    let body = json(&alone);
    assert_eq!(body["ready"], false);
    assert!(
        body["reason"].as_str().unwrap().contains("joining"),
        "{body}"
    );

    nodes[1].start();
    nodes[2].start();
    for node in &nodes {
        assert_eq!(wait_ready(node, 200).await["ready"], true);
    }

    // the cluster's figures on each node, and its status as the CLI has it
    let s = scrape(nodes[0].http).await;
    assert_eq!(s.value("tern_cluster_node_id", &[]), 1.0);
    assert_eq!(s.value("tern_cluster_members", &[]), 3.0);
    assert_eq!(s.value("tern_cluster_ready", &[]), 1.0);
    let leader = s.value("tern_cluster_leader", &[]);
    assert!((1.0..=3.0).contains(&leader), "leader {leader}");
    assert!(s.value("tern_cluster_applied_index", &[]) >= 1.0);
    for peer in ["2", "3"] {
        assert!(s.find("tern_cluster_peer_up", &[("peer", peer)]).is_some());
    }
    let api = json(&get(nodes[0].http, "/api/v1/cluster/status").await);
    let cli = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "cluster",
            "status",
            "--json",
            "--address",
            &nodes[0].cluster_addr,
        ])
        .output()
        .unwrap();
    assert!(cli.status.success());
    let cli: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    for key in ["node_id", "leader", "role"] {
        assert_eq!(api[key], cli[key], "{key}: {api} vs {cli}");
    }
    let ids = |v: &serde_json::Value| -> Vec<u64> {
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(ids(&api), [1, 2, 3]);
    assert_eq!(ids(&api), ids(&cli));

    // $SYS/cluster/... on node 1, read by mosquitto_sub
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &nodes[0].mqtt_port.to_string()])
        .args(["-t", "$SYS/cluster/#", "-v", "-W", "2"])
        .output()
        .expect("mosquitto_sub runs");
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(out.lines().any(|l| l == "$SYS/cluster/nodes 3"), "{out}");
    assert!(out.lines().any(|l| l == "$SYS/cluster/node_id 1"), "{out}");
    assert!(
        out.lines()
            .any(|l| l == format!("$SYS/cluster/leader {leader}")),
        "{out}"
    );

    // messages forwarded from node 2 to a subscriber on node 1, per peer
    let mut sub = Raw::mqtt(mqtt(&nodes[0]), "fw-sub", true).await;
    sub.send(&build::subscribe(1, &[("fw/#", 1)])).await;
    assert_eq!(sub.recv_bytes().await.unwrap(), build::suback(1, &[1]));
    let mut publisher = Raw::mqtt(mqtt(&nodes[1]), "fw-pub", true).await;
    // node 2 learns the route at its next raft message: probe until one
    // arrives
    let mut probes = 0u16;
    loop {
        probes += 1;
        publisher
            .send(&build::publish("fw/probe", 0, false, false, 0, b"p"))
            .await;
        if sub
            .recv_bytes_within(Duration::from_millis(100))
            .await
            .is_some()
        {
            break;
        }
        assert!(probes < 300, "node 2 never forwarded to node 1");
    }
    let forwarded = |s: &common::http::Scrape| {
        s.find("tern_cluster_forwarded_total", &[("peer", "1")])
            .unwrap_or(0.0)
    };
    let answered = |s: &common::http::Scrape| {
        s.find(
            "tern_cluster_forward_duration_seconds_count",
            &[("peer", "1")],
        )
        .unwrap_or(0.0)
    };
    // every probe answered: the forward latency counted each
    eventually(|| async {
        let s = scrape(nodes[1].http).await;
        answered(&s) == forwarded(&s)
    })
    .await;
    let before = scrape(nodes[1].http).await;
    for i in 1..=10u16 {
        publisher
            .send(&build::publish("fw/x", 1, false, false, i, b"m"))
            .await;
        assert_eq!(publisher.recv_bytes().await.unwrap(), build::puback(i));
    }
    // (a late probe may come first)
    let mut got = 0;
    while got < 10 {
        match sub.recv().await {
            Some(broker::codec::Packet::Publish(p)) if &p.topic[..] == "fw/x" => {
                sub.send(&build::puback(p.packet_id.unwrap())).await;
                got += 1;
            }
            Some(broker::codec::Packet::Publish(_)) => {}
            other => panic!("PUBLISH expected, got {other:?}"),
        }
    }
    let after = scrape(nodes[1].http).await;
    assert_eq!(forwarded(&after) - forwarded(&before), 10.0);
    // a QoS 1 publisher is acknowledged once node 1 answered
    assert_eq!(answered(&after) - answered(&before), 10.0);
    let latency = after.buckets("tern_cluster_forward_duration_seconds");
    assert_eq!(latency.last().unwrap().1, answered(&after));

    // the cluster-wide view on node 2: its publisher, node 1's subscriber
    // and the reader itself are connected
    let cluster_view = |topic: &str| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &nodes[1].mqtt_port.to_string()])
            .args(["-t", topic, "-v", "-W", "3"])
            .output()
            .expect("mosquitto_sub runs")
            .stdout
    };
    let end = tokio::time::Instant::now() + SETTLE;
    loop {
        let out = String::from_utf8(cluster_view("$SYS/cluster/clients/connected")).unwrap();
        if out.lines().any(|l| l == "$SYS/cluster/clients/connected 3") {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "{out}");
    }
    let out = String::from_utf8(cluster_view("$SYS/cluster/retained messages/count")).unwrap();
    assert!(
        out.lines()
            .any(|l| l == "$SYS/cluster/retained messages/count 0"),
        "{out}"
    );
    assert_eq!(
        after.value("tern_cluster_forward_refused_total", &[("peer", "1")]),
        0.0
    );
    drop((sub, publisher));

    // node 1 cut off from the majority: the others are stopped
    nodes[1].signal("STOP");
    nodes[2].signal("STOP");
    let body = wait_ready(&nodes[0], 503).await;
    assert_eq!(body["ready"], false);
    assert!(
        body["reason"].as_str().unwrap().contains("leader"),
        "{body}"
    );
    // still alive, and its metrics say why
    assert_eq!(get(nodes[0].http, "/healthz").await.status, 200);
    let s = scrape(nodes[0].http).await;
    assert_eq!(s.value("tern_cluster_ready", &[]), 0.0);
    assert_eq!(s.value("tern_cluster_leader", &[]), 0.0);

    // back together: ready again
    nodes[1].signal("CONT");
    nodes[2].signal("CONT");
    wait_ready(&nodes[0], 200).await;
}
