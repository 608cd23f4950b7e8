//! The session's security and limit checks, in one place so that packet
//! handlers call one function each: [`Session::publish_refusal`] (top of
//! inbound PUBLISH), [`Session::subscribe_refusal`] (each SUBSCRIBE filter),
//! [`Session::may_take`] (each copy before it is queued or written).
//!
//! The rules are in `crate::acl` (authorization) and `crate::limits` (topic
//! limits, held-bytes cap); this file only applies them and counts.
//!
//! A session restored from the store does not know who its client is until
//! the client connects again (the store keeps no user name): until then its
//! copies are queued without the ACL check, and [`Session::set_acl_subject`]
//! drops the queued ones the client may not read when it connects. Queued
//! copies are checked again at every connection, so an ACL reload also
//! applies to them.

use actix::prelude::*;

use super::incoming::AckKind;
use super::Session;
use crate::acl::Access;
use crate::codec::{Publish, QoS, ReasonCode};
use crate::counters::{DropReason, Metrics};
use crate::hub::events::Severity;
use crate::limits::Pressure;

impl Session {
    /// Why an inbound PUBLISH must not be routed, if it must not: topic over
    /// the limits (0x90), not writable under the ACL (0x87), broker over its
    /// held-bytes cap for QoS 1/2 (0x97).
    pub(super) fn publish_refusal(&self, publish: &Publish) -> Option<ReasonCode> {
        let state = &self.state;
        if let Some(why) = state.limits().topic_violation(&publish.topic) {
            Metrics::add(&state.metrics().topic_limit_refused, 1);
            tracing::debug!(client_id = %self.client_id(), reason = %why, "PUBLISH refused");
            state.hub().events().emit(
                Severity::Warning,
                "client",
                self.client_id(),
                "publish refused: topic over the limits",
                serde_json::json!({ "reason": "limits", "topic": &*publish.topic, "error": why }),
            );
            return Some(ReasonCode::TopicNameInvalid);
        }
        if self
            .acl_subject
            .as_ref()
            .is_some_and(|s| !state.acl().check_topic(s, &publish.topic, Access::Write))
        {
            Metrics::add(&state.metrics().acl_denied_publish, 1);
            tracing::debug!(client_id = %self.client_id(), topic = %publish.topic, "PUBLISH denied by the ACL");
            state.hub().events().emit(
                Severity::Warning,
                "client",
                self.client_id(),
                "publish denied by the ACL",
                serde_json::json!({ "reason": "acl", "topic": &*publish.topic }),
            );
            return Some(ReasonCode::NotAuthorized);
        }
        if publish.qos > QoS::AtMostOnce
            && self.protocol.is_v5()
            && state.limits().pressure() == Pressure::Full
        {
            Metrics::add(&state.metrics().overload_dropped, 1);
            return Some(ReasonCode::QuotaExceeded);
        }
        None
    }

    /// Answers a refused PUBLISH: 5.0 QoS 1/2 get `code` in PUBACK / PUBREC;
    /// 3.1.1 ones are acknowledged as usual (3.1.1 has no way to refuse) and
    /// dropped; QoS 0 is dropped.
    pub(super) fn refuse_checked_publish(
        &mut self,
        publish: &Publish,
        code: ReasonCode,
        ctx: &mut Context<Self>,
    ) {
        let kind = match publish.qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => AckKind::PubAck,
            QoS::ExactlyOnce => AckKind::PubRec,
        };
        let code = if self.protocol.is_v5() {
            code
        } else {
            ReasonCode::Success
        };
        self.incoming
            .push_ready(kind, publish.packet_id.unwrap_or(0), code);
        self.flush_acks(ctx);
    }

    /// Why a SUBSCRIBE filter is refused, if it is: over the topic limits
    /// (5.0 0x8F) or not readable under the ACL (0x87); 3.1.1 SUBACK says
    /// 0x80 for both.
    pub(super) fn subscribe_refusal(&self, filter: &str) -> Option<ReasonCode> {
        let state = &self.state;
        if let Some(why) = state.limits().topic_violation(filter) {
            Metrics::add(&state.metrics().topic_limit_refused, 1);
            tracing::debug!(client_id = %self.client_id(), reason = %why, "subscription refused");
            return Some(ReasonCode::TopicFilterInvalid);
        }
        if self
            .acl_subject
            .as_ref()
            .is_some_and(|s| !state.acl().check_subscribe(s, filter))
        {
            Metrics::add(&state.metrics().acl_denied_subscribe, 1);
            tracing::debug!(client_id = %self.client_id(), %filter, "subscription denied by the ACL");
            state.hub().events().emit(
                Severity::Warning,
                "client",
                self.client_id(),
                "subscription denied by the ACL",
                serde_json::json!({ "reason": "acl", "topic_filter": filter }),
            );
            return Some(ReasonCode::NotAuthorized);
        }
        None
    }

    /// Records who the client is (at each connection) if an ACL is
    /// configured, and drops the queued copies it may not read.
    pub(super) fn set_acl_subject(&mut self, principal: &crate::auth::Principal) {
        if !self.state.acl().is_enabled() {
            self.acl_subject = None;
            return;
        }
        let subject = crate::acl::Subject::new(self.client_id(), principal);
        let (acl, subject) = (
            &self.state.acl(),
            &**self.acl_subject.insert(Box::new(subject)),
        );
        let dropped = self
            .outgoing
            .remove_queued_where(|m| !acl.check_topic(subject, &m.message.topic, Access::Read));
        Metrics::add(
            &self.state.metrics().acl_denied_delivery,
            dropped.len() as u64,
        );
        for seq in dropped {
            self.delete_outgoing(seq);
        }
    }

    /// True if a copy of a message on `topic` at `qos` may be queued or
    /// written for this client: the ACL lets it read the topic, and the
    /// held-bytes cap allows it (see `crate::limits`).
    pub(super) fn may_take(&self, topic: &str, qos: QoS) -> bool {
        let state = &self.state;
        if self
            .acl_subject
            .as_ref()
            .is_some_and(|s| !state.acl().check_topic(s, topic, Access::Read))
        {
            Metrics::add(&state.metrics().acl_denied_delivery, 1);
            return false;
        }
        let dropped = match state.limits().pressure() {
            Pressure::Normal => false,
            Pressure::DropQos0 => qos == QoS::AtMostOnce,
            Pressure::Full => {
                qos == QoS::AtMostOnce
                    || self.outgoing.would_wait()
                    || !self.conn.as_ref().is_some_and(|c| c.has_room())
            }
        };
        if dropped {
            Metrics::add(&state.metrics().overload_dropped, 1);
            state.metrics().dropped(DropReason::Overload, 1);
        }
        !dropped
    }
}
