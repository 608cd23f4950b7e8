//! The network side of a session: a stream of decoded packets in, a buffered
//! writer task out.
//!
//! Writes are batched: the session encodes packets into a shared buffer and
//! starts the writer task if none runs; the task takes the whole buffer and
//! writes it with one call once the session yields, and ends (parking the
//! write half in the buffer) when nothing is left, so an idle connection
//! holds no task. Many deliveries handled in one turn of the
//! session's mailbox become one syscall. The buffer is bounded by
//! `mqtt.max_write_buffer`: above it the session stops sending (QoS 0 is
//! dropped, QoS 1/2 waits in the queue) until the writer drains it.
//!
//! Limits applied here (see `crate::limits`): bytes in the write buffer count
//! in the node's held bytes; a writer whose socket takes nothing for
//! `limits.slow_consumer_timeout_secs` while the buffer is full fails the
//! connection (slow consumer); PUBLISH packets are read no faster than
//! `limits.max_publish_rate`.
//!
//! Lifecycle: `Connection::open` splits the transport, adds the packet stream
//! to the actor and parks the write half; `Connection::close` stops reading
//! and lets the writer flush what is buffered (bounded in time), then shut
//! the socket down. A quiet plain TCP connection can also be taken apart
//! for hibernation (`Connection::hibernate`: the socket, and a [`Dormant`]
//! with what the connection was granted) and put together again
//! (`Connection::resume`).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::BytesMut;
use futures::Stream;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use super::alias::TopicAliases;
use super::{Session, SessionRef};
use crate::codec::{Limits, Packet, ProtocolVersion, Publish};
use crate::counters::Metrics;
use crate::handle::WriterEvent;
use crate::state::State;
use crate::transport::{
    CertIdentity, Inbound, InboundEvent, PacketStream, PlainTcp, Transport, CLOSE_FLUSH_TIMEOUT,
};

/// The packets of a connection, shared by the actor's stream that reads
/// them and the connection, which takes them back to hibernate.
type SharedPackets = Rc<RefCell<Option<PacketStream<ReadHalf<Box<dyn Transport>>>>>>;

/// The writer task's buffer, shared with the session on the same thread.
pub struct OutBuf {
    buf: BytesMut,
    /// No more packets: flush and shut down.
    closing: bool,
    /// The session stopped sending because the buffer was full; tell it when
    /// the writer has drained it.
    blocked: bool,
    /// The write side while no writer task runs; `None` while one does, or
    /// once it has shut the socket down.
    parked: Option<Writer>,
    /// When the writer last parked after writing (`keep_alive::coarse_ms`,
    /// up to a second early).
    last_write_ms: u64,
}

/// What a writer task owns; parked in its `OutBuf` between bursts.
struct Writer {
    write_half: WriteHalf<Box<dyn Transport>>,
    session: SessionRef,
    generation: u64,
    state: State,
}

impl OutBuf {
    /// Starts a writer task for `out` unless one runs (or the socket is shut).
    fn start_writer(&mut self, out: &Rc<RefCell<OutBuf>>) {
        if let Some(writer) = self.parked.take() {
            actix_rt::spawn(run_writer(out.clone(), writer));
        }
    }
}

