//! The Redis responder behind the `Responder` seam, and its exchange
//! detail (one command with its key and reply type).

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;

use super::RedisService;
use crate::events::{ExchangeDetail, ExchangeEvent, MockHint, ProtocolInfo, SummaryStyle};
use crate::io::BoxIo;
use crate::responders::{BuildCtx, BuildResponder, Responder, ServeCtx, ServeFuture};
use crate::rules::redis::RedisSpec;
use crate::rules::timeouts::Timeouts;
use crate::rules::Service;
use crate::stack::FlowHandle;

pub static INFO: ProtocolInfo = ProtocolInfo {
    key: "redis",
    title: "Redis",
    unit: "command",
    journal_key: "redis",
    summary: SummaryStyle::PerService,
    mock_hint: Some(MockHint {
        sniffed: &["resp"],
        ports: &[6379],
        snippet: "redis: { seed: {} }",
    }),
};

impl Responder for RedisService {
    fn info(&self) -> &'static ProtocolInfo {
        &INFO
    }

    fn serve(self: Arc<Self>, io: BoxIo, ctx: ServeCtx, flow: FlowHandle) -> ServeFuture {
        Box::pin(super::serve(self, io, ctx, flow))
    }

    fn timeouts(&self) -> Timeouts {
        self.spec.timeouts.resolve(Timeouts::REDIS)
    }

    fn reset(&self) {
        RedisService::reset(self)
    }
}

impl BuildResponder for RedisService {
    type Spec = RedisSpec;
    const INFO: &'static ProtocolInfo = &INFO;
    fn build(service: &Service, spec: Arc<RedisSpec>, ctx: &BuildCtx) -> Self {
        let port = service.ports.first().map_or(6379, |p| p.first);
        RedisService::new(&service.name, spec, ctx.events.clone(), port, ctx.journal)
    }
}

/// One Redis command as the journal keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct RedisDetail {
    /// Upper case (`SET`, `CLIENT`); `(PROTOCOL)` for a malformed request.
    pub command: String,
    /// The first key argument (lossy UTF-8, clipped), if the command has one.
    pub key: Option<String>,
    pub db: usize,
    /// The reply's RESP type: simple, error, integer, bulk, nil, array,
    /// map, set, double, boolean, push, none.
    pub reply: &'static str,
    /// The arguments after the command, clipped (passwords redacted).
    pub args: Vec<String>,
    /// The reply as `redis-cli` prints it, clipped.
    pub reply_text: String,
    /// The fault applied, if any (latency, error, reset, hang).
    pub fault: Option<&'static str>,
}

impl ExchangeDetail for RedisDetail {
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "key" => self.key.as_deref().map(Cow::Borrowed),
            _ => None,
        }
    }

    fn size(&self) -> usize {
        self.command.len()
            + self.key.as_ref().map_or(0, String::len)
            + self.args.iter().map(|a| a.len() + 24).sum::<usize>()
            + self.reply_text.len()
            + 128
    }

    fn describe(&self, ex: &ExchangeEvent) -> String {
        format!(
            "{}{} -> {}{}",
            self.command,
            self.key
                .as_deref()
                .map(|k| format!(" {k}"))
                .unwrap_or_default(),
            self.reply,
            ex.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
    }

    /// Command names come from a fixed table; anything else is `unknown`,
    /// so the label stays bounded.
    fn metric_outcome(&self, ex: &ExchangeEvent) -> String {
        match ex.error.as_deref() {
            Some(e) if e.starts_with("ERR unknown command") => "unknown".to_string(),
            Some(_) => format!("{}_error", self.command.to_ascii_lowercase()),
            None => self.command.to_ascii_lowercase(),
        }
    }
}
