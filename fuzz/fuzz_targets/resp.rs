//! RESP2/RESP3 requests and inline commands, as the Redis responder reads
//! them off a connection: any bytes give commands, "need more" or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = bytes::BytesMut::from(data);
    for _ in 0..1024 {
        match meshwrap::responders::redis::resp::decode(&mut buf) {
            Ok(Some(_)) if !buf.is_empty() => continue,
            _ => break,
        }
    }
    let _ = meshwrap::responders::redis::resp::split_args(data);
});
