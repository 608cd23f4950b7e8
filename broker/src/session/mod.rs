//! The session actor: one per client id, alive as long as the MQTT session
//! (the network connection for a clean session; until it expires for a
//! persistent one), on one worker arbiter.
//!
//! It owns the connection while the client is online (reads packets as an
//! actix stream, writes through a buffered writer task), the QoS state
//! machines ([`outgoing`], [`incoming`]), the client's subscriptions and will.
//! It never blocks: storage writes go to the group-commit writer and come
//! back as messages.
//!
//! Packet handling is split by family, one file each, behind one dispatcher
//! (`handle_packet`): `connect` (attach, CONNACK, takeover, will, end of
//! session), `publish` (inbound PUBLISH, PUBREL), `deliver` (outbound
//! PUBLISH, PUBACK/PUBREC/PUBCOMP), `subscribe`.
//!
//! Lifecycle:
//! 1. created by the listener for a new client id (or at startup for each
//!    stored persistent session, offline);
//! 2. `Attach`: a connection with its CONNECT arrives (also a takeover of the
//!    current one);
//! 3. packets, `Deliver`s from other sessions, storage completions;
//! 4. the connection closes: a clean session ends (the actor stops); a
//!    persistent one stays, offline, queueing QoS 1/2 messages, until a new
//!    `Attach` or its expiry;
//! 5. `Shutdown`: the broker is stopping; connections are closed.

pub mod admin;
mod alias;
mod clustered;
mod connack;
pub(crate) mod connect;
mod connection;
mod deliver;
mod guard;
pub mod incoming;
mod keep_alive;
pub mod outgoing;
mod publish;
mod subscribe;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytes::BytesMut;
use bytestring::ByteString;
use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::codec::{Connect, LastWill, ProtocolVersion, QoS, SubscriptionOptions};
use crate::listener::CertIdentity;
use crate::message::Message;
use crate::route::AckGuard;
use crate::state::State;

pub use clustered::{HandOver, OwnerMoved};
use connection::Connection;
pub use connection::{shutdown_transport, Inbound, PacketStream, ReadError, Transport};
use incoming::Incoming;
use outgoing::Outgoing;

/// What other sessions and the router know of a session.
#[derive(Debug)]
pub struct SessionHandle {
    /// Unique in this process; the router's key.
    pub id: u64,
    pub client_id: ByteString,
    pub addr: Addr<Session>,
    /// The session outlives its connection: QoS 1/2 copies for it are stored
    /// before the publisher is acknowledged.
    pub persistent: AtomicBool,
    /// A client is connected.
    pub online: AtomicBool,
    /// Backpressure (`crate::limits`): QoS 1/2 messages waiting in the
    /// session's queue beyond its window, as the session last published it;
    /// [`NOT_HOLDING`] while publishers must not wait for it (offline, or
    /// stalled).
    pub queued: AtomicUsize,
    /// QoS 1/2 copies routers have sent that the session's mailbox still
    /// holds: +1 by the router, -1 when the session takes the `Deliver`. A
    /// publisher whose router runs ahead of the subscriber's actor still
    /// sees the congestion its own copies cause.
    pub in_mailbox: AtomicUsize,
    /// When the connection's last packet arrived (`keep_alive::monotonic_ms`),
    /// stamped for connections with a Keep Alive and read by their thread's
    /// keep-alive sweep.
    pub last_packet_ms: AtomicU64,
}

/// `SessionHandle::queued` of a session publishers never wait for.
pub const NOT_HOLDING: usize = usize::MAX;

/// Messages `send` (not `do_send`) may queue before the sender waits; as
/// actix's default mailbox (`actix::mailbox::DEFAULT_CAPACITY`).
const MAILBOX_CAPACITY: usize = 16;

/// Reference to a session, compared and hashed by session id.
#[derive(Debug, Clone)]
pub struct SessionRef(pub Arc<SessionHandle>);

impl PartialEq for SessionRef {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}
impl Eq for SessionRef {}
impl Hash for SessionRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

