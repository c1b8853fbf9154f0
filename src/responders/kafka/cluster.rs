//! The cluster a service pretends to be: which broker ids it advertises,
//! where, who leads each partition, and which broker one connection is.
//!
//! Without `brokers:` the service is one broker (id 1) at the address the
//! client dialled, answering everything. With `brokers: N`, broker `i` is
//! advertised at `b<i>.<dialled host>` (the rules let the service claim
//! those names, and DNS gives them fake addresses like any claimed name),
//! partition `p` is led by broker `p % N`, and a connection to `b<i>.…`
//! answers Produce, Fetch, ListOffsets and OffsetForLeaderEpoch only for
//! the partitions broker `i` leads: anything else gets
//! NOT_LEADER_OR_FOLLOWER, so clients refresh their metadata as they would
//! against a real cluster. A connection to the bootstrap name itself (no
//! `b<i>.` prefix) belongs to no broker and answers for every partition:
//! clients use it for metadata, and a client that never reads metadata
//! still works.

use kafka_protocol::messages::{metadata_response, MetadataResponse};
use kafka_protocol::protocol::StrBytes;

use super::{ServeCtx, NODE_ID};
use crate::rules::kafka::KafkaSpec;

/// One connection's view of the cluster.
pub struct Cluster {
    /// `None`: the single-broker default.
    brokers: Option<i32>,
    /// The broker this connection reached; `None` answers for all.
    pub me: Option<i32>,
    /// The host the broker names are built on (the dialled host without
    /// its `b<i>.` label), or the dialled address when there is no name.
    base: String,
    named: bool,
    pub port: i32,
}

impl Cluster {
    pub fn of(spec: &KafkaSpec, ctx: &ServeCtx) -> Cluster {
        let port = ctx.meta.dst.port() as i32;
        let Some(host) = ctx.meta.host.as_deref() else {
            // An address literal: every broker is advertised at it, and no
            // connection can tell which one it is, so each answers for all.
            return Cluster {
                brokers: spec.brokers,
                me: None,
                base: ctx.meta.dst.ip().to_string(),
                named: false,
                port,
            };
        };
        let (me, base) = match spec.broker_host(host) {
            Some((id, base)) => (Some(id), base),
            None => (None, host),
        };
        Cluster {
            brokers: spec.brokers,
            me,
            base: base.to_string(),
            named: true,
            port,
        }
    }

    /// Every broker id with its advertised host.
    pub fn brokers(&self) -> Vec<(i32, StrBytes)> {
        match self.brokers {
            None => vec![(NODE_ID, StrBytes::from_string(self.base.clone()))],
            Some(n) => (0..n)
                .map(|i| {
                    let host = if self.named {
                        format!("b{i}.{}", self.base)
                    } else {
                        self.base.clone()
                    };
                    (i, StrBytes::from_string(host))
                })
                .collect(),
        }
    }

    /// The host advertised for broker `id`.
    pub fn host_of(&self, id: i32) -> StrBytes {
        match self.brokers {
            Some(_) if self.named => StrBytes::from_string(format!("b{id}.{}", self.base)),
            _ => StrBytes::from_string(self.base.clone()),
        }
    }

    /// The leader of partition `p` (any topic).
    pub fn leader(&self, p: i32) -> i32 {
        match self.brokers {
            None => NODE_ID,
            Some(n) => p.rem_euclid(n),
        }
    }

    /// The controller: the only broker, or broker 0.
    pub fn controller(&self) -> i32 {
        match self.brokers {
            None => NODE_ID,
            Some(_) => 0,
        }
    }

    /// The coordinator of a group or transactional id: spread over the
    /// brokers by a stable hash of the key, as Kafka spreads its
    /// `__consumer_offsets` partitions. Group requests are answered on
    /// every connection (the state is shared), so this only decides what
    /// FindCoordinator says.
    pub fn coordinator(&self, key: &str) -> i32 {
        match self.brokers {
            None => NODE_ID,
            Some(n) => {
                // FNV-1a: stable across runs, unlike the std hasher.
                let h = key.bytes().fold(0x811c_9dc5u32, |h, b| {
                    (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
                });
                (h % n as u32) as i32
            }
        }
    }

    /// A Metadata response with this cluster's brokers, id and controller;
    /// the caller adds the topics. Normal answers and error faults share
    /// it: a client retrying after a fault still needs the brokers.
    pub fn metadata(&self) -> MetadataResponse {
        MetadataResponse::default()
            .with_brokers(
                self.brokers()
                    .into_iter()
                    .map(|(id, host)| {
                        metadata_response::MetadataResponseBroker::default()
                            .with_node_id(id.into())
                            .with_host(host)
                            .with_port(self.port)
                    })
                    .collect(),
            )
            .with_cluster_id(Some(StrBytes::from_static_str("meshwrap")))
            .with_controller_id(self.controller().into())
    }

    /// Whether this connection may answer for partition `p`.
    pub fn leads(&self, p: i32) -> bool {
        self.me.is_none_or(|me| self.leader(p) == me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FlowMeta, Transport};

    fn ctx(host: Option<&str>) -> ServeCtx {
        ServeCtx {
            meta: FlowMeta {
                id: Default::default(),
                transport: Transport::Tcp,
                src: "10.0.2.100:40000".parse().unwrap(),
                dst: "198.18.0.1:9092".parse().unwrap(),
                host: host.map(str::to_string),
            },
            upstream: super::super::super::Upstream::None,
            tls_server_name: None,
            clock: crate::responders::deadline::RequestClock::unlimited(),
        }
    }

    #[test]
    fn single_broker_by_default() {
        let spec = KafkaSpec::default();
        let c = Cluster::of(&spec, &ctx(Some("kafka.test")));
        assert_eq!(
            c.brokers(),
            vec![(1, StrBytes::from_static_str("kafka.test"))]
        );
        assert_eq!(c.leader(5), 1);
        assert!(c.leads(5));
    }

    #[test]
    fn three_brokers_spread_leaders_and_each_knows_itself() {
        let spec: KafkaSpec = serde_norway::from_str("brokers: 3").unwrap();
        let boot = Cluster::of(&spec, &ctx(Some("kafka.test")));
        let hosts: Vec<String> = boot.brokers().iter().map(|(_, h)| h.to_string()).collect();
        assert_eq!(hosts, ["b0.kafka.test", "b1.kafka.test", "b2.kafka.test"]);
        assert!(boot.leads(4));
        let b1 = Cluster::of(&spec, &ctx(Some("b1.kafka.test")));
        assert_eq!(b1.me, Some(1));
        assert_eq!(b1.brokers(), boot.brokers());
        assert!(b1.leads(1) && b1.leads(4) && !b1.leads(0) && !b1.leads(2));
        assert_eq!(b1.host_of(2).as_str(), "b2.kafka.test");
        assert!(boot.coordinator("g") < 3);
        assert_eq!(boot.coordinator("g"), b1.coordinator("g"));
        let bare = Cluster::of(&spec, &ctx(None));
        assert_eq!(bare.brokers().len(), 3);
        assert!(bare
            .brokers()
            .iter()
            .all(|(_, h)| h.as_str() == "198.18.0.1"));
        assert!(bare.leads(2));
    }
}
