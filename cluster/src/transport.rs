//! Peers: their addresses, one gRPC channel each, their health, and the raft
//! message senders.
//!
//! It owns how this node reaches another: the address (from the replicated
//! member list, else the seed list), one lazily connected tonic `Channel` per
//! peer shared by all services (HTTP/2 multiplexes them), and the time of the
//! last successful exchange. It never interprets raft messages beyond their
//! `to` and type.
//!
//! Raft messages to a peer go through one task per peer that sends whatever
//! queued up as one `RaftBatch` per call: while a call is in flight, the next
//! batch accumulates. A failed call drops its batch (raft resends) and
//! reports the peer unreachable to raft; snapshots are reported delivered or
//! failed.
//!
//! # Lifecycle
//! 1. Created by `Cluster::start` with the seed list.
//! 2. The raft driver calls [`Peers::send`] from its thread; the first
//!    message to a peer spawns its sender task on the runtime.
//! 3. Shutdown cancels the token: sender tasks stop, channels are dropped.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use crossbeam_channel::Sender;
use hyper_util::rt::TokioIo;
use parking_lot::{Mutex, RwLock};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::{net::TcpSocket, sync::mpsc};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{
    config::Seed,
    driver::Input,
    error::{Error, Result},
    state::ClusterState,
};

/// Most bytes of raft messages in one batch (a single larger message, a big
/// snapshot, still goes alone).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// gRPC message size limit: snapshots of a large state are big.
pub(crate) const MAX_GRPC_MESSAGE: usize = 1024 * 1024 * 1024;

/// See the module docs.
pub(crate) struct Peers {
    id: u64,
    rpc_timeout: Duration,
    bind_outgoing: Option<IpAddr>,
    state: Arc<RwLock<ClusterState>>,
    /// Seeds by id: configured ones, and those learned by asking.
    seeds: RwLock<HashMap<u64, String>>,
    channels: Mutex<HashMap<u64, (String, Channel)>>,
    contact: RwLock<HashMap<u64, Instant>>,
    raft_queues: Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>,
    driver: Sender<Input>,
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
}

impl Peers {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        rpc_timeout: Duration,
        bind_outgoing: Option<IpAddr>,
        state: Arc<RwLock<ClusterState>>,
        seeds: &[Seed],
        driver: Sender<Input>,
        shutdown: CancellationToken,
    ) -> Peers {
        let seeds = seeds
            .iter()
            .filter_map(|s| Some((s.id?, s.address.clone())))
            .collect();
        Peers {
            id,
            rpc_timeout,
            bind_outgoing,
            state,
            seeds: RwLock::new(seeds),
            channels: Mutex::new(HashMap::new()),
            contact: RwLock::new(HashMap::new()),
            raft_queues: Mutex::new(HashMap::new()),
            driver,
            runtime: tokio::runtime::Handle::current(),
            shutdown,
        }
    }

    /// This node's id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn rpc_timeout(&self) -> Duration {
        self.rpc_timeout
    }

    /// Records the id of a seed learned by asking it.
    pub(crate) fn learn_seed(&self, id: u64, address: String) {
        self.seeds.write().insert(id, address);
    }

    /// The address of `id`: its announced one, else its seed's.
    pub(crate) fn address(&self, id: u64) -> Option<String> {
        let announced = self
            .state
            .read()
            .member(id)
            .map(|m| m.address.clone())
            .filter(|a| !a.is_empty());
        announced.or_else(|| self.seeds.read().get(&id).cloned())
    }

    /// Marks a successful exchange with `id`.
    pub(crate) fn touch(&self, id: u64) {
        self.contact.write().insert(id, Instant::now());
    }

    /// Time since the last successful exchange with `id`.
    pub(crate) fn last_contact(&self, id: u64) -> Option<Duration> {
        self.contact.read().get(&id).map(Instant::elapsed)
    }

    /// The channel to `id`, created on first use and again if its address
    /// changed.
    pub(crate) fn channel(&self, id: u64) -> Result<Channel> {
        let address = self.address(id).ok_or(Error::UnknownNode(id))?;
        let mut channels = self.channels.lock();
        if let Some((a, channel)) = channels.get(&id) {
            if *a == address {
                return Ok(channel.clone());
            }
        }
        let channel = self.connect(&address)?;
        channels.insert(id, (address, channel.clone()));
        Ok(channel)
    }

    /// A lazily connected channel to `address` (host:port), outgoing
    /// connections bound to `bind_outgoing`.
    pub(crate) fn connect(&self, address: &str) -> Result<Channel> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Error::Config(format!("address `{address}`: {e}")))?
            .connect_timeout(self.rpc_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(self.rpc_timeout)
            .keep_alive_while_idle(true);
        let bind = self.bind_outgoing;
        let _guard = self.runtime.enter();
        Ok(endpoint
            .connect_with_connector_lazy(tower::service_fn(move |uri: Uri| connect_tcp(uri, bind))))
    }

    /// Queues raft messages for their peers (called from the driver thread).
    pub(crate) fn send(self: &Arc<Self>, messages: Vec<Message>) {
        let mut queues = self.raft_queues.lock();
        for message in messages {
            let to = message.to;
            let queue = queues.entry(to).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let peers = Arc::clone(self);
                self.runtime
                    .spawn(async move { peers.raft_sender(to, rx).await });
                tx
            });
            let _ = queue.send(message);
        }
    }

    /// Sends batches of raft messages to `to` until shutdown.
    async fn raft_sender(self: Arc<Self>, to: u64, mut rx: mpsc::UnboundedReceiver<Message>) {
        loop {
            let first = tokio::select! {
                () = self.shutdown.cancelled() => return,
                m = rx.recv() => match m { Some(m) => m, None => return },
            };
            let mut batch = vec![first];
            let mut size = batch[0].compute_size() as usize;
            while size < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(m) => {
                        size += m.compute_size() as usize;
                        batch.push(m);
                    }
                    Err(_) => break,
                }
            }
            let snapshots: Vec<u64> = batch
                .iter()
                .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                .map(|m| m.to)
                .collect();
            let delivered = self.send_batch(to, batch).await;
            if let Err(e) = &delivered {
                tracing::debug!(node = self.id, peer = to, error = %e, "raft batch not delivered");
                let _ = self.driver.send(Input::Unreachable(to));
            }
            for peer in snapshots {
                let _ = self.driver.send(Input::SnapshotStatus {
                    to: peer,
                    delivered: delivered.is_ok(),
                });
            }
        }
    }

    async fn send_batch(&self, to: u64, batch: Vec<Message>) -> Result<()> {
        let messages = batch
            .iter()
            .map(|m| m.write_to_bytes().map(Into::into))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::decode("raft message", e))?;
        let mut client = proto::raft_transport_client::RaftTransportClient::new(self.channel(to)?)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        let mut request = tonic::Request::new(proto::RaftBatch {
            from: self.id,
            to,
            messages,
        });
        request.set_timeout(self.rpc_timeout);
        client
            .send(request)
            .await
            .map_err(|s| Error::peer(to, &s))?;
        self.touch(to);
        Ok(())
    }
}

