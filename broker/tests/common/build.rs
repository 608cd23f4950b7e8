//! Packet bytes built by hand, field by field, independent of the codec
//! (mosquitto's `mosq_test.gen_*`). 3.1.1 forms unless the name ends in 5.

/// Remaining length as a variable byte integer.
pub fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// A length-prefixed string.
pub fn string(s: &str) -> Vec<u8> {
    bin(s.as_bytes())
}

/// Length-prefixed binary data.
pub fn bin(b: &[u8]) -> Vec<u8> {
    let mut out = (b.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(b);
    out
}

/// Fixed header byte + remaining length + body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// Will of a CONNECT: (topic, payload, qos, retain).
pub type Will<'a> = (&'a str, &'a [u8], u8, bool);

/// CONNECT for `level` 3 (MQIsdp), 4 or 5 (no properties), without will or credentials.
pub fn connect(level: u8, client_id: &str, clean: bool, keep_alive: u16) -> Vec<u8> {
    connect_full(level, client_id, clean, keep_alive, None, None, None)
}

pub fn connect_full(
    level: u8,
    client_id: &str,
    clean: bool,
    keep_alive: u16,
    will: Option<Will<'_>>,
    username: Option<&str>,
    password: Option<&[u8]>,
) -> Vec<u8> {
    let mut body = match level {
        3 => string("MQIsdp"),
        _ => string("MQTT"),
    };
    body.push(level);
    let mut flags = 0u8;
    if clean {
        flags |= 0x02;
    }
    if let Some((_, _, qos, retain)) = will {
        flags |= 0x04 | (qos << 3);
        if retain {
            flags |= 0x20;
        }
    }
    if password.is_some() {
        flags |= 0x40;
    }
    if username.is_some() {
        flags |= 0x80;
    }
    body.push(flags);
    body.extend(keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0); // properties
    }
    body.extend(string(client_id));
    if let Some((topic, payload, _, _)) = will {
        if level == 5 {
            body.push(0); // will properties
        }
        body.extend(string(topic));
        body.extend(bin(payload));
    }
    if let Some(u) = username {
        body.extend(string(u));
    }
    if let Some(p) = password {
        body.extend(bin(p));
    }
    packet(0x10, &body)
}

/// MQTT 5 CONNECT with raw CONNECT properties `props`.
pub fn connect5(client_id: &str, clean: bool, keep_alive: u16, props: &[u8]) -> Vec<u8> {
    let mut body = string("MQTT");
    body.push(5);
    body.push(if clean { 0x02 } else { 0 });
    body.extend(keep_alive.to_be_bytes());
    body.extend(varint(props.len()));
    body.extend_from_slice(props);
    body.extend(string(client_id));
    packet(0x10, &body)
}

/// CONNACK as a 3.1.1 server sends it.
pub fn connack(session_present: bool, return_code: u8) -> Vec<u8> {
    vec![0x20, 2, session_present as u8, return_code]
}

