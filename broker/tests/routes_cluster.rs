//! IoT hub routes in a 3-node cluster of real `tern` processes: a route made
//! through the admin API on one node runs on every node, and each message is
//! routed once, by the node its publisher is connected to.

mod common;

use std::collections::BTreeMap;

use common::hub::{
    api, next_json, publish_acked, rest_route_json, sys_subscriber, HttpTarget, HubCluster, POLL,
};
use common::{check_for, Raw, PATIENCE};

#[tokio::test]
async fn a_route_made_on_one_node_runs_on_all_and_routes_each_message_once() {
    let target = HttpTarget::start().await;
    let cluster = HubCluster::start(3, "").await;
    let (_, http1, _) = &cluster.nodes[0];
    let def = rest_route_json("everywhere", "fleet/#", &target.url("/in"));
    let (status, body) = api(*http1, "POST", "/routes", Some(def)).await;
    assert_eq!(status, 201, "{body}");
    // replicated: every node runs it
    for (i, (_, http, _)) in cluster.nodes.iter().enumerate() {
        let mut shown = serde_json::Value::Null;
        let found = common::poll_until(PATIENCE, POLL, async || {
            let (status, body) = api(*http, "GET", "/routes/everywhere", None).await;
            shown = body;
            status == 200
        })
        .await;
        assert!(found, "node {}: {shown}\n{}", i + 1, cluster.logs());
        assert_eq!(shown["origin"], "api");
    }

    // N messages spread over the three nodes
    let n = 30u16;
    let mut publishers = Vec::new();
    for (i, (mqtt, _, _)) in cluster.nodes.iter().enumerate() {
        publishers.push(Raw::mqtt(*mqtt, &format!("pub-{}", i + 1), true).await);
    }
    for i in 1..=n {
        let p = &mut publishers[usize::from(i) % 3];
        publish_acked(
            p,
            &format!("fleet/{}", i % 4),
            i,
            format!("m{i}").as_bytes(),
        )
        .await;
    }
    let all = check_for(PATIENCE, POLL, || target.received().len() >= usize::from(n)).await;
    assert!(all, "got {:?}\n{}", target.bodies(), cluster.logs());
    // nothing more comes: each message exactly once
    tokio::time::sleep(common::QUIET).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for body in target.bodies() {
        *counts.entry(body).or_default() += 1;
    }
    assert_eq!(counts.len(), usize::from(n), "{counts:?}");
    assert!(counts.values().all(|c| *c == 1), "{counts:?}");
    // each node used its own id in the idempotency key
    let nodes: std::collections::BTreeSet<String> = target
        .received()
        .iter()
        .map(|r| {
            r.header("Idempotency-Key")
                .split('-')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(nodes.into_iter().collect::<Vec<_>>(), ["1", "2", "3"]);

    // deleted on one node: gone on all
    let (_, http3, _) = &cluster.nodes[2];
    let (status, _) = api(*http3, "DELETE", "/routes/everywhere", None).await;
    assert_eq!(status, 200);
    for (_, http, _) in &cluster.nodes {
        let gone = common::poll_until(PATIENCE, POLL, async || {
            api(*http, "GET", "/routes/everywhere", None).await.0 == 404
        })
        .await;
        assert!(gone, "{}", cluster.logs());
    }
}

#[tokio::test]
async fn a_new_raft_leader_is_reported_as_a_cluster_event() {
    let mut cluster = HubCluster::start(3, "").await;
    let (_, http1, _) = &cluster.nodes[0];
    let (_, status) = api(*http1, "GET", "/cluster/status", None).await;
    let old = status["leader"].as_u64().expect("a leader");
    // watch from a node that stays
    let watcher = if old == 1 { 1 } else { 0 };
    let (mqtt, _, _) = &cluster.nodes[watcher];
    let mut events = sys_subscriber(*mqtt, "ops", &["$SYS/events/+/cluster/#"]).await;
    let (_, _, leader) = cluster.nodes.remove(old as usize - 1);
    leader.kill9();
    // (the election at start-up may be reported first)
    loop {
        let (topic, event) = next_json(&mut events, "$SYS/events/").await;
        assert!(topic.contains("/cluster/"), "{topic}");
        assert_eq!(event["object_type"], "cluster");
        let leader = event["details"]["leader"].as_u64();
        if event["msg"] == "raft leader changed" && leader.is_some_and(|l| l != old) {
            // reported by a surviving node (events reach subscribers on
            // every node)
            let node: u64 = topic.rsplit('/').next().unwrap().parse().unwrap();
            assert!(
                topic.starts_with("$SYS/events/info/cluster/") && node != old,
                "{topic}"
            );
            break;
        }
    }
}
