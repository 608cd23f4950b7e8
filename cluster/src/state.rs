//! The replicated state machine: members, routes, sessions, retained messages.
//!
//! It owns the cluster-wide state that every node holds a copy of, and the
//! rule for changing it: [`ClusterState::apply`] takes one committed proposal
//! and returns what it did ([`Outcome`]) and what changed ([`Change`]). It
//! does no I/O, reads no clock and no randomness, and iterates only ordered
//! maps, so the same entries in the same order give the same state and the
//! same snapshot bytes on every node. It never fails: an invalid command
//! changes nothing and answers [`Outcome::Invalid`], the same everywhere.
//!
//! Rules:
//! - routes: `filter -> nodes`. Add and remove are idempotent set
//!   operations; each node counts its own subscribers (`routes.rs`) and
//!   proposes only when its count goes 0 -> 1 or 1 -> 0.
//! - sessions: `ClaimSession` moves a session to the claiming node (a
//!   client connecting elsewhere takes its session along) and reports the
//!   previous owner, if the session is still owned by the node the
//!   claimant saw (`expected_owner`): a claim that commits late, after a
//!   newer one, is refused with `NotOwner` instead of taking the session
//!   from the client's newer connection. Update and
//!   release only apply for the owner, so a node that lost a session cannot
//!   overwrite the new owner's copy.
//! - members: only ids in the raft configuration have an entry; a
//!   configuration change adds or removes it (and a removed node's routes).
//! - dedupe: the last [`RECENT_REQUESTS`] request ids of each proposer are
//!   remembered with their outcome. A proposal re-sent after a leader change
//!   may commit twice; the second copy is skipped and answered with the
//!   first outcome, so a retried claim cannot undo a later one.
//!
//! # Lifecycle
//! 1. `ClusterState::default()` or [`ClusterState::restore`] from a snapshot.
//! 2. The raft driver applies each committed entry, in log order, and
//!    configuration changes with [`ClusterState::apply_conf_change`].
//! 3. [`ClusterState::snapshot`] encodes it for raft (log compaction, a
//!    lagging follower); [`ClusterState::diff`] lists what a received
//!    snapshot changed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use prost::Message as _;
use proto::{outcome::Kind, proposal::Command};
use storage::StoredMessage;

use crate::{
    error::{Error, Result},
    types::{
        member_from_proto, message_from_proto, message_to_proto, Member, RetainedMessage,
        SessionInfo,
    },
};

/// Request ids remembered per proposer.
pub const RECENT_REQUESTS: usize = 4096;

/// What applying a proposal did; returned to the proposer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied, or nothing to do.
    Done,
    /// `ClaimSession` applied; the previous owner, if any.
    Claimed(Option<u64>),
    /// Update or release by a node that is not the owner: the owner, if any.
    NotOwner(Option<u64>),
    /// The command was invalid and changed nothing.
    Invalid(String),
}

/// One change of the state, reported to the broker as a `ClusterEvent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `node` now has subscribers to `filter`.
    RouteAdded { filter: String, node: u64 },
    /// `node` has no subscriber to `filter` any more.
    RouteRemoved { filter: String, node: u64 },
    /// The session is owned by `owner` (claimed, or taken over).
    SessionOwnerChanged { client_id: String, owner: u64 },
    /// The session no longer exists (released by its owner).
    SessionReleased { client_id: String },
    /// The retained message of a topic was set (empty payload: deleted).
    RetainedChanged(RetainedMessage),
    /// The member list or an address changed.
    MembersChanged,
    /// A hub route made through the admin API was set (`Some` definition)
    /// or deleted (`None`).
    HubRouteChanged {
        name: String,
        definition: Option<String>,
    },
}

/// A replicated session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The node holding the session now.
    pub owner: u64,
    /// Its subscriptions and expiry.
    pub info: SessionInfo,
    /// Nodes whose local copy of the session a fail-over superseded (a node
    /// took it from a replica while that node was unreachable), with the
    /// seq up to which that copy's messages are stale: coming back, such a
    /// node hands over only later ones. A node leaves the map when it
    /// claims the session again or leaves the cluster.
    pub superseded: BTreeMap<u64, u64>,
}

