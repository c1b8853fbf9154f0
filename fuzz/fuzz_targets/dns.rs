//! DNS queries to the virtual resolver (UDP and TCP framing share it),
//! with `unmatched: refuse` so that no name is looked up on the host.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use meshwrap::dns::{DnsPolicy, Resolver};
use meshwrap::events::EventSink;
use meshwrap::model::JailNet;
use meshwrap::rules::{RuleSet, Unmatched};

fn resolver() -> &'static (tokio::runtime::Runtime, Resolver) {
    static R: OnceLock<(tokio::runtime::Runtime, Resolver)> = OnceLock::new();
    R.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let rules = RuleSet::from_sources(&[(
            "fuzz.yaml".into(),
            "hosts: { a.test: 127.0.0.1 }\nservices:\n  - name: s\n    match: { host: \"*.svc.test\" }\n    pass: {}\n".into(),
        )])
        .unwrap();
        let policy = DnsPolicy {
            rules: Arc::new(rules),
            unmatched: Unmatched::Refuse,
        };
        (rt, Resolver::new(JailNet::default(), policy, EventSink::new()))
    })
}

fuzz_target!(|data: &[u8]| {
    let (rt, r) = resolver();
    let _ = rt.block_on(r.answer(data, "udp"));
});
