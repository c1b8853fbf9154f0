//! The virtual resolver inside the jail's network.
//!
//! Every DNS question the SUT sends (to any address, UDP or TCP port 53)
//! is answered here. Names that rules claim, names in `hosts:` and, in
//! refuse mode, every other name get fake addresses from 198.18.0.0/15 (and
//! 2001:2::/48), so a later flow to that address knows its hostname. In pass
//! mode other names are resolved with the host's resolver.

mod table;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::events::{now_rfc3339, DnsEvent, Event, EventSink};
use crate::model::JailNet;
use crate::rules::{RuleSet, Unmatched};

pub use table::{NameTable, PoolExhausted};

const TTL: u32 = 30;

/// How long a DNS-over-TCP connection may wait for its next message (or
/// the rest of one) before meshwrap closes it (RFC 7766 §6.2.3; unbound
/// and BIND wait 30 s by default, less when busy).
pub const TCP_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a DNS-over-TCP connection ended other than by the client closing.
#[derive(Debug, thiserror::Error)]
pub enum TcpDnsError {
    #[error("closed after {} s without a query", TCP_IDLE.as_secs())]
    Idle,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Top-level names that never exist on the internet (RFC 6761, 2606):
/// answered locally, never asked of the host's resolver.
const RESERVED_TLDS: &[&str] = &["test", "example", "invalid", "internal", "local"];

/// The resolver's view of the rules; swapped whole on reload.
#[derive(Clone)]
pub struct DnsPolicy {
    pub rules: Arc<RuleSet>,
    pub unmatched: Unmatched,
}

/// Shared by the stack (to name flows) and the resolver.
#[derive(Clone)]
pub struct Resolver {
    table: Arc<Mutex<NameTable>>,
    policy: Arc<RwLock<DnsPolicy>>,
    net: JailNet,
    events: EventSink,
}

/// Where an answer came from, for events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Fake,
    Hosts,
    Gateway,
    Localhost,
    HostResolver,
    NxDomain,
    NoData,
    Error,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Fake => "fake",
            Source::Hosts => "hosts",
            Source::Gateway => "gateway",
            Source::Localhost => "localhost",
            Source::HostResolver => "host-resolver",
            Source::NxDomain => "nxdomain",
            Source::NoData => "nodata",
            Source::Error => "error",
        }
    }
}

impl Resolver {
    pub fn new(net: JailNet, policy: DnsPolicy, events: EventSink) -> Self {
        Resolver {
            table: Arc::new(Mutex::new(NameTable::default())),
            policy: Arc::new(RwLock::new(policy)),
            net,
            events,
        }
    }

    pub fn set_policy(&self, policy: DnsPolicy) {
        *self.policy.write().unwrap_or_else(|e| e.into_inner()) = policy;
    }

