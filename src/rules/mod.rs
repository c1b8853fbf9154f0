//! Rules: the YAML files that say which flows are mocked, passed or
//! refused, loaded with errors that point at file, line, column and field.

pub mod glob;
pub mod http;
pub mod kafka;
pub mod mongo;
pub mod redis;
mod schema;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub use glob::{glob_match, HostGlob};
pub use schema::{
    Cidr, CountSpec, ExpectSpec, MatchSpec, PortRange, RulesFile, ServiceSpec, Unmatched,
};

use std::sync::Arc;

/// A rules error with the place it was found.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    // The io error is in the message and not a source (a field named
    // `source` would be one), so the CLI's error chain prints it once.
    #[error("{file}: cannot read: {reason}")]
    Read {
        file: PathBuf,
        reason: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        /// Dotted path of the offending field, e.g. `services[0].match.port`.
        field: String,
        message: String,
    },
}

/// What a service does with the flows it claims.
#[derive(Debug, Clone)]
pub enum Action {
    Pass,
    Refuse,
    Http(Arc<http::HttpSpec>),
    Redis(Arc<redis::RedisSpec>),
    Mongo(Arc<mongo::MongoSpec>),
    Kafka(Arc<kafka::KafkaSpec>),
}

impl Action {
    pub fn label(&self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Refuse => "refuse",
            Action::Http(_) => "http",
            Action::Redis(_) => "redis",
            Action::Mongo(_) => "mongo",
            Action::Kafka(_) => "kafka",
        }
    }
}

/// A validated service.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub hosts: Vec<HostGlob>,
    pub ports: Vec<PortRange>,
    pub cidrs: Vec<Cidr>,
    pub action: Action,
    /// `file:line` where the service was defined, for explanations.
    pub origin: String,
}

/// Why a service claimed (or did not claim) a flow.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    pub service: &'a Service,
    pub why: String,
}

/// The flow attributes a service is matched against.
#[derive(Debug, Clone, Copy)]
pub struct FlowKey<'a> {
    pub host: Option<&'a str>,
    pub dst: SocketAddr,
}

impl Service {
    /// The host pattern that claims `host`. A Kafka service with
    /// `brokers: N` also claims its brokers' names, `b<id>.<host>`, so the
    /// addresses it advertises lead back to it (see `KafkaSpec::broker_host`).
    fn host_pattern(&self, host: &str) -> Option<&HostGlob> {
        self.hosts.iter().find(|g| g.matches(host)).or_else(|| {
            let Action::Kafka(k) = &self.action else {
                return None;
            };
            let (_, base) = k.broker_host(host)?;
            self.hosts.iter().find(|g| g.matches(base))
        })
    }

    /// `Ok(why)` if the service claims the flow, `Err(why not)` otherwise.
    pub fn check(&self, flow: FlowKey<'_>) -> Result<String, String> {
        let mut why = Vec::new();
        if !self.hosts.is_empty() {
            let Some(host) = flow.host else {
                return Err("the flow has no hostname".into());
            };
            match self.host_pattern(host) {
                Some(g) => why.push(format!("host {host} matches `{g}`")),
                None => return Err(format!("host {host} matches none of its host patterns")),
            }
        }
        if !self.ports.is_empty() {
            let port = flow.dst.port();
            if !self.ports.iter().any(|r| r.contains(port)) {
                return Err(format!("port {port} is not among its ports"));
            }
            why.push(format!("port {port}"));
        }
        if !self.cidrs.is_empty() {
            let ip = flow.dst.ip();
            match self.cidrs.iter().find(|c| c.contains(ip)) {
                Some(c) => why.push(format!("address {ip} in {}/{}", c.addr, c.prefix)),
                None => return Err(format!("address {ip} is in none of its CIDRs")),
            }
        }
        Ok(why.join(", "))
    }
}

/// All rule files merged in order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub unmatched: Option<Unmatched>,
    /// Name (lower case, no trailing dot) → address.
    pub hosts: BTreeMap<String, IpAddr>,
    pub services: Vec<Service>,
    pub expects: Vec<ExpectSpec>,
    /// The texts the set was built from, with their paths.
    pub sources: Vec<(PathBuf, String)>,
}

