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
mod checks;
mod clustered;
mod connack;
pub(crate) mod connect;
mod connection;
pub mod core;
mod deliver;
mod error;
mod hibernate;
pub mod incoming;
mod keep_alive;
pub mod outgoing;
mod publish;
mod reauth;
mod recent;
mod replica;
mod restored;
mod subscribe;
mod subscriptions;

use std::sync::atomic::Ordering;

use actix::prelude::*;
use bytestring::ByteString;

use crate::codec::{LastWill, ProtocolVersion};
use crate::handle::{Input, Subscriber};
use crate::state::State;

pub use crate::handle::{SessionRef, SubscriptionEntry};
use connection::Connection;
pub use error::SessionError;
use incoming::Incoming;
use outgoing::Outgoing;
pub use restored::Restored;

/// Messages `send` (not `do_send`) may queue before the sender waits; as
/// actix's default mailbox (`actix::mailbox::DEFAULT_CAPACITY`).
const MAILBOX_CAPACITY: usize = 16;

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
    /// Boxed: an offline session (and the Session inside a hibernating
    /// one's bed) does not carry its size.
    conn: Option<Box<Connection>>,
    next_generation: u64,
    outgoing: Outgoing,
    incoming: Incoming,
    /// Filter -> subscription, as in the router.
    subscriptions: subscriptions::Subscriptions,
    /// Boxed, as `pending_will`: most clients have no will, and inline it
    /// would add its size to every session.
    will: Option<Box<LastWill>>,
    /// A will waiting for its Will Delay Interval (5.0), with its timer.
    pending_will: Option<(Box<LastWill>, SpawnHandle)>,
    /// Who the ACL sees (client id and what authentication established),
    /// once the client has connected, and only if an ACL is configured.
    /// `None` for a session restored from the store until its client
    /// connects: its identity is unknown, so deliveries are queued unchecked
    /// and checked when it connects (session/checks.rs).
    acl_subject: Option<Box<crate::acl::Subject>>,
    expiry_timer: Option<SpawnHandle>,
    /// Online, offline since when (the session expires
    /// `session_expiry_interval` after it), or ended (late messages are
    /// ignored).
    lifecycle: core::Lifecycle,
    /// A timer will release held acknowledgements past their deadline.
    hold_timer: bool,
    /// A held acknowledgement reached its deadline: the client is not
    /// keeping up at all, and publishers are not held back for it again
    /// until its queue is below `limits.backpressure_queued`.
    stalled: bool,
    /// 5.0 enhanced authentication of the current connection, if it used
    /// one (boxed: most connections do not).
    auth: Option<Box<EnhancedAuth>>,
    /// Ids of messages got lately (QoS 2 of a persistent session; all for a
    /// while after a move), so that none is delivered twice (`recent.rs`).
    recent: Option<Box<recent::Recent>>,
    /// Where the session's replica is (a persistent session in a cluster
    /// once it stored something; boxed, most sessions have none).
    replica: Option<Box<replica::ReplicaLink>>,
    /// Falling asleep: where the session's bed is (`hibernate.rs`).
    bed: Option<hibernate::BedRef>,
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

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(bed) = self.bed.take() {
            self.settle(bed);
        }
    }
}

impl Session {
    /// Creates the actor of a new client id on the current arbiter.
    pub fn start_new(state: State, client_id: ByteString) -> SessionRef {
        let (handle, mailbox) = open(&state, &client_id, false);
        let session = Session::new(state, handle.clone(), Restored::default());
        Context::with_receiver(mailbox).run(session);
        handle
    }

    /// Creates the actor of a new client id on the given arbiter (from
    /// outside the actix workers: a session adopted from a draining node).
    pub fn start_on(state: State, client_id: ByteString, arbiter: &ArbiterHandle) -> SessionRef {
        let (handle, mailbox) = open(&state, &client_id, false);
        let session_handle = handle.clone();
        arbiter.spawn_fn(move || {
            let session = Session::new(state, session_handle, Restored::default());
            Context::with_receiver(mailbox).run(session);
        });
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
        let (handle, mailbox) = open(&state, &client_id, persistent);
        let session_handle = handle.clone();
        arbiter.spawn_fn(move || {
            let mut session = Session::new(state, session_handle, restored);
            session.stored = true;
            Context::with_receiver(mailbox).run(session);
        });
        handle
    }

