//! What this node does with the cluster's events: other nodes' routes into
//! the router, replicated retained messages into the retained index,
//! forwarded messages to local sessions, takeover requests and ownership
//! moves to the sessions concerned.

use std::sync::Arc;

use cluster::ClusterEvent;
use tokio::sync::mpsc;

use crate::codec::{QoS, SubscriptionOptions};
use crate::counters::DropReason;
use crate::fanout::{route, set_retained_locally, Scope};
use crate::handle::{
    Backpressure, Deliver, HandOver, Input, LazyGuard, OwnerMoved, Subscriber, SubscriptionEntry,
};
use crate::hub::events::Severity;
use crate::message::Message;
use crate::state::State;

/// The router entry of another node's route.
fn node_entry(filter: &str) -> SubscriptionEntry {
    let shared = matches!(crate::codec::topic::split_shared(filter), Ok(Some(_)));
    SubscriptionEntry {
        // The receiving node applies its own subscriptions' QoS.
        options: SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            ..Default::default()
        },
        subscription_id: None,
        shared_filter: shared.then(|| Box::new(filter.into())),
    }
}

/// Loads the replicated routes of other nodes and the retained messages;
/// call once at startup, before events are applied.
pub fn load(state: &State, cluster: &cluster::Cluster) {
    let me = cluster.node_id();
    let mut router = state.router().write();
    for (filter, nodes) in cluster.routes() {
        for node in nodes.into_iter().filter(|n| *n != me) {
            router.subscribe(&filter, Subscriber::Node(node), node_entry(&filter));
        }
    }
    drop(router);
    for stored in cluster.retained() {
        match Message::from_stored(stored) {
            Ok((message, _)) => set_retained_locally(state, &Arc::new(message)),
            Err(e) => tracing::error!(error = %e, "unreadable replicated retained message skipped"),
        }
    }
}

/// What adopts a session a draining node hands over (`crate::drain`,
/// above this layer): client id, the draining node, where to answer.
pub type AdoptFn =
    Arc<dyn Fn(String, u64, tokio::sync::oneshot::Sender<Result<(), String>>) + Send + Sync>;

