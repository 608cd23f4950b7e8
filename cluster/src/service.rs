//! The gRPC server: the four services of `proto/` on one listener.
//!
//! It owns turning requests from peers into inputs of this node: raft
//! batches to the driver, forwarded publishes and takeover requests to the
//! broker (as events), joins and leaves into configuration changes. Every
//! request is checked before use (`to` is this node, fields decode); a bad
//! one gets an `InvalidArgument` status, never a panic.
//!
//! # Lifecycle
//! `Cluster::start` spawns [`serve`]; it ends when the cluster's shutdown
//! token is cancelled (graceful: streams in flight are closed).

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    cluster::Cluster,
    driver::Input,
    events::ClusterEvent,
    node::MemberChange,
    transport::{decode_raft_message, MAX_GRPC_MESSAGE},
    types::member_from_proto,
    Error,
};

/// The services, over a `Cluster` handle.
#[derive(Clone)]
struct Service {
    cluster: Cluster,
}

/// Serves until shutdown.
pub(crate) async fn serve(cluster: Cluster, listener: tokio::net::TcpListener) {
    let service = Service {
        cluster: cluster.clone(),
    };
    let shutdown = cluster.inner.shutdown.clone();
    let result = tonic::transport::Server::builder()
        .add_service(
            proto::raft_transport_server::RaftTransportServer::new(service.clone())
                .max_decoding_message_size(MAX_GRPC_MESSAGE),
        )
        .add_service(
            proto::forwarding_server::ForwardingServer::new(service.clone())
                .max_decoding_message_size(MAX_GRPC_MESSAGE),
        )
        .add_service(
            proto::sessions_server::SessionsServer::new(service.clone())
                .max_encoding_message_size(MAX_GRPC_MESSAGE),
        )
        .add_service(
            proto::replicas_server::ReplicasServer::new(service.clone())
                .max_decoding_message_size(MAX_GRPC_MESSAGE)
                .max_encoding_message_size(MAX_GRPC_MESSAGE),
        )
        .add_service(proto::admin_server::AdminServer::new(service))
        // The listener is ours, so the builder's `tcp_nodelay` (for sockets
        // tonic binds) would not reach the accepted connections: set here.
        // With Nagle a response waits for the peer's delayed ACK, 40 ms per
        // replica request.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown.cancelled_owned(),
        )
        .await;
    if let Err(e) = result {
        tracing::error!(node = cluster.node_id(), error = %e, "cluster gRPC server stopped");
    }
}

fn status(e: Error) -> Status {
    match e {
        Error::Decode { .. } | Error::Invalid { .. } | Error::Config(_) => {
            Status::invalid_argument(e.to_string())
        }
        Error::Timeout { .. } => Status::deadline_exceeded(e.to_string()),
        Error::UnknownNode(_) => Status::not_found(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

#[tonic::async_trait]
impl proto::raft_transport_server::RaftTransport for Service {
    async fn send(
        &self,
        request: Request<proto::RaftBatch>,
    ) -> Result<Response<proto::RaftBatchAck>, Status> {
        let batch = request.into_inner();
        let me = self.cluster.node_id();
        if batch.to != me {
            return Err(Status::invalid_argument(format!(
                "batch for node {}, this is node {me}",
                batch.to
            )));
        }
        let messages = batch
            .messages
            .iter()
            .map(|bytes| decode_raft_message(bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        if let Some(m) = messages.iter().find(|m| m.to != me || m.from != batch.from) {
            return Err(Status::invalid_argument(format!(
                "message from {} to {} in a batch from {} to {me}",
                m.from, m.to, batch.from
            )));
        }
        self.cluster.inner.peers.touch(batch.from);
        // an empty batch is a probe (`Peers::probe`): answered, nothing to step
        if !messages.is_empty() {
            self.cluster
                .inner
                .driver
                .send(Input::Raft(messages))
                .map_err(|_| Status::unavailable("raft driver stopped"))?;
        }
        Ok(Response::new(proto::RaftBatchAck {}))
    }
}

type AckStream = ReceiverStream<Result<proto::ForwardAcks, Status>>;

#[tonic::async_trait]
impl proto::forwarding_server::Forwarding for Service {
    type ForwardStream = AckStream;

    async fn forward(
        &self,
        request: Request<Streaming<proto::ForwardFrame>>,
    ) -> Result<Response<AckStream>, Status> {
        let receiver = Arc::clone(&self.cluster.inner.receiver);
        Ok(Response::new(receiver.serve(request.into_inner())))
    }
}

#[tonic::async_trait]
impl proto::sessions_server::Sessions for Service {
    async fn takeover(
        &self,
        request: Request<proto::TakeoverRequest>,
    ) -> Result<Response<proto::TakeoverResponse>, Status> {
        let request = request.into_inner();
        let (reply, rx) = tokio::sync::oneshot::channel();
        let event = ClusterEvent::TakeoverRequested {
            client_id: request.client_id.clone(),
            requester: request.requester,
            reply,
        };
        if self.cluster.inner.events.send(event).is_err() {
            return Err(Status::unavailable("the broker is not listening"));
        }
        let timeout = self.cluster.inner.config.takeover_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(state)) => Ok(Response::new(proto::TakeoverResponse {
                state: state.as_ref().map(Into::into),
            })),
            Ok(Err(_)) => Err(Status::unavailable(
                "the broker dropped the takeover request",
            )),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the broker did not hand session `{}` over within {timeout:?}",
                request.client_id
            ))),
        }
    }

    async fn adopt(
        &self,
        request: Request<proto::AdoptRequest>,
    ) -> Result<Response<proto::AdoptResponse>, Status> {
        let request = request.into_inner();
        let (reply, rx) = tokio::sync::oneshot::channel();
        let event = ClusterEvent::AdoptRequested {
            client_id: request.client_id.clone(),
            from: request.from,
            reply,
        };
        if self.cluster.inner.events.send(event).is_err() {
            return Err(Status::unavailable("the broker is not listening"));
        }
        // The adoption is a takeover back to the asking node plus a
        // proposal: bounded by both.
        let timeout = self.cluster.inner.config.takeover_timeout * 2;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(Response::new(proto::AdoptResponse {})),
            Ok(Ok(Err(reason))) => Err(Status::failed_precondition(reason)),
            Ok(Err(_)) => Err(Status::unavailable("the broker dropped the adopt request")),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the broker did not adopt session `{}` within {timeout:?}",
                request.client_id
            ))),
        }
    }
}

