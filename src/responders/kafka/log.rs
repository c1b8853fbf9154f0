//! Topics and partitions: record batches (magic v2) as producers sent
//! them, with their base offsets rewritten to the partition's log end.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::{CORRUPT_MESSAGE, LEADER_EPOCH};
use crate::rules::kafka::KafkaSpec;

/// Size of a v2 batch header up to and including the record count.
const BATCH_HEADER: usize = 61;

/// One stored batch.
pub struct Batch {
    pub base: i64,
    pub last: i64,
    pub max_ts: i64,
    pub data: Bytes,
}

#[derive(Default)]
pub struct Partition {
    pub batches: Vec<Batch>,
    /// The high watermark: the offset the next record gets.
    pub hw: i64,
    /// The log start offset: the first offset still kept (retention may
    /// have dropped the ones before it).
    pub log_start: i64,
}

/// A decoded record: offset, key, value.
pub type Decoded = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

impl Partition {
    /// Appends the batches of a Produce request; returns the base offset
    /// and the decoded records (for events).
    pub fn append(&mut self, mut data: Bytes) -> Result<(i64, Vec<Decoded>), i16> {
        // Check every batch before storing any.
        let mut spans = Vec::new();
        let mut pos = 0usize;
        while pos < data.len() {
            if data.len() - pos < BATCH_HEADER {
                return Err(CORRUPT_MESSAGE);
            }
            let h = &data[pos..];
            let len = i32::from_be_bytes([h[8], h[9], h[10], h[11]]);
            if len < (BATCH_HEADER - 12) as i32 || h[16] != 2 {
                return Err(CORRUPT_MESSAGE);
            }
            let size = 12 + len as usize;
            if data.len() - pos < size {
                return Err(CORRUPT_MESSAGE);
            }
            let delta = i32::from_be_bytes([h[23], h[24], h[25], h[26]]);
            let max_ts = i64::from_be_bytes(h[35..43].try_into().unwrap_or([0; 8]));
            if delta < 0 {
                return Err(CORRUPT_MESSAGE);
            }
            spans.push((pos, size, delta as i64, max_ts));
            pos += size;
        }
        if spans.is_empty() {
            return Err(CORRUPT_MESSAGE);
        }
        // Decode for events; a batch the decoder refuses is corrupt.
        let mut check = data.clone();
        let sets = RecordBatchDecoder::decode_all(&mut check).map_err(|_| CORRUPT_MESSAGE)?;
        let first = self.hw;
        let mut owned = BytesMut::from(&data[..]);
        let mut decoded = Vec::new();
        let mut next = self.hw;
        for (pos, _, delta, _) in &spans {
            owned[*pos..*pos + 8].copy_from_slice(&next.to_be_bytes());
            // The partition leader epoch is the broker's to set (outside
            // the CRC, like the base offset): consumers hand it back in
            // OffsetForLeaderEpoch and OffsetCommit.
            owned[*pos + 12..*pos + 16].copy_from_slice(&LEADER_EPOCH.to_be_bytes());
            next += delta + 1;
        }
        data = owned.freeze();
        let mut rec_base = first;
        for set in sets {
            let base_in = set.records.first().map_or(0, |r| r.offset);
            for r in &set.records {
                decoded.push((
                    rec_base + (r.offset - base_in),
                    r.key.as_ref().map(|k| k.to_vec()),
                    r.value.as_ref().map(|v| v.to_vec()),
                ));
            }
            if let Some(last) = set.records.last() {
                rec_base += last.offset - base_in + 1;
            }
        }
        let mut next = first;
        for (pos, size, delta, max_ts) in spans {
            self.batches.push(Batch {
                base: next,
                last: next + delta,
                max_ts,
                data: data.slice(pos..pos + size),
            });
            next += delta + 1;
        }
        self.hw = next;
        Ok((first, decoded))
    }

    /// Kafka's retention by bytes, applied when meshwrap is past its
    /// memory budget: drops the oldest batches until at least `bytes` are
    /// gone (or none are left) and moves the log start past them, as a
    /// broker deleting its oldest segments does. Gives the bytes dropped.
    pub fn drop_oldest(&mut self, bytes: usize) -> usize {
        let (mut n, mut freed) = (0, 0);
        while n < self.batches.len() && freed < bytes {
            freed += self.batches[n].data.len();
            n += 1;
        }
        self.batches.drain(..n);
        self.log_start = self.batches.first().map_or(self.hw, |b| b.base);
        freed
    }

