//! The Kafka responder: one in-memory broker per service, shared by every
//! connection for the whole run. Topics hold record batches (magic v2) per
//! partition exactly as producers sent them (compressed or not), with
//! their base offsets rewritten; consumers get them back as stored.
//!
//! Shape: the log and the consumer groups sit behind one mutex per
//! service; every request runs synchronously under it except the waits
//! (Fetch long polling, JoinGroup and SyncGroup barriers), which sleep on
//! `Notify`s woken by appends to the partitions a fetch asked for
//! (`waiters`) and by group changes.
//!
//! Layout: this file holds the service, its event recording and the
//! connection loop (`serve`); `dispatch` decodes a frame, applies the
//! faults and hands the request to its API family: `metadata`
//! (ApiVersions, Metadata, DescribeCluster, FindCoordinator), `produce`
//! (Produce, InitProducerId), `fetch` (Fetch, ListOffsets,
//! OffsetForLeaderEpoch), `admin` (topic creation, deletion, partitions,
//! configs) and `groups` (consumer groups and their committed offsets).

mod admin;
mod cluster;
mod dispatch;
mod faults;
mod fetch;
mod groups;
mod log;
mod metadata;
mod produce;
mod responder;
mod waiters;
pub mod wire;

use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::events::{now_rfc3339, Event, EventSink, ExchangeEvent, Outcome};
use crate::rules::kafka::{KafkaFaultKind, KafkaSpec};

use super::ServeCtx;
use crate::responders::faults::{pick_latency, FaultGate};
use dispatch::handle_frame;
use groups::Groups;
use log::Topics;
pub use responder::{KafkaDetail, INFO};
use waiters::Waiters;

/// The broker id of a single-broker service (without `brokers:`), which
/// is also its controller.
pub const NODE_ID: i32 = 1;
/// Largest request accepted; bigger frames close the connection.
const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Characters of a key or value kept in an event.
const CLIP: usize = 256;

// Kafka error codes used here.
pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const INVALID_REQUEST: i16 = 42;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const NETWORK_EXCEPTION: i16 = 13;
/// What a hung request is recorded with: the client times it out.
pub const REQUEST_TIMED_OUT: i16 = 7;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// The leader epoch of every partition. Leaders never change, so it stays
/// 0; advertising it (rather than -1) makes clients validate positions
/// with OffsetForLeaderEpoch, as they do against a real broker.
pub const LEADER_EPOCH: i32 = 0;

/// The APIs answered and the versions advertised (each tested against
/// real clients; anything else is not advertised).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 0),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DeleteGroups, 0, 2),
];

pub fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(k) => match k {
            ApiKey::Produce => "produce",
            ApiKey::Fetch => "fetch",
            ApiKey::ListOffsets => "list_offsets",
            ApiKey::Metadata => "metadata",
            ApiKey::OffsetCommit => "offset_commit",
            ApiKey::OffsetFetch => "offset_fetch",
            ApiKey::FindCoordinator => "find_coordinator",
            ApiKey::JoinGroup => "join_group",
            ApiKey::Heartbeat => "heartbeat",
            ApiKey::LeaveGroup => "leave_group",
            ApiKey::SyncGroup => "sync_group",
            ApiKey::DescribeGroups => "describe_groups",
            ApiKey::ListGroups => "list_groups",
            ApiKey::ApiVersions => "api_versions",
            ApiKey::InitProducerId => "init_producer_id",
            ApiKey::CreateTopics => "create_topics",
            ApiKey::DeleteTopics => "delete_topics",
            ApiKey::CreatePartitions => "create_partitions",
            ApiKey::DescribeConfigs => "describe_configs",
            ApiKey::DescribeCluster => "describe_cluster",
            ApiKey::OffsetForLeaderEpoch => "offset_for_leader_epoch",
            ApiKey::DeleteGroups => "delete_groups",
            _ => "unsupported",
        },
        Err(_) => "unknown",
    }
}

/// The shared state of one service.
pub(crate) struct State {
    pub topics: Topics,
    pub groups: Groups,
}

/// One mocked Kafka service and its state for the whole run.
pub struct KafkaService {
    name: String,
    spec: Arc<KafkaSpec>,
    state: Mutex<State>,
    /// Fetch long polls, woken by appends to the partitions they asked for.
    waiters: Waiters,
    /// Woken after every group change, for JoinGroup/SyncGroup waits.
    pub(crate) group_changed: Notify,
    events: EventSink,
    detail: bool,
    next_producer: AtomicI64,
    /// The faults' counters (`after`, `times`).
    faults: FaultGate,
}

