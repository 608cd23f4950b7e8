//! The state a session starts from when it is not new: read from this
//! node's store at startup ([`Restored::from_store`]), or brought from
//! another node of the cluster ([`Restored::from_imported`]). Records are
//! read through `crate::records`; one that cannot be read is logged and
//! skipped, never a panic.

use std::sync::Arc;

use crate::codec::{ProtocolVersion, QoS};
use crate::handle::{Imported, SubscriptionEntry};
use crate::limits::Limits;
use crate::message::Message;
use crate::records;

use super::outgoing::{OutMsg, OutState};
use bytestring::ByteString;

/// Restored state of a persistent session.
#[derive(Debug, Default)]
pub struct Restored {
    pub protocol: Option<ProtocolVersion>,
    pub session_expiry_interval: u32,
    pub disconnected_at_ms: Option<u64>,
    pub subscriptions: Vec<(ByteString, SubscriptionEntry)>,
    pub outgoing: Vec<OutMsg>,
    pub incoming_qos2: Vec<u16>,
    /// Ids of messages the session holds already (its stored copies), for
    /// a while not delivered again (`recent.rs`): a node restarted before
    /// it acknowledged a copy forwarded to it gets that copy again.
    pub recent_uids: Vec<u64>,
}

impl Restored {
    /// The stored session `client_id` (its `record` read already), with its
    /// subscriptions, queued and in-flight messages and received QoS 2 ids.
    /// Also returns how many of its records could not be read.
    pub fn from_store(
        store: &storage::Store,
        limits: &Limits,
        client_id: &str,
        record: &storage::SessionRecord,
        now: u64,
    ) -> storage::Result<(Restored, usize)> {
        let mut unreadable = 0;
        let mut restored = Restored {
            protocol: Some(
                records::protocol_of(record.protocol_level).unwrap_or(ProtocolVersion::V311),
            ),
            session_expiry_interval: record.session_expiry_interval,
            // A session that was connected when the broker stopped went
            // offline then.
            disconnected_at_ms: Some(record.disconnected_at_ms.unwrap_or(now)),
            ..Default::default()
        };
        for sub in store.load_subscriptions(client_id)? {
            let filter = sub.filter.clone();
            match records::from_record(sub) {
                Ok(s) => restored.subscriptions.push(s),
                Err(e) => {
                    tracing::error!(%client_id, %filter, error = %e, "unreadable subscription skipped");
                    unreadable += 1;
                }
            }
        }
        for (seq, out) in store.load_outgoing(client_id)? {
            match out_msg(limits, seq, out) {
                Some(m) => restored.outgoing.push(m),
                None => {
                    tracing::error!(%client_id, seq, "unreadable queued message skipped");
                    unreadable += 1;
                }
            }
        }
        restored.incoming_qos2 = store.load_incoming_qos2(client_id)?;
        restored.recent_uids = restored
            .outgoing
            .iter()
            .map(|m| m.message.uid)
            .filter(|u| *u != 0)
            .collect();
        Ok((restored, unreadable))
    }

    /// A session brought from another node.
    pub fn from_imported(limits: &Limits, imported: Imported) -> Restored {
        match imported {
            Imported::Record(info) => Restored::from_info(&info),
            Imported::State(state) | Imported::Replica(state, _) => {
                let mut restored = Restored::from_info(&state.info);
                restored.protocol = records::protocol_of(state.protocol_level);
                restored.outgoing = state
                    .outgoing
                    .into_iter()
                    .filter_map(|(seq, out)| out_msg(limits, seq, out))
                    .collect();
                restored.incoming_qos2 = state.incoming_qos2;
                restored
            }
        }
    }

    /// A session as the replicated state knows it (subscriptions and
    /// expiry, no messages): what a node resumes when the session's owner is
    /// down.
    fn from_info(info: &cluster::SessionInfo) -> Restored {
        let mut restored = Restored {
            protocol: None,
            session_expiry_interval: info.session_expiry_interval,
            disconnected_at_ms: info.disconnected_at_ms,
            ..Default::default()
        };
        for sub in &info.subscriptions {
            match records::decode_replicated(sub) {
                Ok(s) => restored.subscriptions.push(s),
                Err(e) => {
                    tracing::error!(filter = %sub.filter, error = %e, "unreadable replicated subscription skipped")
                }
            }
        }
        restored
    }
}

/// A stored queued / in-flight message, counted against `limits`; `None`
/// if it cannot be read.
fn out_msg(limits: &Limits, seq: u64, out: storage::OutgoingRecord) -> Option<OutMsg> {
    let qos = QoS::from_u8(out.message.qos).filter(|q| *q > QoS::AtMostOnce)?;
    let retain = out.message.retain;
    let (mut message, subscription_ids) = Message::from_stored(out.message).ok()?;
    message.uid = out.uid;
    let charge = limits.charge((message.topic.len() + message.payload.len()) as u64);
    Some(OutMsg {
        charge,
        seq,
        qos,
        retain,
        message: Arc::new(message),
        subscription_ids,
        shared_filter: None,
        state: if out.released {
            OutState::Released
        } else {
            OutState::Queued
        },
        durable: true,
        hold: None,
    })
}
