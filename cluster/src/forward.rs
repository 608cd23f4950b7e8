//! Publish forwarding: at-least-once delivery of publishes to another node's
//! broker, acked per message.
//!
//! It owns one link per peer on the sending side, and the resend bookkeeping
//! on the receiving side. It never looks inside a message and never decides
//! where one goes (the broker matches its routes).
//!
//! Sending: each link is a task with a long-lived `Forward` stream to its
//! peer. `forward` hands the task a message and a oneshot; the task numbers
//! it (ids increase within the link), keeps it until acked, and sends every
//! message queued since the last frame in one frame, so a busy link carries
//! many messages per frame. When the stream breaks, the task reconnects
//! (backoff 50 ms doubling to 2 s) and sends every unacked message again, in
//! id order: a flapping link delays messages but loses none. At most
//! `forward_window` messages are unacked per peer; beyond them at most
//! `forward_queue_limit` wait in the link's queue, and `forward` fails at
//! once with `Error::Backlog` past that, so a peer that is down for long
//! costs bounded memory.
//!
//! Receiving: a message is identified by (origin node, link id, id). The
//! first copy becomes a `ClusterEvent::Forwarded`; the ack goes out when the
//! broker answers. A copy that arrives while the first is being handled
//! waits for the same answer; one that arrives after it is acked at once. So
//! the broker sees each message once per link, unless the receiving node
//! restarts in between (its bookkeeping is in memory): between nodes the
//! guarantee is at least once.
//!
//! Acks and durability: an ack means what the receiving broker's `Ok` means
//! (the contract of `ClusterEvent::Forwarded`: handled, and stored if a
//! persistent session needs it). The link itself stores nothing: if the
//! sending node crashes, its unacked messages are gone, and the publisher,
//! which was not acked either, sends them again. Copies the broker
//! acknowledged without the peer's answer (the peer was down) it keeps on
//! its own disk and queues again after a restart (the broker's
//! `cluster_bridge/kept.rs`).
//!
//! # Lifecycle
//! 1. The first `forward` to a peer spawns its link task.
//! 2. The task connects, sends, reconnects as needed.
//! 3. Shutdown stops every link; unacked messages fail with `Stopped`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use parking_lot::Mutex;
use storage::{LatencyHistogram, LatencySnapshot};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::{
    error::{Error, Result},
    events::ClusterEvent,
    transport::{Peers, MAX_GRPC_MESSAGE},
    types::{forwarded_from_proto, ForwardedPublish},
};

type Ack = oneshot::Sender<Result<()>>;

/// A message for a link, its answer's sender, and when it was handed to
/// the link (for the forward latency).
type Queued = (ForwardedPublish, Ack, Instant);

/// A link's queue, and its counters.
type LinkQueue = (mpsc::UnboundedSender<Queued>, Arc<LinkCounters>);

/// Counters of one link, shared by `Forwarder` and the link's task.
#[derive(Debug, Default)]
struct LinkCounters {
    /// Messages in the channel, not yet taken by the task.
    queued: AtomicUsize,
    /// Messages accepted for the peer since the link started.
    forwarded: AtomicU64,
    /// Messages refused because the queue was at `forward_queue_limit`.
    refused: AtomicU64,
    /// Time from `enqueue` to the peer's answer, of messages answered.
    latency: LatencyHistogram,
}

/// What one link to a peer has carried, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// The peer.
    pub node: u64,
    /// Messages accepted for it (queued, sent or acked).
    pub forwarded: u64,
    /// Messages waiting in the link's queue (beyond the unacked window).
    pub queued: u64,
    /// Messages refused because the queue was full (`Error::Backlog`).
    pub refused: u64,
    /// Time from handing a message to the link to the peer's answer (ack
    /// or refusal), resends after a reconnect included.
    pub latency: LatencySnapshot,
}

/// The sending side: one link per peer.
pub(crate) struct Forwarder {
    peers: Arc<Peers>,
    /// Per peer: the link's queue, and its counters.
    links: Mutex<HashMap<u64, LinkQueue>>,
    batch: usize,
    window: usize,
    queue_limit: usize,
    shutdown: CancellationToken,
    /// The cluster's runtime: links run there whoever calls `enqueue`.
    runtime: tokio::runtime::Handle,
}

