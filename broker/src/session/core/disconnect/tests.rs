//! Tests of the DISCONNECT and AUTH planners: plain values and the fake
//! clock of `on_connection_lost`, no actor.

use super::*;
use crate::codec::{AuthProperties, DisconnectProperties};
use crate::session::core::fixtures::T0;
use crate::session::core::{on_connection_lost, LostAction};

fn disconnect(reason_code: ReasonCode, session_expiry_interval: Option<u32>) -> Disconnect {
    Disconnect {
        reason_code,
        properties: DisconnectProperties {
            session_expiry_interval,
            ..Default::default()
        },
    }
}

/// What follows the DISCONNECT at `T0` for a session with `expiry` and a
/// will with `will_delay` seconds: the plan, then what the end of the
/// connection does.
fn disconnect_at_t0(
    expiry: u32,
    will_delay: Option<u32>,
    d: &Disconnect,
) -> Result<Vec<LostAction>, SessionError> {
    match plan_disconnect(expiry, d) {
        DisconnectPlan::Violation(e) => Err(e),
        DisconnectPlan::Close {
            session_expiry_interval,
            reason_code,
        } => Ok(on_connection_lost(
            T0,
            session_expiry_interval.unwrap_or(expiry),
            will_delay,
            disconnect_publishes_will(reason_code),
        )),
    }
}

#[test]
fn a_normal_disconnect_keeps_the_interval_and_drops_the_will_mqtt_3_14_4_3() {
    let d = disconnect(ReasonCode::Success, None);
    assert_eq!(
        plan_disconnect(60, &d),
        DisconnectPlan::Close {
            session_expiry_interval: None,
            reason_code: ReasonCode::Success
        }
    );
    assert!(!disconnect_publishes_will(ReasonCode::Success));
    // the session goes offline with its expiry armed, and no will
    assert_eq!(
        disconnect_at_t0(60, Some(0), &d),
        Ok(vec![
            LostAction::RedistributeShared,
            LostAction::GoOffline { since_ms: T0 },
            LostAction::ArmExpiry { at_ms: T0 + 60_000 },
        ])
    );
}

#[test]
fn disconnect_with_will_message_0x04_publishes_the_will_at_its_delay() {
    let d = disconnect(ReasonCode::DisconnectWithWillMessage, None);
    assert!(disconnect_publishes_will(d.reason_code));
    assert_eq!(
        disconnect_at_t0(60, Some(10), &d),
        Ok(vec![
            LostAction::ArmWill { at_ms: T0 + 10_000 },
            LostAction::RedistributeShared,
            LostAction::GoOffline { since_ms: T0 },
            LostAction::ArmExpiry { at_ms: T0 + 60_000 },
        ])
    );
    // without a delay, or for a session that ends now: at once
    assert_eq!(
        disconnect_at_t0(0, Some(10), &d),
        Ok(vec![LostAction::PublishWill, LostAction::End])
    );
}

#[test]
fn other_disconnect_reason_codes_drop_the_will_as_before() {
    // stricter than 5.0 [MQTT-3.1.2-8] (a known issue): pinned so that a
    // change is deliberate
    for code in [
        ReasonCode::Success,
        ReasonCode::UnspecifiedError,
        ReasonCode::ProtocolError,
    ] {
        assert!(!disconnect_publishes_will(code), "{code:?}");
        assert_eq!(
            disconnect_at_t0(0, Some(0), &disconnect(code, None)),
            Ok(vec![LostAction::End])
        );
    }
}

#[test]
fn disconnect_cannot_raise_a_session_expiry_of_0_mqtt_3_14_2_2() {
    let raised = disconnect(ReasonCode::Success, Some(60));
    assert_eq!(
        plan_disconnect(0, &raised),
        DisconnectPlan::Violation(SessionError::ExpiryRaisedAtDisconnect)
    );
    assert_eq!(
        SessionError::ExpiryRaisedAtDisconnect.reason_code(),
        ReasonCode::ProtocolError
    );
    // 0 again is no change
    assert_eq!(
        plan_disconnect(0, &disconnect(ReasonCode::Success, Some(0))),
        DisconnectPlan::Close {
            session_expiry_interval: Some(0),
            reason_code: ReasonCode::Success
        }
    );
}

#[test]
fn disconnect_may_lower_raise_or_end_a_persistent_sessions_expiry() {
    // lowered to 0: the session ends with the connection
    assert_eq!(
        disconnect_at_t0(60, None, &disconnect(ReasonCode::Success, Some(0))),
        Ok(vec![LostAction::End])
    );
    // raised: counted from the disconnect
    assert_eq!(
        disconnect_at_t0(60, None, &disconnect(ReasonCode::Success, Some(3600))),
        Ok(vec![
            LostAction::RedistributeShared,
            LostAction::GoOffline { since_ms: T0 },
            LostAction::ArmExpiry {
                at_ms: T0 + 3_600_000
            },
        ])
    );
}

const METHOD: &str = "SCRAM-SHA-256";

