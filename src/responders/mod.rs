//! In-process responders: each protocol's codec and in-memory state behind
//! one `Responder` trait. They see a flow as plain bytes (`BoxIo`) and
//! never touch the stack; the appliance finds a service's responder in
//! the `Registry` and knows nothing else of its protocol.
//!
//! What a responder gives the rest of meshwrap:
//! - `Responder`: serving a connection, what the sniffer must have seen
//!   for it to take the flow, whether it wants TLS terminated, `reset`,
//!   its routes (the summary lists the never-called ones);
//! - its `ProtocolInfo` (`BuildResponder::INFO`): names, the summary's
//!   section style, where `GET /requests` lists it, the snippet offered
//!   for a refused destination;
//! - its `ExchangeEvent` detail (`events::ExchangeDetail`): the journal
//!   entry that `expect:` matches, the line a failed expectation lists,
//!   and its bounded metric label.
//!
//! ## Adding a protocol
//!
//! A protocol `p` is these files and nothing else:
//! 1. `src/responders/p/`: its codec, state and `impl Responder`/
//!    `BuildResponder`, with an `ExchangeDetail` for its events;
//! 2. `src/rules/p.rs`: its spec with `impl ProtocolRules` (key, title,
//!    validation, `expect:` fields and matcher);
//! 3. a detector in `src/sniff/` if clients speak first in a framing the
//!    sniffer should name;
//! 4. one line in the table of `src/protocols.rs`;
//! 5. `tests/test_p.py` with real clients, and its rules under `tests/p_rules/`;
//! 6. its section in `rules/README.md` with an example under `rules/examples/`.

mod ctx;
pub mod deadline;
pub mod faults;
pub mod http;
pub mod kafka;
pub mod mongo;
pub mod redis;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use ctx::{ServeCtx, Upstream};

use crate::events::{EventSink, ProtocolInfo};
use crate::io::BoxIo;
use crate::model::Protocol;
use crate::rules::timeouts::Timeouts;
use crate::rules::{ProtocolRules, RuleSet, Service};
use crate::stack::FlowHandle;

/// A future a responder serves one connection with.
pub type ServeFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A mocked service's responder; one per service, shared by all its
/// connections, its state living for as long as its rules are in force.
pub trait Responder: Send + Sync {
    fn info(&self) -> &'static ProtocolInfo;
    /// Whether the responder takes a flow whose first bytes were sniffed
    /// as `seen` (`Protocol::None`: nothing arrived in time). By default,
    /// a protocol whose clients speak first in its own framing takes any
    /// bytes but a ClientHello: garbage gets the protocol's own error.
    fn speaks(&self, seen: &Protocol) -> bool {
        !matches!(seen, Protocol::Tls { .. })
    }
    /// Whether a flow that starts with a TLS ClientHello is terminated
    /// with the run's CA and sniffed again, rather than ended.
    fn terminates_tls(&self) -> bool {
        false
    }
    /// The limits its connections are served under: the service's
    /// `timeouts:` over the protocol's defaults (see `deadline`).
    fn timeouts(&self) -> Timeouts;
    /// Serves one connection until the client is done.
    fn serve(self: Arc<Self>, io: BoxIo, ctx: ServeCtx, flow: FlowHandle) -> ServeFuture;
    /// Puts the state back to the seeds (sequences, data, counters).
    fn reset(&self);
    /// The routes the summary lists, never-called ones marked.
    fn routes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What a responder is built with besides its spec.
pub struct BuildCtx {
    pub events: EventSink,
    /// An expectation names the service: keep full events of every
    /// exchange in the journal, even when no one else reads them.
    pub journal: bool,
}

/// How the protocol table (`crate::protocols`) builds a responder from
/// its spec.
pub trait BuildResponder: Responder + Sized + 'static {
    type Spec: ProtocolRules;
    const INFO: &'static ProtocolInfo;
    fn build(service: &Service, spec: Arc<Self::Spec>, ctx: &BuildCtx) -> Self;
}

/// The responders of every mocked service, built once from the rules; their
/// state lives for the whole run and is shared by all connections.
#[derive(Default)]
pub struct Registry {
    services: BTreeMap<String, Arc<dyn Responder>>,
}

impl Registry {
    pub fn build(rules: &RuleSet, events: &EventSink) -> Registry {
        let mut services = BTreeMap::new();
        for svc in &rules.services {
            let Some(spec) = svc.action.mock() else {
                continue;
            };
            let ctx = BuildCtx {
                events: events.clone(),
                journal: rules.expects.iter().any(|e| e.service == svc.name),
            };
            if let Some(r) = crate::protocols::build(spec, svc, &ctx) {
                events.declare_routes(r.info(), &svc.name, r.routes());
                services.insert(svc.name.clone(), r);
            }
        }
        Registry { services }
    }

    /// The responder of a mocked service.
    pub fn get(&self, service: &str) -> Option<Arc<dyn Responder>> {
        self.services.get(service).cloned()
    }

    /// Resets one service's state (or every service's) to its seeds.
    pub fn reset(&self, service: Option<&str>) -> Result<Vec<String>, String> {
        match service {
            Some(name) => match self.services.get(name) {
                Some(s) => {
                    s.reset();
                    Ok(vec![name.to_string()])
                }
                None => Err(format!("no mocked service is named `{name}`")),
            },
            None => {
                self.services.values().for_each(|s| s.reset());
                Ok(self.services.keys().cloned().collect())
            }
        }
    }
}