impl Forwarder {
    pub(crate) fn new(
        peers: Arc<Peers>,
        batch: usize,
        window: usize,
        queue_limit: usize,
        shutdown: CancellationToken,
    ) -> Forwarder {
        Forwarder {
            peers,
            links: Mutex::new(HashMap::new()),
            batch: batch.max(1),
            window: window.max(1),
            queue_limit: queue_limit.max(1),
            shutdown,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Sends `msg` to `node`; resolves with the peer broker's answer.
    pub(crate) async fn forward(&self, node: u64, msg: ForwardedPublish) -> Result<()> {
        self.enqueue(node, msg)?.await
    }

    /// Queues `msg` on `node`'s link now, so messages queued one after the
    /// other from one thread keep their order; the future resolves with the
    /// peer broker's answer.
    pub(crate) fn enqueue(
        &self,
        node: u64,
        msg: ForwardedPublish,
    ) -> Result<impl std::future::Future<Output = Result<()>> + Send + 'static> {
        if node == self.peers.id() || self.peers.address(node).is_none() {
            return Err(Error::UnknownNode(node));
        }
        let (tx, rx) = oneshot::channel();
        let sent = {
            let mut links = self.links.lock();
            let (link, counters) = links.entry(node).or_insert_with(|| self.spawn_link(node));
            let waiting = counters.queued.load(Ordering::Relaxed);
            if waiting >= self.queue_limit {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Backlog {
                    node,
                    queued: waiting,
                });
            }
            counters.queued.fetch_add(1, Ordering::Relaxed);
            counters.forwarded.fetch_add(1, Ordering::Relaxed);
            link.send((msg, tx, Instant::now()))
        };
        if sent.is_err() {
            return Err(Error::Stopped("forwarding stopped".into()));
        }
        Ok(async move {
            rx.await
                .unwrap_or_else(|_| Err(Error::Stopped("forwarding stopped".into())))
        })
    }

    /// The counters of every link started so far, by peer id.
    pub(crate) fn stats(&self) -> Vec<ForwardStats> {
        let mut stats: Vec<ForwardStats> = self
            .links
            .lock()
            .iter()
            .map(|(node, (_, c))| ForwardStats {
                node: *node,
                forwarded: c.forwarded.load(Ordering::Relaxed),
                queued: c.queued.load(Ordering::Relaxed) as u64,
                refused: c.refused.load(Ordering::Relaxed),
                latency: c.latency.snapshot(),
            })
            .collect();
        stats.sort_by_key(|s| s.node);
        stats
    }

    fn spawn_link(&self, node: u64) -> LinkQueue {
        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(LinkCounters::default());
        let link = Link {
            counters: Arc::clone(&counters),
            peers: Arc::clone(&self.peers),
            node,
            link_id: rand::random::<u64>(),
            next_id: 1,
            unacked: BTreeMap::new(),
            window: Arc::new(Semaphore::new(self.window)),
            batch: self.batch,
            shutdown: self.shutdown.clone(),
        };
        self.runtime.spawn(link.run(rx));
        (tx, counters)
    }
}

/// One peer's sending task; see the module docs.
struct Link {
    peers: Arc<Peers>,
    node: u64,
    link_id: u64,
    next_id: u64,
    /// Sent or queued, not yet acked: resent on every reconnect; with when
    /// it was handed to the link.
    unacked: BTreeMap<u64, (proto::ForwardedPublish, Ack, Instant)>,
    /// One permit per unacked message.
    window: Arc<Semaphore>,
    /// `queued` counts messages in the channel, not yet taken: shared with
    /// `Forwarder`.
    counters: Arc<LinkCounters>,
    batch: usize,
    shutdown: CancellationToken,
}

