//! In-process responders: each protocol's codec and in-memory state, with
//! one `serve` entry each. They see a flow as plain bytes and never touch
//! the stack.

pub mod http;
pub mod kafka;
pub mod mongo;
pub mod redis;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::events::EventSink;
use crate::model::FlowMeta;
use crate::rules::{Action, RuleSet};

/// Where a responder may forward what it does not answer itself.
#[derive(Debug, Clone)]
pub enum Upstream {
    Addr(SocketAddr),
    /// Resolve this name on the host at use.
    Name(String, u16),
    None,
}

/// What a responder knows about the flow it serves.
#[derive(Debug, Clone)]
pub struct ServeCtx {
    pub meta: FlowMeta,
    pub upstream: Upstream,
    /// Set when meshwrap terminated TLS for this flow: forwarding to the
    /// real destination then speaks TLS too, to this server name.
    pub tls_server_name: Option<String>,
}

/// A responder for a protocol whose clients always speak first in its own
/// framing (Redis, MongoDB, Kafka): it takes the flow as it is, whatever
/// the sniffer saw, and answers garbage with the protocol's own error.
pub enum FramedService {
    Redis(Arc<redis::RedisService>),
    Mongo(Arc<mongo::MongoService>),
    Kafka(Arc<kafka::KafkaService>),
}

impl FramedService {
    pub fn protocol(&self) -> &'static str {
        match self {
            FramedService::Redis(_) => "Redis",
            FramedService::Mongo(_) => "MongoDB",
            FramedService::Kafka(_) => "Kafka",
        }
    }

    /// Serves one connection until the client is done.
    pub async fn serve<IO>(self, io: IO, ctx: ServeCtx, handle: crate::stack::FlowHandle)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        match self {
            FramedService::Redis(s) => redis::serve(s, io, ctx, handle).await,
            FramedService::Mongo(s) => mongo::serve(s, io, ctx, handle).await,
            FramedService::Kafka(s) => kafka::serve(s, io, ctx, handle).await,
        }
    }
}

/// The responders of every mocked service, built once from the rules; their
/// state lives for the whole run and is shared by all connections.
#[derive(Default)]
pub struct Registry {
    http: HashMap<String, Arc<http::HttpService>>,
    redis: HashMap<String, Arc<redis::RedisService>>,
    mongo: HashMap<String, Arc<mongo::MongoService>>,
    kafka: HashMap<String, Arc<kafka::KafkaService>>,
}

impl Registry {
    pub fn build(rules: &RuleSet, events: &EventSink) -> Registry {
        let mut reg = Registry::default();
        for svc in &rules.services {
            if let Action::Http(spec) = &svc.action {
                let s = http::HttpService::new(&svc.name, spec.clone(), events.clone());
                events.declare_routes(&svc.name, s.route_labels());
                reg.http.insert(svc.name.clone(), Arc::new(s));
            }
            if let Action::Redis(spec) = &svc.action {
                let port = svc.ports.first().map_or(6379, |p| p.first);
                // Full events are kept in memory only when an expectation
                // will read them.
                let journal = rules.expects.iter().any(|e| e.service == svc.name);
                let s = redis::RedisService::new(
                    &svc.name,
                    spec.clone(),
                    events.clone(),
                    port,
                    journal,
                );
                reg.redis.insert(svc.name.clone(), Arc::new(s));
            }
            if let Action::Mongo(spec) = &svc.action {
                let journal = rules.expects.iter().any(|e| e.service == svc.name);
                let s = mongo::MongoService::new(&svc.name, spec.clone(), events.clone(), journal);
                reg.mongo.insert(svc.name.clone(), Arc::new(s));
            }
            if let Action::Kafka(spec) = &svc.action {
                let journal = rules.expects.iter().any(|e| e.service == svc.name);
                let s = kafka::KafkaService::new(&svc.name, spec.clone(), events.clone(), journal);
                reg.kafka.insert(svc.name.clone(), Arc::new(s));
            }
        }
        reg
    }

    pub fn mongo(&self, service: &str) -> Option<Arc<mongo::MongoService>> {
        self.mongo.get(service).cloned()
    }

    /// The Redis, MongoDB or Kafka responder of `service`, if it has one.
    pub fn framed(&self, service: &str) -> Option<FramedService> {
        self.redis
            .get(service)
            .map(|s| FramedService::Redis(s.clone()))
            .or_else(|| {
                self.mongo
                    .get(service)
                    .map(|s| FramedService::Mongo(s.clone()))
            })
            .or_else(|| {
                self.kafka
                    .get(service)
                    .map(|s| FramedService::Kafka(s.clone()))
            })
    }

    pub fn http(&self, service: &str) -> Option<Arc<http::HttpService>> {
        self.http.get(service).cloned()
    }

    pub fn redis(&self, service: &str) -> Option<Arc<redis::RedisService>> {
        self.redis.get(service).cloned()
    }

    pub fn kafka(&self, service: &str) -> Option<Arc<kafka::KafkaService>> {
        self.kafka.get(service).cloned()
    }

    /// Resets one service's state (or every service's) to its seeds.
    pub fn reset(&self, service: Option<&str>) -> Result<Vec<String>, String> {
        match service {
            Some(name) => {
                if let Some(s) = self.http.get(name) {
                    s.reset();
                } else if let Some(s) = self.redis.get(name) {
                    s.reset();
                } else if let Some(s) = self.mongo.get(name) {
                    s.reset();
                } else if let Some(s) = self.kafka.get(name) {
                    s.reset();
                } else {
                    return Err(format!("no mocked service is named `{name}`"));
                }
                Ok(vec![name.to_string()])
            }
            None => {
                let mut names: Vec<String> = self
                    .http
                    .keys()
                    .chain(self.redis.keys())
                    .chain(self.mongo.keys())
                    .chain(self.kafka.keys())
                    .cloned()
                    .collect();
                names.sort();
                self.http.values().for_each(|s| s.reset());
                self.redis.values().for_each(|s| s.reset());
                self.mongo.values().for_each(|s| s.reset());
                self.kafka.values().for_each(|s| s.reset());
                Ok(names)
            }
        }
    }
}
