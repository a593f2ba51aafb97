//! Cache key names: one hash tag per kind (`{cache:<kind>}`) so a cache
//! read (one `MGET` of generations and entry) stays in one cluster slot;
//! the figures of all kinds share one hash, so a flush is one pipeline.

use super::CacheKind;
use crate::redis::key_part;

#[derive(Debug, Clone)]
pub(super) struct CacheKeys {
    prefix: String,
}

impl CacheKeys {
    pub(super) fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    fn base(&self, kind: CacheKind) -> String {
        format!("{}cache:{{{}}}", self.prefix, kind.as_str())
    }

    pub(super) fn kind_gen(&self, kind: CacheKind) -> String {
        format!("{}:gen", self.base(kind))
    }

    /// Scopes are ids (an assistant, a conversation): escaped as in every key.
    pub(super) fn scope_gen(&self, kind: CacheKind, scope: &str) -> String {
        format!("{}:gen:{}", self.base(kind), key_part(scope))
    }

    pub(super) fn entry(&self, kind: CacheKind, scope: &str, key: &str) -> String {
        format!("{}:v:{}:{key}", self.base(kind), key_part(scope))
    }

    /// Hit/miss figures of every kind, one hash (one slot).
    pub(super) fn stats(&self) -> String {
        format!("{}cache:stats", self.prefix)
    }
}
