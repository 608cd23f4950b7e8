//! What every session and listener of one node shares: the configuration, the
//! subscription router, the retained messages, the registry of sessions by
//! client id, the store and the counters.
//!
//! Lock order (take them in this order, never the reverse; never hold one
//! across an `.await` or while sending to an actor with `send().await`):
//! `registry` -> `router` -> `retained`. Each is held for a map operation
//! only; the router's read lock is held while a publish is matched and its
//! `Deliver`s are queued (non-blocking `do_send`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::ArbiterHandle;
use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};

use crate::acl::Acl;
use crate::auth::Authentication;
use crate::config::Config;
use crate::limits::Limits;
use crate::message::Message;
use crate::retain::RetainedIndex;
use crate::router::SubscriptionTable;
use crate::session::{SessionRef, Subscriber, SubscriptionEntry};

/// The router as the broker instantiates it.
pub type Router = SubscriptionTable<Subscriber, SubscriptionEntry>;

/// Counters of one node, read by `$SYS` topics and metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_current: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    /// PUBLISH packets received from clients, by QoS (`Metrics::received`).
    pub messages_received: [AtomicU64; 3],
    /// PUBLISH packets written to clients, by delivered QoS (`Metrics::sent`).
    pub messages_sent: [AtomicU64; 3],
    /// Copies not delivered, by [`DropReason`] (`Metrics::dropped`).
    pub messages_dropped: [AtomicU64; DropReason::ALL.len()],
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Clients disconnected for a protocol violation.
    pub protocol_errors: AtomicU64,
    /// CONNECTs refused by authentication (any reason).
    pub auth_failures: AtomicU64,
    /// Connections closed because their address exceeded the connect rate.
    pub connect_rate_refused: AtomicU64,
    /// PUBLISH packets (and wills) the ACL refused.
    pub acl_denied_publish: AtomicU64,
    /// SUBSCRIBE filters the ACL refused.
    pub acl_denied_subscribe: AtomicU64,
    /// Messages not delivered to a subscriber the ACL does not let read them.
    pub acl_denied_delivery: AtomicU64,
    /// Topics and filters refused for `limits.max_topic_levels` / `_length`.
    pub topic_limit_refused: AtomicU64,
    /// PUBLISH packets whose reading was delayed by `limits.max_publish_rate`.
    pub publish_throttled: AtomicU64,
    /// Copies dropped because the held bytes reached `limits.max_queued_bytes`
    /// (QoS 0 above 7/8 of it, QoS 1/2 at it), and 5.0 publishes refused 0x97.
    pub overload_dropped: AtomicU64,
    /// Clients disconnected by `limits.slow_consumer_timeout_secs`.
    pub slow_consumers_disconnected: AtomicU64,
    /// Congested subscribers that took nothing for
    /// `limits.backpressure_wait_secs` while publishers were held back for them.
    pub backpressure_stalls: AtomicU64,
    /// From a message's arrival on this node (`Message::received_at`) to
    /// each copy's PUBLISH written for a client.
    pub deliver_latency: storage::LatencyHistogram,
}

