//! Hibernation: an idle connection's session without an actor.
//!
//! An actix actor over tokio costs about 900 B before a byte of session
//! state (its task, context, mailbox channel, the socket's tokio
//! registration, the writer's split halves); most connections of an IoT
//! hub are idle. A session whose plain TCP connection has had nothing to
//! do for `mqtt.hibernate_after_secs` (nothing read or written, nothing in
//! flight or queued, no timer) lets its actor go, as EMQX hibernates idle
//! Erlang processes:
//!
//! 1. The keep-alive sweep (`keep_alive.rs`) asks it ([`Input::Hibernate`]);
//!    the session checks it is idle (`Session::can_sleep`), stops reading,
//!    and swaps its mailbox in the [`SessionRef`] for an [`Alarm`]
//!    (`SessionHandle::fall_asleep`). With its last sender gone the actor
//!    handles what its mailbox still holds and stops; an input that makes
//!    it busy meanwhile keeps it awake (`Session::stay_awake`).
//! 2. When it stops (`Session::stopped`), its state moves into a [`Bed`]
//!    in its worker thread's table, and the socket, out of tokio, into
//!    the thread's poller: one mio `Poll` per worker, itself watched by
//!    tokio. What is left per connection: the `SessionHandle`, the
//!    session's fields, what the connection was granted
//!    (`connection::Dormant`), the socket and its open-connection guard.
//! 3. The poller answers PINGREQ itself (and stamps the keep-alive clock).
//!    Any other byte, the client closing, or an input sent to the session
//!    wakes it: the first sender runs [`ring`], which makes the
//!    actor's new mailbox and asks the worker to restore the actor
//!    (`woken`), the bytes read while asleep first in its read buffer.
//!
//! Everything here runs on the session's worker thread, except
//! [`ring`] (any sender's thread), which only makes a channel and
//! queues `woken` on the worker's arbiter (found by its number in
//! [`WORKERS`]: the alarm holds no handle of its own). A bed's ticket guards against
//! a late `woken` for a slot reused since.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::dev::channel::AddressReceiver;
use actix::dev::{Envelope, EnvelopeProxy};
use actix::prelude::*;
use bytes::BytesMut;

mod poller;

use poller::{deregister, registry, Broken};

use super::connection::{Connection, Dormant};
use super::keep_alive::monotonic_ms;
use super::{Restored, Session, MAILBOX_CAPACITY};
use crate::counters::Metrics;
use crate::handle::{Alarm, Input};
use crate::transport::{Counted, OpenGuard};

/// A hibernating session's bed in its worker's table: its key and ticket.
#[derive(Debug, Clone, Copy)]
pub(super) struct BedRef {
    key: u32,
    ticket: u64,
}

/// The two bytes of PINGREQ and of PINGRESP (every protocol version).
const PINGREQ: [u8; 2] = [0xC0, 0x00];
const PINGRESP: [u8; 2] = [0xD0, 0x00];

/// Read while asleep beyond this, the session is woken anyway.
const MAX_READ_ASLEEP: usize = 64 * 1024;

/// Where a hibernating session is.
enum Bed {
    /// The actor let its mailbox go and stops once it has handled what was
    /// in it; `woken`: a wake's new mailbox, if one came meanwhile.
    Falling {
        ticket: u64,
        woken: Option<AddressReceiver<Session>>,
    },
    /// Asleep on its socket: the session's state without what only an
    /// idle session's defaults hold (boxed: the table holds many).
    Asleep { ticket: u64, sleeper: Box<Sleeper> },
    /// Its actor stopped busy (or not connected), with a wake on its way,
    /// which finds the whole session here.
    Busy { ticket: u64, session: Box<Session> },
    /// The actor stayed awake while a wake was on its way: the wake's
    /// mailbox goes to it.
    Awake {
        ticket: u64,
        absorb: tokio::sync::oneshot::Sender<AddressReceiver<Session>>,
    },
}

impl Bed {
    fn ticket(&self) -> u64 {
        match self {
            Bed::Falling { ticket, .. }
            | Bed::Asleep { ticket, .. }
            | Bed::Busy { ticket, .. }
            | Bed::Awake { ticket, .. } => *ticket,
        }
    }
}

