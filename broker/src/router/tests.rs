use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::SubscriptionTable;
use crate::codec::topic;
use crate::codec::topic::MATCH_CASES;

/// The (key, value) pairs `matches` visits, sorted.
fn matched<V: Clone + Ord>(table: &SubscriptionTable<u32, V>, topic: &str) -> Vec<(u32, V)> {
    let mut out = Vec::new();
    table.matches(topic, |k, v| out.push((*k, v.clone())));
    out.sort();
    out
}

/// The (group, key) pairs `match_shared` visits, sorted, all members available.
fn matched_shared(table: &SubscriptionTable<u32, &str>, topic: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    table.match_shared(topic, |_, _| true, |g, k, _| out.push((g.to_owned(), *k)));
    out.sort();
    out
}

#[test]
fn matching_follows_section_4_7_and_the_dollar_rule_mqtt_4_7_2_1() {
    for &(filter, topic_name, expected) in MATCH_CASES {
        assert_eq!(
            topic::matches(filter, topic_name),
            expected,
            "reference: {filter} vs {topic_name}"
        );
        let mut table = SubscriptionTable::new();
        table.subscribe(filter, 1u32, ());
        let hits = matched(&table, topic_name).len();
        assert_eq!(hits, usize::from(expected), "{filter} vs {topic_name}");
        // The same rules hold for a shared subscription to the filter.
        let mut table = SubscriptionTable::new();
        table.subscribe(&format!("$share/g/{filter}"), 1u32, "v");
        let hits = matched_shared(&table, topic_name).len();
        assert_eq!(
            hits,
            usize::from(expected),
            "$share/g/{filter} vs {topic_name}"
        );
    }
}

#[test]
fn all_cases_in_one_table_match_like_the_reference() {
    let mut table = SubscriptionTable::new();
    for (i, &(filter, _, _)) in MATCH_CASES.iter().enumerate() {
        table.subscribe(filter, i as u32, filter);
    }
    for &(_, topic_name, _) in MATCH_CASES {
        let mut expected: Vec<(u32, &str)> = Vec::new();
        for (i, &(filter, _, _)) in MATCH_CASES.iter().enumerate() {
            if topic::matches(filter, topic_name) {
                expected.push((i as u32, filter));
            }
        }
        expected.sort();
        assert_eq!(matched(&table, topic_name), expected, "{topic_name}");
    }
}

#[test]
fn table_can_be_shared_between_threads() {
    fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<SubscriptionTable<u64, String>>();
    shared_across_threads::<crate::retain::RetainedIndex<String>>();
}

#[test]
fn overlapping_filters_visit_a_key_once_per_filter() {
    let mut table = SubscriptionTable::new();
    for filter in ["a/+", "a/#", "a/b", "#", "+/+", "b/#"] {
        table.subscribe(filter, 7u32, filter);
    }
    let visited = matched(&table, "a/b");
    let filters: Vec<&str> = visited.iter().map(|(_, f)| *f).collect();
    assert_eq!(filters, ["#", "+/+", "a/#", "a/+", "a/b"]);
    assert!(visited.iter().all(|(k, _)| *k == 7));
}

#[test]
fn two_keys_on_one_filter_are_two_entries() {
    let mut table = SubscriptionTable::new();
    assert_eq!(table.subscribe("a/b", 1u32, 10), None);
    assert_eq!(table.subscribe("a/b", 2u32, 20), None);
    assert_eq!(table.len(), 2);
    assert_eq!(matched(&table, "a/b"), [(1, 10), (2, 20)]);
    assert_eq!(table.unsubscribe("a/b", &1), Some(10));
    assert_eq!(matched(&table, "a/b"), [(2, 20)]);
}

#[test]
fn subscribing_again_replaces_and_returns_the_previous_value() {
    let mut table = SubscriptionTable::new();
    assert_eq!(table.subscribe("a/+", 1u32, "qos0"), None);
    assert_eq!(table.subscribe("a/+", 1u32, "qos1"), Some("qos0"));
    assert_eq!(table.subscribe("$share/g/a/+", 1u32, "s0"), None);
    assert_eq!(table.subscribe("$share/g/a/+", 1u32, "s1"), Some("s0"));
    assert_eq!(table.len(), 2);
    assert_eq!(matched(&table, "a/x"), [(1, "qos1")]);
    assert_eq!(matched_shared(&table, "a/x"), [("g".to_owned(), 1)]);
}

