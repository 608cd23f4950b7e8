//! Accept loops, the TLS and WebSocket handshakes, and the first packet of
//! every connection.
//!
//! A listener accepts a socket, counts it against its `max_connections` and
//! hands it to the next worker arbiter (round robin). There the protocol's
//! handshakes run (`tls`: TLS; `ws`: the WebSocket upgrade; `wss`: both),
//! bounded together by `mqtt.connect_timeout_secs`; then `bootstrap` reads
//! the CONNECT (bounded by the same timeout again), checks what can be
//! refused without a session (protocol version, client identifier rules,
//! shutdown) and attaches the connection to the session actor of its client
//! id, creating the session if there is none. Every protocol ends up as a
//! [`Transport`] byte stream; a TLS client certificate's identity travels
//! with it ([`CertIdentity`]).
//!
//! Lifecycle: `bind` (fails early on a busy port or an unreadable TLS
//! file), `run` until the shutdown signal; connections already handed over
//! live on in their sessions. TLS files are reloaded by [`TlsSource::watch`].

pub mod admit;
pub mod tls;
pub mod ws;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use bytestring::ByteString;
use futures::StreamExt;
use parking_lot::Mutex;
use rand::Rng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::codec::{
    ConnAck, ConnAckProperties, DecodeError, Limits, Packet, ProtocolVersion, ReasonCode,
};
use crate::config::{ClientAuth, ListenerConfig, ListenerProtocol, MqttConfig};
use crate::counters::Metrics;
use crate::handle::NewConnection;
use crate::session::Session;
use crate::state::State;
pub use crate::transport::CertIdentity;
use crate::transport::{Counted, IdentityError, OpenGuard, PacketStream, ReadError, Transport};
pub use tls::{TlsError, TlsSource};

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The address is taken, or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A `tls` or `wss` listener without TLS settings.
    #[error("{protocol} listener {addr}: no certificate and key configured ([listeners.tls])")]
    NoTls {
        protocol: ListenerProtocol,
        addr: SocketAddr,
    },
    /// A TLS file is missing or invalid.
    #[error("{protocol} listener {addr}: {source}")]
    Tls {
        protocol: ListenerProtocol,
        addr: SocketAddr,
        source: TlsError,
    },
}

/// A bound listener, not yet accepting.
pub struct Listener {
    tcp: TcpListener,
    endpoint: Arc<Endpoint>,
    max_connections: usize,
    /// Connections of this listener that are open.
    open: Arc<AtomicUsize>,
    /// True while [`Listener::run`] accepts.
    accepting: Arc<AtomicBool>,
}

/// What a listener's connections go through before `bootstrap`: TLS if
/// configured, then the WebSocket upgrade if configured.
struct Endpoint {
    /// For log lines.
    protocol: ListenerProtocol,
    tls: Option<Arc<TlsSource>>,
    websocket: Option<WebSocketEndpoint>,
}

struct WebSocketEndpoint {
    path: String,
    config: WebSocketConfig,
}

/// Why a connection did not reach `bootstrap`.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("client certificate refused: {0}")]
    Identity(#[from] IdentityError),
    #[error("WebSocket handshake failed: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
}

type Handshaken = (Box<dyn Transport>, Option<CertIdentity>);

impl HandshakeError {
    /// What an operator can do about a failure that is the client's
    /// configuration, not an attack or a network fault: logged at warn with
    /// the error (the client itself only sees a TLS alert).
    fn hint(&self) -> Option<&'static str> {
        let HandshakeError::Tls(e) = self else {
            return None;
        };
        // rustls reports webpki's error inside `InvalidCertificate(Other(..))`;
        // its Debug form is the only stable way to see which one.
        let unsupported_version = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|e| format!("{e:?}").contains("UnsupportedCertVersion"));
        unsupported_version.then_some(
            "the client certificate is X.509 v1 (what `openssl x509 -req` makes without \
             `-extfile`); only v3 certificates are accepted: re-issue it with extensions, \
             e.g. `-extfile <(printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth')`",
        )
    }
}