/// Who a subscription in the router belongs to: a session of this node, or
/// another node of the cluster that has subscribers to the filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subscriber {
    Local(SessionRef),
    /// A node id.
    Node(u64),
}

impl Subscriber {
    /// For shared subscriptions: a connected session, or a node.
    pub fn is_available(&self) -> bool {
        match self {
            Subscriber::Local(s) => s.is_online(),
            Subscriber::Node(_) => true,
        }
    }
}

impl SessionRef {
    /// A handle with a new session id and the mailbox its actor will read.
    /// Everyone who sends to the session clones the handle, not the `Addr`:
    /// each `Addr` clone allocates (actix gives every sender its own
    /// parking state), a handle clone does not.
    fn open(
        state: &State,
        client_id: ByteString,
        persistent: bool,
    ) -> (SessionRef, actix::dev::channel::AddressReceiver<Session>) {
        let (sender, mailbox) = actix::dev::channel::channel(MAILBOX_CAPACITY);
        let handle = SessionRef(Arc::new(SessionHandle {
            id: state.new_session_id(),
            client_id,
            addr: Addr::new(sender),
            persistent: AtomicBool::new(persistent),
            online: AtomicBool::new(false),
            queued: AtomicUsize::new(NOT_HOLDING),
            in_mailbox: AtomicUsize::new(0),
            last_packet_ms: AtomicU64::new(0),
        }));
        (handle, mailbox)
    }

    pub fn is_persistent(&self) -> bool {
        self.0.persistent.load(Ordering::Relaxed)
    }
    pub fn is_online(&self) -> bool {
        self.0.online.load(Ordering::Relaxed)
    }
    /// Online and not stalled, with at least `threshold` QoS 1/2 messages
    /// queued or on their way to it (`limits.backpressure_queued`; 0: never).
    pub fn is_congested(&self, threshold: usize) -> bool {
        let queued = self.0.queued.load(Ordering::Relaxed);
        threshold > 0
            && queued != NOT_HOLDING
            && queued.saturating_add(self.0.in_mailbox.load(Ordering::Relaxed)) >= threshold
    }
}

/// A subscription as the router stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionEntry {
    pub options: SubscriptionOptions,
    /// 5.0 Subscription Identifier given with the SUBSCRIBE.
    pub subscription_id: Option<u32>,
    /// The whole filter (`$share/{group}/{filter}`) of a shared subscription,
    /// so a message can be handed to another member of the group.
    pub shared_filter: Option<ByteString>,
}

/// A new connection for this session, with its CONNECT already read.
pub struct NewConnection {
    pub transport: Box<dyn Transport>,
    /// Bytes read after the CONNECT.
    pub read_buf: BytesMut,
    pub connect: Connect,
    /// The client id, generated if the CONNECT had none.
    pub client_id: ByteString,
    /// True if `client_id` was generated (5.0: sent back as Assigned Client
    /// Identifier).
    pub assigned_client_id: bool,
    pub peer: SocketAddr,
    /// Result of the 5.0 enhanced authentication that came with CONNECT.
    pub authenticated: Option<crate::enhanced_auth::Authenticated>,
    /// The session's state taken over from another node of the cluster; it
    /// replaces whatever this node had for the client id.
    pub imported: Option<Restored>,
    /// The identity of the client's TLS certificate (listeners with
    /// `client_auth` optional or required), verified by the TLS handshake.
    pub peer_identity: Option<CertIdentity>,
    /// Who authentication says the client is (for the ACL).
    pub principal: crate::auth::Principal,
}

/// Hands a connection to the session. The connection stays in the slot until
/// the session takes it, so that a listener whose `Attach` reached a session
/// that was stopping can take it back and retry with a new session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach(pub Arc<Mutex<Option<NewConnection>>>);

