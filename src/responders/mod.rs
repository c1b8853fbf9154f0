//! In-process responders: each protocol's codec and in-memory state, with
//! one `serve` entry each. They see a flow as plain bytes and never touch
//! the stack.

pub mod http;

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

/// The responders of every mocked service, built once from the rules; their
/// state lives for the whole run and is shared by all connections.
#[derive(Default)]
pub struct Registry {
    http: HashMap<String, Arc<http::HttpService>>,
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
        }
        reg
    }

    pub fn http(&self, service: &str) -> Option<Arc<http::HttpService>> {
        self.http.get(service).cloned()
    }

    /// Resets one service's state (or every service's) to its seeds.
    pub fn reset(&self, service: Option<&str>) -> Result<Vec<String>, String> {
        match service {
            Some(name) => match self.http.get(name) {
                Some(s) => {
                    s.reset();
                    Ok(vec![name.to_string()])
                }
                None => Err(format!("no mocked service is named `{name}`")),
            },
            None => {
                let mut names: Vec<String> = self.http.keys().cloned().collect();
                names.sort();
                for s in self.http.values() {
                    s.reset();
                }
                Ok(names)
            }
        }
    }
}
