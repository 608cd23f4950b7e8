//! How the rest of the node reaches a session: the [`SessionRef`] that the
//! registry, the router and the cluster hold, the [`Subscriber`] and
//! [`SubscriptionEntry`] the router stores, and everything a session's actor
//! can be sent ([`Input`]). A leaf of the broker: it names no session
//! internals, so the router, routing, the state and the cluster side depend
//! on it and the session module implements it.
//!
//! A session's mailbox is one `Recipient<Input>`: a sender never needs the
//! actor's type, and a request that wants an answer carries a oneshot
//! sender (`SessionRef::ask`). While the session hibernates
//! (`session/hibernate.rs`) it has no actor and no mailbox: the handle holds
//! a [`Wake`] instead, and the first input sent restarts the actor with a
//! new mailbox and goes into it.

mod ack;
mod details;

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytes::BytesMut;
use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;
use tokio::sync::oneshot;

use crate::codec::{Connect, QoS, SubscriptionOptions};
use crate::message::Message;
use crate::transport::{CertIdentity, Transport};

pub use ack::{hold_until_durable, AckGuard, LazyGuard};
pub use details::{SessionDetails, SubscriptionDetails};

/// What other sessions and the router know of a session.
#[derive(Debug)]
pub struct SessionHandle {
    /// Unique in this process; the router's key.
    pub id: u64,
    /// Boxed, not a `ByteString`: 16 B less, and no header shared with the
    /// CONNECT's copy (`SessionRef::client_id`).
    client_id: Box<str>,
    /// The session actor's mailbox (every [`Input`] goes through it), or
    /// how to wake the session while it hibernates.
    mailbox: RwLock<Mailbox>,
    /// The session hibernates (its keep-alive sweep does not ask it to
    /// again).
    pub asleep: AtomicBool,
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

/// Where a session's inputs go.
enum Mailbox {
    Live(Recipient<Input>),
    /// The session hibernates: no actor runs.
    Asleep(Alarm),
    /// Between the two, only while the lock is held.
    Waking,
}

impl Mailbox {
    /// Wakes the session if it hibernates; true if it did.
    fn wake(&mut self) -> bool {
        match std::mem::replace(self, Mailbox::Waking) {
            Mailbox::Asleep(alarm) => {
                *self = Mailbox::Live((alarm.ring)(alarm));
                true
            }
            other => {
                *self = other;
                false
            }
        }
    }
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mailbox::Live(_) => f.write_str("Live"),
            Mailbox::Asleep(_) => f.write_str("Asleep"),
            Mailbox::Waking => f.write_str("Waking"),
        }
    }
}

/// Restarts the actor of a hibernating session: `ring` (in
/// `session/hibernate.rs`) is called with the alarm once, by whoever first
/// sends to the session, from any thread, and answers the new actor's
/// mailbox, which may be sent to at once (its inputs wait there until the
/// actor runs). Held in place in the handle, not boxed: 24 B less for
/// every sleeping connection.
#[derive(Debug, Clone, Copy)]
pub struct Alarm {
    pub ring: fn(Alarm) -> Recipient<Input>,
    /// Where the session sleeps, as `ring` numbers it: its worker, and its
    /// bed's key and ticket there.
    pub worker: u32,
    pub key: u32,
    pub ticket: u64,
}

/// `SessionHandle::queued` of a session publishers never wait for.
pub const NOT_HOLDING: usize = usize::MAX;

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
    /// For logs: the session's client id, or the node.
    pub fn label(&self) -> String {
        match self {
            Subscriber::Local(s) => format!("session {}", s.client_id()),
            Subscriber::Node(node) => format!("node {node}"),
        }
    }

    /// For shared subscriptions: a connected session, or a node.
    pub fn is_available(&self) -> bool {
        match self {
            Subscriber::Local(s) => s.is_online(),
            Subscriber::Node(_) => true,
        }
    }
}

