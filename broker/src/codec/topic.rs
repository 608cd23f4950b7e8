//! A note on topic names and topic filters (3.1.1 section 4.7; 5.0 section 4.7).
//!
//! A topic name is what a PUBLISH is sent to; a topic filter is what a
//! SUBSCRIBE asks for. Both are UTF-8, 1 to 65,535 bytes, split into levels by
//! `/`, and must not contain U+0000 [MQTT-4.7.3-1] [MQTT-4.7.3-2].
//!
//! - `+` matches exactly one level and must occupy a whole level
//!   [MQTT-4.7.1-3]; `#` matches the parent level and any number of child
//!   levels, must occupy a whole level and be the last one [MQTT-4.7.1-2]
//!   (5.0: [MQTT-4.7.1-1], [MQTT-4.7.1-2]).
//! - Topic names must not contain `+` or `#` [MQTT-3.3.2-2].
//! - A filter starting with a wildcard does not match a topic starting with `$`
//!   [MQTT-4.7.2-1]: `#` does not match `$SYS/uptime`, `$SYS/#` does.
//! - Empty levels are levels: `a//b` has three, `/a` has two.
//! - `$share/{group}/{filter}` is a shared subscription (5.0 section 4.8.2):
//!   the group is non-empty without `/`, `+` or `#`, and the filter is valid.
//!
//! Valid filters: `sport/tennis/#`, `sport/+/player1`, `+`, `#`, `/+`, `+/+`.
//! Invalid filters: `sport/tennis#`, `sport/#/ranking`, `sport+`, ``.
//! Valid but non-matching: `sport/+` does not match `sport` (but does match
//! `sport/`); `+/monitor/Clients` does not match `$SYS/monitor/Clients`.

/// Why a topic name or filter is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Zero length [MQTT-4.7.3-1].
    #[error("must be at least one character long")]
    Empty,
    /// Over 65,535 bytes.
    #[error("is {0} bytes long, over 65,535")]
    TooLong(usize),
    /// Contains U+0000 [MQTT-4.7.3-2].
    #[error("contains the null character U+0000")]
    NullCharacter,
    /// A topic name with `+` or `#` [MQTT-3.3.2-2].
    #[error("topic name `{0}` must not contain the wildcards `+` or `#`")]
    WildcardInName(String),
    /// `#` not alone in the last level [MQTT-4.7.1-2].
    #[error("topic filter `{0}`: `#` must be the last level and alone in it")]
    MisplacedMultiLevelWildcard(String),
    /// `+` sharing its level with other characters [MQTT-4.7.1-3].
    #[error("topic filter `{0}`: `+` must occupy a whole level")]
    MisplacedSingleLevelWildcard(String),
    /// `$share/` without a valid group or filter (5.0 section 4.8.2).
    #[error("shared subscription `{0}`: expected `$share/{{group}}/{{filter}}` with a group name free of `/`, `+` and `#`")]
    InvalidSharedSubscription(String),
}

/// Prefix of shared subscription filters.
pub const SHARED_PREFIX: &str = "$share/";

/// Checks a topic name of a PUBLISH or Will. Callers that allow an empty name
/// (5.0 PUBLISH with a topic alias) check for that before calling.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    // [MQTT-3.3.2-2] the topic name in a PUBLISH must not contain wildcards
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName(topic.to_owned()));
    }
    Ok(())
}

/// Checks a topic filter of a SUBSCRIBE or UNSUBSCRIBE, shared subscriptions
/// included.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    if filter.starts_with(SHARED_PREFIX) {
        return parse_shared(filter).map(|_| ());
    }
    validate_plain_filter(filter, filter)
}

/// Splits `$share/{group}/{filter}` into the group and the filter. Returns
/// `Ok(None)` for a filter that is not shared.
pub fn split_shared(filter: &str) -> Result<Option<(&str, &str)>, TopicError> {
    if filter.starts_with(SHARED_PREFIX) {
        parse_shared(filter).map(Some)
    } else {
        Ok(None)
    }
}

fn parse_shared(filter: &str) -> Result<(&str, &str), TopicError> {
    let rest = &filter[SHARED_PREFIX.len()..];
    let invalid = || TopicError::InvalidSharedSubscription(filter.to_owned());
    let (group, inner) = rest.split_once('/').ok_or_else(invalid)?;
    // 5.0 [MQTT-4.8.2-1] the ShareName must be at least one character and
    // [MQTT-4.8.2-2] must not include `/`, `+` or `#`
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Err(invalid());
    }
    validate_plain_filter(inner, filter)?;
    Ok((group, inner))
}

fn validate_plain_filter(filter: &str, whole: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            // [MQTT-4.7.1-2] `#` alone in the last level
            if level != "#" || levels.peek().is_some() {
                return Err(TopicError::MisplacedMultiLevelWildcard(whole.to_owned()));
            }
        }
        // [MQTT-4.7.1-3] `+` occupies a whole level
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard(whole.to_owned()));
        }
    }
    Ok(())
}

fn check_common(s: &str) -> Result<(), TopicError> {
    // [MQTT-4.7.3-1] at least one character
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > u16::MAX as usize {
        return Err(TopicError::TooLong(s.len()));
    }
    // [MQTT-4.7.3-2] no U+0000
    if s.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter);
    }
    Ok(())
}