/// Connects to `uri`'s host and port (resolved now, so a DNS name follows
/// its pod), from `bind` if given.
async fn connect_tcp(
    uri: Uri,
    bind: Option<IpAddr>,
) -> std::io::Result<TokioIo<tokio::net::TcpStream>> {
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host}: no address"));
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = bind.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.set_nodelay(true)?;
        match socket.connect(addr).await {
            Ok(stream) => return Ok(TokioIo::new(stream)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Decodes a raft message from a peer.
///
/// eraftpb has no group fields, but rust-protobuf 2 skips unknown groups
/// recursively (RUSTSEC-2024-0437: deep nesting overflows the stack), so
/// bytes with a group wire type in any message of the schema are refused
/// before parsing.
pub(crate) fn decode_raft_message(bytes: &[u8]) -> Result<Message> {
    check_no_groups(bytes, Schema::Message)?;
    Message::parse_from_bytes(bytes).map_err(|e| Error::decode("raft message", e))
}

/// The eraftpb messages a raft `Message` nests, by field number.
#[derive(Clone, Copy, Debug)]
enum Schema {
    Message,
    Snapshot,
    SnapshotMetadata,
    /// Entry, ConfState: nothing nested.
    Leaf,
}

impl Schema {
    fn nested(self, field: u64) -> Option<Schema> {
        match (self, field) {
            (Schema::Message, 7) => Some(Schema::Leaf),     // entries
            (Schema::Message, 9) => Some(Schema::Snapshot), // snapshot
            (Schema::Snapshot, 2) => Some(Schema::SnapshotMetadata),
            (Schema::SnapshotMetadata, 1) => Some(Schema::Leaf), // conf_state
            _ => None,
        }
    }
}

fn check_no_groups(bytes: &[u8], schema: Schema) -> Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let (key, n) = varint(rest)?;
        rest = &rest[n..];
        let (field, wire) = (key >> 3, key & 7);
        rest = match wire {
            0 => &rest[varint(rest)?.1..],
            1 => rest.get(8..).ok_or_else(truncated)?,
            5 => rest.get(4..).ok_or_else(truncated)?,
            2 => {
                let (len, n) = varint(rest)?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|len| n.checked_add(len))
                    .filter(|end| *end <= rest.len())
                    .ok_or_else(truncated)?;
                if let Some(inner) = schema.nested(field) {
                    check_no_groups(&rest[n..end], inner)?;
                }
                &rest[end..]
            }
            _ => {
                return Err(Error::decode(
                    "raft message",
                    format!("wire type {wire} in field {field}"),
                ))
            }
        };
    }
    Ok(())
}

fn truncated() -> Error {
    Error::decode("raft message", "truncated")
}

fn varint(bytes: &[u8]) -> Result<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(truncated())
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{Entry, Snapshot};

    use super::*;

    #[test]
    fn raft_messages_round_trip_through_the_check() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = 2;
        m.from = 1;
        m.mut_entries().push(Entry {
            index: 7,
            data: vec![0x1b; 40].into(),
            ..Default::default()
        });
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2];
        m.set_snapshot(snapshot);
        let bytes = m.write_to_bytes().unwrap();
        assert_eq!(decode_raft_message(&bytes).unwrap(), m);
    }

    #[test]
    fn groups_and_garbage_are_refused_without_recursion() {
        // 100 000 nested start-group tags (field 1, wire type 3).
        let deep = vec![0x0b; 100_000];
        let err = decode_raft_message(&deep).unwrap_err();
        assert!(err.to_string().contains("wire type 3"), "{err}");
        // A group inside an entry (field 7 of Message, length 2).
        let err = decode_raft_message(&[0x3a, 0x02, 0x0b, 0x0c]).unwrap_err();
        assert!(err.to_string().contains("wire type 3"), "{err}");
        for garbage in [&[0xff_u8][..], &[0x3a, 0x10], &[0x09, 1, 2]] {
            assert!(decode_raft_message(garbage).is_err(), "{garbage:?}");
        }
    }
}
