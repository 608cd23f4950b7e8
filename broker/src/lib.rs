//! Tern: a clustered MQTT broker. This crate holds the codec, the session
//! actors, the router, the listeners and the `tern` binary.
//!
//! Map: [`codec`] (packets, pure), [`listener`] (accept, CONNECT),
//! [`session`] (one actor per client id, QoS state machines), [`router`]
//! (topic-filter trie), [`retain`] (retained messages), [`persist`] (loading
//! the store), [`server`] (start and stop a node), [`config`], [`auth`] (who
//! may connect), [`acl`] (who may publish and subscribe to what), [`limits`]
//! (what protects the broker from its clients), [`telemetry`] (logs and
//! OpenTelemetry traces).

pub mod acl;
pub mod auth;
pub mod clustering;
pub mod codec;
pub mod config;
pub mod counters;
pub mod enhanced_auth;
pub mod handle;
pub mod http;
pub mod limits;
pub mod listener;
pub mod message;
pub mod nodes;
pub mod observe;
pub mod persist;
pub mod records;
pub mod registry;
pub mod retain;
pub mod route;
pub mod router;
pub mod server;
pub mod session;
pub mod state;
pub mod telemetry;
pub mod transport;
