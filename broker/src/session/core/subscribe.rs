//! SUBSCRIBE and UNSUBSCRIBE, without I/O (3.1.1 sections 3.8-3.11; 5.0
//! sections 3.8-3.11, 4.8.2 for shared subscriptions).
//!
//! The actor (`session/subscribe.rs`) asks, per packet, [`check_subscribe`]
//! (a rule that closes the connection), then per filter
//! [`plan_subscription`] with the verdict of the topic limits and ACL
//! (`session/checks.rs`). A granted filter goes into the router, whose
//! answer (did the session have this filter already?) decides the rest
//! ([`Grant::on_subscribed`]): propose the route to the cluster, send the
//! retained messages. Per UNSUBSCRIBE filter, [`plan_unsubscription`] turns
//! the router's answer into the route withdrawal, the store delete and the
//! reason code; [`unsuback_reason_codes`] what UNSUBACK carries.
//!
//! The actor keeps what is I/O: the router's write lock, the store writes
//! (submitted for a persistent session even when empty, so answers keep
//! their order) and waiting for the cluster before SUBACK.

use bytestring::ByteString;

use crate::codec::topic::split_shared;
use crate::codec::{ProtocolVersion, QoS, ReasonCode, RetainHandling, SubscriptionOptions};
use crate::session::SessionError;

/// 5.0 [MQTT-3.8.3-4]: No Local on a shared subscription is a protocol
/// error; the first such filter closes the connection. 3.1.1 has no No
/// Local.
pub fn check_subscribe(
    protocol: ProtocolVersion,
    filters: &[(ByteString, SubscriptionOptions)],
) -> Result<(), SessionError> {
    if !protocol.is_v5() {
        return Ok(());
    }
    match filters
        .iter()
        .find(|(filter, options)| options.no_local && is_shared(filter))
    {
        Some((filter, _)) => Err(SessionError::NoLocalOnShared(filter.clone())),
        None => Ok(()),
    }
}

/// `$share/{group}/{filter}` (5.0 section 4.8.2).
fn is_shared(filter: &str) -> bool {
    matches!(split_shared(filter), Ok(Some(_)))
}

/// The SUBACK code granting `qos`.
pub fn granted(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::Success,
        QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
        QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
    }
}

/// When retained messages follow a granted subscription's SUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainedWhen {
    /// [MQTT-3.8.4-4], 5.0 Retain Handling 0.
    Always,
    /// 5.0 Retain Handling 1: only if the session did not have this filter.
    IfNew,
    /// 5.0 Retain Handling 2, and every shared subscription (5.0 section
    /// 4.8.2).
    Never,
}

/// A filter the session subscribes to ([`plan_subscription`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// A shared subscription: the router entry names its full filter.
    pub shared: bool,
    pub retained: RetainedWhen,
    /// Written to the store (persistent session).
    pub store: bool,
    /// The SUBACK code: the QoS granted.
    pub reason_code: ReasonCode,
}

/// What one SUBSCRIBE filter gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterPlan {
    /// Not subscribed; the SUBACK says `code` (3.1.1 encodes every failure
    /// as 0x80).
    Refuse(ReasonCode),
    /// Subscribed, replacing the session's subscription to the same filter
    /// if any [MQTT-3.8.4-3].
    Subscribe(Grant),
}

/// One filter of a SUBSCRIBE: refused with the code of the topic limits or
/// the ACL (`refusal`), else granted at the QoS asked for.
pub fn plan_subscription(
    filter: &str,
    options: &SubscriptionOptions,
    refusal: Option<ReasonCode>,
    persistent: bool,
) -> FilterPlan {
    if let Some(code) = refusal {
        return FilterPlan::Refuse(code);
    }
    let shared = is_shared(filter);
    let retained = if shared {
        RetainedWhen::Never
    } else {
        match options.retain_handling {
            RetainHandling::SendAtSubscribe => RetainedWhen::Always,
            RetainHandling::SendAtSubscribeIfNew => RetainedWhen::IfNew,
            RetainHandling::DoNotSend => RetainedWhen::Never,
        }
    };
    FilterPlan::Subscribe(Grant {
        shared,
        retained,
        store: persistent,
        reason_code: granted(options.qos),
    })
}

