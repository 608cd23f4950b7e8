//! A note on the query's placeholders: a route's `query` names the values
//! it uses (`$TOPIC`, `$PAYLOAD`, ...); they become PostgreSQL's positional
//! parameters (`$1`, `$2`, ...), one per distinct name, in order of first
//! appearance, and every value is bound to its parameter, never spliced
//! into the text.
//!
//! Only the statement's code is scanned: a `$` inside a string literal
//! (`'a $TOPIC'`, `E'\' $QOS'`), a quoted identifier (`"$X"`), a comment
//! (`-- $X`, `/* $X */`) or a dollar-quoted string (`$body$ ... $body$`)
//! is left as it is.
//!
//! - valid: `INSERT INTO t (topic, body) VALUES ($TOPIC, $PAYLOAD)` ->
//!   `... VALUES ($1, $2)`
//! - valid, a name used twice: `... VALUES ($TOPIC, upper($TOPIC))` ->
//!   `... VALUES ($1, upper($1))`
//! - invalid: `$TOPICS`, `$topic` (names are upper case and exact), `$1`
//!   (positional parameters are not the route's to number)
//! - valid but not a placeholder: `'$TOPIC'`, `$$ ... $TOPIC ... $$`

use std::fmt;

/// A value of the message a query can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Topic,
    Payload,
    Qos,
    Retain,
    ClientId,
    Timestamp,
    Seq,
    Uid,
}

impl Field {
    pub const ALL: [Field; 8] = [
        Field::Topic,
        Field::Payload,
        Field::Qos,
        Field::Retain,
        Field::ClientId,
        Field::Timestamp,
        Field::Seq,
        Field::Uid,
    ];

    /// The name written after `$` in a query.
    pub fn name(self) -> &'static str {
        match self {
            Field::Topic => "TOPIC",
            Field::Payload => "PAYLOAD",
            Field::Qos => "QOS",
            Field::Retain => "RETAIN",
            Field::ClientId => "CLIENT_ID",
            Field::Timestamp => "TIMESTAMP",
            Field::Seq => "SEQ",
            Field::Uid => "UID",
        }
    }

    fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.name())
    }
}

/// A route's query with its placeholders numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    /// The statement as sent to the server, with `$1..$n`.
    pub sql: String,
    /// The field bound to each parameter: `fields[0]` to `$1`, ...
    pub fields: Vec<Field>,
}

/// Numbers the placeholders of `query`; the error names the first unknown
/// or positional one and where it is.
pub fn translate(query: &str) -> Result<Translated, String> {
    let bytes = query.as_bytes();
    let mut sql = String::with_capacity(query.len());
    let mut fields: Vec<Field> = Vec::new();
    // Start of the text not copied to `sql` yet.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => {
                // E'..' strings take backslash escapes; a standard string's
                // quote is escaped by doubling it, which the loop handles
                // as two adjacent literals.
                let escapes = i > 0
                    && matches!(bytes[i - 1], b'E' | b'e')
                    && !ident_byte_before(bytes, i - 1);
                i = skip_quoted(bytes, i, b'\'', escapes);
            }
            b'"' => i = skip_quoted(bytes, i, b'"', false),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = memchr_from(bytes, i, b'\n').map_or(bytes.len(), |n| n + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => i = skip_block_comment(bytes, i),
            b'$' => {
                let name_end = i
                    + 1
                    + bytes[i + 1..]
                        .iter()
                        .take_while(|b| is_ident_byte(**b))
                        .count();
                let name = &query[i + 1..name_end];
                let starts_ident = name.as_bytes().first().is_some_and(|b| !b.is_ascii_digit());
                if bytes.get(name_end) == Some(&b'$') && (name.is_empty() || starts_ident) {
                    // `$$` or `$tag$`: a dollar-quoted string, to the same tag.
                    let tag = &query[i..=name_end];
                    i = match query[name_end + 1..].find(tag) {
                        Some(at) => name_end + 1 + at + tag.len(),
                        None => bytes.len(),
                    };
                } else if ident_byte_before(bytes, i) {
                    // `a$b`: PostgreSQL allows `$` inside identifiers.
                    i = name_end;
                } else if name.is_empty() {
                    i += 1;
                } else {
                    let Some(field) = Field::from_name(name) else {
                        return Err(unknown_placeholder(name, i));
                    };
                    let number = match fields.iter().position(|f| *f == field) {
                        Some(at) => at + 1,
                        None => {
                            fields.push(field);
                            fields.len()
                        }
                    };
                    sql.push_str(&query[copied..i]);
                    sql.push('$');
                    sql.push_str(&number.to_string());
                    copied = name_end;
                    i = name_end;
                }
            }
            _ => i += 1,
        }
    }
    sql.push_str(&query[copied..]);
    Ok(Translated { sql, fields })
}