#[test]
fn unsubscribe_returns_the_value_and_prunes_every_node() {
    let mut table = SubscriptionTable::new();
    let filters = [
        "a/b/c",
        "a/b",
        "a/+/c",
        "a/#",
        "#",
        "+",
        "/",
        "a//b",
        "$share/g/a/b",
        "$share/h/#",
    ];
    for (i, f) in filters.iter().enumerate() {
        table.subscribe(f, 1u32, i);
        table.subscribe(f, 2u32, i);
    }
    assert!(table.node_count() > 0);
    assert_eq!(table.unsubscribe("a/b/c", &3), None, "unknown key");
    assert_eq!(table.unsubscribe("x/y", &1), None, "unknown filter");
    assert_eq!(
        table.unsubscribe("$share/other/a/b", &1),
        None,
        "unknown group"
    );
    for (i, f) in filters.iter().enumerate().rev() {
        assert_eq!(table.unsubscribe(f, &1), Some(i));
        assert_eq!(table.unsubscribe(f, &1), None);
    }
    assert_eq!(
        matched(&table, "a/b").len(),
        3,
        "key 2 still has a/b, a/#, #"
    );
    for f in filters {
        table.unsubscribe(f, &2);
    }
    assert_eq!((table.len(), table.node_count()), (0, 0));
    assert!(table.is_empty());
}

#[test]
fn pruning_keeps_the_nodes_other_filters_need() {
    let mut table = SubscriptionTable::new();
    table.subscribe("a/b/c/d", 1u32, ());
    table.subscribe("a/b", 1u32, ());
    table.subscribe("a/+/c", 1u32, ());
    assert_eq!(table.node_count(), 6);
    table.unsubscribe("a/b/c/d", &1);
    assert_eq!(table.node_count(), 4, "a, a/b, a/+, a/+/c");
    assert_eq!(matched(&table, "a/b").len(), 1);
    assert_eq!(matched(&table, "a/b/c").len(), 1);
    table.unsubscribe("a/b", &1);
    assert_eq!(table.node_count(), 3);
    table.unsubscribe("a/+/c", &1);
    assert_eq!(table.node_count(), 0);
}

#[test]
fn many_children_and_many_subscribers_survive_growth_and_shrinking() {
    // Crosses the thresholds of children (vector to map and back) and of
    // subscriber sets (key index on and off).
    let mut table = SubscriptionTable::new();
    for i in 0..100u32 {
        table.subscribe(&format!("a/{i}"), i, i);
        table.subscribe("a/+", i, i + 1000);
    }
    for i in 0..100u32 {
        assert_eq!(matched(&table, &format!("a/{i}")).len(), 101);
    }
    for i in (0..100u32).step_by(3) {
        assert_eq!(table.unsubscribe(&format!("a/{i}"), &i), Some(i));
        assert_eq!(table.unsubscribe("a/+", &i), Some(i + 1000));
    }
    for i in 0..100u32 {
        let removed = i % 3 == 0;
        let hits = matched(&table, &format!("a/{i}"));
        assert_eq!(hits.len(), 66 + usize::from(!removed), "a/{i}");
        assert_eq!(hits.contains(&(i, i)), !removed);
    }
    for i in 0..100u32 {
        table.unsubscribe(&format!("a/{i}"), &i);
        table.unsubscribe("a/+", &i);
    }
    assert_eq!((table.len(), table.node_count()), (0, 0));
}

#[test]
fn shared_group_delivers_round_robin_to_one_member_per_message() {
    let mut table = SubscriptionTable::new();
    for key in [1u32, 2, 3] {
        table.subscribe("$share/g/s/+", key, "g");
    }
    table.subscribe("s/+", 9, "plain");
    let mut counts: HashMap<u32, usize> = HashMap::new();
    let mut picks = Vec::new();
    for _ in 0..300 {
        let mut visits = 0;
        table.match_shared(
            "s/x",
            |_, _| true,
            |group, key, _| {
                assert_eq!(group, "g");
                *counts.entry(*key).or_default() += 1;
                picks.push(*key);
                visits += 1;
            },
        );
        assert_eq!(visits, 1, "one member per message");
    }
    assert_eq!(counts, HashMap::from([(1, 100), (2, 100), (3, 100)]));
    assert_eq!(&picks[..6], [1, 2, 3, 1, 2, 3], "in order of subscription");
    assert_eq!(
        matched(&table, "s/x"),
        [(9, "plain")],
        "matches skips shared subscriptions"
    );
}

#[test]
fn shared_group_skips_unavailable_members_and_stays_fair() {
    let mut table = SubscriptionTable::new();
    for key in 1u32..=5 {
        table.subscribe("$share/g/s/#", key, ());
    }
    let offline = [2u32, 3];
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for _ in 0..300 {
        table.match_shared(
            "s/x",
            |k, _| !offline.contains(k),
            |_, key, _| {
                *counts.entry(*key).or_default() += 1;
            },
        );
    }
    assert_eq!(counts, BTreeMap::from([(1, 100), (4, 100), (5, 100)]));
}

