//! Rules: the YAML files that say which flows are mocked, passed or
//! refused, loaded with errors that point at file, line, column and field.

pub mod common;
pub mod defaults;
pub mod expect;
pub mod glob;
pub mod http;
pub mod kafka;
mod messages;
pub mod mock;
pub mod mongo;
pub mod redis;
pub mod redis_commands;
mod schema;
mod suggest;
pub mod timeouts;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub use common::OneOrMany;
pub use expect::{CountSpec, ExpectSpec};
pub use glob::{glob_match, HostGlob};
pub use mock::{LoadCtx, MockSpec, ProtocolRules};
pub use schema::{Cidr, MatchSpec, PortRange, RulesFile, ServiceSpec, Unmatched};

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
    /// Answered by the responder of the spec's protocol.
    Mock(Arc<dyn MockSpec>),
}

impl Action {
    pub fn label(&self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Refuse => "refuse",
            Action::Mock(spec) => spec.key(),
        }
    }

    /// The spec of a mocked service.
    pub fn mock(&self) -> Option<&Arc<dyn MockSpec>> {
        match self {
            Action::Mock(spec) => Some(spec),
            _ => None,
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
    /// The host pattern that claims `host`. A protocol may claim more
    /// names than its patterns (a Kafka cluster its brokers' `b<id>.<host>`)
    /// so that the addresses it advertises lead back to it.
    fn host_pattern(&self, host: &str) -> Option<&HostGlob> {
        self.hosts.iter().find(|g| g.matches(host)).or_else(|| {
            let base = self.action.mock()?.claimed_base(host)?;
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
            // One pass over the text for every service's position: a scan
            // per service made loading quadratic in the number of services.
            let service_lines = name_lines(text);
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
                let (line, column) = service_lines
                    .get(spec.name.as_str())
                    .copied()
                    .unwrap_or((1, 1));
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
                let action = action_of(
                    spec.pass,
                    spec.refuse,
                    spec.mocks,
                    file,
                    &spec.name,
                    &parsed.defaults,
                )
                .map_err(|(field, m)| invalid(&field, m))?;
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
        let mut expects = std::mem::take(&mut set.expects);
        for (i, e) in expects.iter_mut().enumerate() {
            set.bind_expect(e, true)
                .map_err(|(needle, message)| expect_error(sources, i, &needle, message))?;
        }
        set.expects = expects;
        Ok(set)
    }

    /// Checks an expectation against its service and gives it the
    /// service's matcher; `Err((what to point at, message))`. `strict`
    /// (the rules' own expectations) also checks what the protocol can only
    /// check against its spec, such as an HTTP route's name.
    pub fn bind_expect(&self, e: &mut ExpectSpec, strict: bool) -> Result<(), (String, String)> {
        let Some(svc) = self.services.iter().find(|s| s.name == e.service) else {
            return Err((
                e.service.clone(),
                format!("no service is named `{}`", e.service),
            ));
        };
        let Some(spec) = svc.action.mock() else {
            return Err((
                e.service.clone(),
                format!(
                    "service `{}` is not mocked ({}): expectations count the requests a responder answers",
                    svc.name,
                    svc.action.label()
                ),
            ));
        };
        let own = spec.expect_fields();
        if let Some(field) = e.fields.keys().find(|f| !own.contains(&f.as_str())) {
            return Err((
                field.clone(),
                foreign_field(field, &svc.name, spec.as_ref()),
            ));
        }
        if strict {
            spec.check_expect(e)
                .map_err(|err| (err.field, err.message))?;
        }
        let matcher = spec.expect(e).map_err(|err| (err.field, err.message))?;
        e.matcher = Some(matcher);
        Ok(())
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

/// The one action of a service, its spec prepared; `Err((field, message))`.
fn action_of(
    pass: Option<schema::EmptySpec>,
    refuse: Option<schema::EmptySpec>,
    mocks: Vec<(&'static str, Box<dyn MockSpec>)>,
    file: &Path,
    name: &str,
    defaults: &defaults::DefaultsSpec,
) -> Result<Action, (String, String)> {
    let mut actions: Vec<(&str, Action)> = Vec::new();
    if pass.is_some() {
        actions.push(("pass", Action::Pass));
    }
    if refuse.is_some() {
        actions.push(("refuse", Action::Refuse));
    }
    // Rules that came from no file (PUT /rules) have a label whose
    // "folder" does not exist: what they refer to is relative to the
    // working folder.
    let dir = file
        .parent()
        .filter(|d| d.is_dir())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for (key, mut spec) in mocks {
        spec.prepare(&LoadCtx {
            dir: &dir,
            defaults,
        })
        .map_err(|m| (format!(".{key}"), m))?;
        actions.push((key, Action::Mock(Arc::from(spec))));
    }
    match actions.len() {
        1 => Ok(actions.remove(0).1),
        0 => {
            let keys: Vec<String> = crate::protocols::RULES
                .iter()
                .map(|p| format!("`{}`", p.key))
                .collect();
            Err((
                String::new(),
                format!(
                    "service `{name}` needs one action key: {}, `pass` or `refuse`",
                    keys.join(", ")
                ),
            ))
        }
        _ => {
            let names: Vec<&str> = actions.iter().map(|(n, _)| *n).collect();
            Err((
                String::new(),
                format!(
                    "service `{name}` has several action keys ({}); keep one",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// Why an expectation field does not fit its service: which protocols
/// take it, and what this one takes.
fn foreign_field(field: &str, service: &str, spec: &dyn MockSpec) -> String {
    let takers: Vec<&str> = crate::protocols::RULES
        .iter()
        .filter(|p| p.expect_fields.contains(&field))
        .map(|p| p.title)
        .collect();
    let own = spec.expect_fields();
    let own = if own.is_empty() {
        format!(
            "{} expectations take no fields but the counts",
            spec.title()
        )
    } else {
        let list: Vec<String> = own.iter().map(|f| format!("`{f}`")).collect();
        format!("{} expectations take {}", spec.title(), list.join(", "))
    };
    match takers.as_slice() {
        [] => format!(
            "unknown field `{field}`: an expectation has `service`, `times`, `at_least`, `at_most` or `never`, and {own}"
        ),
        _ => {
            let names = match takers.split_last() {
                Some((last, [])) => last.to_string(),
                Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                None => String::new(),
            };
            format!(
                "`{field}` is not a field of {} expectations: such fields apply to {names} services, and `{service}` is not one ({own})",
                spec.title()
            )
        }
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
        let message = messages::humanize(&strip_position(&inner.to_string()));
        RulesError::Invalid {
            file: file.to_path_buf(),
            line,
            column,
            field: messages::field_path(&field),
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

/// The position of every `name:` line of a text, by the name it gives (the
/// last one, so a duplicate service points at the second definition).
fn name_lines(text: &str) -> std::collections::HashMap<&str, (usize, usize)> {
    let mut found = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start().trim_start_matches("- ").trim_start();
        if let Some(rest) = t.strip_prefix("name:") {
            let v = rest.split(" #").next().unwrap_or(rest).trim();
            let v = v.trim_matches(|c| c == '"' || c == '\'');
            found.insert(v, (i + 1, line.find("name:").map(|c| c + 1).unwrap_or(1)));
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
