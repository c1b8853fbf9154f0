//! The admin API fed whole connections: hyper parses the request head;
//! meshwrap's part is the routing, the bearer token, the query strings
//! (`/requests?offset=&limit=&service=`, `/flows?host=&port=`,
//! `/suggest`, `/reset?service=`), the bodies (`PUT /rules` YAML, `POST
//! /verify` expectations in YAML or JSON) and the answers built over the
//! journal, flows and events. Served by `Control::connection`, as the
//! listener does, over an in-memory pipe; each input gets a fresh
//! appliance (so a `PUT /rules` or `/reset` of one input does not carry
//! into the next) with the same journal and flows already in it. Time is
//! paused, so `GET /events?follow=1`, which streams until the client
//! leaves, ends when an hour of virtual time is up.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use meshwrap::appliance::{Appliance, ApplianceConfig};
use meshwrap::control::{Control, Metrics};
use meshwrap::events::{Event, EventSink, ExchangeEvent, FlowEvent};
use meshwrap::model::{FlowMeta, JailNet, Transport};
use meshwrap::responders::deadline::RequestClock;
use meshwrap::responders::{Registry, ServeCtx, Upstream};
use meshwrap::rules::RuleSet;
use meshwrap::stack::FlowHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Mutating calls need `Authorization: Bearer fuzz-token` (the seeds
/// carry it).
const TOKEN: &str = "fuzz-token";

const RULES: &str = r#"
services:
  - name: api
    match: { host: api.fuzz.test }
    http:
      routes:
        - name: hello
          when: { method: GET, path: /hello }
          respond: { json: { version: 1 } }
        - name: submit
          when: { method: POST, path: /submit, headers: { X-Api-Key: k1 } }
          respond: { status: 201, json: { accepted: true } }
        - name: user
          when: { method: GET, path: "/users/{id}" }
          respond: { json: { id: "{{ path.id }}" } }
      fallback: not_found
  - name: cache
    match: { host: cache.fuzz.test, port: 6379 }
    redis:
      seed: { hits: "100" }
  - name: blocked
    match: { host: blocked.fuzz.test }
    refuse: {}
hosts:
  local.fuzz.test: 127.0.0.1
expect:
  - { service: api, route: hello, at_least: 1 }
"#;

/// What every input starts from: the rules, and the journal and flows
/// that real traffic left (built once).
struct Fixture {
    rt: tokio::runtime::Runtime,
    rules: RuleSet,
    rules_file: PathBuf,
    exchanges: Vec<ExchangeEvent>,
    flows: Vec<FlowEvent>,
    /// `FUZZ_SHOW=1`: the answers go to stderr (to look at what an input
    /// gets, e.g. `FUZZ_SHOW=1 cargo +nightly fuzz run admin_api
    /// corpus/admin_api/rules_put`).
    show: bool,
}

thread_local! {
    static FIXTURE: Fixture = fixture();
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    // `POST /reload` reads the rule files again: one file for every
    // process (parallel jobs write the same text, each through a rename,
    // so none reads it half written).
    let rules_file = std::env::temp_dir().join("meshwrap-fuzz-admin-rules.yaml");
    let partial = rules_file.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&partial, RULES).expect("the rules file is written");
    std::fs::rename(&partial, &rules_file).expect("the rules file is in place");
    let rules = RuleSet::from_sources(&[(rules_file.clone(), RULES.to_string())])
        .expect("the harness's rules load");
    let exchanges = rt.block_on(traffic(&rules));
    assert!(!exchanges.is_empty(), "the traffic left a journal");
    Fixture {
        rt,
        rules,
        rules_file,
        exchanges,
        flows: flows(),
        show: std::env::var_os("FUZZ_SHOW").is_some(),
    }
}

/// Exchanges of both services, as the journal holds them after the SUT
/// called them: matched, failed and unmatched ones.
async fn traffic(rules: &RuleSet) -> Vec<ExchangeEvent> {
    let events = EventSink::new();
    events.enable_control();
    let registry = Registry::build(rules, &events);
    let http = b"GET /hello HTTP/1.1\r\nhost: api.fuzz.test\r\n\r\n\
POST /submit HTTP/1.1\r\nhost: api.fuzz.test\r\nx-api-key: k1\r\ncontent-length: 5\r\n\r\nhello\
GET /users/42?q=1 HTTP/1.1\r\nhost: api.fuzz.test\r\n\r\n\
GET /missing HTTP/1.1\r\nhost: api.fuzz.test\r\nauthorization: Bearer s3cret\r\n\r\n";
    let redis = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\nINCR hits\r\nGET a\r\nNOSUCH x\r\n";
    for (service, port, data) in [("api", 80, &http[..]), ("cache", 6379, &redis[..])] {
        let responder = registry.get(service).expect("the service exists");
        serve_flow(responder, service, port, data).await;
    }
    events.journal().iter().map(|e| (**e).clone()).collect()
}