impl SessionRef {
    /// The session's client id.
    pub fn client_id(&self) -> &str {
        &self.0.client_id
    }

    /// A handle on the session whose actor reads `mailbox`. Everyone who
    /// sends to the session clones the handle, not the mailbox: each
    /// `Recipient` clone allocates (actix gives every sender its own parking
    /// state), a handle clone does not.
    pub fn new(
        id: u64,
        client_id: &str,
        persistent: bool,
        mailbox: Recipient<Input>,
    ) -> SessionRef {
        // Kept as long as the session lives: with the blocks other idle
        // connections keep (`alloc_purge::Allocator`).
        alloc_purge::long_lived(|| {
            SessionRef(Arc::new(SessionHandle {
                id,
                client_id: client_id.into(),
                mailbox: RwLock::new(Mailbox::Live(mailbox)),
                asleep: AtomicBool::new(false),
                persistent: AtomicBool::new(persistent),
                online: AtomicBool::new(false),
                queued: AtomicUsize::new(NOT_HOLDING),
                in_mailbox: AtomicUsize::new(0),
                last_packet_ms: AtomicU64::new(0),
            }))
        })
    }

    /// Queues `input` for the session without waiting (a session that has
    /// stopped drops it).
    pub fn send(&self, input: impl Into<Input>) {
        let input = input.into();
        // A group's copy for a session that has stopped would be dropped
        // with its guard, which then reports it taken: the group would
        // lose it. Whoever waits hears that it was not (the member that
        // handed it on queues it again; a publisher is not acknowledged).
        if let Input::Deliver(d) = &input {
            if d.shared_filter.is_some() && !self.is_alive() {
                if let Some(ack) = &d.ack {
                    ack.fail();
                }
                return;
            }
        }
        self.with_mailbox(|m| m.do_send(input));
    }

    /// Runs `f` on the session's mailbox, waking the session first if it
    /// hibernates.
    fn with_mailbox<R>(&self, f: impl FnOnce(&Recipient<Input>) -> R) -> R {
        {
            let mailbox = self.0.mailbox.read();
            if let Mailbox::Live(m) = &*mailbox {
                return f(m);
            }
        }
        let mut mailbox = self.0.mailbox.write();
        mailbox.wake();
        match &*mailbox {
            Mailbox::Live(m) => f(m),
            _ => unreachable!("woken above"),
        }
    }

    /// The session's mailbox, to send to and wait (waking the session if
    /// it hibernates).
    fn recipient(&self) -> Recipient<Input> {
        self.with_mailbox(Recipient::clone)
    }

    /// The session's actor goes to sleep: the current mailbox (the last
    /// sender of it) is dropped, so the actor stops once it has handled
    /// what is in it, and the next input wakes the session through `wake`.
    /// Called by the actor itself.
    pub fn fall_asleep(&self, alarm: Alarm) {
        *self.0.mailbox.write() = Mailbox::Asleep(alarm);
    }

    /// If the mailbox is still the alarm `fall_asleep` left, replaces it
    /// with `mailbox()` and returns true (the actor stays awake after all,
    /// or ended); false if a wake took the alarm. Called by the actor.
    pub fn replace_alarm(&self, mailbox: impl FnOnce() -> Recipient<Input>) -> bool {
        let mut slot = self.0.mailbox.write();
        if !matches!(&*slot, Mailbox::Asleep(_)) {
            return false;
        }
        *slot = Mailbox::Live(mailbox());
        true
    }

    /// Wakes the session if it hibernates (`wake` runs now, on this
    /// thread); true if it did.
    pub fn wake_now(&self) -> bool {
        self.0.mailbox.write().wake()
    }

    /// True while the session's actor runs, or the session hibernates.
    pub fn is_alive(&self) -> bool {
        match &*self.0.mailbox.read() {
            Mailbox::Live(m) => m.connected(),
            _ => true,
        }
    }