/// Applies cluster events until the channel closes. `failed` is told when
/// the cluster node stops on a fatal error.
pub async fn run_events(
    state: State,
    mut events: mpsc::UnboundedReceiver<ClusterEvent>,
    failed: tokio::sync::watch::Sender<Option<String>>,
    adopt: AdoptFn,
) {
    let me = state.cluster().node_id();
    while let Some(event) = events.recv().await {
        match event {
            ClusterEvent::RouteAdded { filter, node } if node != me => {
                state.router().write().subscribe(
                    &filter,
                    Subscriber::Node(node),
                    node_entry(&filter),
                );
            }
            ClusterEvent::RouteRemoved { filter, node } if node != me => {
                state
                    .router()
                    .write()
                    .unsubscribe(&filter, &Subscriber::Node(node));
            }
            ClusterEvent::RouteAdded { .. } | ClusterEvent::RouteRemoved { .. } => {}
            ClusterEvent::SessionOwnerChanged { client_id, owner } if owner != me => {
                // (A session that moved from here and kept what it held
                // watches the owner itself: `Session::watch_claim`.)
                let local = state.registry().get(client_id.as_str());
                if let Some(session) = local {
                    session.send(OwnerMoved { owner });
                }
            }
            ClusterEvent::SessionOwnerChanged { .. } | ClusterEvent::SessionReleased { .. } => {}
            ClusterEvent::RetainedChanged { message } => match Message::from_stored(message) {
                Ok((message, _)) => set_retained_locally(&state, &Arc::new(message)),
                Err(e) => tracing::error!(error = %e, "unreadable replicated retained message"),
            },
            ClusterEvent::Forwarded { msg, ack } => deliver_forwarded(&state, msg, ack),
            ClusterEvent::TakeoverRequested {
                client_id,
                requester,
                reply,
            } => {
                // A session that moved from here and kept what it held
                // (its taker's claim is not in) is handed over again only
                // when its taker is down: while the taker is up its claim
                // is coming, and a second taker would make two live copies
                // of the session, each delivering what the other did. The
                // requester then hears the session is not here, waits for
                // the owner to change and asks the taker.
                let local = state.registry().get(client_id.as_str()).or_else(|| {
                    let (kept, taker) = state.registry().latest_moved(client_id.as_str())?;
                    let again = hand_kept_again(taker, requester, state.cluster().is_up(taker));
                    if !again {
                        tracing::info!(%client_id, requester, taker, "takeover asked of a session handed over to a node that is up: not here");
                    }
                    again.then_some(kept)
                });
                tokio::spawn(async move {
                    let handed = match local {
                        // The requester gave up (its takeover timed out, or
                        // the request was delayed past its deadline): the
                        // state would go nowhere and the session would end
                        // here, its messages with it.
                        Some(_) if reply.is_closed() => {
                            tracing::warn!(%client_id, requester, "takeover request no longer awaited; keeping the session");
                            None
                        }
                        Some(session) => session
                            .ask(|reply| Input::HandOver(HandOver { to: requester }, reply))
                            .await
                            .flatten(),
                        None => None,
                    };
                    let _ = reply.send(handed);
                });
            }
            ClusterEvent::AdoptRequested {
                client_id,
                from,
                reply,
            } => adopt(client_id, from, reply),
            ClusterEvent::Replicate {
                owner,
                batch,
                reply,
            } => {
                let ops = super::replica_ops(owner, batch);
                state.writer().submit(
                    ops,
                    Some(Box::new(move |result| {
                        let _ = reply.send(result.map_err(|e| e.to_string()));
                    })),
                );
            }
            ClusterEvent::KeptCopies { reply } => {
                // The next seq is read first; the listing waits until every
                // copy kept before it is written (a barrier through the
                // writer's queue), so an asker drops none kept meanwhile.
                let next_seq = state.cluster().kept_next_seq();
                let (written, barrier) = tokio::sync::oneshot::channel();
                state.writer().submit(
                    Vec::new(),
                    Some(Box::new(move |_| {
                        let _ = written.send(());
                    })),
                );
                let store = state.store().clone();
                tokio::spawn(async move {
                    let _ = barrier.await;
                    match store.load_forwards() {
                        Ok(kept) => {
                            let keys = kept.into_iter().map(|(node, seq, _)| (node, seq)).collect();
                            let _ = reply.send((keys, next_seq));
                        }
                        Err(e) => tracing::error!(error = %e, "cannot list the kept copies"),
                    }
                });
            }
            ClusterEvent::FetchReplica { client_id, reply } => {
                let replica = match state.store().load_replica(&client_id) {
                    Ok(found) => found.map(super::replica_from_store),
                    Err(e) => {
                        tracing::error!(%client_id, error = %e, "unreadable session replica");
                        None
                    }
                };
                let _ = reply.send(replica);
            }
            ClusterEvent::MembersChanged { members } => {
                let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
                tracing::info!(members = ?ids, "cluster members changed");
                cluster_event(
                    &state,
                    Severity::Info,
                    "cluster members changed",
                    serde_json::json!({ "members": ids }),
                );
            }
            ClusterEvent::HubRouteChanged { name, definition } => {
                // errors are logged and published as events by the hub
                let _ = state
                    .hub()
                    .apply_api_route(&name, definition.as_deref(), state.store());
            }
            ClusterEvent::BecameReady => tracing::info!("cluster ready"),
            ClusterEvent::Removed => {
                tracing::warn!("this node was removed from the cluster");
                cluster_event(
                    &state,
                    Severity::Warning,
                    "this node was removed from the cluster",
                    serde_json::Value::Null,
                );
            }
            ClusterEvent::Failed { reason } => {
                tracing::error!(%reason, "cluster node failed; stopping");
                cluster_event(
                    &state,
                    Severity::Error,
                    "cluster node failed; stopping",
                    serde_json::json!({ "reason": &reason }),
                );
                let _ = failed.send(Some(reason));
            }
        }
    }
}

/// A hub event about this node's membership (`object_type` `cluster`,
/// `object_id` this node's id).
fn cluster_event(state: &State, severity: Severity, msg: &str, details: serde_json::Value) {
    let me = state.config().cluster.node_id.to_string();
    state
        .hub()
        .events()
        .emit(severity, "cluster", &me, msg, details);
}

