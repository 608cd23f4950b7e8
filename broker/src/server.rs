//! Starting and stopping a node.
//!
//! Lifecycle of [`run`]:
//! 1. open the store (an error if another process holds the directory);
//!    read the password, JWT key and ACL files (an error names the file);
//! 2. start one worker arbiter per configured worker;
//! 3. restore stored sessions and retained messages;
//! 4. bind every listener (an error if a port is taken or a TLS file is
//!    bad), then the HTTP endpoint (`crate::http`), and report the bound
//!    addresses; watch the TLS files for reloads; publish the `$SYS` topics
//!    (`crate::observe::sys`); export the metrics over OTLP if an endpoint
//!    is set (`crate::observe::otlp`);
//! 5. accept until the shutdown future completes, re-reading the security
//!    files when they change and on SIGHUP;
//! 6. in a cluster, drain first (`crate::drain`): clients are sent to other
//!    nodes with a Server Reference and sessions handed over;
//! 7. shut down in one direction: stop accepting, tell every session to close
//!    its connection (5.0 clients get DISCONNECT 0x8B), wait (bounded) for the
//!    writers to flush, drain the group-commit writer and flush the store,
//!    stop the workers.
//!
//! [`start`] runs the same on a thread of its own, for tests and embedding.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Arbiter;
use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::Config;
use crate::handle::Input;
use crate::listener::Listener;
use crate::state::{BrokerState, State};

/// How long shutdown waits for sessions to flush their sockets.
const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses a node listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The MQTT listeners, in configuration order.
    pub mqtt: Vec<SocketAddr>,
    /// The HTTP endpoint, if on.
    pub http: Option<SocketAddr>,
}

/// An error whose text already names its cause (`"...: {source}"`) as one
/// anyhow message: `tern` prints errors with `{:#}`, which would repeat the
/// cause after the text.
fn one_line(e: impl std::error::Error) -> anyhow::Error {
    anyhow::Error::msg(e.to_string())
}

