//! Templated bodies and headers, with minijinja (Jinja syntax).
//!
//! Templates are compiled once when the service is built. In a JSON body a
//! string that is a single `{{ expression }}` keeps the expression's type
//! (`amount: "{{ json.amount }}"` gives a number); other strings render to
//! strings.

use std::collections::HashMap;
use std::sync::Arc;

use minijinja::{Environment, Value};
use tokio::sync::Semaphore;

use crate::rules::http::{BodySpec, Fallback, HttpSpec, ResponseSpec, Responses};

/// How many template instructions one render may run: the data plane is
/// one thread, so a loop a rule (or a request's value) makes long must
/// end in an error instead of freezing every service. A thousand-line
/// body costs a few thousand.
pub const TEMPLATE_FUEL: u64 = 2_000_000;

/// A template error as the SUT and the events see it.
fn template_error(e: minijinja::Error) -> String {
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        format!("template error: the template ran out of fuel (more than {TEMPLATE_FUEL} steps for one response)")
    } else {
        format!("template error: {e:#}")
    }
}

/// How many templated responses render at once, each on a blocking
/// thread of its own: a render may take its full fuel, and the data plane
/// (one thread, serving every flow, DNS and the signals' effects) must not
/// wait for it. The rest queue; two cores are the usual CI machine.
const RENDER_WORKERS: usize = 2;

/// A service's compiled templates; clones share them.
#[derive(Clone)]
pub(crate) struct Renderer {
    env: Arc<Environment<'static>>,
    /// Template source → name in `env`.
    names: Arc<HashMap<String, String>>,
    workers: Arc<Semaphore>,
}

fn collect_json<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_json(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_json(x, out)),
        _ => {}
    }
}

fn collect<'a>(r: &'a ResponseSpec, out: &mut Vec<&'a str>) {
    for (_, h) in &r.headers {
        out.push(&h.0);
    }
    match &r.body {
        BodySpec::Text(t) => out.push(&t.0),
        BodySpec::Json(j) => collect_json(j, out),
        _ => {}
    }
}

fn is_dynamic(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// `{{ expr }}` alone → `expr`.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%"))
        .then_some(inner.trim())
}

impl Renderer {
    pub fn new(spec: &HttpSpec) -> Self {
        let mut env = Environment::new();
        env.set_keep_trailing_newline(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        let mut sources = Vec::new();
        for r in &spec.routes {
            match &r.responses {
                Responses::One(x) => collect(x, &mut sources),
                Responses::Sequence { items, .. } => {
                    items.iter().for_each(|x| collect(x, &mut sources))
                }
            }
        }
        if let Fallback::Respond(r) = spec.fallback() {
            collect(r, &mut sources);
        }
        let mut names = HashMap::new();
        for s in sources.into_iter().filter(|s| is_dynamic(s)) {
            if names.contains_key(s) {
                continue;
            }
            let name = format!("t{}", names.len());
            // Syntax was checked when the rules were loaded.
            if env.add_template_owned(name.clone(), s.to_string()).is_ok() {
                names.insert(s.to_string(), name);
            }
        }
        Renderer {
            env: Arc::new(env),
            names: Arc::new(names),
            workers: Arc::new(Semaphore::new(RENDER_WORKERS)),
        }
    }

    /// Whether building this response runs a template (else it is cheap
    /// enough for the data plane).
    pub fn is_templated(spec: &ResponseSpec) -> bool {
        let mut sources = Vec::new();
        collect(spec, &mut sources);
        sources.into_iter().any(is_dynamic)
    }

    /// Runs `work` (a render) off the data plane, on a blocking thread,
    /// at most `RENDER_WORKERS` at a time.
    pub async fn off_plane<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Renderer) -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        // The permit goes with the render: a client that closes mid-request
        // drops this future, but not the render already running, which
        // must still count against the limit until it ends.
        let permit = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "template error: the renderer is shut down".to_string())?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&this)
        })
        .await
        .map_err(|e| format!("template error: the render failed: {e}"))?
    }

    /// Renders a string template; static strings come back as they are.
    pub fn render(&self, source: &str, ctx: &Value) -> Result<String, String> {
        if !is_dynamic(source) {
            return Ok(source.to_string());
        }
        match self.names.get(source) {
            Some(name) => self
                .env
                .get_template(name)
                .and_then(|t| t.render(ctx))
                .map_err(template_error),
            None => self.env.render_str(source, ctx).map_err(template_error),
        }
    }

    /// Renders every string inside a JSON value.
    pub fn render_json(
        &self,
        v: &serde_json::Value,
        ctx: &Value,
    ) -> Result<serde_json::Value, String> {
        use serde_json::Value as J;
        Ok(match v {
            J::String(s) if is_dynamic(s) => {
                if let Some(expr) = single_expression(s) {
                    let e = self.env.compile_expression(expr).map_err(template_error)?;
                    let out = e.eval(ctx).map_err(template_error)?;
                    if out.is_undefined() {
                        J::Null
                    } else {
                        serde_json::to_value(&out).map_err(|e| e.to_string())?
                    }
                } else {
                    J::String(self.render(s, ctx)?)
                }
            }
            J::Array(a) => J::Array(
                a.iter()
                    .map(|x| self.render_json(x, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            J::Object(o) => J::Object(
                o.iter()
                    .map(|(k, x)| Ok((k.clone(), self.render_json(x, ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
}
