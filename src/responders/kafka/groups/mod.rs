//! Classic consumer groups: their state (members, generation, phase,
//! committed offsets) and the JoinGroup/SyncGroup barrier with the
//! member-id-required handshake and session-timeout eviction. The other
//! group APIs live in the submodules, which see the group's private state:
//! `members` (Heartbeat, LeaveGroup, DescribeGroups, ListGroups,
//! DeleteGroups) and `offsets` (OffsetCommit, OffsetFetch).

mod members;
mod offsets;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::*;
pub use members::{delete, describe, heartbeat, leave, list};
pub use offsets::{commit, fetch_offsets};

#[derive(PartialEq, Eq, Clone, Copy, Debug)]
enum Phase {
    Empty,
    Preparing,
    Completing,
    Stable,
}

struct Member {
    protocols: Vec<(StrBytes, Bytes)>,
    session: Duration,
    rebalance: Duration,
    seen: Instant,
    /// Joined in the current rebalance round.
    joined: bool,
    client_id: StrBytes,
}

pub struct Group {
    phase: Phase,
    generation: i32,
    protocol_type: StrBytes,
    protocol: Option<StrBytes>,
    leader: Option<StrBytes>,
    members: BTreeMap<StrBytes, Member>,
    assignments: HashMap<StrBytes, Bytes>,
    deadline: Instant,
    /// Committed offset, metadata and leader epoch per topic-partition.
    offsets: BTreeMap<(String, i32), (i64, Option<StrBytes>, i32)>,
}

impl Group {
    fn new() -> Group {
        Group {
            phase: Phase::Empty,
            generation: 0,
            protocol_type: StrBytes::from_static_str("consumer"),
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            assignments: HashMap::new(),
            deadline: Instant::now(),
            offsets: BTreeMap::new(),
        }
    }

    fn evict(&mut self, now: Instant) {
        let before = self.members.len();
        self.members
            .retain(|_, m| now.duration_since(m.seen) <= m.session);
        if self.members.len() != before {
            self.start_rebalance(now);
        }
    }

    fn start_rebalance(&mut self, now: Instant) {
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.leader = None;
            self.generation += 1;
            return;
        }
        if self.phase != Phase::Preparing {
            self.phase = Phase::Preparing;
            for m in self.members.values_mut() {
                m.joined = false;
            }
            let wait = self
                .members
                .values()
                .map(|m| m.rebalance)
                .max()
                .unwrap_or(Duration::from_secs(10))
                .min(Duration::from_secs(30));
            self.deadline = now + wait;
        }
    }

    /// Ends the join phase when everybody rejoined or time is up.
    fn try_complete(&mut self, now: Instant) -> bool {
        if self.phase != Phase::Preparing {
            return false;
        }
        let all = self.members.values().all(|m| m.joined);
        if !all && now < self.deadline {
            return false;
        }
        self.members.retain(|_, m| m.joined);
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            return true;
        }
        self.generation += 1;
        // The first protocol of the leader's list every member supports.
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        let chosen = self.members[&leader]
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            });
        self.protocol = chosen;
        self.leader = Some(leader);
        self.assignments.clear();
        self.phase = Phase::Completing;
        true
    }
}

#[derive(Default)]
pub struct Groups {
    map: BTreeMap<String, Group>,
}

impl Groups {
    /// No group was ever joined or committed to.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops the committed offsets of a deleted topic.
    pub fn forget_topic(&mut self, topic: &str) {
        for g in self.map.values_mut() {
            g.offsets.retain(|(t, _), _| t != topic);
        }
    }
}

fn new_member_id(client: &StrBytes) -> StrBytes {
    StrBytes::from_string(format!("{}-{}", client, uuid::Uuid::new_v4()))
}

