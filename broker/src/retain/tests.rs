use std::collections::BTreeMap;

use proptest::prelude::*;

use super::RetainedIndex;
use crate::codec::topic;

/// The (topic, value) pairs `matches` visits, sorted.
fn matched<V: Clone + Ord>(index: &RetainedIndex<V>, filter: &str) -> Vec<(String, V)> {
    let mut out = Vec::new();
    index.matches(filter, |t, v| out.push((t.to_owned(), v.clone())));
    out.sort();
    out
}

const TOPICS: &[&str] = &[
    "sport",
    "sport/",
    "sport/tennis/player1",
    "sport/tennis/player1/ranking",
    "sport/tennis/player1/score/wimbledon",
    "/finance",
    "/",
    "a//b",
    "a/b",
    "$SYS",
    "$SYS/uptime",
    "$SYS/monitor/Clients",
    "a/$x/b",
];

#[test]
fn matching_follows_section_4_7_and_the_dollar_rule_mqtt_4_7_2_1() {
    let mut index = RetainedIndex::new();
    for (i, t) in TOPICS.iter().enumerate() {
        index.insert(t, i);
    }
    let filters = [
        "#",
        "+",
        "+/+",
        "/+",
        "/#",
        "sport/#",
        "sport/+",
        "sport/tennis/+",
        "sport/tennis/player1/#",
        "+/tennis/#",
        "$SYS/#",
        "$SYS/+",
        "+/monitor/Clients",
        "$SYS/monitor/+",
        "a//b",
        "a/+/b",
        "a/#",
        "a/$x/#",
        "nothing/#",
        "sport/tennis",
        "+/+/+/+/+",
    ];
    for filter in filters {
        let expected: Vec<(String, usize)> = TOPICS
            .iter()
            .enumerate()
            .filter(|(_, t)| topic::matches(filter, t))
            .map(|(i, t)| (t.to_string(), i))
            .collect();
        let mut expected = expected;
        expected.sort();
        assert_eq!(matched(&index, filter), expected, "{filter}");
    }
    // A few spelled out.
    let topics = |f| {
        matched(&index, f)
            .into_iter()
            .map(|(t, _)| t)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        topics("sport/#"),
        [
            "sport",
            "sport/",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ]
    );
    assert_eq!(topics("sport/+"), ["sport/"]);
    assert_eq!(topics("+"), ["sport"]);
    assert_eq!(topics("+/+"), ["/", "/finance", "a/b", "sport/"]);
    assert_eq!(
        topics("$SYS/#"),
        ["$SYS", "$SYS/monitor/Clients", "$SYS/uptime"]
    );
    assert!(topics("#").iter().all(|t| !t.starts_with('$')));
}

#[test]
fn insert_replaces_and_returns_the_previous_value() {
    let mut index = RetainedIndex::new();
    assert_eq!(index.insert("a/b", 1), None);
    assert_eq!(index.insert("a/b", 2), Some(1));
    assert_eq!(index.insert("a", 3), None);
    assert_eq!(index.len(), 2);
    assert_eq!(index.get("a/b"), Some(&2));
    assert_eq!(index.get("a"), Some(&3));
    assert_eq!(index.get("a/"), None);
    assert_eq!(index.get("a/b/c"), None);
}

#[test]
fn remove_returns_the_value_and_prunes_every_node() {
    let mut index = RetainedIndex::new();
    for (i, t) in TOPICS.iter().enumerate() {
        index.insert(t, i);
    }
    assert_eq!(index.remove("sport/tennis"), None, "a node without a value");
    assert_eq!(index.remove("nothing"), None);
    assert_eq!(index.remove("sport/tennis/player1"), Some(2));
    assert_eq!(index.remove("sport/tennis/player1"), None);
    assert_eq!(
        index.get("sport/tennis/player1/ranking"),
        Some(&3),
        "children stay"
    );
    for (i, t) in TOPICS.iter().enumerate().skip(3) {
        assert_eq!(index.remove(t), Some(i), "{t}");
    }
    assert_eq!(index.node_count(), 2, "sport and sport/ remain");
    index.remove("sport/");
    index.remove("sport");
    assert_eq!((index.len(), index.node_count()), (0, 0));
    assert!(index.is_empty());
}

