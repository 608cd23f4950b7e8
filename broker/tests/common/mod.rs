//! Test harness: a real broker on a loopback port with its store in a temp
//! directory, raw clients that speak bytes, and polling helpers.
//!
//! Expected packets are built by `build`, byte by byte, independently of the
//! broker's encoder, and tests compare bytes.

#![allow(dead_code)]

pub mod build;
pub mod client5;
pub mod flow;
pub mod helm;
pub mod http;
pub mod hub;
pub mod pg;
pub mod pki;
pub mod pods;
pub mod process;
pub mod s3;
pub mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use broker::codec::{Limits, Packet, ProtocolVersion};
use broker::config::{Config, ListenerConfig, ListenerProtocol, TlsConfig};
use broker::server::{self, ServerHandle};
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for something that should happen (not a
/// performance bound: only a guard against hanging forever).
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How long a test waits to be confident something does NOT happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// A broker running in this process.
pub struct TestBroker {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl TestBroker {
    /// Starts a broker with default settings on a free loopback port.
    pub fn start() -> TestBroker {
        TestBroker::start_with(|_| {})
    }

    /// Starts a broker after `tweak` adjusted its configuration.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestBroker {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut b = TestBroker::start_in(dir.path(), tweak);
        b._dir = Some(dir);
        b
    }

    /// Starts a broker on the store in `data_dir` (kept after the broker stops).
    pub fn start_in(data_dir: &Path, tweak: impl FnOnce(&mut Config)) -> TestBroker {
        let mut config = test_config(data_dir);
        tweak(&mut config);
        let handle = server::start(config).expect("broker starts");
        TestBroker {
            addr: handle.mqtt_addr(),
            handle: Some(handle),
            data_dir: data_dir.to_owned(),
            _dir: None,
        }
    }

    /// Address of the HTTP endpoint (panics if it is off).
    pub fn http_addr(&self) -> SocketAddr {
        self.handle
            .as_ref()
            .expect("running")
            .http_addr()
            .expect("HTTP endpoint on (common::with_http)")
    }

    /// Addresses of the listeners, in configuration order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.handle
            .as_ref()
            .expect("running")
            .local_addrs()
            .to_vec()
    }

    /// Stops the broker gracefully; the store stays.
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().expect("clean shutdown");
        }
    }

    /// Stops and starts again on the same store and port.
    pub fn restart(&mut self) {
        self.restart_with(|_| {});
    }

    /// [`restart`](Self::restart) after `tweak` adjusted the configuration.
    pub fn restart_with(&mut self, tweak: impl FnOnce(&mut Config)) {
        self.stop();
        let addr = self.addr;
        let mut config = test_config(&self.data_dir);
        tweak(&mut config);
        config.listeners[0].bind = addr;
        let handle = server::start(config).expect("broker restarts");
        self.handle = Some(handle);
    }
}

/// A configuration for tests: loopback, port 0, two workers, no HTTP
/// endpoint (`with_http` turns it on) and no `$SYS` topics (a test of
/// `$SYS/#` would get them).
pub fn test_config(data_dir: &Path) -> Config {
    Config {
        data_dir: data_dir.to_owned(),
        workers: 2,
        listeners: vec![ListenerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        }],
        http: broker::config::HttpConfig {
            bind: String::new(),
            admin_token: None,
        },
        sys_interval_secs: 0,
        ..Default::default()
    }
}

/// Turns the HTTP endpoint on, on a free loopback port.
pub fn with_http(config: &mut Config) {
    config.http.bind = "127.0.0.1:0".into();
}

/// A listener on 127.0.0.1, port 0.
pub fn listener(protocol: ListenerProtocol, tls: Option<TlsConfig>) -> ListenerConfig {
    ListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        protocol,
        tls,
        ..Default::default()
    }
}

/// Polls `check` every `interval` until it returns true or `deadline` passes
/// (nats-server's `checkFor`); the test asserts on the answer with its own
/// message. The one polling loop of the tests: none writes its own.
pub async fn poll_until(
    deadline: Duration,
    interval: Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(interval).await;
    }
}

/// [`poll_until`] for a synchronous test (it blocks the thread).
pub fn wait_until(deadline: Duration, interval: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + deadline;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(interval);
    }
}

/// [`poll_until`] for a check that does not wait.
pub async fn check_for(
    deadline: Duration,
    interval: Duration,
    mut check: impl FnMut() -> bool,
) -> bool {
    poll_until(deadline, interval, async || check()).await
}

/// A byte stream a test client talks over: TCP, TLS, WebSocket.
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for T {}