    fn policy(&self) -> DnsPolicy {
        self.policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, NameTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hostname behind a destination address, if the SUT got it from
    /// this resolver (or it is the gateway).
    pub fn name_of(&self, ip: IpAddr) -> Option<String> {
        if self.net.is_gateway(ip) {
            return Some(JailNet::HOST_NAME.to_string());
        }
        self.table().name_of(ip).map(str::to_string)
    }

    pub fn is_fake(ip: IpAddr) -> bool {
        NameTable::is_fake(ip)
    }

    /// Answers one DNS message. `None` when the bytes are not a query worth
    /// answering (a response, or too short to carry an id).
    pub async fn answer(&self, query: &[u8], transport: &'static str) -> Option<Vec<u8>> {
        let request = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => {
                // FORMERR needs at least the id to be useful.
                if query.len() < 2 {
                    return None;
                }
                let id = u16::from_be_bytes([query[0], query[1]]);
                let msg = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                return msg.to_vec().ok();
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
        response.metadata = Metadata::response_from_request(&request.metadata);
        response.metadata.recursion_available = true;
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            response.set_edns(edns);
        }
        if request.metadata.op_code != OpCode::Query || request.queries.len() != 1 {
            response.metadata.response_code = ResponseCode::NotImp;
            response.add_queries(request.queries.clone());
            return response.to_vec().ok();
        }
        let query = request.queries[0].clone();
        let qname = query.name().clone();
        let qtype = query.query_type();
        let name = qname.to_ascii().trim_end_matches('.').to_ascii_lowercase();
        response.add_query(query);

        let (source, addrs) = self.resolve(&name, qtype).await;
        let code = match source {
            Source::NxDomain => ResponseCode::NXDomain,
            Source::Error => ResponseCode::ServFail,
            _ => ResponseCode::NoError,
        };
        response.metadata.response_code = code;
        let mut answers = Vec::new();
        for ip in &addrs {
            let rdata = match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            answers.push(ip.to_string());
            response.add_answer(Record::from_rdata(qname.clone(), TTL, rdata));
        }
        self.events.record(Event::Dns(DnsEvent {
            time: now_rfc3339(),
            name: name.clone(),
            qtype: qtype.to_string(),
            answers,
            source: if addrs.is_empty() && source != Source::NxDomain && source != Source::Error {
                Source::NoData.label()
            } else {
                source.label()
            },
            transport,
        }));
        let mut bytes = response.to_vec().ok()?;
        if transport == "udp" && request.edns.is_none() && bytes.len() > 512 {
            response.answers.clear();
            response.metadata.truncation = true;
            bytes = response.to_vec().ok()?;
        }
        Some(bytes)
    }

    /// The addresses for `name` and where they came from.
    async fn resolve(&self, name: &str, qtype: RecordType) -> (Source, Vec<IpAddr>) {
        let want = |ip: &IpAddr| match qtype {
            RecordType::A => ip.is_ipv4(),
            RecordType::AAAA => ip.is_ipv6(),
            _ => false,
        };
        if name == JailNet::HOST_NAME {
            let ips = [
                IpAddr::V4(self.net.gateway_v4),
                IpAddr::V6(self.net.gateway_v6),
            ];
            return (Source::Gateway, ips.into_iter().filter(want).collect());
        }
        if name == "localhost" || name.ends_with(".localhost") {
            let ips: [IpAddr; 2] = [
                "127.0.0.1"
                    .parse()
                    .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ];
            return (Source::Localhost, ips.into_iter().filter(want).collect());
        }
        if name.is_empty() {
            return (Source::NxDomain, Vec::new());
        }
        let policy = self.policy();
        let in_hosts = policy.rules.host_address(name).is_some();
        let claimed = policy.rules.claims_host(name);
        if in_hosts || claimed || policy.unmatched == Unmatched::Refuse {
            return match self.table().fake_for(name, in_hosts || claimed) {
                Ok((v4, v6)) => (
                    if in_hosts {
                        Source::Hosts
                    } else {
                        Source::Fake
                    },
                    [IpAddr::V4(v4), IpAddr::V6(v6)]
                        .into_iter()
                        .filter(want)
                        .collect(),
                ),
                Err(e) => {
                    self.events.notice(None, format!("DNS {name}: {e}"));
                    (Source::Error, Vec::new())
                }
            };
        }
        let tld = name.rsplit('.').next().unwrap_or(name);
        if RESERVED_TLDS.contains(&tld) {
            return (Source::NxDomain, Vec::new());
        }
        if !matches!(qtype, RecordType::A | RecordType::AAAA) {
            return (Source::NoData, Vec::new());
        }
        match tokio::net::lookup_host((name, 0u16)).await {
            Ok(addrs) => {
                let ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                let mut table = self.table();
                for ip in &ips {
                    table.remember_real(*ip, name);
                }
                (Source::HostResolver, ips.into_iter().filter(want).collect())
            }
            Err(_) => (Source::NxDomain, Vec::new()),
        }
    }

    /// Resolves a name on the host for a passed flow whose destination is a
    /// fake address (the name was given a fake IP at query time).
    pub async fn resolve_on_host(&self, name: &str, prefer_v6: bool) -> std::io::Result<IpAddr> {
        let ips: Vec<IpAddr> = tokio::net::lookup_host((name, 0u16))
            .await?
            .map(|a| a.ip())
            .collect();
        ips.iter()
            .find(|ip| ip.is_ipv6() == prefer_v6)
            .or(ips.first())
            .copied()
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, format!("{name}: no address"))
            })
    }

    /// Serves DNS over TCP (two-byte length prefix per message) until the
    /// client closes, or leaves a connection idle (or a message half sent)
    /// for `TCP_IDLE`, as RFC 7766 asks of servers: otherwise a client's
    /// idle connections would hold their buffers for the whole run.
    pub async fn serve_tcp<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
    ) -> Result<(), TcpDnsError> {
        loop {
            let mut len = [0u8; 2];
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
                Err(_) => return Err(TcpDnsError::Idle),
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e.into()),
            }
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg))
                .await
                .map_err(|_| TcpDnsError::Idle)??;
            if let Some(reply) = self.answer(&msg, "tcp").await {
                let n = u16::try_from(reply.len()).unwrap_or(u16::MAX);
                stream.write_all(&n.to_be_bytes()).await?;
                stream.write_all(&reply[..usize::from(n)]).await?;
                stream.flush().await?;
            }
        }
    }
}
