//! Accept loops and the first packet of every connection.
//!
//! A listener accepts a socket, hands it to the next worker arbiter (round
//! robin), which reads the CONNECT (bounded by `mqtt.connect_timeout_secs`),
//! checks what can be refused without a session (protocol version, client
//! identifier rules, shutdown) and attaches the connection to the session
//! actor of its client id, creating the session if there is none.
//!
//! Lifecycle: `bind` (fails early on a busy port), `run` until the shutdown
//! signal; connections already handed over live on in their sessions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use futures::StreamExt;
use parking_lot::Mutex;
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::codec::{
    ConnAck, ConnAckProperties, DecodeError, Limits, Packet, ProtocolVersion, ReasonCode,
};
use crate::config::ListenerConfig;
use crate::session::{Attach, NewConnection, PacketStream, ReadError, Session, Transport};
use crate::state::{Metrics, State};

/// A bound listener, not yet accepting.
pub struct Listener {
    tcp: TcpListener,
    config: ListenerConfig,
    /// Connections of this listener that are open.
    open: Arc<AtomicUsize>,
}

impl Listener {
    /// Binds the configured address.
    pub async fn bind(config: &ListenerConfig) -> std::io::Result<Listener> {
        let tcp = TcpListener::bind(config.bind).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.bind))
        })?;
        Ok(Listener {
            tcp,
            config: config.clone(),
            open: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts until `shutdown` turns true.
    pub async fn run(self, state: State, mut shutdown: watch::Receiver<bool>) {
        let addr = self.local_addr().ok();
        loop {
            let accepted = tokio::select! {
                r = self.tcp.accept() => r,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep going.
                    tracing::warn!(listener = ?addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if self.open.load(Ordering::Relaxed) >= self.config.max_connections {
                Metrics::add(&state.metrics.connections_refused, 1);
                tracing::warn!(%peer, max = self.config.max_connections, "connection limit reached, connection refused");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let guard = OpenGuard::new(self.open.clone());
            // Re-register the socket with the worker's own reactor.
            let std_stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "cannot hand over socket");
                    continue;
                }
            };
            let state2 = state.clone();
            state
                .next_worker()
                .spawn_fn(move || match TcpStream::from_std(std_stream) {
                    Ok(stream) => {
                        actix_rt::spawn(bootstrap(
                            Box::new(Counted {
                                inner: stream,
                                _guard: guard,
                            }),
                            peer,
                            state2,
                        ));
                    }
                    Err(e) => tracing::warn!(%peer, error = %e, "cannot register socket"),
                });
        }
        tracing::info!(listener = ?addr, "listener stopped");
    }
}

/// Counts an open connection until the transport is dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: Arc<AtomicUsize>) -> OpenGuard {
        open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A transport that holds an [`OpenGuard`].
struct Counted<T> {
    inner: T,
    _guard: OpenGuard,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Writes a refusing CONNACK and closes.
async fn refuse(transport: Box<dyn Transport>, protocol: ProtocolVersion, code: ReasonCode) {
    let mut buf = BytesMut::new();
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: code,
        properties: ConnAckProperties::default(),
    });
    if connack.encode(protocol, &mut buf).is_ok() {
        crate::session::shutdown_transport(transport, &buf).await;
    }
}

/// A fresh client identifier: the configured prefix and 16 random hex digits.
fn generate_client_id(prefix: &str) -> ByteString {
    let n: u64 = rand::thread_rng().gen();
    ByteString::from(format!("{prefix}{n:016x}"))
}