/// A message for this session from a publish that matched its subscriptions.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub message: Arc<Message>,
    /// Delivery QoS: the lower of published and subscribed.
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: SmallVec<[u32; 2]>,
    /// Set when the message came through this shared subscription.
    pub shared_filter: Option<ByteString>,
    /// Held until the copy is stored, for a persistent session, and until
    /// it is sent, for a congested one; the publisher is acknowledged when
    /// every holder has dropped it.
    pub ack: Option<AckGuard>,
    pub backpressure: Backpressure,
    /// Parent of the copy's `mqtt.deliver` span (the `mqtt.route` that sent
    /// it); `Span::none()` when not traced.
    pub span: tracing::Span,
}

/// How a copy takes part in backpressure (`crate::limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Not routed (retained on subscribe, a shared member's hand-over, a
    /// message for one client from another node), or backpressure is off.
    Untracked,
    /// A QoS 1/2 copy from the router, counted in
    /// `SessionHandle::in_mailbox` until the session takes it.
    Counted,
    /// Counted, and the session was congested when it was routed: the
    /// publisher's acknowledgement (`ack`) waits until the copy is sent.
    Hold,
}

/// Ask the session to close its connection because the broker is stopping.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// All holders of an [`AckGuard`] are done.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct AckDone {
    pub(crate) token: u64,
    pub(crate) generation: u64,
    pub(crate) ok: bool,
}

/// A storage write this session waits for has completed.
#[derive(Message)]
#[rtype(result = "()")]
enum Stored {
    /// The QoS 2 copy with this seq is on disk: it may be sent.
    Message { seq: u64 },
    /// The QoS 2 copy with this seq could not be stored: its publisher is
    /// told so, and the copy is dropped unsent.
    Failed { seq: u64 },
    /// The Released state of this seq is on disk: PUBREL may be sent.
    Released { seq: u64, generation: u64 },
}

/// Restored state of a persistent session, read from the store at startup.
#[derive(Debug, Default)]
pub struct Restored {
    pub protocol: Option<ProtocolVersion>,
    pub session_expiry_interval: u32,
    pub disconnected_at_ms: Option<u64>,
    pub subscriptions: Vec<(ByteString, SubscriptionEntry)>,
    pub outgoing: Vec<outgoing::OutMsg>,
    pub incoming_qos2: Vec<u16>,
}

/// The session actor.
pub struct Session {
    state: State,
    /// Also holds the client id.
    handle: SessionRef,
    /// Version of the current (or last) connection.
    protocol: ProtocolVersion,
    /// Session Expiry Interval in seconds: 0 for a clean session, u32::MAX
    /// for a 3.1.1 persistent session (never expires).
    session_expiry_interval: u32,
    /// Something about this session is in the store.
    stored: bool,
    conn: Option<Connection>,
    next_generation: u64,
    outgoing: Outgoing,
    incoming: Incoming,
    /// Filter -> subscription, as in the router.
    subscriptions: HashMap<ByteString, SubscriptionEntry>,
    /// Boxed, as `pending_will`: most clients have no will, and inline it
    /// would add its size to every session.
    will: Option<Box<LastWill>>,
    /// A will waiting for its Will Delay Interval (5.0), with its timer.
    pending_will: Option<(Box<LastWill>, SpawnHandle)>,
    /// Who the ACL sees (client id and what authentication established),
    /// once the client has connected, and only if an ACL is configured.
    /// `None` for a session restored from the store until its client
    /// connects: its identity is unknown, so deliveries are queued unchecked
    /// and checked when it connects (session/guard.rs).
    acl_subject: Option<Box<crate::acl::Subject>>,
    expiry_timer: Option<SpawnHandle>,
    /// Unix ms when the last connection ended (None while online); the
    /// session expires `session_expiry_interval` after it.
    offline_since_ms: Option<u64>,
    /// Set once the session has decided to end; late messages are ignored.
    ended: bool,
    /// The session left for another node of the cluster: not released.
    moved: bool,
    /// A timer will release held acknowledgements past their deadline.
    hold_timer: bool,
    /// A held acknowledgement reached its deadline: the client is not
    /// keeping up at all, and publishers are not held back for it again
    /// until its queue is below `limits.backpressure_queued`.
    stalled: bool,
    /// 5.0 enhanced authentication of the current connection, if it used
    /// one (boxed: most connections do not).
    auth: Option<Box<EnhancedAuth>>,
}

