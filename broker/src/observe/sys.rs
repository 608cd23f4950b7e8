//! The `$SYS` topics: every `sys_interval_secs` the node publishes its
//! figures as retained QoS 0 messages, with Mosquitto's names where
//! Mosquitto has one (`$SYS/broker/clients/connected`, `$SYS/broker/load/
//! messages/received/1min`, ...), and in a cluster the cluster-wide view
//! under `$SYS/cluster/`: members, leader and term as this node knows them,
//! and the clients, subscriptions and retained messages of every node,
//! counted in the replicated state.
//!
//! They go through the normal routing path ([`route`]), so the ACL's read
//! rules decide who receives them, as for any other topic, and a client that
//! subscribes later gets the last values as retained messages. A value is
//! published when it changed since the previous tick.
//!
//! Per node, never replicated: each node keeps its own `$SYS` values in its
//! local retained index only, and routes them to its own sessions only
//! (`Scope::Local`, plain subscriptions). Through raft, every node would
//! overwrite the others' `$SYS/broker/...` values under the same topics;
//! forwarded to other nodes, a subscriber would see the figures of whichever
//! node published last. So a client reads the figures of the node it is
//! connected to. The `$SYS/cluster/...` values come from the replicated
//! state and the node's raft view, which every node has. They are not
//! stored either: a restarted node publishes them again at once.
//!
//! Lifecycle: [`run`] publishes at start, then every interval, until `stop`
//! turns true.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::{NodeInfo, Snapshot};
use crate::codec::QoS;
use crate::fanout::{route, set_retained_locally, Scope};
use crate::handle::LazyGuard;
use crate::message::{Message, BROKER_ORIGIN};
use crate::state::State;

/// Load averages of one counter, per minute, over 1, 5 and 15 minutes
/// (exponentially weighted, as Mosquitto's `load` topics).
#[derive(Debug, Default, Clone, Copy)]
struct Load {
    last: Option<u64>,
    averages: [f64; 3],
}

const LOAD_WINDOWS: [(u64, &str); 3] = [(60, "1min"), (300, "5min"), (900, "15min")];

impl Load {
    /// Takes the counter's value `interval` after the previous one.
    fn update(&mut self, value: u64, interval: Duration) {
        let secs = interval.as_secs_f64().max(0.001);
        if let Some(last) = self.last {
            let per_minute = value.saturating_sub(last) as f64 * 60.0 / secs;
            for (avg, (window, _)) in self.averages.iter_mut().zip(LOAD_WINDOWS) {
                let k = (-secs / window as f64).exp();
                *avg = *avg * k + per_minute * (1.0 - k);
            }
        }
        self.last = Some(value);
    }
}

