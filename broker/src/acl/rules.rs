//! A note on ACL rules: the file's syntax, and how a rule matches a topic
//! name or covers a topic filter.
//!
//! Syntax (Mosquitto's `acl_file`, plus `client` and `certificate`):
//!
//! ```text
//! # comment
//! topic [read|write|readwrite|deny] <filter>   # before any section: clients without a user name
//! user <user name>                             # the lines below apply to this user
//! client <client id>                           # ... to this client id
//! certificate <identity>                       # ... to this certificate identity:
//!                                              # `CN=gw-3`, `DNS:gw3.example`, or bare `gw-3`
//! topic [read|write|readwrite|deny] <filter>
//! pattern [read|write|readwrite|deny] <filter> # anywhere: every client; %c is the
//!                                              # client id, %u the user name
//! ```
//!
//! The access word is optional (`readwrite`). The filter is the rest of the
//! line and may use `+` and `#`.
//!
//! A certificate identity is the value the TLS listener takes from a verified
//! client certificate (its `identity` key: the subject Common Name, or the
//! first DNS, email or URI Subject Alternative Name). The section may name it
//! bare or with the field it comes from, as OpenSSL prints it: `CN=`, `DNS:`,
//! `email:`, `URI:` (also with `=`, any case). Valid: `certificate CN=gw-3`,
//! `certificate DNS:gw3.example`, `certificate gw-3` all match a certificate
//! whose identity is `gw-3` / `gw3.example`. The prefix is not checked against
//! the listener's `identity` setting: `CN=x` and a SAN `x` are one identity.
//!
//! Matching a topic name: the usual filter rules, and a rule starting with a
//! wildcard does not match a `$` topic. Valid: rule `a/+/c` matches `a/b/c`;
//! rule `a/#` matches `a` and `a/b/c`. Not matching: rule `#` and `$SYS/x`.
//!
//! Covering a subscription filter: every topic the filter can match is
//! matched by the rule. Valid: rule `a/#` covers `a/+/c` and `a/#`; rule
//! `a/+` covers `a/b`. Not covering: rule `a/b` and filter `a/+`; rule `a/+`
//! and filter `a/#`.
//!
//! Substitution (`pattern` only): `%c` and `%u` anywhere in a level stand for
//! the client id and the user name. A pattern naming `%u` never matches a
//! client without a user name, and a pattern naming a value that contains
//! `/`, `+` or `#` never matches (a client id `#` must not widen a rule).

use std::collections::HashMap;

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAccess {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl RuleAccess {
    pub fn grants(self, access: super::Access) -> bool {
        matches!(
            (self, access),
            (RuleAccess::ReadWrite, _)
                | (RuleAccess::Read, super::Access::Read)
                | (RuleAccess::Write, super::Access::Write)
        )
    }
}

/// A piece of a pattern level.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    ClientId,
    Username,
}

/// One level of a rule's filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Plus,
    Hash,
    /// A pattern level with `%c` / `%u`.
    Subst(Vec<Part>),
}

/// One `topic` or `pattern` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub access: RuleAccess,
    levels: Vec<Level>,
    /// The line in the file, for logs.
    pub line: usize,
}

/// The values a pattern substitutes.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
}

/// The whole file, by section.
#[derive(Debug, Default)]
pub struct Rules {
    pub anonymous: Vec<Rule>,
    pub users: HashMap<String, Vec<Rule>>,
    pub clients: HashMap<String, Vec<Rule>>,
    pub certificates: HashMap<String, Vec<Rule>>,
    pub patterns: Vec<Rule>,
}

