//! Tern's wire types: everything that crosses between nodes.
//!
//! The `.proto` files in `proto/tern/cluster/v1/` are the source of truth;
//! this crate only compiles them (prost messages, tonic clients and servers)
//! with a vendored protoc, so `cargo build` needs nothing installed.
//!
//! - `state.proto`: replicated raft log entries (`EntryBatch` of `Proposal`s,
//!   `ConfChangeContext`) and the state machine snapshot (`StateSnapshot`);
//! - `raft.proto`: `RaftTransport`, batches of raft-rs messages;
//! - `forward.proto`: `Forwarding`, the per-peer publish stream and its acks;
//! - `session.proto`: `Sessions`, session takeover;
//! - `admin.proto`: `Admin`, join, leave and status.
//!
//! Field numbers are part of the format: a rolling upgrade runs two versions
//! side by side, and raft log entries written by one are applied by the other.
//! Never renumber or reuse one.

#![allow(missing_docs)]

/// Version 1 of the cluster protocol (`package tern.cluster.v1`).
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("tern.cluster.v1");
}

pub use v1::*;

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Bytes written by hand from `state.proto`'s field numbers: a change of
    /// number or type breaks this test, as it would break a rolling upgrade.
    #[test]
    fn proposal_wire_format_is_stable() {
        let proposal = Proposal {
            origin: 1,
            request_id: 2,
            command: Some(proposal::Command::AddRoute(AddRoute {
                filter: "a/#".into(),
                node: 3,
            })),
        };
        let expected = [
            0x08, 0x01, // origin = 1 (field 1, varint)
            0x10, 0x02, // request_id = 2 (field 2, varint)
            0x1a, 0x07, // add_route (field 3, length 7)
            0x0a, 0x03, b'a', b'/', b'#', // filter (field 1, length 3)
            0x10, 0x03, // node = 3 (field 2, varint)
        ];
        assert_eq!(proposal.encode_to_vec(), expected);
        assert_eq!(Proposal::decode(&expected[..]).unwrap(), proposal);
    }

    #[test]
    fn forwarded_publish_wire_format_is_stable() {
        let message = ForwardedPublish {
            id: 7,
            topic: "t".into(),
            payload: bytes::Bytes::from_static(b"p"),
            qos: 1,
            retain: true,
            properties: bytes::Bytes::new(),
            expires_at_ms: Some(0),
            origin_node: 2,
            ..Default::default()
        };
        let expected = [
            0x08, 0x07, // id = 7
            0x12, 0x01, b't', // topic
            0x1a, 0x01, b'p', // payload
            0x20, 0x01, // qos = 1
            0x28, 0x01, // retain = true
            0x38, 0x00, // expires_at_ms = Some(0): optional, so present
            0x40, 0x02, // origin_node = 2
        ];
        assert_eq!(message.encode_to_vec(), expected);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&[0xff_u8][..], &[0x1a, 0x10, 0x00], &[0x0a; 64]] {
            let _ = EntryBatch::decode(bytes);
            let _ = StateSnapshot::decode(bytes);
        }
    }
}
