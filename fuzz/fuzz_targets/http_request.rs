//! The HTTP responder fed whole connections: hyper parses the request
//! head; meshwrap's part is everything after (query, form and JSON
//! decoding, path parameters, route matching, templates over what the
//! request sent, resources, HTTP/2 when the preface comes). Any bytes must
//! get an answer or the connection's end, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "serve_harness.rs"]
mod serve_harness;

const RULES: &str = r#"
services:
  - name: api
    match: { host: api.fuzz.test, port: 80 }
    http:
      routes:
        - when: { method: GET, path: "/users/{id}" }
          respond:
            headers: { x-id: "{{ path.id }}" }
            json: { id: "{{ path.id }}", q: "{{ query.q }}", n: "{{ query.n | int }}" }
        - when: { method: POST, path: /echo }
          respond: { json: { got: "{{ json }}", form: "{{ form }}", body: "{{ body | length }}" } }
        # Nested loops, at most 40 x 40: a render that runs to its fuel
        # (2,000,000 steps) takes 2 to 3 s in this instrumented build, and
        # a corpus full of them is what ran about one input a second
        # (tests/test_hardening.py covers running out of fuel).
        - when: { path: /loop }
          respond: { body: "{% for i in range([query.n|int, 40]|min) %}{% for j in range([query.n|int, 40]|min) %}x{% endfor %}{% endfor %}" }
        - when: { path: "/files/*" }
          respond: { status: 201, body: "{{ request.path }} {{ headers['user-agent'] }}" }
      resources:
        - path: /items
      fallback: not_found
"#;

fuzz_target!(|data: &[u8]| {
    serve_harness::serve(RULES, "api", 80, data);
});