/// What follows once the router holds a granted subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// Propose the route to the cluster (a new filter of this session:
    /// other nodes send matching messages here).
    pub propose_route: bool,
    /// Send the retained messages matching the filter after SUBACK.
    pub send_retained: bool,
}

impl Grant {
    /// `new`: the router had no subscription of this session to the
    /// filter (it did not replace one).
    pub fn on_subscribed(&self, new: bool) -> Subscribed {
        Subscribed {
            propose_route: new,
            send_retained: match self.retained {
                RetainedWhen::Always => true,
                RetainedWhen::IfNew => new,
                RetainedWhen::Never => false,
            },
        }
    }
}

/// What one UNSUBSCRIBE filter does ([`plan_unsubscription`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsubscribed {
    /// Withdraw the route from the cluster.
    pub withdraw_route: bool,
    /// Delete the stored subscription.
    pub delete_stored: bool,
    /// The UNSUBACK code (5.0).
    pub reason_code: ReasonCode,
}

/// One filter of an UNSUBSCRIBE: `existed`, the router held the session's
/// subscription to it (and removed it); `stored`, something of the session
/// is in the store.
pub fn plan_unsubscription(existed: bool, stored: bool) -> Unsubscribed {
    Unsubscribed {
        withdraw_route: existed,
        delete_stored: existed && stored,
        reason_code: if existed {
            ReasonCode::Success
        } else {
            ReasonCode::NoSubscriptionExisted
        },
    }
}

