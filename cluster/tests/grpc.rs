//! Several `Cluster` instances in one process over real tonic servers and
//! sockets on 127.0.0.1: elections, replicated routes, forwarding through a
//! link that is cut and restored, takeover, restart, join and removal.
//! Every wait is bounded (`wait_until`).

mod common {
    pub mod nodes;
    pub mod proxy;
}

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use bytes::Bytes;
use cluster::{
    ClusterConfig, Error, ForwardedPublish, SessionInfo, SessionState, SessionSubscription,
};
use common::nodes::*;
use storage::{OutgoingRecord, StoredMessage};

fn publish(i: u64) -> ForwardedPublish {
    ForwardedPublish {
        id: 0,
        topic: format!("t/{i}"),
        payload: Bytes::from(i.to_be_bytes().to_vec()),
        qos: 1,
        retain: false,
        properties: Bytes::new(),
        expires_at_ms: None,
        origin_node: 0,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_replicate_routes() {
    init_tracing();
    let nodes = cluster_of(3, &[]).await;
    wait_until(Duration::from_secs(10), "an agreed leader", || {
        agreed_leader(&nodes).is_some()
    })
    .await;

    nodes[1]
        .cluster()
        .add_route("sensors/#".into())
        .await
        .unwrap();
    // The proposer sees its write as soon as the call returns.
    assert!(nodes[1].cluster().routes()["sensors/#"].contains(&2));
    wait_until(Duration::from_secs(10), "the route on every node", || {
        nodes.iter().all(|n| {
            n.cluster()
                .routes()
                .get("sensors/#")
                .is_some_and(|nodes| nodes.contains(&2))
        })
    })
    .await;
    wait_until(
        Duration::from_secs(5),
        "a RouteAdded event on node 1",
        || {
            nodes[0]
                .broker
                .lock()
                .events
                .iter()
                .any(|e| e.contains("RouteAdded") && e.contains("sensors/#"))
        },
    )
    .await;
    // Members announced their addresses.
    wait_until(Duration::from_secs(10), "announced members", || {
        nodes[0]
            .cluster()
            .members()
            .iter()
            .all(|m| !m.mqtt_address.is_empty())
            && nodes[0].cluster().members().len() == 3
    })
    .await;
    let status = nodes[0].cluster().status();
    assert_eq!(status.voters, [1, 2, 3]);
    let remote =
        cluster::admin::remote_status(&nodes[2].advertise().to_string(), Duration::from_secs(5))
            .await
            .unwrap();
    assert_eq!(remote.node_id, 3);
    assert_eq!(remote.voters, [1, 2, 3]);
    assert!(remote.leader.is_some() && remote.ready && remote.initialized);
    assert_eq!(remote.members.len(), 3);
    assert!(status.commit_index >= status.applied_index && status.applied_index > 0);
    assert_eq!(status.peers.len(), 2);
    for mut node in nodes {
        stop(&mut node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_is_a_cluster_of_one_without_setup() {
    init_tracing();
    let (mut node, listener) = prepare(1, false).await;
    start(&mut node, listener, config(1, Vec::new())).await;
    wait_until(Duration::from_secs(10), "ready", || {
        node.broker.lock().ready
    })
    .await;
    let c = node.cluster().clone();
    c.add_route("a/+".into()).await.unwrap();
    c.add_route("a/+".into()).await.unwrap();
    assert_eq!(
        c.claim_session("dev".into(), SessionInfo::default(), None, None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(c.session_owner("dev"), Some(1));
    c.set_retained(StoredMessage {
        topic: "r".into(),
        payload: Bytes::from_static(b"v"),
        qos: 1,
        retain: true,
        properties: Bytes::new(),
        expires_at_ms: None,
    })
    .await
    .unwrap();
    assert_eq!(c.retained().len(), 1);
    // Two local subscribers: the route stays until both are gone.
    c.remove_route("a/+".into()).await.unwrap();
    assert!(c.routes().contains_key("a/+"));
    c.remove_route("a/+".into()).await.unwrap();
    assert!(!c.routes().contains_key("a/+"));
    c.release_session("dev".into()).await.unwrap();
    assert_eq!(c.session_owner("dev"), None);
    stop(&mut node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_through_a_cut_and_restored_link_loses_nothing() {
    init_tracing();
    let nodes = cluster_of(3, &[2]).await;
    let sender = nodes[0].cluster().clone();
    let total = 2000u64;
    let mut calls = Vec::new();
    for i in 0..total {
        let sender = sender.clone();
        calls.push(tokio::spawn(
            async move { sender.forward(2, publish(i)).await },
        ));
        if i == total / 2 {
            // Let half go out, then break the link for a while.
            tokio::time::sleep(Duration::from_millis(50)).await;
            nodes[1].proxy.as_ref().unwrap().cut();
            tokio::time::sleep(Duration::from_millis(300)).await;
            nodes[1].proxy.as_ref().unwrap().restore();
        }
    }
    for call in calls {
        tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("forward resolves")
            .unwrap()
            .expect("forward acked");
    }
    let forwarded = std::mem::take(&mut nodes[1].broker.lock().forwarded);
    let received: BTreeSet<Bytes> = forwarded.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(received.len() as u64, total, "every message arrived");
    assert!(forwarded.iter().all(|m| m.origin_node == 1));
    let duplicates = forwarded.len() as u64 - total;
    assert_eq!(duplicates, 0, "resends are recognized by the receiver");
    assert!(matches!(
        sender.forward(9, publish(0)).await,
        Err(Error::UnknownNode(9))
    ));
    for mut node in nodes {
        stop(&mut node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_an_unreachable_peer_are_bounded_and_delivered_once_it_is_back() {
    init_tracing();
    let mut nodes = cluster_of(3, &[2]).await;
    // node 1 again, with a small window and queue
    let seeds = seeds_of(&nodes);
    stop(&mut nodes[0]).await;
    let mut cfg = config(1, seeds);
    cfg.forward_window = 4;
    cfg.forward_queue_limit = 8;
    restart(&mut nodes[0], cfg).await;
    wait_until(Duration::from_secs(20), "node 1 ready", || {
        nodes[0].broker.lock().ready
    })
    .await;
    let sender = nodes[0].cluster().clone();
    nodes[1].proxy.as_ref().unwrap().cut();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..50u64 {
        match sender.forward_in_order(2, publish(i)) {
            Ok(answer) => accepted.push(tokio::spawn(answer)),
            Err(Error::Backlog { node: 2, .. }) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // the queue (8) plus at most the window (4) the link took
    assert!(
        (8..=12).contains(&accepted.len()),
        "{} accepted, {refused} refused",
        accepted.len()
    );
    assert_eq!(accepted.len() + refused, 50);
    nodes[1].proxy.as_ref().unwrap().restore();
    for answer in accepted {
        tokio::time::timeout(Duration::from_secs(30), answer)
            .await
            .expect("answered once the peer is back")
            .unwrap()
            .expect("acked");
    }
    // and the link takes new messages again
    sender.forward(2, publish(99)).await.expect("acked");
    for mut node in nodes {
        stop(&mut node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_returns_the_owners_session_state() {
    init_tracing();
    let nodes = cluster_of(2, &[]).await;
    let state = SessionState {
        client_id: "dev-7".into(),
        info: SessionInfo {
            subscriptions: vec![SessionSubscription {
                filter: "cmd/dev-7/#".into(),
                options: Bytes::from_static(&[0x01]),
            }],
            session_expiry_interval: 3600,
            disconnected_at_ms: None,
            next_seq: 9,
        },
        protocol_level: 5,
        outgoing: vec![(
            4,
            OutgoingRecord {
                released: false,
                uid: 0x0bad_cafe,
                message: StoredMessage {
                    topic: "cmd/dev-7/reboot".into(),
                    payload: Bytes::from_static(b"now"),
                    qos: 1,
                    retain: false,
                    properties: Bytes::new(),
                    expires_at_ms: Some(1_700_000_000_000),
                },
            },
        )],
        incoming_qos2: vec![12],
        recent_uids: vec![42],
        next_seq: 9,
    };
    nodes[0]
        .broker
        .lock()
        .sessions
        .insert("dev-7".into(), state.clone());
    nodes[0]
        .cluster()
        .claim_session("dev-7".into(), state.info.clone(), None, None)
        .await
        .unwrap();

    let taker = nodes[1].cluster();
    assert_eq!(taker.take_over(1, "dev-7".into()).await.unwrap(), state);
    assert_eq!(
        taker
            .claim_session("dev-7".into(), state.info.clone(), Some(1), None)
            .await
            .unwrap(),
        Some(1)
    );
    let err = taker.take_over(1, "dev-7".into()).await.unwrap_err();
    assert!(
        matches!(err, Error::SessionNotFound { node: 1, .. }),
        "{err}"
    );
    // The old owner lost the session: its update is refused.
    wait_until(Duration::from_secs(5), "the owner change on node 1", || {
        nodes[0].cluster().session_owner("dev-7") == Some(2)
    })
    .await;
    let err = nodes[0]
        .cluster()
        .update_session("dev-7".into(), SessionInfo::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotOwner { owner: Some(2), .. }),
        "{err}"
    );
    for mut node in nodes {
        stop(&mut node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_rejoins_from_its_data_directory() {
    init_tracing();
    let mut nodes = cluster_of(3, &[]).await;
    for i in 0..20 {
        nodes[i % 3]
            .cluster()
            .add_route(format!("before/{i}"))
            .await
            .unwrap();
    }
    wait_until(Duration::from_secs(10), "node 3 caught up", || {
        nodes[2].cluster().routes().len() == 20
    })
    .await;
    let seeds = seeds_of(&nodes);
    stop(&mut nodes[2]).await;
    for i in 0..20 {
        nodes[i % 2]
            .cluster()
            .add_route(format!("while-down/{i}"))
            .await
            .unwrap();
    }
    restart(&mut nodes[2], config(3, seeds)).await;
    // Right after start the state of before the stop is there.
    assert!(nodes[2].cluster().routes().len() >= 20);
    wait_until(Duration::from_secs(15), "node 3 caught up again", || {
        nodes[2].cluster().routes() == nodes[0].cluster().routes()
    })
    .await;
    wait_until(Duration::from_secs(10), "node 3 ready", || {
        nodes[2].broker.lock().ready
    })
    .await;
    nodes[2].cluster().add_route("after".into()).await.unwrap();
    for mut node in nodes {
        stop(&mut node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_and_one_is_removed_while_proposals_flow() {
    init_tracing();
    let nodes = cluster_of(3, &[]).await;
    let seeds: Vec<cluster::Seed> = nodes
        .iter()
        .map(|n| cluster::Seed {
            id: None, // by address only, as a StatefulSet's DNS names
            address: n.advertise().to_string(),
        })
        .collect();
    let proposer = nodes[0].cluster().clone();
    let stop_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop_flag = Arc::clone(&stop_flag);
        tokio::spawn(async move {
            let mut done = 0u64;
            while !stop_flag.load(std::sync::atomic::Ordering::SeqCst) {
                proposer.add_route(format!("load/{done}")).await?;
                done += 1;
            }
            Ok::<u64, Error>(done)
        })
    };

    let (mut fourth, listener) = prepare(4, false).await;
    start(&mut fourth, listener, config(4, seeds)).await;
    wait_until(Duration::from_secs(20), "node 4 ready", || {
        fourth.broker.lock().ready
    })
    .await;
    assert_eq!(fourth.cluster().status().voters, [1, 2, 3, 4]);
    wait_until(
        Duration::from_secs(10),
        "node 4's addresses replicated",
        || {
            nodes[0]
                .cluster()
                .members()
                .iter()
                .any(|m| m.id == 4 && m.address == fourth.advertise().to_string())
        },
    )
    .await;

    cluster::admin::remote_leave(
        &nodes[1].advertise().to_string(),
        3,
        Duration::from_secs(15),
    )
    .await
    .unwrap();
    wait_until(Duration::from_secs(10), "node 3 removed everywhere", || {
        [&nodes[0], &nodes[1], &fourth]
            .iter()
            .all(|n| n.cluster().status().voters == [1, 2, 4])
    })
    .await;
    wait_until(
        Duration::from_secs(10),
        "node 3 told it was removed",
        || {
            nodes[2].cluster().status().removed
                && nodes[2].broker.lock().events.iter().any(|e| e == "Removed")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_flag.store(true, std::sync::atomic::Ordering::SeqCst);
    let done = load.await.unwrap().expect("every proposal applied");
    assert!(done > 0);
    wait_until(Duration::from_secs(10), "node 4 has every route", || {
        fourth.cluster().routes() == nodes[0].cluster().routes()
    })
    .await;
    stop(&mut fourth).await;
    for mut node in nodes {
        stop(&mut node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_seeded_by_name_found_the_cluster_together() {
    init_tracing();
    let mut prepared = Vec::new();
    for id in 1..=3 {
        prepared.push(prepare(id, false).await);
    }
    // `localhost:port`, no ids: each node learns the others' ids by asking.
    let seeds = ClusterConfig::parse_seeds(
        &prepared
            .iter()
            .map(|(n, _)| format!("localhost:{}", n.listen.port()))
            .collect::<Vec<_>>()
            .join(","),
    )
    .unwrap();
    let mut nodes = Vec::new();
    for (mut node, listener) in prepared {
        let config = config(node.id, seeds.clone());
        start(&mut node, listener, config).await;
        nodes.push(node);
    }
    wait_until(Duration::from_secs(20), "every node ready", || {
        nodes.iter().all(|n| n.broker.lock().ready)
    })
    .await;
    for n in &nodes {
        assert_eq!(n.cluster().status().voters, [1, 2, 3]);
    }
    nodes[2].cluster().add_route("x".into()).await.unwrap();
    wait_until(Duration::from_secs(5), "route on node 1", || {
        nodes[0].cluster().routes().contains_key("x")
    })
    .await;
    // The event may reach the broker a moment after the state shows it.
    wait_until(
        Duration::from_secs(5),
        "a RouteAdded event on node 1",
        || {
            nodes[0]
                .broker
                .lock()
                .events
                .iter()
                .any(|e| e.starts_with("RouteAdded"))
        },
    )
    .await;
    for mut node in nodes {
        stop(&mut node).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_stops_the_node_and_is_reported() {
    init_tracing();
    let (mut node, listener) = prepare(1, false).await;
    start(&mut node, listener, config(1, Vec::new())).await;
    wait_until(Duration::from_secs(10), "ready", || {
        node.broker.lock().ready
    })
    .await;
    let c = node.cluster().clone();
    c.add_route("before".into()).await.unwrap();
    // The store goes away under the running node: its next raft write or
    // read fails (a read failure inside raft-rs is a panic there, caught).
    node.store.take().unwrap().close().unwrap();
    let closed = |reason: &str| reason.to_lowercase().contains("closed");
    let err = c.add_route("after".into()).await.unwrap_err();
    assert!(
        matches!(err, Error::Stopped(ref reason) if closed(reason)),
        "{err}"
    );
    let status = c.status();
    assert!(status.failed.as_deref().is_some_and(closed), "{status:?}");
    wait_until(Duration::from_secs(5), "a Failed event", || {
        node.broker
            .lock()
            .events
            .iter()
            .any(|e| e.starts_with("Failed"))
    })
    .await;
    // Reads of the last applied state still work.
    assert!(c.routes().contains_key("before"));
    stop(&mut node).await;
}
