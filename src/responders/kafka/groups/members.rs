//! Heartbeats, leaving, describing, listing and deleting consumer groups:
//! the group APIs that read or end membership without taking part in the
//! JoinGroup/SyncGroup barrier (in `groups/mod.rs`). Apart so the barrier's
//! state machine reads on its own.

use std::time::Instant;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::*;

pub fn heartbeat(svc: &KafkaService, r: &HeartbeatRequest) -> i16 {
    let mut st = svc.lock();
    let now = Instant::now();
    let Some(g) = st.groups.map.get_mut(r.group_id.0.as_str()) else {
        return UNKNOWN_MEMBER_ID;
    };
    g.evict(now);
    let Some(m) = g.members.get_mut(&r.member_id) else {
        return UNKNOWN_MEMBER_ID;
    };
    m.seen = now;
    if g.phase == Phase::Preparing {
        return REBALANCE_IN_PROGRESS;
    }
    if r.generation_id != g.generation {
        return ILLEGAL_GENERATION;
    }
    NONE
}

pub fn leave(svc: &KafkaService, r: &LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let mut ids: Vec<StrBytes> = r.members.iter().map(|m| m.member_id.clone()).collect();
    if !r.member_id.is_empty() {
        ids.push(r.member_id.clone());
    }
    let mut resp = LeaveGroupResponse::default();
    {
        let mut st = svc.lock();
        let now = Instant::now();
        match st.groups.map.get_mut(r.group_id.0.as_str()) {
            None => resp.error_code = UNKNOWN_MEMBER_ID,
            Some(g) => {
                let mut any = false;
                for id in &ids {
                    let found = g.members.remove(id).is_some();
                    any |= found;
                    resp.members.push(
                        leave_group_response::MemberResponse::default()
                            .with_member_id(id.clone())
                            .with_error_code(if found { NONE } else { UNKNOWN_MEMBER_ID }),
                    );
                }
                if any {
                    g.phase = Phase::Stable;
                    g.start_rebalance(now);
                } else if r.members.is_empty() {
                    resp.error_code = UNKNOWN_MEMBER_ID;
                }
            }
        }
    }
    svc.group_changed.notify_waiters();
    if version < 3 {
        // v0-2 name one member and have no per-member results.
        resp.error_code = resp
            .members
            .first()
            .map_or(resp.error_code, |m| m.error_code);
        resp.members.clear();
    }
    resp
}

/// DeleteGroups: a group with members cannot go (NON_EMPTY_GROUP); an
/// empty one goes with its committed offsets; one never seen (or already
/// deleted) is GROUP_ID_NOT_FOUND.
pub fn delete(svc: &KafkaService, r: &DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut st = svc.lock();
    let now = Instant::now();
    let results = r
        .groups_names
        .iter()
        .map(|gid| {
            let code = match st.groups.map.get_mut(gid.0.as_str()) {
                None => GROUP_ID_NOT_FOUND,
                Some(g) => {
                    g.evict(now);
                    if g.members.is_empty() {
                        st.groups.map.remove(gid.0.as_str());
                        NONE
                    } else {
                        NON_EMPTY_GROUP
                    }
                }
            };
            delete_groups_response::DeletableGroupResult::default()
                .with_group_id(gid.clone())
                .with_error_code(code)
        })
        .collect();
    drop(st);
    svc.group_changed.notify_waiters();
    DeleteGroupsResponse::default().with_results(results)
}

pub fn describe(svc: &KafkaService, r: &DescribeGroupsRequest) -> DescribeGroupsResponse {
    let st = svc.lock();
    let groups = r
        .groups
        .iter()
        .map(|gid| {
            let mut d = describe_groups_response::DescribedGroup::default()
                .with_group_id(gid.clone())
                .with_group_state(StrBytes::from_static_str("Dead"));
            if let Some(g) = st.groups.map.get(gid.0.as_str()) {
                d.group_state = StrBytes::from_static_str(match g.phase {
                    Phase::Empty => "Empty",
                    Phase::Preparing => "PreparingRebalance",
                    Phase::Completing => "CompletingRebalance",
                    Phase::Stable => "Stable",
                });
                d.protocol_type = g.protocol_type.clone();
                d.protocol_data = g.protocol.clone().unwrap_or_default();
                d.members = g
                    .members
                    .iter()
                    .map(|(id, m)| {
                        describe_groups_response::DescribedGroupMember::default()
                            .with_member_id(id.clone())
                            .with_client_id(m.client_id.clone())
                            .with_client_host(StrBytes::from_static_str("/127.0.0.1"))
                            .with_member_assignment(
                                g.assignments.get(id).cloned().unwrap_or_default(),
                            )
                    })
                    .collect();
            }
            d
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

pub fn list(svc: &KafkaService) -> ListGroupsResponse {
    let st = svc.lock();
    ListGroupsResponse::default().with_groups(
        st.groups
            .map
            .iter()
            .map(|(id, g)| {
                list_groups_response::ListedGroup::default()
                    .with_group_id(StrBytes::from_string(id.clone()).into())
                    .with_protocol_type(g.protocol_type.clone())
            })
            .collect(),
    )
}
