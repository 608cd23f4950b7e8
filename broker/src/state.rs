//! What every session and listener of one node shares: the configuration, the
//! subscription router, the retained messages, the registry of sessions by
//! client id, the store and the counters.
//!
//! Lock order (take them in this order, never the reverse; never hold one
//! across an `.await` or while sending to an actor with `send().await`):
//! `registry` -> `router` -> `retained`. Each is held for a map operation
//! only; the router's read lock is held while a publish is matched and its
//! `Deliver`s are queued (non-blocking `do_send`). The hub's locks are
//! taken after the router's is released: `hub.routes` -> a route's `queue`
//! -> `events.buckets` (see `hub/mod.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::ArbiterHandle;
use parking_lot::RwLock;

use crate::acl::{Acl, AclError};
use crate::auth::{AuthError, Authentication};
use crate::config::Config;
use crate::counters::Metrics;
use crate::handle::{Subscriber, SubscriptionEntry};
use crate::hub::Hub;
use crate::limits::Limits;
use crate::message::Message;
use crate::nodes::{Cluster, SingleNode};
use crate::registry::Registry;
use crate::retain::RetainedIndex;
use crate::router::SubscriptionTable;

/// The router as the broker instantiates it.
pub type Router = SubscriptionTable<Subscriber, SubscriptionEntry>;

/// Shared state of one node.
pub struct BrokerState {
    config: Config,
    /// Topic filter -> subscribed sessions. Read-locked by every publish.
    router: RwLock<Router>,
    /// Topic -> retained message.
    retained: RwLock<RetainedIndex<Arc<Message>>>,
    /// Client id -> its session actor, online or not.
    registry: Registry,
    store: storage::Store,
    writer: storage::Writer,
    /// The other nodes ([`SingleNode`] for a node alone). Chosen once at
    /// startup.
    cluster: Arc<dyn Cluster>,
    /// 5.0 enhanced authentication mechanisms offered.
    auth_methods: crate::enhanced_auth::AuthMethods,
    /// Shared with the packet streams of connections (`crate::transport`).
    metrics: Arc<Metrics>,
    /// Who may connect.
    auth: Arc<Authentication>,
    /// Who may publish and subscribe to what.
    acl: Acl,
    /// Limits and the accounting of bytes held for clients.
    limits: Limits,
    /// Worker arbiters that run sessions, chosen round robin.
    workers: Vec<ArbiterHandle>,
    next_worker: AtomicUsize,
    next_session_id: AtomicU64,
    /// Set when shutdown starts: no new connections are attached.
    shutting_down: AtomicBool,
    /// Set when a drain starts: clients are sent to other nodes, sessions
    /// handed over; new connections are refused with a Server Reference.
    draining: AtomicBool,
    /// Writer tasks still flushing a socket; shutdown waits for them.
    open_writers: AtomicUsize,
    /// IoT hub routes and events.
    hub: Hub,
    /// Shared-group copies stored before this node started (`restore`).
    group_copies: crate::group_copies::GroupCopies,
}

/// Why the security files (password file, JWT key, ACL file) could not be
/// loaded at startup.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The password file or the JWT key.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The ACL file.
    #[error(transparent)]
    Acl(#[from] AclError),
}

impl BrokerState {
    /// The state of a node; `auth` and `acl` come from
    /// [`BrokerState::load_security`].
    pub fn new(
        config: Config,
        store: storage::Store,
        workers: Vec<ArbiterHandle>,
        (auth, acl): (Authentication, Acl),
        auth_methods: crate::enhanced_auth::AuthMethods,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> BrokerState {
        let writer = store.writer();
        let cluster = cluster.unwrap_or_else(|| Arc::new(SingleNode::new(writer.clone())));
        let limits = Limits::new(&config.limits);
        let hub = Hub::new(
            config.cluster.node_id,
            writer.clone(),
            std::time::Duration::from_secs(config.limits.backpressure_wait_secs.max(1)),
        );
        BrokerState {
            hub,
            group_copies: Default::default(),
            cluster,
            auth_methods,
            auth: Arc::new(auth),
            acl,
            limits,
            config,
            router: RwLock::new(SubscriptionTable::new()),
            retained: RwLock::new(RetainedIndex::new()),
            registry: Registry::new(),
            store,
            writer,
            metrics: Arc::default(),
            workers,
            next_worker: AtomicUsize::new(0),
            next_session_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            open_writers: AtomicUsize::new(0),
        }
    }

    /// The IoT hub: routes and events.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Shared-group copies stored before this node started.
    pub fn group_copies(&self) -> &crate::group_copies::GroupCopies {
        &self.group_copies
    }

    /// Reads the password file, JWT key and ACL file the configuration names.
    pub fn load_security(config: &Config) -> Result<(Authentication, Acl), SecurityError> {
        let auth = Authentication::from_config(&config.auth)?;
        let acl = Acl::open(config.acl.file.as_deref())?;
        Ok((auth, acl))
    }

    /// Re-reads the security files: those that changed, or all with `force`.
    /// A file that fails to load keeps its previous contents.
    pub fn reload_security(&self, force: bool) {
        self.auth.reload(force);
        if let Err(e) = self.acl.reload(force) {
            tracing::warn!(error = %e, "ACL reload failed; keeping the previous rules");
        }
    }

    /// A new session id; ids are never reused within a process.
    pub fn new_session_id(&self) -> u64 {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The next worker arbiter, round robin.
    pub fn next_worker(&self) -> &ArbiterHandle {
        let i = self.next_worker.fetch_add(1, Ordering::Relaxed);
        &self.workers[i % self.workers.len()]
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Topic filter -> subscribers; read-locked by every publish.
    pub fn router(&self) -> &RwLock<Router> {
        &self.router
    }

    /// Topic -> retained message.
    pub fn retained(&self) -> &RwLock<RetainedIndex<Arc<Message>>> {
        &self.retained
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn store(&self) -> &storage::Store {
        &self.store
    }

    /// The group-commit writer every store write goes through.
    pub fn writer(&self) -> &storage::Writer {
        &self.writer
    }

    /// The other nodes ([`SingleNode`] for a node alone).
    pub fn cluster(&self) -> &Arc<dyn Cluster> {
        &self.cluster
    }

    pub fn auth_methods(&self) -> &crate::enhanced_auth::AuthMethods {
        &self.auth_methods
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn auth(&self) -> &Arc<Authentication> {
        &self.auth
    }

    pub fn acl(&self) -> &Acl {
        &self.acl
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Shutdown has started: no new connection is attached.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// The node drains (`crate::drain`): connections are refused with a
    /// Server Reference, sessions handed to other nodes.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Writer tasks still flushing a socket; shutdown waits for them.
    pub fn open_writers(&self) -> &AtomicUsize {
        &self.open_writers
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// A node alone with the default configuration and a real store at
    /// `store`, without workers (unit tests that route or restore without
    /// running sessions).
    #[cfg(test)]
    pub fn for_tests(store: &std::path::Path) -> BrokerState {
        let config = Config::default();
        let store = storage::Store::open(&storage::StoreConfig {
            path: store.to_path_buf(),
            cache_capacity_bytes: 1 << 20,
            flush_every_ms: None,
        })
        .unwrap();
        let security = BrokerState::load_security(&config).unwrap();
        BrokerState::new(
            config,
            store,
            Vec::new(),
            security,
            Default::default(),
            None,
        )
    }
}

impl std::fmt::Debug for BrokerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerState").finish_non_exhaustive()
    }
}

/// Shared state handle.
pub type State = Arc<BrokerState>;
