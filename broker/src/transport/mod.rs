//! The byte streams clients connect over and the packets read from them,
//! before and after a session owns the connection: the [`Transport`] trait
//! (TCP, TLS, WebSocket), [`PacketStream`] (decoded packets, with the
//! `limits.max_publish_rate` throttle), the [`Inbound`] events a session's
//! actor reads, and the identity of a verified client certificate
//! ([`CertIdentity`], in `identity.rs`).
//!
//! It never touches a session, the router or the store.

mod counted;
mod identity;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::Message;
use bytes::BytesMut;
use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::codec::{DecodeError, Limits, Packet};
use crate::counters::Metrics;
use crate::limits::TokenBucket;

pub use counted::{Counted, OpenGuard};
pub use identity::{CertIdentity, IdentityError};

/// How long closing a connection may take to flush what is buffered.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A byte stream a client connects over (TCP, TLS, WebSocket).
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// What the transport is, to take a plain TCP one apart
    /// ([`into_plain_tcp`]).
    fn as_any(&self) -> &dyn std::any::Any;
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any>;
}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// The plain TCP transport of a listener without TLS or WebSocket.
pub type PlainTcp = Counted<tokio::net::TcpStream>;

/// True if `transport` is a plain TCP connection.
pub fn is_plain_tcp(transport: &dyn Transport) -> bool {
    transport.as_any().is::<PlainTcp>()
}

/// The socket and open-connection guard of a plain TCP transport, or the
/// transport unchanged if it is another kind.
pub fn into_plain_tcp(transport: Box<dyn Transport>) -> Result<PlainTcp, Box<dyn Transport>> {
    if !is_plain_tcp(transport.as_ref()) {
        return Err(transport);
    }
    Ok(*<dyn Transport>::into_any(transport)
        .downcast::<PlainTcp>()
        .expect("checked by `is_plain_tcp`"))
}

/// Why reading packets stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The client sent bytes that are not a valid packet.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Decoded packets from a byte stream. Ends after the first error or at EOF.
pub struct PacketStream<R> {
    reader: R,
    buf: BytesMut,
    pub limits: Limits,
    done: bool,
    metrics: Arc<Metrics>,
    /// Boxed: most connections have no publish rate limit, and inline it
    /// (a held `Packet`) would add ~300 bytes to every connection.
    throttle: Option<Box<Throttle>>,
}

/// `limits.max_publish_rate` for one connection: a PUBLISH over the rate is
/// held back until the bucket allows it, and nothing more is read meanwhile.
struct Throttle {
    bucket: TokenBucket,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    held: Option<Packet>,
}

impl<R: AsyncRead + Unpin> PacketStream<R> {
    /// `buf` holds bytes already read from `reader`.
    pub fn new(reader: R, buf: BytesMut, limits: Limits, metrics: Arc<Metrics>) -> PacketStream<R> {
        PacketStream {
            reader,
            buf,
            limits,
            done: false,
            metrics,
            throttle: None,
        }
    }

    /// The reader, to write on a duplex transport before the session takes it.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.reader
    }

    /// Reads PUBLISH packets no faster than `rate` per second (`burst` at
    /// once; 0 means `rate`). `rate` 0: no limit.
    pub fn throttle_publish(&mut self, rate: u32, burst: u32) {
        self.throttle = (rate > 0).then(|| {
            Box::new(Throttle {
                bucket: TokenBucket::new(rate, burst, Instant::now()),
                sleep: None,
                held: None,
            })
        });
    }

    /// True if nothing is buffered or held back and the stream has not
    /// ended: nothing would be lost if the reader were taken now.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty()
            && !self.done
            && self
                .throttle
                .as_ref()
                .is_none_or(|t| t.held.is_none() && t.sleep.is_none())
    }

    /// The reader and the bytes read past the last packet.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.reader, self.buf)
    }
}

impl<R: AsyncRead + Unpin> Stream for PacketStream<R> {
    type Item = Result<Packet, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(t) = &mut this.throttle {
            if let Some(sleep) = &mut t.sleep {
                futures::ready!(sleep.as_mut().poll(cx));
                t.sleep = None;
                if let Some(packet) = t.held.take() {
                    return Poll::Ready(Some(Ok(packet)));
                }
            }
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Packet::decode_from_client(&mut this.buf, &this.limits) {
                Ok(Some(packet @ Packet::Publish(_))) if this.throttle.is_some() => {
                    let t = this.throttle.as_mut().expect("checked by the guard");
                    let wait = t.bucket.take(Instant::now());
                    if wait.is_zero() {
                        return Poll::Ready(Some(Ok(packet)));
                    }
                    Metrics::add(&this.metrics.publish_throttled, 1);
                    let mut sleep = Box::pin(tokio::time::sleep(wait));
                    if sleep.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Some(Ok(packet)));
                    }
                    t.sleep = Some(sleep);
                    t.held = Some(packet);
                    return Poll::Pending;
                }
                Ok(Some(packet)) => return Poll::Ready(Some(Ok(packet))),
                Ok(None) => {}
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            if this.buf.capacity() - this.buf.len() < 1024 {
                this.buf.reserve(8 * 1024);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.reader), cx, &mut this.buf) {
                Poll::Pending => {
                    // Nothing to read and nothing buffered: give the buffer
                    // back rather than hold 8 KiB per idle connection.
                    if this.buf.is_empty() {
                        this.buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(n)) => Metrics::add(&this.metrics.bytes_received, n as u64),
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }
}

/// One item of a connection's inbound stream, tagged with the connection's
/// generation so events of a replaced connection are ignored.
#[derive(Debug)]
pub struct Inbound {
    pub generation: u64,
    pub event: InboundEvent,
}

// The PUBLISH variant is the common one: boxing it would cost an
// allocation per message to save stack space in a short-lived value.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum InboundEvent {
    Packet(Packet),
    Error(ReadError),
    /// The client closed the connection.
    Closed,
}

impl Message for Inbound {
    type Result = ();
}

/// Drop the write half of a transport without the session (used when a
/// connection is refused before it reaches a session).
pub async fn shutdown_transport(mut transport: Box<dyn Transport>, bytes: &[u8]) {
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
        transport.write_all(bytes).await?;
        transport.shutdown().await
    })
    .await;
}