    /// Batches from the one holding `offset`, up to `room` bytes (the
    /// first batch goes even when bigger, if `first` says so).
    pub fn read(&self, offset: i64, room: usize, first: bool) -> Bytes {
        let start = self.batches.partition_point(|b| b.last < offset);
        let mut out = BytesMut::new();
        for b in &self.batches[start..] {
            if out.len() + b.data.len() > room && !(out.is_empty() && first) {
                break;
            }
            out.extend_from_slice(&b.data);
        }
        out.freeze()
    }

    /// The first offset whose timestamp is at or after `ts`, with that
    /// timestamp; `None` past the end.
    pub fn offset_for_time(&self, ts: i64) -> Option<(i64, i64)> {
        let b = self.batches.iter().find(|b| b.max_ts >= ts)?;
        let mut data = b.data.clone();
        let set = RecordBatchDecoder::decode(&mut data).ok()?;
        let base_in = set.records.first().map_or(0, |r| r.offset);
        set.records
            .iter()
            .find(|r| r.timestamp >= ts)
            .map(|r| (b.base + (r.offset - base_in), r.timestamp))
    }
}

pub struct Topic {
    pub partitions: Vec<Partition>,
    /// Configs set by the rules or CreateTopics (over the defaults).
    pub configs: BTreeMap<String, String>,
}

/// All topics of a service.
#[derive(Default)]
pub struct Topics {
    map: BTreeMap<String, Topic>,
}

impl Topics {
    /// The topics of the rules, with their seeded messages.
    pub fn seeded(spec: &KafkaSpec) -> Topics {
        let mut t = Topics::default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for (name, ts) in &spec.topics {
            t.ensure(name, ts.partitions);
            if let Some(topic) = t.map.get_mut(name) {
                topic.configs = ts
                    .configs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect();
            }
            let mut rr = 0;
            for m in &ts.messages {
                let p = m.partition.unwrap_or_else(|| {
                    let p = rr % ts.partitions;
                    rr += 1;
                    p
                });
                let mut headers = IndexMap::new();
                for (k, v) in &m.headers {
                    headers.insert(
                        StrBytes::from_string(k.clone()),
                        Some(Bytes::from(v.clone().into_bytes())),
                    );
                }
                let rec = Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: 0,
                    sequence: -1,
                    timestamp: m.timestamp.unwrap_or(now),
                    key: m.key.as_ref().map(|k| Bytes::from(k.clone().into_bytes())),
                    value: m.value_bytes().map(Bytes::from),
                    headers,
                };
                let mut buf = BytesMut::new();
                let opts = RecordEncodeOptions {
                    version: 2,
                    compression: Compression::None,
                };
                if RecordBatchEncoder::encode(&mut buf, [&rec], &opts).is_ok() {
                    if let Some(part) = t.partition_mut(name, p) {
                        let _ = part.append(buf.freeze());
                    }
                }
            }
        }
        t
    }

    pub fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    pub fn ensure(&mut self, name: &str, partitions: i32) {
        if !self.map.contains_key(name) && !name.is_empty() && name.len() <= 249 {
            self.map.insert(
                name.to_string(),
                Topic {
                    partitions: (0..partitions.max(1))
                        .map(|_| Partition::default())
                        .collect(),
                    configs: BTreeMap::new(),
                },
            );
        }
    }

    /// Creates a topic (CreateTopics); false when it exists already.
    pub fn create(&mut self, name: &str, partitions: i32) -> bool {
        if self.map.contains_key(name) {
            return false;
        }
        self.ensure(name, partitions);
        true
    }

    /// Sets a topic's configs (CreateTopics).
    pub fn set_configs(&mut self, name: &str, configs: BTreeMap<String, String>) {
        if let Some(t) = self.map.get_mut(name) {
            t.configs = configs;
        }
    }

    /// Deletes a topic (DeleteTopics); false when there is none.
    pub fn delete(&mut self, name: &str) -> bool {
        self.map.remove(name).is_some()
    }

    /// Grows a topic to `count` partitions (CreatePartitions).
    pub fn grow(&mut self, name: &str, count: i32) -> Result<(), i16> {
        let Some(t) = self.map.get_mut(name) else {
            return Err(super::UNKNOWN_TOPIC_OR_PARTITION);
        };
        let now = t.partitions.len() as i32;
        if count <= now || count > 1000 {
            return Err(super::INVALID_PARTITIONS);
        }
        t.partitions
            .extend((now..count).map(|_| Partition::default()));
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Topic> {
        self.map.get(name)
    }

    pub fn partition(&self, name: &str, p: i32) -> Option<&Partition> {
        self.map.get(name)?.partitions.get(usize::try_from(p).ok()?)
    }

    pub fn partition_mut(&mut self, name: &str, p: i32) -> Option<&mut Partition> {
        self.map
            .get_mut(name)?
            .partitions
            .get_mut(usize::try_from(p).ok()?)
    }
}