impl Drop for OutBuf {
    /// A connection dropped without `close`: nothing will write or shut down
    /// its socket any more.
    fn drop(&mut self) {
        if let Some(writer) = self.parked.take() {
            let held = writer.state.limits().held_counter();
            held.fetch_sub(self.buf.len() as u64, Ordering::Relaxed);
            writer.state.open_writers().fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The live connection of a session.
pub struct Connection {
    pub generation: u64,
    pub protocol: ProtocolVersion,
    pub peer: SocketAddr,
    /// The identity of the client's TLS certificate, if it sent one.
    pub peer_identity: Option<Box<CertIdentity>>,
    out: Rc<RefCell<OutBuf>>,
    packets: SharedPackets,
    reader: SpawnHandle,
    /// Not read (`pause_reading`) while the session falls asleep.
    paused: bool,
    /// A plain TCP connection (one that can hibernate).
    pub plain_tcp: bool,
    /// The connection's entry in its thread's keep-alive sweep, if it has
    /// a Keep Alive; dropping it (with the connection) ends the watch.
    pub keep_alive_watch: Option<super::keep_alive::Watch>,
    /// Largest packet the client accepts (5.0 Maximum Packet Size).
    pub client_max_packet_size: u32,
    /// Topic aliases in both directions (5.0 connections only: 3.1.1 ones
    /// do not pay for the tables).
    aliases: Option<Box<TopicAliases>>,
    /// 5.0 Request Problem Information: when false, no Reason String or
    /// User Property goes on packets other than PUBLISH, CONNACK, DISCONNECT.
    pub problem_information: bool,
    max_write_buffer: usize,
    /// The connection's `mqtt.connection` span (ends when the connection is
    /// dropped); `None` when not traced.
    pub trace: Option<Box<crate::telemetry::ConnectionTrace>>,
    /// The node's held bytes (`crate::limits`), which buffered bytes count in.
    held: Arc<AtomicU64>,
}

/// A written-out buffer larger than this is freed rather than kept for the
/// next write, so a connection that once had a burst does not hold its
/// peak memory while idle.
const IDLE_BUFFER: usize = 64 * 1024;

impl Connection {
    /// Starts reading and writing `transport` for `session`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        transport: Box<dyn Transport>,
        read_buf: BytesMut,
        generation: u64,
        protocol: ProtocolVersion,
        peer: SocketAddr,
        state: State,
        session: &SessionRef,
        ctx: &mut Context<Session>,
    ) -> Connection {
        let plain_tcp = crate::transport::is_plain_tcp(transport.as_ref());
        let (read_half, write_half) = tokio::io::split(transport);
        let limits = Limits {
            max_packet_size: state.config().mqtt.max_packet_size,
            version: protocol,
            refuse_control_characters: state.config().mqtt.strict_control_characters,
        };
        let mut packets = PacketStream::new(read_half, read_buf, limits, state.metrics().clone());
        let l = &state.config().limits;
        packets.throttle_publish(l.max_publish_rate, l.publish_burst);
        let packets = Rc::new(RefCell::new(Some(packets)));
        let reader = ctx.add_stream(InboundStream {
            packets: packets.clone(),
            generation,
            ended: false,
        });
        state.open_writers().fetch_add(1, Ordering::AcqRel);
        let out = Rc::new(RefCell::new(OutBuf {
            buf: BytesMut::new(),
            closing: false,
            blocked: false,
            parked: Some(Writer {
                write_half,
                session: session.clone(),
                generation,
                state: state.clone(),
            }),
            last_write_ms: 0,
        }));
        Connection {
            generation,
            protocol,
            peer,
            peer_identity: None,
            out,
            packets,
            reader,
            paused: false,
            plain_tcp,
            keep_alive_watch: None,
            client_max_packet_size: u32::MAX,
            aliases: None,
            problem_information: true,
            max_write_buffer: state.config().mqtt.max_write_buffer,
            trace: None,
            held: state.limits().held_counter(),
        }
    }

    /// Encodes `packet` into the write buffer. Returns false if the packet is
    /// larger than the client accepts (it is not written).
    pub fn send(&self, packet: &Packet) -> bool {
        let mut out = self.out.borrow_mut();
        if out.closing {
            return false;
        }
        let start = out.buf.len();
        match packet.encode(self.protocol, &mut out.buf) {
            Ok(n) if n as u64 > u64::from(self.client_max_packet_size) => {
                out.buf.truncate(start);
                false
            }
            Ok(n) => {
                self.held.fetch_add(n as u64, Ordering::Relaxed);
                out.start_writer(&self.out);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, packet = %packet.packet_type(), "cannot encode packet");
                false
            }
        }
    }

    /// Encodes a PUBLISH, with a topic alias where the client accepts them.
    /// Returns false if it is larger than the client accepts (not written).
    pub fn send_publish(&mut self, mut publish: Publish) -> bool {
        if !self.protocol.is_v5() {
            return self.send(&Packet::Publish(publish));
        }
        let change = self.aliases().apply_outbound(&mut publish);
        let sent = self.send(&Packet::Publish(publish));
        if !sent {
            self.aliases().undo_outbound(change);
        }
        sent
    }

    /// The topic alias tables, created on first use.
    pub fn aliases(&mut self) -> &mut TopicAliases {
        self.aliases.get_or_insert_with(Default::default)
    }

    /// Replaces the topic alias tables (at CONNECT, 5.0).
    pub fn set_aliases(&mut self, aliases: TopicAliases) {
        self.aliases = Some(Box::new(aliases));
    }

    /// True if the write buffer can take more PUBLISH packets now. When false,
    /// the writer reports `Drained` once it has written the buffer.
    pub fn has_room(&self) -> bool {
        let mut out = self.out.borrow_mut();
        if out.buf.len() < self.max_write_buffer {
            true
        } else {
            out.blocked = true;
            false
        }
    }

    /// Stops reading; the writer flushes what is buffered and shuts the
    /// socket down.
    pub fn close(self, ctx: &mut Context<Session>) {
        ctx.cancel_future(self.reader);
        let mut out = self.out.borrow_mut();
        out.closing = true;
        out.start_writer(&self.out);
    }
}

/// What a connection keeps while its session hibernates: what it was
/// granted at CONNECT, without its socket, buffers or tasks.
pub struct Dormant {
    generation: u64,
    protocol: ProtocolVersion,
    peer: SocketAddr,
    keep_alive_watch: Option<super::keep_alive::Watch>,
    client_max_packet_size: u32,
    problem_information: bool,
    /// Boxed together: most connections have none of them, and a
    /// hibernating session's bed holds one `Dormant` per connection.
    extras: Option<Box<DormantExtras>>,
}

struct DormantExtras {
    peer_identity: Option<Box<CertIdentity>>,
    /// Only if some alias is set: else `alias_maxima` make them again.
    aliases: Option<Box<TopicAliases>>,
    alias_maxima: (u16, u16),
    trace: Option<Box<crate::telemetry::ConnectionTrace>>,
}

impl Connection {
    /// True if the connection can hibernate now: plain TCP, nothing read
    /// and not yet handled, nothing buffered to write, no writer task, and
    /// nothing written for `quiet_ms` before `now_ms`.
    pub fn is_quiet(&self, now_ms: u64, quiet_ms: u64) -> bool {
        let out = self.out.borrow();
        self.plain_tcp
            && out.parked.is_some()
            && out.buf.is_empty()
            && !out.closing
            && !out.blocked
            && now_ms.saturating_sub(out.last_write_ms) >= quiet_ms
            && self.packets.borrow().as_ref().is_some_and(|p| p.is_idle())
    }