pub async fn join(svc: &KafkaService, r: JoinGroupRequest, version: i16) -> JoinGroupResponse {
    let gid = r.group_id.0.to_string();
    let now = Instant::now();
    let mut member_id = r.member_id.clone();
    let error = |code: i16, member: StrBytes| {
        JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_member_id(member)
            .with_protocol_name(if version >= 7 {
                None
            } else {
                Some(StrBytes::default())
            })
    };
    {
        let mut st = svc.lock();
        let g = st.groups.map.entry(gid.clone()).or_insert_with(Group::new);
        g.evict(now);
        if r.protocols.is_empty() {
            return error(INCONSISTENT_GROUP_PROTOCOL, member_id);
        }
        if g.phase != Phase::Empty && g.protocol_type != r.protocol_type {
            return error(INCONSISTENT_GROUP_PROTOCOL, member_id);
        }
        if member_id.is_empty() {
            let id = new_member_id(&StrBytes::from_static_str("member"));
            if version >= 4 {
                // The client rejoins at once with this id.
                return error(MEMBER_ID_REQUIRED, id);
            }
            member_id = id;
        } else if !g.members.contains_key(&member_id) && r.member_id.is_empty() {
            return error(UNKNOWN_MEMBER_ID, member_id);
        }
        g.protocol_type = r.protocol_type.clone();
        let protocols: Vec<(StrBytes, Bytes)> = r
            .protocols
            .iter()
            .map(|p| (p.name.clone(), p.metadata.clone()))
            .collect();
        let changed = match g.members.get(&member_id) {
            Some(m) => m.protocols != protocols,
            None => true,
        };
        let session = Duration::from_millis(r.session_timeout_ms.clamp(1000, 3_600_000) as u64);
        let rebalance = if r.rebalance_timeout_ms > 0 {
            Duration::from_millis(r.rebalance_timeout_ms as u64)
        } else {
            session
        };
        let first = g.phase == Phase::Empty;
        g.members.insert(
            member_id.clone(),
            Member {
                protocols,
                session,
                rebalance,
                seen: now,
                joined: false,
                client_id: StrBytes::default(),
            },
        );
        if changed || g.phase != Phase::Preparing {
            g.start_rebalance(now);
        }
        if first {
            // Like group.initial.rebalance.delay.ms: gather members that
            // start together into one generation.
            g.deadline = now + Duration::from_millis(500);
        }
        if let Some(m) = g.members.get_mut(&member_id) {
            m.joined = true;
        }
    }
    svc.group_changed.notify_waiters();
    // Wait for the round to complete.
    loop {
        let notified = svc.group_changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let wait = {
            let mut st = svc.lock();
            let now = Instant::now();
            let Some(g) = st.groups.map.get_mut(&gid) else {
                return error(UNKNOWN_MEMBER_ID, member_id);
            };
            if let Some(m) = g.members.get_mut(&member_id) {
                m.seen = now;
            }
            let completed = g.try_complete(now);
            if completed {
                svc.group_changed.notify_waiters();
            }
            if g.phase == Phase::Completing || g.phase == Phase::Stable {
                if !g.members.contains_key(&member_id) {
                    return error(UNKNOWN_MEMBER_ID, member_id);
                }
                let leader = g.leader.clone().unwrap_or_default();
                let proto = g.protocol.clone().unwrap_or_default();
                let members = if leader == member_id {
                    g.members
                        .iter()
                        .map(|(id, m)| {
                            let meta = m
                                .protocols
                                .iter()
                                .find(|(n, _)| *n == proto)
                                .map(|(_, b)| b.clone())
                                .unwrap_or_default();
                            join_group_response::JoinGroupResponseMember::default()
                                .with_member_id(id.clone())
                                .with_metadata(meta)
                        })
                        .collect()
                } else {
                    vec![]
                };
                return JoinGroupResponse::default()
                    .with_generation_id(g.generation)
                    .with_protocol_type(Some(g.protocol_type.clone()))
                    .with_protocol_name(Some(proto))
                    .with_leader(leader)
                    .with_member_id(member_id)
                    .with_members(members);
            }
            if g.phase == Phase::Empty {
                return error(UNKNOWN_MEMBER_ID, member_id);
            }
            g.deadline
                .saturating_duration_since(now)
                .min(Duration::from_millis(200))
        };
        let _ = tokio::time::timeout(wait.max(Duration::from_millis(10)), notified).await;
    }
}

pub async fn sync(svc: &KafkaService, r: SyncGroupRequest) -> SyncGroupResponse {
    let gid = r.group_id.0.to_string();
    let err = |code: i16| SyncGroupResponse::default().with_error_code(code);
    let started = Instant::now();
    {
        let mut st = svc.lock();
        let Some(g) = st.groups.map.get_mut(&gid) else {
            return err(UNKNOWN_MEMBER_ID);
        };
        let Some(m) = g.members.get_mut(&r.member_id) else {
            return err(UNKNOWN_MEMBER_ID);
        };
        m.seen = started;
        if r.generation_id != g.generation {
            return err(ILLEGAL_GENERATION);
        }
        if g.phase == Phase::Preparing {
            return err(REBALANCE_IN_PROGRESS);
        }
        if g.leader.as_ref() == Some(&r.member_id) && g.phase == Phase::Completing {
            for a in &r.assignments {
                g.assignments
                    .insert(a.member_id.clone(), a.assignment.clone());
            }
            g.phase = Phase::Stable;
        }
    }
    svc.group_changed.notify_waiters();
    loop {
        let notified = svc.group_changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let st = svc.lock();
            let Some(g) = st.groups.map.get(&gid) else {
                return err(UNKNOWN_MEMBER_ID);
            };
            if !g.members.contains_key(&r.member_id) {
                return err(UNKNOWN_MEMBER_ID);
            }
            if g.generation != r.generation_id || g.phase == Phase::Preparing {
                return err(REBALANCE_IN_PROGRESS);
            }
            if g.phase == Phase::Stable {
                return SyncGroupResponse::default()
                    .with_protocol_type(Some(g.protocol_type.clone()))
                    .with_protocol_name(g.protocol.clone())
                    .with_assignment(g.assignments.get(&r.member_id).cloned().unwrap_or_default());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return err(REBALANCE_IN_PROGRESS);
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
    }
}