#[test]
fn shared_group_with_no_available_member_falls_back_to_round_robin() {
    let mut table = SubscriptionTable::new();
    for key in 1u32..=3 {
        table.subscribe("$share/g/s", key, ());
    }
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for _ in 0..30 {
        table.match_shared(
            "s",
            |_, _| false,
            |_, key, _| *counts.entry(*key).or_default() += 1,
        );
    }
    assert_eq!(counts, BTreeMap::from([(1, 10), (2, 10), (3, 10)]));
}

#[test]
fn shared_groups_are_independent_and_counted_per_matching_filter() {
    let mut table = SubscriptionTable::new();
    table.subscribe("$share/g/a/+", 1u32, "v");
    table.subscribe("$share/g/a/#", 1u32, "v");
    table.subscribe("$share/h/a/+", 2u32, "v");
    table.subscribe("$share/h/a/+", 3u32, "v");
    let shared = matched_shared(&table, "a/b");
    assert_eq!(shared.len(), 3, "g twice (two filters), h once: {shared:?}");
    assert_eq!(shared.iter().filter(|(g, _)| g == "g").count(), 2);
    assert_eq!(matched_shared(&table, "a").len(), 1, "only g's a/#");
    assert_eq!(matched(&table, "a/b"), [], "no plain subscription");
    assert_eq!(table.unsubscribe("$share/h/a/+", &2), Some("v"));
    assert_eq!(
        matched_shared(&table, "a/b")
            .iter()
            .filter(|(g, _)| g == "h")
            .count(),
        1
    );
}

#[test]
fn shared_picks_under_a_read_lock_are_fair_across_threads() {
    let mut table = SubscriptionTable::new();
    for key in 0u32..4 {
        table.subscribe("$share/g/t", key, ());
    }
    let table = parking_lot::RwLock::new(table);
    let counts: Vec<[usize; 4]> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut counts = [0; 4];
                    for _ in 0..1000 {
                        table.read().match_shared(
                            "t",
                            |_, _| true,
                            |_, k, _| counts[*k as usize] += 1,
                        );
                    }
                    counts
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect()
    });
    let total: Vec<usize> = (0..4).map(|k| counts[0][k] + counts[1][k]).collect();
    // Every pick claims its own start with `fetch_add`: exactly fair.
    assert_eq!(total, [500; 4]);
}

#[test]
fn deep_topics_and_filters_do_not_recurse_cve_2019_11779() {
    // 30,000 levels on a 256 KiB stack: any recursion per level overflows it.
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            let levels = 30_000;
            let topic_name = vec!["x"; levels].join("/");
            let plus = vec!["+"; levels].join("/");
            let mut table = SubscriptionTable::new();
            table.subscribe(&topic_name, 1u32, ());
            table.subscribe(&plus, 2u32, ());
            table.subscribe(&format!("{plus}/#"), 3u32, ());
            assert_eq!(matched(&table, &topic_name).len(), 3);
            assert_eq!(table.unsubscribe(&plus, &2), Some(()));
            assert_eq!(matched(&table, &topic_name).len(), 2);
            // Dropped with two deep branches left.
            drop(table);
        })
        .expect("spawn")
        .join()
        .expect("no stack overflow");
}

/// An operation of the model test.
#[derive(Debug, Clone)]
enum Op {
    Subscribe(String, u32),
    Unsubscribe(String, u32),
}

fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(&["a", "b", "$x", "", "+"][..])
}

fn filter() -> impl Strategy<Value = String> {
    let levels = (
        prop::collection::vec(level(), 1..4),
        any::<bool>(),
        prop::option::weighted(0.25, prop::sample::select(&["g", "h"][..])),
    )
        .prop_map(|(levels, hash, group)| {
            let mut f = levels.join("/");
            if hash {
                f.push_str("/#");
            }
            match group {
                Some(g) => format!("$share/{g}/{f}"),
                None => f,
            }
        });
    // `#` alone, which the levels above never produce.
    prop_oneof![9 => levels, 1 => Just("#".to_owned())]
        .prop_filter("valid filter", |f| topic::validate_topic_filter(f).is_ok())
}

fn topic_name() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(&["a", "b", "$x", ""][..]), 1..5)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("valid topic name", |t| {
            topic::validate_topic_name(t).is_ok()
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (filter(), 0u32..3).prop_map(|(f, k)| Op::Subscribe(f, k)),
        2 => (filter(), 0u32..3).prop_map(|(f, k)| Op::Unsubscribe(f, k)),
    ]
}

