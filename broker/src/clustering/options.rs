//! The broker's encoding of subscription options in the replicated session
//! record (opaque bytes to the cluster): version byte 1, QoS, a flags byte
//! (bit 0 No Local, bit 1 Retain As Published, bits 2-3 Retain Handling),
//! then the 5.0 Subscription Identifier as a big-endian u32 (0: none).

use bytes::Bytes;

use crate::codec::{QoS, RetainHandling, SubscriptionOptions};

const VERSION: u8 = 1;

pub fn encode_options(options: &SubscriptionOptions, subscription_id: Option<u32>) -> Bytes {
    let rh = match options.retain_handling {
        RetainHandling::SendAtSubscribe => 0,
        RetainHandling::SendAtSubscribeIfNew => 1,
        RetainHandling::DoNotSend => 2,
    };
    let flags = u8::from(options.no_local) | u8::from(options.retain_as_published) << 1 | rh << 2;
    let mut out = vec![VERSION, options.qos as u8, flags];
    out.extend(subscription_id.unwrap_or(0).to_be_bytes());
    Bytes::from(out)
}

/// `None` for bytes this version cannot read.
pub fn decode_options(bytes: &[u8]) -> Option<(SubscriptionOptions, Option<u32>)> {
    let [VERSION, qos, flags, a, b, c, d] = *bytes else {
        return None;
    };
    let retain_handling = match (flags >> 2) & 3 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendAtSubscribeIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return None,
    };
    let id = u32::from_be_bytes([a, b, c, d]);
    Some((
        SubscriptionOptions {
            qos: QoS::from_u8(qos)?,
            no_local: flags & 1 != 0,
            retain_as_published: flags & 2 != 0,
            retain_handling,
        },
        (id != 0).then_some(id),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip() {
        let o = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: false,
            retain_handling: RetainHandling::DoNotSend,
        };
        assert_eq!(
            decode_options(&encode_options(&o, Some(9))),
            Some((o, Some(9)))
        );
        assert_eq!(
            decode_options(&encode_options(&SubscriptionOptions::default(), None)),
            Some((SubscriptionOptions::default(), None))
        );
        assert_eq!(decode_options(&[2, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode_options(&[1, 3, 0, 0, 0, 0, 0]), None);
        assert_eq!(decode_options(&[1]), None);
    }
}
