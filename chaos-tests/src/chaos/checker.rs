//! The checker: reads a run's [`History`](super::history) and decides, check by
//! check, whether the README's guarantees held.
//!
//! Checks ([`check`]):
//! - `no-loss`: every acknowledged message (PUBACK / PUBREC with success)
//!   published at least [`ROUTE_GRACE_MS`] after a persistent subscriber's
//!   first SUBACK reached that subscriber by the end of the final drain;
//! - `shared-no-loss`: ... reached at least one member of the shared group;
//! - `qos2-exactly-once`: no QoS 2 message delivered twice to a subscriber
//!   or to the shared group;
//! - `order`: within one connection, the messages a subscriber sees for
//!   the first time from one publisher connection come in publication
//!   order (a message held by the session's old node that was down or cut
//!   off when the session moved may come late, and one a fault held may
//!   come late to a member of the shared group: counted apart);
//! - `sessions-kept`: a persistent session asked to resume is present;
//! - `no-phantom`: every delivered or retained message was published;
//! - `retained-converges`: after healing every node holds the same retained
//!   message per topic, at or after the writer's last acknowledged write;
//! - `no-crash`: no node exited or panicked unless a fault explains it;
//! - `recovery`: after each heal and at the end, every node ready under
//!   one leader within the bound;
//! - `progress`: every publisher had a message acknowledged after the last
//!   recovery.
//!
//! Loss the README documents is counted apart, not as a violation:
//! - copies for a session whose node lost its data (the `replace` fault)
//!   published from the fault's start until the session connects
//!   elsewhere (copies acknowledged before are on the session's replica and
//!   required), and copies a publishing node kept for a peer it counted
//!   down when that node then lost its data (they are on a second node
//!   too unless the publishing node was cut off from every other one; the
//!   checker cannot tell, so it counts them apart);
//! - copies of messages published while a persistent session moves to
//!   another node: from the start of the connection to the new node until
//!   [`ROUTE_GRACE_MS`] after its CONNACK, and from the end of the previous
//!   connection if a fault hit the previous node (README, Cluster,
//!   "Sessions");
//! - a QoS 2 message delivered a second time, after a fault, through
//!   another node or after the session moved since its publication (a copy
//!   delayed in a link met the session on its new node).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::history::{Event, NodeChange, Outcome, Stamped};

/// Messages published within this long after a SUBACK need not reach the
/// subscription: other nodes learn the route at their next raft message
/// (README, Cluster, "Subscriptions").
pub const ROUTE_GRACE_MS: u64 = 2_000;

/// How long before a session's move (or its node's failure) a copy may have
/// left for the old node and be lost with the session moving away from it.
pub const IN_FLIGHT_MS: u64 = 1_000;

/// Violations listed per check in the report (the count is complete).
const LISTED: usize = 50;

/// One violation: what, which messages, and the faults around it.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub what: String,
    pub t_ms: u64,
    pub faults: Vec<String>,
}

/// The verdict of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub check: &'static str,
    pub passed: bool,
    /// What was checked, with counts.
    pub summary: String,
    pub violations: usize,
    pub listed: Vec<Violation>,
}

struct Fault {
    kind: String,
    nodes: Vec<u64>,
    start: u64,
    end: u64,
}

struct Ctx<'a> {
    events: &'a [Stamped],
    faults: Vec<Fault>,
}

impl Ctx<'_> {
    /// The faults active within 10 s of `t_ms`, as "kind nodes start-end".
    fn around(&self, t_ms: u64) -> Vec<String> {
        self.faults
            .iter()
            .filter(|f| f.start <= t_ms + 10_000 && t_ms <= f.end + 10_000)
            .map(|f| {
                format!(
                    "{} {:?} {:.1}-{:.1} s",
                    f.kind,
                    f.nodes,
                    f.start as f64 / 1e3,
                    f.end as f64 / 1e3
                )
            })
            .collect()
    }

    /// Whether a fault was active within 10 s before `t_ms`.
    fn faulty(&self, t_ms: u64) -> bool {
        self.faults
            .iter()
            .any(|f| f.start <= t_ms && t_ms <= f.end + 10_000)
    }

    fn violation(&self, what: String, t_ms: u64) -> Violation {
        Violation {
            what,
            t_ms,
            faults: self.around(t_ms),
        }
    }
}