/// The requests of one proposer most recently applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Recent {
    order: VecDeque<u64>,
    outcomes: BTreeMap<u64, Outcome>,
}

/// The state machine. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Raft configuration members (voters and learners) with their addresses.
    members: BTreeMap<u64, Member>,
    routes: BTreeMap<String, BTreeSet<u64>>,
    sessions: BTreeMap<String, Session>,
    retained: BTreeMap<String, StoredMessage>,
    /// Hub routes made through the admin API: name -> definition (JSON).
    hub_routes: BTreeMap<String, String>,
    recent: BTreeMap<u64, Recent>,
}

impl ClusterState {
    /// Members, by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// One member.
    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Every route: filter and the nodes with subscribers to it.
    pub fn routes(&self) -> &BTreeMap<String, BTreeSet<u64>> {
        &self.routes
    }

    /// Whether `node` has a route for `filter`.
    pub fn has_route(&self, filter: &str, node: u64) -> bool {
        self.routes.get(filter).is_some_and(|n| n.contains(&node))
    }

    /// Hub routes made through the admin API: name -> definition.
    pub fn hub_routes(&self) -> &BTreeMap<String, String> {
        &self.hub_routes
    }

    /// One session.
    pub fn session(&self, client_id: &str) -> Option<&Session> {
        self.sessions.get(client_id)
    }

    /// Every session, by client id.
    pub fn sessions(&self) -> &BTreeMap<String, Session> {
        &self.sessions
    }

    /// Every retained message, by topic.
    pub fn retained(&self) -> &BTreeMap<String, StoredMessage> {
        &self.retained
    }

    /// The outcome of `request_id` from `origin` if it was applied recently.
    pub fn recent_outcome(&self, origin: u64, request_id: u64) -> Option<&Outcome> {
        self.recent.get(&origin)?.outcomes.get(&request_id)
    }

    /// Applies one committed proposal.
    pub fn apply(&mut self, proposal: proto::Proposal) -> (Outcome, Vec<Change>) {
        let (origin, request_id) = (proposal.origin, proposal.request_id);
        if let Some(outcome) = self.recent_outcome(origin, request_id) {
            return (outcome.clone(), Vec::new());
        }
        let mut changes = Vec::new();
        let outcome = match proposal.command {
            Some(command) => self
                .apply_command(command, &mut changes)
                .unwrap_or_else(|e| Outcome::Invalid(e.to_string())),
            None => Outcome::Invalid("proposal without a command".into()),
        };
        self.remember(origin, request_id, outcome.clone());
        (outcome, changes)
    }

    fn remember(&mut self, origin: u64, request_id: u64, outcome: Outcome) {
        let recent = self.recent.entry(origin).or_default();
        recent.order.push_back(request_id);
        recent.outcomes.insert(request_id, outcome);
        while recent.order.len() > RECENT_REQUESTS {
            if let Some(old) = recent.order.pop_front() {
                recent.outcomes.remove(&old);
            }
        }
    }