    fn new(state: State, handle: SessionRef, restored: Restored) -> Session {
        let mqtt = &state.config().mqtt;
        let mut outgoing = Outgoing::new(usize::from(mqtt.max_inflight), mqtt.max_queued_messages);
        for msg in restored.outgoing {
            outgoing.restore(msg);
        }
        let mut incoming = Incoming::new();
        for id in restored.incoming_qos2 {
            incoming.insert_qos2(id);
        }
        let mut subscriptions = subscriptions::Subscriptions::default();
        if !restored.subscriptions.is_empty() {
            let mut router = state.router().write();
            for (filter, entry) in restored.subscriptions {
                router.subscribe(&filter, Subscriber::Local(handle.clone()), entry.clone());
                state
                    .cluster()
                    .propose(crate::nodes::Proposal::AddRoute(filter.to_string()));
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
            lifecycle: core::Lifecycle::Offline {
                since_ms: restored.disconnected_at_ms,
            },
            hold_timer: false,
            stalled: false,
            auth: None,
            recent: recent::Recent::restored(crate::message::unix_ms(), restored.recent_uids),
            replica: None,
            bed: None,
            state,
        }
    }

    /// A re-authentication has ended (either way).
    fn end_reauth(&mut self) {
        if let Some(auth) = self.auth.as_mut() {
            auth.exchange = None;
        }
    }

    fn client_id(&self) -> &str {
        self.handle.client_id()
    }

    /// When the last connection ended, while offline.
    fn offline_since(&self) -> Option<u64> {
        match self.lifecycle {
            core::Lifecycle::Offline { since_ms } => since_ms,
            _ => None,
        }
    }

    fn is_ended(&self) -> bool {
        self.lifecycle.is_ended()
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

/// A handle with a new session id and the mailbox its actor will read.
fn open(
    state: &State,
    client_id: &str,
    persistent: bool,
) -> (SessionRef, actix::dev::channel::AddressReceiver<Session>) {
    let (sender, mailbox) = actix::dev::channel::channel(MAILBOX_CAPACITY);
    let handle = SessionRef::new(
        state.new_session_id(),
        client_id,
        persistent,
        Addr::new(sender).recipient(),
    );
    (handle, mailbox)
}

impl Handler<Input> for Session {
    type Result = ();

    /// The one entry point of everything sent to the session: each input
    /// goes to the handler of its family.
    fn handle(&mut self, input: Input, ctx: &mut Context<Self>) {
        match input {
            Input::Attach(m) => Handler::handle(self, m, ctx),
            Input::Deliver(m) => Handler::handle(self, m, ctx),
            Input::AckDone(m) => Handler::handle(self, m, ctx),
            Input::Stored(m) => Handler::handle(self, m, ctx),
            Input::Writer(m) => Handler::handle(self, m, ctx),
            Input::KeepAliveExpired(m) => Handler::handle(self, m, ctx),
            Input::Shutdown => Handler::handle(self, crate::handle::Shutdown, ctx),
            Input::OwnerMoved(m) => Handler::handle(self, m, ctx),
            Input::HandOver(m, reply) => {
                let _ = reply.send(Handler::handle(self, m, ctx));
            }
            Input::Drain(reference, reply) => {
                self.drain(reference, ctx);
                let _ = reply.send(());
            }
            Input::HandedOn(seq, back) => self.handed_on(seq, back, ctx),
            Input::Revive(reply) => {
                let _ = reply.send(self.revive(ctx));
            }
            Input::Supersede(reply) => {
                self.supersede();
                let _ = reply.send(());
            }
            Input::Retire(reply) => {
                self.retire();
                let _ = reply.send(());
            }
            Input::Adopt(imported, reply) => {
                let _ = reply.send(self.adopt(imported, ctx));
            }
            Input::Describe(reply) => {
                let _ = reply.send(Handler::handle(self, crate::handle::Describe, ctx));
            }
            Input::Kick(reply) => {
                let _ = reply.send(Handler::handle(self, crate::handle::Kick, ctx));
            }
            Input::Discard(reply) => {
                let _ = reply.send(Handler::handle(self, crate::handle::Discard, ctx));
            }
            Input::PlaceReplica => self.replace_replica(),
            Input::Hibernate => self.hibernate(ctx),
        }
        self.check_falling(ctx);
    }
}
