//! The sniffer: a flow's first bytes (TLS ClientHello with its SNI, HTTP/1
//! request line and Host, HTTP/2 preface, RESP, Kafka, MongoDB), and the
//! ServerHello of a passed TLS session.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = meshwrap::sniff::classify(data, false);
    let _ = meshwrap::sniff::classify(data, true);
    let (a, b) = data.split_at(data.len() / 2);
    let _ = meshwrap::sniff::tls_passthrough_info(a, b);
});
