//! The MongoDB responder behind the `Responder` seam, and its exchange
//! detail (one command with its namespace, filter and counts).

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;

use super::{MongoService, COMMANDS};
use crate::events::{ExchangeDetail, ExchangeEvent, MockHint, ProtocolInfo, SummaryStyle};
use crate::io::BoxIo;
use crate::responders::{BuildCtx, BuildResponder, Responder, ServeCtx, ServeFuture};
use crate::rules::mongo::MongoSpec;
use crate::rules::timeouts::Timeouts;
use crate::rules::Service;
use crate::stack::FlowHandle;

pub static INFO: ProtocolInfo = ProtocolInfo {
    key: "mongo",
    title: "MongoDB",
    unit: "command",
    journal_key: "mongo",
    summary: SummaryStyle::PerService,
    mock_hint: Some(MockHint {
        sniffed: &["mongo"],
        ports: &[27017],
        snippet: "mongo: { collections: {} }",
    }),
};

impl Responder for MongoService {
    fn info(&self) -> &'static ProtocolInfo {
        &INFO
    }

    fn serve(self: Arc<Self>, io: BoxIo, ctx: ServeCtx, flow: FlowHandle) -> ServeFuture {
        Box::pin(super::serve(self, io, ctx, flow))
    }

    fn timeouts(&self) -> Timeouts {
        self.spec.timeouts.resolve(Timeouts::MONGO)
    }

    fn reset(&self) {
        MongoService::reset(self)
    }
}

impl BuildResponder for MongoService {
    type Spec = MongoSpec;
    const INFO: &'static ProtocolInfo = &INFO;
    fn build(service: &Service, spec: Arc<MongoSpec>, ctx: &BuildCtx) -> Self {
        MongoService::new(&service.name, spec, ctx.events.clone(), ctx.journal)
    }
}

/// One MongoDB command as the journal keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct MongoDetail {
    /// The command name as sent (`insert`, `find`, `hello`);
    /// `(protocol)` for a malformed message.
    pub command: String,
    pub db: String,
    /// `db.collection` when the command names a collection.
    pub collection: Option<String>,
    /// The filter, as relaxed extended JSON (clipped).
    pub filter: Option<String>,
    /// The command and the reply as relaxed extended JSON, cut down to a
    /// bounded size (credentials redacted).
    pub request: Option<String>,
    pub reply: String,
    pub matched: Option<u64>,
    pub modified: Option<u64>,
    /// The error code (`ok: 0` or the first write error).
    pub error_code: Option<i32>,
}

impl ExchangeDetail for MongoDetail {
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "collection" => self.collection.as_deref().map(Cow::Borrowed),
            _ => None,
        }
    }

    fn size(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        self.command.len()
            + self.db.len()
            + text(&self.collection)
            + text(&self.filter)
            + text(&self.request)
            + self.reply.len()
            + 128
    }

    fn describe(&self, ex: &ExchangeEvent) -> String {
        format!(
            "{}{} -> {}{}",
            self.command,
            self.collection
                .as_deref()
                .map(|k| format!(" {k}"))
                .unwrap_or_default(),
            if self.error_code.is_some() {
                "error"
            } else {
                "ok"
            },
            ex.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
    }

    /// Command names are bounded: unknown ones count as `unknown`.
    fn metric_outcome(&self, _: &ExchangeEvent) -> String {
        let known = COMMANDS.contains(&self.command.as_str());
        if self.error_code == Some(59) || !known {
            "unknown".to_string()
        } else if self.error_code.is_some() {
            format!("{}_error", self.command.to_ascii_lowercase())
        } else {
            self.command.to_ascii_lowercase()
        }
    }
}
