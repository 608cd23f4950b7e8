//! The one adapter between the broker's subscription types and the records
//! of the store and of the cluster's replicated state.
//!
//! A subscription has one persistent encoding: the store's
//! [`storage::SubscriptionRecord`] (format in `storage/src/records.rs`,
//! golden-tested in `storage/tests/golden/`). The replicated session record
//! carries the same bytes as its opaque `options`; values written by earlier
//! releases in the cluster's own 7-byte layout are still read
//! ([`decode_replicated`]). Retain Handling has one mapping, the codec's
//! ([`RetainHandling::from_u8`]): a stored 3 is an unreadable record, never
//! a default.

use bytes::Bytes;
use bytestring::ByteString;

use crate::codec::topic::split_shared;
use crate::codec::{ProtocolVersion, QoS, RetainHandling, SubscriptionOptions};
use crate::handle::SubscriptionEntry;

/// The store's record of `filter`'s subscription.
pub fn to_record(filter: &str, entry: &SubscriptionEntry) -> storage::SubscriptionRecord {
    storage::SubscriptionRecord {
        filter: filter.to_owned(),
        qos: entry.options.qos as u8,
        no_local: entry.options.no_local,
        retain_as_published: entry.options.retain_as_published,
        retain_handling: entry.options.retain_handling as u8,
        subscription_identifier: entry.subscription_id,
    }
}

/// The subscription a stored record describes; `Err` names the bad field.
pub fn from_record(
    record: storage::SubscriptionRecord,
) -> Result<(ByteString, SubscriptionEntry), String> {
    let qos = QoS::from_u8(record.qos).ok_or_else(|| format!("qos {}", record.qos))?;
    let retain_handling = RetainHandling::from_u8(record.retain_handling)
        .ok_or_else(|| format!("retain_handling {}", record.retain_handling))?;
    let options = SubscriptionOptions {
        qos,
        no_local: record.no_local,
        retain_as_published: record.retain_as_published,
        retain_handling,
    };
    Ok(entry(
        record.filter,
        options,
        record.subscription_identifier,
    ))
}

/// A router entry for `filter` (shared subscriptions keep their whole filter).
pub fn entry(
    filter: String,
    options: SubscriptionOptions,
    subscription_id: Option<u32>,
) -> (ByteString, SubscriptionEntry) {
    let shared = matches!(split_shared(&filter), Ok(Some(_)));
    let filter = ByteString::from(filter);
    (
        filter.clone(),
        SubscriptionEntry {
            options,
            subscription_id,
            shared_filter: shared.then(|| Box::new(filter)),
        },
    )
}

/// The replicated form of a subscription: the store's record bytes.
pub fn to_replicated(filter: &str, entry: &SubscriptionEntry) -> cluster::SessionSubscription {
    cluster::SessionSubscription {
        filter: filter.to_owned(),
        options: Bytes::from(to_record(filter, entry).to_bytes()),
    }
}

/// Reads a replicated subscription: the store's record bytes, or the
/// 7-byte layout of earlier releases (version 1, QoS, flags: bit 0 No
/// Local, bit 1 Retain As Published, bits 2-3 Retain Handling, then the
/// Subscription Identifier as a big-endian u32, 0 for none).
pub fn decode_replicated(
    sub: &cluster::SessionSubscription,
) -> Result<(ByteString, SubscriptionEntry), String> {
    if let Ok(record) = storage::SubscriptionRecord::from_bytes(&sub.options) {
        return from_record(record);
    }
    let [1, qos, flags, a, b, c, d] = *sub.options else {
        return Err(format!("{} bytes of unknown layout", sub.options.len()));
    };
    let record = storage::SubscriptionRecord {
        filter: sub.filter.clone(),
        qos,
        no_local: flags & 1 != 0,
        retain_as_published: flags & 2 != 0,
        retain_handling: (flags >> 2) & 3,
        subscription_identifier: Some(u32::from_be_bytes([a, b, c, d])).filter(|id| *id != 0),
    };
    from_record(record)
}

/// The protocol of a stored protocol level (3, 4 or 5).
pub fn protocol_of(level: u8) -> Option<ProtocolVersion> {
    match level {
        3 => Some(ProtocolVersion::V31),
        4 => Some(ProtocolVersion::V311),
        5 => Some(ProtocolVersion::V5),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (ByteString, SubscriptionEntry) {
        entry(
            "$share/g/a/+".into(),
            SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: false,
                retain_handling: RetainHandling::DoNotSend,
            },
            Some(9),
        )
    }

    #[test]
    fn store_record_round_trips() {
        let (filter, e) = sample();
        assert_eq!(from_record(to_record(&filter, &e)), Ok((filter, e)));
    }

    #[test]
    fn replicated_form_is_the_store_encoding() {
        let (filter, e) = sample();
        let sub = to_replicated(&filter, &e);
        assert_eq!(sub.options.as_ref(), to_record(&filter, &e).to_bytes());
        assert_eq!(decode_replicated(&sub), Ok((filter, e)));
    }

    /// Bytes written by the replicated layout of earlier releases, made by
    /// hand: version 1, QoS 2, flags 0b1001 (No Local, Retain Handling 2),
    /// Subscription Identifier 9.
    #[test]
    fn earlier_replicated_layout_is_still_read() {
        let (filter, e) = sample();
        let old = cluster::SessionSubscription {
            filter: filter.to_string(),
            options: Bytes::from_static(&[1, 2, 0b1001, 0, 0, 0, 9]),
        };
        assert_eq!(decode_replicated(&old), Ok((filter, e)));
    }

    #[test]
    fn unknown_retain_handling_is_an_error_not_a_default() {
        let (filter, e) = sample();
        let mut record = to_record(&filter, &e);
        record.retain_handling = 3;
        assert_eq!(from_record(record), Err("retain_handling 3".into()));
        let bad = cluster::SessionSubscription {
            filter: filter.to_string(),
            options: Bytes::from_static(&[1, 2, 0b1100, 0, 0, 0, 0]),
        };
        assert!(decode_replicated(&bad).is_err());
        let short = cluster::SessionSubscription {
            filter: filter.to_string(),
            options: Bytes::from_static(&[1]),
        };
        assert!(decode_replicated(&short).is_err());
    }
}