fn unknown_placeholder(name: &str, at: usize) -> String {
    let known: Vec<String> = Field::ALL.iter().map(|f| f.to_string()).collect();
    if name.as_bytes()[0].is_ascii_digit() {
        format!(
            "query: positional parameter `${name}` at byte {at}: use the named placeholders ({})",
            known.join(", ")
        )
    } else {
        format!(
            "query: unknown placeholder `${name}` at byte {at} (known: {})",
            known.join(", ")
        )
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Whether the byte before `at` continues an identifier (or a number).
fn ident_byte_before(bytes: &[u8], at: usize) -> bool {
    at > 0 && (is_ident_byte(bytes[at - 1]) || bytes[at - 1] == b'$')
}

fn memchr_from(bytes: &[u8], from: usize, needle: u8) -> Option<usize> {
    bytes[from..]
        .iter()
        .position(|b| *b == needle)
        .map(|n| from + n)
}

/// The index after the quote closing the one at `open`; the end of the
/// text if it is never closed (the server reports that).
fn skip_quoted(bytes: &[u8], open: usize, quote: u8, backslash_escapes: bool) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        if backslash_escapes && bytes[i] == b'\\' {
            i += 2;
        } else if bytes[i] == quote {
            return i + 1;
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// The index after the `*/` closing the comment at `open`; PostgreSQL's
/// block comments nest.
fn skip_block_comment(bytes: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(query: &str) -> (String, Vec<Field>) {
        let t = translate(query).unwrap();
        (t.sql, t.fields)
    }

    #[test]
    fn placeholders_are_numbered_in_order_of_first_appearance() {
        assert_eq!(
            ok("INSERT INTO t (a, b, c) VALUES ($PAYLOAD, $TOPIC, $QOS)"),
            (
                "INSERT INTO t (a, b, c) VALUES ($1, $2, $3)".into(),
                vec![Field::Payload, Field::Topic, Field::Qos]
            )
        );
    }

    #[test]
    fn a_name_used_twice_is_one_parameter() {
        assert_eq!(
            ok("SELECT $TOPIC, upper($TOPIC), $UID,$TOPIC"),
            (
                "SELECT $1, upper($1), $2,$1".into(),
                vec![Field::Topic, Field::Uid]
            )
        );
    }

    #[test]
    fn every_field_is_known() {
        let query: Vec<String> = Field::ALL.iter().map(|f| f.to_string()).collect();
        let (sql, fields) = ok(&format!("SELECT {}", query.join(",")));
        assert_eq!(sql, "SELECT $1,$2,$3,$4,$5,$6,$7,$8");
        assert_eq!(fields, Field::ALL);
    }

    #[test]
    fn casts_and_adjacent_punctuation_end_a_name() {
        assert_eq!(
            ok("SELECT $PAYLOAD::jsonb->'a', ($QOS)+1"),
            (
                "SELECT $1::jsonb->'a', ($2)+1".into(),
                vec![Field::Payload, Field::Qos]
            )
        );
    }

    #[test]
    fn unknown_and_positional_placeholders_are_config_errors() {
        for (query, expected) in [
            ("SELECT $TOPICS", "unknown placeholder `$TOPICS` at byte 7"),
            ("SELECT $topic", "unknown placeholder `$topic`"),
            (
                "SELECT $TOPIC, $X_1",
                "unknown placeholder `$X_1` at byte 15",
            ),
            ("SELECT $1", "positional parameter `$1`"),
        ] {
            let err = translate(query).unwrap_err();
            assert!(err.contains(expected), "{query}: {err}");
            assert!(err.contains("$CLIENT_ID"), "{query}: {err}");
        }
    }

    #[test]
    fn dollars_in_literals_identifiers_and_comments_are_left_alone() {
        for query in [
            "SELECT '$TOPIC', 'it''s $NOPE'",
            "SELECT E'\\' $NOPE', \"$NOPE\"",
            "SELECT 1 -- $NOPE\n",
            "SELECT 1 /* $NOPE /* nested $NOPE */ $NOPE */",
            "SELECT $$ $NOPE $$, $tag$ $NOPE $$ $tag$",
            "SELECT a$NOPE FROM t",
            "SELECT $",
        ] {
            let (sql, fields) = ok(query);
            assert_eq!(sql, query);
            assert!(fields.is_empty(), "{query}");
        }
        assert_eq!(
            ok("SELECT '$X' || $TOPIC -- $X\n, $$ $X $$, $QOS"),
            (
                "SELECT '$X' || $1 -- $X\n, $$ $X $$, $2".into(),
                vec![Field::Topic, Field::Qos]
            )
        );
    }

    #[test]
    fn a_standard_string_ignores_backslashes() {
        // 'a\' is a complete literal when standard_conforming_strings is
        // on (the default since PostgreSQL 9.1).
        assert_eq!(ok("SELECT 'a\\', $TOPIC").0, "SELECT 'a\\', $1".to_string());
    }
}
