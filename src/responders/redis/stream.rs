//! The stream type: entries by ID in order, and consumer groups with
//! their pending entries (PEL) and consumers, as Redis keeps them. The
//! commands are in `commands/streams.rs`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use indexmap::IndexMap;

/// A stream entry ID: milliseconds and a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// The next ID in order, if any.
    pub fn next(self) -> Option<StreamId> {
        match self.seq.checked_add(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self.ms.checked_add(1).map(|ms| StreamId { ms, seq: 0 }),
        }
    }

    /// The ID just before, if any.
    pub fn prev(self) -> Option<StreamId> {
        match self.seq.checked_sub(1) {
            Some(seq) => Some(StreamId { ms: self.ms, seq }),
            None => self
                .ms
                .checked_sub(1)
                .map(|ms| StreamId { ms, seq: u64::MAX }),
        }
    }

    pub fn bulk(self) -> Bytes {
        Bytes::from(self.to_string())
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One entry's fields and values, in the order they were added.
pub type Fields = Vec<(Bytes, Bytes)>;

/// A pending entry: delivered to a consumer of a group, not yet acked.
#[derive(Debug, Clone)]
pub struct Pending {
    pub consumer: Bytes,
    /// When it was last delivered (ms since the epoch).
    pub delivered_at: i64,
    pub deliveries: u64,
}

#[derive(Debug, Clone)]
pub struct Consumer {
    /// Last time it read or claimed anything.
    pub seen: i64,
    /// Last time it got an entry (Redis 7.2's `inactive`).
    pub active: Option<i64>,
    pub pending: BTreeSet<StreamId>,
}

impl Consumer {
    pub fn new(now: i64) -> Consumer {
        Consumer {
            seen: now,
            active: None,
            pending: BTreeSet::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub last_delivered: StreamId,
    /// Entries read through the group (Redis's `entries-read`), when known.
    pub entries_read: Option<u64>,
    pub pel: BTreeMap<StreamId, Pending>,
    pub consumers: IndexMap<Bytes, Consumer>,
}

impl Group {
    pub fn new(last_delivered: StreamId, entries_read: Option<u64>) -> Group {
        Group {
            last_delivered,
            entries_read,
            pel: BTreeMap::new(),
            consumers: IndexMap::new(),
        }
    }

    /// The consumer, created when it is new (Redis does it on read and
    /// claim).
    pub fn consumer(&mut self, name: &Bytes, now: i64) -> &mut Consumer {
        self.consumers
            .entry(name.clone())
            .or_insert_with(|| Consumer::new(now))
    }

    /// Removes an entry from the PEL and its consumer's list.
    pub fn ack(&mut self, id: StreamId) -> bool {
        match self.pel.remove(&id) {
            Some(p) => {
                if let Some(c) = self.consumers.get_mut(&p.consumer) {
                    c.pending.remove(&id);
                }
                true
            }
            None => false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Stream {
    pub entries: BTreeMap<StreamId, Fields>,
    pub last_id: StreamId,
    pub max_deleted: StreamId,
    pub entries_added: u64,
    pub groups: IndexMap<Bytes, Group>,
}

impl Stream {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn first_id(&self) -> StreamId {
        self.entries.keys().next().copied().unwrap_or_default()
    }

    /// Bytes held, roughly, for MEMORY USAGE and the budget.
    pub fn size(&self) -> usize {
        self.entries
            .values()
            .map(|f| 16 + f.iter().map(|(k, v)| k.len() + v.len() + 16).sum::<usize>())
            .sum()
    }

    /// Removes entries by ID; the count removed.
    pub fn delete(&mut self, ids: &[StreamId]) -> usize {
        let mut n = 0;
        for id in ids {
            if self.entries.remove(id).is_some() {
                n += 1;
                if *id > self.max_deleted {
                    self.max_deleted = *id;
                }
            }
        }
        n
    }

    /// Trims to at most `max_len` entries (oldest first), or below
    /// `min_id`; the count removed, at most `limit` when given.
    pub fn trim(&mut self, strategy: Trim, limit: Option<usize>) -> usize {
        let mut removed = 0;
        loop {
            if limit.is_some_and(|l| removed >= l) {
                break;
            }
            let Some((&first, _)) = self.entries.iter().next() else {
                break;
            };
            let go = match strategy {
                Trim::MaxLen(n) => self.entries.len() as u64 > n,
                Trim::MinId(id) => first < id,
            };
            if !go {
                break;
            }
            self.entries.remove(&first);
            if first > self.max_deleted {
                self.max_deleted = first;
            }
            removed += 1;
        }
        removed
    }

    /// How many entries a group has not read yet (Redis's `lag`), when it
    /// can be known.
    pub fn lag(&self, g: &Group) -> Option<u64> {
        if self.entries_added == 0 {
            return Some(0);
        }
        let read = g.entries_read?;
        // Deletions after the group's position leave the count unknown.
        if self.max_deleted > g.last_delivered && self.max_deleted <= self.last_id {
            return None;
        }
        Some(self.entries_added.saturating_sub(read))
    }
}

/// XADD's and XTRIM's trimming strategy.
#[derive(Debug, Clone, Copy)]
pub enum Trim {
    MaxLen(u64),
    MinId(StreamId),
}

#[cfg(test)]
mod tests {
    use super::{Stream, StreamId, Trim};

    fn id(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    #[test]
    fn ids_order_and_step() {
        assert!(id(1, 5) < id(2, 0));
        assert_eq!(id(1, u64::MAX).next(), Some(id(2, 0)));
        assert_eq!(id(2, 0).prev(), Some(id(1, u64::MAX)));
        assert_eq!(StreamId::MAX.next(), None);
        assert_eq!(id(7, 3).to_string(), "7-3");
    }

    #[test]
    fn trimming_by_length_and_by_id() {
        let mut s = Stream::default();
        for ms in 1..=10 {
            s.entries.insert(id(ms, 0), vec![]);
        }
        assert_eq!(s.trim(Trim::MaxLen(7), None), 3);
        assert_eq!(s.first_id(), id(4, 0));
        assert_eq!(s.trim(Trim::MinId(id(6, 0)), Some(1)), 1);
        assert_eq!(s.trim(Trim::MinId(id(6, 0)), None), 1);
        assert_eq!(s.len(), 5);
        assert_eq!(s.max_deleted, id(5, 0));
    }
}
