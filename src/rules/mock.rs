//! What a mocked protocol's rules give the loader: one trait,
//! `ProtocolRules`, implemented by each `rules/<protocol>.rs` spec, and its
//! object-safe face `MockSpec`, which a `Service` holds. The loader, the
//! matcher and `expect:` talk to every protocol through it, so none of
//! them names a protocol; the list of protocols is `crate::protocols`.

use std::any::Any;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::expect::{ExpectError, ExpectMatcher, ExpectSpec};

/// What the loader hands a spec once it is parsed.
pub struct LoadCtx<'a> {
    /// The folder `file:` references are relative to.
    pub dir: &'a Path,
    /// The file's `defaults:`, for what the spec leaves out.
    pub defaults: &'a super::defaults::DefaultsSpec,
}

/// A protocol's rules: its spec type (the value of its key in a service)
/// with what the loader needs of it. Each `rules/<protocol>.rs` implements
/// it once.
pub trait ProtocolRules: fmt::Debug + Default + DeserializeOwned + Send + Sync + 'static {
    /// The key of a service that selects it (`redis:`).
    const KEY: &'static str;
    /// Its name in messages (`Redis`).
    const TITLE: &'static str;
    /// The fields its `expect:` entries take beside the common ones.
    const EXPECT_FIELDS: &'static [&'static str];

    /// Checks across fields and loads what the spec refers to, after
    /// parsing; the message is placed at the service's protocol key.
    fn prepare(&mut self, ctx: &LoadCtx<'_>) -> Result<(), String> {
        let _ = ctx;
        Ok(())
    }

    /// A host the service claims besides those its patterns match: Kafka's
    /// brokers `b<id>.<host>` lead back to `<host>`, which is returned.
    fn claimed_base<'a>(&self, host: &'a str) -> Option<&'a str> {
        let _ = host;
        None
    }

    /// The matcher of an `expect:` entry of this service; its fields are
    /// among `EXPECT_FIELDS` (the loader checked).
    fn expect(&self, e: &ExpectSpec) -> Result<Arc<dyn ExpectMatcher>, ExpectError>;

    /// What the rules file's own expectations must also get right (an
    /// HTTP route that exists); `POST /verify` asks without it, so a test
    /// may count calls to a route the rules in force do not have.
    fn check_expect(&self, e: &ExpectSpec) -> Result<(), ExpectError> {
        let _ = e;
        Ok(())
    }
}

/// A service's spec, whatever its protocol.
pub trait MockSpec: fmt::Debug + Send + Sync {
    fn key(&self) -> &'static str;
    fn title(&self) -> &'static str;
    fn expect_fields(&self) -> &'static [&'static str];
    fn prepare(&mut self, ctx: &LoadCtx<'_>) -> Result<(), String>;
    fn claimed_base<'a>(&self, host: &'a str) -> Option<&'a str>;
    fn expect(&self, e: &ExpectSpec) -> Result<Arc<dyn ExpectMatcher>, ExpectError>;
    fn check_expect(&self, e: &ExpectSpec) -> Result<(), ExpectError>;
    /// For the responder registry, which turns it back into its type.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: ProtocolRules> MockSpec for T {
    fn key(&self) -> &'static str {
        T::KEY
    }
    fn title(&self) -> &'static str {
        T::TITLE
    }
    fn expect_fields(&self) -> &'static [&'static str] {
        T::EXPECT_FIELDS
    }
    fn prepare(&mut self, ctx: &LoadCtx<'_>) -> Result<(), String> {
        ProtocolRules::prepare(self, ctx)
    }
    fn claimed_base<'a>(&self, host: &'a str) -> Option<&'a str> {
        ProtocolRules::claimed_base(self, host)
    }
    fn expect(&self, e: &ExpectSpec) -> Result<Arc<dyn ExpectMatcher>, ExpectError> {
        ProtocolRules::expect(self, e)
    }
    fn check_expect(&self, e: &ExpectSpec) -> Result<(), ExpectError> {
        ProtocolRules::check_expect(self, e)
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// One entry of the protocol table as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct RulesEntry {
    pub key: &'static str,
    pub title: &'static str,
    pub expect_fields: &'static [&'static str],
}

impl RulesEntry {
    pub const fn of<T: ProtocolRules>() -> RulesEntry {
        RulesEntry {
            key: T::KEY,
            title: T::TITLE,
            expect_fields: T::EXPECT_FIELDS,
        }
    }
}
