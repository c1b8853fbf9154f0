//! Fetch long polls waiting for data, by partition. A Produce wakes only
//! the fetches that asked for a partition it appended to, so a busy topic
//! does not make every idle consumer of the service re-read its
//! partitions on each record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

type Key = (String, i32);

/// The waiters of one service. A waiter is a `Notify` owned by one Fetch;
/// the registry holds it weakly, so a Fetch that returns (or whose
/// connection drops) leaves only a dead entry, pruned on the next wake or
/// registration of that partition.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<Key, Vec<Weak<Notify>>>>,
}

/// How many partitions may have waiter lists before dead ones are swept.
const SWEEP_ABOVE: usize = 1024;

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<Weak<Notify>>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A waiter for these partitions, woken by `wake` on any of them. Keep
    /// it for the whole long poll: `Notify::notify_one` leaves a permit,
    /// so data that arrives between a read and the wait is not missed.
    pub fn register<'a>(&self, keys: impl IntoIterator<Item = (&'a str, i32)>) -> Arc<Notify> {
        let me = Arc::new(Notify::new());
        let mut map = self.lock();
        // Keys come from clients' Fetch requests, also for partitions that
        // never get data: sweep out the dead ones now and then so the map
        // cannot grow without bound in a long-running sidecar.
        if map.len() > SWEEP_ABOVE {
            map.retain(|_, list| {
                list.retain(|w| w.strong_count() > 0);
                !list.is_empty()
            });
        }
        for (topic, p) in keys {
            let list = map.entry((topic.to_string(), p)).or_default();
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&me));
        }
        me
    }

    /// Wakes the waiters of one partition (after an append to it).
    pub fn wake(&self, topic: &str, p: i32) {
        let mut map = self.lock();
        let key = (topic.to_string(), p);
        let Some(list) = map.get_mut(&key) else {
            return;
        };
        list.retain(|w| match w.upgrade() {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        });
        if list.is_empty() {
            map.remove(&key);
        }
    }

    /// Wakes every waiter (a rules reset replaced the topics).
    pub fn wake_all(&self) {
        let mut map = self.lock();
        for list in map.values() {
            for n in list.iter().filter_map(Weak::upgrade) {
                n.notify_one();
            }
        }
        map.retain(|_, l| l.iter().any(|w| w.strong_count() > 0));
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn woken(n: &Notify) -> bool {
        tokio::time::timeout(Duration::from_millis(50), n.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn only_the_partitions_asked_for_wake_a_fetch() {
        let w = Waiters::default();
        let me = w.register([("orders", 0), ("orders", 2)]);
        w.wake("orders", 1);
        w.wake("other", 0);
        assert!(!woken(&me).await, "woken by a partition it did not ask for");
        w.wake("orders", 2);
        assert!(woken(&me).await);
        // A wake before the wait is kept (no lost wake-up).
        w.wake("orders", 0);
        assert!(woken(&me).await);
        drop(me);
        w.wake("orders", 0);
        w.wake("orders", 2);
        assert_eq!(w.entries(), 0, "a finished fetch leaves nothing behind");
    }
}
