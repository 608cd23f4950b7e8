//! The session's policy, without I/O: what a CONNECT is granted, whether a
//! session resumes, when it expires, when its will is due, what becomes of
//! each copy of a message routed to it, and what the packets of its client
//! lead to. Functions of their inputs (and of `now`, unix ms, where time
//! matters) only; they read no clock, write no socket and submit no store
//! write. The actor asks them and carries out the answer; their tests drive
//! them with a fake clock.
//!
//! | module | policy of | asked by |
//! |---|---|---|
//! | [`attach`] | a connection attaching: granted expiry, keep alive and send window, resume or discard, a delayed will on takeover | `connect.rs` |
//! | [`lifecycle`] | [`Lifecycle`], the end of a connection (will, offline, expiry), expiry due, expired while down | `connect.rs`, `restore.rs` |
//! | [`copy`] | a copy routed to the session: write, queue, store, hold, drop | `deliver.rs` |
//! | [`publish`] | inbound PUBLISH, its acknowledgement, PUBREL | `publish.rs` |
//! | [`ack`] | PUBACK, PUBREC, PUBCOMP from the client for the copies it was sent | `deliver.rs` |
//! | [`subscribe`] | SUBSCRIBE, UNSUBSCRIBE | `subscribe.rs` |
//! | [`disconnect`] | DISCONNECT (session expiry, will) and AUTH (re-authentication) | `connect.rs`, `reauth.rs` |
//!
//! The items of `attach`, `lifecycle` and `copy` are re-exported here
//! (`core::plan_attach`, `core::Lifecycle`, `core::plan_copy` ...).
//!
//! The QoS state machines of the same session are also sans-IO:
//! `outgoing.rs` (PUBLISH to the client and its acknowledgements, the send
//! window, resend, held acknowledgements) and `incoming.rs` (QoS 2 from the
//! client and the order of acknowledgements owed).
//!
//! Lifecycle ([`Lifecycle`]): `Offline` (restored at startup, or created for
//! a CONNECT that is on its way) -> `Online` (a connection is attached) ->
//! `Offline` (the connection ended and the session outlives it) ... ->
//! `Ended` (Clean Start, expiry, an operator), or `Moved` (to another node;
//! forwarding there for a while) -> `Ended`.

pub mod ack;
pub mod attach;
pub mod copy;
pub mod disconnect;
pub mod lifecycle;
pub mod publish;
pub mod subscribe;

pub use attach::*;
pub use copy::*;
pub use lifecycle::*;

/// The fake clock and protocol versions of the core's tests.
#[cfg(test)]
mod fixtures {
    use crate::codec::ProtocolVersion;

    /// A fake clock: 2026-12-04 12:00:00 UTC in unix ms.
    pub const T0: u64 = 1_796_385_600_000;
    pub const V5: ProtocolVersion = ProtocolVersion::V5;
    pub const V311: ProtocolVersion = ProtocolVersion::V311;
}