/// The 5.0 enhanced authentication a connection started with.
struct EnhancedAuth {
    /// Authentication Method of the CONNECT; re-authentication must use it.
    method: ByteString,
    /// A re-authentication in progress.
    exchange: Option<Box<dyn crate::enhanced_auth::AuthExchange>>,
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Deliveries use `do_send`, which no mailbox limit holds up: memory per
        // session is bounded by the outgoing queue and the write buffer.
        //
        // A session restored from the store starts its expiry countdown. A
        // new one does not: the listener that created it has put its
        // `Attach` in the mailbox already (`Addr::send` queues at once), and
        // a timer started and cancelled by it would cost every connection
        // a timer and a spilled cancellation list in actix's context.
        if self.stored {
            self.start_expiry_timer(ctx);
        }
    }
}

impl Session {
    /// Creates the actor of a new client id on the current arbiter.
    pub fn start_new(state: State, client_id: ByteString) -> SessionRef {
        let (handle, mailbox) = SessionRef::open(&state, client_id, false);
        let session = Session::new(state, handle.clone(), Restored::default());
        Context::with_receiver(mailbox).run(session);
        handle
    }

    /// Creates the actor of a stored session on the given arbiter.
    pub fn start_restored(
        state: State,
        client_id: ByteString,
        restored: Restored,
        arbiter: &ArbiterHandle,
    ) -> SessionRef {
        let persistent = restored.session_expiry_interval > 0;
        let (handle, mailbox) = SessionRef::open(&state, client_id, persistent);
        let session_handle = handle.clone();
        arbiter.spawn_fn(move || {
            let mut session = Session::new(state, session_handle, restored);
            session.stored = true;
            Context::with_receiver(mailbox).run(session);
        });
        handle
    }

    fn new(state: State, handle: SessionRef, restored: Restored) -> Session {
        let mqtt = &state.config.mqtt;
        let mut outgoing = Outgoing::new(usize::from(mqtt.max_inflight), mqtt.max_queued_messages);
        for msg in restored.outgoing {
            outgoing.restore(msg);
        }
        let mut incoming = Incoming::new();
        for id in restored.incoming_qos2 {
            incoming.insert_qos2(id);
        }
        let mut subscriptions = HashMap::new();
        if !restored.subscriptions.is_empty() {
            let mut router = state.router.write();
            for (filter, entry) in restored.subscriptions {
                router.subscribe(&filter, Subscriber::Local(handle.clone()), entry.clone());
                if let Some(cluster) = &state.cluster {
                    cluster.propose(crate::clustering::Proposal::AddRoute(filter.to_string()));
                }
                subscriptions.insert(filter, entry);
            }
        }
        Session {
            acl_subject: None,
            handle,
            protocol: restored.protocol.unwrap_or(ProtocolVersion::V311),
            session_expiry_interval: restored.session_expiry_interval,
            stored: false,
            conn: None,
            next_generation: 1,
            outgoing,
            incoming,
            subscriptions,
            will: None,
            pending_will: None,
            expiry_timer: None,
            offline_since_ms: restored.disconnected_at_ms,
            ended: false,
            moved: false,
            hold_timer: false,
            stalled: false,
            auth: None,
            state,
        }
    }

    /// A re-authentication has ended (either way).
    fn end_reauth(&mut self) {
        if let Some(auth) = self.auth.as_mut() {
            auth.exchange = None;
        }
    }

    fn client_id(&self) -> &ByteString {
        &self.handle.0.client_id
    }

    /// True if the session outlives its connection.
    fn is_persistent(&self) -> bool {
        self.session_expiry_interval > 0
    }

    /// This session as the router knows it.
    fn subscriber(&self) -> Subscriber {
        Subscriber::Local(self.handle.clone())
    }

    fn set_session_expiry(&mut self, interval: u32) {
        self.session_expiry_interval = interval;
        self.handle
            .0
            .persistent
            .store(interval > 0, Ordering::Relaxed);
    }
}