/// A session asleep on its socket, without its actor.
struct Sleeper {
    session: Idle,
    /// The connection's socket, out of tokio.
    socket: Socket,
}

/// An idle session (`Session::is_unbusy`, no connection in it): the
/// fields of a [`Session`] that such a session can hold other than their
/// defaults, the rare ones boxed together. 120 B where the `Session` is
/// 240: an idle hub holds one per connection ([`Session::doze`],
/// [`Idle::rouse`]).
struct Idle {
    state: crate::state::State,
    handle: crate::handle::SessionRef,
    outgoing: super::outgoing::Outgoing,
    incoming: super::incoming::Incoming,
    subscriptions: super::subscriptions::Subscriptions,
    next_generation: u64,
    session_expiry_interval: u32,
    protocol: crate::codec::ProtocolVersion,
    stored: bool,
    stalled: bool,
    rare: Option<Box<Rare>>,
}

/// What few idle sessions hold: a will, an ACL identity, an enhanced
/// authentication, recent ids, a replica.
#[derive(Default)]
struct Rare {
    will: Option<Box<crate::codec::LastWill>>,
    acl_subject: Option<Box<crate::acl::Subject>>,
    auth: Option<Box<super::EnhancedAuth>>,
    recent: Option<Box<super::recent::Recent>>,
    replica: Option<Box<super::replica::ReplicaLink>>,
}

impl Session {
    /// The session as an [`Idle`] and its connection, if it is still
    /// sleepy (`still_sleepy`: unbusy, its connection paused and quiet)
    /// and its actor has stopped. Else the session itself.
    fn doze(self) -> Result<(Idle, Box<Connection>), Box<Session>> {
        if self.bed.is_some() || !self.still_sleepy() {
            // Boxed: the bed of a busy session holds it so.
            return Err(Box::new(self));
        }
        // Every field named: one added to `Session` must be placed here.
        let Session {
            state,
            handle,
            protocol,
            session_expiry_interval,
            stored,
            conn,
            next_generation,
            outgoing,
            incoming,
            subscriptions,
            will,
            pending_will: _,
            acl_subject,
            expiry_timer: _,
            lifecycle: _,
            hold_timer: _,
            stalled,
            auth,
            recent,
            replica,
            bed: _,
        } = self;
        let rare = (will.is_some()
            || acl_subject.is_some()
            || auth.is_some()
            || recent.is_some()
            || replica.is_some())
        .then(|| {
            Box::new(Rare {
                will,
                acl_subject,
                auth,
                recent,
                replica,
            })
        });
        let conn = conn.expect("checked by still_sleepy");
        let idle = Idle {
            state,
            handle,
            outgoing,
            incoming,
            subscriptions,
            next_generation,
            session_expiry_interval,
            protocol,
            stored,
            stalled,
            rare,
        };
        Ok((idle, conn))
    }
}

impl Idle {
    /// The session again, as `Session::doze` found it.
    fn rouse(self) -> Session {
        let Idle {
            state,
            handle,
            outgoing,
            incoming,
            subscriptions,
            next_generation,
            session_expiry_interval,
            protocol,
            stored,
            stalled,
            rare,
        } = self;
        let Rare {
            will,
            acl_subject,
            auth,
            recent,
            replica,
        } = rare.map_or_else(Rare::default, |r| *r);
        Session {
            state,
            handle,
            protocol,
            session_expiry_interval,
            stored,
            conn: None,
            next_generation,
            outgoing,
            incoming,
            subscriptions,
            will,
            pending_will: None,
            acl_subject,
            expiry_timer: None,
            lifecycle: super::core::Lifecycle::Online,
            hold_timer: false,
            stalled,
            auth,
            recent,
            replica,
            bed: None,
        }
    }
}

struct Socket {
    /// `None`: it could not be taken out of tokio (the connection is lost;
    /// the session, woken at once, reads an error).
    tcp: Option<std::net::TcpStream>,
    guard: OpenGuard,
    dormant: Dormant,
    /// Bytes read while asleep, for the session when it wakes (boxed:
    /// almost always none).
    read: Option<Box<BytesMut>>,
    /// Bytes of a PINGRESP the socket did not take (its last ones).
    owed: u8,
    /// The poller watches the socket.
    registered: bool,
}

