//! A small MQTT client over `broker::codec` and a tokio `TcpStream`: just
//! what a workload needs (connect, subscribe, publish, read, acknowledge),
//! with buffered reads and writes so a client can push or take many packets
//! per syscall.
//!
//! It is deliberately not a general client library: no reconnect, no keep
//! alive pings (workloads set keep alive 0), no topic aliases. Every wait
//! is bounded by the caller's timeout.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use broker::codec::{
    Connect, ConnectProperties, Disconnect, Limits, Packet, ProtocolVersion, PubResponse, QoS,
    ReasonCode, Subscribe, SubscribeProperties, SubscriptionOptions,
};
use bytes::BytesMut;
use bytestring::ByteString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub version: ProtocolVersion,
    pub client_id: String,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// 5.0 Session Expiry Interval; for 3.1.1 a persistent session is
    /// `clean_start: false`.
    pub session_expiry_interval: Option<u32>,
    /// Source address to bind before connecting; port 0 lets the kernel
    /// choose (slow once thousands of its ports are taken, see
    /// [`tcp_connect`]).
    pub local_addr: Option<SocketAddr>,
    /// Bound on connecting plus CONNACK.
    pub timeout: Duration,
    /// Keep Alive of the CONNECT, seconds (0: none). The client sends no
    /// PINGREQ: a connection that sends nothing for 1.5 times this long is
    /// closed by the broker.
    pub keep_alive: u16,
}

impl ClientOptions {
    pub fn new(version: ProtocolVersion, client_id: impl Into<String>) -> ClientOptions {
        ClientOptions {
            version,
            client_id: client_id.into(),
            clean_start: true,
            session_expiry_interval: None,
            local_addr: None,
            timeout: Duration::from_secs(10),
            keep_alive: 0,
        }
    }
}

/// Size of each read; also the threshold above which writes are flushed.
const IO_CHUNK: usize = 64 * 1024;

/// The reading side: decoded packets.
pub struct PacketReader {
    read: OwnedReadHalf,
    buf: BytesMut,
    limits: Limits,
}

impl PacketReader {
    /// The next packet already buffered, without reading.
    pub fn try_next(&mut self) -> anyhow::Result<Option<Packet>> {
        Packet::decode(&mut self.buf, &self.limits).map_err(|e| anyhow!("bad packet: {e}"))
    }

    /// Reads more bytes; `false` at EOF.
    pub async fn fill(&mut self) -> anyhow::Result<bool> {
        if self.buf.capacity() - self.buf.len() < IO_CHUNK / 4 {
            self.buf.reserve(IO_CHUNK);
        }
        let n = self.read.read_buf(&mut self.buf).await?;
        Ok(n > 0)
    }

    /// The next packet, reading as needed; `None` at EOF.
    pub async fn next(&mut self) -> anyhow::Result<Option<Packet>> {
        loop {
            if let Some(p) = self.try_next()? {
                return Ok(Some(p));
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }
}

/// The writing side: packets are encoded into a buffer and written by
/// `flush` (or by `send`, which flushes at once).
pub struct PacketWriter {
    write: OwnedWriteHalf,
    buf: BytesMut,
    version: ProtocolVersion,
}

impl PacketWriter {
    /// Encodes `packet` into the buffer.
    pub fn queue(&mut self, packet: &Packet) -> anyhow::Result<()> {
        packet
            .encode(self.version, &mut self.buf)
            .map_err(|e| anyhow!("cannot encode {}: {e}", packet.packet_type()))?;
        Ok(())
    }

    /// Bytes queued and not yet written.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Writes what is queued.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.buf.is_empty() {
            self.write.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }

    pub async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        self.queue(packet)?;
        self.flush().await
    }

    /// Sends DISCONNECT and closes the write side.
    pub async fn disconnect(mut self) -> anyhow::Result<()> {
        self.send(&Packet::Disconnect(Disconnect::default()))
            .await?;
        self.write.shutdown().await?;
        Ok(())
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }
}

/// A connected client, before it is split into its reading and writing sides.
pub struct Client {
    pub reader: PacketReader,
    pub writer: PacketWriter,
    /// CONNACK's Session Present.
    pub session_present: bool,
}