    fn apply_command(&mut self, command: Command, changes: &mut Vec<Change>) -> Result<Outcome> {
        match command {
            Command::AddRoute(r) => {
                if self
                    .routes
                    .entry(r.filter.clone())
                    .or_default()
                    .insert(r.node)
                {
                    changes.push(Change::RouteAdded {
                        filter: r.filter,
                        node: r.node,
                    });
                }
            }
            Command::RemoveRoute(r) => self.remove_route(&r.filter, r.node, changes),
            Command::ClaimSession(c) => {
                let current = self.sessions.get(&c.client_id).map(|s| s.owner);
                if let Some(expected) = c.expected_owner {
                    let expected = (expected != 0).then_some(expected);
                    if current != expected && current != Some(c.node) {
                        return Ok(Outcome::NotOwner(current));
                    }
                }
                let info = c.info.unwrap_or_default().into();
                let mut superseded = self
                    .sessions
                    .get(&c.client_id)
                    .map(|s| s.superseded.clone())
                    .unwrap_or_default();
                superseded.remove(&c.node);
                if c.failed_over_from != 0
                    && c.failed_over_from != c.node
                    && self.members.contains_key(&c.failed_over_from)
                {
                    let through = superseded.entry(c.failed_over_from).or_default();
                    *through = (*through).max(c.through_seq);
                }
                let previous = self.sessions.insert(
                    c.client_id.clone(),
                    Session {
                        owner: c.node,
                        info,
                        superseded,
                    },
                );
                let previous = previous.map(|s| s.owner);
                if previous != Some(c.node) {
                    changes.push(Change::SessionOwnerChanged {
                        client_id: c.client_id,
                        owner: c.node,
                    });
                }
                return Ok(Outcome::Claimed(previous));
            }
            Command::UpdateSession(u) => match self.sessions.get_mut(&u.client_id) {
                Some(session) if session.owner == u.node => {
                    session.info = u.info.unwrap_or_default().into();
                }
                other => return Ok(Outcome::NotOwner(other.map(|s| s.owner))),
            },
            Command::ReleaseSession(r) => match self.sessions.get(&r.client_id) {
                Some(session) if session.owner == r.node => {
                    self.sessions.remove(&r.client_id);
                    changes.push(Change::SessionReleased {
                        client_id: r.client_id,
                    });
                }
                other => return Ok(Outcome::NotOwner(other.map(|s| s.owner))),
            },
            Command::SetHubRoute(r) => {
                if r.name.is_empty() {
                    return Err(Error::decode("set_hub_route", "empty name"));
                }
                if self.hub_routes.get(&r.name) != Some(&r.definition) {
                    self.hub_routes.insert(r.name.clone(), r.definition.clone());
                    changes.push(Change::HubRouteChanged {
                        name: r.name,
                        definition: Some(r.definition),
                    });
                }
            }
            Command::DeleteHubRoute(r) => {
                if self.hub_routes.remove(&r.name).is_some() {
                    changes.push(Change::HubRouteChanged {
                        name: r.name,
                        definition: None,
                    });
                }
            }
            Command::SetRetained(s) => {
                let message = s
                    .message
                    .ok_or_else(|| Error::decode("set_retained", "no message"))?;
                let message = message_from_proto(message)?;
                if message.topic.is_empty() {
                    return Err(Error::decode("set_retained", "empty topic"));
                }
                let changed = if message.payload.is_empty() {
                    self.retained.remove(&message.topic).is_some()
                } else {
                    self.retained.get(&message.topic) != Some(&message) && {
                        self.retained.insert(message.topic.clone(), message.clone());
                        true
                    }
                };
                if changed {
                    changes.push(Change::RetainedChanged(message));
                }
            }
            Command::SetMember(m) => {
                let member = member_from_proto(
                    m.member
                        .ok_or_else(|| Error::decode("set_member", "no member"))?,
                )?;
                // Only configuration members have an entry: a late
                // announcement from a removed node must not bring it back.
                if let Some(current) = self.members.get_mut(&member.id) {
                    if *current != member {
                        *current = member;
                        changes.push(Change::MembersChanged);
                    }
                }
            }
        }
        Ok(Outcome::Done)
    }

    fn remove_route(&mut self, filter: &str, node: u64, changes: &mut Vec<Change>) {
        if let Some(nodes) = self.routes.get_mut(filter) {
            if nodes.remove(&node) {
                changes.push(Change::RouteRemoved {
                    filter: filter.to_owned(),
                    node,
                });
            }
            if nodes.is_empty() {
                self.routes.remove(filter);
            }
        }
    }

