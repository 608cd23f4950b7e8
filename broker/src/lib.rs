//! Tern: a clustered MQTT broker. This crate holds the codec, the session
//! actors, the router, the listeners and the `tern` binary.
//!
//! Modules, from the bottom up (a module imports only modules on lower
//! lines; `tests/layering.rs` checks it):
//! 1. [`codec`] (packets, pure); [`config`], [`counters`], [`message`],
//!    [`router`] (topic-filter trie); [`auth`] (who may connect), [`limits`]
//!    (what protects the broker from its clients), [`retain`] (retained
//!    messages), [`telemetry`] (logs and OpenTelemetry traces); [`acl`] (who
//!    may publish and subscribe to what), [`transport`] (byte streams and the
//!    packets read from them); [`enhanced_auth`] (5.0 AUTH exchanges);
//! 2. [`handle`] (how the node reaches a session); [`nodes`] (the `Cluster`
//!    trait), [`records`] (store and cluster records), [`registry`]
//!    (sessions by client id); [`state`] (what a node's parts share);
//! 3. [`fanout`] (one message to its subscribers); [`session`] (one actor
//!    per client id), [`cluster_bridge`] (the broker's side of the
//!    cluster), [`observe`] (metrics, `$SYS`);
//! 4. [`listener`] (accept, CONNECT), [`http`], [`restore`] (loading the
//!    store); [`server`] (start and stop a node).

pub mod acl;
pub mod auth;
pub mod cluster_bridge;
pub mod codec;
pub mod config;
pub mod counters;
pub mod drain;
pub mod enhanced_auth;
pub mod fanout;
pub mod group_copies;
pub mod handle;
pub mod http;
pub mod hub;
pub mod limits;
pub mod listener;
pub mod message;
pub mod nodes;
pub mod observe;
pub mod records;
pub mod registry;
pub mod restore;
pub mod retain;
pub mod router;
pub mod server;
pub mod session;
pub mod state;
pub mod telemetry;
pub mod transport;