/// Runs a node until `shutdown` completes. `ready` is called with the bound
/// addresses once the node accepts connections.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(Bound),
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let store = storage::Store::open(&storage::StoreConfig {
        path: config.data_dir.join("store"),
        cache_capacity_bytes: config.storage.cache_mb * 1024 * 1024,
        flush_every_ms: Some(500),
    })
    .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;

    let security = BrokerState::load_security(&config).map_err(one_line)?;
    let auth_methods = crate::enhanced_auth::AuthMethods::from_config(
        config.enhanced_auth.scram_users_file.as_deref(),
    )
    .map_err(one_line)?;
    let arbiters: Vec<Arbiter> = (0..config.worker_count()).map(|_| Arbiter::new()).collect();
    let workers = arbiters.iter().map(|a| a.handle()).collect();
    let listener_configs = config.listeners.clone();
    let (failed_tx, mut failed_rx) = watch::channel(None::<String>);
    let cluster = if config.cluster.node_id == 0 {
        None
    } else {
        let mqtt_port = listener_configs.first().map_or(1883, |l| l.bind.port());
        Some(start_cluster(&config, &store, mqtt_port).await?)
    };
    let bridge = cluster.as_ref().map(|c| c.bridge.clone());
    let cluster_bridge: Option<Arc<dyn crate::nodes::Cluster>> =
        bridge.clone().map(|b| b as Arc<dyn crate::nodes::Cluster>);
    let state: State = Arc::new(BrokerState::new(
        config,
        store,
        workers,
        security,
        auth_methods,
        cluster_bridge,
    ));
    if let Some(c) = &cluster {
        crate::cluster_bridge::load(&state, c.bridge.cluster());
        // before the kept copies go again: one refused for a shared group
        // goes to another member
        if let Some(refused) = c.bridge.refused_group_copies() {
            c.bridge
                .runtime()
                .spawn(crate::cluster_bridge::regroup_refused(
                    state.clone(),
                    refused,
                ));
        }
        let (queued, dropped) = c
            .bridge
            .resend_kept(state.store())
            .context("cannot read the copies kept for nodes that were down")?;
        if queued + dropped > 0 {
            tracing::info!(
                queued,
                dropped,
                "copies kept for nodes that were down queued again"
            );
        }
    }

    let loaded = crate::restore::restore(&state).context("cannot load the store")?;
    tracing::info!(
        sessions = loaded.sessions,
        expired_sessions = loaded.expired_sessions,
        queued_messages = loaded.messages,
        retained = loaded.retained,
        unreadable_records = loaded.unreadable_records,
        "store loaded"
    );

    let routes = state.config().routes.clone();
    state
        .hub()
        .start_routes(&routes, state.store())
        .map_err(anyhow::Error::msg)
        .context("cannot start the routes")?;
    let api_routes = state
        .cluster()
        .load_hub_routes(state.store())
        .context("cannot read the routes made through the admin API")?;
    for (name, definition) in api_routes {
        // a route this node cannot run is reported and skipped: the others
        // (and the rest of the cluster) go on
        let _ = state
            .hub()
            .apply_api_route(&name, Some(&definition), state.store());
    }

    let cluster_runtime = cluster.map(|c| c.run(&state, failed_tx));

    let mut listeners = Vec::new();
    for l in &listener_configs {
        listeners.push(
            Listener::bind(l, &state.config().mqtt)
                .await
                .map_err(one_line)?,
        );
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;
    let info = crate::observe::NodeInfo {
        started: Instant::now(),
        listeners: listeners
            .iter()
            .zip(&addrs)
            .map(|(l, addr)| crate::observe::ListenerGauge {
                protocol: l.protocol(),
                addr: *addr,
                open: l.open_connections(),
                accepting: l.accepting(),
            })
            .collect(),
    };
    let http_listener = match state.config().http.bind_addr()? {
        Some(addr) => Some(crate::http::bind(addr).await?),
        None => None,
    };
    let http_addr = match &http_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_tasks = Vec::new();
    if let (Some(listener), Some(addr)) = (http_listener, http_addr) {
        tracing::info!(%addr, "listening for HTTP (metrics, health, admin API)");
        let http = crate::http::Http {
            state: state.clone(),
            info: Arc::new(info.clone()),
        };
        accept_tasks.push(actix_rt::spawn(crate::http::serve(
            listener,
            http,
            stop_rx.clone(),
        )));
    }
    if let Some(interval) = state.config().telemetry.metrics_interval() {
        tracing::info!(endpoint = %state.config().telemetry.otlp_endpoint, ?interval,
            "exporting metrics over OTLP");
        accept_tasks.push(actix_rt::spawn(crate::observe::otlp::run(
            state.clone(),
            info.clone(),
            interval,
            stop_rx.clone(),
        )));
    }
    if state.config().sys_interval_secs > 0 {
        let interval = Duration::from_secs(state.config().sys_interval_secs);
        accept_tasks.push(actix_rt::spawn(crate::observe::sys::run(
            state.clone(),
            info.clone(),
            interval,
            stop_rx.clone(),
        )));
    }
    for (listener, addr) in listeners.into_iter().zip(&addrs) {
        tracing::info!(%addr, protocol = %listener.protocol(), "listening for MQTT");
        if let Some(tls) = listener.tls_source() {
            accept_tasks.push(actix_rt::spawn(tls.watch(stop_rx.clone())));
        }
        accept_tasks.push(actix_rt::spawn(
            listener.run(state.clone(), stop_rx.clone()),
        ));
    }
    let reloader = actix_rt::spawn(reload_security(state.clone(), stop_rx.clone()));
    accept_tasks.push(actix_rt::spawn(watch_store_and_leader(
        state.clone(),
        stop_rx.clone(),
    )));
    if let Some(outbox) = state.hub().take_outbox() {
        accept_tasks.push(actix_rt::spawn(route_outbox(
            state.clone(),
            outbox,
            stop_rx.clone(),
        )));
    }
    ready(Bound {
        mqtt: addrs,
        http: http_addr,
    });

    let cluster_failed = async {
        match failed_rx.changed().await {
            Ok(()) => tracing::error!("the cluster node failed"),
            // No cluster (the sender is gone): never.
            Err(_) => std::future::pending().await,
        }
    };
    let drain = tokio::select! {
        _ = shutdown => true,
        _ = cluster_failed => false,
    };
    let drain_timeout = Duration::from_secs(state.config().cluster.drain_timeout_secs);
    if let Some(bridge) = bridge
        .as_ref()
        .filter(|_| drain && !drain_timeout.is_zero())
    {
        crate::drain::drain(&state, bridge, drain_timeout).await;
    }
    tracing::info!("shutting down");
    state.begin_shutdown();
    state.hub().stop();
    let _ = stop_tx.send(true);
    for task in accept_tasks {
        let _ = task.await;
    }
    let _ = reloader.await;
    let sessions = state.registry().snapshot();
    let deadline = Instant::now() + SHUTDOWN_FLUSH_TIMEOUT;
    for (_, session) in sessions {
        let _ = tokio::time::timeout_at(deadline.into(), session.call(Input::Shutdown)).await;
    }
    while state.open_writers().load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(bridge) = &bridge {
        bridge.stop().await;
    }
    drop(cluster_runtime);
    let store = state.store().clone();
    let flushed = tokio::task::spawn_blocking(move || store.close()).await;
    for arbiter in &arbiters {
        arbiter.stop();
    }
    for arbiter in arbiters {
        let _ = tokio::task::spawn_blocking(move || arbiter.join()).await;
    }
    match flushed {
        Ok(Ok(())) => {
            tracing::info!("store flushed, stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(e).context("cannot flush the store"),
        Err(e) => Err(e).context("store flush task failed"),
    }
}

/// Routes the hub's dead letters and events (to this node's subscribers
/// and the other nodes') until `stop` turns true.
async fn route_outbox(
    state: State,
    mut outbox: tokio::sync::mpsc::UnboundedReceiver<Arc<crate::message::Message>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            message = outbox.recv() => match message {
                Some(message) => {
                    crate::fanout::route(
                        &state,
                        &message,
                        &mut crate::handle::LazyGuard::none(),
                        crate::fanout::Scope::Everywhere,
                    );
                }
                None => return,
            },
            _ = stop.changed() => return,
        }
    }
}