impl Endpoint {
    async fn handshake(&self, stream: Counted<TcpStream>) -> Result<Handshaken, HandshakeError> {
        let (stream, identity): Handshaken = match &self.tls {
            Some(source) => {
                let (tls, identity) = tls_accept(source, stream).await?;
                (Box::new(tls), identity)
            }
            None => (Box::new(stream), None),
        };
        let stream: Box<dyn Transport> = match &self.websocket {
            Some(w) => Box::new(ws::accept(stream, &w.path, w.config).await?),
            None => stream,
        };
        Ok((stream, identity))
    }
}

/// The TLS handshake with the current material, and the identity of the
/// client's certificate if it sent one (rustls has verified it).
async fn tls_accept<S: Transport>(
    source: &TlsSource,
    stream: S,
) -> Result<(tokio_rustls::server::TlsStream<S>, Option<CertIdentity>), HandshakeError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(source.server_config());
    let tls = acceptor.accept(stream).await.map_err(HandshakeError::Tls)?;
    let (client_auth, identity_source) = source.client_auth();
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first());
    let identity = match leaf {
        Some(cert) if client_auth != ClientAuth::None => {
            Some(CertIdentity::from_der(cert, identity_source)?)
        }
        _ => None,
    };
    Ok((tls, identity))
}