/// Delivers a message another node forwarded here, and answers it once the
/// copies for persistent sessions are stored.
/// The message a forwarded PUBLISH carries (its topic and payload moved
/// out of `msg`); the refusal to answer when it does not decode.
pub(super) fn forwarded_message(
    msg: &mut cluster::ForwardedPublish,
) -> Result<Arc<Message>, cluster::ForwardRefusal> {
    let mut properties = msg.properties.clone();
    let properties = crate::codec::decode_publish_properties(&mut properties)
        .map_err(|e| cluster::ForwardRefusal::Invalid(format!("properties do not decode: {e}")))?;
    let qos = QoS::from_u8(msg.qos)
        .ok_or_else(|| cluster::ForwardRefusal::Invalid(format!("QoS {} is not valid", msg.qos)))?;
    Ok(Arc::new(Message {
        topic: std::mem::take(&mut msg.topic).into(),
        payload: std::mem::take(&mut msg.payload),
        qos,
        retain: msg.retain,
        properties,
        expires_at_ms: msg.expires_at_ms,
        origin: crate::message::BROKER_ORIGIN,
        received_at: Some(std::time::Instant::now()),
        uid: msg.uid,
    }))
}

pub(super) fn deliver_forwarded(
    state: &State,
    mut msg: cluster::ForwardedPublish,
    ack: tokio::sync::oneshot::Sender<Result<(), cluster::ForwardRefusal>>,
) {
    let span = crate::telemetry::apply_span(&msg.traceparent, msg.origin_node, &msg.topic);
    let _entered = span.enter();
    let message = match forwarded_message(&mut msg) {
        Ok(message) => message,
        Err(refusal) => {
            let _ = ack.send(Err(refusal));
            return;
        }
    };
    let mut guard = LazyGuard::forwarded(ack, span.clone());
    if let Some(client_id) = &msg.target_client {
        // A session that moved on from here forwards it to its owner now
        // (the sender, a node whose session moved here, read the owner
        // before this node handed it on).
        //
        // postmortem: long chaos run seed 22, 2026-12-07 (`shared-no-loss`,
        // p1#3682): node 4, restarted, sent the copy it held for shared1 to
        // node 1, the owner it read; node 1 had handed the session back to
        // node 4 30 ms before, dropped the copy, and the copy stayed on
        // node 4's disk under a session that had moved on: the group never
        // got it.
        let local = state
            .registry()
            .get(client_id.as_str())
            .or_else(|| state.registry().moved_for(client_id.as_str()));
        match local {
            Some(session) => session.send(Deliver {
                qos: message.qos,
                message,
                retain: msg.retain,
                subscription_ids: msg.subscription_ids.into_iter().collect(),
                shared_filter: None,
                ack: guard.get(),
                backpressure: Backpressure::Untracked,
                flow: msg.flow,
                span: span.clone(),
            }),
            None => {
                state.metrics().dropped(DropReason::SessionGone, 1);
                tracing::warn!(%client_id, "message handed over for a session this node does not have");
                if let Some(g) = guard.get() {
                    g.fail();
                }
            }
        }
        return;
    }
    route(
        state,
        &message,
        &mut guard,
        Scope::Local {
            plain: !msg.no_plain_match,
            shared: &msg.shared_filters,
        },
    );
}

/// Whether a session kept here after a hand-over to `taker` (whose claim
/// is not in) is handed over again to `requester`: when the taker asks
/// again, or is down (it failed before its claim).
///
/// postmortem: CI, 2026-12-07 (`k8s_pods` rolling restart, 57 QoS 2
/// copies twice): a draining node handed a session to the node adopting
/// it, then again to the node its 3.1.1 client reconnected to; both ran
/// the session, and the copies one had delivered the other delivered too.
fn hand_kept_again(taker: u64, requester: u64, taker_up: bool) -> bool {
    requester == taker || !taker_up
}

#[cfg(test)]
mod kept_tests {
    use super::hand_kept_again;

    #[test]
    fn a_kept_session_goes_to_a_second_taker_only_when_the_first_is_down() {
        assert!(hand_kept_again(2, 2, true), "the taker asking again");
        assert!(
            !hand_kept_again(2, 3, true),
            "taker up: its claim is coming"
        );
        assert!(hand_kept_again(2, 3, false), "taker down: the next node");
    }
}
