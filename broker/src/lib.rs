//! Tern: a clustered MQTT broker. This crate holds the codec, the session
//! actors, the router and the listeners, and the `tern` binary.

pub mod codec;
pub mod retain;
pub mod router;