/// One worker thread's beds and poller.
#[derive(Default)]
struct Table {
    beds: slab::Slab<Bed>,
    /// Registers sockets with the thread's poller (started on first use).
    registry: Option<mio::Registry>,
    /// A purge of the memory freed by falling asleep is due ([`purge_soon`]).
    purge_due: bool,
}

/// How long after a session falls asleep its worker purges what the
/// sessions falling asleep meanwhile freed: the keep-alive sweep asks a
/// worker's idle sessions in one go, and their actors stop within this.
const PURGE_AFTER: std::time::Duration = std::time::Duration::from_millis(500);

/// Has the worker give what its sessions' actors freed back to the OS
/// shortly (one purge per batch). The allocator would otherwise keep it
/// until later allocator work on the thread, which an idle broker does not
/// do: an idle hub's memory would stay at its awake level.
fn purge_soon(t: &mut Table) {
    if std::mem::replace(&mut t.purge_due, true) {
        return;
    }
    actix_rt::spawn(async {
        actix_rt::time::sleep(PURGE_AFTER).await;
        TABLE.with(|t| t.borrow_mut().purge_due = false);
        alloc_purge::purge_freed();
    });
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
}

static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);

/// The arbiters of the workers sessions have slept on, by the number
/// their alarms carry ([`worker_number`]).
static WORKERS: parking_lot::RwLock<Vec<ArbiterHandle>> = parking_lot::RwLock::new(Vec::new());

thread_local! {
    /// This thread's number in [`WORKERS`], with the actix system it was
    /// given under (a thread can run several systems one after another,
    /// as tests do, each with its own arbiter).
    static WORKER: std::cell::Cell<Option<(usize, u32)>> = const { std::cell::Cell::new(None) };
}

/// This worker's number in [`WORKERS`], registering its arbiter the first
/// time.
fn worker_number() -> u32 {
    let system = actix::System::current().id();
    WORKER.with(|w| match w.get() {
        Some((s, number)) if s == system => number,
        _ => {
            let mut workers = WORKERS.write();
            let number = u32::try_from(workers.len()).expect("fewer than 2^32 worker arbiters");
            workers.push(Arbiter::current());
            w.set(Some((system, number)));
            number
        }
    })
}

/// Wakes a hibernating session (its `SessionHandle`'s mailbox while
/// asleep holds the alarm): a new mailbox, and `woken` queued on the
/// session's worker.
fn ring(alarm: Alarm) -> Recipient<Input> {
    let (sender, mailbox) = actix::dev::channel::channel(MAILBOX_CAPACITY);
    let bed = BedRef {
        key: alarm.key,
        ticket: alarm.ticket,
    };
    // A stopped arbiter (the broker is stopping) drops the job and with it
    // the mailbox: the inputs fail as to an ended session.
    if let Some(arbiter) = WORKERS.read().get(alarm.worker as usize) {
        arbiter.spawn_fn(move || woken(bed, mailbox));
    }
    Addr::new(sender).recipient()
}

/// On the worker: a wake made `mailbox` for the session in `bed`. Counts
/// the time from here to the actor running again (`tern_session_wake_seconds`):
/// what waking adds to the first input's way. The hop to the worker is
/// not counted: an input for an awake session makes it too (its actor's
/// task is woken on the worker).
fn woken(bed: BedRef, mailbox: AddressReceiver<Session>) {
    let at = std::time::Instant::now();
    let asleep = TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let key = bed.key as usize;
        if t.beds.get(key).is_none_or(|b| b.ticket() != bed.ticket) {
            return None;
        }
        match t.beds.get_mut(key).expect("checked above") {
            Bed::Falling { woken, .. } => {
                *woken = Some(mailbox);
                None
            }
            Bed::Asleep { .. } | Bed::Busy { .. } => {
                let sleeper = match t.beds.remove(key) {
                    Bed::Asleep { sleeper, .. } => Ok(sleeper),
                    Bed::Busy { session, .. } => Err(session),
                    _ => unreachable!("matched above"),
                };
                Some((sleeper, mailbox))
            }
            Bed::Awake { .. } => {
                let Bed::Awake { absorb, .. } = t.beds.remove(key) else {
                    unreachable!("matched above")
                };
                let _ = absorb.send(mailbox);
                None
            }
        }
    });
    match asleep {
        Some((Ok(sleeper), mailbox)) => {
            let state = sleeper.session.state.clone();
            resume(sleeper, mailbox);
            state.metrics().wake_latency.observe(at.elapsed());
        }
        Some((Err(session), mailbox)) => resume_busy(*session, mailbox),
        None => {}
    }
}

