//! The cache layer (seeds 003/004): assistant configuration (30 min),
//! assistant schema — the fields `collect_info` gathers (1 h), thread context
//! rebuilt from Postgres (2 h) and AI answers (24 h, per-assistant switch).
//!
//! **Invalidation by generation.** Every entry is stored with the generation
//! of its kind and of its scope (an assistant, a thread) it was read under.
//! Invalidating is one `INCR` — a kind, one scope, or everything (each kind's
//! generation) — never `KEYS` or `SCAN`; stale entries simply stop matching
//! and expire by TTL. A value is stored with the generations observed *before*
//! it was loaded, so an invalidation racing the load leaves a stale-stamped
//! entry that the next read ignores.
//!
//! **Metrics** (hits, misses, latency per kind) are counted in process and
//! flushed to one Redis hash per kind, at most once a second from a call that
//! already talks to Redis (and on demand from the metrics endpoints), so every
//! instance reads the same figures without an extra round trip per message.
//!
//! Keys: `{prefix}cache:{<kind>}:gen`, `…:gen:<scope>`, `…:v:<scope>:<key>`,
//! `{prefix}cache:stats` (fields `<kind>:hits`, …); one hash tag per kind
//! keeps one read's keys in one cluster slot.

mod keys;

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::AsyncCommands;

use crate::redis::BreakerConnection;
use serde::Serialize;

use crate::error::AppError;

/// What is cached, with its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKind {
    Assistant,
    Schema,
    Thread,
    Answer,
    /// GET responses of `execute_api` integrations (TTL per integration).
    Api,
}

impl CacheKind {
    pub const ALL: [CacheKind; 5] = [Self::Assistant, Self::Schema, Self::Thread, Self::Answer, Self::Api];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Assistant => "assistant",
            Self::Schema => "schema",
            Self::Thread => "thread",
            Self::Answer => "answer",
            Self::Api => "api",
        }
    }

    /// Seed 004's TTLs.
    pub fn ttl(self) -> Duration {
        Duration::from_secs(match self {
            Self::Assistant => 30 * 60,
            Self::Schema => 60 * 60,
            Self::Thread => 2 * 60 * 60,
            Self::Answer => 24 * 60 * 60,
            Self::Api => 5 * 60,
        })
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The generations a read observed; a value put back carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(String);

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    hits: u64,
    misses: u64,
    latency_us: u64,
    reads: u64,
}

#[derive(Debug, Default)]
struct Pending {
    counters: [Counters; 5],
    events: u64,
    last_flush: Option<Instant>,
}

/// Figures of one kind, as every instance sees them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindMetrics {
    pub hits: u64,
    pub misses: u64,
    pub hit_rate: f64,
    pub avg_latency_ms: f64,
}

pub struct Cache {
    conn: BreakerConnection,
    keys: keys::CacheKeys,
    pending: Mutex<Pending>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("keys", &self.keys).finish_non_exhaustive()
    }
}

const FLUSH_EVERY: Duration = Duration::from_secs(1);

impl Cache {
    pub fn new(conn: BreakerConnection, prefix: &str) -> Self {
        Self { conn, keys: keys::CacheKeys::new(prefix), pending: Mutex::new(Pending::default()) }
    }

    /// Reads `key` in `scope`. A miss returns the stamp to store the loaded
    /// value with.
    pub async fn get(&self, kind: CacheKind, scope: &str, key: &str) -> Result<(Option<String>, Stamp), AppError> {
        let started = Instant::now();
        // One MGET: the three keys share the kind's hash tag (one slot).
        let (kind_gen, scope_gen, entry): (Option<String>, Option<String>, Option<String>) = redis::cmd("MGET")
            .arg(self.keys.kind_gen(kind))
            .arg(self.keys.scope_gen(kind, scope))
            .arg(self.keys.entry(kind, scope, key))
            .query_async(&mut self.conn.clone())
            .await?;
        let stamp = format!("{}:{}", kind_gen.as_deref().unwrap_or("0"), scope_gen.as_deref().unwrap_or("0"));
        // An entry counts only under the generations it was stored with.
        let value = entry.and_then(|e| e.split_once('|').filter(|(s, _)| *s == stamp).map(|(_, v)| v.to_owned()));
        self.count(kind, value.is_some(), started.elapsed());
        self.maybe_flush().await;
        Ok((value, Stamp(stamp)))
    }

    /// Stores `value` under the stamp its read returned (TTL of the kind).
    pub async fn put(
        &self,
        kind: CacheKind,
        scope: &str,
        key: &str,
        value: &str,
        stamp: &Stamp,
    ) -> Result<(), AppError> {
        self.put_for(kind, scope, key, value, stamp, kind.ttl()).await
    }

    /// As [`Cache::put`] with an explicit TTL (integrations set their own).
    pub async fn put_for(
        &self,
        kind: CacheKind,
        scope: &str,
        key: &str,
        value: &str,
        stamp: &Stamp,
        ttl: Duration,
    ) -> Result<(), AppError> {
        let _: () = self
            .conn
            .clone()
            .set_ex(self.keys.entry(kind, scope, key), format!("{}|{value}", stamp.0), ttl.as_secs().max(1))
            .await?;
        Ok(())
    }

    /// Records a hit or miss observed outside [`Cache::get`] (the thread
    /// context lives in the conversation's own keys).
    pub fn record(&self, kind: CacheKind, hit: bool, latency: Duration) {
        self.count(kind, hit, latency);
    }