fn verdict(check: &'static str, summary: String, mut violations: Vec<Violation>) -> Verdict {
    let count = violations.len();
    violations.truncate(LISTED);
    Verdict {
        check,
        passed: count == 0,
        summary,
        violations: count,
        listed: violations,
    }
}

/// Runs every check over `events`.
pub fn check(events: &[Stamped]) -> Vec<Verdict> {
    let end = events.last().map_or(0, |e| e.t_ms);
    let faults = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Fault {
                kind,
                nodes,
                end_ms,
                ..
            } => Some(Fault {
                kind: kind.clone(),
                nodes: nodes.clone(),
                start: e.t_ms,
                end: end_ms.unwrap_or(end),
            }),
            _ => None,
        })
        .collect();
    let ctx = Ctx { events, faults };
    let mut verdicts = delivery(&ctx);
    verdicts.push(sessions_kept(&ctx));
    verdicts.push(no_phantom(&ctx));
    verdicts.push(retained(&ctx));
    verdicts.push(no_crash(&ctx));
    verdicts.push(recovery(&ctx));
    verdicts.push(progress(&ctx));
    verdicts
}

/// Acknowledged plain (not retained) messages: (publisher, seq) -> (sent,
/// qos, acknowledged). The broker routed the message somewhere between
/// sending and acknowledgement (a paused node reads it late).
fn acked(events: &[Stamped]) -> BTreeMap<(u32, u64), (u64, u8, u64)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Publish {
                publisher,
                seq,
                qos,
                retain: false,
                outcome: Outcome::Acked,
                sent_ms,
                latency_ms,
                ..
            } => Some((
                (*publisher, *seq),
                (*sent_ms, *qos, sent_ms + latency_ms.unwrap_or(0)),
            )),
            _ => None,
        })
        .collect()
}

/// Why a missing copy is excused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Excuse {
    /// The session's node lost its data, and the copy was published after
    /// that node went down, until the session was back on another node:
    /// copies the publishing node kept for the lost node are dropped when
    /// it is removed (README, Cluster, "A node lost for good"). Copies
    /// acknowledged before it went down are on the session's replica and
    /// are not excused.
    DataLost,
    /// The message raced with the session's move to another node (README,
    /// Cluster, "Sessions": the move's window).
    Moving,
}

