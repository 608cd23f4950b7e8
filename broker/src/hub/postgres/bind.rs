//! A message's fields as the parameters of a prepared statement, each in the
//! type the server inferred for it (see README, "PostgreSQL routes", for the
//! table of accepted types).
//!
//! Values are written in PostgreSQL's binary format; nothing here builds
//! SQL text.

use std::error::Error;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::query::Field;
use crate::hub::sink::RoutedMessage;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC).
const POSTGRES_EPOCH_US: i64 = 946_684_800_000_000;

/// How a field is encoded for the type of its parameter, chosen once per
/// prepared statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The bytes as they are (`bytea`).
    Bytes,
    /// UTF-8 text (`text`, `varchar`, `bpchar`, `name`, `json`): a payload
    /// that is not UTF-8 is refused.
    Text,
    /// `jsonb`: a version byte, then the text.
    Jsonb,
    Bool,
    Int2,
    Int4,
    Int8,
    /// `timestamp` and `timestamptz`: microseconds since 2000-01-01 UTC.
    Timestamp,
    /// A Unix time in milliseconds, into a `bigint`.
    UnixMillis,
}

fn is_text(ty: &Type) -> bool {
    [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::UNKNOWN,
    ]
    .contains(ty)
}

/// The encoding of `field` into a parameter of type `ty`; the error lists
/// the types this field can go into.
pub fn encoding(field: Field, ty: &Type) -> Result<Encoding, String> {
    let (encoding, accepted) = match field {
        Field::Topic | Field::ClientId => (is_text(ty).then_some(Encoding::Text), "text, varchar"),
        Field::Payload => (
            match *ty {
                Type::BYTEA => Some(Encoding::Bytes),
                Type::JSON => Some(Encoding::Text),
                Type::JSONB => Some(Encoding::Jsonb),
                _ => is_text(ty).then_some(Encoding::Text),
            },
            "bytea, text, varchar, json, jsonb",
        ),
        Field::Qos => (
            match *ty {
                Type::INT2 => Some(Encoding::Int2),
                Type::INT4 => Some(Encoding::Int4),
                Type::INT8 => Some(Encoding::Int8),
                _ => None,
            },
            "smallint, integer, bigint",
        ),
        Field::Retain => ((*ty == Type::BOOL).then_some(Encoding::Bool), "boolean"),
        Field::Timestamp => (
            match *ty {
                Type::TIMESTAMPTZ | Type::TIMESTAMP => Some(Encoding::Timestamp),
                Type::INT8 => Some(Encoding::UnixMillis),
                _ => None,
            },
            "timestamptz, timestamp, bigint (Unix milliseconds)",
        ),
        Field::Seq | Field::Uid => ((*ty == Type::INT8).then_some(Encoding::Int8), "bigint"),
    };
    encoding.ok_or_else(|| {
        format!("the server infers type `{ty}` for {field}, which goes into {accepted}; add a cast (`{field}::{}`) or change the column", ty.name())
    })
}

/// One bound parameter value.
#[derive(Debug)]
pub enum Value {
    Bytes(Bytes),
    /// Text, known to be UTF-8.
    Text(Bytes),
    Jsonb(Bytes),
    Bool(bool),
    Int2(i16),
    Int4(i32),
    Int8(i64),
    /// Microseconds since 2000-01-01 UTC.
    Timestamp(i64),
}

/// The parameters of one execution for `message`, or why the message
/// cannot be bound (a `Reject`: it would never bind).
pub fn values(
    message: &RoutedMessage,
    fields: &[Field],
    encodings: &[Encoding],
) -> Result<Vec<Value>, String> {
    fields
        .iter()
        .zip(encodings)
        .map(|(field, encoding)| value(message, *field, *encoding))
        .collect()
}

fn value(message: &RoutedMessage, field: Field, encoding: Encoding) -> Result<Value, String> {
    let text = |bytes: Bytes| -> Result<Bytes, String> {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(bytes),
            Err(e) => Err(format!(
                "{field} is bound as text but is not UTF-8 ({e}); bind it to a bytea parameter to store any bytes"
            )),
        }
    };
    let integer = match field {
        Field::Qos => i64::from(message.qos),
        Field::Retain => i64::from(message.retain),
        // Routes store the same 64 bits: ids above 2^63 read back negative.
        Field::Seq => message.seq as i64,
        Field::Uid => message.uid as i64,
        Field::Timestamp => i64::try_from(message.timestamp_ms)
            .map_err(|_| format!("{field} {} ms is out of range", message.timestamp_ms))?,
        Field::Topic | Field::ClientId | Field::Payload => 0,
    };
    let bytes = || match field {
        Field::Topic => Bytes::copy_from_slice(message.topic.as_bytes()),
        Field::ClientId => Bytes::copy_from_slice(message.client_id.as_bytes()),
        _ => message.payload.clone(),
    };
    Ok(match encoding {
        Encoding::Bytes => Value::Bytes(bytes()),
        Encoding::Text => Value::Text(text(bytes())?),
        Encoding::Jsonb => Value::Jsonb(text(bytes())?),
        Encoding::Bool => Value::Bool(integer != 0),
        // QoS is 0..=2: these conversions cannot fail for the fields they
        // are chosen for; the error keeps a bad value from wrapping.
        Encoding::Int2 => Value::Int2(
            i16::try_from(integer).map_err(|_| format!("{field} {integer} exceeds smallint"))?,
        ),
        Encoding::Int4 => Value::Int4(
            i32::try_from(integer).map_err(|_| format!("{field} {integer} exceeds integer"))?,
        ),
        Encoding::Int8 | Encoding::UnixMillis => Value::Int8(integer),
        Encoding::Timestamp => Value::Timestamp(
            integer
                .checked_mul(1000)
                .and_then(|us| us.checked_sub(POSTGRES_EPOCH_US))
                .ok_or_else(|| format!("{field} {integer} ms is out of range"))?,
        ),
    })
}