    /// Stops reading packets (they wait in the socket) while the session
    /// falls asleep.
    pub fn pause_reading(&mut self, ctx: &mut Context<Session>) {
        if !self.paused {
            ctx.cancel_future(self.reader);
            self.paused = true;
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Reads packets again, in the actor of `ctx`.
    pub fn resume_reading(&mut self, ctx: &mut Context<Session>) {
        if self.paused && self.packets.borrow().is_some() {
            self.reader = ctx.add_stream(InboundStream {
                packets: self.packets.clone(),
                generation: self.generation,
                ended: false,
            });
            self.paused = false;
        }
    }

    /// Takes a quiet connection (`is_quiet`) whose reading is paused apart:
    /// answers the socket and what the connection keeps while asleep.
    pub fn hibernate(self) -> (PlainTcp, Dormant) {
        debug_assert!(self.paused, "reading is paused first");
        let packets = self
            .packets
            .borrow_mut()
            .take()
            .expect("a quiet connection still reads");
        let (read_half, read_buf) = packets.into_parts();
        debug_assert!(read_buf.is_empty(), "a quiet connection has read nothing");
        let writer = {
            let mut out = self.out.borrow_mut();
            out.closing = true;
            out.parked
                .take()
                .expect("a quiet connection's writer is parked")
        };
        writer.state.open_writers().fetch_sub(1, Ordering::AcqRel);
        let transport = read_half.unsplit(writer.write_half);
        let tcp = match crate::transport::into_plain_tcp(transport) {
            Ok(tcp) => tcp,
            Err(_) => unreachable!("a quiet connection is plain TCP"),
        };
        // A 5.0 connection's aliases, none set yet (most): their maxima
        // (4 B) instead of the table (112 B).
        let alias_maxima = self.aliases.as_ref().map_or((0, 0), |a| a.maxima());
        let aliases = self.aliases.filter(|a| !a.is_unused());
        let extras = (self.peer_identity.is_some()
            || aliases.is_some()
            || alias_maxima != (0, 0)
            || self.trace.is_some())
        .then(|| {
            Box::new(DormantExtras {
                peer_identity: self.peer_identity,
                aliases,
                alias_maxima,
                trace: self.trace,
            })
        });
        let dormant = Dormant {
            generation: self.generation,
            protocol: self.protocol,
            peer: self.peer,
            keep_alive_watch: self.keep_alive_watch,
            client_max_packet_size: self.client_max_packet_size,
            problem_information: self.problem_information,
            extras,
        };
        (tcp, dormant)
    }

    /// Puts a hibernated connection together again around its socket
    /// (`transport`), with the bytes read while asleep (`read_buf`) and any
    /// owed to the client (`owed`, the rest of a PINGRESP the poller could
    /// not write whole).
    pub fn resume(
        dormant: Dormant,
        transport: Box<dyn Transport>,
        read_buf: BytesMut,
        owed: &[u8],
        state: State,
        session: &SessionRef,
        ctx: &mut Context<Session>,
    ) -> Connection {
        let mut conn = Connection::open(
            transport,
            read_buf,
            dormant.generation,
            dormant.protocol,
            dormant.peer,
            state,
            session,
            ctx,
        );
        conn.keep_alive_watch = dormant.keep_alive_watch;
        conn.client_max_packet_size = dormant.client_max_packet_size;
        conn.problem_information = dormant.problem_information;
        if let Some(extras) = dormant.extras {
            let DormantExtras {
                peer_identity,
                aliases,
                alias_maxima,
                trace,
            } = *extras;
            conn.peer_identity = peer_identity;
            conn.aliases = aliases.or_else(|| {
                (alias_maxima != (0, 0))
                    .then(|| Box::new(TopicAliases::new(alias_maxima.0, alias_maxima.1)))
            });
            conn.trace = trace;
        }
        if !owed.is_empty() {
            let mut out = conn.out.borrow_mut();
            out.buf.extend_from_slice(owed);
            conn.held.fetch_add(owed.len() as u64, Ordering::Relaxed);
            out.start_writer(&conn.out);
        }
        conn
    }
}

/// The actor's stream of a connection's packets: its events, then
/// `Closed` once; ends at once if the packets were taken to hibernate.
struct InboundStream {
    packets: SharedPackets,
    generation: u64,
    ended: bool,
}

impl Stream for InboundStream {
    type Item = Inbound;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Inbound>> {
        use std::task::Poll;
        if self.ended {
            return Poll::Ready(None);
        }
        let generation = self.generation;
        let next = {
            let mut packets = self.packets.borrow_mut();
            let Some(packets) = packets.as_mut() else {
                return Poll::Ready(None);
            };
            futures::ready!(std::pin::Pin::new(packets).poll_next(cx))
        };
        let event = match next {
            Some(Ok(p)) => InboundEvent::Packet(p),
            Some(Err(e)) => InboundEvent::Error(e),
            None => {
                self.ended = true;
                InboundEvent::Closed
            }
        };
        Poll::Ready(Some(Inbound { generation, event }))
    }
}

/// Writes what the session buffers until the buffer is empty, then parks
/// the write side in `out` and ends; once closing and empty, shuts the
/// socket down instead.
async fn run_writer(out: Rc<RefCell<OutBuf>>, mut writer: Writer) {
    // Grows to the size of the burst; freed with the task when idle.
    let mut spare = BytesMut::new();
    let held = writer.state.limits().held_counter();
    let stall = Stall {
        timeout: writer.state.config().limits.slow_consumer_timeout(),
        max_write_buffer: writer.state.config().mqtt.max_write_buffer,
    };
    // Set after a write: before parking, the task yields once, so that under
    // load the sessions of this thread can buffer more and the same task
    // writes it, instead of a new task per write.
    let mut wrote = false;
    loop {
        let next = {
            let mut o = out.borrow_mut();
            if !o.buf.is_empty() {
                std::mem::swap(&mut o.buf, &mut spare);
                Some((std::mem::take(&mut o.blocked), o.closing))
            } else if o.closing {
                break;
            } else if !wrote {
                o.parked = Some(writer);
                o.last_write_ms = super::keep_alive::coarse_ms();
                return;
            } else {
                None
            }
        };
        let Some((was_blocked, closing)) = next else {
            wrote = false;
            tokio::task::yield_now().await;
            continue;
        };
        wrote = true;
        // Boxed: the write and its timers are most of this future's size.
        let result = Box::pin(write_chunk(
            &mut writer.write_half,
            &spare,
            &out,
            &stall,
            closing,
        ))
        .await;
        match result {
            Ok(()) => {
                Metrics::add(&writer.state.metrics().bytes_sent, spare.len() as u64);
                held.fetch_sub(spare.len() as u64, Ordering::Relaxed);
                spare.clear();
                if spare.capacity() > IDLE_BUFFER {
                    spare = BytesMut::new();
                }
                if was_blocked {
                    writer.session.send(WriterEvent::Drained {
                        generation: writer.generation,
                    });
                }
            }
            Err(e) => {
                if e.kind() == std::io::ErrorKind::TimedOut && !closing {
                    Metrics::add(&writer.state.metrics().slow_consumers_disconnected, 1);
                }
                writer.session.send(WriterEvent::Failed {
                    generation: writer.generation,
                    error: e,
                });
                // Keep the buffer from growing while the session notices.
                out.borrow_mut().closing = true;
                break;
            }
        }
    }
    // What was never written no longer counts as held.
    let unwritten = spare.len() + std::mem::take(&mut out.borrow_mut().buf).len();
    held.fetch_sub(unwritten as u64, Ordering::Relaxed);
    drop(spare);
    let _ = Box::pin(tokio::time::timeout(
        CLOSE_FLUSH_TIMEOUT,
        writer.write_half.shutdown(),
    ))
    .await;
    writer.state.open_writers().fetch_sub(1, Ordering::AcqRel);
}

/// Writes one chunk: bounded by `CLOSE_FLUSH_TIMEOUT` when closing, else
/// watched for a stalled reader (`write_watched`).
async fn write_chunk(
    write_half: &mut WriteHalf<Box<dyn Transport>>,
    bytes: &[u8],
    out: &Rc<RefCell<OutBuf>>,
    stall: &Stall,
    closing: bool,
) -> std::io::Result<()> {
    if !closing {
        return write_watched(write_half, bytes, out, stall).await;
    }
    let write = async {
        write_half.write_all(bytes).await?;
        write_half.flush().await
    };
    tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// When a writer gives up on a client that does not read.
struct Stall {
    /// `limits.slow_consumer_timeout_secs`; `None`: never.
    timeout: Option<Duration>,
    max_write_buffer: usize,
}

/// Writes `bytes` and flushes. Fails with `TimedOut` if the socket took no
/// byte for the stall timeout while the session's buffer was full (a slow
/// consumer); a socket that is slow while the buffer has room is waited for.
async fn write_watched(
    write_half: &mut WriteHalf<Box<dyn Transport>>,
    bytes: &[u8],
    out: &Rc<RefCell<OutBuf>>,
    stall: &Stall,
) -> std::io::Result<()> {
    let Some(limit) = stall.timeout else {
        write_half.write_all(bytes).await?;
        return write_half.flush().await;
    };
    let mut written = 0;
    while written < bytes.len() {
        // `write` is cancel safe: on timeout nothing was written.
        match tokio::time::timeout(limit, write_half.write(&bytes[written..])).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => written += n,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let full = {
                    let o = out.borrow();
                    o.closing || o.buf.len() >= stall.max_write_buffer
                };
                if full {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "slow consumer: socket took nothing for {}s with a full write buffer",
                            limit.as_secs()
                        ),
                    ));
                }
            }
        }
    }
    write_half.flush().await
}