/// Windows (start, end, why) in which a subscriber's copies may be lost:
/// - when the node of its last connection was then replaced: from the
///   replace fault's start (the node killed with its data) until the
///   subscriber's next connection ([`Excuse::DataLost`]);
/// - when it connects to another node than the previous one: from
///   [`IN_FLIGHT_MS`] before the start of that connection until
///   [`ROUTE_GRACE_MS`] after its CONNACK, or from [`IN_FLIGHT_MS`] before
///   the end of the previous connection
///   (or the fault's start) if a fault hit the previous node, or the links
///   between nodes, in between: copies on their way to that node arrive
///   there after the session left ([`Excuse::Moving`]).
fn excused_windows(events: &[Stamped], faults: &[Fault], client: &str) -> Vec<(u64, u64, Excuse)> {
    let mut windows = Vec::new();
    let mut last_connect: Option<(u64, u64)> = None; // (t, node)
    let mut last_end = 0u64;
    let mut open: Option<u64> = None;
    for e in events {
        match &e.event {
            Event::Connected {
                client: c,
                node,
                connect_ms,
                ..
            } if c == client => {
                if let Some(start) = open.take() {
                    windows.push((start, e.t_ms, Excuse::DataLost));
                }
                if let Some((_, previous)) = last_connect.filter(|&(_, n)| n != *node) {
                    // A fault on the previous node while the session was
                    // on it or away: copies on their way to that node when
                    // it failed (up to IN_FLIGHT_MS before) are lost too.
                    let hit = faults
                        .iter()
                        .filter(|f| {
                            (f.nodes.contains(&previous) || delays_links(&f.kind))
                                && f.start <= *connect_ms
                                && f.end + ROUTE_GRACE_MS >= last_end
                        })
                        .map(|f| {
                            // A replaced node's sessions' copies up to its
                            // loss are on their replicas (issue 12): only
                            // those on their way when it went down count.
                            if f.kind == "replace" {
                                f.start
                            } else {
                                last_end.min(f.start)
                            }
                        })
                        .min();
                    let start = match hit {
                        Some(from) => from.saturating_sub(IN_FLIGHT_MS),
                        None => connect_ms.saturating_sub(IN_FLIGHT_MS),
                    };
                    windows.push((start, e.t_ms + ROUTE_GRACE_MS, Excuse::Moving));
                }
                last_connect = Some((e.t_ms, *node));
            }
            Event::Disconnected { client: c, .. } if c == client => last_end = e.t_ms,
            Event::Node {
                node,
                what: NodeChange::Removed,
            } => {
                if let Some((t, owner)) = last_connect {
                    if owner == *node && open.is_none() {
                        // the node went down at its replace fault's start
                        let down = faults
                            .iter()
                            .filter(|f| {
                                f.kind == "replace" && f.nodes.contains(node) && f.start <= e.t_ms
                            })
                            .map(|f| f.start)
                            .max()
                            .unwrap_or(t);
                        open = Some(down.max(t));
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        windows.push((start, u64::MAX, Excuse::DataLost));
    }
    windows
}

/// Faults that hold copies up in the links between nodes, whichever nodes
/// they name: partitions, packet loss, slow and cut links.
fn delays_links(kind: &str) -> bool {
    kind.starts_with("partition") || matches!(kind, "lossy" | "slow" | "cut")
}

/// Whether a copy published on `node` at `sent` may have been kept for a
/// peer it counted down (a fault on the links or on it within 5 s before)
/// and lost because the node lost its data (replaced) within 10 s after.
/// Such copies are on the publishing node's disk (ARCHITECTURE 5.2, "kept
/// copies"), so a kill alone loses none.
fn kept_on_a_lost_disk(ctx: &Ctx<'_>, node: Option<u64>, sent: u64) -> bool {
    let Some(node) = node else { return false };
    let faulty = ctx.faults.iter().any(|f| {
        (delays_links(&f.kind) || f.nodes.contains(&node))
            && f.start <= sent
            && sent <= f.end + 5_000
    });
    let crashed = ctx.events.iter().any(|e| {
        matches!(&e.event, Event::Node { node: n, what: NodeChange::Removed } if *n == node)
            && sent <= e.t_ms
            && e.t_ms <= sent + 10_000
    });
    faulty && crashed
}

/// Whether a copy sent at `sent` was routed while the subscriber moved,
/// whatever else excuses it too (a node that later lost its data).
fn while_moving(windows: &[(u64, u64, Excuse)], sent: u64) -> bool {
    windows
        .iter()
        .any(|&(a, b, why)| why == Excuse::Moving && a <= sent && sent <= b)
}

/// Spans in which some node may route by stale routes: from each fault's
/// start until the cluster recovered after it (the first recovery event
/// after the fault's end; a node cut off from the leader catches up then).
fn stale_route_spans(ctx: &Ctx<'_>) -> Vec<(u64, u64)> {
    let recoveries: Vec<u64> = ctx
        .events
        .iter()
        .filter(|e| matches!(e.event, Event::Recovered { .. }))
        .map(|e| e.t_ms)
        .collect();
    ctx.faults
        .iter()
        .map(|f| {
            let healed = recoveries
                .iter()
                .copied()
                .find(|&t| t >= f.end)
                .unwrap_or(u64::MAX);
            (f.start, healed)
        })
        .collect()
}

/// Whether a copy published between `sent` and `acked` may have reached
/// `subscriber` late by another path: it was on its way (published, not
/// yet acknowledged) while some node routed by stale routes, and the
/// subscriber moved to another node within that span (or
/// [`ROUTE_GRACE_MS`] after it). Such a copy can come through the
/// session's old node after newer ones came straight (README, Cluster,
/// "Known limits of a move"). For `order` only: no copy may be lost so.
fn late_by_stale_route(
    spans: &[(u64, u64)],
    moves: Option<&Vec<u64>>,
    sent: u64,
    acked: u64,
) -> bool {
    let Some(moves) = moves else { return false };
    spans.iter().any(|&(a, b)| {
        a <= acked.max(sent)
            && sent <= b
            && moves
                .iter()
                .any(|&m| a <= m && m <= b.saturating_add(ROUTE_GRACE_MS))
    })
}

/// Whether a copy published between `sent` and `acked` was on its way
/// while some node routed by stale routes (a fault until the recovery
/// after it).
/// The faults that kill a node (SIGKILL, or its data lost with it).
const KILLS: [&str; 4] = ["kill-random", "kill-leader", "kill-owner", "replace"];

/// Whether a node was killed (a fault of [`KILLS`] began) while a message
/// was unacknowledged: from `sent` until `until` (its acknowledgement, or
/// `u64::MAX` if none came). A node that passes a shared group's copy on
/// to a member elsewhere (a member that moved away from it) and is killed
/// before it answers the publishing node leaves that node unable to tell
/// whether the group has it: the publishing node keeps the copy, the
/// restarted node refuses it, and it goes to another member (README,
/// "Delivery guarantees", Cluster).
fn killed_while_unacked(kills: &[u64], sent: u64, until: u64) -> bool {
    kills.iter().any(|&k| sent <= k && k <= until)
}

fn during_fault(spans: &[(u64, u64)], sent: u64, acked: u64) -> bool {
    spans
        .iter()
        .any(|&(a, b)| a <= acked.max(sent) && sent <= b)
}

/// The excuse of a copy routed between `sent` and `acked`: a window that
/// overlaps that span.
fn excuse_span(windows: &[(u64, u64, Excuse)], sent: u64, acked: u64) -> Option<Excuse> {
    let within = |why| {
        windows
            .iter()
            .any(|&(a, b, w)| w == why && a <= acked && sent <= b)
    };
    [Excuse::DataLost, Excuse::Moving]
        .into_iter()
        .find(|&w| within(w))
}

fn delivery(ctx: &Ctx<'_>) -> Vec<Verdict> {
    let events = ctx.events;
    let acked = acked(events);
    // subscriber -> first SUBACK time
    let mut first_sub: BTreeMap<&str, u64> = BTreeMap::new();
    // subscriber -> (publisher, seq) -> count
    let mut got: BTreeMap<&str, HashMap<(u32, u64), u32>> = BTreeMap::new();
    for e in events {
        match &e.event {
            Event::Subscribed { client, .. } => {
                first_sub.entry(client.as_str()).or_insert(e.t_ms);
            }
            Event::Deliver {
                subscriber,
                publisher,
                seq,
                retain: false,
                ..
            } => {
                *got.entry(subscriber.as_str())
                    .or_default()
                    .entry((*publisher, *seq))
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    let (shared, plain): (Vec<&str>, Vec<&str>) = first_sub
        .keys()
        .copied()
        .partition(|s| s.starts_with("shared"));

    let pub_node: HashMap<(u32, u64), u64> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Publish {
                publisher,
                seq,
                node,
                ..
            } => Some(((*publisher, *seq), *node)),
            _ => None,
        })
        .collect();
    let mut loss = Vec::new();
    let mut excused = [0usize; 2];
    let mut required = 0usize;
    for sub in &plain {
        let since = first_sub[sub] + ROUTE_GRACE_MS;
        let windows = excused_windows(events, &ctx.faults, sub);
        let empty = HashMap::new();
        let have = got.get(sub).unwrap_or(&empty);
        for (&(p, seq), &(sent, _, acked_at)) in acked.range(..) {
            if sent < since {
                continue;
            }
            required += 1;
            if !have.contains_key(&(p, seq)) {
                if let Some(why) = excuse_span(&windows, sent, acked_at) {
                    excused[why as usize] += 1;
                } else if kept_on_a_lost_disk(ctx, pub_node.get(&(p, seq)).copied(), sent) {
                    excused[Excuse::DataLost as usize] += 1;
                } else {
                    loss.push(ctx.violation(
                        format!("{sub}: acknowledged message p{p}#{seq} never delivered"),
                        sent,
                    ));
                }
            }
        }
    }
    let mut verdicts = vec![verdict(
        "no-loss",
        format!(
            "{} acknowledged messages x {} persistent subscribers: {required} required copies, {} missing; excused: {} while the session moved, {} on a node that lost its data (its own or the publishing node's)",
            acked.len(),
            plain.len(),
            loss.len(),
            excused[Excuse::Moving as usize],
            excused[Excuse::DataLost as usize]
        ),
        loss,
    )];

    let mut shared_loss = Vec::new();
    let mut shared_required = 0;
    let mut shared_excused = 0;
    if let Some(since) = shared.iter().map(|s| first_sub[s]).max() {
        let windows: Vec<(u64, u64, Excuse)> = shared
            .iter()
            .flat_map(|s| excused_windows(events, &ctx.faults, s))
            .collect();
        for (&(p, seq), &(sent, _, acked_at)) in &acked {
            if sent < since + ROUTE_GRACE_MS {
                continue;
            }
            shared_required += 1;
            let delivered = shared
                .iter()
                .any(|s| got.get(s).is_some_and(|g| g.contains_key(&(p, seq))));
            if !delivered {
                if excuse_span(&windows, sent, acked_at).is_some() {
                    shared_excused += 1;
                } else {
                    shared_loss.push(ctx.violation(
                        format!("shared group: acknowledged message p{p}#{seq} reached no member"),
                        sent,
                    ));
                }
            }
        }
    }
    verdicts.push(verdict(
        "shared-no-loss",
        format!(
            "{shared_required} acknowledged messages for a group of {} members, {} missing, {shared_excused} excused (a member moved or lost its node's data)",
            shared.len(),
            shared_loss.len()
        ),
        shared_loss,
    ));

    // QoS 2: per subscriber, and over the group.
    let mut dups = Vec::new();
    let mut qos2 = 0usize;
    let mut per_sub: HashMap<(&str, u32, u64), u32> = HashMap::new();
    // the members of the shared group each QoS 2 message reached
    let mut group: HashMap<(u32, u64), BTreeSet<&str>> = HashMap::new();
    // when each message was sent, and when each subscriber moved to
    // another node (CONNACK)
    // when each message was sent, and until when it was unacknowledged
    // (the end of the run if never)
    let sent_until: HashMap<(u32, u64), (u64, u64)> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Publish {
                publisher,
                seq,
                sent_ms,
                latency_ms,
                ..
            } => Some((
                (*publisher, *seq),
                (*sent_ms, latency_ms.map_or(u64::MAX, |l| sent_ms + l)),
            )),
            _ => None,
        })
        .collect();
    let kills: Vec<u64> = ctx
        .faults
        .iter()
        .filter(|f| KILLS.contains(&f.kind.as_str()))
        .map(|f| f.start)
        .collect();
    let mut killed_group_dups = 0usize;
    let mut windows_of: HashMap<String, Vec<(u64, u64, Excuse)>> = HashMap::new();
    let mut move_windows = |subscriber: &str| {
        windows_of
            .entry(subscriber.to_owned())
            .or_insert_with(|| excused_windows(events, &ctx.faults, subscriber))
            .clone()
    };
    let mut moves: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut at_node: HashMap<&str, u64> = HashMap::new();
    for e in events {
        if let Event::Connected { client, node, .. } = &e.event {
            if at_node
                .insert(client.as_str(), *node)
                .is_some_and(|n| n != *node)
            {
                moves.entry(client.as_str()).or_default().push(e.t_ms);
            }
        }
    }
    // the node of the first delivery of each (subscriber, message)
    let mut first_node: HashMap<(&str, u32, u64), u64> = HashMap::new();
    let mut moved_dups = 0usize;
    for e in events {
        if let Event::Deliver {
            subscriber,
            publisher,
            seq,
            qos: 2,
            retain: false,
            node,
            ..
        } = &e.event
        {
            qos2 += 1;
            let key = (subscriber.as_str(), *publisher, *seq);
            let n = per_sub.entry(key).or_default();
            *n += 1;
            let first = *first_node.entry(key).or_insert(*node);
            let sent = sent_until.get(&(*publisher, *seq)).map_or(0, |s| s.0);
            let moved = moves
                .get(subscriber.as_str())
                .is_some_and(|m| m.iter().any(|&t| sent <= t && t <= e.t_ms))
                || while_moving(&move_windows(subscriber), sent);
            if *n == 2 && (first != *node || moved) && ctx.faulty(e.t_ms) {
                // A copy delayed in a link reached the session's new node
                // after the session moved there (README, Cluster, "Sessions").
                moved_dups += 1;
            } else if *n == 2 {
                dups.push(ctx.violation(
                    format!("{subscriber}: QoS 2 message p{publisher}#{seq} delivered twice"),
                    e.t_ms,
                ));
            }
            // A second delivery to the same member is judged above (per
            // subscriber); the group rule is about a second member.
            if subscriber.starts_with("shared") {
                let members = group.entry((*publisher, *seq)).or_default();
                if members.insert(subscriber.as_str()) && members.len() == 2 {
                    let (sent, until) = sent_until
                        .get(&(*publisher, *seq))
                        .copied()
                        .unwrap_or((0, u64::MAX));
                    if killed_while_unacked(&kills, sent, until) {
                        // README, "Delivery guarantees", Cluster: a node
                        // killed while passing the copy on
                        killed_group_dups += 1;
                    } else {
                        dups.push(ctx.violation(format!("shared group: QoS 2 message p{publisher}#{seq} delivered to two members"), e.t_ms));
                    }
                }
            }
        }
    }
    verdicts.push(verdict(
        "qos2-exactly-once",
        format!(
            "{qos2} QoS 2 deliveries, {} duplicated; excused: {moved_dups} delivered again after the session moved while a fault delayed a copy, {killed_group_dups} given to a second shared member after a node passing the copy on was killed",
            dups.len()
        ),
        dups,
    ));

    // Order: first-time deliveries per (subscriber, its connection,
    // publisher, the publisher's connection). Messages a publisher sent on
    // different connections have no order between them: one it gave up on
    // (no acknowledgement) may still arrive after its later ones.
    let pub_conn: HashMap<(u32, u64), u64> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Publish {
                publisher,
                seq,
                connection,
                ..
            } => Some(((*publisher, *seq), *connection)),
            _ => None,
        })
        .collect();
    let stale = stale_route_spans(ctx);
    let mut seen: HashMap<(&str, u32, u64), ()> = HashMap::new();
    let mut last: HashMap<(&str, u64, u32, u64), u64> = HashMap::new();
    let mut order = Vec::new();
    let mut firsts = 0usize;
    let mut late = 0usize;
    for e in events {
        if let Event::Deliver {
            subscriber,
            publisher,
            seq,
            connection,
            retain: false,
            ..
        } = &e.event
        {
            if seen
                .insert((subscriber.as_str(), *publisher, *seq), ())
                .is_some()
            {
                continue;
            }
            firsts += 1;
            let Some(&pc) = pub_conn.get(&(*publisher, *seq)) else {
                continue;
            };
            let key = (subscriber.as_str(), *connection, *publisher, pc);
            if let Some(&prev) = last.get(&key) {
                let sent = sent_until.get(&(*publisher, *seq)).map_or(0, |s| s.0);
                let acked_at = acked.get(&(*publisher, *seq)).map_or(sent, |a| a.2);
                // A shared member gets the group's copies by several paths
                // (its node's picks, other nodes' picks, hand-ons): one held
                // by a fault may come after newer ones without a move.
                let shared_member = subscriber.starts_with("shared");
                if *seq < prev
                    && (while_moving(&move_windows(subscriber), sent)
                        || late_by_stale_route(
                            &stale,
                            moves.get(subscriber.as_str()),
                            sent,
                            acked_at,
                        )
                        || (shared_member && during_fault(&stale, sent, acked_at)))
                {
                    // held by the session's old node, which was down or cut
                    // off when the session moved: it arrives when that node
                    // is back (README, Cluster, "Sessions")
                    late += 1;
                } else if *seq < prev {
                    order.push(ctx.violation(
                        format!("{subscriber} (connection {connection}): p{publisher}#{seq} arrived after p{publisher}#{prev}"),
                        e.t_ms,
                    ));
                }
            }
            let entry = last.entry(key).or_insert(*seq);
            *entry = (*entry).max(*seq);
        }
    }
    verdicts.push(verdict(
        "order",
        format!(
            "{firsts} first deliveries, {} out of order; excused: {late} late from a session's old node (down, cut off or routed to by a node not caught up when the session moved) or, to a shared member, held by a fault",
            order.len()
        ),
        order,
    ));
    verdicts
}

fn sessions_kept(ctx: &Ctx<'_>) -> Verdict {
    let mut lost = Vec::new();
    let mut resumes = 0;
    for e in ctx.events {
        if let Event::Connected {
            client,
            resume: true,
            session_present,
            ..
        } = &e.event
        {
            resumes += 1;
            if !session_present {
                let excused = excused_windows(ctx.events, &ctx.faults, client)
                    .iter()
                    .any(|&(a, b, why)| why == Excuse::DataLost && a <= e.t_ms && e.t_ms <= b);
                if !excused {
                    lost.push(
                        ctx.violation(format!("{client}: session not present on resume"), e.t_ms),
                    );
                }
            }
        }
    }
    verdict(
        "sessions-kept",
        format!("{resumes} resumed sessions, {} lost", lost.len()),
        lost,
    )
}

fn no_phantom(ctx: &Ctx<'_>) -> Verdict {
    let published: BTreeSet<(u32, u64)> = ctx
        .events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Publish { publisher, seq, .. } => Some((*publisher, *seq)),
            _ => None,
        })
        .collect();
    let mut phantom = Vec::new();
    let mut reads = 0;
    for e in ctx.events {
        let id = match &e.event {
            Event::Deliver { publisher, seq, .. } => (*publisher, *seq),
            Event::RetainedRead {
                publisher,
                seq: Some(seq),
                ..
            } => (*publisher, *seq),
            _ => continue,
        };
        reads += 1;
        // The whole history is searched: a message is recorded once its
        // outcome is known, after a delivery that may come first.
        if !published.contains(&id) {
            phantom.push(ctx.violation(
                format!("p{}#{} delivered but never published", id.0, id.1),
                e.t_ms,
            ));
        }
    }
    verdict(
        "no-phantom",
        format!(
            "{reads} deliveries and retained reads, {} unknown",
            phantom.len()
        ),
        phantom,
    )
}

