//! Several real `Cluster` instances in one test process: real tonic servers
//! on 127.0.0.1 ports, a store each in a temp directory, and a stand-in
//! broker per node that records events, acks forwarded messages and answers
//! takeovers.

#![allow(dead_code)] // each test binary uses a different subset

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use cluster::{Cluster, ClusterConfig, ClusterEvent, ForwardedPublish, Seed, SessionState};
use parking_lot::Mutex;
use storage::{Store, StoreConfig};
use tempfile::TempDir;
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};

use super::proxy::Proxy;

/// What a node's stand-in broker saw.
#[derive(Default)]
pub struct Broker {
    pub forwarded: Vec<ForwardedPublish>,
    pub events: Vec<String>,
    pub ready: bool,
    /// Sessions handed over on a takeover request, by client id.
    pub sessions: HashMap<String, SessionState>,
}

pub struct TestNode {
    pub id: u64,
    pub cluster: Option<Cluster>,
    pub store: Option<Store>,
    pub dir: TempDir,
    /// Where its gRPC server listens.
    pub listen: SocketAddr,
    /// In front of `listen` if the node is proxied; its advertised address.
    pub proxy: Option<Proxy>,
    pub broker: Arc<Mutex<Broker>>,
    pump: Option<JoinHandle<()>>,
}

impl TestNode {
    pub fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("node is running")
    }

    pub fn advertise(&self) -> SocketAddr {
        self.proxy.as_ref().map_or(self.listen, |p| p.addr)
    }
}

/// Test timings: 20 ms ticks, elections after 200 to 400 ms.
pub fn config(id: u64, seeds: Vec<Seed>) -> ClusterConfig {
    ClusterConfig {
        seeds,
        tick: Duration::from_millis(20),
        election_ticks: 10,
        heartbeat_ticks: 2,
        rpc_timeout: Duration::from_secs(1),
        proposal_timeout: Duration::from_secs(15),
        join_retry: Duration::from_millis(100),
        mqtt_advertise: format!("127.0.0.1:{}", 18830 + id),
        ..ClusterConfig::new(id, "127.0.0.1:0".parse().unwrap())
    }
}

pub fn store_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        path: dir.to_owned(),
        cache_capacity_bytes: 8 * 1024 * 1024,
        flush_every_ms: Some(500),
    }
}

/// Binds a listener for node `id`, optionally behind a proxy.
pub async fn prepare(id: u64, proxied: bool) -> (TestNode, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listen = listener.local_addr().unwrap();
    let proxy = if proxied {
        Some(Proxy::start(listen).await)
    } else {
        None
    };
    let node = TestNode {
        id,
        cluster: None,
        store: None,
        dir: tempfile::tempdir().unwrap(),
        listen,
        proxy,
        broker: Arc::default(),
        pump: None,
    };
    (node, listener)
}

/// Starts `node` on `listener` with `config`, and its stand-in broker.
pub async fn start(node: &mut TestNode, listener: TcpListener, mut config: ClusterConfig) {
    config.advertise = node.advertise().to_string();
    let store = Store::open(&store_config(node.dir.path())).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let cluster = Cluster::start_with_listener(config, listener, store.clone(), tx)
        .await
        .expect("cluster starts");
    node.pump = Some(tokio::spawn(pump(rx, Arc::clone(&node.broker))));
    node.cluster = Some(cluster);
    node.store = Some(store);
}

async fn pump(mut rx: mpsc::UnboundedReceiver<ClusterEvent>, broker: Arc<Mutex<Broker>>) {
    while let Some(event) = rx.recv().await {
        let mut b = broker.lock();
        match event {
            ClusterEvent::Forwarded { msg, ack } => {
                b.forwarded.push(msg);
                let _ = ack.send(Ok(()));
            }
            ClusterEvent::TakeoverRequested {
                client_id, reply, ..
            } => {
                let _ = reply.send(b.sessions.remove(&client_id));
            }
            ClusterEvent::BecameReady => b.ready = true,
            other => b.events.push(format!("{other:?}")),
        }
    }
}

/// Seeds naming `nodes` by id at the addresses the others reach them at.
pub fn seeds_of<'a>(nodes: impl IntoIterator<Item = &'a TestNode>) -> Vec<Seed> {
    nodes
        .into_iter()
        .map(|node| Seed {
            id: Some(node.id),
            address: node.advertise().to_string(),
        })
        .collect()
}

/// `n` nodes seeded with each other by id, started, and ready.
pub async fn cluster_of(n: u64, proxied: &[u64]) -> Vec<TestNode> {
    let mut prepared = Vec::new();
    for id in 1..=n {
        prepared.push(prepare(id, proxied.contains(&id)).await);
    }
    let seeds = seeds_of(prepared.iter().map(|(node, _)| node));
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
    nodes
}

/// Stops a node and closes its store; its directory stays.
pub async fn stop(node: &mut TestNode) {
    if let Some(cluster) = node.cluster.take() {
        cluster.shutdown().await;
    }
    if let Some(pump) = node.pump.take() {
        pump.abort();
    }
    if let Some(store) = node.store.take() {
        store.close().unwrap();
    }
}

/// Restarts a stopped node on its directory and its old listen port.
pub async fn restart(node: &mut TestNode, config: ClusterConfig) {
    let listener = bind_again(node.listen).await;
    *node.broker.lock() = Broker::default();
    start(node, listener, config).await;
}

async fn bind_again(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    }
}

/// The leader every running node agrees on, if any.
pub fn agreed_leader(nodes: &[TestNode]) -> Option<u64> {
    let running: Vec<_> = nodes.iter().filter_map(|n| n.cluster.as_ref()).collect();
    let first = running.first()?.status().leader?;
    running
        .iter()
        .all(|c| c.status().leader == Some(first))
        .then_some(first)
}

/// Polls `done` every 10 ms until it holds; panics naming `what` after
/// `deadline`.
pub async fn wait_until(deadline: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !done() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