impl Link {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Queued>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            match self.connected(&mut rx).await {
                Ok(()) => break, // shutdown or every sender gone
                Err(e) => {
                    tracing::debug!(peer = self.node, error = %e, unacked = self.unacked.len(),
                        "forwarding link broke; reconnecting");
                }
            }
            // Keep taking messages while waiting, so callers are not stuck.
            let sleep = tokio::time::sleep(backoff);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    () = self.shutdown.cancelled() => break,
                    m = rx.recv(), if self.window.available_permits() > 0 => match m {
                        Some(queued) => self.enqueue(queued),
                        None => break,
                    },
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        for (_, (_, ack, _)) in std::mem::take(&mut self.unacked) {
            let _ = ack.send(Err(Error::Stopped("forwarding stopped".into())));
        }
    }

    fn enqueue(&mut self, (msg, ack, since): Queued) {
        self.counters.queued.fetch_sub(1, Ordering::Relaxed);
        // Taken back when the ack arrives (`settle`). The semaphore is never
        // closed, so `try_acquire` fails only when the window is full, which
        // the callers' `if` excludes.
        if let Ok(permit) = self.window.try_acquire() {
            permit.forget();
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut wire = proto::ForwardedPublish::from(&msg);
        wire.id = id;
        self.unacked.insert(id, (wire, ack, since));
    }

    fn frame(&self, messages: Vec<proto::ForwardedPublish>) -> proto::ForwardFrame {
        proto::ForwardFrame {
            origin_node: self.peers.id(),
            link: self.link_id,
            messages,
        }
    }

    /// One stream: resend what is unacked, then forward and settle until
    /// the stream breaks (`Err`) or shutdown (`Ok`).
    async fn connected(&mut self, rx: &mut mpsc::UnboundedReceiver<Queued>) -> Result<()> {
        let channel = self.peers.channel(self.node)?;
        let mut client = proto::forwarding_client::ForwardingClient::new(channel)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_GRPC_MESSAGE);
        let (frames, frames_rx) = mpsc::channel::<proto::ForwardFrame>(16);
        let request = client.forward(ReceiverStream::new(frames_rx));
        let mut acks = tokio::time::timeout(self.peers.rpc_timeout(), request)
            .await
            .map_err(|_| Error::peer(self.node, &tonic::Status::deadline_exceeded("connect")))?
            .map_err(|s| Error::peer(self.node, &s))?
            .into_inner();
        let node = self.node;
        let closed = move || Error::peer(node, &tonic::Status::unavailable("stream closed"));
        let resend: Vec<_> = self.unacked.values().map(|(m, _, _)| m.clone()).collect();
        for chunk in resend.chunks(self.batch) {
            frames
                .send(self.frame(chunk.to_vec()))
                .await
                .map_err(|_| closed())?;
        }
        self.peers.touch(self.node);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                m = rx.recv(), if self.window.available_permits() > 0 => {
                    let Some(queued) = m else { return Ok(()) };
                    let first = self.next_id;
                    self.enqueue(queued);
                    while self.next_id - first < self.batch as u64 && self.window.available_permits() > 0 {
                        match rx.try_recv() {
                            Ok(queued) => self.enqueue(queued),
                            Err(_) => break,
                        }
                    }
                    let batch = self.unacked.range(first..).map(|(_, (m, _, _))| m.clone()).collect();
                    frames.send(self.frame(batch)).await.map_err(|_| closed())?;
                }
                reply = acks.next() => match reply {
                    Some(Ok(reply)) => {
                        self.peers.touch(self.node);
                        self.settle(reply);
                    }
                    Some(Err(status)) => return Err(Error::peer(self.node, &status)),
                    None => return Err(Error::peer(self.node, &tonic::Status::unavailable("stream ended"))),
                },
            }
        }
    }

    fn settle(&mut self, reply: proto::ForwardAcks) {
        let mut settled = 0;
        for id in reply.acked {
            if let Some((_, ack, since)) = self.unacked.remove(&id) {
                self.counters.latency.observe(since.elapsed());
                let _ = ack.send(Ok(()));
                settled += 1;
            }
        }
        for nack in reply.rejected {
            if let Some((_, ack, since)) = self.unacked.remove(&nack.id) {
                self.counters.latency.observe(since.elapsed());
                let _ = ack.send(Err(Error::Rejected {
                    node: self.node,
                    reason: nack.reason,
                }));
                settled += 1;
            }
        }
        self.window.add_permits(settled);
    }
}

/// What one stream's ack writer receives.
type AckItem = (u64, Result<(), String>);

/// Receiving-side bookkeeping of one sender link.
#[derive(Default)]
struct Inbound {
    /// Every id below is answered. A refused id below it is remembered as
    /// acked: the sender stops resending once it got the refusal, so only a
    /// refusal lost on a broken stream is answered wrongly.
    answered_below: u64,
    /// Answered ids at or above `answered_below`, with the answer.
    answered: BTreeMap<u64, Result<(), String>>,
    /// Ids handed to the broker, with the streams waiting for the answer.
    in_progress: HashMap<u64, Vec<mpsc::UnboundedSender<AckItem>>>,
}

impl Inbound {
    fn answer(&mut self, id: u64, result: Result<(), String>) {
        if id < self.answered_below {
            return;
        }
        self.answered.insert(id, result);
        while let Some(entry) = self.answered.first_entry() {
            if *entry.key() != self.answered_below.max(1) {
                break;
            }
            drop(entry.remove());
            self.answered_below = self.answered_below.max(1) + 1;
        }
    }

    fn answered(&self, id: u64) -> Option<Result<(), String>> {
        if id < self.answered_below {
            return Some(Ok(()));
        }
        self.answered.get(&id).cloned()
    }
}

/// Receiving-side links by (origin node, link id).
type InboundLinks = HashMap<(u64, u64), Arc<Mutex<Inbound>>>;

