//! Topic aliases of one connection, in both directions (5.0 section
//! 3.3.2.3.4). Sans-IO.
//!
//! Aliases live as long as the network connection [MQTT-3.3.2-7]: a new
//! connection starts with empty maps in both directions.
//!
//! - Client to broker: the broker announces Topic Alias Maximum in CONNACK; a
//!   PUBLISH with a topic and an alias sets the alias, one with an empty topic
//!   and an alias uses it. An alias of 0 or over the maximum is a Topic Alias
//!   Invalid error [MQTT-3.3.2-9] [MQTT-3.3.2-10]; an empty topic with an alias
//!   that was never set is a Protocol Error.
//! - Broker to client: up to the client's Topic Alias Maximum (and the
//!   broker's own cap), the first topics sent get an alias; later messages to
//!   them go with an empty topic. When all aliases are taken, they are reused
//!   round robin: the message that reuses one carries its topic again.

use std::collections::HashMap;

use bytestring::ByteString;

use crate::codec::Publish;

/// Why an inbound alias cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AliasError {
    /// Above the Topic Alias Maximum the broker announced (0x94).
    #[error("topic alias {alias} is over the Topic Alias Maximum {max}")]
    OutOfRange { alias: u16, max: u16 },
    /// An empty topic with an alias the client never set (protocol error).
    #[error("topic alias {0} is used before it was set")]
    Unknown(u16),
}

/// What `apply_outbound` changed, so it can be undone if the packet is not
/// sent after all (too large for the client).
#[derive(Debug)]
pub enum OutboundChange {
    /// Nothing new: no alias, or an alias the client already knows.
    None,
    /// `alias` now maps `topic`; it mapped `replaced` before.
    Set {
        alias: u16,
        topic: ByteString,
        replaced: Option<ByteString>,
    },
}

/// Topic alias maps of one connection.
#[derive(Debug, Default)]
pub struct TopicAliases {
    /// Index `alias - 1`: the topic the client set for that alias.
    inbound: Vec<Option<ByteString>>,
    inbound_max: u16,
    /// Topic -> alias the client knows.
    outbound: HashMap<ByteString, u16>,
    /// Index `alias - 1`: the topic of that alias towards the client.
    outbound_topics: Vec<ByteString>,
    outbound_max: u16,
    /// Next alias to reuse once all are taken (0-based).
    next_reuse: u16,
}

impl TopicAliases {
    /// `inbound_max`: the broker's Topic Alias Maximum; `outbound_max`: the
    /// lower of the client's Topic Alias Maximum and the broker's cap.
    pub fn new(inbound_max: u16, outbound_max: u16) -> TopicAliases {
        TopicAliases {
            inbound_max,
            outbound_max,
            ..Default::default()
        }
    }

    /// No alias set either way yet: the maxima are all there is to keep
    /// (`maxima`), and [`TopicAliases::new`] makes the same again.
    pub fn is_unused(&self) -> bool {
        self.inbound.is_empty() && self.outbound.is_empty() && self.outbound_topics.is_empty()
    }

    /// The inbound and outbound maxima, as given to [`TopicAliases::new`].
    pub fn maxima(&self) -> (u16, u16) {
        (self.inbound_max, self.outbound_max)
    }

    /// Resolves the topic of an inbound PUBLISH in place.
    pub fn resolve_inbound(&mut self, publish: &mut Publish) -> Result<(), AliasError> {
        let Some(alias) = publish.properties.topic_alias.take() else {
            return Ok(());
        };
        if alias == 0 || alias > self.inbound_max {
            return Err(AliasError::OutOfRange {
                alias,
                max: self.inbound_max,
            });
        }
        let slot = usize::from(alias - 1);
        if self.inbound.len() <= slot {
            self.inbound.resize(slot + 1, None);
        }
        if publish.topic.is_empty() {
            match &self.inbound[slot] {
                Some(topic) => publish.topic = topic.clone(),
                None => return Err(AliasError::Unknown(alias)),
            }
        } else {
            self.inbound[slot] = Some(publish.topic.clone());
        }
        Ok(())
    }

    /// Uses an alias for an outbound PUBLISH if the client accepts aliases.
    pub fn apply_outbound(&mut self, publish: &mut Publish) -> OutboundChange {
        if self.outbound_max == 0 {
            return OutboundChange::None;
        }
        if let Some(&alias) = self.outbound.get(&publish.topic) {
            publish.topic = ByteString::new();
            publish.properties.topic_alias = Some(alias);
            return OutboundChange::None;
        }
        let (alias, replaced) = if self.outbound_topics.len() < usize::from(self.outbound_max) {
            self.outbound_topics.push(publish.topic.clone());
            (self.outbound_topics.len() as u16, None)
        } else {
            let i = usize::from(self.next_reuse);
            self.next_reuse = (self.next_reuse + 1) % self.outbound_max;
            let old = std::mem::replace(&mut self.outbound_topics[i], publish.topic.clone());
            self.outbound.remove(&old);
            (i as u16 + 1, Some(old))
        };
        self.outbound.insert(publish.topic.clone(), alias);
        publish.properties.topic_alias = Some(alias);
        OutboundChange::Set {
            alias,
            topic: publish.topic.clone(),
            replaced,
        }
    }