/// Publishes hub events for what no code path reports as it happens: store
/// writes that failed (and the store taking writes again) and a new raft
/// leader. Looks once a second until `stop` turns true.
async fn watch_store_and_leader(state: State, mut stop: watch::Receiver<bool>) {
    use crate::hub::events::Severity;
    let mut failed = state.store().writer_stats().failed_requests;
    let mut store_ok = true;
    let mut leader = state.cluster().raft().and_then(|c| c.status().leader);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let events = state.hub().events();
        let now_failed = state.store().writer_stats().failed_requests;
        let health = state.store().health();
        if now_failed > failed || (store_ok && health.is_err()) {
            store_ok = false;
            let error = health.as_ref().err().map(ToString::to_string);
            events.emit(
                Severity::Error,
                "store",
                "store",
                "store writes failed",
                serde_json::json!({ "failed_writes": now_failed - failed, "error": error }),
            );
        } else if !store_ok && health.is_ok() {
            store_ok = true;
            events.emit(
                Severity::Info,
                "store",
                "store",
                "store takes writes again",
                serde_json::Value::Null,
            );
        }
        failed = now_failed;
        if let Some(status) = state.cluster().raft().map(|c| c.status()) {
            if status.leader != leader {
                leader = status.leader;
                let node = status.node_id.to_string();
                let (severity, msg) = match leader {
                    Some(_) => (Severity::Info, "raft leader changed"),
                    None => (Severity::Warning, "no raft leader known"),
                };
                events.emit(
                    severity,
                    "cluster",
                    &node,
                    msg,
                    serde_json::json!({ "leader": leader, "term": status.term }),
                );
            }
        }
    }
}

/// A started cluster node, before its events are applied.
struct StartedCluster {
    bridge: Arc<crate::cluster_bridge::ClusterBridge>,
    events: tokio::sync::mpsc::UnboundedReceiver<cluster::ClusterEvent>,
    runtime: ClusterRuntime,
}

/// The cluster's runtime, owning its threads. It is shut down in the
/// background when dropped: it is dropped inside the server's own runtime
/// (when the server stops, or returns early with an error such as a port
/// already in use), where a plain `Runtime` drop would panic because it
/// blocks, and hide the error it was returning.
struct ClusterRuntime(Option<tokio::runtime::Runtime>);

impl ClusterRuntime {
    fn get(&self) -> &tokio::runtime::Runtime {
        self.0
            .as_ref()
            .expect("the cluster runtime is only taken by drop")
    }
}

