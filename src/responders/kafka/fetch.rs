//! The read path: Fetch (with long polling until `min_bytes` arrive or
//! `max_wait_ms` passes), ListOffsets and OffsetForLeaderEpoch, the APIs
//! consumers use to find and read positions in a partition. Apart from the
//! dispatch so each API family reads on its own.

use std::time::{Duration, Instant};

use kafka_protocol::messages::*;

use super::cluster::Cluster;
use super::{
    KafkaService, ServeCtx, LEADER_EPOCH, NONE, NOT_LEADER_OR_FOLLOWER, OFFSET_OUT_OF_RANGE,
    UNKNOWN_LEADER_EPOCH, UNKNOWN_TOPIC_OR_PARTITION,
};

/// Kafka's broker default for `fetch.max.bytes`: the most one Fetch
/// response carries, whatever the request asks.
pub const FETCH_MAX_BYTES: usize = 55 * 1024 * 1024;

impl KafkaService {
    pub(super) async fn fetch(
        &self,
        ctx: &ServeCtx,
        cluster: &Cluster,
        r: &FetchRequest,
        started: Instant,
    ) -> FetchResponse {
        let deadline = started + Duration::from_millis(r.max_wait_ms.clamp(0, 60_000) as u64);
        // Registered before the first read: an append in between leaves a
        // permit, so the wait below returns at once.
        let waiter = self.waiters.register(r.topics.iter().flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.topic.0.as_str(), p.partition))
        }));
        loop {
            let (resp, bytes) = self.fetch_once(cluster, r);
            let now = Instant::now();
            if bytes >= r.min_bytes.max(1) as usize || now >= deadline || has_error(&resp) {
                for t in &resp.responses {
                    for p in &t.partitions {
                        let n = p.records.as_ref().map_or(0, |b| b.len());
                        if n > 0 || p.error_code != NONE {
                            self.record(
                                ctx,
                                "fetch",
                                Some(&t.topic.0),
                                Some(p.partition_index),
                                Some(p.high_watermark),
                                None,
                                None,
                                p.error_code,
                                started,
                            );
                        }
                    }
                }
                if bytes == 0 && !has_error(&resp) {
                    self.record(ctx, "fetch", None, None, None, None, None, NONE, started);
                }
                return resp;
            }
            let _ = tokio::time::timeout(deadline - now, waiter.notified()).await;
        }
    }

    fn fetch_once(&self, cluster: &Cluster, r: &FetchRequest) -> (FetchResponse, usize) {
        let st = self.lock();
        let mut total = 0usize;
        // The broker's `fetch.max.bytes` caps what a client may ask for
        // (a client asking 2^31-1 bytes of a 1 GB topic gets 55 MB).
        let max_total = if r.max_bytes > 0 {
            (r.max_bytes as usize).min(FETCH_MAX_BYTES)
        } else {
            FETCH_MAX_BYTES
        };
        let mut topics = Vec::new();
        for t in &r.topics {
            let mut parts = Vec::new();
            for p in &t.partitions {
                let mut pd = fetch_response::PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_aborted_transactions(Some(vec![]))
                    .with_preferred_read_replica((-1).into());
                match st.topics.partition(&t.topic.0, p.partition) {
                    None => pd.error_code = UNKNOWN_TOPIC_OR_PARTITION,
                    Some(_) if !cluster.leads(p.partition) => {
                        pd.error_code = NOT_LEADER_OR_FOLLOWER
                    }
                    // A client that saw a newer epoch than ours: Kafka's
                    // answer when the leader lags behind the metadata.
                    Some(_) if p.current_leader_epoch > LEADER_EPOCH => {
                        pd.error_code = UNKNOWN_LEADER_EPOCH
                    }
                    Some(part) => {
                        pd.high_watermark = part.hw;
                        pd.last_stable_offset = part.hw;
                        pd.log_start_offset = part.log_start;
                        if p.fetch_offset < part.log_start || p.fetch_offset > part.hw {
                            pd.error_code = OFFSET_OUT_OF_RANGE;
                        } else {
                            // The first batch always goes, so one bigger
                            // than the limits still gets through.
                            let room = (p.partition_max_bytes.max(0) as usize)
                                .min(max_total.saturating_sub(total));
                            let data = part.read(p.fetch_offset, room, total == 0);
                            total += data.len();
                            pd.records = Some(data);
                        }
                    }
                }
                parts.push(pd);
            }
            topics.push(
                fetch_response::FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(parts),
            );
        }
        (FetchResponse::default().with_responses(topics), total)
    }

    pub(super) fn list_offsets(
        &self,
        ctx: &ServeCtx,
        cluster: &Cluster,
        r: &ListOffsetsRequest,
        version: i16,
        started: Instant,
    ) -> ListOffsetsResponse {
        let st = self.lock();
        let mut topics = Vec::new();
        let mut evs = Vec::new();
        for t in &r.topics {
            let mut parts = Vec::new();
            for p in &t.partitions {
                let mut pr = list_offsets_response::ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1)
                    .with_leader_epoch(-1);
                match st.topics.partition(&t.name.0, p.partition_index) {
                    None => pr.error_code = UNKNOWN_TOPIC_OR_PARTITION,
                    Some(_) if !cluster.leads(p.partition_index) => {
                        pr.error_code = NOT_LEADER_OR_FOLLOWER
                    }
                    Some(_) if p.current_leader_epoch > LEADER_EPOCH => {
                        pr.error_code = UNKNOWN_LEADER_EPOCH
                    }
                    Some(part) => {
                        match p.timestamp {
                            -2 => pr.offset = part.log_start,
                            -1 => pr.offset = part.hw,
                            ts => {
                                if let Some((off, at)) = part.offset_for_time(ts) {
                                    pr.offset = off;
                                    pr.timestamp = at;
                                }
                            }
                        }
                        // The field exists from v4 on.
                        if pr.offset >= 0 && version >= 4 {
                            pr.leader_epoch = LEADER_EPOCH;
                        }
                    }
                }
                evs.push((
                    t.name.0.to_string(),
                    p.partition_index,
                    pr.offset,
                    pr.error_code,
                ));
                parts.push(pr);
            }
            topics.push(
                list_offsets_response::ListOffsetsTopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(parts),
            );
        }
        drop(st);
        for (t, p, off, code) in evs {
            self.record(
                ctx,
                "list_offsets",
                Some(&t),
                Some(p),
                Some(off),
                None,
                None,
                code,
                started,
            );
        }
        ListOffsetsResponse::default().with_topics(topics)
    }

    /// OffsetForLeaderEpoch: the end offset of the asked epoch. Every
    /// partition has had one leader epoch (0) since its start, so epoch 0
    /// ends at the high watermark, and any other epoch is unknown to the
    /// log (-1, -1), as Kafka answers for an epoch it never had.
    pub(super) fn offset_for_leader_epoch(
        &self,
        ctx: &ServeCtx,
        cluster: &Cluster,
        r: &OffsetForLeaderEpochRequest,
        started: Instant,
    ) -> OffsetForLeaderEpochResponse {
        let st = self.lock();
        let mut evs = Vec::new();
        let topics = r
            .topics
            .iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut e = offset_for_leader_epoch_response::EpochEndOffset::default()
                            .with_partition(p.partition)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                        match st.topics.partition(&t.topic.0, p.partition) {
                            None => e.error_code = UNKNOWN_TOPIC_OR_PARTITION,
                            Some(_) if !cluster.leads(p.partition) => {
                                e.error_code = NOT_LEADER_OR_FOLLOWER
                            }
                            Some(_) if p.current_leader_epoch > LEADER_EPOCH => {
                                e.error_code = UNKNOWN_LEADER_EPOCH
                            }
                            Some(part) if p.leader_epoch == LEADER_EPOCH => {
                                e.leader_epoch = LEADER_EPOCH;
                                e.end_offset = part.hw;
                            }
                            Some(_) => {}
                        }
                        evs.push((
                            t.topic.0.to_string(),
                            p.partition,
                            e.end_offset,
                            e.error_code,
                        ));
                        e
                    })
                    .collect();
                offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(parts)
            })
            .collect();
        drop(st);
        for (t, p, off, code) in evs {
            self.record(
                ctx,
                "offset_for_leader_epoch",
                Some(&t),
                Some(p),
                Some(off),
                None,
                None,
                code,
                started,
            );
        }
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }
}

fn has_error(r: &FetchResponse) -> bool {
    r.responses
        .iter()
        .any(|t| t.partitions.iter().any(|p| p.error_code != NONE))
}