/// The `$SYS` topics and their values at one moment.
fn topics(state: &State, s: &Snapshot, loads: &[(&str, Load); 4]) -> Vec<(String, String)> {
    let b = |t: &str| format!("$SYS/broker/{t}");
    let mut out = vec![
        (b("version"), format!("tern {}", env!("CARGO_PKG_VERSION"))),
        (b("uptime"), format!("{} seconds", s.uptime_secs)),
        (b("clients/connected"), s.connections.to_string()),
        (b("clients/disconnected"), s.sessions_offline.to_string()),
        (
            b("clients/total"),
            (s.sessions_online + s.sessions_offline).to_string(),
        ),
        (
            b("messages/received"),
            s.messages_received.iter().sum::<u64>().to_string(),
        ),
        (
            b("messages/sent"),
            s.messages_sent.iter().sum::<u64>().to_string(),
        ),
        (b("messages/dropped"), s.messages_dropped.to_string()),
        (b("subscriptions/count"), s.subscriptions.to_string()),
        (b("retained messages/count"), s.retained.to_string()),
        (b("bytes/received"), s.bytes_received.to_string()),
        (b("bytes/sent"), s.bytes_sent.to_string()),
        (b("store/messages/count"), s.held_messages.to_string()),
        (b("store/messages/bytes"), s.queued_bytes.to_string()),
    ];
    for (name, load) in loads {
        for (avg, (_, window)) in load.averages.iter().zip(LOAD_WINDOWS) {
            out.push((b(&format!("load/{name}/{window}")), format!("{avg:.2}")));
        }
    }
    if let Some(raft) = state.cluster().raft() {
        let status = raft.status();
        out.push(("$SYS/cluster/node_id".into(), status.node_id.to_string()));
        out.push((
            "$SYS/cluster/nodes".into(),
            status.members.len().to_string(),
        ));
        out.push((
            "$SYS/cluster/leader".into(),
            status.leader.map_or("none".into(), |l| l.to_string()),
        ));
        out.push(("$SYS/cluster/term".into(), status.term.to_string()));
        // the cluster-wide view: from the replicated state every node has
        // (one raft round behind the nodes that change it)
        let (connected, total, subscriptions, retained) = raft.with_state(|c| {
            let sessions = c.sessions().values();
            let connected = sessions
                .clone()
                .filter(|s| s.info.disconnected_at_ms.is_none())
                .count();
            let subscriptions: usize = sessions.map(|s| s.info.subscriptions.len()).sum();
            (
                connected,
                c.sessions().len(),
                subscriptions,
                c.retained().len(),
            )
        });
        let c = |t: &str| format!("$SYS/cluster/{t}");
        out.push((c("clients/connected"), connected.to_string()));
        out.push((c("clients/disconnected"), (total - connected).to_string()));
        out.push((c("clients/total"), total.to_string()));
        out.push((c("subscriptions/count"), subscriptions.to_string()));
        out.push((c("retained messages/count"), retained.to_string()));
    }
    out
}

/// Publishes one `$SYS` value: retained on this node, to this node's
/// sessions, like a retained QoS 0 PUBLISH.
fn publish(state: &State, topic: String, payload: String) {
    let message = Arc::new(Message {
        topic: topic.into(),
        payload: Bytes::from(payload),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: Default::default(),
        expires_at_ms: None,
        origin: BROKER_ORIGIN,
        received_at: None,
        uid: 0,
    });
    set_retained_locally(state, &message);
    let scope = Scope::Local {
        plain: true,
        shared: &[],
    };
    route(state, &message, &mut LazyGuard::none(), scope);
}

/// Publishes the `$SYS` topics every `interval` until `stop` turns true.
pub async fn run(
    state: State,
    info: NodeInfo,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: HashMap<String, String> = HashMap::new();
    let mut loads = [
        ("messages/received", Load::default()),
        ("messages/sent", Load::default()),
        ("bytes/received", Load::default()),
        ("bytes/sent", Load::default()),
    ];
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        let s = Snapshot::take(&state, &info);
        for ((_, load), value) in loads.iter_mut().zip([
            s.messages_received.iter().sum(),
            s.messages_sent.iter().sum(),
            s.bytes_received,
            s.bytes_sent,
        ]) {
            load.update(value, interval);
        }
        for (topic, payload) in topics(&state, &s, &loads) {
            if published.get(&topic) != Some(&payload) {
                published.insert(topic.clone(), payload.clone());
                publish(&state, topic, payload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_follows_the_rate_per_minute() {
        let mut load = Load::default();
        load.update(0, Duration::from_secs(10));
        assert_eq!(load.averages, [0.0; 3]);
        // 100 messages every 10 s is 600 per minute; the 1 minute average
        // gets there first.
        for i in 1..=200 {
            load.update(i * 100, Duration::from_secs(10));
        }
        assert!(
            (load.averages[0] - 600.0).abs() < 0.01,
            "{:?}",
            load.averages
        );
        assert!(load.averages[1] > 590.0 && load.averages[2] > 500.0);
        let mut fresh = Load::default();
        fresh.update(0, Duration::from_secs(10));
        fresh.update(100, Duration::from_secs(10));
        assert!(fresh.averages[0] > fresh.averages[1] && fresh.averages[1] > fresh.averages[2]);
    }
}
