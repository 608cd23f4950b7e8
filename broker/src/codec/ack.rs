//! PUBACK, PUBREC, PUBREL, PUBCOMP (3.1.1 sections 3.4-3.7; 5.0 sections 3.4-3.7)
//! and UNSUBACK (3.1.1 section 3.11; 5.0 section 3.11).

use super::{AckProperties, ReasonCode};

/// PUBACK, PUBREC, PUBREL or PUBCOMP: which one is the `Packet` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResponse {
    pub packet_id: u16,
    /// Always Success for 3.1 / 3.1.1. In 5.0 a Success code with no properties
    /// is encoded in the short form (remaining length 2).
    pub reason_code: ReasonCode,
    pub properties: AckProperties,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    /// One per filter of the UNSUBSCRIBE in 5.0; empty for 3.1 / 3.1.1.
    pub reason_codes: Vec<ReasonCode>,
    pub properties: AckProperties,
}