impl Rules {
    /// Number of rules.
    pub fn len(&self) -> usize {
        self.anonymous.len()
            + self.patterns.len()
            + [&self.users, &self.clients, &self.certificates]
                .iter()
                .flat_map(|m| m.values())
                .map(Vec::len)
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

enum Section {
    Anonymous,
    User(String),
    Client(String),
    Certificate(String),
}

/// A line of an ACL file that is not a rule (lines count from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// `user`, `client` or `certificate` without its name.
    #[error("line {line}: `{keyword}` needs {what}")]
    NoName {
        line: usize,
        keyword: &'static str,
        what: &'static str,
    },
    /// `topic` or `pattern` without a filter.
    #[error("line {line}: `{keyword}` needs a topic filter")]
    NoFilter { line: usize, keyword: &'static str },
    /// `#` before the last level of a filter.
    #[error("line {line}: `{filter}`: `#` must be the last level")]
    HashNotLast { line: usize, filter: String },
    /// `+` or `#` inside a level (`a+/b`).
    #[error("line {line}: `{filter}`: a wildcard must be a whole level")]
    PartialWildcard { line: usize, filter: String },
    /// A line that starts with no keyword of the syntax.
    #[error("line {line}: unknown keyword `{keyword}`")]
    UnknownKeyword { line: usize, keyword: String },
}

/// Parses an ACL file; an error names the line.
pub fn parse(text: &str) -> Result<Rules, RuleError> {
    let mut rules = Rules::default();
    let mut section = Section::Anonymous;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, rest) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(k, r)| (k, r.trim()));
        let need = |keyword: &'static str, what: &'static str| -> Result<String, RuleError> {
            if rest.is_empty() {
                Err(RuleError::NoName {
                    line: n,
                    keyword,
                    what,
                })
            } else {
                Ok(rest.to_owned())
            }
        };
        match keyword {
            "user" => section = Section::User(need("user", "a user name")?),
            "client" => section = Section::Client(need("client", "a client id")?),
            "certificate" => {
                let named = need("certificate", "an identity")?;
                section = Section::Certificate(certificate_identity(&named))
            }
            "topic" | "pattern" => {
                let substitute = keyword == "pattern";
                let (access, filter) = split_access(rest);
                if filter.is_empty() {
                    return Err(RuleError::NoFilter {
                        line: n,
                        keyword: if substitute { "pattern" } else { "topic" },
                    });
                }
                let levels = parse_filter(filter, substitute, n)?;
                let rule = Rule {
                    access,
                    levels,
                    line: n,
                };
                if substitute {
                    rules.patterns.push(rule);
                } else {
                    match &section {
                        Section::Anonymous => rules.anonymous.push(rule),
                        Section::User(u) => rules.users.entry(u.clone()).or_default().push(rule),
                        Section::Client(c) => {
                            rules.clients.entry(c.clone()).or_default().push(rule)
                        }
                        Section::Certificate(c) => {
                            rules.certificates.entry(c.clone()).or_default().push(rule)
                        }
                    }
                }
            }
            other => {
                return Err(RuleError::UnknownKeyword {
                    line: n,
                    keyword: other.to_owned(),
                })
            }
        }
    }
    Ok(rules)
}

fn split_access(rest: &str) -> (RuleAccess, &str) {
    let (word, filter) = rest
        .split_once(char::is_whitespace)
        .map_or((rest, ""), |(w, f)| (w, f.trim()));
    let access = match word {
        "read" => RuleAccess::Read,
        "write" => RuleAccess::Write,
        "readwrite" => RuleAccess::ReadWrite,
        "deny" => RuleAccess::Deny,
        _ => return (RuleAccess::ReadWrite, rest),
    };
    (access, filter)
}

fn parse_filter(filter: &str, substitute: bool, line: usize) -> Result<Vec<Level>, RuleError> {
    let count = filter.split('/').count();
    let mut levels = Vec::with_capacity(count);
    for (i, level) in filter.split('/').enumerate() {
        levels.push(match level {
            "#" if i + 1 == count => Level::Hash,
            "#" => {
                return Err(RuleError::HashNotLast {
                    line,
                    filter: filter.to_owned(),
                })
            }
            "+" => Level::Plus,
            l if l.contains(['+', '#']) => {
                return Err(RuleError::PartialWildcard {
                    line,
                    filter: filter.to_owned(),
                })
            }
            l if substitute && (l.contains("%c") || l.contains("%u")) => {
                Level::Subst(parse_subst(l))
            }
            l => Level::Literal(l.to_owned()),
        });
    }
    Ok(levels)
}

