//! Draining a node of a cluster before it stops (SIGTERM: a pod stop, a
//! rolling restart), so that stopping it loses no session:
//! 1. new connections are refused with CONNACK 0x9C and the Server
//!    Reference of a live node (3.1/3.1.1: return code 3); `/readyz` says
//!    the node drains;
//! 2. each connected client is disconnected: a 5.0 client gets DISCONNECT
//!    0x9C (Use another server) with the Server Reference of the node its
//!    session goes to; wills are not published (the session goes on);
//! 3. each persistent session still here is adopted by that node
//!    ([`adopt`] there): it takes the session over from here (queued and
//!    in-flight messages, QoS 2 state, subscriptions), stores it and claims
//!    it in the replicated state; clients that reconnected first took their
//!    session over themselves;
//! 4. the sessions that moved, which forward to their new owner what other
//!    nodes still route here, withdraw their routes; once the other nodes
//!    know it and the copies on their way are forwarded, and the messages
//!    this node forwards to others are acknowledged (or the time is up),
//!    leadership goes to another voter;
//!
//! Then the normal shutdown follows (`crate::server`).
//!
//! Bounded by `cluster.drain_timeout_secs`: what is not handed over by then
//! stays in this node's store and is served again when it restarts.
//!
//! The same adoption serves a node removed from the cluster for good
//! (`tern cluster remove`): its sessions are taken in by the other nodes
//! from their replicated records ([`rehome_orphans`]), each by the member
//! its client id hashes to, so that messages for them are queued and their
//! expiry runs again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use futures::StreamExt;

use crate::cluster_bridge::ClusterBridge;
use crate::handle::{Imported, Input};
use crate::nodes::Proposal;
use crate::session::Session;
use crate::state::State;

/// Connections told to go elsewhere at once.
const DISCONNECT_CONCURRENCY: usize = 256;
/// Sessions being adopted at once.
const ADOPT_CONCURRENCY: usize = 64;

/// What a drain did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainReport {
    /// Connected clients sent to other nodes.
    pub clients: usize,
    /// Persistent sessions adopted by other nodes.
    pub handed_over: usize,
    /// Persistent sessions whose client took them elsewhere first.
    pub taken_by_clients: usize,
    /// Persistent sessions left here (no node could adopt them in time).
    pub left: usize,
    /// Messages for other nodes still unacknowledged at the end.
    pub unforwarded: u64,
    /// Leadership was handed to another voter (or this node did not lead).
    pub not_leader: bool,
    pub elapsed: Duration,
}

