//! Pub/sub: who is subscribed to which channel or pattern, PUBLISH's
//! delivery, the PUBSUB introspection the `pubsub` command answers from,
//! and SUBSCRIBE / UNSUBSCRIBE on a connection. Subscribers are the
//! connections' push queues, so a message reaches a client through its own
//! connection loop. Kept apart from the connection loop and the dispatcher,
//! which only call in here.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::resp::Reply;
use super::{commands, ConnState, RedisService};

/// Subscribers of one channel or pattern, by client id.
type Subscribers = HashMap<u64, mpsc::UnboundedSender<Reply>>;

#[derive(Default)]
pub(super) struct PubSub {
    pub(super) channels: HashMap<Bytes, Subscribers>,
    pub(super) patterns: HashMap<Bytes, Subscribers>,
}

impl RedisService {
    /// Delivers a message; returns how many subscriptions received it.
    pub fn publish(&self, channel: &Bytes, msg: &Bytes) -> usize {
        let ps = self.pubsub();
        let mut n = 0;
        if let Some(subs) = ps.channels.get(channel) {
            for tx in subs.values() {
                let m = Reply::Push(vec![
                    Reply::bulk("message"),
                    Reply::Bulk(channel.clone()),
                    Reply::Bulk(msg.clone()),
                ]);
                if tx.send(m).is_ok() {
                    n += 1;
                }
            }
        }
        for (pat, subs) in &ps.patterns {
            if commands::glob(pat, channel) {
                for tx in subs.values() {
                    let m = Reply::Push(vec![
                        Reply::bulk("pmessage"),
                        Reply::Bulk(pat.clone()),
                        Reply::Bulk(channel.clone()),
                        Reply::Bulk(msg.clone()),
                    ]);
                    if tx.send(m).is_ok() {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    pub fn pubsub_channels(&self) -> Vec<Bytes> {
        let mut v: Vec<Bytes> = self.pubsub().channels.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn pubsub_numsub(&self, chans: &[Bytes]) -> Vec<(Bytes, usize)> {
        let ps = self.pubsub();
        chans
            .iter()
            .map(|c| (c.clone(), ps.channels.get(c).map_or(0, |s| s.len())))
            .collect()
    }

    pub fn pubsub_numpat(&self) -> usize {
        self.pubsub().patterns.len()
    }

    pub(super) fn subscribe(
        &self,
        conn: &mut ConnState,
        chans: &[Bytes],
        pattern: bool,
    ) -> Vec<Reply> {
        let mut ps = self.pubsub();
        let kind = if pattern { "psubscribe" } else { "subscribe" };
        let mut out = Vec::new();
        for ch in chans {
            let map = if pattern {
                &mut ps.patterns
            } else {
                &mut ps.channels
            };
            map.entry(ch.clone())
                .or_default()
                .insert(conn.id, conn.push.clone());
            if pattern {
                conn.psubs.insert(ch.clone());
            } else {
                conn.subs.insert(ch.clone());
            }
            out.push(Reply::Push(vec![
                Reply::bulk(kind),
                Reply::Bulk(ch.clone()),
                Reply::Int(conn.subscribed() as i64),
            ]));
        }
        out
    }

    pub(super) fn unsubscribe(
        &self,
        conn: &mut ConnState,
        chans: &[Bytes],
        pattern: bool,
    ) -> Vec<Reply> {
        let mut ps = self.pubsub();
        let kind = if pattern {
            "punsubscribe"
        } else {
            "unsubscribe"
        };
        let targets: Vec<Bytes> = if chans.is_empty() {
            let mine = if pattern { &conn.psubs } else { &conn.subs };
            mine.iter().cloned().collect()
        } else {
            chans.to_vec()
        };
        let mut out = Vec::new();
        for ch in &targets {
            let map = if pattern {
                &mut ps.patterns
            } else {
                &mut ps.channels
            };
            if let Some(subs) = map.get_mut(ch) {
                subs.remove(&conn.id);
                if subs.is_empty() {
                    map.remove(ch);
                }
            }
            if pattern {
                conn.psubs.shift_remove(ch);
            } else {
                conn.subs.shift_remove(ch);
            }
            out.push(Reply::Push(vec![
                Reply::bulk(kind),
                Reply::Bulk(ch.clone()),
                Reply::Int(conn.subscribed() as i64),
            ]));
        }
        if out.is_empty() {
            out.push(Reply::Push(vec![
                Reply::bulk(kind),
                Reply::Nil,
                Reply::Int(conn.subscribed() as i64),
            ]));
        }
        out
    }

    pub(super) fn unsubscribe_all(&self, conn: &ConnState) {
        let mut ps = self.pubsub();
        let PubSub { channels, patterns } = &mut *ps;
        for (set, map) in [(&conn.subs, channels), (&conn.psubs, patterns)] {
            for ch in set {
                if let Some(subs) = map.get_mut(ch) {
                    subs.remove(&conn.id);
                    if subs.is_empty() {
                        map.remove(ch);
                    }
                }
            }
        }
    }
}
