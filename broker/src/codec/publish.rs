//! PUBLISH (3.1.1 section 3.3; 5.0 section 3.3).

use bytes::Bytes;
use bytestring::ByteString;

use super::{PublishProperties, QoS};

/// PUBLISH, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty only in 5.0 when a topic alias is present.
    pub topic: ByteString,
    /// `Some` exactly when `qos > 0`, and then non-zero.
    pub packet_id: Option<u16>,
    /// Split off the input without copying.
    pub payload: Bytes,
    /// Always default for 3.1 / 3.1.1.
    pub properties: PublishProperties,
}
