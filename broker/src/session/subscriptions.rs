//! A session's own copy of its subscriptions (filter -> entry, as in the
//! router), which its record, the admin API and a hand-over read.
//!
//! Most sessions have one or a few: a hash map would cost each of them a
//! table of at least four slots (about 380 B for one subscription), so up
//! to [`FEW`] live in a vector of exactly their number, searched in order,
//! and more in a hash map.

use std::collections::HashMap;

use bytestring::ByteString;

use super::SubscriptionEntry;

/// Most subscriptions kept in the vector.
const FEW: usize = 16;

#[derive(Debug)]
pub(super) enum Subscriptions {
    Few(Vec<(ByteString, SubscriptionEntry)>),
    /// Boxed, as the router's `Children::Map`: the enum stays the size of
    /// the vector.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<ByteString, SubscriptionEntry>>),
}

impl Default for Subscriptions {
    fn default() -> Subscriptions {
        Subscriptions::Few(Vec::new())
    }
}

impl Subscriptions {
    /// Adds or replaces the subscription to `filter`; returns the one it
    /// replaced.
    pub(super) fn insert(
        &mut self,
        filter: ByteString,
        entry: SubscriptionEntry,
    ) -> Option<SubscriptionEntry> {
        match self {
            Subscriptions::Few(v) => {
                if let Some((_, e)) = v.iter_mut().find(|(f, _)| *f == filter) {
                    return Some(std::mem::replace(e, entry));
                }
                if v.len() < FEW {
                    // Exactly as many as there are: a session rarely adds
                    // one after its first SUBSCRIBE.
                    v.reserve_exact(1);
                    v.push((filter, entry));
                    return None;
                }
                let mut map: HashMap<_, _> = v.drain(..).collect();
                map.insert(filter, entry);
                *self = Subscriptions::Many(Box::new(map));
                None
            }
            Subscriptions::Many(m) => m.insert(filter, entry),
        }
    }

    pub(super) fn remove(&mut self, filter: &str) -> Option<SubscriptionEntry> {
        match self {
            Subscriptions::Few(v) => {
                let i = v.iter().position(|(f, _)| &**f == filter)?;
                let (_, entry) = v.swap_remove(i);
                v.shrink_to_fit();
                Some(entry)
            }
            Subscriptions::Many(m) => {
                let entry = m.remove(filter)?;
                if m.len() <= FEW / 2 {
                    let mut v: Vec<_> = m.drain().collect();
                    v.shrink_to_fit();
                    *self = Subscriptions::Few(v);
                }
                Some(entry)
            }
        }
    }

    pub(super) fn iter(&self) -> Box<dyn Iterator<Item = (&ByteString, &SubscriptionEntry)> + '_> {
        match self {
            Subscriptions::Few(v) => Box::new(v.iter().map(|(f, e)| (f, e))),
            Subscriptions::Many(m) => Box::new(m.iter()),
        }
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &ByteString> + '_ {
        self.iter().map(|(f, _)| f)
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Subscriptions::Few(v) => v.len(),
            Subscriptions::Many(m) => m.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn clear(&mut self) {
        *self = Subscriptions::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{QoS, SubscriptionOptions};

    fn entry(qos: QoS) -> SubscriptionEntry {
        SubscriptionEntry {
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
            subscription_id: None,
            shared_filter: None,
        }
    }

    fn filters(s: &Subscriptions) -> Vec<String> {
        let mut f: Vec<String> = s.keys().map(|k| k.to_string()).collect();
        f.sort();
        f
    }

    #[test]
    fn a_filter_is_replaced_not_added_twice_and_removed_once() {
        let mut s = Subscriptions::default();
        assert!(s.insert("a/b".into(), entry(QoS::AtMostOnce)).is_none());
        let old = s.insert("a/b".into(), entry(QoS::AtLeastOnce));
        assert_eq!(old.map(|e| e.options.qos), Some(QoS::AtMostOnce));
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.remove("a/b").map(|e| e.options.qos),
            Some(QoS::AtLeastOnce)
        );
        assert!(s.remove("a/b").is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn many_move_to_a_map_and_back_keeping_every_filter() {
        let mut s = Subscriptions::default();
        let all: Vec<String> = (0..40).map(|i| format!("t/{i:02}")).collect();
        for f in &all {
            s.insert(f.as_str().into(), entry(QoS::AtMostOnce));
        }
        assert!(matches!(s, Subscriptions::Many(_)));
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(filters(&s), sorted);
        for f in &all[..35] {
            assert!(s.remove(f).is_some(), "{f}");
        }
        assert!(matches!(s, Subscriptions::Few(_)));
        assert_eq!(filters(&s), all[35..].to_vec());
        s.clear();
        assert!(s.is_empty());
    }

    #[test]
    fn one_subscription_takes_one_slot() {
        let mut s = Subscriptions::default();
        s.insert("dev/1/cmd".into(), entry(QoS::AtLeastOnce));
        let Subscriptions::Few(v) = &s else {
            panic!("one subscription is few")
        };
        assert_eq!(v.capacity(), 1);
    }
}