#[tonic::async_trait]
impl proto::replicas_server::Replicas for Service {
    async fn replicate(
        &self,
        request: Request<proto::ReplicateRequest>,
    ) -> Result<Response<proto::ReplicateResponse>, Status> {
        let request = request.into_inner();
        let updates = request
            .updates
            .into_iter()
            .map(crate::types::replica_update_from_proto)
            .collect::<crate::Result<Vec<_>>>()
            .map_err(status)?;
        let batch = crate::ReplicaBatch {
            updates,
            keep: request
                .keep
                .into_iter()
                .map(|k| crate::KeptCopy {
                    node: k.node,
                    seq: k.seq,
                    copy: k.copy,
                })
                .collect(),
            forget: request.forget.iter().map(|k| (k.node, k.seq)).collect(),
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        let event = ClusterEvent::Replicate {
            owner: request.owner,
            batch,
            reply,
        };
        if self.cluster.inner.events.send(event).is_err() {
            return Err(Status::unavailable("the broker is not listening"));
        }
        match rx.await {
            Ok(Ok(())) => Ok(Response::new(proto::ReplicateResponse {})),
            Ok(Err(reason)) => Err(Status::internal(reason)),
            Err(_) => Err(Status::unavailable(
                "the broker dropped the replicate request",
            )),
        }
    }

    async fn kept_copies(
        &self,
        _request: Request<proto::KeptCopiesRequest>,
    ) -> Result<Response<proto::KeptCopiesResponse>, Status> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let event = ClusterEvent::KeptCopies { reply };
        if self.cluster.inner.events.send(event).is_err() {
            return Err(Status::unavailable("the broker is not listening"));
        }
        match rx.await {
            Ok((kept, next_seq)) => Ok(Response::new(proto::KeptCopiesResponse {
                kept: kept
                    .into_iter()
                    .map(|(node, seq)| proto::KeptKey { node, seq })
                    .collect(),
                next_seq,
            })),
            Err(_) => Err(Status::unavailable("the broker dropped the request")),
        }
    }

    async fn fetch(
        &self,
        request: Request<proto::FetchReplicaRequest>,
    ) -> Result<Response<proto::FetchReplicaResponse>, Status> {
        let client_id = request.into_inner().client_id;
        let (reply, rx) = tokio::sync::oneshot::channel();
        let event = ClusterEvent::FetchReplica { client_id, reply };
        if self.cluster.inner.events.send(event).is_err() {
            return Err(Status::unavailable("the broker is not listening"));
        }
        match rx.await {
            Ok(replica) => Ok(Response::new(proto::FetchReplicaResponse {
                replica: replica.as_ref().map(Into::into),
            })),
            Err(_) => Err(Status::unavailable("the broker dropped the fetch request")),
        }
    }
}

#[tonic::async_trait]
impl proto::admin_server::Admin for Service {
    async fn join(
        &self,
        request: Request<proto::JoinRequest>,
    ) -> Result<Response<proto::JoinResponse>, Status> {
        let Some(member) = request.into_inner().member else {
            return Err(Status::invalid_argument("join without a member"));
        };
        let member = member_from_proto(member).map_err(status)?;
        let voters = self.cluster.status().voters;
        if voters.contains(&member.id) {
            // Already a member (a restart with an empty data directory, or a
            // seed that found the cluster founded): refresh its addresses.
            let command = proto::proposal::Command::SetMember(proto::SetMember {
                member: Some((&member).into()),
            });
            self.cluster
                .propose("member addresses", command)
                .await
                .map_err(status)?;
        } else {
            self.cluster
                .change_members(MemberChange::Add(member))
                .await
                .map_err(status)?;
        }
        Ok(Response::new(proto::JoinResponse {
            voters: self.cluster.status().voters,
        }))
    }

    async fn leave(
        &self,
        request: Request<proto::LeaveRequest>,
    ) -> Result<Response<proto::LeaveResponse>, Status> {
        let id = request.into_inner().id;
        self.cluster.remove_member(id).await.map_err(status)?;
        Ok(Response::new(proto::LeaveResponse {}))
    }

    async fn status(
        &self,
        _: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, Status> {
        let s = self.cluster.status();
        Ok(Response::new(proto::StatusResponse {
            node_id: s.node_id,
            leader: s.leader.unwrap_or(0),
            term: s.term,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            role: s.role.to_owned(),
            members: s.members.iter().map(Into::into).collect(),
            voters: s.voters,
            learners: s.learners,
            peers: s
                .peers
                .iter()
                .map(|p| proto::PeerStatus {
                    id: p.id,
                    address: p.address.clone(),
                    last_contact_ms: p.last_contact.map(|d| d.as_millis() as u64),
                    matched: p.matched,
                })
                .collect(),
            ready: s.ready,
            initialized: s.initialized,
        }))
    }
}
