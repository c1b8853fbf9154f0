//! The write path: Produce appends the producers' record batches to the
//! partitions (waking the Fetch long polls waiting on them), and
//! InitProducerId hands out producer ids. Apart from the dispatch so each
//! API family reads on its own.

use std::sync::atomic::Ordering;
use std::time::Instant;

use kafka_protocol::messages::*;

use super::cluster::Cluster;
use super::{KafkaService, ServeCtx, NONE, NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION};

impl KafkaService {
    pub(super) fn produce(
        &self,
        ctx: &ServeCtx,
        cluster: &Cluster,
        r: ProduceRequest,
        started: Instant,
    ) -> ProduceResponse {
        let detail = self.detailed();
        let mut responses = Vec::new();
        let mut events = Vec::new();
        // Partitions that got records, to wake their long polls.
        let mut appended: Vec<(String, i32)> = Vec::new();
        {
            let mut st = self.lock();
            for t in r.topic_data {
                let name = t.name.0.to_string();
                if self.spec.auto_create_topics {
                    st.topics.ensure(&name, self.spec.default_partitions);
                }
                let mut parts = Vec::new();
                for p in t.partition_data {
                    let mut pr = produce_response::PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_base_offset(-1)
                        .with_log_append_time_ms(-1);
                    match st.topics.partition_mut(&name, p.index) {
                        None => pr.error_code = UNKNOWN_TOPIC_OR_PARTITION,
                        Some(_) if !cluster.leads(p.index) => {
                            pr.error_code = NOT_LEADER_OR_FOLLOWER;
                            events.push((name.clone(), p.index, -1, None, None, pr.error_code));
                        }
                        Some(part) => {
                            let records = p.records.unwrap_or_default();
                            if crate::budget::over() {
                                part.drop_oldest(records.len());
                            }
                            match part.append(records) {
                                Ok((base, records)) => {
                                    pr.base_offset = base;
                                    appended.push((name.clone(), p.index));
                                    if detail {
                                        for (off, k, v) in records {
                                            events.push((name.clone(), p.index, off, k, v, NONE));
                                        }
                                    } else {
                                        events.push((
                                            name.clone(),
                                            p.index,
                                            base,
                                            None,
                                            None,
                                            NONE,
                                        ));
                                    }
                                }
                                Err(code) => {
                                    pr.error_code = code;
                                    events.push((name.clone(), p.index, -1, None, None, code));
                                }
                            }
                        }
                    }
                    parts.push(pr);
                }
                responses.push(
                    produce_response::TopicProduceResponse::default()
                        .with_name(t.name)
                        .with_partition_responses(parts),
                );
            }
        }
        for (topic, p) in &appended {
            self.waiters.wake(topic, *p);
        }
        for (topic, p, off, k, v, code) in events {
            self.record(
                ctx,
                "produce",
                Some(&topic),
                Some(p),
                Some(off),
                k.as_deref(),
                v.as_deref(),
                code,
                started,
            );
        }
        ProduceResponse::default().with_responses(responses)
    }

    /// InitProducerId: a new producer id per call, epoch 0 (ids are not
    /// tied to transactions, which are not supported).
    pub(super) fn init_producer_id(&self) -> InitProducerIdResponse {
        let id = self.next_producer.fetch_add(1, Ordering::Relaxed);
        InitProducerIdResponse::default()
            .with_producer_id(id.into())
            .with_producer_epoch(0)
    }
}
