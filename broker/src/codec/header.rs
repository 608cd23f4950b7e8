//! The fixed header (3.1.1 section 2.2; 5.0 section 2.1) and the dispatch to
//! each packet family.

use bytes::BytesMut;

use super::{DecodeError, EncodeError, Limits, Packet, ProtocolVersion};

pub(super) fn decode_packet(
    _buf: &mut BytesMut,
    _limits: &Limits,
) -> Result<Option<Packet>, DecodeError> {
    todo!("codec lands separately")
}

pub(super) fn encode_packet(
    _packet: &Packet,
    _version: ProtocolVersion,
    _buf: &mut BytesMut,
) -> Result<usize, EncodeError> {
    todo!("codec lands separately")
}