/// Runs a sleeping session's actor again, reading `mailbox`, its socket
/// back in tokio.
fn resume(sleeper: Box<Sleeper>, mailbox: AddressReceiver<Session>) {
    let Sleeper { session, socket } = *sleeper;
    let mut session = session.rouse();
    let mut ctx = Context::with_receiver(mailbox);
    {
        Metrics::sub(&session.state.metrics().sessions_hibernating, 1);
        Metrics::add(&session.state.metrics().session_wakes, 1);
        if socket.registered {
            if let Some(tcp) = &socket.tcp {
                deregister(tcp);
            }
        }
        let Socket {
            tcp,
            guard,
            dormant,
            read,
            owed,
            ..
        } = socket;
        let transport: Box<dyn crate::transport::Transport> =
            match tcp.map(tokio::net::TcpStream::from_std) {
                Some(Ok(inner)) => Box::new(Counted { inner, guard }),
                None => Box::new(Broken(None)),
                Some(Err(e)) => {
                    // The socket cannot go back to tokio: the connection
                    // is lost, and the session hears so as from a read.
                    tracing::warn!(client_id = %session.client_id(), error = %e,
                        "cannot register a waking session's socket");
                    Box::new(Broken(Some(e)))
                }
            };
        let conn = Connection::resume(
            dormant,
            transport,
            read.map_or_else(BytesMut::new, |r| *r),
            &PINGRESP[PINGRESP.len() - usize::from(owed)..],
            session.state.clone(),
            &session.handle,
            &mut ctx,
        );
        session.conn = Some(Box::new(conn));
    }
    session.handle.0.asleep.store(false, Ordering::Relaxed);
    ctx.run(session);
}

/// Runs the actor of a session that stopped busy (or not connected) again,
/// reading `mailbox`.
fn resume_busy(mut session: Session, mailbox: AddressReceiver<Session>) {
    let mut ctx = Context::with_receiver(mailbox);
    if let Some(conn) = session.conn.as_mut() {
        conn.resume_reading(&mut ctx);
    }
    session.handle.0.asleep.store(false, Ordering::Relaxed);
    ctx.run(session);
}

impl Session {
    /// True if the session may hibernate now: silent for
    /// `mqtt.hibernate_after_secs` both ways over a quiet plain TCP
    /// connection (nothing written for a second less), and `is_unbusy`.
    fn can_sleep(&self, now_ms: u64) -> bool {
        let after_ms = u64::from(self.state.config().mqtt.hibernate_after_secs) * 1000;
        let silent = now_ms.saturating_sub(self.handle.0.last_packet_ms.load(Ordering::Relaxed));
        after_ms > 0
            && silent >= after_ms
            // Writes: a second less, as the answer to the client's last
            // packet went out just after it (and the writer's clock is
            // the sweep's, up to a second old): else the sweep's first ask
            // may find it a millisecond short, and the session would sleep
            // one interval late.
            && self
                .conn
                .as_ref()
                .is_some_and(|c| c.is_quiet(now_ms, after_ms.saturating_sub(1000)))
            && self.is_unbusy()
    }

    /// Online, with nothing in flight, queued or owed, no will waiting, no
    /// held acknowledgement, no expiry timer, no re-authentication going on.
    fn is_unbusy(&self) -> bool {
        matches!(self.lifecycle, super::core::Lifecycle::Online)
            && self.outgoing.is_empty()
            && self.incoming.pending_len() == 0
            && self.pending_will.is_none()
            && self.expiry_timer.is_none()
            && !self.hold_timer
            && self.auth.as_ref().is_none_or(|a| a.exchange.is_none())
    }

