//! The Kafka responder behind the `Responder` seam, and its exchange
//! detail (one request, or one produced record).

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;

use super::KafkaService;
use crate::events::{ExchangeDetail, ExchangeEvent, ProtocolInfo, SummaryStyle};
use crate::io::BoxIo;
use crate::responders::{BuildCtx, BuildResponder, Responder, ServeCtx, ServeFuture};
use crate::rules::kafka::KafkaSpec;
use crate::rules::timeouts::Timeouts;
use crate::rules::Service;
use crate::stack::FlowHandle;

pub static INFO: ProtocolInfo = ProtocolInfo {
    key: "kafka",
    title: "Kafka",
    unit: "request",
    journal_key: "kafka",
    summary: SummaryStyle::PerService,
    mock_hint: None,
};

impl Responder for KafkaService {
    fn info(&self) -> &'static ProtocolInfo {
        &INFO
    }

    fn serve(self: Arc<Self>, io: BoxIo, ctx: ServeCtx, _flow: FlowHandle) -> ServeFuture {
        Box::pin(super::serve(self, io, ctx))
    }

    fn timeouts(&self) -> Timeouts {
        self.spec.timeouts.resolve(Timeouts::KAFKA)
    }

    fn reset(&self) {
        KafkaService::reset(self)
    }
}

impl BuildResponder for KafkaService {
    type Spec = KafkaSpec;
    const INFO: &'static ProtocolInfo = &INFO;
    fn build(service: &Service, spec: Arc<KafkaSpec>, ctx: &BuildCtx) -> Self {
        KafkaService::new(&service.name, spec, ctx.events.clone(), ctx.journal)
    }
}

/// One Kafka request (or, for Produce, one record) as the journal keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaDetail {
    /// snake_case API name (`produce`, `fetch`, `join_group`…).
    pub api: &'static str,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    /// Produce: the record's offset; Fetch: the high watermark;
    /// ListOffsets: the offset answered.
    pub offset: Option<i64>,
    /// Lossy UTF-8, clipped.
    pub key: Option<String>,
    pub value: Option<String>,
    /// Kafka's error code (0 for none).
    pub error_code: i16,
}

impl ExchangeDetail for KafkaDetail {
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "topic" => self.topic.as_deref().map(Cow::Borrowed),
            "value" => self.value.as_deref().map(Cow::Borrowed),
            _ => None,
        }
    }

    fn size(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        text(&self.topic) + text(&self.key) + text(&self.value) + 128
    }

    fn describe(&self, _: &ExchangeEvent) -> String {
        if self.api == "produce" {
            return format!(
                "produce {}[{}] @{}: {}",
                self.topic.as_deref().unwrap_or("?"),
                self.partition.unwrap_or(-1),
                self.offset.unwrap_or(-1),
                self.value.as_deref().unwrap_or("null")
            );
        }
        format!("{} -> error code {}", self.api, self.error_code)
    }

    /// API names come from a fixed table, so the label stays bounded.
    fn metric_outcome(&self, _: &ExchangeEvent) -> String {
        if self.error_code != 0 {
            format!("{}_error", self.api)
        } else {
            self.api.to_string()
        }
    }
}