impl RuleSet {
    /// Loads and merges files in order. Later files add services after the
    /// earlier ones; a host defined twice with different addresses is an
    /// error; the last `unmatched` wins.
    pub fn load(files: &[PathBuf]) -> Result<RuleSet, RulesError> {
        let mut sources = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file).map_err(|reason| RulesError::Read {
                file: file.clone(),
                reason,
            })?;
            sources.push((file.clone(), text));
        }
        RuleSet::from_sources(&sources)
    }

    /// As `load`, from texts already read; each is labelled with its path
    /// (for errors, and as the folder `file:` bodies are relative to).
    pub fn from_sources(sources: &[(PathBuf, String)]) -> Result<RuleSet, RulesError> {
        let mut set = RuleSet {
            sources: sources.to_vec(),
            ..Default::default()
        };
        let mut host_origin: BTreeMap<String, String> = BTreeMap::new();
        let mut service_origin: BTreeMap<String, String> = BTreeMap::new();
        for (file, text) in sources {
            let text = text.as_str();
            let parsed = parse_str(file, text)?;
            if parsed.unmatched.is_some() {
                set.unmatched = parsed.unmatched;
            }
            for (name, addr) in parsed.hosts {
                let key = name.trim_end_matches('.').to_ascii_lowercase();
                let (line, column) = locate(text, &name);
                let valid = !key.is_empty()
                    && key.split('.').all(|l| {
                        !l.is_empty()
                            && l.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    });
                if !valid {
                    return Err(RulesError::Invalid {
                        file: file.clone(),
                        line,
                        column,
                        field: format!("hosts.{name}"),
                        message: format!(
                            "`{name}` is not a hostname (letters, digits, `-`, `_`, dots)"
                        ),
                    });
                }
                if let Some(prev) = set.hosts.get(&key) {
                    if *prev != addr {
                        return Err(RulesError::Invalid {
                            file: file.clone(),
                            line,
                            column,
                            field: format!("hosts.{name}"),
                            message: format!(
                                "conflicts with {prev} given at {}",
                                host_origin.get(&key).cloned().unwrap_or_default()
                            ),
                        });
                    }
                }
                host_origin.insert(key.clone(), format!("{}:{line}", file.display()));
                set.hosts.insert(key, addr);
            }
            for (i, spec) in parsed.services.into_iter().enumerate() {
                let (line, column) = locate_service(text, &spec.name);
                let invalid = |field: &str, message: String| RulesError::Invalid {
                    file: file.clone(),
                    line,
                    column,
                    field: format!("services[{i}]{field}"),
                    message,
                };
                if spec.name.trim().is_empty() {
                    return Err(invalid(".name", "a service needs a name".into()));
                }
                if let Some(prev) = service_origin.get(&spec.name) {
                    return Err(invalid(
                        ".name",
                        format!("service `{}` is already defined at {prev}", spec.name),
                    ));
                }
                let m = &spec.matcher;
                if m.host.0.is_empty() && m.port.0.is_empty() && m.cidr.0.is_empty() {
                    return Err(invalid(
                        ".match",
                        "give at least one of `host`, `port`, `cidr`".into(),
                    ));
                }
                let http = match spec.http {
                    Some(h) => Some(load_http_files(h, file).map_err(|m| invalid(".http", m))?),
                    None => None,
                };
                if let Some(k) = &spec.kafka {
                    k.check().map_err(|m| invalid(".kafka", m))?;
                }
                let kafka = spec.kafka;
                let actions: Vec<(&str, Action)> = [
                    spec.pass.map(|_| ("pass", Action::Pass)),
                    spec.refuse.map(|_| ("refuse", Action::Refuse)),
                    http.map(|h| ("http", Action::Http(Arc::new(h)))),
                    spec.redis.map(|r| ("redis", Action::Redis(Arc::new(r)))),
                    spec.mongo.map(|m| ("mongo", Action::Mongo(Arc::new(m)))),
                    kafka.map(|k| ("kafka", Action::Kafka(Arc::new(k)))),
                ]
                .into_iter()
                .flatten()
                .collect();
                let action = match actions.as_slice() {
                    [(_, a)] => a.clone(),
                    [] => {
                        return Err(invalid(
                            "",
                            format!(
                                "service `{}` needs one action key: `http`, `redis`, `mongo`, `kafka`, `pass` or `refuse`",
                                spec.name
                            ),
                        ))
                    }
                    many => {
                        let names: Vec<&str> = many.iter().map(|(n, _)| *n).collect();
                        return Err(invalid(
                            "",
                            format!(
                                "service `{}` has several action keys ({}); keep one",
                                spec.name,
                                names.join(", ")
                            ),
                        ));
                    }
                };
                let origin = format!("{}:{line}", file.display());
                service_origin.insert(spec.name.clone(), origin.clone());
                set.services.push(Service {
                    name: spec.name,
                    hosts: spec.matcher.host.0,
                    ports: spec.matcher.port.0,
                    cidrs: spec.matcher.cidr.0,
                    action,
                    origin,
                });
            }
            for (i, e) in parsed.expect.into_iter().enumerate() {
                set.expects.push(e);
                let _ = i;
            }
        }
        // Expectations may name services of any file, so check them last.
        for (i, e) in set.expects.iter().enumerate() {
            let Some(svc) = set.services.iter().find(|s| s.name == e.service) else {
                return Err(expect_error(
                    sources,
                    i,
                    &e.service,
                    format!("no service is named `{}`", e.service),
                ));
            };
            if !matches!(
                svc.action,
                Action::Http(_) | Action::Redis(_) | Action::Mongo(_) | Action::Kafka(_)
            ) {
                return Err(expect_error(
                    sources,
                    i,
                    &e.service,
                    format!(
                        "service `{}` is not mocked ({}): expectations count the requests a responder answers",
                        svc.name,
                        svc.action.label()
                    ),
                ));
            }
            if (e.command.is_some() || e.key.is_some())
                && !matches!(svc.action, Action::Redis(_) | Action::Mongo(_))
            {
                let what = e
                    .command
                    .as_deref()
                    .or(e.key.as_deref())
                    .unwrap_or_default();
                return Err(expect_error(
                    sources,
                    i,
                    what,
                    format!(
                        "`command`, `key` and `collection` apply to Redis and MongoDB services; `{}` is not one",
                        svc.name
                    ),
                ));
            }
            if (e.topic.is_some() || e.value_contains.is_some())
                && !matches!(svc.action, Action::Kafka(_))
            {
                let what = e.topic.as_deref().unwrap_or("value_contains");
                return Err(expect_error(
                    sources,
                    i,
                    what,
                    format!(
                        "`topic` and `value_contains` apply to Kafka services; `{}` is not one",
                        svc.name
                    ),
                ));
            }
            if let (Some(route), Action::Http(h)) = (&e.route, &svc.action) {
                let names: Vec<String> = h
                    .routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| route_label(r, i))
                    .collect();
                if !names.iter().any(|n| n == route) {
                    return Err(expect_error(
                        sources,
                        i,
                        route,
                        format!(
                            "service `{}` has no route `{route}` (routes: {})",
                            svc.name,
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(set)
    }

    /// The first service that claims the flow.
    pub fn claim(&self, flow: FlowKey<'_>) -> Option<Claim<'_>> {
        self.services.iter().find_map(|s| {
            s.check(flow).ok().map(|why| Claim {
                service: s,
                why: format!("service `{}` ({}): {why}", s.name, s.origin),
            })
        })
    }

    /// Every service with the reason it does or does not claim the flow,
    /// in rule order (for `meshwrap rules explain`).
    pub fn explain(&self, flow: FlowKey<'_>) -> Vec<(&Service, Result<String, String>)> {
        self.services.iter().map(|s| (s, s.check(flow))).collect()
    }

    /// Whether some service names this host by a pattern, so that DNS
    /// should hand it a fake address.
    pub fn claims_host(&self, host: &str) -> bool {
        self.services.iter().any(|s| s.host_pattern(host).is_some())
    }

    pub fn host_address(&self, host: &str) -> Option<IpAddr> {
        self.hosts
            .get(&host.trim_end_matches('.').to_ascii_lowercase())
            .copied()
    }
}

/// A fault's `probability` (default 1), checked to lie in 0..=1; shared
/// by every protocol's fault parser.
pub(crate) fn fault_probability(p: Option<f64>) -> Result<f64, String> {
    let probability = p.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&probability) {
        return Err(format!("probability {probability} is not between 0 and 1"));
    }
    Ok(probability)
}

/// The name a route is known by in events, summaries and expectations:
/// its `name:`, else `METHOD /path`, else `route N`.
pub fn route_label(r: &http::RouteSpec, index: usize) -> String {
    if let Some(n) = &r.name {
        return n.clone();
    }
    let method = r.when.method.0.first().map(|m| m.to_ascii_uppercase());
    let path = r.when.path.as_ref().map(|p| p.text.clone()).or_else(|| {
        r.when
            .path_regex
            .as_ref()
            .map(|p| format!("~{}", p.0.as_str()))
    });
    match (method, path) {
        (Some(m), Some(p)) => format!("{m} {p}"),
        (None, Some(p)) => format!("* {p}"),
        (Some(m), None) => format!("{m} *"),
        (None, None) => format!("route {}", index + 1),
    }
}

/// An error about the `i`-th expectation, placed at its text in whichever
/// file holds it.
fn expect_error(
    sources: &[(PathBuf, String)],
    i: usize,
    needle: &str,
    message: String,
) -> RulesError {
    for (f, text) in sources {
        if text.contains("expect:") && text.contains(needle) {
            let (line, column) = locate(text, needle);
            return RulesError::Invalid {
                file: f.clone(),
                line,
                column,
                field: format!("expect[{i}]"),
                message,
            };
        }
    }
    RulesError::Invalid {
        file: sources.first().map(|(f, _)| f.clone()).unwrap_or_default(),
        line: 1,
        column: 1,
        field: format!("expect[{i}]"),
        message,
    }
}

/// Reads `file:` bodies, relative to the rules file's folder.
fn load_http_files(mut h: http::HttpSpec, rules_file: &Path) -> Result<http::HttpSpec, String> {
    // Rules that came from no file (PUT /rules) have a label whose
    // "folder" does not exist: their bodies are relative to the working
    // folder.
    let dir = rules_file
        .parent()
        .filter(|d| d.is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut load = |r: &mut http::ResponseSpec| -> Result<(), String> {
        if let http::BodySpec::File { path, data } = &mut r.body {
            let full = if path.is_absolute() {
                path.clone()
            } else {
                dir.join(&*path)
            };
            *data = std::fs::read(&full)
                .map_err(|e| format!("cannot read body file {}: {e}", full.display()))?;
        }
        Ok(())
    };
    for route in &mut h.routes {
        match &mut route.responses {
            http::Responses::One(r) => load(r)?,
            http::Responses::Sequence { items, .. } => items.iter_mut().try_for_each(&mut load)?,
        }
    }
    if let http::Fallback::Respond(r) = &mut h.fallback {
        load(r)?;
    }
    Ok(h)
}

/// Parses one file's text; `file` only labels errors.
pub fn parse_str(file: &Path, text: &str) -> Result<RulesFile, RulesError> {
    if text.trim().is_empty() {
        return Ok(RulesFile::default());
    }
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, RulesFile>(de).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        let (line, column) = inner
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let message = strip_position(&inner.to_string());
        RulesError::Invalid {
            file: file.to_path_buf(),
            line,
            column,
            field: if field == "." {
                "(top level)".into()
            } else {
                field
            },
            message,
        }
    })
}

/// serde_norway writes "path: message at line L column C"; we print the
/// position and path ourselves, so keep only the message.
fn strip_position(msg: &str) -> String {
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    match msg.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && !path.contains(' ') && !path.contains('`') => {
            rest.to_string()
        }
        _ => msg.to_string(),
    }
}

/// Line and column (1-based) of the first occurrence of `needle` outside
/// comments, preferring an occurrence written as a key (`needle:`).
fn locate(text: &str, needle: &str) -> (usize, usize) {
    // Where the comment (if any) starts.
    let code = |line: &str| -> usize {
        if line.trim_start().starts_with('#') {
            return 0;
        }
        line.find(" #").unwrap_or(line.len())
    };
    let mut first = None;
    for (i, line) in text.lines().enumerate() {
        let end = code(line).min(line.len());
        let Some(col) = line[..end].find(needle) else {
            continue;
        };
        let after = line[col + needle.len()..end].trim_start_matches(['"', '\'']);
        if after.starts_with(':') {
            return (i + 1, col + 1);
        }
        first.get_or_insert((i + 1, col + 1));
    }
    first.unwrap_or((1, 1))
}

/// Position of the `name:` line of the service called `name` (the last
/// one, so a duplicate points at the second definition).
fn locate_service(text: &str, name: &str) -> (usize, usize) {
    let mut found = (1, 1);
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start().trim_start_matches("- ").trim_start();
        if let Some(rest) = t.strip_prefix("name:") {
            let v = rest.split(" #").next().unwrap_or(rest).trim();
            let v = v.trim_matches(|c| c == '"' || c == '\'');
            if v == name {
                found = (i + 1, line.find("name:").map(|c| c + 1).unwrap_or(1));
            }
        }
    }
    found
}

#[cfg(test)]
impl RuleSet {
    /// Rules from a text, as if read from `rules.yaml`: the unit tests of
    /// every protocol's rules load them this way.
    pub(crate) fn from_text(text: &str) -> Result<RuleSet, RulesError> {
        RuleSet::from_sources(&[(PathBuf::from("rules.yaml"), text.to_string())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_has_position_and_path() {
        let err = RuleSet::from_text(
            "unmatched: pass\nservices:\n  - name: a\n    match: { hots: x }\n    pass: {}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(":4:"), "{err}");
        assert!(err.contains("services[0].match"), "{err}");
        assert!(err.contains("hots"), "{err}");
    }

    #[test]
    fn bad_address_in_hosts() {
        let err = RuleSet::from_text("hosts:\n  a.test: 300.1.1.1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2:"), "{err}");
        assert!(err.contains("hosts.a.test"), "{err}");
    }

    #[test]
    fn services_match_in_order() {
        let set = RuleSet::from_text(
            "services:\n  - name: web\n    match: { host: \"*.pay.test\", port: [80, \"8000-8100\"] }\n    pass: {}\n  - name: any443\n    match: { port: 443 }\n    refuse: true\n",
        )
        .unwrap();
        let k = |h: Option<&'static str>, p: u16| FlowKey {
            host: h,
            dst: SocketAddr::new("198.18.0.1".parse().unwrap(), p),
        };
        assert_eq!(
            set.claim(k(Some("api.pay.test"), 8080))
                .unwrap()
                .service
                .name,
            "web"
        );
        assert_eq!(
            set.claim(k(Some("api.pay.test"), 443))
                .unwrap()
                .service
                .name,
            "any443"
        );
        assert!(set.claim(k(None, 80)).is_none());
        assert!(set.claims_host("x.pay.test"));
    }

    #[test]
    fn one_action_required_and_duplicates_rejected() {
        let err = RuleSet::from_text("services:\n  - name: a\n    match: { port: 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs one action"), "{err}");
        let err = RuleSet::from_text(
            "services:\n  - name: a\n    match: { port: 1 }\n    pass: {}\n  - name: a\n    match: { port: 2 }\n    pass: {}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(":5:"), "{err}");
    }

    #[test]
    fn http_service_loads_and_expect_checks_routes() {
        let set = RuleSet::from_text(
            "services:\n  - name: pay\n    match: { host: api.pay.test }\n    http:\n      routes:\n        - name: charge\n          when: { method: POST, path: \"/v1/charges/{id}\" }\n          respond: { status: 201, json: { id: \"{{ path.id }}\" } }\nexpect:\n  - { service: pay, route: charge, times: 1 }\n",
        )
        .unwrap();
        assert_eq!(set.expects.len(), 1);
        let err = RuleSet::from_text(
            "services:\n  - name: pay\n    match: { port: 80 }\n    http: { routes: [ { name: a } ] }\nexpect:\n  - { service: pay, route: nope }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no route `nope`"), "{err}");
        let err = RuleSet::from_text(
            "services:\n  - name: pay\n    match: { port: 80 }\n    http:\n      routes:\n        - when: { path_regex: \"([\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("invalid regex") && err.contains(":6:"),
            "{err}"
        );
        let err = RuleSet::from_text(
            "services:\n  - name: pay\n    match: { port: 80 }\n    http:\n      routes:\n        - respond: { body: \"{{ oops\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("template"), "{err}");
    }

    use proptest::prelude::*;

    /// Fragments of valid and invalid rules, glued at random: the loader
    /// must answer every combination with Ok or a positioned error.
    const FRAGMENTS: &[&str] = &[
        "services:\n",
        "  - name: a\n",
        "    match: { host: \"*.x.test\", port: [80, \"1-9\"] }\n",
        "    http:\n",
        "      routes:\n",
        "        - when: { path: \"/a/{id}/**\" }\n",
        "          respond: { json: { a: \"{{ path.id }}\" } }\n",
        "          sequence: [ { status: 500 } ]\n",
        "      faults: { latency: 10ms-20ms, probability: 0.5 }\n",
        "    pass: {}\n",
        "hosts: { a.test: 127.0.0.1 }\n",
        "expect: [ { service: a, times: 2 } ]\n",
        "unmatched: pass\n",
        ": : :\n",
        "\t- [\n",
        "    cidr: 10.0.0.0/33\n",
        "&a [*a]\n",
        "\"\n",
        "      fallback: pass\n",
        "      resources: [ { path: /c, seed: [ {id: 1} ] } ]\n",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn loader_never_panics_on_fragments(picks in proptest::collection::vec(0..FRAGMENTS.len(), 0..12)) {
            let text: String = picks.iter().map(|&i| FRAGMENTS[i]).collect();
            let _ = parse_str(Path::new("fuzz.yaml"), &text);
        }

        #[test]
        fn loader_never_panics_on_bytes(text in "\\PC{0,300}") {
            if let Err(RulesError::Invalid { line, column, .. }) = parse_str(Path::new("fuzz.yaml"), &text) {
                prop_assert!(line >= 1 && column >= 1);
            }
        }
    }

    #[test]
    fn cidr_contains() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.2.3.4".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        let c: Cidr = "::/0".parse().unwrap();
        assert!(c.contains("fd00::1".parse().unwrap()));
    }
}