/// What UNSUBACK carries: a reason code per filter in 5.0, nothing in
/// 3.1.1 (section 3.11.3: no payload).
pub fn unsuback_reason_codes(protocol: ProtocolVersion, codes: Vec<ReasonCode>) -> Vec<ReasonCode> {
    if protocol.is_v5() {
        codes
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V5: ProtocolVersion = ProtocolVersion::V5;
    const V311: ProtocolVersion = ProtocolVersion::V311;

    fn options(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    fn grant(plan: FilterPlan) -> Grant {
        match plan {
            FilterPlan::Subscribe(g) => g,
            FilterPlan::Refuse(code) => panic!("refused with {code:?}"),
        }
    }

    #[test]
    fn no_local_on_a_shared_subscription_closes_a_5_0_connection_mqtt_3_8_3_4() {
        let no_local = SubscriptionOptions {
            no_local: true,
            ..options(QoS::AtLeastOnce)
        };
        let filters = vec![
            ("a/b".into(), no_local),
            ("$share/g/a/+".into(), options(QoS::AtMostOnce)),
            ("$share/g/c".into(), no_local),
            ("$share/h/d".into(), no_local),
        ];
        assert_eq!(
            check_subscribe(V5, &filters),
            Err(SessionError::NoLocalOnShared("$share/g/c".into()))
        );
        assert_eq!(
            SessionError::NoLocalOnShared("$share/g/c".into()).reason_code(),
            ReasonCode::ProtocolError
        );
        // No Local on a plain filter, or a shared one without it: fine
        assert_eq!(check_subscribe(V5, &filters[..2]), Ok(()));
        // 3.1.1 has no No Local
        assert_eq!(check_subscribe(V311, &filters), Ok(()));
    }

    #[test]
    fn each_filter_is_granted_the_qos_asked_for() {
        for (qos, code) in [
            (QoS::AtMostOnce, ReasonCode::Success),
            (QoS::AtLeastOnce, ReasonCode::GrantedQoS1),
            (QoS::ExactlyOnce, ReasonCode::GrantedQoS2),
        ] {
            assert_eq!(
                plan_subscription("a/#", &options(qos), None, false),
                FilterPlan::Subscribe(Grant {
                    shared: false,
                    retained: RetainedWhen::Always,
                    store: false,
                    reason_code: code
                })
            );
        }
        // a persistent session stores it
        assert!(
            grant(plan_subscription(
                "a/#",
                &options(QoS::AtMostOnce),
                None,
                true
            ))
            .store
        );
    }

    #[test]
    fn a_refused_filter_gets_the_code_of_the_check() {
        for code in [ReasonCode::NotAuthorized, ReasonCode::TopicFilterInvalid] {
            assert_eq!(
                plan_subscription("secret/#", &options(QoS::ExactlyOnce), Some(code), true),
                FilterPlan::Refuse(code)
            );
        }
    }

    #[test]
    fn retain_handling_decides_when_retained_messages_follow() {
        let at = |retain_handling| SubscriptionOptions {
            retain_handling,
            ..options(QoS::AtLeastOnce)
        };
        let send = grant(plan_subscription(
            "a/b",
            &at(RetainHandling::SendAtSubscribe),
            None,
            false,
        ));
        assert_eq!(send.retained, RetainedWhen::Always);
        assert!(send.on_subscribed(true).send_retained);
        // [MQTT-3.8.4-3] a replaced subscription gets them again
        assert!(send.on_subscribed(false).send_retained);

        let if_new = grant(plan_subscription(
            "a/b",
            &at(RetainHandling::SendAtSubscribeIfNew),
            None,
            false,
        ));
        assert_eq!(if_new.retained, RetainedWhen::IfNew);
        assert!(if_new.on_subscribed(true).send_retained);
        assert!(!if_new.on_subscribed(false).send_retained);

        let never = grant(plan_subscription(
            "a/b",
            &at(RetainHandling::DoNotSend),
            None,
            false,
        ));
        assert_eq!(never.retained, RetainedWhen::Never);
        assert!(!never.on_subscribed(true).send_retained);
    }

    #[test]
    fn shared_subscriptions_get_no_retained_messages_5_0_section_4_8_2() {
        let g = grant(plan_subscription(
            "$share/g/a/b",
            &options(QoS::AtLeastOnce),
            None,
            false,
        ));
        assert!(g.shared);
        assert_eq!(g.retained, RetainedWhen::Never);
        assert_eq!(
            g.on_subscribed(true),
            Subscribed {
                propose_route: true,
                send_retained: false
            }
        );
        // `$share` with no group is a plain filter as far as the router goes
        assert!(
            !grant(plan_subscription(
                "$share",
                &options(QoS::AtMostOnce),
                None,
                false
            ))
            .shared
        );
    }

    #[test]
    fn only_a_new_filter_is_proposed_to_the_cluster() {
        let g = grant(plan_subscription(
            "a/b",
            &options(QoS::AtMostOnce),
            None,
            false,
        ));
        assert!(g.on_subscribed(true).propose_route);
        assert!(!g.on_subscribed(false).propose_route);
    }

    #[test]
    fn unsubscribe_withdraws_and_deletes_only_what_existed() {
        assert_eq!(
            plan_unsubscription(true, true),
            Unsubscribed {
                withdraw_route: true,
                delete_stored: true,
                reason_code: ReasonCode::Success
            }
        );
        assert_eq!(
            plan_unsubscription(true, false),
            Unsubscribed {
                withdraw_route: true,
                delete_stored: false,
                reason_code: ReasonCode::Success
            }
        );
        assert_eq!(
            plan_unsubscription(false, true),
            Unsubscribed {
                withdraw_route: false,
                delete_stored: false,
                reason_code: ReasonCode::NoSubscriptionExisted
            }
        );
    }

    #[test]
    fn unsuback_carries_reason_codes_in_5_0_only() {
        let codes = vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted];
        assert_eq!(unsuback_reason_codes(V5, codes.clone()), codes);
        assert_eq!(unsuback_reason_codes(V311, codes), Vec::new());
    }
}
