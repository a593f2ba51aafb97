//! Cache key names: one hash tag per kind (`{cache:<kind>}`) so a cache
//! read (one `MGET` of generations and entry) stays in one cluster slot;
//! the figures of all kinds share one hash, so a flush is one pipeline.

use super::CacheKind;

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

    pub(super) fn scope_gen(&self, kind: CacheKind, scope: &str) -> String {
        format!("{}:gen:{scope}", self.base(kind))
    }

    pub(super) fn entry(&self, kind: CacheKind, scope: &str, key: &str) -> String {
        format!("{}:v:{scope}:{key}", self.base(kind))
    }

    /// Hit/miss figures of every kind, one hash (one slot).
    pub(super) fn stats(&self) -> String {
        format!("{}cache:stats", self.prefix)
    }
}