fn retained(ctx: &Ctx<'_>) -> Verdict {
    // writer -> (last acked seq, last sent seq)
    let mut writes: BTreeMap<u32, (Option<u64>, u64)> = BTreeMap::new();
    for e in ctx.events {
        if let Event::Publish {
            publisher,
            seq,
            retain: true,
            outcome,
            ..
        } = &e.event
        {
            let w = writes.entry(*publisher).or_insert((None, 0));
            w.1 = w.1.max(*seq);
            if *outcome == Outcome::Acked {
                w.0 = Some(w.0.map_or(*seq, |a| a.max(*seq)));
            }
        }
    }
    let mut finals: BTreeMap<u32, BTreeMap<u64, Option<u64>>> = BTreeMap::new();
    for e in ctx.events {
        if let Event::RetainedRead {
            node,
            publisher,
            seq,
            last: true,
        } = &e.event
        {
            let v = finals
                .entry(*publisher)
                .or_default()
                .entry(*node)
                .or_insert(None);
            *v = (*v).max(*seq);
        }
    }
    let mut bad = Vec::new();
    let end = ctx.events.last().map_or(0, |e| e.t_ms);
    for (w, (acked, sent)) in &writes {
        let Some(acked) = acked else { continue };
        let Some(per_node) = finals.get(w) else {
            bad.push(ctx.violation(format!("retained topic of writer {w}: no final read"), end));
            continue;
        };
        let values: BTreeSet<Option<u64>> = per_node.values().copied().collect();
        if values.len() > 1 {
            bad.push(ctx.violation(
                format!("retained topic of writer {w}: nodes disagree: {per_node:?}"),
                end,
            ));
        }
        for (node, v) in per_node {
            match v {
                Some(v) if v >= acked && v <= sent => {}
                _ => bad.push(ctx.violation(
                    format!("retained topic of writer {w} on node {node}: {v:?}, last acknowledged write #{acked}, last sent #{sent}"),
                    end,
                )),
            }
        }
    }
    verdict(
        "retained-converges",
        format!(
            "{} retained topics, {} final reads",
            writes.len(),
            finals.values().map(|m| m.len()).sum::<usize>()
        ),
        bad,
    )
}