/// The broker crate's directory at run time (cargo test sets
/// `CARGO_MANIFEST_DIR`): the one baked in at build time is stale when a
/// cached build of an unchanged crate is reused from another checkout path.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// A client that writes and reads raw bytes.
pub struct Raw {
    pub stream: Box<dyn ClientStream>,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).unwrap();
        Raw::over(stream)
    }

    /// A client over an established stream (3.1.1 until told otherwise).
    pub fn over(stream: impl ClientStream + 'static) -> Raw {
        Raw {
            stream: Box::new(stream),
            buf: BytesMut::new(),
            version: ProtocolVersion::V311,
        }
    }

    /// Sends a 3.1.1 CONNECT and returns the CONNACK's return code, or None
    /// if the connection ended (or failed) first.
    pub async fn try_connect_mqtt(&mut self, client_id: &str) -> Option<u8> {
        if !self.try_send(&build::connect(4, client_id, true, 60)).await {
            return None;
        }
        let connack = self.recv_bytes().await?;
        assert_eq!(connack[0], 0x20, "CONNACK expected, got {connack:02x?}");
        Some(connack[3])
    }

    /// Connects from the local address `source` (e.g. 127.0.0.2), with a
    /// receive buffer of `recv_buffer` bytes if given.
    pub async fn connect_from(
        addr: SocketAddr,
        source: std::net::IpAddr,
        recv_buffer: Option<u32>,
    ) -> std::io::Result<Raw> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Raw {
            stream: Box::new(stream),
            buf: BytesMut::new(),
            version: ProtocolVersion::V311,
        })
    }

    /// Connects and completes a CONNECT / CONNACK exchange (3.1.1).
    pub async fn mqtt(addr: SocketAddr, client_id: &str, clean: bool) -> Raw {
        Raw::mqtt_level(addr, client_id, clean, 4).await
    }

    /// Connects with protocol level 3 (3.1) or 4 (3.1.1).
    pub async fn mqtt_level(addr: SocketAddr, client_id: &str, clean: bool, level: u8) -> Raw {
        let mut raw = Raw::connect(addr).await;
        if level == 3 {
            raw.version = ProtocolVersion::V31;
        }
        raw.send(&build::connect(level, client_id, clean, 60)).await;
        let connack = raw.recv_bytes().await.expect("CONNACK");
        assert_eq!(connack[0], 0x20, "CONNACK expected, got {connack:02x?}");
        assert_eq!(connack[3], 0, "connection accepted: {connack:02x?}");
        raw
    }

    /// Connects with MQTT 5 and empty CONNECT properties except `props`.
    pub async fn mqtt5(addr: SocketAddr, client_id: &str, clean: bool, props: &[u8]) -> Raw {
        let mut raw = Raw::connect(addr).await;
        raw.version = ProtocolVersion::V5;
        raw.send(&build::connect5(client_id, clean, 60, props))
            .await;
        match raw.recv().await {
            Some(Packet::ConnAck(c)) => {
                assert_eq!(c.reason_code, broker::codec::ReasonCode::Success)
            }
            other => panic!("CONNACK expected, got {other:?}"),
        }
        raw
    }

    /// Writes and flushes (TLS and WebSocket streams buffer).
    pub async fn send(&mut self, bytes: &[u8]) {
        assert!(self.try_send(bytes).await, "write failed");
    }

    /// Writes, reporting failure instead of panicking (the peer may be gone).
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }

    /// Reads one whole packet as bytes; None at EOF or after PATIENCE.
    pub async fn recv_bytes(&mut self) -> Option<Vec<u8>> {
        self.recv_bytes_within(PATIENCE).await
    }

    pub async fn recv_bytes_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        let end = tokio::time::Instant::now() + wait;
        loop {
            if let Some(len) = whole_packet_len(&self.buf) {
                return Some(self.buf.split_to(len).to_vec());
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(end, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads and decodes one packet; None at EOF or after PATIENCE.
    pub async fn recv(&mut self) -> Option<Packet> {
        let bytes = self.recv_bytes().await?;
        let mut b = BytesMut::from(&bytes[..]);
        let limits = Limits {
            max_packet_size: u32::MAX,
            version: self.version,
            refuse_control_characters: false,
        };
        Some(
            Packet::decode(&mut b, &limits)
                .expect("broker sent a valid packet")
                .expect("whole packet"),
        )
    }

    /// Nothing arrives within QUIET.
    pub async fn expect_silence(&mut self) {
        if let Some(p) = self.recv_bytes_within(QUIET).await {
            panic!("expected nothing, got {p:02x?}");
        }
    }

    /// The broker closes the connection (after possibly sending packets,
    /// returned in order).
    pub async fn expect_closed(&mut self) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let end = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(len) = whole_packet_len(&self.buf) {
                got.push(self.buf.split_to(len).to_vec());
                continue;
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(end, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return got,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("connection still open after {PATIENCE:?}; got {got:02x?}"),
            }
        }
    }
}

/// Length of the first packet in `buf` if it is complete (fixed header
/// parsed here, independently of the codec).
fn whole_packet_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 2 {
        return None;
    }
    let mut len = 0usize;
    let mut shift = 0;
    for i in 1..5 {
        let b = *buf.get(i)?;
        len |= ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            let total = 1 + i + len;
            return (buf.len() >= total).then_some(total);
        }
        shift += 7;
    }
    panic!("invalid remaining length from broker: {:02x?}", &buf[..5]);
}
