//! The recorded history of a chaos run: every operation the workload did
//! and every fault the nemesis injected, each stamped with milliseconds
//! since the run started. The checker reads nothing else, and the JSON
//! history written next to the report is this list.
//!
//! Clients record what they observed, never what they assume: a publish
//! whose acknowledgement did not come is `Unknown`, not failed.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A publisher's PUBLISH and what became of it.
    Publish {
        publisher: u32,
        seq: u64,
        qos: u8,
        retain: bool,
        node: u64,
        /// Which connection of the publisher (counts its CONNACKs).
        connection: u64,
        outcome: Outcome,
        /// When the PUBLISH was written.
        sent_ms: u64,
        /// Milliseconds from PUBLISH to PUBACK / PUBREC.
        latency_ms: Option<u64>,
    },
    /// A PUBLISH a subscriber received (before it acknowledged it).
    Deliver {
        subscriber: String,
        publisher: u32,
        seq: u64,
        qos: u8,
        dup: bool,
        retain: bool,
        packet_id: Option<u16>,
        /// Which connection of this subscriber (counts its CONNACKs).
        connection: u64,
        node: u64,
    },
    /// A CONNACK a workload client received.
    Connected {
        client: String,
        node: u64,
        /// When the client started connecting (TCP connect, CONNECT).
        connect_ms: u64,
        /// The client asked to resume its session.
        resume: bool,
        session_present: bool,
    },
    /// A subscriber's SUBACK (after a new session).
    Subscribed { client: String, node: u64 },
    /// A client lost or closed its connection.
    Disconnected {
        client: String,
        node: u64,
        reason: String,
    },
    /// A fault started; `end_ms` is filled in when it is healed.
    Fault {
        kind: String,
        detail: String,
        nodes: Vec<u64>,
        end_ms: Option<u64>,
    },
    /// A node process changed state.
    Node { node: u64, what: NodeChange },
    /// After a heal: how long until every node was ready under one leader.
    Recovered { after: String, ms: Option<u64> },
    /// A retained message one reader saw on one node.
    RetainedRead {
        node: u64,
        publisher: u32,
        seq: Option<u64>,
        /// The read of the final check, after healing.
        last: bool,
    },
}

/// What became of a PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// PUBACK / PUBREC with a success code.
    Acked,
    /// An acknowledgement with a failure code (5.0).
    Refused,
    /// No acknowledgement: the connection failed or the wait timed out.
    Unknown,
}

/// A node process changed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeChange {
    Started,
    Killed,
    Paused,
    Resumed,
    Stopped,
    /// Exited by itself; `expected` when a fault explains it (a full disk).
    Exited {
        status: String,
        expected: bool,
    },
    /// A thread of the node panicked (a `panicked at` line in its log);
    /// `expected` when a fault explains it (raft-rs panics on a storage
    /// error, which stops the node: a full disk).
    Panicked {
        line: String,
        #[serde(default)]
        expected: bool,
    },
    Removed,
}

/// One stamped event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped {
    pub t_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// The shared, append-only history.
#[derive(Clone)]
pub struct History {
    start: Instant,
    events: Arc<Mutex<Vec<Stamped>>>,
}

impl History {
    pub fn new() -> History {
        History {
            start: Instant::now(),
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Appends `event`; returns its index (faults use it to record their end).
    pub fn record(&self, event: Event) -> usize {
        let t_ms = self.now_ms();
        let mut events = self.events.lock();
        events.push(Stamped { t_ms, event });
        events.len() - 1
    }

    /// Records that the fault at `index` ended now.
    pub fn end_fault(&self, index: usize) {
        let now = self.now_ms();
        if let Some(Stamped {
            event: Event::Fault { end_ms, .. },
            ..
        }) = self.events.lock().get_mut(index)
        {
            *end_ms = Some(now);
        }
    }

    /// A copy of everything so far.
    pub fn snapshot(&self) -> Vec<Stamped> {
        self.events.lock().clone()
    }
}

impl Default for History {
    fn default() -> Self {
        History::new()
    }
}