impl Listener {
    /// Binds the configured address and loads its TLS files.
    pub async fn bind(
        config: &ListenerConfig,
        mqtt: &MqttConfig,
    ) -> Result<Listener, ListenerError> {
        let tls = match (&config.tls, config.protocol.is_tls()) {
            (Some(tls), true) => {
                let label = format!("{} {}", config.protocol, config.bind);
                let source = TlsSource::load(tls, label).map_err(|source| ListenerError::Tls {
                    protocol: config.protocol,
                    addr: config.bind,
                    source,
                })?;
                Some(Arc::new(source))
            }
            (None, true) => {
                return Err(ListenerError::NoTls {
                    protocol: config.protocol,
                    addr: config.bind,
                })
            }
            (_, false) => None,
        };
        let websocket = config.protocol.is_websocket().then(|| WebSocketEndpoint {
            path: config.path.clone(),
            config: ws::websocket_config(mqtt.max_packet_size),
        });
        let tcp = TcpListener::bind(config.bind)
            .await
            .map_err(|source| ListenerError::Bind {
                addr: config.bind,
                source,
            })?;
        Ok(Listener {
            tcp,
            endpoint: Arc::new(Endpoint {
                protocol: config.protocol,
                tls,
                websocket,
            }),
            max_connections: config.max_connections,
            open: Arc::new(AtomicUsize::new(0)),
            accepting: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    pub fn protocol(&self) -> ListenerProtocol {
        self.endpoint.protocol
    }

    /// The count of this listener's open connections (for metrics).
    pub fn open_connections(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }

    /// True while [`run`](Self::run) accepts connections (for `/readyz`).
    pub fn accepting(&self) -> Arc<AtomicBool> {
        self.accepting.clone()
    }

    /// The TLS material of a `tls` or `wss` listener, to reload.
    pub fn tls_source(&self) -> Option<Arc<TlsSource>> {
        self.endpoint.tls.clone()
    }

    /// Accepts until `shutdown` turns true.
    pub async fn run(self, state: State, mut shutdown: watch::Receiver<bool>) {
        let addr = self.local_addr().ok();
        let _accepting = Accepting::new(self.accepting.clone());
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
            if self.open.load(Ordering::Relaxed) >= self.max_connections {
                Metrics::add(&state.metrics().connections_refused, 1);
                tracing::warn!(%peer, max = self.max_connections, "connection limit reached, connection refused");
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
            let endpoint = self.endpoint.clone();
            state
                .next_worker()
                .spawn_fn(move || match TcpStream::from_std(std_stream) {
                    Ok(stream) => {
                        let counted = Counted {
                            inner: stream,
                            guard,
                        };
                        actix_rt::spawn(handshake_and_bootstrap(endpoint, counted, peer, state2));
                    }
                    Err(e) => tracing::warn!(%peer, error = %e, "cannot register socket"),
                });
        }
        tracing::info!(listener = ?addr, "listener stopped");
    }
}

/// Runs the endpoint's handshakes (bounded by the connect timeout, against
/// clients that start one and stall), then `bootstrap`.
async fn handshake_and_bootstrap(
    endpoint: Arc<Endpoint>,
    stream: Counted<TcpStream>,
    peer: SocketAddr,
    state: State,
) {
    let protocol = endpoint.protocol;
    let timeout = state.config().mqtt.connect_timeout();
    match tokio::time::timeout(timeout, endpoint.handshake(stream)).await {
        Ok(Ok((transport, peer_identity))) => {
            bootstrap(transport, peer, peer_identity, state).await
        }
        Ok(Err(e)) => {
            Metrics::add(&state.metrics().connections_refused, 1);
            match e.hint() {
                Some(hint) => {
                    tracing::warn!(%peer, %protocol, error = %e, hint, "handshake failed, closing")
                }
                None => tracing::info!(%peer, %protocol, error = %e, "handshake failed, closing"),
            }
        }
        Err(_) => {
            Metrics::add(&state.metrics().connections_refused, 1);
            tracing::debug!(%peer, %protocol, "handshake not done within the connect timeout, closing");
        }
    }
}

/// Marks a listener as accepting until its accept loop ends, however it
/// ends.
struct Accepting(Arc<AtomicBool>);

impl Accepting {
    fn new(flag: Arc<AtomicBool>) -> Accepting {
        flag.store(true, Ordering::Release);
        Accepting(flag)
    }
}

impl Drop for Accepting {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Writes a refusing CONNACK and closes.
async fn refuse(transport: Box<dyn Transport>, protocol: ProtocolVersion, code: ReasonCode) {
    refuse_with(transport, protocol, code, ConnAckProperties::default()).await
}

async fn refuse_with(
    transport: Box<dyn Transport>,
    protocol: ProtocolVersion,
    code: ReasonCode,
    properties: ConnAckProperties,
) {
    let mut buf = BytesMut::new();
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: code,
        properties,
    });
    if connack.encode(protocol, &mut buf).is_ok() {
        crate::transport::shutdown_transport(transport, &buf).await;
    }
}

/// Refuses a CONNECT this node cannot serve now (it drains, or is not
/// caught up with the cluster): a 5.0 client gets 0x9C (Use another server)
/// with the Server Reference of a live node when there is one, else 0x88
/// (Server unavailable), as 3.1/3.1.1 clients do (return code 3).
async fn redirect(
    state: &State,
    transport: Box<dyn Transport>,
    protocol: ProtocolVersion,
    client_id: &str,
) {
    let reference = state.cluster().redirect(client_id);
    match reference {
        Some(reference) if protocol.is_v5() => {
            let properties = ConnAckProperties {
                server_reference: Some(reference.into()),
                ..Default::default()
            };
            refuse_with(
                transport,
                protocol,
                ReasonCode::UseAnotherServer,
                properties,
            )
            .await
        }
        _ => refuse(transport, protocol, ReasonCode::ServerUnavailable).await,
    }
}

/// A fresh client identifier: the configured prefix and 16 random hex digits.
fn generate_client_id(prefix: &str) -> ByteString {
    let n: u64 = rand::thread_rng().gen();
    ByteString::from(format!("{prefix}{n:016x}"))
}

/// Reads the CONNECT of a new connection and attaches it to its session.
pub async fn bootstrap(
    transport: Box<dyn Transport>,
    peer: SocketAddr,
    peer_identity: Option<CertIdentity>,
    state: State,
) {
    // limits.max_connect_rate: refused before any byte is read
    if !state.limits().admit_connection(peer.ip()) {
        Metrics::add(&state.metrics().connect_rate_refused, 1);
        tracing::debug!(%peer, "connect rate of the address exceeded, closing");
        state.hub().events().emit(
            crate::hub::events::Severity::Warning,
            "client",
            &peer.ip().to_string(),
            "connection refused: connect rate of the address exceeded",
            serde_json::json!({ "reason": "connect rate", "peer": peer.to_string() }),
        );
        return;
    }
    let mqtt = &state.config().mqtt;
    let limits = Limits {
        max_packet_size: mqtt.max_packet_size,
        version: ProtocolVersion::V311,
        refuse_control_characters: mqtt.strict_control_characters,
    };
    let mut packets = PacketStream::new(
        transport,
        BytesMut::with_capacity(1024),
        limits,
        state.metrics().clone(),
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
            Metrics::add(&state.metrics().protocol_errors, 1);
            tracing::info!(%peer, packet = %other.packet_type(), "first packet is not CONNECT [MQTT-3.1.0-1], closing");
            return;
        }
        Ok(Some(Err(ReadError::Decode(DecodeError::UnsupportedProtocolVersion {
            name,
            level,
        })))) => {
            Metrics::add(&state.metrics().connections_refused, 1);
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
            Metrics::add(&state.metrics().protocol_errors, 1);
            tracing::info!(%peer, error = %e, "bad CONNECT, closing");
            return;
        }
    };
    let authenticated = match crate::enhanced_auth::authenticate(
        &mut packets,
        &connect,
        state.auth_methods(),
        mqtt.connect_timeout(),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            Metrics::add(&state.metrics().connections_refused, 1);
            tracing::info!(client_id = %connect.client_id, %peer, error = %e, "enhanced authentication did not succeed");
            let (transport, _) = packets.into_parts();
            if let Some(code) = e.reason_code() {
                refuse(transport, connect.protocol, code).await;
            }
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
                Metrics::add(&state.metrics().connections_refused, 1);
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
    // 3.1 allowed a server to refuse ids over 23 characters; real clients
    // send longer ones, so only when configured to be strict.
    if protocol == ProtocolVersion::V31 && mqtt.strict_v31_client_id && client_id.len() > 23 {
        return refuse(transport, protocol, ReasonCode::ClientIdentifierNotValid).await;
    }
    // Authentication, and the will's topic limits and ACL (`admit`).
    let principal = match admit::admit(
        &state,
        &connect,
        &client_id,
        peer,
        peer_identity.as_ref().map(|c| c.name.clone()),
        authenticated.as_ref().map(|a| a.username.as_str()),
    )
    .await
    {
        Ok(principal) => principal,
        Err(refusal) => return refuse(transport, protocol, refusal.reason_code()).await,
    };
    if state.is_draining() {
        Metrics::add(&state.metrics().connections_refused, 1);
        return redirect(&state, transport, protocol, &client_id).await;
    }
    let imported = match state
        .cluster()
        .take_session(
            &client_id,
            connect.clean_start,
            crate::nodes::SessionHere {
                handed_to: state.registry().handed_to(&client_id),
                live: state.registry().get(&client_id).is_some(),
                moved: state.registry().moved_for(&client_id),
            },
        )
        .await
    {
        Ok(imported) => imported,
        Err(crate::nodes::NotReady) => {
            Metrics::add(&state.metrics().connections_refused, 1);
            return redirect(&state, transport, protocol, &client_id).await;
        }
    };
    let slot = Arc::new(Mutex::new(Some(NewConnection {
        transport,
        read_buf,
        connect,
        client_id: client_id.clone(),
        assigned_client_id: assigned,
        peer,
        authenticated,
        imported,
        peer_identity,
        principal,
    })));
    attach(&state, client_id, slot).await;
}

/// Hands the connection to the session of its client id. A session that
/// stops while the `Attach` waits in its mailbox drops the message without
/// taking the connection; then the stale registry entry is removed and a new
/// session created.
async fn attach(state: &State, client_id: ByteString, slot: Arc<Mutex<Option<NewConnection>>>) {
    for _ in 0..8 {
        let session = state.registry().find_or_start(&client_id, || {
            Session::start_new(state.clone(), client_id.clone())
        });
        if session.attach(slot.clone()).await && slot.lock().is_none() {
            return;
        }
        state.registry().remove_if_same(&client_id, &session);
    }
    tracing::warn!(%client_id, "could not attach connection to a session, closing");
}
