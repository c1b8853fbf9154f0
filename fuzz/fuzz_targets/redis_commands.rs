//! The Redis responder's command handlers, fed whole connections: any
//! bytes (pipelines of RESP and inline commands, MULTI/EXEC, blocking
//! pops, pub/sub, SCAN MATCH globs, counts at the integer limits) must
//! get replies or a protocol error, never a panic or an unbounded reply.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "serve_harness.rs"]
mod serve_harness;

const RULES: &str = r#"
services:
  - name: cache
    match: { host: cache.fuzz.test, port: 6379 }
    redis:
      databases: 4
      seed:
        s: { type: set, value: [a, b, c, d] }
        h: { type: hash, value: { f: v, g: "12" } }
        l: { type: list, value: [x, y, z] }
        z: { type: zset, value: { a: 1, b: 2.5, c: -3 } }
        n: "41"
        str: hello
"#;

fuzz_target!(|data: &[u8]| {
    serve_harness::serve(RULES, "cache", 6379, data);
});
