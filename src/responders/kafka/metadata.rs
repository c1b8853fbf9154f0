//! What clients ask before anything else: ApiVersions, Metadata,
//! DescribeCluster and FindCoordinator, the discovery APIs that describe
//! the broker(s) and the topics rather than touching records or groups.
//! Apart from the dispatch so each API family reads on its own.

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::cluster::Cluster;
use super::{KafkaService, LEADER_EPOCH, SUPPORTED, UNKNOWN_TOPIC_OR_PARTITION};

/// The ApiVersions body: only what is implemented, no tagged fields.
pub(super) fn api_versions() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        SUPPORTED
            .iter()
            .map(|(k, lo, hi)| {
                api_versions_response::ApiVersion::default()
                    .with_api_key(*k as i16)
                    .with_min_version(*lo)
                    .with_max_version(*hi)
            })
            .collect(),
    )
}

/// DescribeCluster: the brokers of `cluster` and its controller.
pub(super) fn describe_cluster(cluster: &Cluster) -> DescribeClusterResponse {
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_static_str("meshwrap"))
        .with_controller_id(cluster.controller().into())
        .with_cluster_authorized_operations(i32::MIN)
        .with_brokers(
            cluster
                .brokers()
                .into_iter()
                .map(|(id, host)| {
                    describe_cluster_response::DescribeClusterBroker::default()
                        .with_broker_id(id.into())
                        .with_host(host)
                        .with_port(cluster.port)
                })
                .collect(),
        )
}

/// FindCoordinator: the broker coordinating a group, for the one key
/// of v0-3 or each of the batched keys of v4+.
pub(super) fn find_coordinator(
    cluster: &Cluster,
    r: &FindCoordinatorRequest,
    v: i16,
) -> FindCoordinatorResponse {
    let mut resp = FindCoordinatorResponse::default();
    if v < 4 {
        let id = cluster.coordinator(&r.key);
        resp = resp
            .with_node_id(id.into())
            .with_host(cluster.host_of(id))
            .with_port(cluster.port);
    } else {
        resp.coordinators = r
            .coordinator_keys
            .iter()
            .map(|k| {
                let id = cluster.coordinator(k);
                find_coordinator_response::Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(id.into())
                    .with_host(cluster.host_of(id))
                    .with_port(cluster.port)
            })
            .collect();
    }
    resp
}

impl KafkaService {
    pub(super) fn metadata(
        &self,
        cluster: &Cluster,
        r: &MetadataRequest,
        version: i16,
    ) -> MetadataResponse {
        let mut st = self.lock();
        let names: Vec<String> = match &r.topics {
            None => st.topics.names(),
            Some(ts) => ts
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .collect(),
        };
        // Metadata v4+ says whether the client allows auto-creation.
        let may_create =
            self.spec.auto_create_topics && (version < 4 || r.allow_auto_topic_creation);
        let mut topics = Vec::new();
        for name in names {
            if may_create {
                st.topics.ensure(&name, self.spec.default_partitions);
            }
            let t = match st.topics.get(&name) {
                Some(t) => metadata_response::MetadataResponseTopic::default()
                    .with_name(Some(StrBytes::from_string(name.clone()).into()))
                    .with_partitions(
                        (0..t.partitions.len() as i32)
                            .map(|p| {
                                let leader = cluster.leader(p);
                                metadata_response::MetadataResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_leader_id(leader.into())
                                    // The field exists from v7 on.
                                    .with_leader_epoch(if version >= 7 { LEADER_EPOCH } else { -1 })
                                    .with_replica_nodes(vec![leader.into()])
                                    .with_isr_nodes(vec![leader.into()])
                            })
                            .collect(),
                    ),
                None => metadata_response::MetadataResponseTopic::default()
                    .with_name(Some(StrBytes::from_string(name.clone()).into()))
                    .with_error_code(UNKNOWN_TOPIC_OR_PARTITION),
            };
            topics.push(t);
        }
        cluster.metadata().with_topics(topics)
    }

    /// Messages stored in a topic (decoded), for tests of the state.
    pub fn topic_names(&self) -> Vec<String> {
        self.lock().topics.names()
    }
}
