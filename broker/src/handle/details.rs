//! A session as the admin API shows it: produced by the session actor
//! (`Input::Describe`), serialized by `crate::http`.

use std::net::SocketAddr;

/// A session as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionDetails {
    pub client_id: String,
    pub online: bool,
    /// It outlives its connection.
    pub persistent: bool,
    /// "3.1", "3.1.1" or "5.0": of the current (or last) connection.
    pub protocol: String,
    /// Address of the connected client.
    pub peer: Option<SocketAddr>,
    /// Session Expiry Interval in seconds (4294967295: never).
    pub session_expiry_interval: u32,
    /// Unix ms when its last connection ended, while offline.
    pub offline_since_ms: Option<u64>,
    /// Filters in filter order.
    pub subscriptions: Vec<SubscriptionDetails>,
    /// QoS 1/2 messages waiting to be sent.
    pub queued_messages: usize,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight_messages: usize,
    /// The node holding the session's replica (cluster, issue 12); `None`:
    /// none placed (a node alone, nothing stored yet, no other node up).
    pub replica_node: Option<u64>,
}

/// One subscription of [`SessionDetails`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SubscriptionDetails {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub subscription_identifier: Option<u32>,
}
