//! The session's security and limit checks, in one place so that packet
//! handlers call one function each: [`Session::publish_refusal`] (top of
//! inbound PUBLISH, with [`Session::count_publish_refusal`] once the
//! refusal is what happens), [`Session::subscribe_refusal`] (each SUBSCRIBE filter),
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

use super::Session;
use crate::acl::Access;
use crate::codec::{Publish, QoS, ReasonCode};
use crate::counters::{DropReason, Metrics};
use crate::hub::events::Severity;
use crate::limits::Pressure;

/// Why the checks refuse an inbound PUBLISH ([`Session::publish_refusal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PublishRefusal {
    /// The topic is over the limits (0x90); the text says which.
    TopicLimits(String),
    /// The ACL does not let the client write the topic (0x87).
    NotAuthorized,
    /// The broker is over its held-bytes cap: QoS 1/2 from 5.0 (0x97).
    Overloaded,
}

impl PublishRefusal {
    /// The code a 5.0 client is acknowledged with.
    pub(super) fn reason_code(&self) -> ReasonCode {
        match self {
            PublishRefusal::TopicLimits(_) => ReasonCode::TopicNameInvalid,
            PublishRefusal::NotAuthorized => ReasonCode::NotAuthorized,
            PublishRefusal::Overloaded => ReasonCode::QuotaExceeded,
        }
    }
}

impl Session {
    /// Why an inbound PUBLISH must not be routed, if it must not: topic over
    /// the limits, not writable under the ACL, broker over its held-bytes
    /// cap for QoS 1/2. Only a verdict: [`Session::count_publish_refusal`]
    /// counts and reports it once the refusal is what the session does
    /// (`core::publish::plan_publish`).
    pub(super) fn publish_refusal(&self, publish: &Publish) -> Option<PublishRefusal> {
        let state = &self.state;
        if let Some(why) = state.limits().topic_violation(&publish.topic) {
            return Some(PublishRefusal::TopicLimits(why));
        }
        if self
            .acl_subject
            .as_ref()
            .is_some_and(|s| !state.acl().check_topic(s, &publish.topic, Access::Write))
        {
            return Some(PublishRefusal::NotAuthorized);
        }
        if publish.qos > QoS::AtMostOnce
            && self.protocol.is_v5()
            && state.limits().pressure() == Pressure::Full
        {
            return Some(PublishRefusal::Overloaded);
        }
        None
    }

    /// Counts a refused PUBLISH, logs it and tells the hub's events.
    pub(super) fn count_publish_refusal(&self, publish: &Publish, refusal: &PublishRefusal) {
        let state = &self.state;
        match refusal {
            PublishRefusal::TopicLimits(why) => {
                Metrics::add(&state.metrics().topic_limit_refused, 1);
                tracing::debug!(client_id = %self.client_id(), reason = %why, "PUBLISH refused");
                state.hub().events().emit(
                    Severity::Warning,
                    "client",
                    self.client_id(),
                    "publish refused: topic over the limits",
                    serde_json::json!({ "reason": "limits", "topic": &*publish.topic, "error": why }),
                );
            }
            PublishRefusal::NotAuthorized => {
                Metrics::add(&state.metrics().acl_denied_publish, 1);
                tracing::debug!(client_id = %self.client_id(), topic = %publish.topic, "PUBLISH denied by the ACL");
                state.hub().events().emit(
                    Severity::Warning,
                    "client",
                    self.client_id(),
                    "publish denied by the ACL",
                    serde_json::json!({ "reason": "acl", "topic": &*publish.topic }),
                );
            }
            PublishRefusal::Overloaded => Metrics::add(&state.metrics().overload_dropped, 1),
        }
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
