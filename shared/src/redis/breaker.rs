//! The Redis circuit breaker (DESIGN §7) and the connection that obeys it.
//!
//! Every Redis command of a cold start goes through one [`BreakerConnection`]
//! (a clone of the shared connection manager plus the shared [`Breaker`]).
//! After `threshold` consecutive connection-level failures (refused, dropped,
//! timed out) the breaker *opens*: commands fail at once with a synthetic
//! "connection refused" instead of each waiting out a connect timeout, and
//! the message path switches to the Postgres fallback (`pipeline::degraded`).
//! After `cooldown` it is *half-open*: commands go through again; the first
//! success closes it, the first failure opens it for another cooldown.
//!
//! Server replies that are errors (`NOSCRIPT`, `WRONGTYPE`, a script's own
//! error) prove Redis is reachable and count as successes: the breaker is
//! about reachability, not about correctness.
//!
//! Why only an *open* breaker diverts messages, never a single failed call:
//! a command that timed out or lost its connection may have run. Answering
//! such a message from Postgres as well could answer it twice, so that
//! request gets a `503` and the sender's retry (deduplicated either way)
//! meets an open breaker or a healthy Redis.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value, aio::ConnectionLike};

use super::connection::RedisConnection;

/// What the breaker currently lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Failing fast until the cooldown has passed.
    Open,
    /// The cooldown passed: the next calls probe Redis.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// Shared by every clone of the connection of one process.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown_ms: u64,
    consecutive_failures: AtomicU32,
    /// When it last opened (epoch ms); 0 while closed.
    opened_at_ms: AtomicU64,
    /// How many times it opened (health and stats show it).
    trips: AtomicU64,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown_ms: cooldown.as_millis() as u64,
            consecutive_failures: AtomicU32::new(0),
            opened_at_ms: AtomicU64::new(0),
            trips: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state_at(crate::clock::now_ms())
    }

    fn state_at(&self, now_ms: u64) -> BreakerState {
        match self.opened_at_ms.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            at if now_ms < at + self.cooldown_ms => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// True while calls fail fast (open, cooldown not over).
    pub fn is_open(&self) -> bool {
        self.state() == BreakerState::Open
    }

    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if self.opened_at_ms.swap(0, Ordering::AcqRel) != 0 {
            tracing::warn!("redis reachable again: circuit breaker closed");
        }
    }

    fn record_failure_at(&self, now_ms: u64) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let state = self.state_at(now_ms);
        // A failed probe re-opens at once; a closed breaker needs a run of failures.
        if state == BreakerState::HalfOpen || (state == BreakerState::Closed && failures >= self.threshold) {
            self.opened_at_ms.store(now_ms.max(1), Ordering::Release);
            self.trips.fetch_add(1, Ordering::Relaxed);
            tracing::error!(failures, "redis unreachable: circuit breaker open");
        }
    }

    fn observe<T>(&self, result: &Result<T, RedisError>) {
        match result {
            Err(err) if is_connection_failure(err) => self.record_failure_at(crate::clock::now_ms()),
            _ => self.record_success(),
        }
    }
}

/// Refused, dropped or timed out: Redis (or the path to it) is away. So is
/// a cluster with no reachable node for the slot, or one that says it is
/// down. Any other reply from the server, error replies included, is not.
fn is_connection_failure(err: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    err.is_io_error()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_connection_dropped()
        || matches!(
            err.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(ServerErrorKind::ClusterDown | ServerErrorKind::MasterDown)
        )
}

fn refused() -> RedisError {
    RedisError::from(io::Error::new(io::ErrorKind::ConnectionRefused, "redis circuit breaker is open"))
}

/// The shared multiplexed connection, behind the breaker. Cheap to clone.
#[derive(Clone)]
pub struct BreakerConnection {
    inner: RedisConnection,
    breaker: Arc<Breaker>,
}

impl std::fmt::Debug for BreakerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerConnection").field("breaker", &self.breaker).finish_non_exhaustive()
    }
}

impl BreakerConnection {
    pub fn new(inner: RedisConnection, breaker: Arc<Breaker>) -> Self {
        Self { inner, breaker }
    }

    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// The connection underneath (cluster-aware helpers: `INFO`, `SCAN`).
    pub fn inner(&self) -> RedisConnection {
        self.inner.clone()
    }
}

impl ConnectionLike for BreakerConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            if self.breaker.is_open() {
                return Err(refused());
            }
            let result = self.inner.req_packed_command(cmd).await;
            self.breaker.observe(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            if self.breaker.is_open() {
                return Err(refused());
            }
            let result = self.inner.req_packed_commands(pipeline, offset, count).await;
            self.breaker.observe(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(breaker: &Breaker, at: u64) {
        breaker.record_failure_at(at);
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_half_opens_after_the_cooldown() {
        let breaker = Breaker::new(3, Duration::from_millis(1_000));
        failure(&breaker, 10_000);
        failure(&breaker, 10_001);
        assert_eq!(breaker.state_at(10_002), BreakerState::Closed);
        failure(&breaker, 10_002);
        assert_eq!(breaker.state_at(10_003), BreakerState::Open);
        assert_eq!(breaker.state_at(11_002), BreakerState::HalfOpen);
        assert_eq!(breaker.trips(), 1);
    }

    #[test]
    fn a_success_in_between_resets_the_run_of_failures() {
        let breaker = Breaker::new(2, Duration::from_millis(1_000));
        failure(&breaker, 1_000);
        breaker.record_success();
        failure(&breaker, 1_001);
        assert_eq!(breaker.state_at(1_002), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens_at_once_and_a_successful_one_closes() {
        let breaker = Breaker::new(1, Duration::from_millis(500));
        failure(&breaker, 1_000);
        assert_eq!(breaker.state_at(1_600), BreakerState::HalfOpen);
        failure(&breaker, 1_600);
        assert_eq!(breaker.state_at(1_700), BreakerState::Open);
        assert_eq!(breaker.trips(), 2);
        breaker.record_success();
        assert_eq!(breaker.state_at(1_700), BreakerState::Closed);
    }

    #[test]
    fn server_error_replies_count_as_reachable() {
        let breaker = Breaker::new(1, Duration::from_secs(60));
        let reply: Result<(), RedisError> = Err(RedisError::from((redis::ErrorKind::Client, "wrong type")));
        breaker.observe(&reply);
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.observe::<()>(&Err(refused()));
        assert_eq!(breaker.state(), BreakerState::Open);
    }
}