fn no_crash(ctx: &Ctx<'_>) -> Verdict {
    let mut crashes = Vec::new();
    let mut expected = 0;
    for e in ctx.events {
        match &e.event {
            Event::Node {
                node,
                what:
                    NodeChange::Exited {
                        status,
                        expected: false,
                    },
            } => {
                crashes.push(ctx.violation(format!("node {node} exited: {status}"), e.t_ms));
            }
            Event::Node {
                what: NodeChange::Exited { expected: true, .. },
                ..
            } => expected += 1,
            Event::Node {
                node,
                what:
                    NodeChange::Panicked {
                        line,
                        expected: false,
                    },
            } => {
                crashes.push(ctx.violation(format!("node {node} panicked: {line}"), e.t_ms));
            }
            Event::Node {
                what: NodeChange::Panicked { expected: true, .. },
                ..
            } => expected += 1,
            _ => {}
        }
    }
    verdict(
        "no-crash",
        format!(
            "{} unexpected exits or panics, {expected} exits or panics a fault explains (a full disk)",
            crashes.len()
        ),
        crashes,
    )
}

fn recovery(ctx: &Ctx<'_>) -> Verdict {
    let mut slow = Vec::new();
    let mut times = Vec::new();
    for e in ctx.events {
        if let Event::Recovered { after, ms } = &e.event {
            match ms {
                Some(ms) => times.push(*ms),
                None => slow.push(ctx.violation(
                    format!("no recovery after {after} within the bound"),
                    e.t_ms,
                )),
            }
        }
    }
    times.sort_unstable();
    let max = times.last().copied().unwrap_or(0);
    let median = times.get(times.len() / 2).copied().unwrap_or(0);
    verdict(
        "recovery",
        format!(
            "{} recoveries, median {median} ms, max {max} ms, {} over the bound",
            times.len(),
            slow.len()
        ),
        slow,
    )
}

fn progress(ctx: &Ctx<'_>) -> Verdict {
    let last = ctx
        .events
        .iter()
        .filter(|e| matches!(e.event, Event::Recovered { .. }))
        .map(|e| e.t_ms)
        .max()
        .unwrap_or(0);
    let mut publishers: BTreeMap<u32, usize> = BTreeMap::new();
    for e in ctx.events {
        if let Event::Publish {
            publisher,
            outcome,
            sent_ms,
            ..
        } = &e.event
        {
            let n = publishers.entry(*publisher).or_default();
            if *outcome == Outcome::Acked && *sent_ms >= last {
                *n += 1;
            }
        }
    }
    let stuck: Vec<Violation> = publishers
        .iter()
        .filter(|(_, &n)| n == 0)
        .map(|(p, _)| {
            ctx.violation(
                format!("publisher {p}: nothing acknowledged after the final recovery"),
                last,
            )
        })
        .collect();
    verdict(
        "progress",
        format!(
            "{} publishers, {} without an acknowledgement after the final recovery",
            publishers.len(),
            stuck.len()
        ),
        stuck,
    )
}

#[cfg(test)]
mod tests;
