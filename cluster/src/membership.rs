//! Joining: how a node with an empty data directory becomes a member, and
//! how every node announces its addresses.
//!
//! It owns the decision between founding a cluster and joining one. It
//! never changes the configuration itself: a join is a request to a member,
//! which proposes the change.
//!
//! Rules, for a node whose raft storage is uninitialized:
//! - no seeds, or only itself: a cluster of one, founded in `Cluster::start`;
//! - a seed answers that it belongs to a cluster: ask it to add this node
//!   (`Admin.Join`), then wait for the leader's snapshot;
//! - every seed answers and none belongs to a cluster, and this node is one
//!   of them: found the cluster with all seeds as voters. Every seed decides
//!   the same set, so founders agree without talking further. A node that is
//!   not a seed never founds (it waits for the seeds);
//! - otherwise (a seed unreachable, a name not resolving yet): retry after
//!   `join_retry`.
//!
//! # Lifecycle
//! 1. Spawned by `Cluster::start`; joins or founds as above if needed.
//! 2. Once the node is ready, proposes its addresses (`SetMember`) if the
//!    replicated ones differ, retrying until applied.
//! 3. Ends then, or at shutdown.

use std::collections::BTreeSet;

use tokio::sync::oneshot;

use crate::{
    cluster::Cluster,
    driver::Input,
    error::{Error, Result},
    types::Member,
};

/// See the module docs.
pub(crate) async fn run(cluster: Cluster) {
    let shutdown = cluster.inner.shutdown.clone();
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = membership(&cluster) => {}
    }
}

async fn membership(cluster: &Cluster) {
    let retry = cluster.inner.config.join_retry;
    while !cluster.status().initialized {
        match join_or_found(cluster).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                tracing::info!(node = cluster.node_id(), error = %e, "joining the cluster; will retry")
            }
        }
        tokio::time::sleep(retry).await;
    }
    // Learn the ids of seeds given by name, for their addresses.
    resolve_seed_ids(cluster).await;
    while !cluster.status().ready {
        tokio::time::sleep(cluster.inner.config.tick).await;
    }
    loop {
        match announce(cluster).await {
            Ok(()) => return,
            Err(e) => {
                tracing::info!(node = cluster.node_id(), error = %e, "announcing addresses; will retry")
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// This node as a member.
fn myself(cluster: &Cluster) -> Member {
    Member {
        id: cluster.node_id(),
        address: cluster.inner.advertise.clone(),
        mqtt_address: cluster.inner.config.mqtt_advertise.clone(),
    }
}

async fn seed_status(cluster: &Cluster, address: &str) -> Result<proto::StatusResponse> {
    let channel = cluster.inner.peers.connect(address)?;
    let mut client = proto::admin_client::AdminClient::new(channel);
    let mut request = tonic::Request::new(proto::StatusRequest {});
    request.set_timeout(cluster.inner.config.rpc_timeout);
    let status = client
        .status(request)
        .await
        .map_err(|s| Error::Peer {
            node: 0,
            reason: format!("seed {address}: {}", s.message()),
        })?
        .into_inner();
    Ok(status)
}

/// One round of the rules; `Ok(true)` once joined or founded.
async fn join_or_found(cluster: &Cluster) -> Result<bool> {
    let me = cluster.node_id();
    let mut voters = BTreeSet::new();
    let mut all_answered = true;
    let mut initialized = None;
    for seed in &cluster.inner.config.seeds {
        if seed.id == Some(me) {
            voters.insert(me);
            continue;
        }
        match seed_status(cluster, &seed.address).await {
            Ok(status) => {
                voters.insert(status.node_id);
                if status.node_id != me {
                    cluster
                        .inner
                        .peers
                        .learn_seed(status.node_id, seed.address.clone());
                }
                if status.initialized && initialized.is_none() {
                    initialized = Some(seed.address.clone());
                }
            }
            Err(e) => {
                tracing::debug!(node = me, seed = %seed.address, error = %e, "seed not answering");
                all_answered = false;
            }
        }
    }
    if let Some(address) = initialized {
        let channel = cluster.inner.peers.connect(&address)?;
        let mut client = proto::admin_client::AdminClient::new(channel);
        let mut request = tonic::Request::new(proto::JoinRequest {
            member: Some((&myself(cluster)).into()),
        });
        request
            .set_timeout(cluster.inner.config.proposal_timeout + cluster.inner.config.rpc_timeout);
        client.join(request).await.map_err(|s| Error::Peer {
            node: 0,
            reason: format!("join through {address}: {}", s.message()),
        })?;
        tracing::info!(node = me, via = %address, "joined the cluster");
        return Ok(true);
    }
    if all_answered && voters.contains(&me) {
        let (done, rx) = oneshot::channel();
        let voters: Vec<u64> = voters.into_iter().collect();
        cluster
            .inner
            .driver
            .send(Input::Bootstrap {
                voters: voters.clone(),
                done,
            })
            .map_err(|_| Error::Stopped("raft driver stopped".into()))?;
        rx.await
            .map_err(|_| Error::Stopped("raft driver stopped".into()))??;
        tracing::info!(node = me, ?voters, "founded the cluster");
        return Ok(true);
    }
    Ok(false)
}

async fn resolve_seed_ids(cluster: &Cluster) {
    for seed in &cluster.inner.config.seeds {
        if seed.id.is_none() {
            if let Ok(status) = seed_status(cluster, &seed.address).await {
                if status.node_id != cluster.node_id() {
                    cluster
                        .inner
                        .peers
                        .learn_seed(status.node_id, seed.address.clone());
                }
            }
        }
    }
}

/// Proposes this node's addresses if the replicated ones differ.
async fn announce(cluster: &Cluster) -> Result<()> {
    let me = myself(cluster);
    let current = cluster.with_state(|s| s.member(me.id).cloned());
    if current.as_ref() == Some(&me) {
        return Ok(());
    }
    let command = proto::proposal::Command::SetMember(proto::SetMember {
        member: Some((&me).into()),
    });
    cluster.propose("member addresses", command).await.map(drop)
}