proptest! {
    #[test]
    fn table_agrees_with_brute_force_over_topic_matches(
        ops in prop::collection::vec(op(), 0..60),
        topics in prop::collection::vec(topic_name(), 1..20),
    ) {
        let mut table = SubscriptionTable::new();
        // (filter as subscribed, key) -> value; values are unique per op.
        let mut model: BTreeMap<(String, u32), u32> = BTreeMap::new();
        for (n, op) in ops.iter().enumerate() {
            match op {
                Op::Subscribe(f, k) => {
                    prop_assert_eq!(table.subscribe(f, *k, n as u32), model.insert((f.clone(), *k), n as u32));
                }
                Op::Unsubscribe(f, k) => {
                    prop_assert_eq!(table.unsubscribe(f, k), model.remove(&(f.clone(), *k)));
                }
            }
            prop_assert_eq!(table.len(), model.len());
        }
        for t in &topics {
            let mut expected: Vec<(u32, u32)> = model
                .iter()
                .filter(|((f, _), _)| !f.starts_with("$share/") && topic::matches(f, t))
                .map(|((_, k), v)| (*k, *v))
                .collect();
            expected.sort();
            prop_assert_eq!(matched(&table, t), expected, "topic {}", t);

            // Shared: one visit per matching (group, filter), picking a member of it.
            let mut groups: BTreeMap<(String, String), Vec<(u32, u32)>> = BTreeMap::new();
            for ((f, k), v) in &model {
                if let Some((g, inner)) = topic::split_shared(f).expect("valid") {
                    if topic::matches(inner, t) {
                        groups.entry((g.to_owned(), inner.to_owned())).or_default().push((*k, *v));
                    }
                }
            }
            let mut visited: BTreeMap<(String, String), usize> = BTreeMap::new();
            let mut ok = true;
            table.match_shared(t, |k, _| *k != 0, |g, k, v| {
                // Values are unique: find the subscription they came from.
                let entry = groups.iter().find(|(_, members)| members.contains(&(*k, *v)));
                match entry {
                    Some(((group, inner), members)) => {
                        ok &= group == g;
                        // Key 0 is unavailable: picked only when nobody else is there.
                        ok &= *k != 0 || members.iter().all(|(m, _)| *m == 0);
                        *visited.entry((group.clone(), inner.clone())).or_default() += 1;
                    }
                    None => ok = false,
                }
            });
            prop_assert!(ok, "a shared pick outside its group, or an unavailable one");
            let expected: BTreeMap<(String, String), usize> = groups.keys().map(|g| (g.clone(), 1)).collect();
            prop_assert_eq!(visited, expected, "topic {}", t);
        }
        for (f, k) in model.keys() {
            table.unsubscribe(f, k);
        }
        prop_assert_eq!((table.len(), table.node_count()), (0, 0));
    }
}

/// The broker's trie node, for a filter of its own with one subscriber (a
/// device's topic, one per connection of an idle hub): the subscriber sits
/// in the node, which takes no allocation beyond its own 80 B.
#[test]
fn a_node_with_one_subscriber_holds_it_in_place_in_80_bytes() {
    use super::subscribers::Subscribers;
    use super::trie::Node;
    use crate::handle::{Subscriber, SubscriptionEntry};
    type Plain = Subscribers<Subscriber, SubscriptionEntry>;
    assert!(
        std::mem::size_of::<Node<Plain>>() <= 80,
        "{}",
        std::mem::size_of::<Node<Plain>>()
    );
    let mut table = SubscriptionTable::<u64, u32>::new();
    table.subscribe("d/1", 7, 1);
    let mut seen = Vec::new();
    table.matches("d/1", |k, v| seen.push((*k, *v)));
    assert_eq!(seen, [(7, 1)]);
}

/// Subscribers move between in place, a vector and an indexed vector and
/// back, in the order the module documents (an unsubscribe moves the last
/// member into the leaver's place).
#[test]
fn subscribers_keep_their_order_across_one_many_and_indexed() {
    let mut table = SubscriptionTable::<u64, u64>::new();
    let keys: Vec<u64> = (0..40).collect();
    for &k in &keys {
        assert_eq!(table.subscribe("a/b", k, k * 10), None);
        let mut seen = Vec::new();
        table.matches("a/b", |k, _| seen.push(*k));
        assert_eq!(seen, keys[..=k as usize]);
    }
    assert_eq!(table.subscribe("a/b", 3, 31), Some(30), "replaced");
    let mut left: Vec<u64> = keys.clone();
    for &k in keys.iter().rev().skip(1).step_by(3).chain(&[0, 39]) {
        if let Some(i) = left.iter().position(|x| *x == k) {
            assert!(table.unsubscribe("a/b", &k).is_some(), "{k}");
            left.swap_remove(i);
        }
        let mut seen = Vec::new();
        table.matches("a/b", |k, _| seen.push(*k));
        assert_eq!(seen, left);
    }
    for k in left.clone() {
        assert!(table.unsubscribe("a/b", &k).is_some());
    }
    assert!(table.unsubscribe("a/b", &1).is_none());
    assert_eq!(table.node_count(), 0, "the emptied path is pruned");
}