async fn serve_flow(
    responder: Arc<dyn meshwrap::responders::Responder>,
    service: &str,
    port: u16,
    data: &[u8],
) {
    let ctx = ServeCtx {
        meta: FlowMeta {
            id: 1,
            transport: Transport::Tcp,
            src: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 100)), 40000),
            dst: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), port),
            host: Some(format!("{service}.fuzz.test")),
        },
        upstream: Upstream::None,
        tls_server_name: None,
        clock: RequestClock::unlimited(),
    };
    let (client, server) = tokio::io::duplex(64 * 1024);
    let serve = responder.serve(Box::new(server), ctx, FlowHandle::detached(1));
    let (mut rd, mut wr) = tokio::io::split(client);
    let write = async {
        let _ = wr.write_all(data).await;
        let _ = wr.shutdown().await;
    };
    let read = async {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
    };
    let all = async {
        tokio::join!(serve, write, read);
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), all).await;
}

fn flows() -> Vec<FlowEvent> {
    let flow = |id, host: &str, port, protocol, decision, service: Option<&str>| FlowEvent {
        time: "2026-01-01T00:00:00Z".into(),
        flow_id: id,
        transport: "tcp",
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 100)),
        src_port: 40000 + id as u16,
        dst: IpAddr::V4(Ipv4Addr::new(198, 18, 0, id as u8)),
        dst_port: port,
        host: Some(host.into()),
        protocol,
        decision,
        reason: "fuzz".into(),
        service: service.map(str::to_string),
        upstream: None,
        bytes_up: 100,
        bytes_down: 200,
        duration_ms: 1.5,
        error: None,
        tls: None,
    };
    vec![
        flow(1, "api.fuzz.test", 80, "http", "mock", Some("api")),
        flow(2, "cache.fuzz.test", 6379, "redis", "mock", Some("cache")),
        flow(
            3,
            "blocked.fuzz.test",
            443,
            "tls",
            "refuse",
            Some("blocked"),
        ),
        flow(4, "elsewhere.example", 5432, "unknown", "refuse", None),
    ]
}

/// A fresh appliance and API over the fixture's rules, journal and flows.
fn control(fx: &Fixture) -> Arc<Control> {
    let events = EventSink::new();
    let metrics = Metrics::new();
    events.add_observer(metrics.clone());
    events.enable_control();
    let appliance = Appliance::new(ApplianceConfig {
        net: JailNet::default(),
        rules: fx.rules.clone(),
        unmatched: None,
        events: events.clone(),
        protected_ports: vec![9901],
        interceptor: None,
    });
    for f in &fx.flows {
        events.record(Event::Flow(f.clone()));
    }
    for x in &fx.exchanges {
        events.record(Event::Exchange(x.clone()));
    }
    Arc::new(Control {
        appliance,
        events,
        metrics,
        stack: None,
        ready: Arc::new(AtomicBool::new(true)),
        token: Some(TOKEN.into()),
        read_only: false,
        rule_files: vec![fx.rules_file.clone()],
    })
}

fuzz_target!(|data: &[u8]| {
    FIXTURE.with(|fx| {
        fx.rt.block_on(async {
            let control = control(fx);
            let (client, server) = tokio::io::duplex(64 * 1024);
            let (mut rd, mut wr) = tokio::io::split(client);
            let write = async {
                let _ = wr.write_all(data).await;
                // Waits for the answers before closing: hyper drops a
                // request still being answered when the end of stream
                // comes. Virtual time, over as soon as the API is idle.
                tokio::time::sleep(Duration::from_secs(60)).await;
                let _ = wr.shutdown().await;
            };
            // Replies are read and dropped; past 64 MiB the rest is left
            // unread, and the connection waits on a full pipe until the
            // hour is up.
            let read = async {
                let mut sink = vec![0u8; 64 * 1024];
                let mut total = 0usize;
                while let Ok(n @ 1..) = rd.read(&mut sink).await {
                    if fx.show {
                        eprint!("{}", String::from_utf8_lossy(&sink[..n]));
                    }
                    total += n;
                    if total > 64 << 20 {
                        break;
                    }
                }
            };
            let all = async {
                tokio::join!(control.connection(server), write, read);
            };
            let _ = tokio::time::timeout(Duration::from_secs(3600), all).await;
        })
    });
});