impl KafkaService {
    pub fn new(name: &str, spec: Arc<KafkaSpec>, events: EventSink, journal: bool) -> Self {
        let faults = FaultGate::new(spec.faults.len());
        KafkaService {
            name: name.to_string(),
            state: Mutex::new(State {
                topics: Topics::seeded(&spec),
                groups: Groups::default(),
            }),
            spec,
            waiters: Waiters::default(),
            group_changed: Notify::new(),
            events,
            detail: journal,
            next_producer: AtomicI64::new(1000),
            faults,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Puts the topics back to their seeds and forgets the groups.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.topics = Topics::seeded(&self.spec);
        s.groups = Groups::default();
        self.faults.reset();
        drop(s);
        self.waiters.wake_all();
    }

    /// The first fault that applies to this API and fires.
    fn pick_fault(&self, api: &str) -> Option<&KafkaFaultKind> {
        self.spec.faults.iter().enumerate().find_map(|(i, f)| {
            if !(f.apis.is_empty() || f.apis.iter().any(|a| a == api)) {
                return None;
            }
            self.faults.admit(i, &f.when).then_some(&f.kind)
        })
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn detailed(&self) -> bool {
        self.detail || self.events.wants_detail()
    }

    /// Records a request that names no topic, partition or record.
    fn record_api(&self, ctx: &ServeCtx, api: &'static str, error_code: i16, started: Instant) {
        self.record(ctx, api, None, None, None, None, None, error_code, started);
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        ctx: &ServeCtx,
        api: &'static str,
        topic: Option<&str>,
        partition: Option<i32>,
        offset: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        error_code: i16,
        started: Instant,
    ) {
        let outcome = if error_code == NONE {
            Outcome::Ok
        } else if is_handshake_step(api, error_code) {
            Outcome::Handshake
        } else {
            Outcome::Error
        };
        if !self.detailed() {
            self.events
                .count(&INFO, &self.name, api, outcome == Outcome::Error);
            return;
        }
        let detail = KafkaDetail {
            api,
            topic: topic.map(str::to_string),
            partition,
            offset,
            key: key.map(clip),
            value: value.map(clip),
            error_code,
        };
        self.events.record(Event::Exchange(ExchangeEvent {
            time: now_rfc3339(),
            flow_id: ctx.meta.id,
            service: self.name.clone(),
            protocol: &INFO,
            operation: api.to_string(),
            outcome,
            error: None,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            detail: Arc::new(detail),
        }));
    }
}

/// Error codes clients expect as a step of the protocol and answer by
/// retrying: MEMBER_ID_REQUIRED to a JoinGroup without a member id
/// (KIP-394), UNSUPPORTED_VERSION to an ApiVersions newer than the broker
/// (KIP-511: the client retries with the version the reply names).
fn is_handshake_step(api: &str, error_code: i16) -> bool {
    matches!(
        (api, error_code),
        ("join_group", MEMBER_ID_REQUIRED) | ("api_versions", UNSUPPORTED_VERSION)
    )
}

fn clip(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > CLIP {
        s.chars().take(CLIP).collect::<String>() + "…"
    } else {
        s.into_owned()
    }
}

/// What the connection does after a request.
enum Reply {
    /// A response body, encoded at the request's version.
    Body(BytesMut),
    /// Nothing (Produce with acks=0).
    None,
    /// Close the connection.
    Close,
    /// Close the connection (a fault, already recorded).
    Disconnect,
    /// Answer nothing more on this connection (a fault, already recorded);
    /// the client's request timeout ends it.
    Hang,
}

/// How much is read at a time while a frame's bytes arrive.
const READ_CHUNK: usize = 64 * 1024;
/// How much may be read ahead while a request is answered.
const READ_AHEAD: usize = 1024 * 1024;

/// Serves one client connection until it closes.
pub async fn serve<IO>(svc: Arc<KafkaService>, mut io: IO, ctx: ServeCtx)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        // One frame: a big-endian length, then the request.
        while buf.len() < 4 {
            ctx.clock.wait(!buf.is_empty());
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len < 8 || len as usize > MAX_FRAME {
            svc.record(
                &ctx,
                "(protocol)",
                None,
                None,
                None,
                None,
                None,
                INVALID_REQUEST,
                Instant::now(),
            );
            let _ = io.shutdown().await;
            return;
        }
        let len = len as usize;
        while buf.len() < 4 + len {
            // Room for what has come, not for what the header claims: a
            // frame that says 100 MB and sends nothing reserves nothing.
            buf.reserve((4 + len - buf.len()).min(READ_CHUNK));
            ctx.clock.wait(true);
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        buf.advance(4);
        let frame = buf.split_to(len).freeze();
        ctx.clock.busy();
        let started = Instant::now();
        let api_key = i16::from_be_bytes([frame[0], frame[1]]);
        // A long-polling Fetch waits up to a minute: a client that closes
        // in the meantime ends the flow at once, and what it pipelines is
        // kept for the next turn.
        let handler = handle_frame(&svc, &ctx, frame, started);
        tokio::pin!(handler);
        let reply = loop {
            tokio::select! {
                reply = &mut handler => break reply,
                read = io.read_buf(&mut buf), if buf.len() < READ_AHEAD => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
            }
        };
        match reply {
            Reply::None => {}
            Reply::Disconnect => {
                let _ = io.shutdown().await;
                return;
            }
            Reply::Hang => {
                crate::responders::faults::drain(&mut io).await;
                return;
            }
            Reply::Close => {
                svc.record(
                    &ctx,
                    api_name(api_key),
                    None,
                    None,
                    None,
                    None,
                    None,
                    INVALID_REQUEST,
                    started,
                );
                let _ = io.shutdown().await;
                return;
            }
            Reply::Body(body) => {
                let mut out = BytesMut::with_capacity(body.len() + 8);
                out.put_i32(body.len() as i32);
                out.extend_from_slice(&body);
                if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cluster::Cluster;
    use super::*;
    use crate::model::{FlowMeta, Transport};
    use bytes::Bytes;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn ctx() -> ServeCtx {
        ServeCtx {
            meta: FlowMeta {
                id: Default::default(),
                transport: Transport::Tcp,
                src: "10.0.2.100:40000".parse().unwrap(),
                dst: "198.18.0.1:9092".parse().unwrap(),
                host: Some("kafka.test".into()),
            },
            upstream: super::super::Upstream::None,
            tls_server_name: None,
            clock: crate::responders::deadline::RequestClock::unlimited(),
        }
    }

    fn service() -> KafkaService {
        let spec: KafkaSpec = serde_norway::from_str(
            "topics: { orders: { partitions: 2, messages: [ { key: k, value: v } ] } }",
        )
        .unwrap();
        KafkaService::new("bus", Arc::new(spec), EventSink::default(), true)
    }

    fn frame<R: kafka_protocol::protocol::Request>(req: &R, version: i16) -> Bytes {
        let mut b = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(9)
            .with_client_id(Some(StrBytes::from_static_str("test")));
        header.encode(&mut b, R::header_version(version)).unwrap();
        req.encode(&mut b, version).unwrap();
        b.freeze()
    }

    async fn answers<R: kafka_protocol::protocol::Request + Clone>(svc: &KafkaService, req: R) {
        answers_by(svc, |_| req.clone()).await
    }

    /// As `answers`, with the request built for each version (for APIs
    /// whose fields change shape, such as the batched v4+ FindCoordinator).
    async fn answers_by<R: kafka_protocol::protocol::Request>(
        svc: &KafkaService,
        req: impl Fn(i16) -> R,
    ) {
        let key = ApiKey::try_from(R::KEY).unwrap();
        let (_, lo, hi) = *SUPPORTED.iter().find(|(k, _, _)| *k == key).unwrap();
        for v in lo..=hi {
            let reply = handle_frame(svc, &ctx(), frame(&req(v), v), Instant::now()).await;
            assert!(
                matches!(reply, Reply::Body(_)),
                "{key:?} v{v} closed the connection"
            );
        }
    }

    #[tokio::test]
    async fn every_advertised_version_encodes() {
        answer_everything(&service()).await;
    }

    /// With an `error:` fault on every API, each answers in its own shape
    /// at every advertised version (an encoding error would close).
    #[tokio::test]
    async fn error_faults_encode_for_every_api_and_version() {
        let apis = crate::rules::kafka::FAULT_APIS.join(", ");
        let spec: KafkaSpec = serde_norway::from_str(&format!(
            "topics: {{ orders: {{ partitions: 2 }} }}\nfaults: [ {{ api: [{apis}], error: 29 }} ]"
        ))
        .unwrap();
        let svc = KafkaService::new("bus", Arc::new(spec), EventSink::default(), true);
        answer_everything(&svc).await;
        assert!(
            svc.lock().groups.is_empty(),
            "a faulted commit stored nothing"
        );
    }

    async fn answer_everything(svc: &KafkaService) {
        let topic = || TopicName(StrBytes::from_static_str("orders"));
        answers(svc, ApiVersionsRequest::default()).await;
        answers(svc, MetadataRequest::default().with_topics(None)).await;
        answers(
            svc,
            ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1)
                    ]),
            ]),
        )
        .await;
        answers(
            svc,
            FetchRequest::default()
                .with_max_bytes(1 << 20)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(topic())
                    .with_partitions(vec![fetch_request::FetchPartition::default()
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20)])]),
        )
        .await;
        answers(
            svc,
            InitProducerIdRequest::default().with_transaction_timeout_ms(1000),
        )
        .await;
        answers_by(svc, |v| {
            let g = StrBytes::from_static_str("g");
            if v < 4 {
                FindCoordinatorRequest::default().with_key(g)
            } else {
                FindCoordinatorRequest::default().with_coordinator_keys(vec![g.clone(), g])
            }
        })
        .await;
        answers(
            svc,
            OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_committed_offset(1),
                        ]),
                ]),
        )
        .await;
        answers_by(svc, |v| {
            let g = GroupId(StrBytes::from_static_str("g"));
            if v < 8 {
                OffsetFetchRequest::default()
                    .with_group_id(g)
                    .with_topics(Some(vec![
                        offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(topic())
                            .with_partition_indexes(vec![0, 1]),
                    ]))
            } else {
                OffsetFetchRequest::default().with_groups(vec![
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(g)
                        .with_topics(Some(vec![
                            offset_fetch_request::OffsetFetchRequestTopics::default()
                                .with_name(topic())
                                .with_partition_indexes(vec![0, 1]),
                        ])),
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("other"))),
                ])
            }
        })
        .await;
        answers(
            svc,
            HeartbeatRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_member_id(StrBytes::from_static_str("nobody")),
        )
        .await;
        answers(
            svc,
            LeaveGroupRequest::default().with_group_id(GroupId(StrBytes::from_static_str("g"))),
        )
        .await;
        answers(
            svc,
            DescribeGroupsRequest::default()
                .with_groups(vec![GroupId(StrBytes::from_static_str("g"))]),
        )
        .await;
        answers(svc, ListGroupsRequest::default()).await;
        answers(
            svc,
            OffsetForLeaderEpochRequest::default().with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(topic())
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_leader_epoch(LEADER_EPOCH),
                    ]),
            ]),
        )
        .await;
        answers(
            svc,
            DeleteGroupsRequest::default()
                .with_groups_names(vec![GroupId(StrBytes::from_static_str("g"))]),
        )
        .await;
        answers(
            svc,
            SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_member_id(StrBytes::from_static_str("nobody")),
        )
        .await;
        answers(
            svc,
            ProduceRequest::default().with_acks(1).with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(topic())
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default().with_index(0)
                    ]),
            ]),
        )
        .await;
        answers(
            svc,
            CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("made")))
                    .with_num_partitions(1),
            ]),
        )
        .await;
        answers_by(svc, |v| {
            let name = TopicName(StrBytes::from_static_str("made"));
            if v < 6 {
                DeleteTopicsRequest::default().with_topic_names(vec![name])
            } else {
                DeleteTopicsRequest::default().with_topics(vec![
                    delete_topics_request::DeleteTopicState::default().with_name(Some(name)),
                ])
            }
        })
        .await;
        answers(
            svc,
            CreatePartitionsRequest::default().with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(topic())
                    .with_count(3),
            ]),
        )
        .await;
        answers(
            svc,
            DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("orders")),
            ]),
        )
        .await;
        answers(svc, DescribeClusterRequest::default()).await;
    }

    #[test]
    fn leader_epoch_end_offsets_and_group_deletion() {
        let svc = service();
        let cluster = Cluster::of(&svc.spec, &ctx());
        let ask = |epoch: i32, current: i32, p: i32| {
            let r = OffsetForLeaderEpochRequest::default().with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(TopicName(StrBytes::from_static_str("orders")))
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(p)
                            .with_leader_epoch(epoch)
                            .with_current_leader_epoch(current),
                    ]),
            ]);
            let resp = svc.offset_for_leader_epoch(&ctx(), &cluster, &r, Instant::now());
            let e = &resp.topics[0].partitions[0];
            (e.error_code, e.leader_epoch, e.end_offset)
        };
        assert_eq!(ask(0, 0, 0), (NONE, 0, 1));
        assert_eq!(ask(0, -1, 1), (NONE, 0, 0));
        assert_eq!(ask(3, -1, 0), (NONE, -1, -1));
        assert_eq!(ask(0, 2, 0), (UNKNOWN_LEADER_EPOCH, -1, -1));
        assert_eq!(ask(0, 0, 9), (UNKNOWN_TOPIC_OR_PARTITION, -1, -1));
        // Stored batches carry the broker's leader epoch.
        let st = svc.lock();
        let b = &st.topics.partition("orders", 0).unwrap().batches[0].data;
        assert_eq!(&b[12..16], &LEADER_EPOCH.to_be_bytes());
        drop(st);
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("old")))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("orders")))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_committed_offset(1)
                            .with_committed_leader_epoch(0),
                    ]),
            ]);
        groups::commit(&svc, &commit);
        let del = |names: &[&'static str]| {
            let r = DeleteGroupsRequest::default().with_groups_names(
                names
                    .iter()
                    .map(|n| GroupId(StrBytes::from_static_str(n)))
                    .collect(),
            );
            groups::delete(&svc, &r)
                .results
                .iter()
                .map(|g| g.error_code)
                .collect::<Vec<_>>()
        };
        // OffsetFetch v8: one result per group, all committed partitions
        // when a group names no topics, -1 for what was never committed.
        let multi = OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_static_str("old")))
                .with_topics(None),
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_static_str("new")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_name(TopicName(StrBytes::from_static_str("orders")))
                        .with_partition_indexes(vec![1]),
                ])),
        ]);
        let got: Vec<(String, i32, i64, i32)> = groups::fetch_offsets(&svc, &multi, 8)
            .groups
            .iter()
            .flat_map(|g| {
                g.topics.iter().flat_map(move |t| {
                    t.partitions.iter().map(move |p| {
                        (
                            g.group_id.0.to_string(),
                            p.partition_index,
                            p.committed_offset,
                            p.committed_leader_epoch,
                        )
                    })
                })
            })
            .collect();
        assert_eq!(
            got,
            vec![("old".into(), 0, 1, 0), ("new".into(), 1, -1, -1)]
        );
        assert_eq!(del(&["old", "nope"]), vec![NONE, GROUP_ID_NOT_FOUND]);
        assert_eq!(del(&["old"]), vec![GROUP_ID_NOT_FOUND]);
    }

    #[tokio::test]
    async fn join_group_member_id_required_then_joins() {
        let svc = service();
        for v in 0..=7i16 {
            let gid = GroupId(StrBytes::from_string(format!("g{v}")));
            let req = JoinGroupRequest::default()
                .with_group_id(gid)
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(b"m"))]);
            let first = groups::join(&svc, req.clone(), v).await;
            let second = if v >= 4 {
                assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
                groups::join(&svc, req.with_member_id(first.member_id.clone()), v).await
            } else {
                first
            };
            assert_eq!(second.error_code, NONE, "v{v}");
            assert_eq!(second.leader, second.member_id);
            assert_eq!(second.members.len(), 1);
            let mut b = BytesMut::new();
            second.encode(&mut b, v).unwrap();
        }
    }

    #[tokio::test]
    async fn produce_rewrites_base_offsets_and_list_offsets_sees_the_end() {
        let svc = service();
        let mut st = svc.lock();
        let p = st.topics.partition_mut("orders", 0).unwrap();
        assert_eq!(p.hw, 1);
        let again = p.batches[0].data.clone();
        let (base, recs) = p.append(again).unwrap();
        assert_eq!(base, 1);
        assert_eq!(recs.len(), 1);
        assert_eq!(p.hw, 2);
        assert_eq!(&p.batches[1].data[..8], &1i64.to_be_bytes());
        assert!(p.append(Bytes::from_static(b"short")).is_err());
    }

    /// Retention by bytes drops whole batches from the oldest and moves
    /// the log start; a fetch below it is out of range, one at it reads.
    #[tokio::test]
    async fn retention_drops_the_oldest_batches_and_moves_the_log_start() {
        let svc = service();
        let mut st = svc.lock();
        let p = st.topics.partition_mut("orders", 0).unwrap();
        let one = p.batches[0].data.clone();
        for _ in 0..4 {
            p.append(one.clone()).unwrap();
        }
        assert_eq!((p.log_start, p.hw, p.batches.len()), (0, 5, 5));
        let freed = p.drop_oldest(one.len() + 1);
        assert_eq!(freed, 2 * one.len());
        assert_eq!((p.log_start, p.batches.len()), (2, 3));
        assert_eq!(&p.read(2, usize::MAX, true)[..8], &2i64.to_be_bytes());
        p.drop_oldest(usize::MAX);
        assert_eq!((p.log_start, p.hw, p.batches.len()), (5, 5, 0));
    }
}
