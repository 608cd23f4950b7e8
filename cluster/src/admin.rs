//! Admin calls to a running node, for `tern cluster status` and
//! `tern cluster leave`: plain gRPC clients of the `Admin` service, usable
//! without starting a `Cluster`.

use std::time::Duration;

use tonic::transport::Endpoint;

use crate::{
    error::{Error, Result},
    events::PeerStatus,
    types::{member_from_proto, Member},
};

/// A node's status as `Admin.Status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteStatus {
    /// The node asked.
    pub node_id: u64,
    /// The leader it knows, if any.
    pub leader: Option<u64>,
    /// Its raft term.
    pub term: u64,
    /// Its commit index.
    pub commit_index: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// Its raft role.
    pub role: String,
    /// It has a leader and applied what it knew committed.
    pub ready: bool,
    /// It belongs to a cluster (false while joining).
    pub initialized: bool,
    /// Members and their addresses.
    pub members: Vec<Member>,
    /// Voters of the raft configuration.
    pub voters: Vec<u64>,
    /// Its peers, with the time since it last heard from each.
    pub peers: Vec<PeerStatus>,
}

async fn client(
    address: &str,
    timeout: Duration,
) -> Result<proto::admin_client::AdminClient<tonic::transport::Channel>> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| Error::Config(format!("address `{address}`: {e}")))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| Error::Peer {
            node: 0,
            reason: format!("{address}: {e}"),
        })?;
    Ok(proto::admin_client::AdminClient::new(channel))
}

fn peer_error(address: &str, status: &tonic::Status) -> Error {
    Error::Peer {
        node: 0,
        reason: format!("{address}: {:?}: {}", status.code(), status.message()),
    }
}

/// Asks the node at `address` (host:port of its cluster gRPC endpoint) for
/// its status.
pub async fn remote_status(address: &str, timeout: Duration) -> Result<RemoteStatus> {
    let s = client(address, timeout)
        .await?
        .status(proto::StatusRequest {})
        .await
        .map_err(|e| peer_error(address, &e))?
        .into_inner();
    Ok(RemoteStatus {
        node_id: s.node_id,
        leader: (s.leader != 0).then_some(s.leader),
        term: s.term,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        role: s.role,
        ready: s.ready,
        initialized: s.initialized,
        members: s
            .members
            .into_iter()
            .map(member_from_proto)
            .collect::<Result<_>>()?,
        voters: s.voters,
        peers: s
            .peers
            .into_iter()
            .map(|p| PeerStatus {
                id: p.id,
                address: p.address,
                last_contact: p.last_contact_ms.map(Duration::from_millis),
                matched: p.matched,
            })
            .collect(),
    })
}

/// Asks the node at `address` to remove node `id` from the cluster; returns
/// once the change is applied there.
pub async fn remote_leave(address: &str, id: u64, timeout: Duration) -> Result<()> {
    client(address, timeout)
        .await?
        .leave(proto::LeaveRequest { id })
        .await
        .map_err(|e| peer_error(address, &e))?;
    Ok(())
}
