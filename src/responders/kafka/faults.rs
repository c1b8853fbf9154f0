//! `error:` faults: the request is answered with the rule's error code in
//! that API's own response shape (per partition, per topic, per group or
//! for the whole request, where Kafka would put it), and nothing is
//! stored, joined or committed. Clients then react as they would to that
//! error from a real broker: retry, refresh metadata, or fail visibly.

use std::time::Instant;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::cluster::Cluster;
use super::dispatch::encode;
use super::metadata::api_versions;
use super::{api_name, wire, KafkaService, Reply, ServeCtx};

/// Answers `req` with `code`, recording it.
pub(super) fn error_reply(
    svc: &KafkaService,
    ctx: &ServeCtx,
    cluster: &Cluster,
    req: &wire::Request,
    code: i16,
    started: Instant,
) -> Reply {
    use wire::Body as B;
    let v = req.version;
    let cid = req.correlation_id;
    let api = api_name(req.api_key);
    if !matches!(req.body, B::Produce(_)) {
        svc.record_api(ctx, api, code, started);
    }
    match &req.body {
        B::Produce(r) => {
            let responses = r
                .topic_data
                .iter()
                .map(|t| {
                    let parts = t
                        .partition_data
                        .iter()
                        .map(|p| {
                            svc.record(
                                ctx,
                                "produce",
                                Some(&t.name.0),
                                Some(p.index),
                                None,
                                None,
                                None,
                                code,
                                started,
                            );
                            produce_response::PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_error_code(code)
                                .with_base_offset(-1)
                                .with_log_append_time_ms(-1)
                        })
                        .collect();
                    produce_response::TopicProduceResponse::default()
                        .with_name(t.name.clone())
                        .with_partition_responses(parts)
                })
                .collect();
            if r.acks == 0 {
                return Reply::None;
            }
            let resp = ProduceResponse::default().with_responses(responses);
            encode(cid, ApiKey::Produce, v, &resp)
        }
        B::Fetch(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    fetch_response::FetchableTopicResponse::default()
                        .with_topic(t.topic.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    fetch_response::PartitionData::default()
                                        .with_partition_index(p.partition)
                                        .with_error_code(code)
                                        .with_high_watermark(-1)
                                        .with_last_stable_offset(-1)
                                        .with_log_start_offset(-1)
                                        .with_aborted_transactions(Some(vec![]))
                                        .with_preferred_read_replica((-1).into())
                                })
                                .collect(),
                        )
                })
                .collect();
            let resp = FetchResponse::default().with_responses(topics);
            encode(cid, ApiKey::Fetch, v, &resp)
        }
        B::ListOffsets(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    list_offsets_response::ListOffsetsTopicResponse::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    list_offsets_response::ListOffsetsPartitionResponse::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                        .with_timestamp(-1)
                                        .with_offset(-1)
                                        .with_leader_epoch(-1)
                                })
                                .collect(),
                        )
                })
                .collect();
            let resp = ListOffsetsResponse::default().with_topics(topics);
            encode(cid, ApiKey::ListOffsets, v, &resp)
        }
        B::Metadata(r) => {
            // The brokers stay (clients need them to retry); every topic
            // asked for, or every topic there is, carries the error.
            let names: Vec<TopicName> = match &r.topics {
                Some(ts) => ts.iter().filter_map(|t| t.name.clone()).collect(),
                None => svc
                    .topic_names()
                    .into_iter()
                    .map(|n| TopicName(StrBytes::from_string(n)))
                    .collect(),
            };
            let resp = cluster.metadata().with_topics(
                names
                    .into_iter()
                    .map(|n| {
                        metadata_response::MetadataResponseTopic::default()
                            .with_name(Some(n))
                            .with_error_code(code)
                    })
                    .collect(),
            );
            encode(cid, ApiKey::Metadata, v, &resp)
        }
        B::OffsetCommit(r) => {
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
                                    offset_commit_response::OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            let resp = OffsetCommitResponse::default().with_topics(topics);
            encode(cid, ApiKey::OffsetCommit, v, &resp)
        }
        B::OffsetFetch(r) => {
            let mut resp = OffsetFetchResponse::default();
            if v >= 8 {
                // A group-level error for each group asked.
                resp.groups = r
                    .groups
                    .iter()
                    .map(|g| {
                        offset_fetch_response::OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_error_code(code)
                    })
                    .collect();
            } else {
                // v2+ has a request-level error; every version has the
                // partitions'.
                if v >= 2 {
                    resp.error_code = code;
                }
                resp.topics = r
                    .topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        offset_fetch_response::OffsetFetchResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|&p| {
                                        offset_fetch_response::OffsetFetchResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(-1)
                                            .with_committed_leader_epoch(-1)
                                            .with_metadata(Some(StrBytes::default()))
                                            .with_error_code(code)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
            }
            encode(cid, ApiKey::OffsetFetch, v, &resp)
        }
        B::FindCoordinator(r) => {
            let mut resp = FindCoordinatorResponse::default();
            if v < 4 {
                resp = resp
                    .with_error_code(code)
                    .with_node_id((-1).into())
                    .with_port(-1);
            } else {
                resp.coordinators = r
                    .coordinator_keys
                    .iter()
                    .map(|k| {
                        find_coordinator_response::Coordinator::default()
                            .with_key(k.clone())
                            .with_node_id((-1).into())
                            .with_port(-1)
                            .with_error_code(code)
                    })
                    .collect();
            }
            encode(cid, ApiKey::FindCoordinator, v, &resp)
        }
        B::JoinGroup(r) => {
            let resp = JoinGroupResponse::default()
                .with_error_code(code)
                .with_generation_id(-1)
                .with_member_id(r.member_id.clone())
                .with_protocol_name(if v >= 7 {
                    None
                } else {
                    Some(StrBytes::default())
                });
            encode(cid, ApiKey::JoinGroup, v, &resp)
        }
        B::SyncGroup(_) => encode(
            cid,
            ApiKey::SyncGroup,
            v,
            &SyncGroupResponse::default().with_error_code(code),
        ),
        B::Heartbeat(_) => encode(
            cid,
            ApiKey::Heartbeat,
            v,
            &HeartbeatResponse::default().with_error_code(code),
        ),
        B::LeaveGroup(_) => encode(
            cid,
            ApiKey::LeaveGroup,
            v,
            &LeaveGroupResponse::default().with_error_code(code),
        ),
        B::DescribeGroups(r) => {
            let groups = r
                .groups
                .iter()
                .map(|g| {
                    describe_groups_response::DescribedGroup::default()
                        .with_group_id(g.clone())
                        .with_error_code(code)
                })
                .collect();
            let resp = DescribeGroupsResponse::default().with_groups(groups);
            encode(cid, ApiKey::DescribeGroups, v, &resp)
        }
        B::ListGroups(_) => encode(
            cid,
            ApiKey::ListGroups,
            v,
            &ListGroupsResponse::default().with_error_code(code),
        ),
        B::ApiVersions(_) => {
            // The ranges stay, as Kafka sends them with its errors.
            let mut resp = api_versions();
            resp.error_code = code;
            encode(cid, ApiKey::ApiVersions, v, &resp)
        }
        B::InitProducerId(_) => {
            let resp = InitProducerIdResponse::default()
                .with_error_code(code)
                .with_producer_id((-1).into())
                .with_producer_epoch(-1);
            encode(cid, ApiKey::InitProducerId, v, &resp)
        }
        B::CreateTopics(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    create_topics_response::CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(code)
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                })
                .collect();
            let resp = CreateTopicsResponse::default().with_topics(topics);
            encode(cid, ApiKey::CreateTopics, v, &resp)
        }
        B::DeleteTopics(r) => {
            let mut names: Vec<TopicName> = r.topic_names.clone();
            names.extend(r.topics.iter().filter_map(|t| t.name.clone()));
            let responses = names
                .into_iter()
                .map(|n| {
                    delete_topics_response::DeletableTopicResult::default()
                        .with_name(Some(n))
                        .with_error_code(code)
                })
                .collect();
            let resp = DeleteTopicsResponse::default().with_responses(responses);
            encode(cid, ApiKey::DeleteTopics, v, &resp)
        }
        B::CreatePartitions(r) => {
            let results = r
                .topics
                .iter()
                .map(|t| {
                    create_partitions_response::CreatePartitionsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(code)
                })
                .collect();
            let resp = CreatePartitionsResponse::default().with_results(results);
            encode(cid, ApiKey::CreatePartitions, v, &resp)
        }
        B::DescribeConfigs(r) => {
            let results = r
                .resources
                .iter()
                .map(|res| {
                    describe_configs_response::DescribeConfigsResult::default()
                        .with_resource_type(res.resource_type)
                        .with_resource_name(res.resource_name.clone())
                        .with_error_code(code)
                })
                .collect();
            let resp = DescribeConfigsResponse::default().with_results(results);
            encode(cid, ApiKey::DescribeConfigs, v, &resp)
        }
        B::DescribeCluster(_) => {
            let resp = DescribeClusterResponse::default()
                .with_error_code(code)
                .with_controller_id((-1).into())
                .with_cluster_authorized_operations(i32::MIN);
            encode(cid, ApiKey::DescribeCluster, v, &resp)
        }
        B::OffsetForLeaderEpoch(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
                        .with_topic(t.topic.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    offset_for_leader_epoch_response::EpochEndOffset::default()
                                        .with_partition(p.partition)
                                        .with_error_code(code)
                                        .with_leader_epoch(-1)
                                        .with_end_offset(-1)
                                })
                                .collect(),
                        )
                })
                .collect();
            let resp = OffsetForLeaderEpochResponse::default().with_topics(topics);
            encode(cid, ApiKey::OffsetForLeaderEpoch, v, &resp)
        }
        B::DeleteGroups(r) => {
            let results = r
                .groups_names
                .iter()
                .map(|g| {
                    delete_groups_response::DeletableGroupResult::default()
                        .with_group_id(g.clone())
                        .with_error_code(code)
                })
                .collect();
            let resp = DeleteGroupsResponse::default().with_results(results);
            encode(cid, ApiKey::DeleteGroups, v, &resp)
        }
    }
}