/// Why a copy of a message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its Message Expiry Interval passed before it could be sent.
    Expired,
    /// The session's queue held `mqtt.max_queued_messages` already.
    QueueFull,
    /// A QoS 0 copy for a client that is offline or whose write buffer is
    /// full.
    ClientUnavailable,
    /// Larger than the client's Maximum Packet Size (5.0).
    TooLarge,
    /// The held bytes reached `limits.max_queued_bytes` (see `crate::limits`).
    Overload,
    /// A shared group had no member to take it.
    NoSubscriber,
    /// Handed over for a session this node does not have (cluster).
    SessionGone,
    /// A QoS 2 copy for a persistent session whose store failed: its
    /// publisher is told the message failed and sends it again.
    StoreFailed,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::Expired,
        DropReason::QueueFull,
        DropReason::ClientUnavailable,
        DropReason::TooLarge,
        DropReason::Overload,
        DropReason::NoSubscriber,
        DropReason::SessionGone,
        DropReason::StoreFailed,
    ];

    /// The `reason` label of `tern_messages_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Expired => "expired",
            DropReason::QueueFull => "queue_full",
            DropReason::ClientUnavailable => "client_unavailable",
            DropReason::TooLarge => "too_large",
            DropReason::Overload => "overload",
            DropReason::NoSubscriber => "no_subscriber",
            DropReason::SessionGone => "session_gone",
            DropReason::StoreFailed => "store_failed",
        }
    }
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A PUBLISH of `qos` arrived from a client.
    pub fn received(&self, qos: crate::codec::QoS) {
        Metrics::add(&self.messages_received[qos as usize], 1);
    }

    /// A PUBLISH of `qos` was written for a client, for a message that
    /// arrived at `received_at`.
    pub fn sent(&self, qos: crate::codec::QoS, received_at: Option<std::time::Instant>) {
        Metrics::add(&self.messages_sent[qos as usize], 1);
        if let Some(at) = received_at {
            self.deliver_latency.observe(at.elapsed());
        }
    }

    /// `n` copies were not delivered for `reason`.
    pub fn dropped(&self, reason: DropReason, n: u64) {
        Metrics::add(&self.messages_dropped[reason as usize], n);
    }

    /// Sum of a by-QoS or by-reason family.
    pub fn total(counters: &[AtomicU64]) -> u64 {
        counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Shared state of one node.
pub struct BrokerState {
    pub config: Config,
    /// Topic filter -> subscribed sessions. Read-locked by every publish.
    pub router: RwLock<Router>,
    /// Topic -> retained message.
    pub retained: RwLock<RetainedIndex<Arc<Message>>>,
    /// Client id -> its session actor, online or not.
    pub registry: Mutex<HashMap<ByteString, SessionRef>>,
    pub store: storage::Store,
    pub writer: storage::Writer,
    /// The cluster this node is part of; `None` for a single node. Chosen
    /// once at startup.
    pub cluster: Option<Arc<crate::clustering::ClusterBridge>>,
    /// 5.0 enhanced authentication mechanisms offered.
    pub auth_methods: crate::enhanced_auth::AuthMethods,
    pub metrics: Metrics,
    /// Who may connect.
    pub auth: Arc<Authentication>,
    /// Who may publish and subscribe to what.
    pub acl: Acl,
    /// Limits and the accounting of bytes held for clients.
    pub limits: Limits,
    /// Worker arbiters that run sessions, chosen round robin.
    pub workers: Vec<ArbiterHandle>,
    next_worker: AtomicUsize,
    next_session_id: AtomicU64,
    /// Set when shutdown starts: no new connections are attached.
    pub shutting_down: AtomicBool,
    /// Writer tasks still flushing a socket; shutdown waits for them.
    pub open_writers: AtomicUsize,
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
        cluster: Option<Arc<crate::clustering::ClusterBridge>>,
    ) -> BrokerState {
        let writer = store.writer();
        let limits = Limits::new(&config.limits);
        BrokerState {
            cluster,
            auth_methods,
            auth: Arc::new(auth),
            acl,
            limits,
            config,
            router: RwLock::new(SubscriptionTable::new()),
            retained: RwLock::new(RetainedIndex::new()),
            registry: Mutex::new(HashMap::new()),
            store,
            writer,
            metrics: Metrics::default(),
            workers,
            next_worker: AtomicUsize::new(0),
            next_session_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            open_writers: AtomicUsize::new(0),
        }
    }

    /// Reads the password file, JWT key and ACL file the configuration names.
    pub fn load_security(config: &Config) -> Result<(Authentication, Acl), String> {
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

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for BrokerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerState").finish_non_exhaustive()
    }
}

/// Shared state handle.
pub type State = Arc<BrokerState>;
