//! MongoDB wire messages (OP_MSG with BSON, OP_QUERY, OP_COMPRESSED), as
//! the MongoDB responder frames and decodes them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meshwrap::responders::mongo::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(n)) = wire::frame(data) {
        let _ = wire::decode(&data[..n]);
    }
    let _ = wire::decode(data);
});