/// Drains this node within `timeout` (see the module doc). Nothing to do
/// when no other node is up.
pub async fn drain(state: &State, bridge: &Arc<ClusterBridge>, timeout: Duration) -> DrainReport {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut report = DrainReport::default();
    if bridge.redirect("").is_none() {
        tracing::info!("no other node is up: stopping without a drain");
        return report;
    }
    state.begin_drain();
    tracing::info!(
        ?timeout,
        "draining: sending clients to other nodes and handing sessions over"
    );

    let online: Vec<_> = state
        .registry()
        .snapshot()
        .into_iter()
        .filter(|(_, s)| s.is_online())
        .collect();
    report.clients = online.len();
    futures::stream::iter(online)
        .map(|(client_id, session)| {
            let reference = bridge
                .redirect(&client_id)
                .map(|(_, address)| ByteString::from(address));
            async move {
                let asked = session.ask(|reply| Input::Drain(reference, reply));
                let _ = tokio::time::timeout_at(deadline, asked).await;
            }
        })
        .buffer_unordered(DISCONNECT_CONCURRENCY)
        .for_each(|()| async {})
        .await;

    let persistent: Vec<ByteString> = state
        .registry()
        .snapshot()
        .into_iter()
        .filter(|(_, s)| s.is_persistent())
        .map(|(client_id, _)| client_id)
        .collect();
    let outcomes: Vec<Outcome> = futures::stream::iter(persistent)
        .map(|client_id| hand_over(state, bridge, client_id, deadline))
        .buffer_unordered(ADOPT_CONCURRENCY)
        .collect()
        .await;
    for outcome in outcomes {
        match outcome {
            Outcome::Adopted => report.handed_over += 1,
            Outcome::TakenByClient => report.taken_by_clients += 1,
            Outcome::Left => report.left += 1,
        }
    }

    // Sessions that moved still forward what other nodes route here: their
    // routes go now, and the node waits until the other nodes know it (the
    // proposals applied here, then a few raft ticks for the followers) and
    // what was on its way is forwarded.
    let moved = state.registry().moved();
    for session in &moved {
        let _ = tokio::time::timeout_at(deadline, session.ask(Input::Retire)).await;
    }
    if !moved.is_empty() {
        let _ = tokio::time::timeout_at(deadline, bridge.settled()).await;
        let tick = Duration::from_millis(state.config().cluster.tick_ms);
        tokio::time::sleep((tick * 5).max(Duration::from_millis(200))).await;
    }
    while state
        .registry()
        .forwarding()
        .load(std::sync::atomic::Ordering::Acquire)
        > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Messages accepted here for other nodes' sessions: acknowledged there
    // before this node goes.
    loop {
        report.unforwarded = bridge
            .cluster()
            .forward_stats()
            .iter()
            .filter(|s| bridge.is_up(s.node))
            .map(|s| s.queued)
            .sum();
        if report.unforwarded == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let me = bridge.node_id();
    let step_down_by = (tokio::time::Instant::now() + Duration::from_secs(5)).min(deadline);
    loop {
        let status = bridge.cluster().status();
        report.not_leader = status.leader != Some(me) || status.voters.len() < 2;
        if report.not_leader || tokio::time::Instant::now() >= step_down_by {
            break;
        }
        bridge.cluster().step_down();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.elapsed = started.elapsed();
    tracing::info!(
        clients = report.clients,
        handed_over = report.handed_over,
        taken_by_clients = report.taken_by_clients,
        left = report.left,
        unforwarded = report.unforwarded,
        not_leader = report.not_leader,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "drained"
    );
    report
}

enum Outcome {
    Adopted,
    TakenByClient,
    Left,
}

/// Has one persistent session adopted by the node its client is sent to,
/// or by another live node if that one fails.
async fn hand_over(
    state: &State,
    bridge: &Arc<ClusterBridge>,
    client_id: ByteString,
    deadline: tokio::time::Instant,
) -> Outcome {
    let mut tried = Vec::new();
    while tokio::time::Instant::now() < deadline {
        if state.registry().get(&client_id).is_none() {
            return Outcome::TakenByClient;
        }
        let Some((node, _)) = bridge.redirect(&client_id) else {
            break;
        };
        // The node the client was sent to first; another if it failed.
        let node = if tried.contains(&node) {
            let other = bridge
                .cluster()
                .members()
                .into_iter()
                .map(|m| m.id)
                .find(|id| *id != bridge.node_id() && bridge.is_up(*id) && !tried.contains(id));
            match other {
                Some(id) => id,
                None => break,
            }
        } else {
            node
        };
        tried.push(node);
        let cluster = bridge.cluster().clone();
        let id = client_id.to_string();
        let adopted = bridge
            .runtime()
            .spawn(async move { cluster.adopt(node, id).await });
        match tokio::time::timeout_at(deadline, adopted).await {
            Ok(Ok(Ok(()))) => {
                // Stored and claimed there: what the moved actor kept
                // until the claim is in goes now, before this node stops.
                if let Some(moved) = state.registry().moved_for(&client_id) {
                    moved.ask(crate::handle::Input::Supersede).await;
                }
                return Outcome::Adopted;
            }
            Ok(Ok(Err(e))) => {
                tracing::warn!(%client_id, node, error = %e, "session not adopted");
            }
            Ok(Err(e)) => tracing::warn!(%client_id, node, error = %e, "adopt task failed"),
            Err(_) => break,
        }
    }
    if state.registry().get(&client_id).is_none() {
        return Outcome::TakenByClient;
    }
    tracing::warn!(%client_id, "session left on the draining node: no other node adopted it");
    Outcome::Left
}

/// This node's side of another node's drain: takes the session `client_id`
/// over from `from`, stores it, claims it in the replicated state. A client
/// connecting here for it meanwhile waits until it is done
/// (`ClusterBridge::take_session`).
pub async fn adopt(
    state: State,
    bridge: Arc<ClusterBridge>,
    client_id: String,
    from: u64,
) -> Result<(), String> {
    let Some(_adopting) = bridge.adopting(&client_id) else {
        return Err(format!("session `{client_id}` is being adopted already"));
    };
    let me = bridge.node_id();
    if bridge.session_owner(&client_id) == Some(me) && state.registry().get(&client_id).is_some() {
        // Its client reconnected here first and took it over itself.
        return Ok(());
    }
    let taken = bridge
        .take_over(from, &client_id)
        .await
        .map_err(|e| e.to_string())?;
    install(&state, &bridge, client_id, Imported::State(taken), from).await
}

/// Takes in the session `client_id` of a node removed from the cluster
/// (`from`), from its replicated record: subscriptions and expiry, without
/// the messages that node held (README, Cluster). From then on it is served
/// here: messages for it are queued, its expiry runs (one that passed ends
/// it at once). Skipped if it is being adopted already or has another
/// owner by now (its client reconnected).
pub async fn rehome(
    state: State,
    bridge: Arc<ClusterBridge>,
    client_id: String,
    from: u64,
    record: cluster::SessionInfo,
) -> Result<(), String> {
    let Some(_adopting) = bridge.adopting(&client_id) else {
        return Ok(());
    };
    if bridge.session_owner(&client_id) != Some(from) {
        return Ok(());
    }
    let imported = match bridge.fetch_replica(&client_id, from).await {
        Some(replica) => {
            tracing::info!(%client_id, from, messages = replica.outgoing.len(), "session of a removed node taken in from its replica");
            let failed_over = cluster::FailedOver {
                from,
                through_seq: replica.max_seq,
            };
            let state = crate::cluster_bridge::state_from_replica(&client_id, record, replica);
            Imported::Replica(state, failed_over)
        }
        None => {
            tracing::info!(%client_id, from, "session of a removed node taken in from its replicated record");
            Imported::Record(record)
        }
    };
    install(&state, &bridge, client_id, imported, from).await
}

/// Starts (or finds) the session here with `imported`, stores it and
/// claims it from `from` in the replicated state.
async fn install(
    state: &State,
    bridge: &ClusterBridge,
    client_id: String,
    imported: Imported,
    from: u64,
) -> Result<(), String> {
    let failed_over = match &imported {
        Imported::Replica(_, failed_over) => Some(*failed_over),
        Imported::State(_) | Imported::Record(_) => None,
    };
    let key = ByteString::from(client_id.as_str());
    let session = state.registry().find_or_start(&key, || {
        Session::start_on(state.clone(), key.clone(), state.next_worker())
    });
    let info = session
        .ask(|reply| Input::Adopt(imported, reply))
        .await
        .flatten()
        .ok_or_else(|| format!("session `{client_id}` ended while it was adopted"))?;
    let claimed = bridge.propose_applied(Proposal::Claim(
        client_id.clone(),
        info,
        Some(from),
        failed_over,
    ));
    match claimed.await {
        Ok(()) => Ok(()),
        Err(_) => Err(format!("the claim of session `{client_id}` was dropped")),
    }
}

/// How often a node looks for sessions of removed nodes to take in.
const REHOME_EVERY: Duration = Duration::from_secs(2);

/// Takes in, for as long as the node runs, the sessions of nodes removed
/// from the cluster that fall to this node
/// (`ClusterBridge::orphans_to_rehome`), a bounded number at once; on the
/// leader, first removes members out of contact for longer than
/// `cluster.remove_after_down_secs` (when set). Run on the cluster's
/// runtime.
pub async fn rehome_orphans(state: State, bridge: Arc<ClusterBridge>) {
    let mut tick = tokio::time::interval(REHOME_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let remove_after = Duration::from_secs(state.config().cluster.remove_after_down_secs);
    loop {
        tick.tick().await;
        if !remove_after.is_zero() {
            for node in bridge.down_for(remove_after) {
                tracing::warn!(
                    node,
                    after_secs = remove_after.as_secs(),
                    "removing a node out of contact for longer than cluster.remove_after_down_secs"
                );
                if let Err(e) = bridge.cluster().remove_member(node).await {
                    tracing::warn!(node, error = %e, "cannot remove the node; tried again");
                }
            }
        }
        let orphans = bridge.orphans_to_rehome();
        if orphans.is_empty() {
            continue;
        }
        tracing::info!(
            sessions = orphans.len(),
            "taking in sessions of nodes removed from the cluster"
        );
        futures::stream::iter(orphans)
            .for_each_concurrent(ADOPT_CONCURRENCY, |(client_id, from, record)| {
                let (state, bridge) = (state.clone(), bridge.clone());
                async move {
                    let id = client_id.clone();
                    if let Err(e) = rehome(state, bridge, client_id, from, record).await {
                        tracing::warn!(client_id = %id, from, error = %e, "session of a removed node not taken in; tried again");
                    }
                }
            })
            .await;
    }
}