/// Reads the CONNECT of a new connection and attaches it to its session.
pub async fn bootstrap(transport: Box<dyn Transport>, peer: SocketAddr, state: State) {
    let mqtt = &state.config.mqtt;
    let limits = Limits {
        max_packet_size: mqtt.max_packet_size,
        version: ProtocolVersion::V311,
    };
    let mut packets = PacketStream::new(
        transport,
        BytesMut::with_capacity(1024),
        limits,
        state.clone(),
    );
    let first = tokio::time::timeout(mqtt.connect_timeout(), packets.next()).await;
    let connect = match first {
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT within the connect timeout, closing");
            return;
        }
        Ok(None) => return,
        Ok(Some(Ok(Packet::Connect(connect)))) => *connect,
        Ok(Some(Ok(other))) => {
            Metrics::add(&state.metrics.protocol_errors, 1);
            tracing::info!(%peer, packet = %other.packet_type(), "first packet is not CONNECT [MQTT-3.1.0-1], closing");
            return;
        }
        Ok(Some(Err(ReadError::Decode(DecodeError::UnsupportedProtocolVersion {
            name,
            level,
        })))) => {
            Metrics::add(&state.metrics.connections_refused, 1);
            tracing::info!(%peer, %name, level, "unsupported protocol version, refusing");
            // [MQTT-3.1.2-2] CONNACK 0x01 (3.1.1 form: the client's version is unknown)
            let (transport, _) = packets.into_parts();
            refuse(
                transport,
                ProtocolVersion::V311,
                ReasonCode::UnsupportedProtocolVersion,
            )
            .await;
            return;
        }
        Ok(Some(Err(e))) => {
            Metrics::add(&state.metrics.protocol_errors, 1);
            tracing::info!(%peer, error = %e, "bad CONNECT, closing");
            return;
        }
    };
    let (transport, read_buf) = packets.into_parts();
    let protocol = connect.protocol;
    if state.is_shutting_down() {
        return refuse(transport, protocol, ReasonCode::ServerUnavailable).await;
    }
    let (client_id, assigned) = if connect.client_id.is_empty() {
        match protocol {
            // 3.1 requires 1 to 23 characters
            ProtocolVersion::V31 => {
                return refuse(transport, protocol, ReasonCode::ClientIdentifierNotValid).await
            }
            // [MQTT-3.1.3-8] an empty id needs Clean Session 1
            ProtocolVersion::V311 if !connect.clean_start => {
                Metrics::add(&state.metrics.connections_refused, 1);
                return refuse(transport, protocol, ReasonCode::ClientIdentifierNotValid).await;
            }
            // [MQTT-3.1.3-6] (5.0 [MQTT-3.1.3-6]) the server assigns one
            _ => (generate_client_id(&mqtt.client_id_prefix), true),
        }
    } else {
        // A copy: a slice would keep the whole read buffer the CONNECT
        // arrived in alive for as long as the session (registry key).
        (ByteString::from(&*connect.client_id), false)
    };
    if protocol == ProtocolVersion::V31 && client_id.len() > 23 {
        return refuse(transport, protocol, ReasonCode::ClientIdentifierNotValid).await;
    }
    let slot = Arc::new(Mutex::new(Some(NewConnection {
        transport,
        read_buf,
        connect,
        client_id: client_id.clone(),
        assigned_client_id: assigned,
        peer,
    })));
    attach(&state, client_id, slot).await;
}

/// Hands the connection to the session of its client id. A session that
/// stops while the `Attach` waits in its mailbox drops the message without
/// taking the connection; then the stale registry entry is removed and a new
/// session created.
async fn attach(state: &State, client_id: ByteString, slot: Arc<Mutex<Option<NewConnection>>>) {
    for _ in 0..8 {
        let addr = {
            let mut registry = state.registry.lock();
            match registry.get(&client_id) {
                Some(addr) if addr.connected() => addr.clone(),
                _ => {
                    let addr = Session::start_new(state.clone(), client_id.clone());
                    registry.insert(client_id.clone(), addr.clone());
                    addr
                }
            }
        };
        if addr.send(Attach(slot.clone())).await.is_ok() && slot.lock().is_none() {
            return;
        }
        let mut registry = state.registry.lock();
        if registry.get(&client_id) == Some(&addr) {
            registry.remove(&client_id);
        }
    }
    tracing::warn!(%client_id, "could not attach connection to a session, closing");
}