impl Drop for ClusterRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Starts this node's cluster member on a runtime of its own: the raft log
/// is replayed before it returns.
async fn start_cluster(
    config: &Config,
    store: &storage::Store,
    mqtt_port: u16,
) -> anyhow::Result<StartedCluster> {
    let c = &config.cluster;
    let mut cfg = cluster::ClusterConfig::new(c.node_id, c.listen);
    cfg.advertise = c.advertise.clone();
    cfg.mqtt_advertise = if c.mqtt_advertise.is_empty() {
        format!("{}:{mqtt_port}", c.listen.ip())
    } else {
        c.mqtt_advertise.clone()
    };
    cfg.seeds = c
        .seeds
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .context("cluster.seeds")?;
    cfg.tick = Duration::from_millis(c.tick_ms);
    cfg.election_ticks = c.election_ticks;
    cfg.forward_queue_limit = c.forward_queue_limit;
    let runtime = ClusterRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tern-cluster")
            .enable_all()
            .build()
            .context("cannot start the cluster runtime")?,
    ));
    let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
    let cluster_store = store.clone();
    let cluster = runtime
        .get()
        .spawn(async move { cluster::Cluster::start(cfg, cluster_store, events_tx).await })
        .await
        .context("cluster start task failed")?
        .context("cannot start the cluster node")?;
    tracing::info!(node_id = cluster.node_id(), listen = %c.listen, "cluster node started");
    let forward_timeout = Duration::from_secs(config.cluster.forward_timeout_secs);
    let bridge = crate::cluster_bridge::ClusterBridge::new(
        cluster,
        runtime.get().handle().clone(),
        forward_timeout,
        store.clone(),
        config.cluster.session_replicas,
    );
    Ok(StartedCluster {
        bridge,
        events,
        runtime,
    })
}

impl StartedCluster {
    /// Applies the cluster's events from now on, hands sessions this node
    /// still holds but no longer owns to their owners, and prunes routes of
    /// sessions that ended while the node was down.
    fn run(self, state: &State, failed: watch::Sender<Option<String>>) -> ClusterRuntime {
        let StartedCluster {
            bridge,
            events,
            runtime,
        } = self;
        let me = bridge.node_id();
        let sessions = state.registry().snapshot();
        for (client_id, session) in sessions {
            if let Some(owner) = bridge.session_owner(&client_id).filter(|o| *o != me) {
                session.send(crate::handle::OwnerMoved { owner });
            }
        }
        let adopt: crate::cluster_bridge::AdoptFn = {
            let state = state.clone();
            let bridge = bridge.clone();
            Arc::new(move |client_id, from, reply| {
                let (state, bridge) = (state.clone(), bridge.clone());
                tokio::spawn(async move {
                    let _ = reply.send(crate::drain::adopt(state, bridge, client_id, from).await);
                });
            })
        };
        runtime.get().spawn(crate::cluster_bridge::run_events(
            state.clone(),
            events,
            failed,
            adopt,
        ));

        runtime
            .get()
            .spawn(crate::drain::rehome_orphans(state.clone(), bridge.clone()));
        runtime
            .get()
            .spawn(crate::cluster_bridge::keep_replicas_placed(
                state.clone(),
                bridge.clone(),
            ));
        let b = bridge.clone();
        runtime.get().spawn(async move {
            b.settled().await;
            if let Err(e) = b.cluster().prune_routes().await {
                tracing::warn!(error = %e, "cannot prune stale routes");
            }
        });
        runtime
    }
}

/// How often the password, key and ACL files are checked for changes.
const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Re-reads the security files when they change, and all of them on SIGHUP,
/// until `stop` turns true. The reading runs on the blocking pool.
async fn reload_security(state: State, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; files are still re-read when they change");
            None
        }
    };
    let mut tick = tokio::time::interval(RELOAD_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let force = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                tracing::info!("SIGHUP: re-reading the password, key and ACL files");
                true
            }
        };
        let s = state.clone();
        let _ = tokio::task::spawn_blocking(move || s.reload_security(force)).await;
    }
}

/// A node running on its own thread.
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    http: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl ServerHandle {
    /// Addresses of the listeners, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Address of the first listener.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Address of the HTTP endpoint, if on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Shuts the node down gracefully and waits for it.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Starts a node on a new thread and returns once it accepts connections.
pub fn start(config: Config) -> anyhow::Result<ServerHandle> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("tern-main".into())
        .spawn(move || {
            let ready = ready_tx.clone();
            let result = actix_rt::System::new().block_on(run(
                config,
                async {
                    let _ = stop_rx.await;
                },
                move |bound| {
                    let _ = ready.send(Some(bound));
                },
            ));
            let _ = ready_tx.send(None);
            result
        })?;
    match ready_rx.recv() {
        Ok(Some(bound)) => Ok(ServerHandle {
            addrs: bound.mqtt,
            http: bound.http,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        _ => {
            let result = thread
                .join()
                .map_err(|_| anyhow::anyhow!("server thread panicked"))?;
            Err(result
                .err()
                .unwrap_or_else(|| anyhow::anyhow!("server stopped before it was ready")))
        }
    }
}