    /// Applies a configuration change that raft-rs accepted: `voters` and
    /// `learners` are the configuration after it, `added` the joining node's
    /// addresses (from the change's context). A removed node loses its
    /// member entry and its routes; the sessions it owned stay, for another
    /// node to claim.
    pub fn apply_conf_change(
        &mut self,
        origin: u64,
        request_id: u64,
        in_config: &BTreeSet<u64>,
        added: Option<Member>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let before = self.members.clone();
        self.members.retain(|id, _| in_config.contains(id));
        for &id in in_config {
            self.members.entry(id).or_insert_with(|| Member {
                id,
                address: String::new(),
                mqtt_address: String::new(),
            });
        }
        if let Some(member) = added.filter(|m| in_config.contains(&m.id)) {
            self.members.insert(member.id, member);
        }
        for id in before.keys().filter(|id| !in_config.contains(id)) {
            for session in self.sessions.values_mut() {
                session.superseded.remove(id);
            }
            let filters: Vec<String> = self
                .routes
                .iter()
                .filter(|(_, nodes)| nodes.contains(id))
                .map(|(f, _)| f.clone())
                .collect();
            for filter in filters {
                self.remove_route(&filter, *id, &mut changes);
            }
        }
        if before != self.members {
            changes.push(Change::MembersChanged);
        }
        self.remember(origin, request_id, Outcome::Done);
        changes
    }

    /// Sets the configuration members without a change record: at bootstrap
    /// and after restoring a snapshot, from the snapshot's `ConfState`.
    pub fn set_config(&mut self, in_config: &BTreeSet<u64>) {
        self.members.retain(|id, _| in_config.contains(id));
        for &id in in_config {
            self.members.entry(id).or_insert_with(|| Member {
                id,
                address: String::new(),
                mqtt_address: String::new(),
            });
        }
    }