    pub async fn invalidate_scope(&self, kind: CacheKind, scope: &str) -> Result<(), AppError> {
        let _: i64 = self.conn.clone().incr(self.keys.scope_gen(kind, scope), 1).await?;
        Ok(())
    }

    pub async fn invalidate_kind(&self, kind: CacheKind) -> Result<(), AppError> {
        let _: i64 = self.conn.clone().incr(self.keys.kind_gen(kind), 1).await?;
        Ok(())
    }

    /// Everything: one `INCR` per kind, sent together (each kind has its
    /// own hash tag, so on a cluster they cannot share a pipeline).
    pub async fn invalidate_all(&self) -> Result<(), AppError> {
        let bumps = CacheKind::ALL.map(|kind| {
            let mut conn = self.conn.clone();
            let key = self.keys.kind_gen(kind);
            async move { conn.incr::<_, _, i64>(key, 1).await }
        });
        for bumped in futures::future::join_all(bumps).await {
            bumped?;
        }
        Ok(())
    }

    /// Current generations (for the cache health endpoint).
    pub async fn generations(&self) -> Result<Vec<(&'static str, i64)>, AppError> {
        let keys: Vec<String> = CacheKind::ALL.iter().map(|k| self.keys.kind_gen(*k)).collect();
        // MGET over several slots: the cluster client splits it.
        let values: Vec<Option<i64>> = redis::cmd("MGET").arg(&keys).query_async(&mut self.conn.clone()).await?;
        Ok(CacheKind::ALL.iter().zip(values).map(|(k, v)| (k.as_str(), v.unwrap_or(0))).collect())
    }

    /// Every hit and miss passes here: counted for the shared figures, for
    /// the request's log line and EMF (`CacheHits`/`CacheMisses`), and one
    /// `debug` line each (a line per read at `info` would multiply the log
    /// volume; the request line carries the counts at `info`).
    fn count(&self, kind: CacheKind, hit: bool, latency: Duration) {
        let latency_ms = crate::clock::elapsed_ms(latency);
        if hit {
            tracing::debug!(kind = kind.as_str(), latency_ms, "cache hit");
        } else {
            tracing::debug!(kind = kind.as_str(), latency_ms, "cache miss");
        }
        crate::metrics::cache(kind.as_str(), hit);
        if let Ok(mut pending) = self.pending.lock() {
            let c = &mut pending.counters[kind.index()];
            if hit {
                c.hits += 1;
            } else {
                c.misses += 1;
            }
            c.latency_us += latency.as_micros() as u64;
            c.reads += 1;
            pending.events += 1;
        }
    }

    async fn maybe_flush(&self) {
        let due = self
            .pending
            .lock()
            .map(|p| p.events >= 100 || p.last_flush.is_none_or(|at| at.elapsed() >= FLUSH_EVERY))
            .unwrap_or(false);
        if due {
            // Metrics are best effort: a failed flush keeps nothing from a request.
            let _ = self.flush().await;
        }
    }

    /// Writes this instance's counts to Redis.
    pub async fn flush(&self) -> Result<(), AppError> {
        let taken = match self.pending.lock() {
            Ok(mut p) => {
                p.last_flush = Some(Instant::now());
                p.events = 0;
                std::mem::take(&mut p.counters)
            }
            Err(_) => return Ok(()),
        };
        let mut pipe = redis::pipe();
        let mut any = false;
        for kind in CacheKind::ALL {
            let c = taken[kind.index()];
            if c.reads == 0 {
                continue;
            }
            any = true;
            // One hash for every kind (one slot): a field per kind and figure.
            let key = self.keys.stats();
            let field = |name: &str| format!("{}:{name}", kind.as_str());
            pipe.hincr(&key, field("hits"), c.hits)
                .ignore()
                .hincr(&key, field("misses"), c.misses)
                .ignore()
                .hincr(&key, field("latency_us"), c.latency_us)
                .ignore()
                .hincr(&key, field("reads"), c.reads)
                .ignore();
        }
        if any {
            let result: Result<(), redis::RedisError> = pipe.query_async(&mut self.conn.clone()).await;
            if let Err(err) = result {
                // Put the counts back so they are not lost.
                if let Ok(mut p) = self.pending.lock() {
                    for kind in CacheKind::ALL {
                        let (from, to) = (taken[kind.index()], &mut p.counters[kind.index()]);
                        to.hits += from.hits;
                        to.misses += from.misses;
                        to.latency_us += from.latency_us;
                        to.reads += from.reads;
                    }
                }
                return Err(err.into());
            }
        }
        Ok(())
    }

    /// The figures of every kind, from Redis.
    pub async fn metrics(&self) -> Result<Vec<(&'static str, KindMetrics)>, AppError> {
        let stats: std::collections::HashMap<String, u64> = self.conn.clone().hgetall(self.keys.stats()).await?;
        Ok(CacheKind::ALL
            .iter()
            .map(|kind| {
                let figure = |name: &str| stats.get(&format!("{}:{name}", kind.as_str())).copied().unwrap_or(0);
                let (hits, misses, reads, latency) =
                    (figure("hits"), figure("misses"), figure("reads"), figure("latency_us"));
                (
                    kind.as_str(),
                    KindMetrics {
                        hits,
                        misses,
                        hit_rate: if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
                        avg_latency_ms: if reads == 0 { 0.0 } else { latency as f64 / reads as f64 / 1000.0 },
                    },
                )
            })
            .collect())
    }
}
