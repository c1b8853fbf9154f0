//! The one table of mocked protocols: each line names a protocol's rules
//! spec (`rules/<protocol>.rs`) and its responder (`responders/<protocol>/`).
//! Everything else reaches a protocol through this table, so adding one is
//! a line here (see `responders` for the whole list of files).
//!
//! It is a macro because a rules file is parsed with serde: picking the
//! spec type by the service's key has to be decided at compile time to
//! keep serde's positions (file, line, column, field path) in errors.

use std::sync::Arc;

use serde::de::{self, MapAccess};

use crate::events::ProtocolInfo;
use crate::responders::{BuildCtx, BuildResponder, Responder};
use crate::rules::mock::{MockSpec, RulesEntry};
use crate::rules::Service;

macro_rules! protocol_table {
    ($($spec:ty => $responder:ty;)*) => {
        /// The rules side of every protocol, in table order.
        pub const RULES: &[RulesEntry] = &[$(RulesEntry::of::<$spec>()),*];

        /// The keys a service may have: its own and one per protocol.
        pub const SERVICE_FIELDS: &[&str] =
            &["name", "match", "pass", "refuse", $(<$spec as crate::rules::ProtocolRules>::KEY),*];

        /// Parses the value of a service's protocol key (`redis: {…}`);
        /// a key with no value is the protocol's default spec.
        pub(crate) fn parse_spec<'de, A: MapAccess<'de>>(
            key: &str,
            map: &mut A,
        ) -> Result<Box<dyn MockSpec>, A::Error> {
            $(
                if key == <$spec as crate::rules::ProtocolRules>::KEY {
                    let spec = map.next_value::<Option<$spec>>()?.unwrap_or_default();
                    return Ok(Box::new(spec));
                }
            )*
            Err(de::Error::unknown_field(key, SERVICE_FIELDS))
        }

        /// The responder of a mocked service.
        pub fn build(
            spec: &Arc<dyn MockSpec>,
            service: &Service,
            ctx: &BuildCtx,
        ) -> Option<Arc<dyn Responder>> {
            let any = spec.clone().into_any();
            $(
                let any = match any.downcast::<$spec>() {
                    Ok(s) => return Some(Arc::new(<$responder>::build(service, s, ctx))),
                    Err(other) => other,
                };
            )*
            drop(any);
            None
        }

        /// What the events and the summary know of every protocol.
        pub const INFOS: &[&ProtocolInfo] = &[$(<$responder as BuildResponder>::INFO),*];
    };
}

protocol_table! {
    crate::rules::http::HttpSpec => crate::responders::http::HttpService;
    crate::rules::redis::RedisSpec => crate::responders::redis::RedisService;
    crate::rules::mongo::MongoSpec => crate::responders::mongo::MongoService;
    crate::rules::kafka::KafkaSpec => crate::responders::kafka::KafkaService;
}
