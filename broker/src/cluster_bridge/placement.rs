//! Keeping replicas and second copies where they belong (issue 12;
//! ARCHITECTURE section 5.6): sessions place their replica again when the
//! members, or which of them are up, change; replicas held here for
//! sessions owned elsewhere now are dropped; second copies of copies kept
//! by a node removed for good are taken over, and those their node no
//! longer keeps are dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ClusterBridge;

/// How often a node checks whether its sessions' replicas are where they
/// should be.
const PLACE_EVERY: Duration = Duration::from_secs(1);

/// How often a node drops the replicas it holds for sessions that another
/// node owns now, or that ended.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// For as long as the node runs: when the members, or which of them are
/// up, change, every session here places its replica again if it is to be
/// on another node now (a replica lost with its node is re-created); and
/// every [`SWEEP_EVERY`], replicas this node holds for a session whose
/// owner changed since (it placed its own) or that ended are dropped.
pub async fn keep_replicas_placed(state: crate::state::State, bridge: Arc<ClusterBridge>) {
    if bridge.replicas.copies() < 2 {
        return;
    }
    let mut tick = tokio::time::interval(PLACE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_view = Vec::new();
    let mut last_sweep = Instant::now();
    loop {
        tick.tick().await;
        let view = bridge.placement_view();
        if view != last_view {
            last_view = view;
            for (_, session) in state.registry().snapshot() {
                session.send(crate::handle::Input::PlaceReplica);
            }
        }
        if !bridge.cluster.status().ready {
            continue;
        }
        take_over_kept(&state, &bridge);
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            let ops = bridge.stale_replicas();
            if !ops.is_empty() {
                tracing::info!(
                    replicas = ops.len(),
                    "dropping replicas of sessions owned elsewhere now or ended"
                );
                state.writer().submit(ops, None);
            }
            bridge.reconcile_kept().await;
        }
    }
}

/// Second copies held here of copies kept by a node that is no longer a
/// member (removed for good, its disk with it): this node keeps them now,
/// as its own, and sends them to their node; those for this node are
/// delivered here; those for a node that left too are dropped.
fn take_over_kept(state: &crate::state::State, bridge: &ClusterBridge) {
    let origins = match bridge.store.load_replica_forward_origins() {
        Ok(origins) => origins,
        Err(e) => {
            tracing::error!(error = %e, "cannot list the second copies of kept copies held here");
            return;
        }
    };
    let members: Vec<u64> = bridge.cluster.members().iter().map(|m| m.id).collect();
    for origin in origins.into_iter().filter(|o| !members.contains(o)) {
        let copies = match bridge.store.load_replica_forwards(origin) {
            Ok(copies) => copies,
            Err(e) => {
                tracing::error!(origin, error = %e, "unreadable second copies of kept copies");
                continue;
            }
        };
        let (mut sent, mut here, mut dropped) = (0, 0, 0);
        for (node, _, copy) in copies {
            let forwarded = match cluster::decode_forwarded(&copy) {
                Ok(f) if node == bridge.node_id => {
                    let (ack, _) = tokio::sync::oneshot::channel();
                    super::events::deliver_forwarded(state, f, ack);
                    here += 1;
                    continue;
                }
                Ok(f) if members.contains(&node) => f,
                Ok(_) => {
                    dropped += 1;
                    continue;
                }
                Err(e) => {
                    tracing::error!(origin, node, error = %e, "unreadable second copy dropped");
                    dropped += 1;
                    continue;
                }
            };
            bridge.keep(node, forwarded, None);
            sent += 1;
        }
        // after the copies' own records: the writer keeps the order
        state
            .writer()
            .submit(vec![storage::WriteOp::DropReplicaForwards { origin }], None);
        tracing::warn!(
            origin,
            sent,
            delivered_here = here,
            dropped,
            "copies kept by a node removed from the cluster taken over from their second copies"
        );
    }
}

impl ClusterBridge {
    /// Drops the second copies held here that their keeping node, a member
    /// that answers, no longer keeps (its node acknowledged them, and the
    /// word did not reach this node, or it restarted before telling).
    async fn reconcile_kept(&self) {
        let origins = match self.store.load_replica_forward_origins() {
            Ok(origins) => origins,
            Err(_) => return,
        };
        for origin in origins {
            if !self.is_up(origin) || origin == self.node_id {
                continue;
            }
            let cluster = self.cluster.clone();
            let asked = self
                .runtime
                .spawn(async move { cluster.kept_copies(origin).await })
                .await;
            let Ok(Ok((kept, next_seq))) = asked else {
                continue;
            };
            let kept: std::collections::HashSet<(u64, u64)> = kept.into_iter().collect();
            let Ok(held) = self.store.load_replica_forwards(origin) else {
                continue;
            };
            let ops: Vec<storage::WriteOp> = held
                .into_iter()
                .filter(|(node, seq, _)| *seq < next_seq && !kept.contains(&(*node, *seq)))
                .map(|(node, seq, _)| storage::WriteOp::DeleteReplicaForward { origin, node, seq })
                .collect();
            if !ops.is_empty() {
                tracing::info!(
                    origin,
                    dropped = ops.len(),
                    "second copies no longer kept by their node dropped"
                );
                self.kept.writer().submit(ops, None);
            }
        }
    }
}

impl ClusterBridge {
    /// What replica placement depends on: the members, and which of them
    /// are down or failed a request lately.
    fn placement_view(&self) -> Vec<(u64, bool)> {
        let down = self.down.read().clone();
        self.cluster
            .members()
            .into_iter()
            .map(|m| {
                let out = down.contains(&m.id) || self.replicas.recently_failed(m.id);
                (m.id, out)
            })
            .collect()
    }

    /// Drops of the replicas held here whose shipping owner no longer owns
    /// the session (each conditional on that owner, `DropReplicaOf`).
    fn stale_replicas(&self) -> Vec<storage::WriteOp> {
        let held = match self.store.load_replica_clients() {
            Ok(held) => held,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the session replicas held here");
                return Vec::new();
            }
        };
        held.into_iter()
            .filter(|(client_id, meta)| self.session_owner(client_id) != Some(meta.owner))
            .map(|(client_id, meta)| storage::WriteOp::DropReplicaOf {
                client_id,
                owner: meta.owner,
            })
            .collect()
    }
}
