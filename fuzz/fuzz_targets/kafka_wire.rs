//! Kafka request frames (header and body of every API and version), as
//! the Kafka responder decodes them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = meshwrap::responders::kafka::wire::decode(bytes::Bytes::copy_from_slice(data));
});