#[test]
fn wide_levels_survive_growth_and_shrinking() {
    let mut index = RetainedIndex::new();
    for i in 0..100 {
        index.insert(&format!("d/{i}/t"), i);
    }
    assert_eq!(matched(&index, "d/+/t").len(), 100);
    assert_eq!(matched(&index, "d/42/#"), [("d/42/t".to_owned(), 42)]);
    for i in 0..97 {
        assert_eq!(index.remove(&format!("d/{i}/t")), Some(i));
    }
    assert_eq!(matched(&index, "#").len(), 3);
    assert_eq!(index.get("d/98/t"), Some(&98));
}

#[test]
fn deep_topics_do_not_recurse_cve_2019_11779() {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let deep = vec!["x"; 30_000].join("/");
            let mut index = RetainedIndex::new();
            index.insert(&deep, 1);
            index.insert(&format!("{deep}/y"), 2);
            assert_eq!(matched(&index, "#").len(), 2);
            assert_eq!(
                matched(&index, &format!("{deep}/+")),
                [(format!("{deep}/y"), 2)]
            );
            assert_eq!(index.remove(&deep), Some(1));
            // Dropped with a deep branch left.
            drop(index);
        })
        .expect("spawn")
        .join()
        .expect("no stack overflow");
}

fn topic_name() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&["a", "b", "$x", ""][..]), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("valid topic name", |t| {
            topic::validate_topic_name(t).is_ok()
        })
}

fn filter() -> impl Strategy<Value = String> {
    let levels = (
        prop::collection::vec(prop::sample::select(&["a", "b", "$x", "", "+"][..]), 1..5),
        any::<bool>(),
    )
        .prop_map(|(levels, hash)| levels.join("/") + if hash { "/#" } else { "" });
    prop_oneof![9 => levels, 1 => Just("#".to_owned())]
        .prop_filter("valid filter", |f| topic::validate_topic_filter(f).is_ok())
}

proptest! {
    #[test]
    fn index_agrees_with_brute_force_over_topic_matches(
        ops in prop::collection::vec((topic_name(), any::<bool>()), 0..60),
        filters in prop::collection::vec(filter(), 1..20),
    ) {
        let mut index = RetainedIndex::new();
        let mut model = BTreeMap::new();
        for (n, (t, insert)) in ops.iter().enumerate() {
            if *insert {
                prop_assert_eq!(index.insert(t, n), model.insert(t.clone(), n));
            } else {
                prop_assert_eq!(index.remove(t), model.remove(t));
            }
            prop_assert_eq!(index.len(), model.len());
        }
        for (t, v) in &model {
            prop_assert_eq!(index.get(t), Some(v));
        }
        for f in &filters {
            let expected: Vec<(String, usize)> = model
                .iter()
                .filter(|(t, _)| topic::matches(f, t))
                .map(|(t, v)| (t.clone(), *v))
                .collect();
            prop_assert_eq!(matched(&index, f), expected, "filter {}", f);
        }
        for t in model.keys() {
            index.remove(t);
        }
        prop_assert_eq!((index.len(), index.node_count()), (0, 0));
    }
}

#[test]
fn all_visits_every_topic_dollar_topics_and_empty_levels_included() {
    let mut index = RetainedIndex::new();
    for (i, t) in TOPICS.iter().enumerate() {
        index.insert(t, i);
    }
    let mut seen = Vec::new();
    index.all(|t, v| seen.push((t.to_owned(), *v)));
    seen.sort();
    let mut expected: Vec<(String, usize)> = TOPICS
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_owned(), i))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
}
