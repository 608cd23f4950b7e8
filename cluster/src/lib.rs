//! Tern's cluster layer: a raft-rs node holding the replicated cluster state.
//!
//! So far: the state machine ([`state`]) and the sans-IO raft node
//! ([`node`]); the gRPC transport and the `Cluster` handle build on them.

mod error;
mod logger;
pub mod node;
pub mod state;
mod types;

pub use error::{Error, Result};
pub use types::{
    ForwardedPublish, Member, RetainedMessage, SessionInfo, SessionState, SessionSubscription,
};