/// Opens a TCP connection from `local` (if given) to `addr`.
///
/// `bind` with port 0 makes the kernel search for a port no other socket
/// holds, TIME_WAIT ones included: with tens of thousands taken each bind
/// takes milliseconds. So callers pick ports themselves; the socket has
/// SO_REUSEADDR so a port whose previous connection is in TIME_WAIT can be
/// bound again. If the chosen port is busy, the kernel picks one.
pub async fn tcp_connect(
    addr: SocketAddr,
    local: Option<SocketAddr>,
) -> std::io::Result<TcpStream> {
    let new_socket = || {
        if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
    };
    let mut socket = new_socket()?;
    if let Some(local) = local {
        socket.set_reuseaddr(true)?;
        if socket.bind(local).is_err() {
            socket = new_socket()?;
            socket.bind(SocketAddr::new(local.ip(), 0))?;
        }
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Client {
    /// Connects, sends CONNECT and waits for a successful CONNACK.
    pub async fn connect(addr: SocketAddr, opts: &ClientOptions) -> anyhow::Result<Client> {
        tokio::time::timeout(opts.timeout, Client::connect_inner(addr, opts))
            .await
            .map_err(|_| anyhow!("{}: no CONNACK within {:?}", opts.client_id, opts.timeout))?
    }

    async fn connect_inner(addr: SocketAddr, opts: &ClientOptions) -> anyhow::Result<Client> {
        let stream = tcp_connect(addr, opts.local_addr)
            .await
            .with_context(|| format!("{}: connecting to {addr}", opts.client_id))?;
        let (read, write) = stream.into_split();
        let mut reader = PacketReader {
            read,
            buf: BytesMut::with_capacity(256),
            limits: Limits {
                version: opts.version,
                ..Limits::default()
            },
        };
        let mut writer = PacketWriter {
            write,
            buf: BytesMut::with_capacity(256),
            version: opts.version,
        };
        let properties = ConnectProperties {
            session_expiry_interval: opts.session_expiry_interval,
            receive_maximum: opts.version.is_v5().then_some(u16::MAX),
            ..Default::default()
        };
        let connect = Connect {
            protocol: opts.version,
            clean_start: opts.clean_start,
            keep_alive: opts.keep_alive,
            client_id: ByteString::from(opts.client_id.as_str()),
            will: None,
            username: None,
            password: None,
            properties: if opts.version.is_v5() {
                properties
            } else {
                ConnectProperties::default()
            },
        };
        writer.send(&Packet::Connect(Box::new(connect))).await?;
        match reader.next().await? {
            Some(Packet::ConnAck(ack)) if ack.reason_code == ReasonCode::Success => Ok(Client {
                reader,
                writer,
                session_present: ack.session_present,
            }),
            Some(Packet::ConnAck(ack)) => {
                bail!("{}: CONNACK refused: {:?}", opts.client_id, ack.reason_code)
            }
            Some(other) => bail!(
                "{}: expected CONNACK, got {}",
                opts.client_id,
                other.packet_type()
            ),
            None => bail!("{}: closed before CONNACK", opts.client_id),
        }
    }

    /// Subscribes to `filter` at `qos` and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<()> {
        let packet_id = 1;
        self.writer
            .send(&Packet::Subscribe(Subscribe {
                packet_id,
                filters: vec![(
                    ByteString::from(filter),
                    SubscriptionOptions {
                        qos,
                        ..Default::default()
                    },
                )],
                properties: SubscribeProperties::default(),
            }))
            .await?;
        loop {
            match self.reader.next().await? {
                Some(Packet::SubAck(ack)) if ack.packet_id == packet_id => {
                    return match ack.reason_codes.first() {
                        Some(code) if (*code as u8) < 0x80 => Ok(()),
                        other => bail!("SUBSCRIBE {filter} refused: {other:?}"),
                    };
                }
                // A resumed session may deliver before the SUBACK; the
                // caller subscribes before any traffic, so this is noise.
                Some(_) => continue,
                None => bail!("closed before SUBACK"),
            }
        }
    }
}

/// The acknowledgement a receiver owes for a PUBLISH, if any.
pub fn ack_for(qos: QoS, packet_id: Option<u16>) -> Option<Packet> {
    let response = PubResponse {
        packet_id: packet_id?,
        reason_code: ReasonCode::Success,
        properties: Default::default(),
    };
    match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => Some(Packet::PubAck(response)),
        QoS::ExactlyOnce => Some(Packet::PubRec(response)),
    }
}

/// PUBREL or PUBCOMP for `packet_id`.
pub fn response(packet: fn(PubResponse) -> Packet, packet_id: u16) -> Packet {
    packet(PubResponse {
        packet_id,
        reason_code: ReasonCode::Success,
        properties: Default::default(),
    })
}

/// Flush threshold for writers that batch.
pub const FLUSH_AT: usize = IO_CHUNK;