    /// Reverts an `apply_outbound` whose packet was not sent.
    pub fn undo_outbound(&mut self, change: OutboundChange) {
        let OutboundChange::Set {
            alias,
            topic,
            replaced,
        } = change
        else {
            return;
        };
        self.outbound.remove(&topic);
        let i = usize::from(alias - 1);
        match replaced {
            Some(old) => {
                self.outbound.insert(old.clone(), alias);
                self.outbound_topics[i] = old;
                self.next_reuse = (self.next_reuse + self.outbound_max - 1) % self.outbound_max;
            }
            None => {
                self.outbound_topics.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    fn publish(topic: &'static str, alias: Option<u16>) -> Publish {
        let mut p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: ByteString::from_static(topic),
            packet_id: None,
            payload: bytes::Bytes::new(),
            properties: Default::default(),
        };
        p.properties.topic_alias = alias;
        p
    }

    #[test]
    fn inbound_alias_is_set_then_used() {
        let mut a = TopicAliases::new(10, 0);
        let mut p = publish("a/b", Some(3));
        a.resolve_inbound(&mut p).unwrap();
        assert_eq!(p.topic, "a/b");
        assert_eq!(p.properties.topic_alias, None);
        let mut p = publish("", Some(3));
        a.resolve_inbound(&mut p).unwrap();
        assert_eq!(p.topic, "a/b");
        // Reassigned to another topic.
        let mut p = publish("c", Some(3));
        a.resolve_inbound(&mut p).unwrap();
        let mut p = publish("", Some(3));
        a.resolve_inbound(&mut p).unwrap();
        assert_eq!(p.topic, "c");
    }

    #[test]
    fn inbound_alias_over_the_maximum_is_invalid_mqtt_3_3_2_10() {
        let mut a = TopicAliases::new(2, 0);
        assert_eq!(
            a.resolve_inbound(&mut publish("t", Some(3))),
            Err(AliasError::OutOfRange { alias: 3, max: 2 })
        );
        let mut none = TopicAliases::new(0, 0);
        assert!(none.resolve_inbound(&mut publish("t", Some(1))).is_err());
    }

    #[test]
    fn inbound_alias_used_before_set_is_an_error() {
        let mut a = TopicAliases::new(5, 0);
        assert_eq!(
            a.resolve_inbound(&mut publish("", Some(4))),
            Err(AliasError::Unknown(4))
        );
    }

    #[test]
    fn outbound_aliases_are_assigned_then_reused_round_robin() {
        let mut a = TopicAliases::new(0, 2);
        let mut p = publish("x", None);
        a.apply_outbound(&mut p);
        assert_eq!((p.topic.as_ref(), p.properties.topic_alias), ("x", Some(1)));
        let mut p = publish("x", None);
        a.apply_outbound(&mut p);
        assert_eq!((p.topic.as_ref(), p.properties.topic_alias), ("", Some(1)));
        let mut p = publish("y", None);
        a.apply_outbound(&mut p);
        assert_eq!(p.properties.topic_alias, Some(2));
        // Full: "z" takes alias 1 over, with its topic.
        let mut p = publish("z", None);
        a.apply_outbound(&mut p);
        assert_eq!((p.topic.as_ref(), p.properties.topic_alias), ("z", Some(1)));
        let mut p = publish("x", None);
        a.apply_outbound(&mut p);
        assert_eq!((p.topic.as_ref(), p.properties.topic_alias), ("x", Some(2)));
    }

    #[test]
    fn undone_outbound_alias_is_forgotten() {
        let mut a = TopicAliases::new(0, 1);
        let mut p = publish("x", None);
        a.apply_outbound(&mut p);
        let mut p = publish("y", None);
        let change = a.apply_outbound(&mut p);
        a.undo_outbound(change);
        let mut p = publish("x", None);
        a.apply_outbound(&mut p);
        assert_eq!(
            (p.topic.as_ref(), p.properties.topic_alias),
            ("", Some(1)),
            "x still has alias 1"
        );
        let mut fresh = TopicAliases::new(0, 1);
        let mut p = publish("x", None);
        let change = fresh.apply_outbound(&mut p);
        fresh.undo_outbound(change);
        let mut p = publish("x", None);
        fresh.apply_outbound(&mut p);
        assert_eq!(p.topic, "x", "the client never learned the alias");
    }

    #[test]
    fn no_outbound_aliases_when_the_client_accepts_none() {
        let mut a = TopicAliases::new(0, 0);
        let mut p = publish("x", None);
        a.apply_outbound(&mut p);
        a.apply_outbound(&mut p);
        assert_eq!((p.topic.as_ref(), p.properties.topic_alias), ("x", None));
    }
}