impl ToSql for Value {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        // The encoding was chosen from the parameter's type (`encoding`),
        // so the type is not checked again here.
        match self {
            Value::Bytes(b) | Value::Text(b) => out.put_slice(b),
            Value::Jsonb(b) => {
                out.put_u8(1);
                out.put_slice(b);
            }
            Value::Bool(v) => out.put_u8(u8::from(*v)),
            Value::Int2(v) => out.put_i16(*v),
            Value::Int4(v) => out.put_i32(*v),
            Value::Int8(v) | Value::Timestamp(v) => out.put_i64(*v),
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> RoutedMessage {
        RoutedMessage {
            seq: 7,
            uid: u64::MAX,
            topic: "t/1".into(),
            payload: Bytes::from_static(b"{\"a\":1}"),
            qos: 2,
            retain: true,
            client_id: "c".into(),
            timestamp_ms: 946_684_800_123,
        }
    }

    fn encode(field: Field, ty: Type) -> Result<Vec<u8>, String> {
        let encoding = encoding(field, &ty)?;
        let values = values(&message(), &[field], &[encoding])?;
        let mut out = BytesMut::new();
        values[0].to_sql(&ty, &mut out).unwrap();
        Ok(out.to_vec())
    }

    #[test]
    fn each_field_is_encoded_for_each_accepted_type() {
        assert_eq!(encode(Field::Topic, Type::VARCHAR).unwrap(), b"t/1");
        assert_eq!(encode(Field::Payload, Type::BYTEA).unwrap(), b"{\"a\":1}");
        assert_eq!(encode(Field::Payload, Type::JSON).unwrap(), b"{\"a\":1}");
        assert_eq!(
            encode(Field::Payload, Type::JSONB).unwrap(),
            b"\x01{\"a\":1}"
        );
        assert_eq!(encode(Field::Qos, Type::INT2).unwrap(), [0, 2]);
        assert_eq!(encode(Field::Qos, Type::INT4).unwrap(), [0, 0, 0, 2]);
        assert_eq!(
            encode(Field::Qos, Type::INT8).unwrap(),
            [0, 0, 0, 0, 0, 0, 0, 2]
        );
        assert_eq!(encode(Field::Retain, Type::BOOL).unwrap(), [1]);
        assert_eq!(encode(Field::Seq, Type::INT8).unwrap(), 7i64.to_be_bytes());
        assert_eq!(
            encode(Field::Uid, Type::INT8).unwrap(),
            (-1i64).to_be_bytes()
        );
        // 2000-01-01T00:00:00.123Z is 123 ms after PostgreSQL's epoch.
        assert_eq!(
            encode(Field::Timestamp, Type::TIMESTAMPTZ).unwrap(),
            123_000i64.to_be_bytes()
        );
        assert_eq!(
            encode(Field::Timestamp, Type::INT8).unwrap(),
            946_684_800_123i64.to_be_bytes()
        );
    }

    #[test]
    fn a_type_a_field_cannot_go_into_is_named_in_the_error() {
        let err = encode(Field::Qos, Type::NUMERIC).unwrap_err();
        assert!(err.contains("`numeric` for $QOS"), "{err}");
        assert!(err.contains("smallint, integer, bigint"), "{err}");
        assert!(encode(Field::Timestamp, Type::INT4).is_err());
        assert!(encode(Field::Retain, Type::TEXT).is_err());
        assert!(encode(Field::Topic, Type::BYTEA).is_err());
    }

    #[test]
    fn a_payload_that_is_not_utf8_is_refused_as_text() {
        let mut m = message();
        m.payload = Bytes::from_static(b"\xff\xfe");
        let err = values(&m, &[Field::Payload], &[Encoding::Text]).unwrap_err();
        assert!(
            err.contains("$PAYLOAD is bound as text but is not UTF-8"),
            "{err}"
        );
        assert!(values(&m, &[Field::Payload], &[Encoding::Bytes]).is_ok());
    }
}