fn auth(reason_code: ReasonCode, method: Option<&'static str>) -> Auth {
    Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: method.map(ByteString::from_static),
            authentication_data: Some(Bytes::from_static(b"n,,n=user,r=abc")),
            ..Default::default()
        },
    }
}

/// The mechanism offered, as `plan_auth` sees it.
const OFFERED: Option<&str> = Some("the mechanism");

#[test]
fn reauthentication_starts_with_0x19_and_continues_with_0x18() {
    let method = ByteString::from_static(METHOD);
    assert_eq!(
        plan_auth(
            &auth(ReasonCode::ReAuthenticate, Some(METHOD)),
            Some(&method),
            false,
            OFFERED
        ),
        Ok(AuthPlan::Start("the mechanism"))
    );
    assert_eq!(
        plan_auth(
            &auth(ReasonCode::ContinueAuthentication, Some(METHOD)),
            Some(&method),
            true,
            OFFERED
        ),
        Ok(AuthPlan::Continue)
    );
}

#[test]
fn auth_without_enhanced_authentication_at_connect_is_a_protocol_error() {
    let e = plan_auth(
        &auth(ReasonCode::ReAuthenticate, Some(METHOD)),
        None,
        false,
        OFFERED,
    );
    assert_eq!(e, Err(SessionError::AuthWithoutMethod));
    assert_eq!(
        e.map_err(|e| e.reason_code()),
        Err(ReasonCode::ProtocolError)
    );
}

#[test]
fn reauthentication_uses_the_method_of_the_connect_mqtt_4_12_1_1() {
    let method = ByteString::from_static(METHOD);
    for other in [Some("PLAIN"), None] {
        assert_eq!(
            plan_auth(
                &auth(ReasonCode::ReAuthenticate, other),
                Some(&method),
                false,
                OFFERED
            ),
            Err(SessionError::AuthMethodChanged(method.clone()))
        );
    }
}

#[test]
fn a_method_no_longer_offered_ends_with_bad_authentication_method() {
    let method = ByteString::from_static(METHOD);
    let e = plan_auth::<&str>(
        &auth(ReasonCode::ReAuthenticate, Some(METHOD)),
        Some(&method),
        false,
        None,
    );
    assert_eq!(e, Err(SessionError::AuthMethodWithdrawn(method.clone())));
    assert_eq!(
        e.map_err(|e| e.reason_code()),
        Err(ReasonCode::BadAuthenticationMethod)
    );
}

#[test]
fn auth_codes_out_of_place_are_protocol_errors() {
    let method = ByteString::from_static(METHOD);
    let cases = [
        // 0x19 while an exchange runs
        (ReasonCode::ReAuthenticate, true),
        // 0x18 with none running
        (ReasonCode::ContinueAuthentication, false),
        // 0x00 is the server's to send
        (ReasonCode::Success, false),
        (ReasonCode::Success, true),
    ];
    for (code, in_exchange) in cases {
        assert_eq!(
            plan_auth(
                &auth(code, Some(METHOD)),
                Some(&method),
                in_exchange,
                OFFERED
            ),
            Err(SessionError::AuthOutOfPlace(code.as_u8())),
            "{code:?} in exchange: {in_exchange}"
        );
    }
}

#[test]
fn a_challenge_goes_out_and_success_ends_the_exchange() {
    assert_eq!(
        answer_auth_step(AuthStep::Continue(Bytes::from_static(b"r=abcxyz"))),
        AuthAnswer::Challenge(Bytes::from_static(b"r=abcxyz"))
    );
    assert_eq!(
        answer_auth_step(AuthStep::Success {
            username: "user".into(),
            data: Some(Bytes::from_static(b"v=sig")),
        }),
        AuthAnswer::Success {
            username: "user".into(),
            data: Some(Bytes::from_static(b"v=sig"))
        }
    );
}

#[test]
fn a_failed_reauthentication_disconnects_with_0x87_or_0x8c_never_0x86() {
    let wrong_proof = AuthFailure::WrongProof {
        method: "SCRAM-SHA-256",
        user: "user".into(),
    };
    assert_eq!(
        answer_auth_step(AuthStep::Failure {
            code: ReasonCode::BadUserNameOrPassword,
            why: wrong_proof.clone(),
        }),
        AuthAnswer::Failure {
            error: SessionError::ReauthenticationFailed {
                code: ReasonCode::NotAuthorized
            },
            why: wrong_proof,
        }
    );
    let malformed = AuthFailure::Malformed {
        method: "SCRAM-SHA-256",
        what: "client-final has no proof",
    };
    let AuthAnswer::Failure { error, why } = answer_auth_step(AuthStep::Failure {
        code: ReasonCode::BadAuthenticationMethod,
        why: malformed.clone(),
    }) else {
        panic!("a failure is answered with a failure")
    };
    assert_eq!(error.reason_code(), ReasonCode::BadAuthenticationMethod);
    assert!(
        !error.is_protocol_error(),
        "counted as an authentication outcome"
    );
    assert_eq!(why, malformed);
}