/// PUBLISH (3.1.1).
pub fn publish(
    topic: &str,
    qos: u8,
    retain: bool,
    dup: bool,
    packet_id: u16,
    payload: &[u8],
) -> Vec<u8> {
    let first = 0x30 | ((dup as u8) << 3) | (qos << 1) | retain as u8;
    let mut body = string(topic);
    if qos > 0 {
        body.extend(packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(first, &body)
}

/// PUBLISH (5.0) with raw properties.
pub fn publish5(
    topic: &str,
    qos: u8,
    retain: bool,
    packet_id: u16,
    props: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let first = 0x30 | (qos << 1) | retain as u8;
    let mut body = string(topic);
    if qos > 0 {
        body.extend(packet_id.to_be_bytes());
    }
    body.extend(varint(props.len()));
    body.extend_from_slice(props);
    body.extend_from_slice(payload);
    packet(first, &body)
}

pub fn puback(packet_id: u16) -> Vec<u8> {
    packet(0x40, &packet_id.to_be_bytes())
}
pub fn pubrec(packet_id: u16) -> Vec<u8> {
    packet(0x50, &packet_id.to_be_bytes())
}
pub fn pubrel(packet_id: u16) -> Vec<u8> {
    packet(0x62, &packet_id.to_be_bytes())
}
pub fn pubcomp(packet_id: u16) -> Vec<u8> {
    packet(0x70, &packet_id.to_be_bytes())
}

/// SUBSCRIBE (3.1.1) of (filter, requested QoS) pairs.
pub fn subscribe(packet_id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    for (f, q) in filters {
        body.extend(string(f));
        body.push(*q);
    }
    packet(0x82, &body)
}

/// SUBSCRIBE (5.0) of (filter, options byte) pairs with raw properties.
pub fn subscribe5(packet_id: u16, props: &[u8], filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend(varint(props.len()));
    body.extend_from_slice(props);
    for (f, o) in filters {
        body.extend(string(f));
        body.push(*o);
    }
    packet(0x82, &body)
}

/// SUBACK (3.1.1).
pub fn suback(packet_id: u16, codes: &[u8]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.extend_from_slice(codes);
    packet(0x90, &body)
}

pub fn unsubscribe(packet_id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    for f in filters {
        body.extend(string(f));
    }
    packet(0xA2, &body)
}

pub fn unsuback(packet_id: u16) -> Vec<u8> {
    packet(0xB0, &packet_id.to_be_bytes())
}

pub fn pingreq() -> Vec<u8> {
    vec![0xC0, 0]
}
pub fn pingresp() -> Vec<u8> {
    vec![0xD0, 0]
}
pub fn disconnect() -> Vec<u8> {
    vec![0xE0, 0]
}

/// MQTT 5 properties, one builder per property type (5.0 section 2.2.2.2).
pub mod prop {
    use super::{bin, string, varint};

    pub fn byte(id: u8, v: u8) -> Vec<u8> {
        vec![id, v]
    }
    pub fn u16(id: u8, v: u16) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(v.to_be_bytes());
        out
    }
    pub fn u32(id: u8, v: u32) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(v.to_be_bytes());
        out
    }
    pub fn var(id: u8, v: usize) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(varint(v));
        out
    }
    pub fn str(id: u8, v: &str) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(string(v));
        out
    }
    pub fn data(id: u8, v: &[u8]) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(bin(v));
        out
    }
    pub fn pair(id: u8, k: &str, v: &str) -> Vec<u8> {
        let mut out = vec![id];
        out.extend(string(k));
        out.extend(string(v));
        out
    }

    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0B;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const AUTH_METHOD: u8 = 0x15;
    pub const AUTH_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
}

/// MQTT 5 CONNECT with a will: (topic, payload, qos, retain) and raw will properties.
pub fn connect5_will(
    client_id: &str,
    clean: bool,
    keep_alive: u16,
    props: &[u8],
    will: Will<'_>,
    will_props: &[u8],
) -> Vec<u8> {
    let (topic, payload, qos, retain) = will;
    let mut body = string("MQTT");
    body.push(5);
    body.push((clean as u8) << 1 | 0x04 | qos << 3 | (retain as u8) << 5);
    body.extend(keep_alive.to_be_bytes());
    body.extend(varint(props.len()));
    body.extend_from_slice(props);
    body.extend(string(client_id));
    body.extend(varint(will_props.len()));
    body.extend_from_slice(will_props);
    body.extend(string(topic));
    body.extend(bin(payload));
    packet(0x10, &body)
}

/// MQTT 5 DISCONNECT with a reason code and raw properties.
pub fn disconnect5(reason: u8, props: &[u8]) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend(varint(props.len()));
    body.extend_from_slice(props);
    packet(0xE0, &body)
}

/// MQTT 5 AUTH with a reason code and raw properties.
pub fn auth5(reason: u8, props: &[u8]) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend(varint(props.len()));
    body.extend_from_slice(props);
    packet(0xF0, &body)
}

/// MQTT 5 PUBACK / PUBREC / PUBREL / PUBCOMP with a reason code (no properties).
pub fn ack5(first: u8, packet_id: u16, reason: u8) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.push(reason);
    packet(first, &body)
}