/// The receiving side, shared by every `Forward` stream of this node.
pub(crate) struct Receiver {
    events: mpsc::UnboundedSender<ClusterEvent>,
    /// Ends every stream at shutdown (a graceful server shutdown waits for
    /// open streams).
    shutdown: CancellationToken,
    /// By (origin node, link id). A new link from an origin replaces its
    /// older ones (the sender restarted).
    links: Mutex<InboundLinks>,
}

impl Receiver {
    pub(crate) fn new(
        events: mpsc::UnboundedSender<ClusterEvent>,
        shutdown: CancellationToken,
    ) -> Receiver {
        Receiver {
            events,
            shutdown,
            links: Mutex::new(HashMap::new()),
        }
    }

    fn link(&self, origin: u64, link: u64) -> Arc<Mutex<Inbound>> {
        let mut links = self.links.lock();
        if let Some(inbound) = links.get(&(origin, link)) {
            return Arc::clone(inbound);
        }
        links.retain(|(o, _), _| *o != origin);
        Arc::clone(links.entry((origin, link)).or_default())
    }

    /// Serves one `Forward` stream: frames in, acks out.
    pub(crate) fn serve(
        self: Arc<Self>,
        mut frames: tonic::Streaming<proto::ForwardFrame>,
    ) -> ReceiverStream<std::result::Result<proto::ForwardAcks, tonic::Status>> {
        let (out, out_rx) = mpsc::channel(16);
        let (acks, mut acks_rx) = mpsc::unbounded_channel::<AckItem>();
        // Writer: batches every answer available into one frame.
        let writer_out = out.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    () = shutdown.cancelled() => return,
                    item = acks_rx.recv() => match item { Some(item) => item, None => return },
                };
                let mut reply = proto::ForwardAcks::default();
                let mut add = |(id, result): AckItem| match result {
                    Ok(()) => reply.acked.push(id),
                    Err(reason) => reply.rejected.push(proto::ForwardNack { id, reason }),
                };
                add(first);
                while let Ok(item) = acks_rx.try_recv() {
                    add(item);
                }
                if writer_out.send(Ok(reply)).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    frame = frames.next() => match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(_)) | None => return,
                    },
                };
                let inbound = self.link(frame.origin_node, frame.link);
                for message in frame.messages {
                    if let Err(e) = self.receive(&inbound, message, &acks) {
                        let _ = out
                            .send(Err(tonic::Status::invalid_argument(e.to_string())))
                            .await;
                        return;
                    }
                }
            }
        });
        ReceiverStream::new(out_rx)
    }

    fn receive(
        &self,
        inbound: &Arc<Mutex<Inbound>>,
        message: proto::ForwardedPublish,
        acks: &mpsc::UnboundedSender<AckItem>,
    ) -> Result<()> {
        let id = message.id;
        let msg = forwarded_from_proto(message)?;
        {
            let mut state = inbound.lock();
            if let Some(result) = state.answered(id) {
                let _ = acks.send((id, result));
                return Ok(());
            }
            if let Some(waiting) = state.in_progress.get_mut(&id) {
                waiting.push(acks.clone());
                return Ok(());
            }
            state.in_progress.insert(id, vec![acks.clone()]);
        }
        let (tx, rx) = oneshot::channel();
        let inbound = Arc::clone(inbound);
        if self
            .events
            .send(ClusterEvent::Forwarded { msg, ack: tx })
            .is_err()
        {
            // The broker stopped listening: refuse rather than leave the
            // sender waiting.
            inbound.lock().in_progress.remove(&id);
            let _ = acks.send((id, Err("the receiving broker is not listening".into())));
            return Ok(());
        }
        tokio::spawn(async move {
            let result = match rx.await {
                Ok(answer) => answer.map_err(|refusal| refusal.to_string()),
                Err(_) => Err("the receiving broker dropped the message".into()),
            };
            let waiting = {
                let mut state = inbound.lock();
                state.answer(id, result.clone());
                state.in_progress.remove(&id).unwrap_or_default()
            };
            for stream in waiting {
                let _ = stream.send((id, result.clone()));
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_ids_compact_into_a_watermark() {
        let mut inbound = Inbound::default();
        inbound.answer(2, Ok(()));
        assert_eq!(inbound.answered(1), None);
        assert_eq!(inbound.answered(2), Some(Ok(())));
        inbound.answer(1, Err("no".into()));
        assert_eq!(inbound.answered_below, 3);
        assert!(inbound.answered.is_empty());
        // Below the watermark everything counts as acked (a refusal resent
        // after its answer was lost is acked: see `Inbound::answered_below`).
        assert_eq!(inbound.answered(1), Some(Ok(())));
    }
}