/// True if the (valid, non-shared) `filter` matches the topic name `topic`.
/// A reference implementation: the router's trie must agree with it.
pub fn matches(filter: &str, topic: &str) -> bool {
    // [MQTT-4.7.2-1] wildcards at the first level do not match `$` topics
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for f in filter.split('/') {
        match f {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            level => {
                if topic_levels.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// Section 4.7 examples and the edge cases of the note above, `$` topics
/// included: the one table every matcher is tested with ([`matches`] here,
/// the router's trie in `router/tests.rs`).
#[cfg(test)]
pub(crate) const MATCH_CASES: &[(&str, &str, bool)] = &[
    ("sport/tennis/player1/#", "sport/tennis/player1", true),
    (
        "sport/tennis/player1/#",
        "sport/tennis/player1/ranking",
        true,
    ),
    (
        "sport/tennis/player1/#",
        "sport/tennis/player1/score/wimbledon",
        true,
    ),
    ("sport/#", "sport", true),
    ("#", "a/b/c", true),
    ("#", "/", true),
    ("sport/tennis/+", "sport/tennis/player1", true),
    ("sport/tennis/+", "sport/tennis/player1/ranking", false),
    ("sport/+", "sport", false),
    ("sport/+", "sport/", true),
    ("+/+", "/finance", true),
    ("/+", "/finance", true),
    ("+", "/finance", false),
    ("a/b", "a/b", true),
    ("a/b", "a/b/c", false),
    ("a/b/c", "a/b", false),
    ("#", "$SYS/uptime", false),
    ("+/monitor/Clients", "$SYS/monitor/Clients", false),
    ("$SYS/#", "$SYS/monitor/Clients", true),
    ("$SYS/#", "$SYS", true),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
    ("+", "$SYS", false),
    ("+/#", "$SYS/a", false),
    ("$SYS/+/+", "$SYS//", true),
    ("a/$x", "a/$x", true),
    ("a/+", "a/$x", true),
    ("a/#", "a/$x/b", true),
    ("a//b", "a//b", true),
    ("a/+/b", "a//b", true),
    ("a//b", "a/b", false),
    ("/a", "/a", true),
    ("/a", "a", false),
    ("/#", "/a/b", true),
    ("/#", "a", false),
    ("+/#", "/", true),
    ("a/#", "a/", true),
    ("a/+/#", "a", false),
    ("a/+/#", "a/b", true),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_filters_are_accepted() {
        for f in [
            "sport/tennis/#",
            "sport/+/player1",
            "+",
            "#",
            "/+",
            "+/+",
            "a//b",
            "/",
            "$SYS/#",
            "sport/+/#",
            "$share/g/a/+",
            "$share/g/#",
        ] {
            assert_eq!(validate_topic_filter(f), Ok(()), "{f}");
        }
    }

    #[test]
    fn multi_level_wildcard_must_be_last_and_alone_mqtt_4_7_1_2() {
        for f in ["sport/tennis#", "sport/#/ranking", "#/a", "a/#b", "##"] {
            assert!(
                matches!(
                    validate_topic_filter(f),
                    Err(TopicError::MisplacedMultiLevelWildcard(_))
                ),
                "{f}"
            );
        }
    }

    #[test]
    fn single_level_wildcard_must_occupy_its_level_mqtt_4_7_1_3() {
        for f in ["sport+", "+a", "a/b+/c", "++"] {
            assert!(
                matches!(
                    validate_topic_filter(f),
                    Err(TopicError::MisplacedSingleLevelWildcard(_))
                ),
                "{f}"
            );
        }
    }

    #[test]
    fn empty_and_null_are_rejected_mqtt_4_7_3_1_and_2() {
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NullCharacter));
        assert_eq!(
            validate_topic_filter("a/\0"),
            Err(TopicError::NullCharacter)
        );
        let long = "a".repeat(65_536);
        assert_eq!(validate_topic_name(&long), Err(TopicError::TooLong(65_536)));
    }

    #[test]
    fn topic_names_reject_wildcards_mqtt_3_3_2_2() {
        for t in ["a/+", "#", "a/#", "a+b"] {
            assert!(
                matches!(validate_topic_name(t), Err(TopicError::WildcardInName(_))),
                "{t}"
            );
        }
        assert_eq!(validate_topic_name("a/b/c"), Ok(()));
        assert_eq!(validate_topic_name("/"), Ok(()));
    }

    #[test]
    fn shared_subscriptions_split_into_group_and_filter() {
        assert_eq!(split_shared("$share/g1/a/+/c"), Ok(Some(("g1", "a/+/c"))));
        assert_eq!(split_shared("a/b"), Ok(None));
        for f in [
            "$share/",
            "$share//a",
            "$share/g",
            "$share/g/",
            "$share/g+/a",
            "$share/g#/a",
        ] {
            assert!(
                matches!(
                    split_shared(f),
                    Err(TopicError::InvalidSharedSubscription(_))
                ),
                "{f}"
            );
        }
        assert!(validate_topic_filter("$share/g/a#").is_err());
    }

    #[test]
    fn matching_follows_section_4_7() {
        for &(filter, topic, expected) in MATCH_CASES {
            assert_eq!(matches(filter, topic), expected, "{filter} vs {topic}");
        }
    }
}
