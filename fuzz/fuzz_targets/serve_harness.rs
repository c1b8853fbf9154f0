//! Serves one connection of a mocked service over an in-memory pipe, the
//! way the appliance does over a flow of the stack: the fuzz input is what
//! the client sends; the replies are read and dropped. The client waits a
//! minute for its answers before it closes its side. Time is paused and
//! jumps ahead whenever the service waits (a blocking pop, a latency
//! fault, the client's minute), so a wait never stalls the fuzzer; one
//! hour of virtual time ends a connection that would wait for ever.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use meshwrap::events::EventSink;
use meshwrap::model::{FlowMeta, Transport};
use meshwrap::responders::deadline::RequestClock;
use meshwrap::responders::{Registry, ServeCtx, Upstream};
use meshwrap::rules::RuleSet;
use meshwrap::stack::FlowHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Replies past this are not read: the service then waits on a full pipe
/// until the hour is up, which is a bounded end too.
const READ_CAP: usize = 64 << 20;

/// How long (virtual time) the client waits after its last byte before it
/// closes its side.
const ANSWER_WAIT: Duration = Duration::from_secs(60);

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
}

/// The services of the harness's rules, built once per process: loading
/// rules for every input would be most of the work. Each input starts
/// from the seeds again (`Registry::reset`), and the journal is off, so
/// nothing grows from one input to the next.
struct Services {
    registry: Registry,
    _events: EventSink,
}

thread_local! {
    static SERVICES: std::cell::OnceCell<Services> = const { std::cell::OnceCell::new() };
}

/// Serves `data` as one connection to `service` of `rules` (the same
/// rules on every call of a target).
pub fn serve(rules: &str, service: &str, port: u16, data: &[u8]) {
    SERVICES.with(|cell| {
        let services = cell.get_or_init(|| {
            let label = PathBuf::from("/fuzz/rules.yaml");
            let rules = RuleSet::from_sources(&[(label, rules.to_string())])
                .expect("the harness's rules load");
            let events = EventSink::new();
            events.disable_journal();
            Services {
                registry: Registry::build(&rules, &events),
                _events: events,
            }
        });
        let responder = services
            .registry
            .get(service)
            .expect("the harness's service exists");
        serve_one(responder, service, port, data);
        let _ = services.registry.reset(None);
    });
}

fn serve_one(
    responder: std::sync::Arc<dyn meshwrap::responders::Responder>,
    service: &str,
    port: u16,
    data: &[u8],
) {
    let sut = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 40000);
    let dst = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), port);
    let ctx = ServeCtx {
        meta: FlowMeta {
            id: 1,
            transport: Transport::Tcp,
            src: sut,
            dst,
            host: Some(format!("{service}.fuzz.test")),
        },
        upstream: Upstream::None,
        tls_server_name: None,
        clock: RequestClock::unlimited(),
    };
    let show = std::env::var_os("FUZZ_SHOW").is_some();
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let task =
                tokio::spawn(responder.serve(Box::new(server), ctx, FlowHandle::detached(1)));
            let abort = task.abort_handle();
            let (mut rd, mut wr) = tokio::io::split(client);
            let write = async {
                let _ = wr.write_all(data).await;
                // The client waits for its answers before it closes:
                // hyper drops a request still being answered when the
                // client's end of stream comes, so closing at once left
                // the last request of every input unanswered (meshwrap's
                // answering code ran only for requests with another
                // pipelined behind). The minute is virtual: the clock
                // jumps to it once the service is idle, after any of its
                // own shorter waits (a fault's latency).
                tokio::time::sleep(ANSWER_WAIT).await;
                let _ = wr.shutdown().await;
            };
            let read = async {
                let mut sink = vec![0u8; 64 * 1024];
                let mut total = 0;
                while let Ok(n @ 1..) = rd.read(&mut sink).await {
                    if show {
                        eprint!("{}", String::from_utf8_lossy(&sink[..n]));
                    }
                    total += n;
                    if total > READ_CAP {
                        break;
                    }
                }
            };
            let all = async {
                tokio::join!(write, read);
                let _ = task.await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(3600), all).await;
            // A service still waiting after the hour must not linger into
            // the next input.
            abort.abort();
        })
    });
}