    /// Encodes the whole state (a raft snapshot's data).
    pub fn snapshot(&self) -> Vec<u8> {
        let snapshot = proto::StateSnapshot {
            members: self.members.values().map(Into::into).collect(),
            routes: self
                .routes
                .iter()
                .map(|(filter, nodes)| proto::RouteEntry {
                    filter: filter.clone(),
                    nodes: nodes.iter().copied().collect(),
                })
                .collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(client_id, s)| proto::SessionEntry {
                    client_id: client_id.clone(),
                    owner: s.owner,
                    info: Some((&s.info).into()),
                    superseded: s
                        .superseded
                        .iter()
                        .map(|(&node, &through_seq)| proto::Superseded { node, through_seq })
                        .collect(),
                })
                .collect(),
            retained: self.retained.values().map(message_to_proto).collect(),
            hub_routes: self
                .hub_routes
                .iter()
                .map(|(name, definition)| proto::SetHubRoute {
                    name: name.clone(),
                    definition: definition.clone(),
                })
                .collect(),
            recent_requests: self
                .recent
                .iter()
                .map(|(origin, recent)| proto::RecentRequests {
                    origin: *origin,
                    requests: recent
                        .order
                        .iter()
                        .map(|id| proto::RecentRequest {
                            request_id: *id,
                            outcome: recent.outcomes.get(id).map(outcome_to_proto),
                        })
                        .collect(),
                })
                .collect(),
        };
        snapshot.encode_to_vec()
    }

    /// Decodes a snapshot made by [`ClusterState::snapshot`]. Empty data is
    /// the empty state (the bootstrap snapshot).
    pub fn restore(data: &[u8]) -> Result<ClusterState> {
        let s = proto::StateSnapshot::decode(data).map_err(|e| Error::decode("snapshot", e))?;
        let mut state = ClusterState::default();
        for m in s.members {
            let m = member_from_proto(m)?;
            state.members.insert(m.id, m);
        }
        for r in s.routes {
            state
                .routes
                .insert(r.filter, r.nodes.into_iter().collect::<BTreeSet<_>>());
        }
        for entry in s.sessions {
            let info = entry.info.unwrap_or_default().into();
            state.sessions.insert(
                entry.client_id,
                Session {
                    owner: entry.owner,
                    info,
                    superseded: entry
                        .superseded
                        .iter()
                        .map(|s| (s.node, s.through_seq))
                        .collect(),
                },
            );
        }
        for m in s.retained {
            let m = message_from_proto(m)?;
            state.retained.insert(m.topic.clone(), m);
        }
        for r in s.hub_routes {
            state.hub_routes.insert(r.name, r.definition);
        }
        for r in s.recent_requests {
            let recent = state.recent.entry(r.origin).or_default();
            for req in r.requests {
                recent.order.push_back(req.request_id);
                let outcome = outcome_from_proto(req.outcome.unwrap_or_default());
                recent.outcomes.insert(req.request_id, outcome);
            }
        }
        Ok(state)
    }

    /// The changes that turn `self` into `new` (after a snapshot from the
    /// leader replaced the state), in the order of [`Change`]'s kinds.
    pub fn diff(&self, new: &ClusterState) -> Vec<Change> {
        let mut changes = Vec::new();
        let pairs = |s: &ClusterState| -> BTreeSet<(String, u64)> {
            s.routes
                .iter()
                .flat_map(|(f, nodes)| nodes.iter().map(move |n| (f.clone(), *n)))
                .collect()
        };
        let (old_routes, new_routes) = (pairs(self), pairs(new));
        for (filter, node) in new_routes.difference(&old_routes) {
            changes.push(Change::RouteAdded {
                filter: filter.clone(),
                node: *node,
            });
        }
        for (filter, node) in old_routes.difference(&new_routes) {
            changes.push(Change::RouteRemoved {
                filter: filter.clone(),
                node: *node,
            });
        }
        for (client_id, session) in &new.sessions {
            if self.sessions.get(client_id).map(|s| s.owner) != Some(session.owner) {
                changes.push(Change::SessionOwnerChanged {
                    client_id: client_id.clone(),
                    owner: session.owner,
                });
            }
        }
        for client_id in self.sessions.keys() {
            if !new.sessions.contains_key(client_id) {
                changes.push(Change::SessionReleased {
                    client_id: client_id.clone(),
                });
            }
        }
        for (topic, message) in &new.retained {
            if self.retained.get(topic) != Some(message) {
                changes.push(Change::RetainedChanged(message.clone()));
            }
        }
        for (topic, old) in &self.retained {
            if !new.retained.contains_key(topic) {
                let mut deleted = old.clone();
                deleted.payload = bytes::Bytes::new();
                changes.push(Change::RetainedChanged(deleted));
            }
        }
        if self.members != new.members {
            changes.push(Change::MembersChanged);
        }
        for (name, definition) in &new.hub_routes {
            if self.hub_routes.get(name) != Some(definition) {
                changes.push(Change::HubRouteChanged {
                    name: name.clone(),
                    definition: Some(definition.clone()),
                });
            }
        }
        for name in self.hub_routes.keys() {
            if !new.hub_routes.contains_key(name) {
                changes.push(Change::HubRouteChanged {
                    name: name.clone(),
                    definition: None,
                });
            }
        }
        changes
    }
}

fn outcome_to_proto(o: &Outcome) -> proto::Outcome {
    let (kind, node, reason) = match o {
        Outcome::Done => (Kind::Done, None, String::new()),
        Outcome::Claimed(n) => (Kind::Claimed, *n, String::new()),
        Outcome::NotOwner(n) => (Kind::NotOwner, *n, String::new()),
        Outcome::Invalid(reason) => (Kind::Invalid, None, reason.clone()),
    };
    proto::Outcome {
        kind: kind as i32,
        node,
        reason,
    }
}

fn outcome_from_proto(o: proto::Outcome) -> Outcome {
    match Kind::try_from(o.kind) {
        Ok(Kind::Claimed) => Outcome::Claimed(o.node),
        Ok(Kind::NotOwner) => Outcome::NotOwner(o.node),
        Ok(Kind::Invalid) => Outcome::Invalid(o.reason),
        Ok(Kind::Done) | Err(_) => Outcome::Done,
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