fn parse_subst(level: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut chars = level.chars().peekable();
    while let Some(c) = chars.next() {
        let part = match (c, chars.peek()) {
            ('%', Some('c')) => Some(Part::ClientId),
            ('%', Some('u')) => Some(Part::Username),
            _ => None,
        };
        match part {
            Some(p) => {
                chars.next();
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(p);
            }
            None => text.push(c),
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    parts
}

/// The value a substituted level stands for, if it can match at all.
fn substituted(parts: &[Part], values: &Values<'_>) -> Option<String> {
    let mut out = String::new();
    for p in parts {
        let v = match p {
            Part::Text(t) => {
                out.push_str(t);
                continue;
            }
            Part::ClientId => values.client_id,
            Part::Username => values.username?,
        };
        if v.contains(['/', '+', '#']) {
            return None;
        }
        out.push_str(v);
    }
    Some(out)
}

/// A rule level, substituted: `None` if a substitution is impossible.
enum Resolved<'r> {
    Literal(std::borrow::Cow<'r, str>),
    Plus,
    Hash,
}

fn resolve<'r>(level: &'r Level, values: &Values<'_>) -> Option<Resolved<'r>> {
    Some(match level {
        Level::Literal(l) => Resolved::Literal(l.as_str().into()),
        Level::Plus => Resolved::Plus,
        Level::Hash => Resolved::Hash,
        Level::Subst(parts) => Resolved::Literal(substituted(parts, values)?.into()),
    })
}

impl Rule {
    fn starts_with_wildcard(&self) -> bool {
        matches!(self.levels.first(), Some(Level::Plus | Level::Hash))
    }

    /// True if this rule's filter matches the topic name `topic`.
    pub fn matches_topic(&self, topic: &str, values: &Values<'_>) -> bool {
        if topic.starts_with('$') && self.starts_with_wildcard() {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            let Some(rule) = resolve(level, values) else {
                return false;
            };
            match rule {
                Resolved::Hash => return true,
                Resolved::Plus => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                Resolved::Literal(l) => match topic_levels.next() {
                    Some(t) if t == l => {}
                    _ => return false,
                },
            }
        }
        topic_levels.next().is_none()
    }

    /// True if every topic `filter` can match is matched by this rule.
    pub fn covers_filter(&self, filter: &str, values: &Values<'_>) -> bool {
        if filter.starts_with('$') && self.starts_with_wildcard() {
            return false;
        }
        let mut filter_levels = filter.split('/');
        for level in &self.levels {
            let Some(rule) = resolve(level, values) else {
                return false;
            };
            match (rule, filter_levels.next()) {
                (Resolved::Hash, _) => return true,
                (_, None) => return false,
                (_, Some("#")) => return false,
                (Resolved::Plus, Some(_)) => {}
                (Resolved::Literal(l), Some(f)) => {
                    if f == "+" || f != l {
                        return false;
                    }
                }
            }
        }
        filter_levels.next().is_none()
    }
}

/// The identity a `certificate` section names, without the `CN=` / `DNS:` /
/// `email:` / `URI:` prefix that says which certificate field it comes from
/// (the README's example is `certificate CN=gateway-3`; the listener hands
/// the session the bare value).
fn certificate_identity(named: &str) -> String {
    for field in ["CN", "DNS", "email", "URI"] {
        let Some(head) = named.get(..field.len() + 1) else {
            continue;
        };
        let (name, separator) = head.split_at(field.len());
        if name.eq_ignore_ascii_case(field) && (separator == "=" || separator == ":") {
            let value = named[field.len() + 1..].trim();
            if !value.is_empty() {
                return value.to_owned();
            }
        }
    }
    named.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Values<'static> = Values {
        client_id: "dev1",
        username: Some("alice"),
    };

    fn rule(filter: &str) -> Rule {
        Rule {
            access: RuleAccess::ReadWrite,
            levels: parse_filter(filter, true, 1).unwrap(),
            line: 1,
        }
    }

    #[test]
    fn rule_matches_topics_like_a_subscription() {
        for (r, t, expected) in [
            ("a/+/c", "a/b/c", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/b", "a/b/c", false),
            ("a/+", "a", false),
            ("#", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("+/x", "/x", true),
            ("devices/%c/#", "devices/dev1/t", true),
            ("devices/%c/#", "devices/dev2/t", false),
            ("u/%u-%c", "u/alice-dev1", true),
        ] {
            assert_eq!(rule(r).matches_topic(t, &V), expected, "{r} vs {t}");
        }
    }

    #[test]
    fn rule_covers_only_filters_it_fully_contains() {
        for (r, f, expected) in [
            ("a/#", "a/+/c", true),
            ("a/#", "a/#", true),
            ("a/#", "a", true),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/b", "a/+", false),
            ("a/+", "a/#", false),
            ("#", "#", true),
            ("#", "$SYS/#", false),
            ("a/b", "a/b/c", false),
            ("devices/%c/#", "devices/dev1/#", true),
            ("devices/%c/#", "devices/+/#", false),
        ] {
            assert_eq!(rule(r).covers_filter(f, &V), expected, "{r} covers {f}");
        }
    }

    #[test]
    fn pattern_values_with_wildcards_or_separators_never_match() {
        let r = rule("devices/%c/#");
        for id in ["#", "+", "a/b"] {
            let v = Values {
                client_id: id,
                username: None,
            };
            assert!(!r.matches_topic(&format!("devices/{id}/t"), &v), "{id}");
        }
        let r = rule("users/%u");
        let anonymous = Values {
            client_id: "c",
            username: None,
        };
        assert!(!r.matches_topic("users/", &anonymous));
    }

    #[test]
    fn file_sections_and_access_words_are_read() {
        let rules = parse(
            "# comment\n\
             topic read public/#\n\
             user alice\n\
             topic a/b\n\
             topic deny a/secret\n\
             client sensor-1\n\
             topic write sensors/1\n\
             certificate CN=gw\n\
             topic read gw/#\n\
             pattern write devices/%c/out\n",
        )
        .unwrap();
        assert_eq!(rules.anonymous.len(), 1);
        assert_eq!(rules.anonymous[0].access, RuleAccess::Read);
        assert_eq!(rules.users["alice"].len(), 2);
        assert_eq!(rules.users["alice"][0].access, RuleAccess::ReadWrite);
        assert_eq!(rules.users["alice"][1].access, RuleAccess::Deny);
        assert_eq!(rules.clients["sensor-1"][0].access, RuleAccess::Write);
        assert_eq!(rules.certificates["gw"].len(), 1);
        assert_eq!(rules.patterns.len(), 1);
        assert_eq!(rules.len(), 6);
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, needle) in [
            ("topic read a/#/b", "line 1"),
            ("\nfoo bar", "line 2: unknown keyword `foo`"),
            ("user", "line 1: `user` needs a user name"),
            ("topic read", "needs a topic filter"),
            ("topic a+/b", "whole level"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn certificate_sections_name_the_identity_bare_or_with_its_field() {
        for (named, identity) in [
            ("CN=gateway-3", "gateway-3"),
            ("cn=gateway-3", "gateway-3"),
            ("DNS:gw3.example", "gw3.example"),
            ("dns=gw3.example", "gw3.example"),
            ("email:ops@example.com", "ops@example.com"),
            ("URI:spiffe://tern/gw", "spiffe://tern/gw"),
            ("gateway-3", "gateway-3"),
            // not a field prefix: kept whole
            ("CNx=gw", "CNx=gw"),
            ("O=Acme", "O=Acme"),
            ("CN=", "CN="),
        ] {
            let rules = parse(&format!("certificate {named}\ntopic read gw/#\n")).unwrap();
            assert_eq!(
                rules.certificates.keys().collect::<Vec<_>>(),
                [identity],
                "{named}"
            );
        }
    }
}
