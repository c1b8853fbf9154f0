//! DNS over TCP as a client in the jail streams it: the input is the byte
//! stream (messages with their two-byte length prefix, pipelined, cut
//! short anywhere), served by the resolver's own `serve_tcp` over an
//! in-memory pipe, the way `appliance::dns_tcp` hands it a flow. Time is
//! paused, so the idle timeout (`dns::TCP_IDLE`) fires at once in virtual
//! time instead of stalling the fuzzer.
//!
//! An input of even length is followed by the client's half-close (the
//! server sees the end of the stream); one of odd length keeps the
//! connection open, so a silent client or a message half sent ends by
//! the idle timeout. Every reply must be a whole frame holding a DNS
//! response, and there can be no more replies than messages sent.
#![no_main]
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use meshwrap::dns::{DnsPolicy, Resolver};
use meshwrap::events::EventSink;
use meshwrap::model::JailNet;
use meshwrap::rules::{RuleSet, Unmatched};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `unmatched: refuse`, so no name is ever looked up on the host.
const RULES: &str = r#"
hosts: { a.test: 127.0.0.1, v6.test: "::1" }
services:
  - name: s
    match: { host: "*.svc.test" }
    pass: {}
"#;

struct Harness {
    rt: tokio::runtime::Runtime,
    resolver: Resolver,
}

thread_local! {
    static HARNESS: Harness = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let rules = RuleSet::from_sources(&[("/fuzz/dns.yaml".into(), RULES.into())])
            .expect("the harness's rules load");
        let policy = DnsPolicy {
            rules: Arc::new(rules),
            unmatched: Unmatched::Refuse,
        };
        let events = EventSink::new();
        events.disable_journal();
        Harness {
            rt,
            resolver: Resolver::new(JailNet::default(), policy, events),
        }
    };
}

/// How many length-prefixed messages the stream holds whole.
fn whole_messages(mut data: &[u8]) -> usize {
    let mut n = 0;
    while data.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        if data.len() < 2 + len {
            break;
        }
        n += 1;
        data = &data[2 + len..];
    }
    n
}

/// Checks the server's side of the stream: whole frames, each a DNS
/// response.
fn check_replies(mut out: &[u8], sent: usize) {
    let mut replies = 0;
    while !out.is_empty() {
        assert!(out.len() >= 2, "a reply's length prefix cut short");
        let len = usize::from(u16::from_be_bytes([out[0], out[1]]));
        assert!(out.len() >= 2 + len, "a reply shorter than its prefix says");
        let msg = Message::from_vec(&out[2..2 + len]).expect("a reply that is a DNS message");
        assert_eq!(msg.metadata.message_type, MessageType::Response);
        replies += 1;
        out = &out[2 + len..];
    }
    assert!(replies <= sent, "{replies} replies to {sent} messages");
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        let close = data.len() % 2 == 0;
        let out = h.rt.block_on(async {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let (mut rd, mut wr) = tokio::io::split(client);
            let serve = async {
                let _ = h.resolver.serve_tcp(server).await;
            };
            let write = async {
                let _ = wr.write_all(data).await;
                if close {
                    let _ = wr.shutdown().await;
                }
                wr
            };
            let read = async {
                let mut out = Vec::new();
                let _ = rd.read_to_end(&mut out).await;
                out
            };
            // The server ends (end of stream, idle timeout or an error)
            // and drops its end, which ends the read.
            let all = async {
                let (_, wr, out) = tokio::join!(serve, write, read);
                drop(wr);
                out
            };
            tokio::time::timeout(Duration::from_secs(3600), all)
                .await
                .expect("the idle timeout ends every connection")
        });
        check_replies(&out, whole_messages(data));
    });
});