    /// Hands a connection to the session; false if the session has stopped
    /// (the connection is then still in the slot).
    pub async fn attach(&self, slot: Arc<Mutex<Option<NewConnection>>>) -> bool {
        self.recipient()
            .send(Input::Attach(Attach(slot)))
            .await
            .is_ok()
    }

    /// Sends `input` and waits until the session has handled it; false if
    /// the session has stopped.
    pub async fn call(&self, input: Input) -> bool {
        self.recipient().send(input).await.is_ok()
    }

    /// Asks the session a question; `None` if it has stopped.
    pub async fn ask<T>(&self, input: impl FnOnce(oneshot::Sender<T>) -> Input) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.recipient().send(input(reply)).await.ok()?;
        answer.await.ok()
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
        if threshold == 0 {
            return false;
        }
        // `in_mailbox` first: the session publishes `queued` before it
        // takes a copy out of `in_mailbox` (Release), so a copy missing
        // from this count is in the `queued` read after it.
        let in_mailbox = self.0.in_mailbox.load(Ordering::Acquire);
        let queued = self.0.queued.load(Ordering::Relaxed);
        queued != NOT_HOLDING && queued.saturating_add(in_mailbox) >= threshold
    }
}

/// A subscription as the router stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionEntry {
    pub options: SubscriptionOptions,
    /// 5.0 Subscription Identifier given with the SUBSCRIBE.
    pub subscription_id: Option<u32>,
    /// The whole filter (`$share/{group}/{filter}`) of a shared subscription,
    /// so a message can be handed to another member of the group. Boxed:
    /// most subscriptions are not shared, and the entry is kept twice per
    /// subscription (router and session), 24 B less each.
    pub shared_filter: Option<Box<ByteString>>,
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
    pub imported: Option<Imported>,
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
    /// A QoS 2 flow the client may hold open for this message: the
    /// session's old owner sent it with this packet id (a message handed on
    /// when the session moved while that node was away). `None` for every
    /// routed copy.
    pub flow: Option<cluster::OpenFlow>,
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
pub struct AckDone {
    pub token: u64,
    pub generation: u64,
    pub ok: bool,
}

/// A storage write this session waits for has completed.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Stored {
    /// The QoS 2 copy with this seq is on disk: it may be sent.
    Message { seq: u64 },
    /// The QoS 2 copy with this seq could not be stored: its publisher is
    /// told so, and the copy is dropped unsent.
    Failed { seq: u64 },
    /// The Released state of this seq is on disk: PUBREL may be sent.
    Released { seq: u64, generation: u64 },
}

/// The session's state brought from another node of the cluster, not yet
/// read into the session's own types; it replaces whatever this node had
/// for the client id.
#[derive(Debug)]
pub enum Imported {
    /// Handed over by its owner: subscriptions, expiry, queued and
    /// in-flight messages, received QoS 2 ids.
    State(cluster::SessionState),
    /// Its owner could not be reached: resumed from the replicated record
    /// (subscriptions and expiry, no messages).
    Record(cluster::SessionInfo),
    /// Its owner could not be reached: taken from the session's replica
    /// on another node (the record's subscriptions and expiry, the
    /// replica's messages and received QoS 2 ids); claimed as a fail-over.
    Replica(cluster::SessionState, cluster::FailedOver),
}

/// The writer task drained a full buffer (`Drained`) or the socket failed
/// (`Failed`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum WriterEvent {
    Drained {
        generation: u64,
    },
    Failed {
        generation: u64,
        error: std::io::Error,
    },
}

/// Sent by the keep-alive sweep to a session whose connection `generation`
/// has been silent past its limit.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct KeepAliveExpired {
    pub generation: u64,
}

/// Another node takes this session over: close the client's connection,
/// answer with the session's state, and leave (no release: the new owner
/// claims it).
#[derive(Message, Debug)]
#[rtype(result = "Option<cluster::SessionState>")]
pub struct HandOver {
    /// The node taking it.
    pub to: u64,
}

