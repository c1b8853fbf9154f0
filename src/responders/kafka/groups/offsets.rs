//! Committed offsets of consumer groups: OffsetCommit stores them on the
//! group, OffsetFetch reads them back (one group per request before v8,
//! several from v8 on). Apart from the membership code because neither
//! API takes part in rebalances.

use std::collections::BTreeMap;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::*;

pub fn commit(svc: &KafkaService, r: &OffsetCommitRequest) -> OffsetCommitResponse {
    let mut st = svc.lock();
    let g = st
        .groups
        .map
        .entry(r.group_id.0.to_string())
        .or_insert_with(Group::new);
    let topics = r
        .topics
        .iter()
        .map(|t| {
            offset_commit_response::OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            g.offsets.insert(
                                (t.name.0.to_string(), p.partition_index),
                                (
                                    p.committed_offset,
                                    p.committed_metadata.clone(),
                                    p.committed_leader_epoch,
                                ),
                            );
                            offset_commit_response::OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One group's committed offsets: for the partitions asked, or (`None`)
/// every partition the group committed. Each row is partition, offset,
/// metadata and leader epoch (-1 when nothing was committed).
type Committed = Vec<(TopicName, Vec<(i32, i64, Option<StrBytes>, i32)>)>;

fn committed(
    groups: &Groups,
    group_id: &str,
    wanted: Option<Vec<(TopicName, Vec<i32>)>>,
    version: i16,
) -> Committed {
    let g = groups.map.get(group_id);
    let wanted = wanted.unwrap_or_else(|| {
        let mut by: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        if let Some(g) = g {
            for (t, p) in g.offsets.keys() {
                by.entry(t.clone()).or_default().push(*p);
            }
        }
        by.into_iter()
            .map(|(t, ps)| (StrBytes::from_string(t).into(), ps))
            .collect()
    });
    wanted
        .into_iter()
        .map(|(name, ps)| {
            let rows = ps
                .iter()
                .map(|&p| {
                    let (off, meta, epoch) = g
                        .and_then(|g| g.offsets.get(&(name.0.to_string(), p)).cloned())
                        .unwrap_or((-1, None, -1));
                    // The epoch field exists from v5 on.
                    let epoch = if version >= 5 { epoch } else { -1 };
                    (p, off, meta.or(Some(StrBytes::default())), epoch)
                })
                .collect();
            (name, rows)
        })
        .collect()
}

/// OffsetFetch: v0-7 ask for one group (`group_id`, `topics`); v8+ ask for
/// several at once (`groups[]`, KIP-709) and get one result per group.
pub fn fetch_offsets(
    svc: &KafkaService,
    r: &OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let st = svc.lock();
    if version >= 8 {
        let groups = r
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.clone(), t.partition_indexes.clone()))
                        .collect()
                });
                let topics = committed(&st.groups, &g.group_id.0, wanted, version)
                    .into_iter()
                    .map(|(name, rows)| {
                        offset_fetch_response::OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(
                                rows.into_iter()
                                    .map(|(p, off, meta, epoch)| {
                                        offset_fetch_response::OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(off)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(meta)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                offset_fetch_response::OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = r.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.clone(), t.partition_indexes.clone()))
            .collect()
    });
    let topics = committed(&st.groups, &r.group_id.0, wanted, version)
        .into_iter()
        .map(|(name, rows)| {
            offset_fetch_response::OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(
                    rows.into_iter()
                        .map(|(p, off, meta, epoch)| {
                            offset_fetch_response::OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(off)
                                .with_committed_leader_epoch(epoch)
                                .with_metadata(meta)
                        })
                        .collect(),
                )
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