    /// `Input::Hibernate`: falls asleep if idle (see the module doc).
    pub(super) fn hibernate(&mut self, ctx: &mut Context<Self>) {
        if self.bed.is_some() || !self.can_sleep(monotonic_ms()) {
            return;
        }
        let ticket = NEXT_TICKET.fetch_add(1, Ordering::Relaxed);
        let key = TABLE.with(|t| {
            t.borrow_mut().beds.insert(Bed::Falling {
                ticket,
                woken: None,
            })
        });
        let bed = BedRef {
            key: key as u32,
            ticket,
        };
        self.bed = Some(bed);
        if let Some(conn) = self.conn.as_mut() {
            conn.pause_reading(ctx);
        }
        self.handle.0.asleep.store(true, Ordering::Relaxed);
        self.handle.fall_asleep(Alarm {
            ring,
            worker: worker_number(),
            key: bed.key,
            ticket: bed.ticket,
        });
    }

    /// After each input while falling asleep: an input that made the
    /// session busy (or replaced or closed its connection) keeps it awake.
    pub(super) fn check_falling(&mut self, ctx: &mut Context<Self>) {
        if self.bed.is_some() && !self.still_sleepy() {
            self.stay_awake(ctx);
        }
    }

    /// Still idle enough to fall asleep (the silence is not asked again:
    /// what was handled while falling came before the decision).
    fn still_sleepy(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.is_paused() && c.is_quiet(0, 0))
            && self.is_unbusy()
    }

    /// Gives up falling asleep: takes a mailbox back (the wake's, if one
    /// came) and reads the connection again.
    fn stay_awake(&mut self, ctx: &mut Context<Self>) {
        let Some(bed) = self.bed.take() else { return };
        self.handle.0.asleep.store(false, Ordering::Relaxed);
        if let Some(conn) = self.conn.as_mut() {
            conn.resume_reading(ctx);
        }
        let key = bed.key as usize;
        let woken = TABLE.with(|t| match t.borrow_mut().beds.remove(key) {
            Bed::Falling { woken, .. } => woken,
            _ => unreachable!("a falling session's bed is Falling"),
        });
        if let Some(mailbox) = woken {
            ctx.add_stream(mailbox);
            return;
        }
        if let Some(mailbox) = self.take_mailbox_back() {
            ctx.add_stream(mailbox);
            return;
        }
        // A wake is on its way to the bed: its mailbox comes to the actor.
        let (absorb, mailbox) = tokio::sync::oneshot::channel();
        TABLE.with(|t| {
            let mut t = t.borrow_mut();
            let entry = t.beds.vacant_entry();
            debug_assert_eq!(entry.key(), key, "the slot just freed is reused first");
            entry.insert(Bed::Awake {
                ticket: bed.ticket,
                absorb,
            });
        });
        ctx.spawn(
            async move { mailbox.await.ok() }
                .into_actor(self)
                .map(|mailbox, _, ctx| {
                    if let Some(mailbox) = mailbox {
                        ctx.add_stream(mailbox);
                    }
                }),
        );
    }

    /// If the session's mailbox is still the alarm, replaces it with a new
    /// one and returns its receiving side; `None` if a wake took the alarm.
    fn take_mailbox_back(&self) -> Option<AddressReceiver<Session>> {
        let mut taken = None;
        self.handle.replace_alarm(|| {
            let (sender, mailbox) = actix::dev::channel::channel(MAILBOX_CAPACITY);
            taken = Some(mailbox);
            Addr::new(sender).recipient()
        });
        taken
    }

    /// The actor stopped while falling asleep: the session goes to bed
    /// (asleep, or straight back to a new actor if it became busy or a
    /// wake came).
    pub(super) fn settle(&mut self, bed: BedRef) {
        let key = bed.key as usize;
        let woken = TABLE.with(|t| match t.borrow_mut().beds.remove(key) {
            Bed::Falling { woken, .. } => woken,
            _ => unreachable!("a falling session's bed is Falling"),
        });
        if self.is_ended() {
            // Nothing to keep: the handle gets a closed mailbox (the new
            // one's receiving side dropped at once), as an ended session's.
            drop(woken);
            self.handle.0.asleep.store(false, Ordering::Relaxed);
            drop(self.take_mailbox_back());
            return;
        }
        let placeholder =
            Session::new(self.state.clone(), self.handle.clone(), Restored::default());
        let session = std::mem::replace(self, placeholder);
        // The placeholder ends with this actor and must leave no trace.
        self.lifecycle = super::core::Lifecycle::Ended;
        let (idle, conn) = match woken {
            None => match session.doze() {
                Ok(asleep) => asleep,
                Err(session) => return self.settle_busy(bed, session, None),
            },
            Some(mailbox) => return self.settle_busy(bed, Box::new(session), Some(mailbox)),
        };
        let (Counted { inner, guard }, dormant) = conn.hibernate();
        let tcp = inner
            .into_std()
            .inspect_err(|e| {
                // Only if tokio's reactor is gone; the connection is lost.
                tracing::warn!(client_id = %idle.handle.client_id(), error = %e,
                    "cannot take a hibernating session's socket out of tokio");
            })
            .ok();
        let sleeper = Sleeper {
            session: idle,
            socket: Socket {
                tcp,
                guard,
                dormant,
                read: None,
                owed: 0,
                registered: false,
            },
        };
        // Kept as long as the session sleeps: with the blocks other idle
        // connections keep (`alloc_purge::Allocator`).
        let mut sleeper = alloc_purge::long_lived(|| Box::new(sleeper));
        let metrics = sleeper.session.state.metrics();
        Metrics::add(&metrics.sessions_hibernating, 1);
        Metrics::add(&metrics.session_hibernations, 1);
        let unwatched = TABLE.with(|t| {
            let mut t = t.borrow_mut();
            let socket = &mut sleeper.socket;
            if let Some(tcp) = &socket.tcp {
                let fd = tcp.as_raw_fd();
                match registry(&mut t) {
                    Ok(r) => {
                        socket.registered = r
                            .register(
                                &mut mio::unix::SourceFd(&fd),
                                mio::Token(key),
                                mio::Interest::READABLE,
                            )
                            .inspect_err(|e| {
                                tracing::warn!(error = %e, "cannot watch a hibernating session's socket")
                            })
                            .is_ok();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the hibernation poller")
                    }
                }
            }
            let unwatched = !socket.registered;
            purge_soon(&mut t);
            let entry = t.beds.vacant_entry();
            debug_assert_eq!(entry.key(), key, "the slot just freed is reused first");
            entry.insert(Bed::Asleep {
                ticket: bed.ticket,
                sleeper,
            });
            unwatched
        });
        // A socket the poller does not watch would never wake the session.
        if unwatched {
            self.handle.wake_now();
        }
    }

    /// `settle` for a session that became busy while falling asleep (or is
    /// not connected): back to a new actor at once if a mailbox is at hand
    /// (the wake's, or the alarm taken back), else to a bed a wake on its
    /// way finds.
    fn settle_busy(
        &mut self,
        bed: BedRef,
        session: Box<Session>,
        woken: Option<AddressReceiver<Session>>,
    ) {
        if let Some(mailbox) = woken.or_else(|| self.take_mailbox_back()) {
            resume_busy(*session, mailbox);
            return;
        }
        TABLE.with(|t| {
            let mut t = t.borrow_mut();
            let entry = t.beds.vacant_entry();
            debug_assert_eq!(
                entry.key(),
                bed.key as usize,
                "the slot just freed is reused first"
            );
            entry.insert(Bed::Busy {
                ticket: bed.ticket,
                session,
            });
        });
    }
}

/// The stream of a mailbox a wake made while the actor stayed awake.
impl StreamHandler<Envelope<Session>> for Session {
    fn handle(&mut self, mut envelope: Envelope<Session>, ctx: &mut Context<Self>) {
        EnvelopeProxy::handle(&mut envelope, self, ctx);
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // Its senders are gone (the session fell asleep again, or ended):
        // the actor stops when nothing else keeps it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a hibernating session costs is mostly its bed: keep it within
    /// mimalloc's 224-byte size class (the next one is 256; a whole
    /// `Session` alone is 240).
    #[test]
    fn a_sleeper_fits_in_224_bytes() {
        assert!(
            std::mem::size_of::<Sleeper>() <= 224,
            "Sleeper is {} B (Idle {} B, Socket {} B, Session {} B)",
            std::mem::size_of::<Sleeper>(),
            std::mem::size_of::<Idle>(),
            std::mem::size_of::<Socket>(),
            std::mem::size_of::<Session>(),
        );
    }
}