/// The replicated state says `owner` owns this session now: close the
/// client's connection, send the messages still held here to the owner,
/// and leave.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct OwnerMoved {
    pub owner: u64,
}

/// Describe the session (the admin API); `None` if it has ended meanwhile.
#[derive(Message)]
#[rtype(result = "Option<SessionDetails>")]
pub struct Describe;

/// Close the client's connection; the session stays if it is persistent.
/// Answers whether a client was connected.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Kick;

/// Close the client's connection and end the session. Answers false if it
/// had ended already.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Discard;

/// Everything a session's actor is sent, by the listener, routing, other
/// sessions, the store's completions, its writer task and keep-alive sweep,
/// the cluster and the admin API.
// `Deliver` is the common input: boxing it would cost an allocation per
// copy to make the rare ones smaller.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    Attach(Attach),
    Deliver(Deliver),
    AckDone(AckDone),
    Stored(Stored),
    Writer(WriterEvent),
    KeepAliveExpired(KeepAliveExpired),
    Shutdown,
    OwnerMoved(OwnerMoved),
    HandOver(HandOver, oneshot::Sender<Option<cluster::SessionState>>),
    /// The node drains: close the connection telling a 5.0 client to use
    /// the server at this reference (DISCONNECT 0x9C); the session stays,
    /// offline, to be adopted by another node. Answered when done.
    Drain(Option<ByteString>, oneshot::Sender<()>),
    /// Adopt a session handed over by a draining node: replace what this
    /// session holds with it, store it, go offline; answers with the
    /// session's replicated record, to be claimed (`None` if the session
    /// had ended).
    Adopt(Imported, oneshot::Sender<Option<cluster::SessionInfo>>),
    /// The answer for a shared copy (stored as this seq) handed on to
    /// another member: `None` when that member has it, else the copy to
    /// queue here again (`Session::handed_on`).
    HandedOn(u64, Option<Box<Deliver>>),
    /// A session kept after a hand-over whose taker never claimed it goes
    /// on here (`Session::revive`); answers whether it did.
    Revive(oneshot::Sender<bool>),
    /// A newer session of the client starts here: a session kept after a
    /// hand-over drops what it kept (`Session::supersede`). Answered once
    /// its records' deletion is queued.
    Supersede(oneshot::Sender<()>),
    /// The drain is over: a session that moved withdraws its routes while
    /// it forwards what is still on its way. Answered when done.
    Retire(oneshot::Sender<()>),
    Describe(oneshot::Sender<Option<SessionDetails>>),
    Kick(oneshot::Sender<bool>),
    Discard(oneshot::Sender<bool>),
    /// The cluster's members or which of them are up changed: a session
    /// owned here with stored messages places its replica again if its
    /// node is not the one to hold it now (`Session::replace_replica`).
    PlaceReplica,
    /// The keep-alive sweep saw the connection silent for
    /// `mqtt.hibernate_after_secs`: hibernate if nothing else is going on
    /// (`session/hibernate.rs`).
    Hibernate,
}

impl actix::Message for Input {
    type Result = ();
}

macro_rules! input_from {
    ($($variant:ident),*) => {$(
        impl From<$variant> for Input {
            fn from(m: $variant) -> Input {
                Input::$variant(m)
            }
        }
    )*};
}
input_from!(
    Attach,
    Deliver,
    AckDone,
    Stored,
    KeepAliveExpired,
    OwnerMoved
);

impl From<WriterEvent> for Input {
    fn from(m: WriterEvent) -> Input {
        Input::Writer(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection has a handle, asleep or not: with its `Arc` counts
    /// it is one 112-byte allocation (the alarm of a sleeping session sits
    /// in it, the client id is a `Box<str>`).
    #[test]
    fn a_session_handle_fits_in_96_bytes() {
        assert!(
            std::mem::size_of::<SessionHandle>() <= 96,
            "{}",
            std::mem::size_of::<SessionHandle>()
        );
    }
}
